"""Fail clearly, not in a loop (issue 8): a bad config, a corrupt database or spool give one line naming the file,
with an exit code that the shipped systemd units do not restart (``RestartPreventExitStatus``).

The database cases (corrupt file 65, unreachable server 69) are in tests/server/test_hardening_input.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from server.cli import EXIT_DB_CORRUPT, EXIT_DB_UNREACHABLE
from tests.edge.conftest import vtest_config

ROOT = Path(__file__).resolve().parents[1]
EXIT_BAD_CONFIG = 2  # server/cli.py and edge/cli.py: bad settings, config, model, video or spool


def prevented(unit: str) -> set[int]:
    """The exit codes a shipped unit does not restart on (and that it restarts at all otherwise)."""
    lines = (ROOT / "deploy" / unit).read_text().splitlines()
    keys = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert keys.get("Restart") in ("always", "on-failure"), unit
    return {int(code) for code in keys["RestartPreventExitStatus"].split()}


def test_units_do_not_restart_on_the_exit_codes_of_errors_a_restart_cannot_fix() -> None:
    assert prevented("server/turnout-server.service") >= {EXIT_BAD_CONFIG, EXIT_DB_CORRUPT, EXIT_DB_UNREACHABLE}
    assert prevented("edge/turnout-edge.service") >= {EXIT_BAD_CONFIG}


def _stderr_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("malformed.yaml", "tick_s: [5\nmqtt_url: x\n", "not valid YAML at line"),
        ("unknown.yaml", "tick_secs: 5\n", "tick_secs"),
        ("wrong.yaml", "tick_s: -5\nmqtt_keepalive_s: many\n", "tick_s"),
        ("missing.yaml", None, "not found"),
    ],
)
def test_bad_server_settings_are_one_line_naming_the_file(tmp_path: Path, name: str, text: str | None,
                                                          words: str) -> None:  # fmt: skip
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_") or k == "TURNOUT_SHARED"}
    env["TURNOUT_DATABASE_URL"] = f"sqlite:///{tmp_path / 'turnout.db'}"
    r = subprocess.run([sys.executable, "-m", "turnout.cli", "server", "--config", str(path), "--port", "1"],
                       env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
    lines = _stderr_lines(r)
    assert r.returncode == EXIT_BAD_CONFIG, r.stderr
    assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], r.stderr
    assert not (tmp_path / "turnout.db").exists(), "nothing may start with bad settings"


def test_corrupt_edge_spool_is_one_line_naming_the_file(shared: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    cfg = vtest_config(shared, "corrupt-venue", "mqtt://127.0.0.1:1", state)
    camera = cfg["cameras"][0]["id"]
    spool = state / f"corrupt-venue-{camera}.sqlite"
    spool.write_bytes(os.urandom(8192))
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "turnout.cli", "edge", "run", "--config", str(path), "--duration", "5"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "TURNOUT_MODEL_DIR": str(shared / "models")})  # fmt: skip
    errors = [line for line in _stderr_lines(r) if "error" in line.lower() or "Traceback" in line]
    assert r.returncode == EXIT_BAD_CONFIG, r.stderr[-2000:]
    assert len(errors) == 1 and str(spool) in errors[0] and "not a database" in errors[0], r.stderr[-2000:]
