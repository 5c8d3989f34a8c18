"""Named model presets: every model shape the project ships, in one place.

    config = preset("demo")                              # a ModelConfig
    config = preset("tiny", variant="micl")              # with field overrides

A preset is a set of `ModelConfig` fields over its defaults (the `default` preset is the
defaults themselves: SmolLM2-135M + EfficientNet-Lite0 + the paper's Q-Former). A TOML
config names one in its model table, with more fields on top:

    [model]
    preset = "tiny"
    variant = "micl"

Users: `i2i demo` (`demo`, `--tiny`), the tests (`train.testing.tiny_model_config`),
`infra/launch/tiny.toml`, `benchmarks/quality.py` (`demo`, `tiny`),
`benchmarks/serve_load.py` (`tiny`) and `benchmarks/train_throughput.py` (`tiny`,
`default`, `qwen2-0.5b`).
"""

from __future__ import annotations

import copy
from typing import Any

from core.errors import UserError
from train.model_config import ModelConfig

# A 2-layer Llama (hidden 64), random init, with the in-memory byte-level tokenizer.
TINY_LLM = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
# A 2-layer open_clip ViT (width 64, 64 px, 16 patches), random init.
TINY_VISION = {"layers": 2, "width": 64, "head_width": 32, "patch_size": 16, "image_size": 64}
# Qwen2-0.5B's shape, random init (the byte-level test tokenizer replaces its vocabulary).
QWEN2_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The ModelConfig defaults: the paper's design on the one pretrained LLM and image
    # encoder available offline.
    "default": {},
    # `i2i demo` and the quality benchmark: NoteLLM-2 on the offline pretrained weights,
    # sized for a 2-core CPU. SmolLM2-135M keeps all 30 layers (the demo trains it with
    # LoRA): cutting it loses the text it knows (untrained, its last-token state ranks the
    # emoji test pool at Recall@10 0.142 with 30 layers, 0.101 with the first 6). The
    # Q-Former is the paper's design at 2 layers x 256 wide instead of 6 x 768.
    "demo": {
        "llm": "smollm2-135m",
        "vision": "efficientnet-lite0",
        "connector": "qformer",
        "qformer_layers": 2,
        "qformer_hidden": 256,
        "qformer_heads": 4,
        "num_query_tokens": 8,
        "variant": "notellm2",
        "title_max": 20,
        "content_max": 48,
        "max_prompt_tokens": 96,
        # A wider head than the paper's 64: late fusion sums an LLM share and an image
        # share into one space, and at 64 dimensions they interfere. Paired on the same
        # splits at 60 steps, notellm2 at 256 beat 64 on emoji by +0.024 [+0.004, +0.047]
        # (seed 0) and +0.006 [-0.014, +0.024] (seed 1) Recall@10, and on synth by
        # +0.045 [+0.016, +0.075]; text-only and basic moved by +0.006 and -0.004.
        # Vectors are 1 KB instead of 256 B; at scale, set `dim = 64` in the [model] table.
        "dim": 256,
        # Late fusion adds h back (z*h + (1-z)*v + h; the paper's equation and the
        # ModelConfig default have no "+ h"). On a 60-step budget the equation's gate,
        # saturated by SmolLM2's huge state dimensions, can drop the text: on 8 paired
        # draws the residual was never behind, +0.008 [-0.000, +0.016] Recall@10 pooled
        # (across draws [+0.001, +0.015]), +0.047 [+0.021, +0.075] on text-related pairs,
        # MRR +0.005 [+0.001, +0.010] (benchmarks/QUALITY.md, "The late-fusion residual").
        # It needs mICL: late fusion *alone* with it fell 0.011 [0.003, 0.020] below basic
        # on the same draws (README, "Before the pre-alignment"); train that variant with
        # `fusion_residual = false`.
        "fusion_residual": True,
    },
    # Tests and smoke runs: a tiny random model, no downloads, builds in well under a second.
    "tiny": {
        "llm": "tiny-random-llama",
        "llm_config": TINY_LLM,
        "vision": "open_clip",
        "vision_config": TINY_VISION,
        "connector": "qformer",
        "qformer_layers": 2,
        "qformer_hidden": 64,
        "qformer_heads": 4,
        "qformer_dropout": 0.0,
        "num_query_tokens": 4,
        "variant": "notellm2",
        "limit_unit": "chars",
        "max_prompt_tokens": 400,
        "dim": 16,
    },
    # The throughput benchmark's GPU shape: Qwen2-0.5B + ViT-B/16, random init.
    "qwen2-0.5b": {
        "llm": "qwen2-0.5b-shape",
        "llm_config": QWEN2_05B,
        "vision": "open_clip:ViT-B-16",
        "limit_unit": "chars",  # byte-level tokenizer: characters are its tokens
    },
}


# The late fusion on the short CPU budget of `i2i demo` and benchmarks/quality.py (60-80
# steps of 16 pairs), in three parts (benchmarks/QUALITY.md, "Aligning the image
# projection after the joint stage"):
# 1. The joint stage is the paper's one stage: every new module, the late fusion
#    included, at the new modules' rate, and the image share at weight 1.
# 2. After the last step, align W_v on the train pairs from the cached image features,
#    through the trained head (train.fusion_pretrain; ~15 s): a linear map on
#    EfficientNet-Lite0's feature learns the colour co-views that the raw feature misses,
#    but only after hundreds of steps of 64 pairs, far more than the joint budget holds.
#    Aligned *before* the first step instead, the image share is a shortcut from step 1
#    and the LLM learns few words (its share ranked the text pairs at 0.130 against
#    text-only's 0.402 on one draw).
# 3. Choose the image share's weight on every val pair (train.fusion_calibration; the
#    protocol's 143-169 greedy val queries picked it from noise: QUALITY.md, "Choosing the
#    image weight on every val pair").
FUSION_PRETRAIN_STEPS = 1500
SHORT_BUDGET_FUSION_PRETRAIN_AT = "end"


def preset_fields(name: str) -> dict[str, Any]:
    """The ModelConfig fields of preset `name` (a copy)."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig of preset `name`, with `overrides` on top."""
    return ModelConfig.from_dict({**preset_fields(name), **overrides})


def resolve_model_table(table: dict[str, Any]) -> dict[str, Any]:
    """A config file's model table with its `preset` key (if any) expanded."""
    table = dict(table)
    name = table.pop("preset", None)
    return {**preset_fields(name), **table} if name is not None else table
