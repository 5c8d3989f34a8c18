"""NoteLLM-2 model: every variant and connector runs forward and backward; the splice,
positions and pooling are right under both paddings and with pad == EOS."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from train.model import (
    NoteEmbeddings,
    build_model,
    index_before,
    last_token_index,
    positions_from_mask,
    splice_visual_tokens,
)
from train.model_config import IMG_EMB_TOKEN, IMG_TOKEN, VARIANTS, ModelConfig
from train.testing import single_thread, tiny_model_config, tiny_notes, tiny_pixels


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.mark.parametrize("connector", ["qformer", "mlp"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward_every_variant(variant: str, connector: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant=variant, connector=connector))
    model.train()
    batch = model.collate(tiny_notes(4), tiny_pixels(4))
    out = model(batch)
    assert isinstance(out, NoteEmbeddings)
    assert out.multimodal.shape == (4, 16) and out.multimodal.dtype == torch.float32
    torch.testing.assert_close(out.multimodal.norm(dim=-1), torch.ones(4))
    micl = variant in ("micl", "notellm2")
    fusion = variant in ("late-fusion", "notellm2")
    assert (out.visual is not None) == micl
    assert (out.gate is not None) == fusion
    if out.gate is not None:
        assert 0.0 < float(out.gate.detach()) < 1.0

    loss = (out.multimodal @ out.multimodal.T).sum() * model.logit_scale
    if out.visual is not None:
        loss = loss + (out.visual @ out.multimodal.T).sum()
    loss.backward()

    def has_grad(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert model.temperature.grad is not None
    assert has_grad(model.head)
    assert has_grad(model.llm)
    if variant == "text-only":
        assert model.vision is None and model.connector is None and model.fusion is None
    else:
        assert has_grad(model.connector)
        assert all(p.grad is None and not p.requires_grad for p in model.vision.parameters())
        assert not model.vision.training  # frozen encoder stays in eval mode
    if fusion:
        assert has_grad(model.fusion.gate) and has_grad(model.fusion.vision_proj)


def test_splice_places_visual_tokens_at_img() -> None:
    img = 9
    ids = torch.tensor([[1, 2, img, 3, 0, 0], [0, 1, 2, 3, img, 4]])  # right-, left-padded
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
    embeds = ids.float()[..., None].expand(-1, -1, 2)  # (2, 6, 2): embedding = token id
    visual = -torch.arange(1, 7, dtype=torch.float).view(2, 3, 1).expand(-1, -1, 2)  # (2, 3, 2)
    out, new_mask, new_ids = splice_visual_tokens(embeds, mask, ids, visual, img)
    assert out.shape == (2, 8, 2)
    assert out[0, :, 0].tolist() == [1, 2, -1, -2, -3, 3, 0, 0]
    assert new_mask[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert new_ids[0].tolist() == [1, 2, -1, -1, -1, 3, 0, 0]
    assert out[1, :, 0].tolist() == [0, 1, 2, 3, -4, -5, -6, 4]
    assert new_mask[1].tolist() == [0, 1, 1, 1, 1, 1, 1, 1]
    assert last_token_index(new_mask).tolist() == [5, 7]
    assert positions_from_mask(new_mask)[1].tolist() == [0, 0, 1, 2, 3, 4, 5, 6]


def test_splice_rejects_rows_without_exactly_one_img() -> None:
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="exactly one"):
        splice_visual_tokens(torch.zeros(1, 3, 2), torch.ones(1, 3), ids, torch.zeros(1, 2, 2), 9)


def test_pooled_positions_right_left_and_pad_equals_eos() -> None:
    eos = 0  # pad == eos: an EOS inside the text must not be taken for padding
    right = torch.tensor([[5, eos, 6, 7, eos, eos], [5, 6, 7, 8, 9, 7]])
    right_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    left_mask = right_mask.flip(1)
    naive = (right == eos).int().argmax(1) - 1  # "token before the first pad": wrong here
    assert naive.tolist()[0] == 0
    assert last_token_index(right_mask).tolist() == [3, 5]
    assert last_token_index(left_mask).tolist() == [5, 5]
    assert index_before(torch.tensor([[eos, 3, 8, 4], [3, 4, 5, 8]]), 8).tolist() == [1, 2]
    assert positions_from_mask(left_mask)[0].tolist() == [0, 0, 0, 1, 2, 3]


def _model(variant: str, side: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_model_config(variant=variant, padding_side=side))


@pytest.mark.parametrize("variant", ["text-only", "notellm2"])
def test_left_and_right_padding_give_the_same_embeddings(variant: str) -> None:
    right, left = _model(variant, "right"), _model(variant, "left")
    left.load_state_dict(right.state_dict())
    right.eval()
    left.eval()
    notes, pixels = tiny_notes(4), tiny_pixels(4)
    br, bl = right.collate(notes, pixels), left.collate(notes, pixels)
    assert (br["attention_mask"][:, -1] == 0).any() and (bl["attention_mask"][:, 0] == 0).any()
    assert right.tokenizer.pad_token_id == right.tokenizer.eos_token_id
    with torch.no_grad():
        a, b = right(br), left(bl)
        # and each note alone (no padding at all)
        solo = [right(right.collate([n], pixels[i : i + 1])).multimodal for i, n in enumerate(notes)]
    solo = torch.cat(solo)
    torch.testing.assert_close(a.multimodal, b.multimodal, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.multimodal, solo, atol=1e-5, rtol=1e-4)
    if variant == "notellm2":
        torch.testing.assert_close(a.visual, b.visual, atol=1e-5, rtol=1e-4)


def test_visual_embedding_sees_only_the_image() -> None:
    """mICL: the visual embedding is pooled before <IMG_EMB>, so text cannot reach it."""
    model = _model("micl", "right").eval()
    notes = tiny_notes(2)
    other = [dict(n, title="something else entirely", content="x", tags=[]) for n in notes]
    pixels = tiny_pixels(2)
    with torch.no_grad():
        a, b = model(model.collate(notes, pixels)), model(model.collate(other, pixels))
    torch.testing.assert_close(a.visual, b.visual, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a.multimodal, b.multimodal, atol=1e-3)


def test_late_fusion_gates_the_micl_visual_embedding_too() -> None:
    """notellm2 fuses the image's projected CLS into BOTH embeddings. With a gate that keeps
    only the image side (z = 0), the visual and the multimodal embeddings are both the
    projected CLS; without the fusion of the visual embedding they would differ."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant="notellm2")).eval()
    model.fusion.forward = lambda h, v: (v, torch.zeros_like(v))  # z = 0: all image
    pixels = tiny_pixels(3)
    with torch.no_grad():
        out = model(model.collate(tiny_notes(3), pixels))
        cls, _ = model.vision(pixels)
        expected = model._finish(model.fusion.project(cls))
    torch.testing.assert_close(out.multimodal, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.visual, expected, atol=1e-5, rtol=1e-4)


def test_fusion_init_gain_scales_the_projection_only() -> None:
    """`fusion_init_gain` multiplies W_v's initial weights (so v = W_v . cls) and nothing
    else: the same seed gives the same gate, connector and head."""
    torch.manual_seed(0)
    plain = build_model(tiny_model_config(variant="notellm2"))
    torch.manual_seed(0)
    scaled = build_model(tiny_model_config(variant="notellm2", fusion_init_gain=4.0))
    torch.testing.assert_close(scaled.fusion.vision_proj.weight, 4.0 * plain.fusion.vision_proj.weight)
    for name, p in plain.named_parameters():
        if "vision_proj" not in name:
            torch.testing.assert_close(dict(scaled.named_parameters())[name], p, msg=name)
    with pytest.raises(UserError, match="fusion_init_gain must be a positive number, got 0"):
        tiny_model_config(fusion_init_gain=0)


def test_splice_inside_the_model_feeds_connector_output_at_img() -> None:
    """Hook the LLM: the inputs_embeds rows at the former <IMG> are the connector's tokens."""
    model = _model("basic", "left").eval()
    batch = model.collate(tiny_notes(3), tiny_pixels(3))
    seen: dict[str, torch.Tensor] = {}
    model.llm.register_forward_pre_hook(lambda _m, _a, kw: seen.update(kw), with_kwargs=True)
    model.connector.register_forward_hook(lambda _m, _i, out: seen.update(visual=out))
    with torch.no_grad():
        model(batch)
    q = model.config.num_query_tokens
    p = (batch["input_ids"] == model.img_id).int().argmax(1)
    for row in range(3):
        got = seen["inputs_embeds"][row, p[row] : p[row] + q]
        torch.testing.assert_close(got, seen["visual"][row])
    assert seen["inputs_embeds"].shape[1] == batch["input_ids"].shape[1] + q - 1


def test_logit_scale_and_training_switches() -> None:
    model = build_model(tiny_model_config())
    torch.testing.assert_close(model.logit_scale, torch.tensor(3.0).exp())
    model.set_llm_trainable("frozen")
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert model.connector.query_tokens.requires_grad
    model.set_llm_trainable("full")
    assert all(p.requires_grad for p in model.llm.parameters())
    with pytest.raises(UserError, match="full, frozen, lora"):
        model.set_llm_trainable("half")
    model.enable_gradient_checkpointing()
    model.train()
    out = model(model.collate(tiny_notes(2), tiny_pixels(2)))
    out.multimodal.sum().backward()
    assert not model.vision.training


def test_lora_needs_peft_or_works() -> None:
    import importlib.util

    model = build_model(tiny_model_config(variant="text-only"))
    if importlib.util.find_spec("peft") is None:
        with pytest.raises(UserError, match="pip install peft"):
            model.set_llm_trainable("lora")
    else:
        with warnings.catch_warnings():
            # peft's read of a deprecated transformers property must not reach the user
            warnings.simplefilter("error", FutureWarning)
            model.set_llm_trainable("lora")
        assert model.llm_mode == "lora"


def test_config_errors_name_the_bad_value() -> None:
    with pytest.raises(UserError, match=r"'bogus'.*text-only, basic, micl, late-fusion, notellm2"):
        ModelConfig(variant="bogus")
    with pytest.raises(UserError, match=r"'transformer'.*qformer, mlp"):
        ModelConfig(connector="transformer")
    with pytest.raises(UserError, match=IMG_TOKEN):
        ModelConfig(variant="basic", prompt_basic="no image here")
    with pytest.raises(UserError, match=IMG_EMB_TOKEN):
        ModelConfig(variant="micl", prompt_micl="<IMG> only")
    with pytest.raises(UserError, match="vision_config"):
        tiny_model_config(vision="efficientnet-lite0")
    with pytest.raises(UserError, match="unknown vision spec"):
        build_model(tiny_model_config(vision="resnet50", vision_config=None))


def test_config_json_round_trip(tmp_path) -> None:
    cfg = tiny_model_config(variant="micl", micl_weights=(2.0, 1.0))
    cfg.to_json(tmp_path / "c.json")
    back = ModelConfig.from_json(tmp_path / "c.json")
    assert back == cfg and back.micl_weights == (2.0, 1.0)
    with pytest.raises(UserError, match="unknown model config key"):
        ModelConfig.from_dict({**cfg.to_dict(), "nope": 1})


def test_no_head_returns_llm_width() -> None:
    model = build_model(tiny_model_config(dim=0))
    out = model(model.collate(tiny_notes(2), tiny_pixels(2)))
    assert model.out_dim == 64 and out.multimodal.shape == (2, 64)


def test_collator_is_picklable_for_dataloader_workers() -> None:
    import pickle

    model = build_model(tiny_model_config(variant="micl"))
    collator = pickle.loads(pickle.dumps(model.collator))
    a, b = model.collate(tiny_notes(3), tiny_pixels(3)), collator(tiny_notes(3), tiny_pixels(3))
    assert a.keys() == b.keys() == {"input_ids", "attention_mask", "pixel_values"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="pixel_values"):
        collator(tiny_notes(2))


def test_late_fusion_is_the_papers_equation_by_default_and_the_residual_round_trips(tmp_path: Path) -> None:
    """The default fuses as the paper and the authors' current code do (no `+ h`); a
    config without the field (saved before it existed) loads that way; a residual model
    saves and reloads with its residual, and embeds differently from the equation."""
    import json

    from train.checkpoint import load_checkpoint, save_checkpoint

    config = tiny_model_config(variant="notellm2")
    assert not config.fusion_residual and not ModelConfig().fusion_residual
    torch.manual_seed(0)
    plain = build_model(config).eval()
    assert not plain.fusion.residual
    save_checkpoint(plain, tmp_path / "plain")
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    del saved["fusion_residual"]  # as written before the field existed
    (tmp_path / "plain" / "config.json").write_text(json.dumps(saved))
    reloaded = load_checkpoint(tmp_path / "plain")
    assert not reloaded.fusion.residual

    torch.manual_seed(0)
    residual = build_model(dataclasses.replace(config, fusion_residual=True)).eval()
    save_checkpoint(residual, tmp_path / "residual")
    assert load_checkpoint(tmp_path / "residual").fusion.residual
    batch = plain.collate(tiny_notes(2), tiny_pixels(2))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch).multimodal, plain(batch).multimodal)
        assert not torch.allclose(residual(batch).multimodal, plain(batch).multimodal, atol=1e-4)
