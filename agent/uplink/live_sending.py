"""Publishing the live crossing events (:mod:`agent.uplink.live_feed`) on the uplink's session.

After the outbox's rows in each pass of the publisher loop, and never more than the feed's
``max_in_flight`` of them awaiting PUBACK (at most half the window, nor past a broker's Receive
Maximum): a live event can take a slot a crossing could have used only while fewer than that are
out, and never waits for one. Each carries a message expiry, so a broker never delivers a stale
view of the booth. When the session ends, events in flight are not sent again (the feed drops
waiting ones while it is offline).
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.logs import RateLimitedLog
from agent.mqtt import FAILURE_THRESHOLD
from agent.uplink.live_feed import LiveFeed
from agent.uplink.stats import Counters
from agent.uplink.window import SendWindow

log = logging.getLogger(__name__)


class LiveSending:
    """Takes live events from the feed into the send window, and reports their PUBACKs to it."""

    def __init__(self, live: LiveFeed, window: SendWindow, counters: Counters) -> None:
        self._live = live
        self._window = window
        self._counters = counters
        # A broker that refuses live events (an ACL) refuses every one: a line a minute, counted.
        self._repeats = RateLimitedLog(log)

    def publish(self, client: mqtt.Client) -> None:
        """Publish waiting live crossing events, within their share of the window."""
        live = self._live
        window = self._window
        in_flight = window.live
        # Half the window at most, so that a lane configured for one message in flight still
        # sends its crossings one after the other.
        limit = min(live.max_in_flight, max(1, window.cap // 2))
        while len(in_flight) < limit and window.room_for_control():
            room = limit - len(in_flight)
            messages = live.take(1 if window.client_window > window.cap else room)
            if not messages:
                return
            for message in messages:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.MessageExpiryInterval = message.expiry_s
                info = client.publish(
                    message.topic,
                    message.payload,
                    qos=1,
                    retain=message.retain,
                    properties=properties,
                )
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    self._repeats.warning(
                        "paho did not take a live event on %s: %s",
                        message.topic,
                        mqtt.error_string(info.rc),
                    )
                    live.acknowledged(message, refused=True)
                    continue
                in_flight[info.mid] = message
                live.published(message)

    def on_published(self, mid: int, reason: ReasonCode) -> bool:
        """A PUBACK for a live event; False: not one of theirs."""
        message = self._window.live.pop(mid, None)
        if message is None:
            return False
        refused = reason.value >= FAILURE_THRESHOLD
        if refused:
            self._counters.count_refusal(reason)
            # The topic only: the payload carries card numbers and plates.
            self._repeats.warning(
                "broker refused a live crossing event on %s: %s", message.topic, reason
            )
        self._live.acknowledged(message, refused=refused)
        return True
