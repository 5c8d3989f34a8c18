"""`resume` continues from last/ (weights, optimizer, schedule, RNG, data position) and
ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from core.errors import UserError
from train.loop import train
from train.model import build_model
from train.run_dir import locked
from train.testing import tiny_notes, tiny_pixels

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


TIMING = {"pairs_per_s", "tokens_per_s"}
ROOT = Path(__file__).resolve().parents[2]


class Killed(RuntimeError):
    """Stands in for a crash / kill in the middle of a run."""


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def metrics(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def test_resume_equals_uninterrupted(make_config, tmp_path: Path) -> None:
    # Dropout in the Q-Former makes the result depend on the restored RNG state too.
    kwargs = {"max_steps": 6, "val_every": 2, "grad_accum": 2, "model": {"qformer_dropout": 0.1}}
    whole = make_config(out=str(tmp_path / "whole"), **kwargs)
    train(whole, console=quiet())

    parts = make_config(out=str(tmp_path / "parts"), **kwargs)

    def kill_after_step_3(step: int, record: dict) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(parts, console=quiet(), on_step=kill_after_step_3)
    assert json.loads((tmp_path / "parts" / "last" / "trainer_state.json").read_text())["step"] == 2
    assert max(line["step"] for line in metrics(tmp_path / "parts")) == 3  # step 3 logged, then lost

    result = train(parts, console=quiet(), resume=True)
    assert result.steps == 6

    a = load_file(tmp_path / "whole" / "last" / "model.safetensors")
    b = load_file(tmp_path / "parts" / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), name
    # Training moved the weights (so the comparison above is not trivially true).
    torch.manual_seed(whole.seed)
    initial = build_model(whole.model).state_dict()
    assert not torch.allclose(initial["head.weight"], a["head.weight"], atol=1e-4)
    # metrics.jsonl continues: same lines in the same order, step 3 not duplicated.
    whole_lines, parts_lines = metrics(tmp_path / "whole"), metrics(tmp_path / "parts")
    assert [(x["step"], x["split"]) for x in parts_lines] == [(x["step"], x["split"]) for x in whole_lines]
    for x, y in zip(whole_lines, parts_lines, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], abs=1e-5), (x["step"], key)


def test_resume_refuses_what_it_cannot_continue(make_config, tmp_path: Path) -> None:
    cfg = make_config(out=str(tmp_path / "run"), max_steps=2, val_every=2, val_at_start=False)
    with pytest.raises(UserError, match="nothing to resume"):
        train(cfg, console=quiet(), resume=True)
    train(cfg, console=quiet())
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(cfg, console=quiet())
    changed = make_config(out=str(tmp_path / "run"), max_steps=4, pairs_per_step=4)
    with pytest.raises(
        UserError, match="cannot change pairs_per_step on resume: the run has 8, this command 4"
    ):
        train(changed, console=quiet(), resume=True)


def test_resume_applies_and_records_what_may_change(make_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_config(out=str(run), max_steps=2, val_every=2, val_at_start=False), console=quiet())
    other_variant = make_config(variant="micl", out=str(run), max_steps=4, val_every=2)
    with pytest.raises(
        UserError,
        match=r"cannot change model\.variant on resume: the run has 'notellm2', this command 'micl'",
    ):
        train(other_variant, console=quiet(), resume=True)
    with pytest.raises(
        UserError, match=r"cannot change lr on resume: the run has 0\.001, this command 0\.01"
    ):
        train(
            make_config(out=str(run), max_steps=4, val_at_start=False, lr=0.01), console=quiet(), resume=True
        )
    # --max-steps may change: applied (two more steps) and recorded in config.json.
    result = train(make_config(out=str(run), max_steps=4, val_at_start=False), console=quiet(), resume=True)
    assert result.steps == 4
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 4
    assert json.loads((run / "config.json").read_text())["max_steps"] == 4


@pytest.mark.parametrize("resume", [False, True])
def test_run_killed_before_its_first_checkpoint_starts_over(
    make_config, tmp_path: Path, resume: bool
) -> None:
    cfg = make_config(out=str(tmp_path / "run"), max_steps=2, val_every=2)

    def kill_after_step_1(step: int, record: dict) -> None:
        if step == 1:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, console=quiet(), on_step=kill_after_step_1)
    run = tmp_path / "run"
    assert (run / "config.json").exists() and not (run / "last").exists()  # the state a kill leaves
    result = train(cfg, console=quiet(), resume=resume)
    assert result.steps == 2 and (run / "last" / "trainer_state.json").exists()
    assert [(x["step"], x["split"]) for x in metrics(run)] == [
        (0, "val"),
        (1, "train"),
        (2, "train"),
        (2, "val"),
    ]


KILL_BETWEEN_RENAMES = """
import json, os, signal, sys
from train.loop import TrainConfig, train

real_replace = os.replace
def replace(src, dst):
    real_replace(src, dst)
    # last/ has just been moved aside for the step-4 checkpoint: die before the new one moves in.
    state = os.path.join(dst, "trainer_state.json")
    if str(dst).endswith(".last.old") and json.loads(open(state).read())["step"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
train(TrainConfig.from_dict(json.loads(open(sys.argv[1]).read())))
"""


def test_kill_between_the_renames_of_last_resumes_exactly(make_config, tmp_path: Path) -> None:
    kwargs = {"max_steps": 6, "val_every": 2, "model": {"qformer_dropout": 0.1}}
    whole = make_config(out=str(tmp_path / "whole"), **kwargs)
    train(whole, console=quiet())

    parts = make_config(out=str(tmp_path / "parts"), **kwargs)
    config = tmp_path / "parts.json"
    config.write_text(json.dumps(parts.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_BETWEEN_RENAMES, str(config)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = tmp_path / "parts"
    assert not (run / "last").exists() and (run / ".last.old").is_dir() and (run / ".last.new").is_dir()

    out = io.StringIO()
    result = train(parts, console=Console(file=out, width=200), resume=True)
    assert ".last.new" in out.getvalue() and "at step 4 of 6" in out.getvalue()
    assert result.steps == 6 and not (run / ".last.old").exists() and not (run / ".last.new").exists()
    a = load_file(tmp_path / "whole" / "last" / "model.safetensors")
    b = load_file(run / "last" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), name


def test_a_second_process_on_the_run_dir_is_refused(make_config, tmp_path: Path) -> None:
    cfg = make_config(out=str(tmp_path / "run"))
    busy = f"in use by another training process \\(pid {os.getpid()}\\)"
    with locked(tmp_path / "run"), pytest.raises(UserError, match=busy):
        train(cfg, console=quiet())
    assert not (tmp_path / "run" / "config.json").exists()  # the refused run wrote nothing


def test_lora_resume_equals_uninterrupted(make_config, tmp_path: Path) -> None:
    """last/ keeps the LoRA adapters apart (merged, they would restart from zero); best/ is merged."""
    kwargs = {"max_steps": 4, "val_every": 2, "llm_train": "lora"}
    whole = make_config(out=str(tmp_path / "whole"), **kwargs)
    train(whole, console=quiet())
    parts = make_config(out=str(tmp_path / "parts"), **kwargs)

    def kill_after_step_3(step: int, record: dict) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(parts, console=quiet(), on_step=kill_after_step_3)
    train(parts, console=quiet(), resume=True)
    a = load_file(tmp_path / "whole" / "last" / "model.safetensors")
    b = load_file(tmp_path / "parts" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), name
    assert not any("lora" in k for k in load_file(tmp_path / "whole" / "best" / "model.safetensors"))
    # last/ still loads on its own (adapters attached), and equals its merged export.
    from train.checkpoint import load_checkpoint, save_checkpoint

    last = load_checkpoint(tmp_path / "whole" / "last")
    merged = load_checkpoint(save_checkpoint(last, tmp_path / "export"))
    batch = last.collate(tiny_notes(2), tiny_pixels(2))
    with torch.no_grad():
        torch.testing.assert_close(last(batch).multimodal, merged(batch).multimodal, atol=1e-5, rtol=1e-4)
