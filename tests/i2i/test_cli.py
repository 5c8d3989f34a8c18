"""The CLI's failure modes, through typer's runner and through a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from i2i.cli import app

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m i2i.cli ARGS` in a fresh process, the way a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "i2i.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd or REPO,
        env=env,
        timeout=120,
    )


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("synth", "mine-pairs", "train", "index", "related", "eval", "demo", "models", "serve"):
        assert name in result.output


USAGE_ERRORS = [
    ([], "Usage:"),
    (["related"], "Missing argument 'note_id'"),
    (["related", "n1", "-k", "0"], "Invalid value for '-k'"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["mine-pairs", "logs"], "Missing option '--out'"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_usage_errors_exit_2_without_traceback_in_a_real_process(args: list[str], message: str) -> None:
    proc = run_cli(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Usage:" in out and message in out
    assert "Traceback" not in out


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_usage_errors_exit_2_under_the_runner(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_importing_the_cli_loads_no_heavy_library() -> None:
    heavy = (
        "torch",
        "transformers",
        "polars",
        "matplotlib",
        "PIL",
        "fastapi",
        "uvicorn",
        "prometheus_client",
    )
    code = f"import sys, i2i.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.strip() == "[]"


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write into (root ignores permissions: use /proc)."""
    if os.geteuid() == 0:
        return Path("/proc/i2i-read-only-test")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


def test_os_problems_are_one_line_naming_the_path(tmp_path: Path) -> None:
    blocked = _read_only_dir(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cases = [
        (["synth", str(blocked), "--notes", "50", "--users", "10", "--events", "200"], str(blocked)),
        (["synth", str(afile / "sub"), "--notes", "50", "--users", "10", "--events", "200"], str(afile)),
        (["related", "n1", "--workspace", str(afile)], f"--workspace {afile} is a file"),
    ]
    for args, named in cases:
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], lines
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and named in result.output
