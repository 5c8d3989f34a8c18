"""The NoteLLM-2 model: frozen vision encoder + connector + LLM + mICL + late fusion + head.

    pixels ──vision (frozen)──▶ cls, tokens ──connector──▶ Q visual tokens ─┐
    note ──prompt──▶ token ids ──embed──▶ inputs_embeds ──splice at <IMG>──┴─▶ LLM
    LLM last hidden state ──pool (last real token; mICL: also before <IMG_EMB>)──▶ h
    h ──late fusion with W_v·cls (optional)──▶ head (optional) ──▶ L2 normalise

`build_model(config)` is the one factory. `text-only` builds no vision encoder
(`model.vision is None`, `model.uses_images` False) and never touches pixels.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.contracts import Note
from core.errors import UserError
from train.collate import NoteCollator
from train.connectors import build_connector
from train.fusion import LateFusion
from train.model_config import IMG_EMB_TOKEN, IMG_TOKEN, LLM_MODES, ModelConfig
from train.vision import VisionEncoder, build_vision


@dataclass
class NoteEmbeddings:
    """What `NoteLLM2.forward` returns for a batch of B notes.

    multimodal: (B, dim) L2-normalised; the note embedding used for retrieval.
    visual:     (B, dim) L2-normalised mICL visual embedding (micl / notellm2), else None.
    gate:       scalar mean late-fusion gate z on the multimodal embedding (share kept
                from the LLM side; 1 - gate is the image's share), else None.
    """

    multimodal: torch.Tensor
    visual: torch.Tensor | None = None
    gate: torch.Tensor | None = None

    def split_pairs(self) -> tuple[NoteEmbeddings, NoteEmbeddings]:
        """A batch of 2N notes `[q_1..q_N, d_1..d_N]` -> (queries, targets)."""
        n = self.multimodal.shape[0]
        if n % 2:
            raise ValueError(f"split_pairs needs an even batch laid out [q..., d...], got {n} rows")
        h = n // 2
        vis = (None, None) if self.visual is None else (self.visual[:h], self.visual[h:])
        return (
            NoteEmbeddings(self.multimodal[:h], vis[0], self.gate),
            NoteEmbeddings(self.multimodal[h:], vis[1], self.gate),
        )


# --- sequence plumbing (pure functions, unit-tested) ---------------------------------------


def splice_visual_tokens(
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor,
    visual: torch.Tensor,
    img_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each row's single `<IMG>` token embedding by its Q visual tokens.

    embeds (B, L, H), attention_mask (B, L), input_ids (B, L), visual (B, Q, H)
    -> embeds (B, L + Q - 1, H), attention_mask (B, L + Q - 1), input_ids (B, L + Q - 1)
    with -1 as the id of visual positions. Every row grows by Q - 1, so padding stays on
    its side (left or right) and no re-padding is needed.
    """
    is_img = input_ids == img_id  # (B, L)
    counts = is_img.sum(1)
    if not bool((counts == 1).all()):
        raise ValueError(
            f"every prompt must hold exactly one {IMG_TOKEN} token; counts per row: {counts.tolist()}"
        )
    _, seq, hid = embeds.shape
    q = visual.shape[1]
    p = is_img.int().argmax(1)[:, None]  # (B, 1) position of <IMG>
    j = torch.arange(seq + q - 1, device=embeds.device)[None]  # (1, L') new positions
    is_vis = (j >= p) & (j < p + q)  # (B, L')
    src = torch.where(j < p, j, j - q + 1).clamp(0, seq - 1)  # (B, L') source text index
    vis_idx = (j - p).clamp(0, q - 1)  # (B, L') source visual index
    text_part = embeds.gather(1, src[..., None].expand(-1, -1, hid))  # (B, L', H)
    vis_part = visual.to(embeds.dtype).gather(1, vis_idx[..., None].expand(-1, -1, hid))  # (B, L', H)
    out = torch.where(is_vis[..., None], vis_part, text_part)
    mask = torch.where(is_vis, torch.ones_like(src), attention_mask.gather(1, src))
    ids = torch.where(is_vis, torch.full_like(src, -1), input_ids.gather(1, src))
    return out, mask, ids


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting real tokens only (left padding starts real text at 0). (B, L)"""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, from the mask (right or left padding; a pad
    token equal to EOS does not matter). (B, L) -> (B,)"""
    if not bool(attention_mask.any(1).all()):
        raise ValueError("a row of the attention mask has no real token")
    seq = attention_mask.shape[1]
    return seq - 1 - attention_mask.long().flip(1).argmax(1)


def index_before(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """Index of the token just before the (single) `token_id` in each row. (B, L) -> (B,)"""
    hit = input_ids == token_id
    if not bool((hit.sum(1) == 1).all()):
        raise ValueError(f"every mICL prompt must hold exactly one {IMG_EMB_TOKEN} token")
    idx = hit.int().argmax(1) - 1
    if bool((idx < 0).any()):
        raise ValueError(f"{IMG_EMB_TOKEN} cannot be the first token of a prompt")
    return idx


# --- the model ----------------------------------------------------------------------------


class NoteLLM2(nn.Module):
    """A NoteLLM-2 multimodal representation model. Build it with `build_model(config)`."""

    def __init__(
        self,
        config: ModelConfig,
        llm: Any,
        tokenizer: Any,
        vision: VisionEncoder | None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        # The decoder (no LM head): forward -> last_hidden_state. A transformers model, or
        # peft's wrapper of one after `set_llm_trainable("lora")`: duck-typed.
        self.llm: Any = llm
        self.vision = vision
        hidden = int(self.llm.config.hidden_size)
        self.hidden_size = hidden
        self.connector = build_connector(vision.width, hidden, config) if vision is not None else None
        self.fusion = (
            LateFusion(
                vision.width,
                hidden,
                config.fusion_init_gain,
                config.fusion_residual,
                config.fusion_image_gain,
            )
            if (vision is not None and config.uses_late_fusion)
            else None
        )
        self.head = nn.Linear(hidden, config.dim, bias=False) if config.dim else None
        self.temperature = nn.Parameter(torch.tensor(float(config.temperature_init)))  # t; scale = exp(t)
        self.img_id = tokenizer.convert_tokens_to_ids(IMG_TOKEN)
        self.img_emb_id = tokenizer.convert_tokens_to_ids(IMG_EMB_TOKEN)
        self.collator = NoteCollator(tokenizer, config)
        self.llm_mode = "full"

    # Properties ----------------------------------------------------------------------
    @property
    def uses_images(self) -> bool:
        return self.config.uses_images

    @property
    def out_dim(self) -> int:
        """Size of the returned embeddings (`dim`, or the LLM width without a head)."""
        return int(self.config.dim) if self.config.dim else self.hidden_size

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(t): the factor applied to cosine similarities in the loss."""
        return self.temperature.exp()

    @property
    def device(self) -> torch.device:
        return self.temperature.device

    # Data ----------------------------------------------------------------------------
    def collate(self, notes: list[Note], pixel_values: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render, tokenise and pad notes (see `train.collate.NoteCollator`)."""
        return self.collator(notes, pixel_values)

    # Forward -------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> NoteEmbeddings:
        h, hv, cls = self.pooled_states(batch)
        gate = None
        if self.fusion is not None:
            assert cls is not None  # late fusion is built only with the vision encoder
            v = self.fusion.project(cls.to(h.dtype))  # (B, H)
            h, z = self.fusion(h, v)
            gate = z.mean()
            if hv is not None:
                hv, _ = self.fusion(hv, v)
        return NoteEmbeddings(self._finish(h), None if hv is None else self._finish(hv), gate)

    def fusion_parts(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The multimodal embedding's two late-fusion shares after the head, before the
        normalisation: (LLM share (B, dim), image share (B, dim)); their sum, normalised,
        is `forward(batch).multimodal`. Only for variants with late fusion."""
        if self.fusion is None:
            raise ValueError(f"variant {self.config.variant!r} has no late fusion")
        h, _, cls = self.pooled_states(batch)
        assert cls is not None  # late fusion is built only with the vision encoder
        llm_share, image_share, _ = self.fusion.shares(h, self.fusion.project(cls.to(h.dtype)))
        if self.head is not None:
            llm_share, image_share = self.head(llm_share), self.head(image_share)
        return llm_share.float(), image_share.float()

    def set_fusion_image_gain(self, gain: float) -> None:
        """Set the image share's weight g (fused = llm share + g * image share), in the
        config too, so that a checkpoint saved from here keeps it."""
        if self.fusion is None:
            raise ValueError(f"variant {self.config.variant!r} has no late fusion")
        # A new config object: the caller's (a TrainConfig's model) is left as it was.
        self.config = dataclasses.replace(self.config, fusion_image_gain=float(gain))
        self.collator.config = self.config
        self.fusion.image_gain = float(gain)

    def pooled_states(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The LLM's pooled states before late fusion: the multimodal `h` (B, H) at the
        last real token, mICL's visual `hv` (B, H) just before `<IMG_EMB>` (else None),
        and the image's CLS feature (B, width) (None without vision)."""
        embeds, mask, ids, cls = self.llm_inputs(batch)
        hidden = self.llm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False
        ).last_hidden_state  # (B, L', H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        h = hidden[rows, last_token_index(mask)]  # (B, H)
        hv = hidden[rows, index_before(ids, self.img_emb_id)] if self.config.uses_micl else None  # (B, H)
        return h, hv, cls

    def llm_inputs(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What the LLM reads: the prompt's token embeddings with the visual tokens spliced
        in at `<IMG>` (B, L', H), its attention mask (B, L'), the ids (-1 at visual
        positions) (B, L'), and the image's CLS feature (B, width), None without vision."""
        ids = batch["input_ids"].to(self.device)  # (B, L)
        mask = batch["attention_mask"].to(self.device)  # (B, L)
        embeds = self.llm.get_input_embeddings()(ids)  # (B, L, H)
        if self.vision is None:
            return embeds, mask, ids, None
        assert self.connector is not None  # built with the vision encoder
        cls, tokens = self.encode_image(batch)
        visual = self.connector(cls, tokens)  # (B, Q, H)
        embeds, mask, ids = splice_visual_tokens(embeds, mask, ids, visual, self.img_id)
        return embeds, mask, ids, cls

    def encode_image(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen encoder's (cls (B, width), tokens (B, T, width)): from the batch's
        cached `vision_features` (B, 1 + T, width) when present, else from `pixel_values`."""
        if self.vision is None:
            raise ValueError(f"variant {self.config.variant!r} reads no image")
        dtype = next(self.vision.parameters()).dtype
        if "vision_features" in batch:
            feats = batch["vision_features"].to(self.device, dtype)
            return feats[:, 0], feats[:, 1:]
        if "pixel_values" not in batch:
            raise ValueError(
                f"variant {self.config.variant!r} needs batch['pixel_values'] or ['vision_features']"
            )
        with torch.no_grad():  # frozen encoder: no graph, no activations kept
            return self.vision(batch["pixel_values"].to(self.device, dtype))

    def _finish(self, h: torch.Tensor) -> torch.Tensor:
        """Head (optional) then L2 normalisation; float32 out. (B, H) -> (B, dim)"""
        if self.head is not None:
            h = self.head(h)
        return F.normalize(h.float(), dim=-1)

    # Training switches ---------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Recompute LLM activations in backward (less memory, ~30% more compute)."""
        if hasattr(self.llm, "activation_checkpointing_enable"):  # transformers >= 5
            self.llm.activation_checkpointing_enable({"use_reentrant": False})
        else:
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def set_llm_trainable(self, mode: str, lora_rank: int = 16, lora_alpha: int = 32) -> None:
        """ "full": train all LLM weights; "frozen": none; "lora": low-rank adapters (peft)."""
        if mode not in LLM_MODES:
            raise UserError(f"unknown LLM training mode {mode!r}; choose one of {', '.join(LLM_MODES)}")
        if mode == "lora":
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError:
                raise UserError(
                    "LLM mode 'lora' needs peft: pip install peft (or use 'full' / 'frozen')"
                ) from None
            if self.llm_mode != "lora":
                lcfg = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules="all-linear")
                with warnings.catch_warnings():
                    # peft reads transformers' deprecated `is_gradient_checkpointing`; not ours to act on
                    warnings.filterwarnings(
                        "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
                    )
                    self.llm = get_peft_model(self.llm, lcfg)
        else:
            if self.llm_mode == "lora":
                raise UserError(
                    "LoRA adapters are already attached; rebuild the model to change the LLM mode"
                )
            for p in self.llm.parameters():
                p.requires_grad_(mode == "full")
        self.llm_mode = mode


def build_model(config: ModelConfig) -> NoteLLM2:
    """The one factory: load the LLM and the vision encoder named by `config`, add a
    randomly initialised connector, late fusion, head and temperature."""
    from train.llm import load_llm

    config.validate()
    llm, tokenizer = load_llm(config)
    vision = (
        build_vision(config.vision, config.vision_config, config.image_size) if config.uses_images else None
    )
    return NoteLLM2(config, llm, tokenizer, vision)
