"""Reason codes: success below 0x80 for every code paho knows, refusal hints, Receive Maximum."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt import FAILURE_THRESHOLD, receive_maximum, refusal_hint, succeeded


def reason_codes(packet_type: int) -> list[ReasonCode]:
    """Every reason code paho defines for ``packet_type``."""
    codes = []
    for names in ReasonCode(packet_type).names.values():
        for name, packet_types in names.items():
            if packet_type in packet_types:
                codes.append(ReasonCode(packet_type, name))
    return codes


@pytest.mark.parametrize("packet_type", [PacketTypes.CONNACK, PacketTypes.PUBACK])
def test_a_reason_code_is_a_success_exactly_when_it_is_below_0x80(packet_type: int) -> None:
    codes = reason_codes(packet_type)
    assert len(codes) > 5
    for code in codes:
        assert succeeded(code) is (code.value < FAILURE_THRESHOLD), code
        assert succeeded(code) is not code.is_failure, code  # paho agrees


def test_not_authorised_is_a_refusal_and_success_is_not() -> None:
    assert not succeeded(ReasonCode(PacketTypes.PUBACK, "Not authorized"))
    assert not succeeded(ReasonCode(PacketTypes.CONNACK, "Bad user name or password"))
    assert succeeded(ReasonCode(PacketTypes.PUBACK, "Success"))
    assert succeeded(ReasonCode(PacketTypes.PUBACK, "No matching subscribers"))


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("Bad user name or password", "username/password"),
        ("Not authorized", "ACL"),
        ("Server unavailable", "not accepting connections"),
        ("Banned", "banned"),
        ("Connection rate exceeded", "back-off continues"),
        ("Client identifier not valid", "client identifier"),
    ],
)
def test_common_connack_refusals_come_with_what_to_check(name: str, words: str) -> None:
    hint = refusal_hint(ReasonCode(PacketTypes.CONNACK, name))
    assert hint.startswith(" (")
    assert hint.endswith(")")
    assert words in hint


@pytest.mark.parametrize("name", ["Success", "Unspecified error", "Protocol error"])
def test_other_reason_codes_get_no_hint(name: str) -> None:
    assert refusal_hint(ReasonCode(PacketTypes.CONNACK, name)) == ""


def test_receive_maximum_is_read_from_the_connack_properties_when_the_broker_sent_one() -> None:
    properties = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    assert receive_maximum(properties) is None
    properties.ReceiveMaximum = 3
    assert receive_maximum(properties) == 3
    assert receive_maximum(None) is None
