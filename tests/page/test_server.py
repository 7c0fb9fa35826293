"""The page's server over real HTTP on a free loopback port: endpoints, the event stream,
the credential, TLS and the Prometheus exposition."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.page.feed import PageFeed
from agent.page.server import PageServer
from tests.page.conftest import SECRET, STATUS, CertFiles
from tests.page.samples import CARD_REF, crossing_event, live_event
from tests.page.sse import EventReader


def test_the_page_and_its_assets_are_served_with_a_strict_content_policy(
    page_server: Any,
) -> None:
    server: PageServer = page_server()
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/page.js"' in page.text
    assert "http" not in page.text.replace("http-equiv", ""), "no outside address (no CDN)"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert (
        httpx.get(server.url + "/static/page.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert httpx.get(server.url + "/static/page.css").status_code == 200
    assert httpx.get(server.url + "/static/../server.py").status_code == 404


def test_status_and_crossing_are_served_as_json(page_server: Any) -> None:
    feed = PageFeed(status=lambda: STATUS)
    server: PageServer = page_server(feed)
    assert httpx.get(server.url + "/api/status").json() == STATUS
    assert httpx.get(server.url + "/api/crossing").json() == {"crossing": None}
    feed.live(live_event("c-7", recommendation="REFER"))
    crossing = httpx.get(server.url + "/api/crossing").json()["crossing"]
    assert crossing["crossing_id"] == "c-7"
    assert crossing["recommendation"] == "REFER"
    assert CARD_REF not in httpx.get(server.url + "/api/crossing").text


def test_snapshot_and_plate_crop(page_server: Any) -> None:
    no_camera: PageServer = page_server()
    assert httpx.get(no_camera.url + "/snapshot.jpg").status_code == 404
    frames: list[bytes | None] = [None]
    feed = PageFeed(status=lambda: STATUS, snapshot=lambda: frames[0])
    server: PageServer = page_server(feed)
    assert httpx.get(server.url + "/snapshot.jpg").status_code == 503, "no frame yet"
    frames[0] = b"\xff\xd8jpeg"
    snapshot = httpx.get(server.url + "/snapshot.jpg")
    assert snapshot.content == b"\xff\xd8jpeg"
    assert snapshot.headers["content-type"] == "image/jpeg"
    feed.live(live_event("c-3"), plate_crop=b"\xff\xd8crop")
    assert httpx.get(server.url + "/plate/c-3.jpg").content == b"\xff\xd8crop"
    assert httpx.get(server.url + "/plate/c-4.jpg").status_code == 404


def test_the_event_stream_says_hello_then_pushes_what_happens_as_it_happens(
    page_server: Any,
) -> None:
    feed = PageFeed(status=lambda: STATUS)
    feed.crossing(crossing_event("c-0", seq=1))
    server: PageServer = page_server(feed, status_interval_s=30.0)
    with httpx.Client() as client:
        events = EventReader(client, server.url + "/events")
        assert events.status_code == 200
        hello = events.next("hello")
        assert hello["crossing"] is None
        assert [c["seq"] for c in hello["crossings"]] == [1]
        assert hello["status"]["lane"]["lane_id"] == "L09"
        started = time.monotonic()
        feed.live(live_event("c-1"))
        live = events.next("live")
        assert live["crossing"]["crossing_id"] == "c-1"
        assert time.monotonic() - started < 2.0, "pushed, not waiting for the status interval"
        for n in range(3):
            feed.read({"ref": f"CARD{n:04d}", "antenna": n + 1, "rssi_dbm": -50.0, "at": 1.0})
        reads = events.next(
            "reads", where=lambda d: len(d["reads"]) == 3 or d["reads"][-1]["antenna"] == 3
        )
        assert reads["reads"][-1]["antenna"] == 3
        feed.crossing(crossing_event("c-1", seq=2))
        assert events.next("crossing")["seq"] == 2
        feed.status_changed()  # a fault raised: the status goes out at once
        assert events.next("status", timeout_s=5)["lane"]["port_id"] == "TEST"
        assert feed.clients() == 1
    deadline = time.monotonic() + 10
    while feed.clients() and time.monotonic() < deadline:
        feed.status_changed()  # the server notices the page left at its next write
        time.sleep(0.05)
    assert feed.clients() == 0, "a page that left is unsubscribed"


def test_pages_past_max_clients_get_503(page_server: Any) -> None:
    feed = PageFeed(status=lambda: STATUS, max_clients=1)
    server: PageServer = page_server(feed)
    with httpx.Client() as client:
        events = EventReader(client, server.url + "/events")
        events.next("hello")
        refused = httpx.get(server.url + "/events")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"


def test_stopping_the_server_ends_open_event_streams_promptly(page_server: Any) -> None:
    feed = PageFeed(status=lambda: STATUS)
    server: PageServer = page_server(feed, status_interval_s=30.0)
    with httpx.Client() as client:
        events = EventReader(client, server.url + "/events")
        events.next("hello")
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3.0
        assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/api/status")


def test_a_port_in_use_is_an_error_at_start(page_server: Any) -> None:
    first: PageServer = page_server()
    feed = PageFeed(status=lambda: STATUS)
    from agent.page.metrics import build_registry
    from agent.page.server import build_app

    second = PageServer(build_app(feed, build_registry(feed, feed.status)), feed, port=first.port)
    with pytest.raises(OSError, match="in use"):
        second.start()


def test_with_a_credential_every_endpoint_wants_it(page_server: Any) -> None:
    server: PageServer = page_server(secret=SECRET)
    for path in ("/", "/events", "/api/status", "/api/crossing", "/snapshot.jpg", "/metrics"):
        refused = httpx.get(server.url + path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith("Basic realm=")
    wrong = httpx.get(server.url + "/api/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    bearer = httpx.get(server.url + "/api/status", headers={"Authorization": f"Bearer {SECRET}"})
    assert bearer.status_code == 200
    basic = httpx.get(server.url + "/metrics", auth=("technician", SECRET))
    assert basic.status_code == 200
    assert httpx.get(server.url + "/metrics", auth=("technician", "x" + SECRET)).status_code == 401


def test_tls_with_a_self_signed_certificate(page_server: Any, self_signed: CertFiles) -> None:
    server: PageServer = page_server(secret=SECRET, tls=self_signed)
    assert server.url.startswith("https://")
    trusted = ssl.create_default_context(cafile=str(self_signed.cert))
    answer = httpx.get(
        server.url + "/api/status", verify=trusted, headers={"Authorization": f"Bearer {SECRET}"}
    )
    assert answer.status_code == 200
    assert answer.json()["lane"]["lane_id"] == "L09"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/api/status")  # not trusted by default
    plain = server.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/api/status", timeout=3)


def test_tls_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    from agent.page.auth import PageConfigError, server_tls
    from tests.page.conftest import make_self_signed

    one, other = make_self_signed(tmp_path, "one"), make_self_signed(tmp_path, "other")
    with pytest.raises(PageConfigError, match="not a PEM certificate"):
        server_tls(one.cert, other.key)
    with pytest.raises(PageConfigError, match="no such file"):
        server_tls(tmp_path / "missing.pem", one.key)


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_parse_and_carry_the_status_document_and_the_crossings(
    page_server: Any,
) -> None:
    feed = PageFeed(status=lambda: STATUS)
    server: PageServer = page_server(feed)
    feed.crossing(crossing_event(recommendation="REFER", reasons=("UNKNOWN_CARD",)))
    feed.crossing(crossing_event(recommendation="REFER", reasons=("UNKNOWN_CARD",)))
    feed.read({"ref": CARD_REF, "antenna": 2, "rssi_dbm": -40.0, "at": 1.0})
    answer = httpx.get(server.url + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert CARD_REF not in answer.text
    assert CARD_REF[-4:] not in answer.text
    families = _families(answer.text)

    def value(name: str, **labels: str) -> float:
        for sample in families[name].samples:
            if sample.name in (name, f"{name}_total") and sample.labels == labels:
                return float(sample.value)
        raise AssertionError(f"{name}{labels} not in {families[name].samples}")

    assert value("lane_agent_crossings", recommendation="REFER") == 2
    assert value("lane_agent_crossing_reasons", reason="UNKNOWN_CARD") == 2
    assert value("lane_agent_tag_reads", antenna="2") == 1
    assert value("lane_agent_reader_up") == 1
    assert value("lane_agent_reader_frames") == 44
    assert value("lane_agent_reader_crc_errors") == 3
    assert value("lane_agent_outbox_depth") == 2
    assert value("lane_agent_outbox_oldest_unsent_age_seconds") == 1.5
    assert value("lane_agent_uplink_state", state="connected") == 1
    assert value("lane_agent_uplink_state", state="disconnected") == 0
    assert value("lane_agent_cache_bundle_version") == 12
    assert value("lane_agent_cache_age_seconds") == 40
    assert value("lane_agent_fusion_cards", association="attached") == 5
    assert value("lane_agent_fusion_cards", association="uncertain") == 1
    assert value("lane_agent_fault_active", code="loop_chatter") == 1
    assert value("lane_agent_lane_info", port_id="TEST", lane_id="L09", agent="0.0.0") == 1
    assert "lane_agent_camera_up" not in families, "no camera section: no camera metrics"
    assert "process_cpu_seconds" in families


def test_metrics_with_a_camera_show_the_plate_read_time(page_server: Any) -> None:
    status = dict(STATUS, camera={"state": "streaming", "fps": 9.5, "last_inference_ms": 41.0})
    server: PageServer = page_server(status=status)
    families = _families(httpx.get(server.url + "/metrics").text)
    assert families["lane_agent_plate_read_seconds"].samples[0].value == pytest.approx(0.041)
    assert families["lane_agent_camera_up"].samples[0].value == 1


def test_a_failing_status_document_still_gives_the_feeds_metrics(page_server: Any) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    feed = PageFeed(status=broken)
    feed.crossing(crossing_event(recommendation="ALERT", reasons=("CARD_REVOKED",)))
    server: PageServer = page_server(feed)
    families = _families(httpx.get(server.url + "/metrics").text)
    assert families["lane_agent_crossings"].samples[0].labels == {"recommendation": "ALERT"}


def test_a_lane_whose_page_port_is_taken_runs_on_and_says_why(page_server: Any) -> None:
    from agent.config import PageConfig
    from agent.page.lane_page import page_settings, start_page
    from agent.status import StatusBoard

    taken: PageServer = page_server()
    board = StatusBoard({"port_id": "TEST", "lane_id": "L09"})
    page = start_page(page_settings(PageConfig(port=taken.port)), board)
    try:
        assert page.server is None
        section = board.snapshot()["page"]
        assert section["serving"] is False
        assert f"cannot listen on 127.0.0.1:{taken.port}" in section["error"]
        assert board.snapshot()["faults"] == [], "no alarm: the lane's work goes on"
        page.feed.live(live_event())  # the engine thread's calls still work
    finally:
        page.stop()


def test_a_served_lane_page_reports_itself_in_the_status_document() -> None:
    from agent.config import PageConfig
    from agent.page.lane_page import page_settings, start_page
    from agent.status import StatusBoard

    board = StatusBoard({"port_id": "TEST", "lane_id": "L09"})
    page = start_page(page_settings(PageConfig(port=0)), board)
    try:
        assert page.server is not None
        section = board.snapshot()["page"]
        assert section["serving"] is True
        assert section["url"] == page.server.url
        assert httpx.get(page.server.url + "/api/status").json()["page"]["clients"] == 0
    finally:
        page.stop()
