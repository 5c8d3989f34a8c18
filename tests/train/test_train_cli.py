"""`i2i train` through typer's runner: TOML + flags (flags win), --resume, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from i2i.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def toml_value(value: Any) -> str:
    """Just enough TOML for a config: JSON strings are valid TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(value)


def write_toml(path: Path, top: dict[str, Any], model: dict[str, Any]) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items() if v is not None]
    lines += ["", "[model]"] + [f"{k} = {toml_value(v)}" for k, v in model.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_toml_and_flags_train_then_resume(make_config, synth_pairs: Path, tmp_path: Path) -> None:
    cfg = make_config(max_steps=50, val_every=2)
    top = {k: v for k, v in cfg.to_dict().items() if k not in ("model", "out", "pairs")}
    config = write_toml(tmp_path / "run.toml", top, cfg.model.to_dict())
    out = tmp_path / "runs" / "cli"
    args = ["train", "--config", str(config), "--pairs", str(synth_pairs), "--out", str(out)]
    bad = CliRunner().invoke(app, [*args, "--max-steps", "2", "--micl-weights", "9:1"])
    assert bad.exit_code == 2 and "--micl-weights must be two numbers" in bad.output
    flags = ["--max-steps", "2", "--variant", "late-fusion", "--micl-weights", "3,1"]
    result = CliRunner().invoke(app, [*args, *flags])
    assert result.exit_code == 0, result.output
    assert "val @ step 2" in result.output and "train: " in result.output
    assert "i2i train:" in result.output  # the summary table
    saved = json.loads((out / "config.json").read_text())
    assert saved["max_steps"] == 2 and saved["model"]["variant"] == "late-fusion"  # flags won
    assert saved["model"]["micl_weights"] == [3.0, 1.0]
    assert saved["lr"] == cfg.lr and saved["model"]["dim"] == 16  # the rest came from the TOML
    assert Path(saved["pairs"]).is_absolute()
    assert {"last", "best", "metrics.jsonl", "summary.json"} <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["counts"]["images_loaded"] == 2 * 2 * cfg.pairs_per_step

    # --resume reads the run's own config; a finished run has nothing left to do.
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "at step 2 of 2" in result.output


def test_user_errors_exit_2_with_one_line(synth_platform: Path, synth_pairs: Path, tmp_path: Path) -> None:
    notes = str(synth_platform / "notes.parquet")
    empty = tmp_path / "empty_pairs"
    empty.mkdir()
    pl.DataFrame({"query_id": ["nope"], "target_id": ["nada"], "score": [1.0], "rank": [1]}).write_parquet(
        empty / "train.parquet"
    )
    run = ["train", "--out", str(tmp_path / "r"), "--notes", notes]
    cases = [
        ([*run, "--pairs", str(tmp_path / "missing")], "pairs directory not found"),
        ([*run, "--pairs", str(empty), "--variant", "nope"], "unknown variant 'nope'"),
        ([*run, "--pairs", str(empty), "--llm-train", "half"], "unknown llm_train 'half'"),
        ([*run, "--pairs", str(empty)], "no usable train pairs"),
        ([*run, "--pairs", str(empty), "--lr", "nan"], "lr must be a number > 0, got nan"),
        ([*run, "--pairs", str(synth_pairs), "--llm", str(tmp_path / "no-model")], "LLM directory not found"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--config", str(tmp_path / "nope.toml")], "config file not found"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


HOLD_LOCK = """
import sys, time
from pathlib import Path
from train.run_dir import locked
with locked(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_train_on_one_out_fails_naming_the_holder(
    synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        notes = str(synth_platform / "notes.parquet")
        args = ["train", "--out", str(run), "--notes", notes, "--pairs", str(synth_pairs), "--device", "cpu"]
        proc = subprocess.run(
            [sys.executable, "-m", "i2i.cli", *args], env=env, capture_output=True, text=True
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    assert f"(pid {holder.pid})" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_train_stops_up_front_when_images_do_not_resolve(
    make_config, synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    cfg = make_config(max_steps=1, val_every=1)
    top = {k: v for k, v in cfg.to_dict().items() if k not in ("model", "out", "pairs", "images")}
    config = write_toml(tmp_path / "run.toml", top, cfg.model.to_dict())
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--pairs", str(synth_pairs), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--images", str(wrong)])
    assert result.exit_code == 2, result.output
    assert f"do not load from image root {wrong}" in " ".join(result.output.split())
    assert not (out / "last").exists()

    # A text-only model needs no images: no check, it trains.
    result = CliRunner().invoke(app, [*args, "--images", str(wrong), "--variant", "text-only"])
    assert result.exit_code == 0, result.output


def test_every_train_flag_is_named_after_the_field_it_sets() -> None:
    import inspect

    from i2i.commands.train import CLI_ONLY, command, config_overrides

    args = {name: None for name in inspect.signature(command).parameters}
    overrides, model_overrides = config_overrides(args)  # a flag naming no field raises
    assert set(overrides) | set(model_overrides) | set(CLI_ONLY) == set(args)
    assert {"lr", "max_steps", "notes"} <= set(overrides) and {"variant", "micl_weights"} <= set(
        model_overrides
    )
    with pytest.raises(TypeError, match="--learning-rate names no TrainConfig"):
        config_overrides({"learning_rate": 0.1})


def test_a_new_run_never_writes_into_another_commands_directory(
    make_config, synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    cfg = make_config(max_steps=1, val_every=1)
    top = {k: v for k, v in cfg.to_dict().items() if k not in ("model", "out")}
    config = write_toml(tmp_path / "run.toml", top, cfg.model.to_dict())
    # A directory another tool wrote: its summary.json has a run's file name.
    other = tmp_path / "report"
    other.mkdir()
    (other / "summary.json").write_text('{"theirs": true}\n')
    (other / "table.csv").write_text("a,b\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def train(out: Path) -> subprocess.CompletedProcess:
        args = ["train", "--config", str(config), "--out", str(out)]
        command = [sys.executable, "-m", "i2i.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True)

    for out, message in [
        (other, "already holds files this command did not write (e.g. table.csv)"),
        (synth_pairs, "is the input"),
        (synth_platform, "contains the input"),
    ]:
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        proc = train(out)
        assert proc.returncode == 2, proc.stderr
        assert message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # not even a .lock
    assert (other / "summary.json").read_text() == '{"theirs": true}\n'

    # --force writes the run's own files there and touches nothing else.
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--out", str(other), "--force"])
    assert result.exit_code == 0, result.output
    assert (other / "table.csv").read_text() == "a,b\n"
    assert json.loads((other / "summary.json").read_text())["steps"] == 1


def test_an_llm_or_vision_flag_replaces_the_files_inline_model(tmp_path: Path) -> None:
    from train.train_config import TrainConfig

    config = tmp_path / "tiny.toml"
    config.write_text('[model]\npreset = "tiny"\n')
    kept = TrainConfig.load(config)
    assert kept.model.llm_config is not None and kept.model.vision_config is not None
    flags = {"llm": "smollm2-135m", "vision": "efficientnet-lite0"}
    swapped = TrainConfig.load(config, model_overrides=flags)
    assert swapped.model.llm == "smollm2-135m" and swapped.model.llm_config is None
    assert swapped.model.vision == "efficientnet-lite0" and swapped.model.vision_config is None
    assert swapped.model.dim == kept.model.dim  # the rest of the preset stays
    same = TrainConfig.load(config, model_overrides={"vision": "open_clip"})  # the file's own value
    assert same.model.vision_config == kept.model.vision_config


def test_fusion_pretrain_flags_reach_the_run(make_config, synth_pairs: Path, tmp_path: Path) -> None:
    """--fusion-pretrain-steps/-pairs/-at through the runner and a real process."""
    cfg = make_config(max_steps=1, val_every=1)
    top = {k: v for k, v in cfg.to_dict().items() if k not in ("model", "out", "pairs")}
    config = write_toml(tmp_path / "run.toml", top, cfg.model.to_dict())
    out = tmp_path / "runs" / "pre"
    args = ["train", "--config", str(config), "--pairs", str(synth_pairs), "--out", str(out)]
    flags = ["--fusion-pretrain-steps", "3", "--fusion-pretrain-pairs", "8", "--fusion-pretrain-at", "end"]
    result = CliRunner().invoke(app, [*args, *flags])
    assert result.exit_code == 0, result.output
    assert "late fusion aligned after step 1: 3 steps x 8 pairs" in result.output
    saved = json.loads((out / "config.json").read_text())
    assert [saved[f"fusion_pretrain_{k}"] for k in ("steps", "pairs", "at")] == [3, 8, "end"]

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "i2i.cli", *args[:-1], str(tmp_path / "runs" / "bad")]
    proc = subprocess.run([*command, "--fusion-pretrain-pairs", "1"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--fusion-pretrain-pairs" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "bad").exists()
    proc = subprocess.run(
        [*command, "--fusion-pretrain-at", "middle"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "fusion_pretrain_at" in proc.stderr and "'middle'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "bad").exists()
