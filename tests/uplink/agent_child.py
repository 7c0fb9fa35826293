"""A separate process for the tests that kill the agent with SIGKILL.

``append DB``: append crossings forever, printing ``row_id seq`` after each append returns.
``uplink DB HOST PORT CLIENT_ID``: run an MqttUplink, print ``connected`` once up, run until killed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from agent.state.outbox import Outbox
from agent.uplink.publisher import MqttUplink, UplinkState
from agent.wire.topics import Topics

TOPICS = Topics("lane-agent/v1", "port-7", "lane-3")


def append_forever(database: Path) -> None:
    outbox = Outbox(database)
    while True:
        row = outbox.append(topic=TOPICS.crossing, build_payload=lambda seq: b'{"seq": %d}' % seq)
        print(row.id, row.seq, flush=True)


def run_uplink(database: Path, host: str, port: int, client_id: str) -> None:
    connected = threading.Event()

    def on_state_change(state: UplinkState) -> None:
        if state is UplinkState.CONNECTED:
            connected.set()

    uplink = MqttUplink(
        Outbox(database),
        TOPICS,
        host=host,
        port=port,
        client_id=client_id,
        on_state_change=on_state_change,
    )
    uplink.start()
    connected.wait()
    print("connected", flush=True)
    threading.Event().wait()  # until SIGKILL


def main(argv: list[str]) -> None:
    match argv:
        case ["append", database]:
            append_forever(Path(database))
        case ["uplink", database, host, port, client_id]:
            run_uplink(Path(database), host, int(port), client_id)
        case _:
            raise SystemExit(f"usage: {__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
