"""Visual motifs of the synthetic platform: a shape, a colour and a texture.

A motif is drawn large and saturated on a pale, nearly grey background so that a frozen
ImageNet CNN separates motifs easily; position, size, rotation and colour are jittered
per note so that two notes of one motif are similar, never identical.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
COLORS = {
    "red": (220, 30, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 30),
    "green": (40, 170, 60),
    "cyan": (30, 190, 210),
    "blue": (35, 60, 210),
    "purple": (140, 50, 190),
    "pink": (240, 100, 180),
}
TEXTURES = ("solid", "stripes", "dots", "checker")


def choose_motifs(n_motifs: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Pick `n_motifs` (shape, colour, texture) index triples, as different as possible.

    Greedy: each new motif reuses as few already-taken shapes, colours and textures as
    it can, so small platforms get motifs that differ in every attribute.
    """
    combos = list(itertools.product(range(len(SHAPES)), range(len(COLORS)), range(len(TEXTURES))))
    if n_motifs > len(combos):
        raise ValueError(f"at most {len(combos)} motifs, got {n_motifs}")
    order = rng.permutation(len(combos))
    counts = [np.zeros(len(SHAPES), int), np.zeros(len(COLORS), int), np.zeros(len(TEXTURES), int)]
    taken: set[int] = set()
    out: list[tuple[int, int, int]] = []
    for _ in range(n_motifs):
        best = min(
            (i for i in order if i not in taken),
            key=lambda i: tuple(sorted((counts[k][combos[i][k]] for k in range(3)), reverse=True)),
        )
        taken.add(int(best))
        for k in range(3):
            counts[k][combos[best][k]] += 1
        out.append(combos[best])
    return out


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if shape == "square":
        angles, radii = [45 + 90 * k for k in range(4)], [r * 1.2] * 4
    elif shape == "diamond":
        angles, radii = [90 * k for k in range(4)], [r * 1.15] * 4
    elif shape == "triangle":
        angles, radii = [-90 + 120 * k for k in range(3)], [r * 1.25] * 3
    elif shape == "hexagon":
        angles, radii = [60 * k for k in range(6)], [r] * 6
    elif shape == "star":
        angles = [-90 + 36 * k for k in range(10)]
        radii = [r * 1.25 if k % 2 == 0 else r * 0.5 for k in range(10)]
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(shape)
    return [
        (cx + rad * math.cos(math.radians(a + rot)), cy + rad * math.sin(math.radians(a + rot)))
        for a, rad in zip(angles, radii, strict=True)
    ]


def shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean (size, size) mask of `shape`, jittered in position, size and rotation."""
    im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    cx, cy = (size / 2 + rng.uniform(-0.08, 0.08, 2) * size).tolist()
    r = size * float(rng.uniform(0.27, 0.34))
    rot = float(rng.uniform(-12, 12))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r * 1.1, cy - r * 1.1, cx + r * 1.1, cy + r * 1.1], fill=255)
        draw.ellipse([cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55], fill=0)
    elif shape == "cross":
        w = r * 0.42
        draw.rectangle([cx - r * 1.15, cy - w, cx + r * 1.15, cy + w], fill=255)
        draw.rectangle([cx - w, cy - r * 1.15, cx + w, cy + r * 1.15], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rot), fill=255)
    return np.asarray(im) > 127


def texture_mask(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean (size, size) pattern: True where the motif colour shows at full strength."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // 8)
    ox, oy = rng.integers(0, period, 2)
    if texture == "solid":
        return np.ones((size, size), bool)
    if texture == "stripes":
        return ((xx + yy + ox) // max(2, period // 2)) % 2 == 0
    if texture == "dots":
        dx = (xx + ox) % period - period / 2
        dy = (yy + oy) % period - period / 2
        return dx * dx + dy * dy > (period * 0.3) ** 2
    if texture == "checker":
        return (((xx + ox) // period) + ((yy + oy) // period)) % 2 == 0
    raise ValueError(texture)


def draw_motif(shape: int, color: int, texture: int, size: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image of one motif on a pale background."""
    base = np.array(list(COLORS.values())[color], float) + rng.normal(0, 10, 3)
    bg = 225 + rng.normal(0, 8) + rng.normal(0, 4, 3)
    img = np.empty((size, size, 3), float)
    img[:] = bg
    inside = shape_mask(SHAPES[shape], size, rng)
    strong = texture_mask(TEXTURES[texture], size, rng)
    img[inside & strong] = base
    img[inside & ~strong] = base * 0.35 + 255 * 0.05  # the texture's darker second tone
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def write_images(paths: list[Path], motifs: list[tuple[int, int, int]], size: int, seeds: np.ndarray) -> None:
    """Draw and save one PNG per path (motif triple and per-image seed given)."""
    for path, (shape, color, texture), seed in zip(paths, motifs, seeds, strict=True):
        rng = np.random.default_rng(int(seed))
        draw_motif(shape, color, texture, size, rng).save(path, compress_level=6)
