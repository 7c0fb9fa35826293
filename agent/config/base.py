"""What every config section shares: strict pydantic sections and the patterns of ids."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
_TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
_HOST_PATTERN = (
    r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$"
)
"""A host name, an IPv4 address or an IPv6 address (bracketed or not): no scheme, port, space."""
_PATTERN_MEANING = {
    _ID_PATTERN: "must be 1-32 characters of letters, digits, '_', '.', '-', starting with a "
    "letter or digit",
    _TOPIC_PREFIX_PATTERN: "must be topic levels of letters, digits, '_', '.', '-' separated by "
    "single '/' (no wildcards, no leading or trailing '/')",
    r"^[A-Za-z0-9_.-]+$": "must be letters, digits, '_', '.', '-' only",
    _HOST_PATTERN: "must be a host name or an IP address, without a scheme, port or spaces",
}
_STANDARD_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

Identifier = Annotated[
    str,
    Field(
        pattern=_ID_PATTERN,
        description="1-32 characters: letters, digits, '_', '.', '-'; safe inside MQTT topics",
    ),
]


class _Section(BaseModel):
    # strict: a TOML string "1883" or a boolean is not silently turned into a port number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
