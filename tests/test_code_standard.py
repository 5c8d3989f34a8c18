"""The code standard, checked by the suite: ruff (lint and format) and mypy are clean.

The tools run as the CI runs them, from this interpreter's environment, on the whole
repository (mypy: the packages and benchmarks listed in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_check_is_clean() -> None:
    out = run_tool("ruff", "check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean() -> None:
    out = run_tool("ruff", "format", "--check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean() -> None:
    out = run_tool("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout
