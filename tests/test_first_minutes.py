"""A new user's first ten minutes: the README's commands exist as written, help is clean, configs explain
unset variables, models are found in ../shared/models."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edge.config import ConfigError, parse_config
from tests.conftest import port_open
from turnout.cli import app, package_version
from turnout.paths import REPO_ROOT, resolve_model

runner = CliRunner()
COMMAND = typer.main.get_command(app)
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "server.md"]


def _doc_commands() -> list[tuple[str, str]]:
    """Every shell line in the docs' ```bash blocks, as (doc, line) with the trailing comment removed."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line and not line.startswith("#"):
                    found.append((doc.name, line))
    return found


def _resolve(words: list[str]):
    """Walk the click tree along `words`; returns (command, remaining words)."""
    cmd, rest = COMMAND, list(words)
    while rest and hasattr(cmd, "commands") and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def _all_commands(cmd=COMMAND, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _all_commands(sub, (*path, name))


def test_docs_turnout_commands_exist_with_their_options() -> None:
    """Each `turnout ...` line of README.md / docs/server.md names a real command and only options it has."""
    lines = [(doc, line) for doc, line in _doc_commands() if line.startswith(("turnout ", "scripts/demo.sh"))]
    assert len(lines) >= 15, lines
    for doc, line in lines:
        words = shlex.split(line.replace("[", "").replace("]", ""))
        words = ["demo", *words[1:]] if words[0] == "scripts/demo.sh" else words[1:]
        cmd, rest = _resolve(words)
        assert cmd is not COMMAND, f"{doc}: {line!r}: no such command"
        known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in known, f"{doc}: {line!r}: {cmd.name} has no option {word}"
        result = runner.invoke(app, [*words[: len(words) - len(rest)], "--help"])
        assert result.exit_code == 0, (line, result.output)


def test_scripts_named_in_the_readme_exist_and_parse() -> None:
    lines = [line for _, line in _doc_commands() if line.startswith("scripts/")]
    scripts = {line.split()[0] for line in lines}
    assert scripts >= {"scripts/demo.sh", "scripts/test.sh"}
    for script in scripts:
        path = REPO_ROOT / script
        assert path.is_file() and os.access(path, os.X_OK), script
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_help_has_no_type_tags_anywhere() -> None:
    """No `<bool>`/`<str>`/`<path>` tags in any command's help; flags show bare."""
    checked = 0
    for path, _ in _all_commands():
        result = runner.invoke(app, [*path, "--help"], terminal_width=120)
        assert result.exit_code == 0, (path, result.output)
        assert not re.search(r"<(bool|str|int|float|path|text)>", result.output), (path, result.output)
        checked += 1
    assert checked >= 15
    out = runner.invoke(app, ["edge", "check", "--help"], terminal_width=120).output
    assert re.search(r"--config\s+-c\s+PATH", out) and re.search(r"--help\s+Show this", out), out


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "turnout.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"turnout {package_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", package_version())


def test_unset_variable_names_the_variable_and_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURNOUT_NO_SUCH_DIR", raising=False)
    section = {"id": "s", "seats": 4, "polygon": [[0, 0], [10, 0], [10, 10], [0, 10]]}
    cam = {"id": "c", "source": "${TURNOUT_NO_SUCH_DIR}/a.mp4", "sections": [section]}
    data = {"venue": "v", "device": "d", "cameras": [cam]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, "edge.yaml")
    assert "edge.yaml: cameras.0.source: environment variable TURNOUT_NO_SUCH_DIR is not set" in str(err.value)
    data["cameras"][0]["source"] = "${TURNOUT_NO_SUCH_DIR:-/videos}/a.mp4"
    assert parse_config(data, "edge.yaml").cameras[0].source == "/videos/a.mp4"
    monkeypatch.setenv("TURNOUT_NO_SUCH_DIR", "/data")
    assert parse_config(data, "edge.yaml").cameras[0].source == "/data/a.mp4"


def test_models_are_found_in_turnout_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-recon.onnx").write_bytes(b"x")
    monkeypatch.delenv("TURNOUT_MODEL_DIR", raising=False)
    monkeypatch.delenv("TURNOUT_MODEL", raising=False)
    monkeypatch.setenv("TURNOUT_SHARED", str(tmp_path))
    assert resolve_model("tiny") == tmp_path / "models" / "tiny-recon.onnx"
    monkeypatch.delenv("TURNOUT_SHARED")
    with pytest.raises(FileNotFoundError, match=re.escape(str(REPO_ROOT.parent / "shared" / "models"))):
        resolve_model("tiny")


def test_edge_check_runs_as_the_readme_writes_it(shared: Path) -> None:
    """`turnout edge check --config deploy/edge-vtest.yaml` with no model variables set (only TURNOUT_SHARED when
    the data is not at ../shared)."""
    if not port_open("127.0.0.1", 1883):
        pytest.skip("no broker at 127.0.0.1:1883 (the README's sample config points there)")
    env = {k: v for k, v in os.environ.items() if k not in ("TURNOUT_MODEL_DIR", "TURNOUT_MODEL")}
    if (REPO_ROOT.parent / "shared" / "models").is_dir():
        env.pop("TURNOUT_SHARED", None)
    exe = Path(sys.executable).parent / "turnout"
    result = subprocess.run(
        [str(exe), "edge", "check", "--config", "deploy/edge-vtest.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"model\s+yolo11n", result.stdout) and result.stdout.strip().endswith("ok"), result.stdout
