"""A real-content platform: the Unicode emoji as notes, with simulated co-views.

Every fully-qualified emoji of `emoji-test.txt` (Unicode's emoji list: groups and
subgroups in CLDR order) is a note:

- title: its English name (`grinning face`, `flag: Japan`);
- tags: its CLDR keywords (`common/annotations/en.xml` and, for skin tones and other
  sequences, `common/annotationsDerived/en.xml`); the spoken names (`type="tts"`) are
  not keywords;
- content: empty (everything an emoji "says" is in its name and keywords; a made-up
  body would only add words that the simulation does not use);
- image: the emoji drawn by Pillow from the Noto colour font (a bitmap font that only
  renders at size 109) on a white square, then resized.

Users browse in sessions like `pipeline.synth`: half of each user's sessions (by default;
`subgroup_share`) follow a *subgroup* (`face-smiling`, `animal-bird`: what the words
describe), the others follow a *colour cluster* (k-means over each image's dominant colour: what no word
names). So co-viewed pairs are explainable by text, by image, or by both, and
`truth.parquet` slices them with `pipeline.synth.pair_relation` (`topic` = subgroup id,
`motif` = colour cluster id).

The data files come from Debian/Ubuntu packages, installed offline with
`apt-get install fonts-noto-color-emoji unicode-cldr-core unicode-data`. Drawing
emoji sequences (ZWJ, flags, skin tones) as one glyph needs Pillow built with libraqm.

Layout written under OUT (like `i2i synth`: only these files change, each atomically):

    notes.parquet      note_id, title, content, tags, image (relative to OUT)
    images/<id>.png    RGB, image_size px; <id> = lower-case code points joined by "-"
    logs/part-NNN.parquet   user_id, note_id, ts (timestamp[us]), event; one file per day
    truth.parquet      note_id, topic, motif, emoji, group, subgroup, color, color_hex, popularity
    users.parquet      user_id, events, topics, motifs (each user's preferred subgroups and colours)
    emoji.json         the parameters and counts (what `generate_emoji` returns)
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont, features

from core.errors import UserError
from core.outputs import check_output_dir, output_dir
from pipeline.options import (  # defaults the CLI shows without importing this module
    CLDR_COMMON,
    DEFAULT_COLORS,
    DEFAULT_EVENTS,
    DEFAULT_SPLIT,  # noqa: F401  (re-exported: callers import it from here)
    DEFAULT_SUBGROUP_SHARE,
    DEFAULT_USERS,
    EMOJI_TEST,
    FONT,
)
from pipeline.synth import (
    ON_TOPIC,
    PREFERENCE_LOYALTY,
    NotePools,
    sequential_ids,
    session_log,
    split_sessions,
    write_daily_logs,
)

INSTALL_HINT = "install it with: apt-get install fonts-noto-color-emoji unicode-cldr-core unicode-data"

FONT_SIZE = 109  # the only size the bitmap colour font has
CANVAS = 136  # the font's glyphs are 136 x 128 at size 109; drawn on a 136 x 136 square
BACKGROUND = (255, 255, 255)

EMOJI_OUTPUTS = (
    "notes.parquet",
    "truth.parquet",
    "users.parquet",
    "emoji.json",
    "images/*.png",
    "logs/part-*.parquet",
)

_LINE = re.compile(r"^([0-9A-F ]+?)\s*;\s*fully-qualified\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$")


@dataclass(frozen=True)
class Emoji:
    """One fully-qualified emoji of emoji-test.txt."""

    codepoints: tuple[int, ...]
    name: str
    group: str
    subgroup: str

    @property
    def text(self) -> str:
        return "".join(chr(c) for c in self.codepoints)

    @property
    def note_id(self) -> str:
        return "-".join(f"{c:x}" for c in self.codepoints)


def read_emoji_test(path: str | Path = EMOJI_TEST) -> list[Emoji]:
    """The fully-qualified emoji of `emoji-test.txt`, in file (CLDR) order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"emoji list not found: {path}; {INSTALL_HINT}")
    out: list[Emoji] = []
    group = subgroup = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif m := _LINE.match(line):
            cps = tuple(int(c, 16) for c in m.group(1).split())
            out.append(Emoji(cps, m.group(2).strip(), group, subgroup))
    if not out:
        raise UserError(f"{path} lists no fully-qualified emoji; expected Unicode's emoji-test.txt")
    return out


def read_cldr_keywords(cldr_common: str | Path = CLDR_COMMON) -> dict[str, list[str]]:
    """Emoji (without U+FE0F, as CLDR keys them) -> English keywords, in CLDR order.

    Reads `annotations/en.xml` and `annotationsDerived/en.xml` under `cldr_common`;
    a sequence in both keeps the first file's keywords.
    """
    root = Path(cldr_common)
    files = [root / "annotations" / "en.xml", root / "annotationsDerived" / "en.xml"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"CLDR annotations not found: {', '.join(missing)}; {INSTALL_HINT}")
    out: dict[str, list[str]] = {}
    for f in files:
        for el in ET.parse(f).getroot().iter("annotation"):
            cp = el.get("cp")
            if cp is None or el.get("type") == "tts" or cp in out:
                continue
            words = [w.strip() for w in (el.text or "").split("|") if w.strip()]
            out[cp] = list(dict.fromkeys(words))
    return out


def keywords_for(emoji: Emoji, keywords: dict[str, list[str]]) -> list[str]:
    """CLDR keywords of one emoji (CLDR keys drop U+FE0F); [] when CLDR has none."""
    return keywords.get(emoji.text.replace("\ufe0f", ""), keywords.get(emoji.text, []))


def load_font(path: str | Path = FONT) -> ImageFont.FreeTypeFont:
    """The colour emoji font at its one bitmap size; needs Pillow with libraqm."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"emoji font not found: {path}; {INSTALL_HINT}")
    if not features.check("raqm"):
        raise UserError(
            "Pillow lacks libraqm, so emoji sequences (flags, skin tones, ZWJ) would draw as "
            "several glyphs; install libraqm (apt-get install libraqm0) and reinstall Pillow"
        )
    return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)


def render_emoji(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    """One emoji drawn on a white CANVAS x CANVAS RGB square (glyph centred vertically)."""
    im = Image.new("RGB", (CANVAS, CANVAS), BACKGROUND)
    ImageDraw.Draw(im).text((0, (CANVAS - 128) // 2), text, font=font, embedded_color=True)
    return im


def dominant_color(im: Image.Image) -> np.ndarray:
    """The mean RGB (0..1) of the most common colour bin (8 levels per channel) among the
    pixels that are not near-white background; a nearly white image gives its mean."""
    px = np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    fg = px[(px < 235).any(axis=1)]
    if len(fg) < 0.02 * len(px):
        return px.mean(axis=0) / 255.0
    bins = (fg // 32).astype(np.int64)
    key = bins[:, 0] * 64 + bins[:, 1] * 8 + bins[:, 2]
    top = np.bincount(key, minlength=512).argmax()
    return fg[key == top].mean(axis=0) / 255.0


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) sRGB in 0..1 -> CIELAB (D65), where Euclidean distance tracks perceived colour."""
    c = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; labels renumbered by cluster size (0 = largest).

    Deterministic given `rng`; an emptied cluster is re-seeded at the farthest point.
    """
    n = len(x)
    k = min(k, n)
    centres = [x[int(rng.integers(n))]]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[int(rng.choice(n, p=p))])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(axis=1))
    c = np.array(centres)
    labels = np.full(n, -1)
    for _ in range(iters):
        dist = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        new = dist.argmin(axis=1)
        for j in range(k):
            if not (new == j).any():  # re-seed an empty cluster at the worst-fit point
                far = int(dist[np.arange(n), new].argmax())
                new[far] = j
        if (new == labels).all():
            break
        labels = new
        c = np.array([x[labels == j].mean(axis=0) for j in range(k)])
    sizes = np.bincount(labels, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    rename = np.empty(k, np.int64)
    rename[order] = np.arange(k)
    return rename[labels]


def generate_emoji(
    out: str | Path,
    *,
    users: int = DEFAULT_USERS,
    days: int = 14,
    events: int = DEFAULT_EVENTS,
    image_size: int = 96,
    colors: int = DEFAULT_COLORS,
    subgroup_share: float = DEFAULT_SUBGROUP_SHARE,
    seed: int = 0,
    subgroups: Sequence[str] | None = None,
    emoji_test: str | Path = EMOJI_TEST,
    cldr: str | Path = CLDR_COMMON,
    font: str | Path = FONT,
    force: bool = False,
) -> dict[str, Any]:
    """Write the emoji platform to `out` and return its summary (also in `emoji.json`).

    Only the platform's own files are replaced in `out` (each atomically, emoji.json
    last); a directory holding other files is refused unless `force` (`core.outputs`).

    `subgroups` keeps only those subgroups (names from emoji-test.txt), for quick runs.
    `subgroup_share` is the share of sessions that follow a subgroup (the words); the rest
    follow a colour cluster (the image alone). 0.5 by default; 0.8 makes a corpus where,
    as on many real platforms, the text explains most co-views. Deterministic given the
    seed (which draws the colour clusters, popularity and logs).
    """
    for name, value, low in (("users", users, 1), ("days", days, 1), ("events", events, 1)):
        if value < low:
            raise UserError(f"--{name} {value} is too small; expected an integer >= {low}")
    if image_size < 8:
        raise UserError(f"--image-size {image_size} is too small; expected an integer >= 8")
    if colors < 1:
        raise UserError(f"--colors {colors} is too small; expected an integer >= 1")
    if not 0.0 <= subgroup_share <= 1.0:
        raise UserError(f"--subgroup-share {subgroup_share} is out of range; expected a share in [0, 1]")
    check_output_dir(out, EMOJI_OUTPUTS, label="emoji", force=force, option="OUT")
    t0 = time.perf_counter()
    emoji = _select(read_emoji_test(emoji_test), subgroups)
    keywords = read_cldr_keywords(cldr)
    face = load_font(font)
    rng = np.random.default_rng(seed)

    drawn = [render_emoji(e.text, face) for e in emoji]
    too_wide = [e.name for e in emoji if face.getlength(e.text) > CANVAS + 4]
    dominant = np.array([dominant_color(im) for im in drawn])
    cluster = kmeans(srgb_to_lab(dominant), colors, rng)
    n_colors = int(cluster.max()) + 1

    sub_names = list(dict.fromkeys(e.subgroup for e in emoji))
    sub_id = np.array([sub_names.index(e.subgroup) for e in emoji])
    popularity = 1.0 / (1.0 + rng.permutation(len(emoji))) ** 0.8
    ids = [e.note_id for e in emoji]
    tags = [keywords_for(e, keywords) for e in emoji]
    notes = pl.DataFrame(
        {
            "note_id": ids,
            "title": [e.name for e in emoji],
            "content": [""] * len(emoji),
            "tags": pl.Series(tags, dtype=pl.List(pl.Utf8)),
            "image": [f"images/{i}.png" for i in ids],
        }
    )
    truth = pl.DataFrame(
        {
            "note_id": ids,
            "topic": sub_id.astype(np.int32),
            "motif": cluster.astype(np.int32),
            "emoji": [e.text for e in emoji],
            "group": [e.group for e in emoji],
            "subgroup": [e.subgroup for e in emoji],
            "color": cluster.astype(np.int32),
            "color_hex": ["#{:02x}{:02x}{:02x}".format(*np.rint(c * 255).astype(int)) for c in dominant],
            "popularity": popularity / popularity.sum(),
        }
    )
    prefs, logs = _browse(
        truth, users=users, days=days, events=events, subgroup_share=subgroup_share, rng=rng
    )

    out = Path(out)
    staged = output_dir(out, EMOJI_OUTPUTS, label="emoji", force=force, option="OUT", last=("emoji.json",))
    with staged as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "logs").mkdir()
        notes.write_parquet(tmp / "notes.parquet")
        truth.write_parquet(tmp / "truth.parquet")
        prefs.write_parquet(tmp / "users.parquet")
        n_parts = write_daily_logs(logs, tmp / "logs")
        for note_id, im in zip(ids, drawn, strict=True):
            small = (
                im if image_size == CANVAS else im.resize((image_size, image_size), Image.Resampling.LANCZOS)
            )
            small.save(tmp / "images" / f"{note_id}.png", optimize=False)
        summary = {
            "out": str(out),
            "seed": seed,
            "notes": len(emoji),
            "groups": len({e.group for e in emoji}),
            "subgroups": len(sub_names),
            "colors": n_colors,
            "subgroup_share": subgroup_share,
            "users": users,
            "active_users": int(logs["user_id"].n_unique()),
            "days": days,
            "events": logs.height,
            "event_counts": dict(logs.group_by("event").len().sort("event").iter_rows()),
            "image_size": image_size,
            "log_files": n_parts,
            "without_keywords": sum(1 for t in tags if not t),
            "wider_than_one_glyph": len(too_wide),
            "sources": {"emoji_test": str(emoji_test), "cldr": str(cldr), "font": str(font)},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "emoji.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def _select(emoji: list[Emoji], subgroups: Sequence[str] | None) -> list[Emoji]:
    if not subgroups:
        return emoji
    known = list(dict.fromkeys(e.subgroup for e in emoji))
    unknown = [s for s in subgroups if s not in known]
    if unknown:
        raise UserError(
            f"--subgroups {', '.join(unknown)} not in the emoji list; expected names like "
            f"{', '.join(known[:4])} ({len(known)} in all)"
        )
    wanted = set(subgroups)
    return [e for e in emoji if e.subgroup in wanted]


def _browse(
    truth: pl.DataFrame,
    *,
    users: int,
    days: int,
    events: int,
    subgroup_share: float,
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """User preferences and an event log of exactly `events` rows.

    Each user prefers two subgroups and two colour clusters; each session follows a
    subgroup (`subgroup_share` of them) or a colour cluster, mostly one of the user's preferences;
    each view follows the session's driver with probability ON_TOPIC, else it is a
    popular note (noise). Timing and clicks/likes as in `pipeline.synth`.
    """
    topic = truth["topic"].to_numpy()
    motif = truth["motif"].to_numpy()
    n_topics, n_motifs = int(topic.max()) + 1, int(motif.max()) + 1
    pop = truth["popularity"].to_numpy()

    activity = rng.lognormal(0.0, 1.1, users)
    per_user = rng.multinomial(events, activity / activity.sum())
    pref_topic = rng.integers(0, n_topics, (users, 2))
    pref_motif = rng.integers(0, n_motifs, (users, 2))
    user, session, new_session = split_sessions(per_user, rng)
    s_user = user[new_session]
    n_sessions = len(s_user)

    by_topic = rng.random(n_sessions) < subgroup_share
    which = (rng.random(n_sessions) < 0.3).astype(np.int64)  # 70% the first preference
    loyal = rng.random(n_sessions) < PREFERENCE_LOYALTY
    s_topic = np.where(loyal, pref_topic[s_user, which], rng.integers(0, n_topics, n_sessions))
    s_motif = np.where(loyal, pref_motif[s_user, which], rng.integers(0, n_motifs, n_sessions))

    everyone = NotePools(np.zeros(len(topic), np.int64), pop, 1)
    note = everyone.sample(np.zeros(events, np.int64), rng)
    on = rng.random(events) < ON_TOPIC
    e_topic = by_topic[session]
    sel = on & e_topic
    note[sel] = NotePools(topic, pop, n_topics).sample(s_topic[session][sel], rng)
    sel = on & ~e_topic
    note[sel] = NotePools(motif, pop, n_motifs).sample(s_motif[session][sel], rng)

    user_ids = pl.Series("user_id", sequential_ids("u", users), dtype=pl.Utf8)
    logs = session_log(
        note, user, session, new_session, days=days, rng=rng, note_ids=truth["note_id"], user_ids=user_ids
    )
    prefs = pl.DataFrame(
        {
            "user_id": user_ids,
            "events": per_user.astype(np.int64),
            "topics": pref_topic.astype(np.int32).tolist(),
            "motifs": pref_motif.astype(np.int32).tolist(),
        }
    )
    return prefs, logs
