"""`resume` continues from last/ (weights, optimizer, schedule, RNG, data position) and
ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from core.errors import UserError
from train.loop import train
from train.model import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


TIMING = {"pairs_per_s", "tokens_per_s"}


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
    with pytest.raises(UserError, match="pairs_per_step 8"):
        train(changed, console=quiet(), resume=True)
