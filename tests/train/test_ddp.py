"""DDP with gathered negatives equals one process on the concatenated batch (gloo, CPU).

Each test starts torchrun-style worker processes (tests/train/ddp_worker.py) with a
free port: two ranks with N pairs each against one process with 2N pairs.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from train.distributed import free_port
from train.loop import train

WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.usefixtures("one_thread")  # the in-process reference; see conftest.py


def worker_module():
    """ddp_worker.py imported in this process (the single-process reference runs here)."""
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ranks(world: int, args: list[str], timeout: float = 240) -> None:
    """Start `world` worker processes as torchrun would, wait, fail loudly on any error."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, str(WORKER), *args]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out[-4000:]}"


def test_two_gloo_ranks_give_the_loss_and_gradients_of_one_process(tmp_path: Path) -> None:
    worker_module().grads(tmp_path / "single.safetensors", 8)  # no RANK in the env: one process
    run_ranks(2, ["grads", str(tmp_path / "ddp.safetensors"), "8"])
    single, ddp = load_file(tmp_path / "single.safetensors"), load_file(tmp_path / "ddp.safetensors")
    assert single.keys() == ddp.keys()
    assert torch.allclose(single["loss"], ddp["loss"], atol=1e-5), (single["loss"], ddp["loss"])
    # The connector, fusion gate, head, LLM and temperature all get gradients, and they match.
    for part in ("grad.connector.", "grad.fusion.", "grad.head.", "grad.llm.", "grad.temperature"):
        assert any(k.startswith(part) for k in single), part
    for name in single:
        if name.startswith("grad."):
            assert torch.allclose(single[name], ddp[name], atol=1e-5, rtol=1e-4), name
    # A gradient that ignored the other rank's negatives would differ: the check can fail.
    assert any(single[k].abs().max() > 1e-4 for k in single if k.startswith("grad."))


def test_two_rank_training_matches_one_process_on_the_first_step(make_config, tmp_path: Path) -> None:
    """The loop end to end under 2 ranks: val at step 0 (sharded embedding + all-gather) and
    the first step's loss (global batch of 2 x 4 pairs) equal one process with 8 pairs."""
    results = {}
    for world, pairs_per_rank in ((1, 8), (2, 4)):
        cfg = make_config(
            out=str(tmp_path / f"w{world}"), pairs_per_step=pairs_per_rank, max_steps=2, val_every=2
        )
        if world == 1:
            train(cfg, console=Console(file=io.StringIO()))
        else:
            path = tmp_path / "cfg.json"
            path.write_text(json.dumps(cfg.to_dict()))
            run_ranks(world, ["train", str(path)])
        results[world] = [json.loads(line) for line in (tmp_path / f"w{world}" / "metrics.jsonl").open()]
    one, two = results[1], results[2]
    assert [(r["step"], r["split"]) for r in one] == [(r["step"], r["split"]) for r in two]
    for a, b in zip(one[:2], two[:2], strict=True):  # val @ 0, train @ 1
        for key in ("val_loss", "recall@5", "mrr", "loss"):
            if key in a:
                assert abs(a[key] - b[key]) < 1e-4, (key, a[key], b[key])
    assert (tmp_path / "w2" / "last" / "trainer_state.json").exists()
    state = json.loads((tmp_path / "w2" / "last" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng_python"]) == 2  # every rank's RNG kept
