"""Loading the LLM (decoder only, no LM head) and its tokenizer.

Three sources, one result `(decoder, tokenizer)`:
- pretrained: `ModelConfig.llm` (hub name, local dir or the `smollm2-135m` alias)
  loaded with `AutoModel` (the base decoder: the LM head's vocabulary-sized logits are
  never needed, so they are never computed) and `AutoTokenizer`;
- random: `ModelConfig.llm_config` (an inline HF config with `model_type`) and a small
  byte-level tokenizer built in memory (tests; no downloads);
- checkpoint: the HF config and tokenizer saved in a checkpoint directory, weights
  loaded afterwards by `train.checkpoint`.

The tokenizer gets the `<IMG>` and `<IMG_EMB>` special tokens (embeddings resized), and
a pad token (= EOS when it has none, as SmolLM2 and many Llama tokenizers do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import UserError
from train.model_config import IMG_EMB_TOKEN, IMG_TOKEN, ModelConfig
from train.pretrained import LLM_ALIASES, resolve_llm

EOS = "<|endoftext|>"


def byte_tokenizer() -> Any:
    """A 257-token byte-level BPE tokenizer (256 bytes + EOS, no merges): encodes any
    text, builds in milliseconds, saves like any fast tokenizer. Pad = EOS on purpose."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {EOS: 0, **{ch: i + 1 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load report and progress bars while loading.

    Loading a pretrained model with fewer layers (`llm_overrides={"num_hidden_layers": N}`)
    otherwise prints a long table of "unexpected" keys for the layers left out, on purpose.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _prepare_tokenizer(tokenizer: Any, config: ModelConfig) -> Any:
    tokenizer.add_tokens([IMG_TOKEN, IMG_EMB_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"tokenizer of {config.llm!r} has neither a pad nor an EOS token; cannot pad batches"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if config.padding_side:
        tokenizer.padding_side = config.padding_side
    return tokenizer


def load_llm(config: ModelConfig, checkpoint_dir: str | Path | None = None) -> tuple[nn.Module, Any]:
    """Return `(decoder, tokenizer)` for `config` (see the module docstring).

    With `checkpoint_dir`, the architecture and tokenizer come from the checkpoint's
    `llm/` and `tokenizer/` folders and the weights are left for the caller to load.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    attn: dict[str, Any] = {"attn_implementation": config.attn_implementation}
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir)
        tokenizer = AutoTokenizer.from_pretrained(ckpt / "tokenizer")
        if config.padding_side:
            tokenizer.padding_side = config.padding_side
        hf_config = AutoConfig.from_pretrained(ckpt / "llm")
        return AutoModel.from_config(hf_config, dtype=torch.float32, **attn), tokenizer

    if config.llm_config is not None:
        cfg = dict(config.llm_config)
        model_type = cfg.pop("model_type", None)
        if model_type is None:
            raise UserError("llm_config needs a model_type (e.g. 'llama') to build a random LLM")
        tokenizer = _prepare_tokenizer(byte_tokenizer(), config)
        cfg.update(config.llm_overrides)
        cfg["vocab_size"] = len(tokenizer)
        cfg.setdefault("pad_token_id", tokenizer.pad_token_id)
        cfg.setdefault("eos_token_id", tokenizer.eos_token_id)
        hf_config = AutoConfig.for_model(model_type, **cfg)
        return AutoModel.from_config(hf_config, dtype=torch.float32, **attn), tokenizer

    source, kwargs = resolve_llm(config.llm)
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModel.from_pretrained(
                source, dtype=torch.float32, **attn, **kwargs, **config.llm_overrides
            )
    except (OSError, ValueError) as exc:  # ValueError: a folder without a usable tokenizer
        raise UserError(
            f"cannot load LLM {config.llm!r}: {exc}. Give a local model directory, a hub name that is "
            f"cached, or an offline alias ({', '.join(LLM_ALIASES)}; run `i2i models prepare smollm2-135m`)"
        ) from None
    tokenizer = _prepare_tokenizer(tokenizer, config)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        with _quiet_transformers():  # it announces how the two new rows are initialised
            model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer
