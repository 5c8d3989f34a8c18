"""Checkpoints: a directory that alone rebuilds the model (no flags, no hub, no pickle).

    <dir>/config.json        ModelConfig (train.model_config)
    <dir>/llm/config.json    the LLM's Hugging Face config (architecture, resized vocab)
    <dir>/tokenizer/         tokenizer files (with <IMG> and <IMG_EMB>)
    <dir>/model.safetensors  every weight: LLM decoder, vision encoder, connector, late
                             fusion, head, temperature (the frozen encoder is saved too,
                             so a random test tower or a local weights file round-trips
                             and loading never needs the original weights)
    <dir>/manifest.json      format version, weights sha256, checkpoint id; `lora` (rank,
                             alpha) when the LoRA adapters are stored apart (see below)
    <dir>/extra.json         caller's extra data (e.g. training step, metrics), optional

Writes are atomic (`core.io.atomic_path`): a crash leaves the previous checkpoint intact.

A training run's `last/` is such a checkpoint plus the trainer state (`TrainerState`):

    last/trainer_state.json  the `TrainerState` fields: step, best, counters, the data
                             layout, every rank's python / numpy RNG states
    last/trainer_state.pt    optimizer state and every rank's torch RNG states
                             (tensors only, loaded with `weights_only=True`)

Both are written inside the same directory as the weights, so a kill can never pair
new weights with an old optimizer. A run's checkpoint directories are replaced in three
renames that a kill can interrupt anywhere (`replace_run_checkpoint`):

    build <run>/.last.XXXX.tmp   then rename it to <run>/.last.new   (complete from here on)
    rename last -> .last.old     rename .last.new -> last            delete .last.old

and `recover_run_checkpoints` (run when training starts) finishes an interrupted swap:
a `.last.new` is complete by construction, so it becomes `last/`; with no `.last.new`, a
`.last.old` whose `last/` is missing is put back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.errors import UserError
from core.io import atomic_path
from train.distributed import DistEnv, all_gather_objects, barrier
from train.model import NoteLLM2
from train.model_config import ModelConfig

FORMAT = "i2i-notellm2/1"
WEIGHTS = "model.safetensors"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _make_id(config_text: str, weights_sha: str) -> str:
    return "notellm2-" + hashlib.sha256((config_text + weights_sha).encode()).hexdigest()[:16]


def _state_dict(model: NoteLLM2, merge_lora: bool) -> dict[str, torch.Tensor]:
    """All weights as contiguous CPU tensors, shared storage copied (safetensors refuses
    shared tensors); unshared tensors are not copied, so saving a large model does not
    double its memory.

    With `merge_lora`, LoRA adapters (peft) are merged into a copy of the decoder first,
    so the saved checkpoint is a plain model; without, the adapters are saved apart."""
    state = model.state_dict()
    if model.llm_mode == "lora" and merge_lora:
        import copy

        merged = copy.deepcopy(model.llm).merge_and_unload()
        state = {k: v for k, v in state.items() if not k.startswith("llm.")}
        state.update({f"llm.{k}": v for k, v in merged.state_dict().items()})
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        t = v.detach().to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in seen:  # tied / shared weights: store a copy
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def save_checkpoint(
    model: NoteLLM2, directory: str | Path, extra: dict[str, Any] | None = None, *, merge_lora: bool = True
) -> Path:
    """Write `model` to `directory` (replaced atomically). Returns the directory.

    A LoRA model is merged into a plain one (export), unless `merge_lora=False`: then the
    adapters are kept apart, so training resumes them exactly (a training run's last/)."""
    directory = Path(directory)
    config_text = model.config.to_json()
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(config_text)
        model.llm.config.save_pretrained(tmp / "llm")
        model.tokenizer.save_pretrained(tmp / "tokenizer")
        save_file(_state_dict(model, merge_lora), tmp / WEIGHTS, metadata={"format": FORMAT})
        weights_sha = _sha256(tmp / WEIGHTS)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "weights_sha256": weights_sha,
            "id": _make_id(config_text, weights_sha),
        }
        if model.llm_mode == "lora" and not merge_lora:
            lora = model.llm.peft_config["default"]
            manifest["lora"] = {"rank": lora.r, "alpha": lora.lora_alpha}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if extra is not None:
            (tmp / "extra.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
    return directory


def _require(directory: Path) -> None:
    missing = [n for n in ("config.json", WEIGHTS, "llm", "tokenizer") if not (directory / n).exists()]
    if missing:
        raise UserError(
            f"{directory} is not a NoteLLM-2 checkpoint (missing {', '.join(missing)}); "
            "pass a directory written by `i2i train` / train.checkpoint.save_checkpoint"
        )


def load_checkpoint(
    directory: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> NoteLLM2:
    """Rebuild the model saved in `directory`, in eval mode, on `device` (default CPU)."""
    from train.llm import load_llm
    from train.vision import build_vision

    directory = Path(directory)
    _require(directory)
    config = ModelConfig.from_json(directory / "config.json")
    llm, tokenizer = load_llm(config, checkpoint_dir=directory)
    vision = (
        build_vision(config.vision, config.vision_config, config.image_size, pretrained=False)
        if config.uses_images
        else None
    )
    model = NoteLLM2(config, llm, tokenizer, vision)
    manifest = directory / "manifest.json"
    lora = json.loads(manifest.read_text()).get("lora") if manifest.exists() else None
    if lora is not None:  # adapters stored apart: attach them before loading their weights
        model.set_llm_trainable("lora", lora_rank=lora["rank"], lora_alpha=lora["alpha"])
    state = load_file(directory / WEIGHTS)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Non-persistent buffers (e.g. rotary inv_freq) are rebuilt by the constructors.
    if missing or unexpected:
        raise UserError(
            f"checkpoint {directory} does not match its config: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if dtype is not None:
        model.to(dtype=dtype)
    if device is not None:
        model.to(device)
    return model.eval()


def load_extra(directory: str | Path) -> dict[str, Any] | None:
    """The `extra` dict given to `save_checkpoint`, or None."""
    path = Path(directory) / "extra.json"
    return json.loads(path.read_text()) if path.exists() else None


def checkpoint_id(directory: str | Path) -> str:
    """A stable id for the checkpoint: hash of its config text and weights digest."""
    directory = Path(directory)
    _require(directory)
    manifest = directory / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["id"]
    return _make_id((directory / "config.json").read_text(), _sha256(directory / WEIGHTS))


RUN_CHOICES = ("best", "last")


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory `path` names: itself, or a run directory's `best/`
    (else `last/`)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"checkpoint not found: {path} (expected a run directory with best/ or last/, "
            "or a checkpoint directory written by `i2i train`)"
        )
    for sub in RUN_CHOICES:
        if (path / sub).is_dir():
            return path / sub
    if not any(path.glob("*.json")):
        raise UserError(
            f"{path} is neither a run directory (no best/ or last/) nor a checkpoint (no JSON config); "
            "pass the directory `i2i train` wrote"
        )
    return path


# --- trainer state (a training run's last/) -------------------------------------------------

STATE_JSON = "trainer_state.json"
STATE_PT = "trainer_state.pt"
COUNTERS = ("images_loaded", "images_absent", "images_broken")


@dataclass
class TrainerState:
    """Where a training run stands. `last/trainer_state.json` holds exactly these fields.

    `step` is also the data position: every epoch has the same number of steps, so the
    step and the layout (world size, pairs per step, grad accumulation, sampler seed)
    fix which batch comes next; a resume must keep the layout.
    """

    step: int = 0
    best: dict[str, Any] | None = None  # {"step", "metric", "metrics"} of the validation that made best/
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))  # images, all ranks
    world_size: int = 1
    pairs_per_step: int = 16
    grad_accum: int = 1
    sampler_seed: int = 0
    rng_numpy: list[Any] = field(default_factory=list)  # per rank, JSON-able
    rng_python: list[Any] = field(default_factory=list)  # per rank, JSON-able

    @property
    def layout(self) -> tuple[int, int, int, int]:
        return (self.world_size, self.pairs_per_step, self.grad_accum, self.sampler_seed)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def _rng_state() -> dict[str, Any]:
    """This rank's RNG states: torch as tensors, python / numpy as JSON-able lists."""
    np_state: Any = np.random.get_state()  # the legacy tuple
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None,
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
    np_state = s["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))


def replace_run_checkpoint(directory: Path, write: Callable[[Path], object]) -> None:
    """Replace `directory` (a run's last/ or best/) with what `write(path)` creates at
    `path`; a kill at any moment leaves a state `recover_run_checkpoints` completes."""
    new, old = _side(directory, "new"), _side(directory, "old")
    build = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write(build / "ckpt")
        shutil.rmtree(new, ignore_errors=True)  # a stale one (recovery ran before this)
        os.replace(build / "ckpt", new)  # from here on, `new` is complete
    finally:
        shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)


def recover_run_checkpoints(run_dir: Path) -> list[str]:
    """Finish checkpoint swaps a kill interrupted in `run_dir`; returns what was done."""
    done = []
    for name in ("last", "best"):
        directory = run_dir / name
        new, old = _side(directory, "new"), _side(directory, "old")
        for build in run_dir.glob(f".{name}.*.tmp"):  # a build the kill cut short
            shutil.rmtree(build, ignore_errors=True)
        if new.is_dir():
            if directory.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(directory, old)
            os.replace(new, directory)
            done.append(f"{name}/ taken from the complete {new.name} an interrupted save left")
        elif old.is_dir() and not directory.exists():
            os.replace(old, directory)
            done.append(f"{name}/ put back from {old.name}")
        shutil.rmtree(old, ignore_errors=True)
    return done


def _side(directory: Path, role: str) -> Path:
    return directory.parent / f".{directory.name}.{role}"


def save_trainer_checkpoint(
    run_dir: Path,
    model: NoteLLM2,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    env: DistEnv,
    best_metric: str | None = None,
) -> None:
    """Write last/ (weights + trainer state, one atomic directory) on rank 0, and best/
    (weights) when `best_metric` is given. Every rank must call it (RNG states are gathered)."""
    rngs = all_gather_objects(_rng_state(), env)  # every rank's RNG, saved by rank 0
    if env.is_main:
        state = dataclasses.replace(
            state, rng_numpy=[r["numpy"] for r in rngs], rng_python=[r["python"] for r in rngs]
        )
        tensors = {
            "optimizer": optimizer.state_dict(),
            "rng_torch": [r["torch"] for r in rngs],
            "rng_cuda": [r["cuda"] for r in rngs],
        }

        def write_last(path: Path) -> None:
            save_checkpoint(model, path, extra={"step": state.step}, merge_lora=False)
            torch.save(tensors, path / STATE_PT)
            (path / STATE_JSON).write_text(json.dumps(dataclasses.asdict(state)))

        replace_run_checkpoint(run_dir / "last", write_last)
        if best_metric is not None:
            extra = {"step": state.step, "metric": best_metric}
            replace_run_checkpoint(run_dir / "best", lambda path: save_checkpoint(model, path, extra=extra))
    barrier(env)


def load_trainer_state(
    last: Path, optimizer: torch.optim.Optimizer, env: DistEnv, expected: TrainerState
) -> TrainerState:
    """Restore the optimizer and this rank's RNG from `last/`; return the saved state.

    `expected` carries this process's layout; a different saved layout is a `UserError`.
    """
    state = TrainerState.from_dict(json.loads((last / STATE_JSON).read_text()))
    if state.layout != expected.layout:
        was, now = state.layout, expected.layout
        raise UserError(
            f"cannot resume {last.parent}: it ran with world size {was[0]}, pairs_per_step {was[1]}, "
            f"grad_accum {was[2]}, seed {was[3]}, now {now[0]}, {now[1]}, {now[2]}, {now[3]}; "
            "the data position depends on them: resume with the same values"
        )
    tensors = torch.load(last / STATE_PT, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(tensors["optimizer"])
    _set_rng_state(
        {
            "torch": tensors["rng_torch"][env.rank],
            "cuda": tensors["rng_cuda"][env.rank],
            "numpy": state.rng_numpy[env.rank],
            "python": state.rng_python[env.rank],
        }
    )
    return state
