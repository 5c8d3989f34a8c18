"""Checkpoints: a directory that alone rebuilds the model (no flags, no hub, no pickle).

    <dir>/config.json        ModelConfig (train.config)
    <dir>/llm/config.json    the LLM's Hugging Face config (architecture, resized vocab)
    <dir>/tokenizer/         tokenizer files (with <IMG> and <IMG_EMB>)
    <dir>/model.safetensors  every weight: LLM decoder, vision encoder, connector, late
                             fusion, head, temperature (the frozen encoder is saved too,
                             so a random test tower or a local weights file round-trips
                             and loading never needs the original weights)
    <dir>/manifest.json      format version, weights sha256, checkpoint id
    <dir>/extra.json         caller's extra data (e.g. training step, metrics), optional

Writes are atomic (`core.io.atomic_path`): a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core.errors import UserError
from core.io import atomic_path
from train.config import ModelConfig
from train.model import NoteLLM2

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


def _state_dict(model: NoteLLM2) -> dict[str, torch.Tensor]:
    """All weights as contiguous CPU tensors, shared storage copied (safetensors refuses
    shared tensors); unshared tensors are not copied, so saving a large model does not
    double its memory.

    LoRA adapters (peft) are merged into a copy of the decoder first, so the saved
    checkpoint is a plain model."""
    state = model.state_dict()
    if model.llm_mode == "lora":  # pragma: no cover - needs peft
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


def save_checkpoint(model: NoteLLM2, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` to `directory` (replaced atomically). Returns the directory."""
    directory = Path(directory)
    config_text = model.config.to_json()
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(config_text)
        model.llm.config.save_pretrained(tmp / "llm")
        model.tokenizer.save_pretrained(tmp / "tokenizer")
        save_file(_state_dict(model), tmp / WEIGHTS, metadata={"format": FORMAT})
        weights_sha = _sha256(tmp / WEIGHTS)
        manifest = {"format": FORMAT, "weights_sha256": weights_sha, "id": _make_id(config_text, weights_sha)}
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
