import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from i2i.demo import DemoConfig, mined_pairs, run_demo
from train.testing import tiny_model_config


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs)["src"] or "")


def _tiny(out: Path) -> DemoConfig:
    return DemoConfig(
        out=out,
        notes=120,
        users=60,
        days=7,
        events=4000,
        image_size=32,
        split=(0.6, 0.2, 0.2),
        model=tiny_model_config(),
        steps=3,
        pairs_per_step=4,
        val_every=3,
        num_workers=0,
        samples=2,
        k=4,
    )


def test_demo_end_to_end_writes_every_artefact(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    console = Console(record=True, width=140)
    summary = run_demo(_tiny(out), console)

    assert (out / "data" / "notes.parquet").exists() and (out / "data" / "truth.parquet").exists()
    for split in ("train", "val", "test"):
        assert (out / "pairs" / f"{split}.parquet").exists()
    assert (out / "run" / "last" / "model.safetensors").exists()
    for name in ("report.json", "report.md", "recall_at_k.png"):
        assert (out / "run" / name).stat().st_size > 0
    report = json.loads((out / "run" / "report.json").read_text())
    assert {"run", "bm25", "image-only"} <= set(report["methods"])
    assert summary["index"]["points"] == pl.read_parquet(out / "data" / "notes.parquet").height
    assert summary["train"]["steps"] == 3
    # The demo trains the LLM with LoRA by default at LoRA's rate, and the run records it.
    run_config = json.loads((out / "run" / "config.json").read_text())
    assert (run_config["llm_train"], run_config["llm_lr"]) == ("lora", 5e-4)

    page = (out / "gallery.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    parser = _Images()
    parser.feed(page)
    assert len(parser.srcs) == 2 * (1 + 4)  # two queries, each with four related notes
    assert all((out / src).exists() for src in parser.srcs)
    saved = json.loads((out / "demo.json").read_text())
    assert saved["commands"][0].startswith("i2i synth")
    text = console.export_text()
    assert "recall@10" in text and "gallery" in text


def test_demo_rerun_keeps_finished_steps(tmp_path: Path, monkeypatch) -> None:
    import pipeline.mine

    out = tmp_path / "demo"
    run_demo(_tiny(out), Console(quiet=True))
    notes_mtime = (out / "data" / "notes.parquet").stat().st_mtime_ns
    weights = sorted((out / "run" / "last").glob("*.safetensors"))[0].read_bytes()
    console = Console(record=True, width=140)

    def no_mining(*args, **kwargs):
        raise AssertionError("the logs were mined again (the gallery reads the mined pairs)")

    monkeypatch.setattr(pipeline.mine, "mine_pairs", no_mining)
    again = run_demo(_tiny(out), console)
    assert (out / "data" / "notes.parquet").stat().st_mtime_ns == notes_mtime
    assert sorted((out / "run" / "last").glob("*.safetensors"))[0].read_bytes() == weights
    assert again["index"]["embedded"] == 0  # nothing changed, nothing re-embedded
    assert "kept" in console.export_text()


def test_demo_on_the_emoji_platform(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cfg = _tiny(out)
    cfg.data, cfg.subgroups = "emoji", ("face-smiling", "animal-bird", "food-fruit", "heart")
    cfg.users, cfg.events, cfg.days = 60, 3000, 7
    summary = run_demo(cfg, Console(quiet=True))
    notes = pl.read_parquet(out / "data" / "notes.parquet")
    assert "grinning face" in notes["title"].to_list()
    assert (out / "data" / "emoji.json").exists() and not (out / "data" / "synth.json").exists()
    assert summary["index"]["points"] == notes.height
    assert summary["commands"][0].startswith(f"i2i emoji {out / 'data'} --users 60")
    assert "--subgroups face-smiling,animal-bird,food-fruit,heart" in summary["commands"][0]
    page = (out / "gallery.html").read_text()
    assert any(title in page for title in notes["title"].to_list())


def test_demo_on_a_platform_directory_of_the_users(tmp_path: Path) -> None:
    """--data DIR: mined, trained, indexed and shown from the user's own notes and logs,
    read where they are; nothing is written into DIR."""
    from pipeline.synth import generate_platform

    platform = tmp_path / "shop"
    generate_platform(platform, notes=120, users=60, days=7, events=4000, image_size=32, seed=0)
    (platform / "truth.parquet").unlink()  # a real platform has no labels
    before = {p: p.stat().st_mtime_ns for p in platform.rglob("*")}
    out = tmp_path / "demo"
    cfg = _tiny(out)
    cfg.data, cfg.window = str(platform), "1h"
    summary = run_demo(cfg, Console(quiet=True))

    assert {p: p.stat().st_mtime_ns for p in platform.rglob("*")} == before
    assert not (out / "data").exists()
    assert summary["index"]["points"] == pl.read_parquet(platform / "notes.parquet").height
    assert summary["commands"][0].startswith(f"i2i mine-pairs {platform / 'logs'}")
    assert json.loads((out / "run" / "config.json").read_text())["images"] == str(platform)
    page = (out / "gallery.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert parser.srcs and all((out / src).resolve().is_file() for src in parser.srcs)


def test_demo_unknown_data_is_a_user_error_and_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from i2i.cli import app

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--data", "movies", "--tiny"])
    assert result.exit_code == 2
    assert "--data 'movies' is neither synth, emoji nor a directory" in result.output
    assert not (tmp_path / "d").exists()
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "i2i.cli",
            "demo",
            "--out",
            str(tmp_path / "d"),
            "--data",
            str(tmp_path / "empty"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--data {tmp_path / 'empty'}: no notes.parquet or logs there" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_demo_unknown_llm_training_mode_is_a_user_error_and_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from i2i.cli import app

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--llm-train", "qlora", "--tiny"])
    assert result.exit_code == 2
    assert "--llm-train 'qlora' is not known; expected one of full, frozen, lora" in result.output
    assert not (tmp_path / "d").exists()


def test_demo_fusion_lr_reaches_the_demo_config(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import i2i.demo
    from i2i.cli import app

    seen: list[DemoConfig] = []
    monkeypatch.setattr(i2i.demo, "run_demo", lambda cfg: seen.append(cfg))
    args = ["demo", "--out", str(tmp_path / "d"), "--tiny", "--llm-train", "full"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--fusion-lr", "3e-4"]).exit_code == 0
    assert [c.fusion_lr for c in seen] == [None, 3e-4]  # unset: --lr, the paper's one rate


@pytest.mark.parametrize("value", ["0", "-1e-4", "nan"])
def test_demo_bad_fusion_lr_is_a_user_error_and_writes_nothing(tmp_path: Path, value: str) -> None:
    from typer.testing import CliRunner

    from i2i.cli import app

    out = tmp_path / "d"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--tiny", "--fusion-lr", value])
    assert result.exit_code == 2
    assert "--fusion-lr" in result.output and "give a number > 0" in result.output
    assert not out.exists()


def test_demo_bad_fusion_lr_exits_2_without_a_traceback_in_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "d"
    proc = subprocess.run(
        [sys.executable, "-m", "i2i.cli", "demo", "--out", str(out), "--tiny", "--fusion-lr", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "give a number > 0" in proc.stderr
    assert not out.exists()


def test_demo_killed_during_training_continues(tmp_path: Path, monkeypatch) -> None:
    """A demo killed before the first checkpoint leaves run/config.json without last/."""
    import train.loop

    class Killed(RuntimeError):
        pass

    def kill_at_step_1(step: int, record: dict) -> None:
        if step == 1:
            raise Killed

    real_train = train.loop.train
    monkeypatch.setattr(train.loop, "train", lambda *a, **k: real_train(*a, **k, on_step=kill_at_step_1))
    out = tmp_path / "demo"
    with pytest.raises(Killed):
        run_demo(_tiny(out), Console(quiet=True))
    assert (out / "run" / "config.json").exists() and not (out / "run" / "last").exists()
    monkeypatch.setattr(train.loop, "train", real_train)
    summary = run_demo(_tiny(out), Console(quiet=True))
    assert summary["train"]["steps"] == 3 and (out / "run" / "last").is_dir()


def test_gallery_marks_the_mined_pairs_of_every_split(tmp_path: Path) -> None:
    """The gallery's co-viewed marks come from the pairs files of all three splits (integer
    ids read as strings, a file without rank accepted), and from nothing else."""
    pl.DataFrame({"query_id": ["a", "b"], "target_id": ["b", "a"], "rank": [1, 1]}).write_parquet(
        tmp_path / "train.parquet"
    )
    pl.DataFrame({"query_id": [7], "target_id": [8]}).write_parquet(tmp_path / "val.parquet")
    pl.DataFrame({"query_id": ["x"], "target_id": ["y"], "rank": [2]}).write_parquet(
        tmp_path / "test.parquet"
    )
    assert mined_pairs(tmp_path) == {("a", "b"), ("b", "a"), ("7", "8"), ("x", "y")}
    # a pair across splits (a with x) is in no file, so it is not marked
    assert ("a", "x") not in mined_pairs(tmp_path)
