"""One process of the DDP tests, started by tests/train/test_ddp.py as a subprocess.

torchrun-style environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
WORLD_SIZE=1 is the single-process reference.

    python ddp_worker.py grads OUT PAIRS   # one forward/backward of the tiny model on a fixed
                                           # batch of PAIRS pairs, this rank's shard; saves loss
                                           # and every gradient (after DDP's all-reduce) to OUT
    python ddp_worker.py train CONFIG.json # train.loop.train(TrainConfig from the JSON)

Teardown order (a rank that destroys the gloo group, or exits, while its peer is still
talking to it can abort with "terminate called without an active exception"): every
rank meets at a barrier once its work is done, then destroys the group, then leaves with
`os._exit(0)` after flushing, so no C++ static destructor runs at interpreter exit (a
still-joinable gloo thread there is the other way to that abort; CI saw one SIGABRT).
For `train` the worker owns the group, so `train()` leaves it alone.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel as DDP

from train.distributed import DistEnv, init_distributed, teardown
from train.loop import TrainConfig, train
from train.model import build_model
from train.step import forward_loss
from train.testing import tiny_model_config, tiny_notes, tiny_pixels


def grads(out: Path, pairs: int) -> None:
    env = init_distributed("cpu")
    torch.manual_seed(0)  # identical initial weights on every rank
    model = build_model(tiny_model_config(variant="notellm2", connector="qformer"))
    notes, pixels = tiny_notes(2 * pairs), tiny_pixels(2 * pairs, seed=1)
    per_rank = pairs // env.world_size
    mine = range(env.rank * per_rank, (env.rank + 1) * per_rank)  # this rank's pairs
    rows = [*mine, *(pairs + i for i in mine)]  # [q..., d...] of the shard
    batch = model.collate([notes[i] for i in rows], pixels[rows])
    wrapped = DDP(model) if env.distributed else model
    loss, _ = forward_loss(wrapped, model, batch)
    loss.backward()
    tensors = {"loss": loss.detach().reshape(1)}
    tensors |= {f"grad.{n}": p.grad for n, p in model.named_parameters() if p.grad is not None}
    if env.is_main:
        save_file({k: v.contiguous() for k, v in tensors.items()}, out)
    finish(env)


def train_run(config: Path) -> None:
    cfg = TrainConfig.from_dict(json.loads(config.read_text()))
    env = init_distributed(cfg.device)  # the worker owns the group: train() joins it
    train(cfg)
    finish(env)


def finish(env: DistEnv) -> None:
    """Wait for every rank, then destroy the process group (see the module docstring)."""
    if env.distributed and dist.is_initialized():
        dist.barrier()
    teardown(env)


if __name__ == "__main__":
    if sys.argv[1] == "grads":
        grads(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        train_run(Path(sys.argv[2]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # a worker process only: the in-process reference returns normally
