"""Vision encoders: shapes, frozen, picklable transforms, spec errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image

from core.errors import UserError
from train.presets import TINY_VISION
from train.testing import single_thread
from train.vision import build_vision


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_efficientnet_lite0_tokens_and_cls() -> None:
    enc = build_vision("efficientnet-lite0")
    assert enc.width == 1280 and enc.image_size == 224
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training  # stays in eval mode (frozen BatchNorm statistics)
    x = enc.transform(Image.new("RGB", (300, 200), (255, 0, 0)))
    assert x.shape == (3, 224, 224)
    assert x[0].mean().item() == pytest.approx((255 - 127) / 128, abs=1e-5)  # the package's scaling
    with torch.no_grad():
        cls, tokens = enc(x[None])
    assert cls.shape == (1, 1280) and tokens.shape == (1, 49, 1280)
    torch.testing.assert_close(cls, tokens.mean(1))


def test_inline_open_clip_tower() -> None:
    enc = build_vision("open_clip", TINY_VISION)
    assert enc.width == 64 and enc.image_size == 64
    x = enc.transform(Image.new("RGB", (80, 64)))
    with torch.no_grad():
        cls, tokens = enc(x[None])
    assert cls.shape == (1, 64) and tokens.shape == (1, 16, 64)  # 64 px / 16 px patches = 4 x 4
    pickle.loads(pickle.dumps(enc.transform))  # DataLoader workers need this


def test_named_open_clip_model_random_init() -> None:
    enc = build_vision("open_clip:ViT-S-32")
    with torch.no_grad():
        cls, tokens = enc(torch.zeros(2, 3, 224, 224))
    assert enc.width == 384 and cls.shape == (2, 384) and tokens.shape == (2, 49, 384)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet50", "unknown vision spec 'resnet50'"),
        ("open_clip:NoSuchNet", "unknown open_clip model 'NoSuchNet'"),
        ("open_clip:/tmp/weights.pt", "name the architecture"),
        ("open_clip:", "names no model"),
        ("open_clip:ViT-S-32@no_such_tag", "Offline, pass a local weights file"),
    ],
)
def test_bad_specs_say_how_to_fix(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_vision(spec)
