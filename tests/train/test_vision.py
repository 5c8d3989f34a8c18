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


def test_efficientnet_lite0_runs_a_folded_copy_that_computes_the_same_function() -> None:
    """The forward runs the network with its BatchNorms folded into the convolutions: the
    same features as the package's own network, the same state dict, and a new copy
    whenever the weights change (a checkpoint loaded, a dtype)."""
    enc = build_vision("efficientnet-lite0")
    keys = set(enc.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 224, 224, generator=g)
    with torch.no_grad():
        _, tokens = enc(x)
        reference = enc.net.extract_features(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, reference, atol=1e-4, rtol=1e-4)
    folded = enc.inference_net()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert set(enc.state_dict()) == keys and "_inference" not in dict(enc.named_modules())
    assert enc.inference_net() is folded  # built once

    other = build_vision("efficientnet-lite0", pretrained=False)  # random weights
    with torch.no_grad():
        assert not torch.allclose(other(x)[1], tokens, atol=1e-2)  # its copy: random weights
    other.load_state_dict(enc.state_dict())  # as a checkpoint load does, in place
    with torch.no_grad():
        torch.testing.assert_close(other(x)[1], tokens, atol=1e-4, rtol=1e-4)
        enc.net._conv_head.weight.mul_(2)  # weights change in place: the copy is rebuilt
        assert enc.inference_net() is not folded
        changed = enc.net.extract_features(x).flatten(2).transpose(1, 2)
        torch.testing.assert_close(enc(x)[1], changed, atol=1e-4, rtol=1e-4)
    enc.double()
    assert enc.inference_net().state_dict()["_conv_head.weight"].dtype == torch.float64
    with torch.no_grad():
        assert enc(x.double())[1].dtype == torch.float64


def test_efficientnet_lite0_stem_colour_tokens() -> None:
    """+stem: the plain encoder's features, then each cell's stem mean and std (64)."""
    plain, stem = build_vision("efficientnet-lite0"), build_vision("efficientnet-lite0+stem")
    assert stem.width == 1280 + 64
    # Left half red, right half blue: the cells' colour statistics differ across the image.
    image = Image.new("RGB", (224, 224), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 112, 224))
    x = stem.transform(image)[None]
    with torch.no_grad():
        cls, tokens = stem(x)
        _, plain_tokens = plain(x)
    assert cls.shape == (1, 1344) and tokens.shape == (1, 49, 1344)
    torch.testing.assert_close(tokens[..., :1280], plain_tokens)
    torch.testing.assert_close(cls, tokens.mean(1))
    colour = tokens[0, :, 1280:].view(7, 7, 64)  # (row, column, statistic)
    mean, std = colour[..., :32], colour[..., 32:]
    assert (std >= 0).all()
    # Inner cells of one flat half read alike; red and blue do not. (Column 3 straddles the
    # edge; the last row and column see the convolution's zero padding.)
    torch.testing.assert_close(mean[1:6, 1], mean[1:6, 2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mean[1:6, 4], mean[1:6, 5], atol=1e-4, rtol=1e-4)
    assert (mean[3, 1] - mean[3, 5]).abs().max() > 0.5
    # The stem's statistics, computed by hand for one cell (rows/columns 0..15 of 112).
    net = stem.net
    with torch.no_grad():
        act = net._swish(net._bn0(net._conv_stem(x)))[0, :, :16, :16].flatten(1)
    torch.testing.assert_close(mean[0, 0], act.mean(1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std[0, 0], act.std(1, unbiased=False), atol=1e-3, rtol=1e-3)


def test_efficientnet_lite0_stem_colour_uneven_cells() -> None:
    """At a size that is not a multiple of 32 the cells are uneven: pooled windows instead."""
    enc = build_vision("efficientnet-lite0+stem", image_size=200)
    x = enc.transform(Image.new("RGB", (200, 200), (30, 160, 90)))[None]
    with torch.no_grad():
        _, tokens = enc(x)
    assert tokens.shape == (1, 36, 1344)  # a 6 x 6 grid; 100 stem pixels do not split in 6
    colour = tokens[0, :, 1280:]
    assert torch.isfinite(colour).all() and (colour[:, 32:] >= 0).all()
    # A flat image: inner cells alike, and their spread within a cell about zero.
    torch.testing.assert_close(colour[8], colour[9], atol=1e-4, rtol=1e-4)
    assert colour[8, 32:].max() < 0.05


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
