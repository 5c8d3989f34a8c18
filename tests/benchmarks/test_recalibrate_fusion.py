"""benchmarks/recalibrate_fusion.py: choosing late fusion's image weight again for a finished
run gives what the run itself chose with the same code, and writes only a new directory."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import recalibrate_fusion as rf  # noqa: E402  (the script, from benchmarks/)

from train.checkpoint import WEIGHTS  # noqa: E402
from train.loop import train  # noqa: E402
from train.model_config import ModelConfig  # noqa: E402
from train.testing import SHORT_PROMPTS, tiny_model_config  # noqa: E402
from train.train_config import TrainConfig  # noqa: E402


def finished_run(synth_platform: Path, synth_pairs: Path, out: Path, variant: str) -> Path:
    """A two-step tiny run that validates (and saves best/) only after its calibration."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(
            notes=str(synth_platform / "notes.parquet"),
            images=str(synth_platform),
            pairs=str(synth_pairs),
            out=str(out),
            model=tiny_model_config(variant=variant, **SHORT_PROMPTS),
            lr=1e-3,
            pairs_per_step=8,
            max_steps=2,
            val_every=2,
            val_at_start=False,
            num_workers=0,
            val_ks=(5, 10),
            best_metric="recall@10",
            fusion_calibrate=variant == "notellm2",
        )
        train(cfg, console=Console(file=io.StringIO()))
    finally:
        torch.set_num_threads(before)
    return out


def test_recalibrating_a_run_gives_its_own_choice_in_a_new_directory(
    synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    run = finished_run(synth_platform, synth_pairs, tmp_path / "run", "notellm2")
    own = next(
        json.loads(line)
        for line in (run / "metrics.jsonl").open()
        if json.loads(line)["split"] == "fusion_calibration"
    )
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    out = tmp_path / "recal"
    record = rf.recalibrate(run, out)
    assert record["gain"] == own["gain"] and record["pairs"] == own["pairs"] > 0
    for key, value in own.items():
        if key.startswith("recall@10@g="):
            assert record[key] == pytest.approx(value, abs=1e-4)
    # The same weights, the same chosen g; the source run is untouched.
    assert ModelConfig.from_json(out / "best" / "config.json") == ModelConfig.from_json(
        run / "best" / "config.json"
    )
    new, old = load_file(out / "best" / WEIGHTS), load_file(run / "best" / WEIGHTS)
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in old)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fusion_calibration"]["gain"] == own["gain"] and summary["recalibrated_from"] == str(run)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before

    # An --out that exists is refused, through a real process, and left as it was.
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "recalibrate_fusion.py"), str(run), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "already exists" in done.stderr and "Traceback" not in done.stderr
    assert json.loads((out / "summary.json").read_text()) == summary


def test_a_run_without_late_fusion_is_refused(
    synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    run = finished_run(synth_platform, synth_pairs, tmp_path / "run", "micl")
    with pytest.raises(rf.UserError, match="no late fusion"):
        rf.recalibrate(run, tmp_path / "recal")
    assert not (tmp_path / "recal").exists()
