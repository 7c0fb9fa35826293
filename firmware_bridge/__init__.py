"""Bridge to the lane controller: serial protocol codec, link, scenarios and simulator.

A standalone library: it never imports the agent. The agent builds a :class:`ControllerLink`
and receives controller messages and link state through a callback; tests and demos talk to a
:class:`~firmware_bridge.simulator.ControllerSimulator` built from the same codec. The wire
format is documented in ``PROTOCOL.md`` next to this file.
"""

from firmware_bridge.codec import (
    Ack,
    DecodedFrame,
    Fault,
    FaultCode,
    FirmwareBridgeError,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Hello,
    Loop,
    Ping,
    Pong,
    SetSignal,
    SignalState,
    TagRead,
    encode_frame,
)
from firmware_bridge.link import (
    ControllerEvent,
    ControllerLink,
    EventDeferred,
    LinkClosedError,
    LinkDown,
    LinkDownReason,
    LinkMessage,
    LinkStats,
    LinkUp,
    SignalAcked,
    SignalFailed,
)
from firmware_bridge.scenario import Scenario, ScenarioError, generate_scenario, load_scenario

__all__ = [
    "Ack",
    "ControllerEvent",
    "ControllerLink",
    "DecodedFrame",
    "EventDeferred",
    "Fault",
    "FaultCode",
    "FirmwareBridgeError",
    "FrameDecoder",
    "FrameError",
    "Heartbeat",
    "Hello",
    "LinkClosedError",
    "LinkDown",
    "LinkDownReason",
    "LinkMessage",
    "LinkStats",
    "LinkUp",
    "Loop",
    "Ping",
    "Pong",
    "Scenario",
    "ScenarioError",
    "SetSignal",
    "SignalAcked",
    "SignalFailed",
    "SignalState",
    "TagRead",
    "encode_frame",
    "generate_scenario",
    "load_scenario",
]
