"""The lane technician's command line: cache import/lookup/stats and the simulator."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from agent.cli import EX_DATAERR, EX_NOINPUT, main
from agent.dev.demo import demo_records
from firmware_bridge.codec import Loop, TagRead
from firmware_bridge.link import ControllerLink, LinkMessage

ROOT = Path(__file__).resolve().parent.parent
REF = "E280689400005003A4B1C201"


def write_ndjson(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cache_import_lookup_and_stats_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "credentials.db"
    source = write_ndjson(tmp_path / "creds.ndjson", demo_records())
    runner = CliRunner()

    imported = runner.invoke(main, ["cache", "import", str(source), "--db", str(db)])
    assert imported.exit_code == 0, imported.output
    assert imported.output.startswith(
        f"{source}: imported 6 records (6 added, 0 replaced) into {db}; data version sha256:"
    )

    found = runner.invoke(main, ["cache", "lookup", REF.lower(), "--db", str(db)])
    assert found.exit_code == 0, found.output
    record = json.loads(found.output)
    assert record["ref"] == REF
    assert record["program"] == "SENTRI"
    assert record["vehicles"] == [{"plate": "DEMO001", "jurisdiction": "CA"}]

    stats = runner.invoke(main, ["cache", "stats", "--db", str(db)])
    assert stats.exit_code == 0, stats.output
    figures = json.loads(stats.output)
    assert figures["credentials"] == 6
    assert figures["by_status"]["REVOKED"] == 1


def test_cache_lookup_of_an_unknown_ref_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "credentials.db"
    runner = CliRunner()
    runner.invoke(
        main,
        [
            "cache",
            "import",
            str(write_ndjson(tmp_path / "c.ndjson", demo_records())),
            "--db",
            str(db),
        ],
    )
    result = runner.invoke(main, ["cache", "lookup", "E2806894000050039999F001", "--db", str(db)])
    assert result.exit_code == 1
    assert result.output == "E2806894000050039999F001: not in the cache\n"


def test_cache_import_of_a_bad_file_exits_65_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "credentials.db"
    runner = CliRunner()
    good = write_ndjson(tmp_path / "good.ndjson", demo_records())
    assert runner.invoke(main, ["cache", "import", str(good), "--db", str(db)]).exit_code == 0
    before = runner.invoke(main, ["cache", "lookup", REF, "--db", str(db)]).output

    records = demo_records()
    records[0] = {**records[0], "status": "REVOKED"}
    records[3] = {**records[3], "program": "SENTRY"}
    bad = write_ndjson(tmp_path / "bad.ndjson", records)
    result = runner.invoke(main, ["cache", "import", str(bad), "--db", str(db)])
    assert result.exit_code == EX_DATAERR == 65
    lines = result.output.splitlines()
    assert lines[0].startswith(f"error: {bad}:4: program")
    assert lines[-1] == f"{bad}: refused; the cache is unchanged."
    assert runner.invoke(main, ["cache", "lookup", REF, "--db", str(db)]).output == before


def test_cache_stats_without_a_cache_file_says_how_to_create_one(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    result = CliRunner().invoke(main, ["cache", "stats", "--db", str(db)])
    assert result.exit_code == EX_NOINPUT
    assert (
        result.output
        == f"error: {db}: no cache file yet; load one with 'lane-agent cache import'\n"
    )


def test_cache_commands_with_a_bad_config_exit_78_and_suggest_db(tmp_path: Path) -> None:
    config = tmp_path / "lane.toml"
    config.write_text("[lane]\n")
    result = CliRunner().invoke(main, ["cache", "stats", "--config", str(config)])
    assert result.exit_code == 78
    assert result.output.splitlines()[-1] == "hint: pass --db PATH to name the cache file directly."


def test_simulate_prints_its_device_then_plays_the_scenario_to_a_real_link() -> None:
    """`lane-agent simulate` is what a technician points a lab agent at: check it end to end."""
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "simulate",
            "--scenario",
            "config/scenarios/basic.toml",
            "--speed",
            "20",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert simulator.stdout is not None
    try:
        device = simulator.stdout.readline().strip()
        assert device.startswith("/dev/pts/")
        inbox: queue.Queue[LinkMessage] = queue.Queue()
        with ControllerLink(
            device, inbox.put_nowait, ping_interval_s=0.2, silence_timeout_s=2.0
        ) as link:
            link.start()
            assert simulator.wait(timeout=60) == 0
        messages = []
        while not inbox.empty():
            messages.append(inbox.get_nowait())
    finally:
        if simulator.poll() is None:
            simulator.kill()
    loops = [m for m in messages if isinstance(m, Loop)]
    reads = [m for m in messages if isinstance(m, TagRead)]
    assert [m.occupied for m in loops] == [True, False] * 5
    assert REF in {r.epc_hex for r in reads}


def test_run_with_a_world_writable_trust_file_exits_78_with_one_clear_line(tmp_path: Path) -> None:
    """Whoever can write the trust file decides who is expedited: refuse to start, no traceback."""
    trust = tmp_path / "trust.json"
    trust.write_text("{}")
    trust.chmod(0o666)
    config = tmp_path / "lane.toml"
    config.write_text(
        '[lane]\nport_id = "SYS"\nlane_id = "L1"\n'
        f'[cache]\npath = "credentials.db"\ntrust_file = "{trust}"\n'
        '[reader]\ntype = "lane_controller"\ndevice = "/nonexistent/tty"\n[mqtt]\nport = 9\n[logging]\nformat = "text"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    lines = result.stderr.splitlines()
    # Refused by the same file checks as `config check` (agent/config/files.py), before it starts.
    assert lines[0].startswith(
        f'error: {config}:6: cache.trust_file = "{trust}": mode 0666 lets others write it'
    )
    # One problem as root; a second (not root-owned) for anyone else.
    assert lines[-1].endswith(" problem(s); nothing was started.")
    assert "Traceback" not in result.stderr
