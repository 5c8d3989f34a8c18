"""`i2i synth` and `i2i mine-pairs` through typer's runner and the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from core.contracts import PAIR_COLUMNS
from i2i.cli import app


def test_synth_then_mine_pairs(tmp_path: Path) -> None:
    runner = CliRunner()
    platform = tmp_path / "platform"
    args = ["synth", str(platform), "--notes", "40", "--users", "20", "--days", "2", "--events", "600"]
    result = runner.invoke(app, [*args, "--image-size", "16", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "events" in result.output and "600" in result.output
    assert len(list((platform / "images").glob("*.png"))) == 40

    out = tmp_path / "pairs"
    result = runner.invoke(
        app,
        [
            "mine-pairs",
            str(platform / "logs"),
            "--out",
            str(out),
            "--window",
            "2h",
            "--weighting",
            "users",
            "--top-k",
            "3",
            "--split",
            "1,0,0",
            "--event-col",
            "event",
            "--events",
            "view,click",
            "--max-events-per-user",
            "25",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "train pairs" in result.output and "capped users" in result.output
    train = pl.read_parquet(out / "train.parquet")
    assert train.columns == list(PAIR_COLUMNS)
    assert train.height > 0 and train["rank"].max() <= 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["window"] == "2h"
    assert summary["parameters"]["events"] == ["view", "click"]
    assert summary["counts"]["dropped_event_filter"] > 0
    assert summary["counts"]["users_capped"] > 0
    assert summary["splits"]["train"]["pairs"] == train.height


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    pl.DataFrame({"uid": ["u1"], "note_id": ["A"], "ts": [1]}).write_parquet(tmp_path / "logs.parquet")
    out = tmp_path / "pairs"
    result = CliRunner().invoke(app, ["mine-pairs", str(tmp_path / "logs.parquet"), "--out", str(out)])
    assert result.exit_code == 2
    assert "lacks column(s) 'user_id'; found uid, note_id, ts" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["logs.parquet"]


def test_console_script_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "i2i.cli",
            "mine-pairs",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: logs not found")


def _synth(runner: CliRunner, out: Path, *extra: str) -> object:
    args = ["synth", str(out), "--notes", "30", "--users", "10", "--days", "2", "--events", "300"]
    return runner.invoke(app, [*args, "--image-size", "8", *extra])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_mine_pairs_into_its_own_input_folder_loses_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    plat = tmp_path / "plat"
    assert _synth(runner, plat).exit_code == 0
    before = _snapshot(plat)
    args = ["mine-pairs", str(plat / "logs"), "--out", str(plat), "--window", "2h"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert f"--out {plat} contains the input {plat / 'logs'}" in result.output
    assert _snapshot(plat) == before

    result = runner.invoke(app, [*args, "--force"])  # writes its own files beside the inputs
    assert result.exit_code == 0, result.output
    after = _snapshot(plat)
    assert {k: v for k, v in after.items() if k in before} == before
    assert {"train.parquet", "val.parquet", "test.parquet", "summary.json"} <= set(after)


def test_synth_keeps_foreign_files_and_replaces_only_its_own(tmp_path: Path) -> None:
    runner = CliRunner()
    mydata = tmp_path / "mydata"
    mydata.mkdir()
    (mydata / "mine.txt").write_text("my notes")
    result = _synth(runner, mydata)
    assert result.exit_code == 2
    assert "already holds files this command did not write (e.g. mine.txt)" in result.output
    assert [p.name for p in mydata.iterdir()] == ["mine.txt"]

    assert _synth(runner, mydata, "--force").exit_code == 0
    assert (mydata / "mine.txt").read_text() == "my notes"
    assert len(list((mydata / "logs").glob("part-*.parquet"))) == 2

    # A re-run into its own output is allowed without --force; stale parts of the old run go.
    other = tmp_path / "plat"
    assert _synth(runner, other, "--days", "3").exit_code == 0
    assert len(list((other / "logs").glob("*.parquet"))) == 3
    assert _synth(runner, other).exit_code == 0
    assert sorted(p.name for p in (other / "logs").iterdir()) == ["part-000.parquet", "part-001.parquet"]


def test_out_that_is_or_lies_under_a_file_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    plat = tmp_path / "plat"
    assert _synth(runner, plat).exit_code == 0
    notes = plat / "notes.parquet"
    for out, message in ((notes, "is a file"), (notes / "pairs", "which is a file")):
        result = runner.invoke(app, ["mine-pairs", str(plat / "logs"), "--out", str(out)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
