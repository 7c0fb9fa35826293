"""The functional core of the lane: typed events in, decisions out.

Nothing in this package does I/O or imports an adapter library (serial, paho, sqlite3, cv2,
onnxruntime). Time comes in on the events, so every behaviour can be tested with plain data.
"""
