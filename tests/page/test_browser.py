"""The lane page in a real headless browser (Debian's Chromium, driven by Selenium), against
the real agent: the controller simulator on a pty, a real Mosquitto, the page on a free port.

Nothing is downloaded: Selenium is given /usr/bin/chromedriver and /usr/bin/chromium, so its
driver manager is never asked. A machine without them fails these tests with the install
command, never skips them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agent.cache import CredentialCache
from agent.config import AgentConfig, PageConfig
from agent.dev.demo import DEMO_ROI, demo_config, demo_records, registered_plates
from agent.page.views import mask_ref
from agent.service import LaneService
from firmware_bridge.scenario import CardPass, Scenario, Shape, Vehicle
from firmware_bridge.simulator import ControllerSimulator
from tests.page.conftest import SECRET, make_self_signed
from tests.support.broker import MosquittoBroker

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)
VALID = next(
    str(r["ref"]) for r in demo_records() if r["status"] == "ACTIVE" and r["program"] == "SENTRI"
)
UNKNOWN = "E2801160600002FFFFFF0042"

pytestmark = pytest.mark.broker


def _require(path: Path) -> None:
    if not path.is_file():
        pytest.fail(
            f"{path} not found: install Debian's browser with `apt-get install -y chromium "
            "chromium-driver` (./dev.sh test does); the page's browser tests never skip",
            pytrace=False,
        )


@pytest.fixture
def browser_factory(tmp_path: Path) -> Iterator[Callable[..., webdriver.Chrome]]:
    _require(CHROMIUM)
    _require(CHROMEDRIVER)
    drivers: list[webdriver.Chrome] = []

    def start(*extra: str) -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        profile = tmp_path / f"chromium-profile-{len(drivers)}"
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra):
            options.add_argument(flag)
        service = ChromeService(
            executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
        )
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(20)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


class PageLane:
    """The agent with its page on, on a thread, wired to a simulator and a broker; with
    ``camera`` the demo's synthetic camera shows the scenario's vehicles to the plate reader."""

    def __init__(
        self,
        workdir: Path,
        broker: MosquittoBroker,
        scenario: Scenario,
        page: PageConfig,
        *,
        camera: bool = False,
    ):
        with CredentialCache.open(workdir / "credentials.db") as cache:
            cache.import_records(demo_records(registered_plates(scenario)), source="test")
        self.simulator = ControllerSimulator(scenario, speed=1.0)
        self.simulator.start()
        config: AgentConfig = demo_config(
            workdir, self.simulator.device_path, broker.port, camera=camera
        )
        source = None
        if camera:
            from agent.dev.synthetic_camera import ScenarioCamera, vehicle_at_booth

            simulator = self.simulator
            source = ScenarioCamera(scenario, lambda: vehicle_at_booth(simulator.sent_events()))
        self.service = LaneService(config.model_copy(update={"page": page}), camera_source=source)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.service.ready.wait(15), "the agent did not become ready"
        page_handle = self.service.page
        assert page_handle is not None
        assert page_handle.server is not None, "page not served"
        self.url = page_handle.server.url

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        self.simulator.stop()
        assert not self.thread.is_alive(), "the agent did not stop"


@pytest.fixture
def page_lane(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Callable[..., PageLane]]:
    lanes: list[PageLane] = []

    def start(
        scenario: Scenario, page: PageConfig | None = None, *, camera: bool = False
    ) -> PageLane:
        lane = PageLane(
            tmp_path,
            mosquitto,
            scenario,
            page or PageConfig(port=0, status_interval_s=0.5),
            camera=camera,
        )
        lanes.append(lane)
        return lane

    yield start
    for lane in lanes:
        lane.close()


def _wait(driver: webdriver.Chrome, what: str, script: str, timeout_s: float = 20.0) -> Any:
    """Wait until ``script`` (a JS expression) is truthy in the page; return its value."""
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(
            lambda d: d.execute_script(f"return ({script});")
        )
    except Exception as error:
        Path("/tmp/lane-page-failure.png").write_bytes(driver.get_screenshot_as_png())
        raise AssertionError(
            f"the page never showed {what} (screenshot /tmp/lane-page-failure.png)"
        ) from error


def _two_vehicles() -> Scenario:
    return Scenario(
        name="page",
        vehicles=(
            Vehicle(
                dwell_s=7.0,
                gap_s=3.0,
                cards=(CardPass(epc=VALID, reads=14, antennas=(1, 2), shape=Shape.PLATEAU),),
            ),
            Vehicle(dwell_s=3.0, gap_s=2.0, cards=(CardPass(epc=UNKNOWN, reads=6),)),
        ),
    )


def test_the_page_shows_the_vehicle_as_it_forms_then_its_crossing_health_and_reads_live(
    page_lane: Callable[..., PageLane], browser_factory: Callable[..., webdriver.Chrome]
) -> None:
    lane = page_lane(_two_vehicles())
    browser = browser_factory()
    browser.get(lane.url + "/")
    _wait(browser, "its first event", "document.body.dataset.ready === 'true'")
    browser.execute_script("window.notReloaded = true;")

    # The vehicle at the booth, before it leaves: its card, masked, and a recommendation.
    booth = _wait(
        browser,
        "the first vehicle at the booth with its card",
        "document.getElementById('booth').dataset.state !== 'empty' && "
        "document.querySelectorAll('#booth-cards tr').length > 0 && "
        "document.getElementById('booth-recommendation').textContent !== '' && "
        "{id: document.getElementById('booth').dataset.crossingId, "
        " state: document.getElementById('booth').dataset.state, "
        " rec: document.getElementById('booth-recommendation').textContent, "
        " card: document.querySelector('#booth-cards td.ref').textContent, "
        " stored: document.querySelectorAll('#crossings tr').length}",
    )
    stored_then = lane.service.counters.crossings
    assert stored_then == 0, "seen before the vehicle left (no crossing stored yet)"
    assert booth["stored"] == 0
    assert booth["state"] in ("opened", "updated")
    assert booth["card"] == mask_ref(VALID)
    assert booth["rec"] in ("EXPEDITE", "REFER", "PRIMARY")
    _wait(
        browser,
        "the attached card's recommendation, EXPEDITE",
        "document.getElementById('booth-recommendation').textContent === 'EXPEDITE'",
    )

    # Reads arrive as the card is read: masked, per antenna, with their signal strength.
    reads = _wait(
        browser,
        "tag reads",
        "document.querySelectorAll('#reads tr').length >= 3 && "
        "Array.from(document.querySelectorAll('#reads tr')).map(r => "
        "[r.cells[1].textContent, r.dataset.antenna, r.cells[3].textContent])",
    )
    assert {ref for ref, _antenna, _rssi in reads} == {mask_ref(VALID)}
    assert {antenna for _ref, antenna, _rssi in reads} <= {"1", "2"}
    assert all(float(rssi) < 0 for _ref, _antenna, rssi in reads)

    # The health panel, from the status document.
    health = _wait(
        browser,
        "the reader and the uplink healthy",
        "document.getElementById('health-reader').dataset.level === 'ok' && "
        "document.getElementById('health-uplink').dataset.level === 'ok' && "
        "Object.fromEntries(Array.from(document.querySelectorAll('#health tr')).map(r => "
        "[r.id, [r.dataset.level, r.querySelector('.detail').textContent]]))",
    )
    assert health["health-outbox"][0] == "ok"
    assert health["health-camera"] == ["off", "no camera on this lane"]
    assert "LANE-SIM" in health["health-reader"][1]
    assert "connected" in health["health-uplink"][1]
    assert health["health-cache"][0] in ("ok", "warn")
    assert browser.find_element(By.ID, "lane-name").text == "Lane DEMO/L01"

    # The first vehicle leaves: its crossing heads the list, under the id the booth showed.
    first = _wait(
        browser,
        "the first crossing in the list",
        "document.querySelectorAll('#crossings tr').length >= 1 && "
        "{id: document.querySelector('#crossings tr').dataset.crossingId, "
        " rec: document.querySelector('#crossings tr').dataset.rec}",
    )
    assert first == {"id": booth["id"], "rec": "EXPEDITE"}

    # The second vehicle's unknown card: REFER at the booth, then second in the list.
    _wait(
        browser,
        "the second vehicle at the booth",
        f"document.querySelector('#booth-cards td.ref') && "
        f"document.querySelector('#booth-cards td.ref').textContent === '{mask_ref(UNKNOWN)}'",
    )
    rows = _wait(
        browser,
        "both crossings, newest first",
        "document.querySelectorAll('#crossings tr').length >= 2 && "
        "Array.from(document.querySelectorAll('#crossings tr')).map(r => r.dataset.rec)",
    )
    assert rows == ["REFER", "EXPEDITE"]
    _wait(browser, "the empty lane", "document.getElementById('booth').dataset.state === 'empty'")

    assert browser.execute_script("return window.notReloaded === true;"), "no reload: pushed"
    assert browser.find_element(By.ID, "connection").get_attribute("data-state") == "live"
    source = browser.page_source
    assert VALID not in source, "no full card number on the page"
    assert UNKNOWN not in source


def test_over_tls_with_a_credential_the_page_works_only_with_the_secret(
    tmp_path: Path,
    page_lane: Callable[..., PageLane],
    browser_factory: Callable[..., webdriver.Chrome],
) -> None:
    cert = make_self_signed(tmp_path)
    secret_file = tmp_path / "page-credential"
    secret_file.write_text(SECRET + "\n")
    page = PageConfig(
        port=0,
        cert_file=cert.cert,
        key_file=cert.key,
        credential_file=secret_file,
        status_interval_s=0.5,
    )
    lane = page_lane(
        Scenario(
            name="tls", vehicles=(Vehicle(dwell_s=2.0, gap_s=2.0, cards=(CardPass(epc=VALID),)),)
        ),
        page,
    )
    assert lane.url.startswith("https://")
    browser = browser_factory("--ignore-certificate-errors")
    authority = lane.url.removeprefix("https://")
    browser.get(f"https://booth:{SECRET}@{authority}/")
    _wait(browser, "its first event over TLS", "document.body.dataset.ready === 'true'")
    without = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch(location.origin + '/api/status', {credentials: 'omit'}).then(r => done(r.status), e => done(String(e)));"
    )
    assert without == 401, "the same request without the credential is refused"
    _wait(
        browser,
        "the stored crossing",
        "document.querySelectorAll('#crossings tr').length >= 1",
        timeout_s=30,
    )
    assert browser.find_element(By.ID, "connection").get_attribute("data-state") == "live"


def test_a_camera_lane_shows_the_snapshot_with_its_region_and_the_plate_crop(
    page_lane: Callable[..., PageLane], browser_factory: Callable[..., webdriver.Chrome]
) -> None:
    scenario = Scenario(
        name="camera",
        vehicles=(
            Vehicle(
                dwell_s=6.0,
                gap_s=3.0,
                cards=(CardPass(epc=VALID, reads=10, shape=Shape.PLATEAU),),
                plate="7ABC123",
                jurisdiction="CA",
            ),
        ),
    )
    lane = page_lane(scenario, camera=True)
    browser = browser_factory()
    browser.get(lane.url + "/")
    _wait(browser, "its first event", "document.body.dataset.ready === 'true'")
    snapshot = _wait(
        browser,
        "a camera snapshot",
        "document.getElementById('snapshot').naturalWidth > 0 && "
        "[document.getElementById('snapshot').naturalWidth, "
        " document.getElementById('snapshot').naturalHeight]",
    )
    x, y, width, height = DEMO_ROI
    assert snapshot[0] >= x + width, "the whole frame, not the region read"
    assert snapshot[1] >= y + height
    assert _wait(
        browser,
        "the camera healthy",
        "document.getElementById('health-camera').dataset.level === 'ok' && "
        "document.querySelector('#health-camera .detail').textContent",
    ).startswith("streaming")
    plate = _wait(
        browser,
        "the plate and its crop at the booth",
        "document.getElementById('booth-plate-crop').naturalWidth > 0 && "
        "document.querySelector('#booth-plate .plate-text') && "
        "document.querySelector('#booth-plate .plate-text').textContent",
        timeout_s=30,
    )
    assert plate == "7ABC123"
    row = _wait(
        browser,
        "the crossing with its plate",
        "document.querySelectorAll('#crossings tr').length >= 1 && "
        "document.querySelector('#crossings tr').cells[5].textContent",
        timeout_s=30,
    )
    assert row.startswith("7ABC123")
