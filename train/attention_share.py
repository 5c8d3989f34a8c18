"""Where the pooled token looks: per LLM layer, the share of its attention on the image.

NoteLLM-2 explains visual neglect with attention: in a basic MLRM the token whose hidden
state becomes the note's embedding (the last prompt token) gives the visual tokens
little of its attention, and the paper finds that late fusion restores the image's
share in the shallow layers. `attention_shares` measures that share for a trained model.

For every note and every layer it splits the pooled token's attention (averaged over
heads) into four parts that sum to 1:

- `first`: the prompt's first token, where most LLMs park attention they do not need
  (the "attention sink"), kept apart so that it does not hide the rest;
- `visual`: the connector's visual tokens;
- `img_summary`: in the mICL prompt, the token just before `<IMG_EMB>`, whose hidden
  state is the visual embedding (the image compressed into one token); 0 elsewhere;
- `img_emb`: the `<IMG_EMB>` token of the mICL prompt (0 in other prompts);
- `text`: every other real token (the prompt's words and the pooled token itself).

Attention weights need the eager attention kernel; `attention_shares` switches the LLM to
it for the call and back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from train.model import NoteLLM2, last_token_index, positions_from_mask

PARTS = ("first", "visual", "img_summary", "img_emb", "text")


@contextlib.contextmanager
def eager_attention(llm: Any) -> Iterator[None]:
    """Run `llm` with the eager attention kernel (the only one that returns weights)."""
    before = llm.config._attn_implementation
    llm.set_attn_implementation("eager")
    try:
        yield
    finally:
        llm.set_attn_implementation(before)


def part_masks(ids: torch.Tensor, mask: torch.Tensor, img_emb_id: int) -> torch.Tensor:
    """(B, L') ids (-1 at visual positions) and mask -> (B, len(PARTS), L') 0/1 masks, one
    per part of `PARTS`; every real position is in exactly one part."""
    real = mask.bool()
    first = torch.zeros_like(real)
    first[torch.arange(ids.shape[0], device=ids.device), real.int().argmax(1)] = True
    visual = real & (ids == -1) & ~first
    img_emb = real & (ids == img_emb_id) & ~first
    img_summary = torch.zeros_like(real)
    img_summary[:, :-1] = img_emb[:, 1:]  # the position before <IMG_EMB>
    img_summary &= real & ~first & ~visual
    text = real & ~first & ~visual & ~img_summary & ~img_emb
    return torch.stack([first, visual, img_summary, img_emb, text], 1).float()


@torch.no_grad()
def attention_shares(model: NoteLLM2, batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(shares (B, layers, len(PARTS)), token counts (B, len(PARTS))) for a collated batch.

    shares[b, l, p]: the part p's share of the pooled token's attention in layer l,
    averaged over heads; each row sums to 1.
    """
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model.llm):
            embeds, mask, ids, _ = model.llm_inputs(batch)
            out = model.llm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions_from_mask(mask),
                use_cache=False,
                output_attentions=True,
            )
    finally:
        model.train(was_training)
    rows = torch.arange(mask.shape[0], device=mask.device)
    pooled = last_token_index(mask)
    parts = part_masks(ids, mask, model.img_emb_id)  # (B, P, L')
    shares = []
    for attn in out.attentions:  # (B, heads, L', L') per layer
        row = attn[rows, :, pooled].float().mean(1)  # (B, L'): the pooled token's attention
        shares.append(torch.einsum("bl,bpl->bp", row, parts))
    return torch.stack(shares, 1).cpu().numpy(), parts.sum(-1).cpu().numpy()
