"""LLRP (EPCglobal Low Level Reader Protocol 1.0.1) for lanes with off-the-shelf UHF readers.

A standalone library, like :mod:`firmware_bridge`: it never imports the agent.

- :mod:`llrp.codec` — message header, TLV/TV parameters, framing over TCP, errors;
- :mod:`llrp.parameters`, :mod:`llrp.specs`, :mod:`llrp.messages` — typed parameters and
  messages for what a lane needs (capabilities, configuration, GPI/GPO, ROSpec, AccessSpec,
  tag reports, reader events, keepalives);
- :mod:`llrp.client` — a blocking connection: requests matched to responses by message id,
  asynchronous reports and events handed to a callback;
- :mod:`llrp.emulator` — an LLRP reader on a loopback port that plays a lane scenario.

``README.md`` next to this file says what of LLRP is implemented and what is not.
"""
