"""Development-only code: never imported by what runs on a lane.

Scoring lane runs against a scenario's truth, and (as they move here) the demo, the private
broker and the synthetic camera.
"""
