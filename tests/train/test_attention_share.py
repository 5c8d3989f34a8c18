"""`train.attention_share`: the pooled token's attention split into prompt parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.attention_share import PARTS, attention_shares, part_masks
from train.model import build_model
from train.testing import single_thread, tiny_model_config, tiny_notes, tiny_pixels


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_part_masks_put_every_real_position_in_one_part() -> None:
    # Row 0 left-padded (two pads), row 1 unpadded; -1 marks visual tokens, 9 is <IMG_EMB>.
    ids = torch.tensor([[0, 0, 5, -1, -1, 9, 6, 7], [5, -1, -1, 9, 6, 7, 8, 4]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    parts = part_masks(ids, mask, img_emb_id=9)
    assert parts.shape == (2, len(PARTS), 8)
    first, visual, img_summary, img_emb, text = parts.unbind(1)
    assert first[0].tolist() == [0, 0, 1, 0, 0, 0, 0, 0] and first[1].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert visual[0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert img_emb[1].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    # Before <IMG_EMB>: row 1's last visual token stays visual; this prompt has no summary
    # token of its own there, as the real mICL prompt does (see below).
    assert img_summary.sum() == 0
    assert text[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1] and text[1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    summary = part_masks(torch.tensor([[5, -1, 6, 9, 7]]), torch.ones(1, 5, dtype=torch.long), img_emb_id=9)
    assert summary[0, PARTS.index("img_summary")].tolist() == [0, 0, 1, 0, 0]
    torch.testing.assert_close(parts.sum(1), mask.float())  # pads in no part, real ones in one


@pytest.mark.parametrize("variant", ["basic", "notellm2"])
def test_shares_sum_to_one_and_do_not_depend_on_padding(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant=variant))
    model.train()
    notes, pixels = tiny_notes(4), tiny_pixels(4)
    shares, counts = attention_shares(model, model.collate(notes, pixels))
    layers = model.llm.config.num_hidden_layers
    assert shares.shape == (4, layers, len(PARTS)) and counts.shape == (4, len(PARTS))
    np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-5)
    assert (counts[:, PARTS.index("visual")] == model.config.num_query_tokens).all()
    assert (counts[:, PARTS.index("img_emb")] == (1 if variant == "notellm2" else 0)).all()
    assert (counts[:, PARTS.index("img_summary")] == (1 if variant == "notellm2" else 0)).all()
    assert shares[..., PARTS.index("visual")].min() > 0  # the image is read in every layer
    # The batch pads its shorter prompts; one note at a time pads nothing. Same shares.
    for i in range(4):
        alone, _ = attention_shares(model, model.collate(notes[i : i + 1], pixels[i : i + 1]))
        np.testing.assert_allclose(alone[0], shares[i], atol=1e-5)
    assert model.training  # the mode is restored
    assert model.llm.config._attn_implementation == "sdpa"  # and the attention kernel
