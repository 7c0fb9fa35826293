"""``lane-agent status``: the running agent's status from its page, as lines or JSON; non-zero
when the agent cannot be reached or refuses the credential."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from agent.cli import main
from agent.page.client import summary
from agent.page.server import PageServer
from tests.page.conftest import SECRET, STATUS, CertFiles


def _config(tmp_path: Path, page: str) -> Path:
    path = tmp_path / "lane.toml"
    path.write_text(
        f"""
[lane]
port_id = "TEST"
lane_id = "L09"

[cache]
path = "{tmp_path / "credentials.db"}"

[outbox]
path = "{tmp_path / "outbox.db"}"

[page]
{page}
"""
    )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_prints_one_line_per_part_of_the_lane(tmp_path: Path, page_server: Any) -> None:
    server: PageServer = page_server()
    config = _config(tmp_path, f"port = {server.port}")
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "lane TEST/L09 (agent 0.0.0) at 2026-12-07T04:00:00.000Z: 1 fault"
    assert lines[1].startswith("  reader    up · lane_controller LANE-SIM 1.0.0 · 44 frames, 3 CRC")
    assert "  camera    off" in lines
    assert "  uplink    connected 127.0.0.1:1883 · 1 in flight" in lines
    assert "  outbox    2 waiting · oldest 2 s" in lines
    assert "  booth     empty" in lines
    assert lines[-1] == "  FAULT     loop_chatter: the loop chatters (since x)"


def test_status_json_is_the_status_document(tmp_path: Path, page_server: Any) -> None:
    server: PageServer = page_server()
    config = _config(tmp_path, f"port = {server.port}")
    result = CliRunner().invoke(main, ["status", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == STATUS


def test_status_exits_69_when_the_agent_is_not_reachable(tmp_path: Path) -> None:
    port = _free_port()
    config = _config(tmp_path, f"port = {port}")
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 69
    assert result.output.startswith(f"error: http://127.0.0.1:{port}/api/status: ")
    assert "is the agent running" in result.output


def test_status_over_tls_with_the_credential(
    tmp_path: Path, page_server: Any, self_signed: CertFiles
) -> None:
    server: PageServer = page_server(secret=SECRET, tls=self_signed)
    secret = tmp_path / "page-credential"
    secret.write_text(SECRET + "\n")
    page = (
        f'port = {server.port}\ncert_file = "{self_signed.cert}"\nkey_file = "{self_signed.key}"\n'
        f'credential_file = "{secret}"'
    )
    config = _config(tmp_path, page)
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("lane TEST/L09")
    secret.write_text("a-wrong-secret-of-enough-length\n")
    refused = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert refused.exit_code == 77
    assert "refused the credential" in refused.output


def test_status_exits_78_on_a_config_problem(tmp_path: Path) -> None:
    config = _config(tmp_path, "port = 70000")
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 78
    assert "page.port" in result.output


def test_summary_of_a_vehicle_at_the_booth() -> None:
    crossing = {
        "crossing": {
            "recommendation": "REFER",
            "reasons": ["UNKNOWN_CARD"],
            "cards": [{}, {}],
            "phase": "updated",
        }
    }
    lines = summary(STATUS, crossing, now=1796618170.0)
    assert "  booth     REFER (UNKNOWN_CARD) · 2 card(s) · updated" in lines
    assert "last read 3 s ago" in lines[1]
