"""What the lanes and central agree on: topic names, event builders and JSON Schemas.

Central (``central/``) imports :mod:`agent.wire.topics` and :mod:`agent.wire.schema` and nothing
else of the agent; the event builders (:mod:`agent.wire.crossing_event`) are the agent's side
of the same contract and may use the lane core's types.
"""
