"""Process-group setup for `torchrun` (DDP), and the few collectives the loop needs.

`torchrun` starts one process per device and sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; `init_distributed` reads them. NCCL on CUDA, gloo on CPU.
A plain `python` / `i2i train` process (no RANK in the environment) runs as a single
rank without a process group, so the same code path serves one and many processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: its rank among `world_size` and the device it drives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # True when init_distributed created the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def inference_device(device: str | torch.device | None) -> torch.device:
    """An embedding device: None -> the GPU when CUDA is available, else CPU; a string
    such as `cpu`, `cuda` or `cuda:1` is checked against what this machine has."""
    if isinstance(device, torch.device):
        return device
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device} was asked for but no CUDA GPU is visible; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {device}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    elif dev.type != "cpu":
        raise UserError(f"unknown device {device!r}; expected cpu, cuda or cuda:N")
    return dev


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """Training's `--device`: `auto` -> the local rank's GPU when CUDA is available, else
    CPU; `cuda` -> the local rank's GPU (checked by `inference_device`); `cpu`."""
    if device not in ("auto", "cuda", "cpu"):
        raise UserError(f"unknown device {device!r}; expected auto, cuda or cpu")
    dev = inference_device(None if device == "auto" else device)
    return torch.device("cuda", local_rank) if dev.type == "cuda" else dev


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group described by torchrun's environment, or run as one rank."""
    if dist.is_available() and dist.is_initialized():  # a caller (e.g. a test) set it up
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistEnv(rank, world, local_rank, resolve_device(device, local_rank), owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world == 1:
        return DistEnv(0, 1, local_rank, dev, owns_group=False)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    device_id = dev if backend == "nccl" else None  # NCCL binds the communicator to this GPU eagerly
    dist.init_process_group(backend=backend, rank=rank, world_size=world, device_id=device_id)
    return DistEnv(rank, world, local_rank, dev, owns_group=True)


def teardown(env: DistEnv) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum a few scalars over ranks (one collective); identity on a single rank."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_rows(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate every rank's (n_r, d) tensor into (sum n_r, d), in rank order, no grad.

    Ranks may hold different row counts: rows are padded to the largest count for the
    collective and the padding is dropped afterwards.
    """
    if not env.distributed:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(env.world_size)]
    dist.all_gather(counts, n)
    most = int(max(c.item() for c in counts))
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[: int(c.item())] for o, c in zip(out, counts, strict=True)])


def all_gather_objects(obj: T, env: DistEnv) -> list[T]:
    """Every rank's `obj` (small: RNG states), in rank order; `[obj]` on a single rank."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def free_port() -> int:
    """An unused TCP port on localhost (for tests that start their own process group)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
