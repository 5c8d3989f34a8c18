"""The emoji platform: source parsing, images, layout, determinism, planted structure, CLI.

Needs the Debian packages fonts-noto-color-emoji, unicode-cldr-core and unicode-data
(`make emoji-data`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from core.contracts import NOTE_OPTIONAL_COLUMNS, NOTE_REQUIRED_COLUMNS, read_notes
from core.errors import UserError
from i2i.cli import app
from pipeline.emoji import (
    generate_emoji,
    kmeans,
    read_cldr_keywords,
    read_emoji_test,
)
from pipeline.mine import mine_pairs
from pipeline.synth import pair_relation

SUBSET = ("face-smiling", "animal-bird", "food-fruit", "heart", "flag")
SMALL = {"users": 80, "days": 14, "events": 4000, "image_size": 48, "colors": 6, "subgroups": SUBSET}


@pytest.fixture(scope="module")
def emoji_platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emoji") / "platform"
    generate_emoji(out, seed=0, **SMALL)
    return out


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "emoji.json"  # emoji.json records the wall time
    }


def test_the_unicode_list_has_every_fully_qualified_emoji() -> None:
    emoji = read_emoji_test()
    # Emoji 15.0 (Debian's unicode-data): 3,655 fully-qualified emoji; the 10th group,
    # "Component" (skin tones, hair styles: 2 subgroups), holds no fully-qualified one.
    assert len(emoji) == 3655
    assert len({e.group for e in emoji}) == 9
    assert len({e.subgroup for e in emoji}) == 99
    first = emoji[0]
    assert (first.text, first.name, first.group, first.subgroup) == (
        "😀",
        "grinning face",
        "Smileys & Emotion",
        "face-smiling",
    )
    assert first.note_id == "1f600"
    keywords = read_cldr_keywords()
    assert keywords["😀"] == ["face", "grin", "grinning face"]
    assert "light skin tone" in keywords["👋🏻"]  # from annotationsDerived


def test_layout_text_and_truth(emoji_platform: Path) -> None:
    raw = pl.read_parquet(emoji_platform / "notes.parquet")
    assert raw.columns == [*NOTE_REQUIRED_COLUMNS, *NOTE_OPTIONAL_COLUMNS]
    notes = read_notes(emoji_platform / "notes.parquet")
    truth = pl.read_parquet(emoji_platform / "truth.parquet")
    assert truth["note_id"].to_list() == notes["note_id"].to_list()
    assert set(truth["subgroup"]) == set(SUBSET)
    grinning = notes.row(by_predicate=pl.col("note_id") == "1f600", named=True)
    assert grinning["title"] == "grinning face" and grinning["tags"] == ["face", "grin", "grinning face"]
    # The content never names the group or subgroup (it is empty).
    labels = {s.lower() for s in [*truth["group"], *truth["subgroup"]]}
    assert all(not any(lab in c.lower() for lab in labels) for c in notes["content"])
    # topic = subgroup id, motif = colour cluster: one id per name, several clusters in use.
    assert truth.group_by("subgroup").agg(pl.col("topic").n_unique())["topic"].max() == 1
    assert truth["topic"].n_unique() == len(SUBSET)
    assert 2 <= truth["motif"].n_unique() <= SMALL["colors"]
    summary = json.loads((emoji_platform / "emoji.json").read_text())
    assert summary["notes"] == notes.height and summary["subgroups"] == len(SUBSET)
    assert summary["wider_than_one_glyph"] == 0  # flags drew as one glyph each
    logs = pl.read_parquet(emoji_platform / "logs" / "*.parquet")
    assert logs.schema == pl.Schema(
        {"user_id": pl.Utf8, "note_id": pl.Utf8, "ts": pl.Datetime("us"), "event": pl.Utf8}
    )
    assert logs.height == SMALL["events"]
    assert set(logs["note_id"]) <= set(notes["note_id"])


def test_images_are_drawn_emoji_of_the_right_size(emoji_platform: Path) -> None:
    notes = read_notes(emoji_platform / "notes.parquet")
    assert len(list((emoji_platform / "images").glob("*.png"))) == notes.height
    seen = set()
    for rel in notes["image"]:
        with Image.open(emoji_platform / rel) as im:
            assert (im.mode, im.size) == ("RGB", (48, 48))
            px = np.asarray(im, dtype=np.float64)
        ink = (px < 235).any(axis=2).mean()  # share of pixels that are not white background
        assert 0.05 < ink < 0.999, rel
        assert px.std() > 10, rel
        seen.add(px.tobytes())
    assert len(seen) == notes.height  # every emoji draws a different picture
    # Colour clusters are about colour: the red heart and the red apple share a cluster,
    # the yellow grinning face is elsewhere.
    truth = pl.read_parquet(emoji_platform / "truth.parquet")
    motif = dict(zip(truth["note_id"], truth["motif"], strict=True))
    assert motif["2764-fe0f"] == motif["1f34e"] != motif["1f600"]


def test_co_views_follow_subgroups_and_colours(emoji_platform: Path) -> None:
    mined = mine_pairs(emoji_platform / "logs", window="1h", split=(1, 0, 0), top_k=50)
    pairs = mined.pairs["train"]
    truth = pl.read_parquet(emoji_platform / "truth.parquet")
    queries, targets = pairs["query_id"].to_list(), pairs["target_id"].to_list()

    def shares(targets: list[str]) -> tuple[float, float]:
        rel = pair_relation(truth, queries, targets)
        same_subgroup = (rel.count("text") + rel.count("both")) / len(rel)
        same_colour = (rel.count("image") + rel.count("both")) / len(rel)
        return same_subgroup, same_colour

    subgroup, colour = shares(targets)
    # Against the same pairs with targets shuffled (same popularity, no session): both
    # signals are planted.
    shuffled = list(np.random.default_rng(0).permutation(targets))
    chance_subgroup, chance_colour = shares(shuffled)
    assert subgroup > 1.5 * chance_subgroup and subgroup > 0.3
    assert colour > 1.3 * chance_colour and colour > 0.3
    rel = pair_relation(truth, queries, targets)
    assert rel.count("text") > 0.1 * len(rel) and rel.count("image") > 0.1 * len(rel)


def test_subgroup_share_moves_co_views_between_words_and_colours(tmp_path: Path) -> None:
    def relation_shares(share: float) -> tuple[float, float]:
        out = tmp_path / f"share-{share}"
        summary = generate_emoji(out, seed=0, subgroup_share=share, **SMALL)
        assert summary["subgroup_share"] == share
        pairs = mine_pairs(out / "logs", window="1h", split=(1, 0, 0), top_k=50).pairs["train"]
        truth = pl.read_parquet(out / "truth.parquet")
        rel = pair_relation(truth, pairs["query_id"].to_list(), pairs["target_id"].to_list())
        return rel.count("text") / len(rel), rel.count("image") / len(rel)

    text_mostly, colour_mostly = relation_shares(0.9), relation_shares(0.1)
    # Sessions that follow subgroups co-view notes that share words, and the other way
    # round (measured on this subset: 0.28 against 0.15 and 0.32 against 0.13).
    assert text_mostly[0] > 1.5 * colour_mostly[0]
    assert colour_mostly[1] > 1.5 * text_mostly[1]


def test_subgroup_share_out_of_range_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--subgroup-share 1\.5"):
        generate_emoji(tmp_path / "x", subgroup_share=1.5, **SMALL)
    assert not (tmp_path / "x").exists()


def test_same_seed_same_platform_other_seed_differs(tmp_path: Path) -> None:
    small = {**SMALL, "subgroups": ("face-smiling", "heart")}
    generate_emoji(tmp_path / "a", seed=3, **small)
    generate_emoji(tmp_path / "b", seed=3, **small)
    generate_emoji(tmp_path / "c", seed=4, **small)
    a, c = digest(tmp_path / "a"), digest(tmp_path / "c")
    assert a == digest(tmp_path / "b")
    assert a != c
    assert a["images/1f600.png"] == c["images/1f600.png"]  # the pictures do not depend on the seed


def test_kmeans_is_deterministic_and_orders_clusters_by_size() -> None:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.1, (30, 3)), rng.normal(5, 0.1, (10, 3))]
    a = kmeans(x, 2, np.random.default_rng(1))
    assert (a == kmeans(x, 2, np.random.default_rng(1))).all()
    assert (a[:30] == 0).all() and (a[30:] == 1).all()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--subgroups no-such-thing not in the emoji list"):
        generate_emoji(tmp_path / "x", **{**SMALL, "subgroups": ["no-such-thing"]})
    with pytest.raises(UserError, match="apt-get install fonts-noto-color-emoji"):
        generate_emoji(tmp_path / "x", font=tmp_path / "missing.ttf", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_cli_runner_and_console_script(tmp_path: Path) -> None:
    args = ["--users", "20", "--events", "800", "--days", "2", "--image-size", "32", "--colors", "3"]
    result = CliRunner().invoke(
        app, ["emoji", str(tmp_path / "a"), *args, "--subgroups", "heart", "--subgroup-share", "0.8"]
    )
    assert result.exit_code == 0, result.output
    assert "subgroups" in result.output and "800" in result.output
    assert json.loads((tmp_path / "a" / "emoji.json").read_text())["subgroup_share"] == 0.8
    assert (
        len(list((tmp_path / "a" / "images").glob("*.png")))
        == read_notes(tmp_path / "a" / "notes.parquet").height
    )

    proc = subprocess.run(
        [sys.executable, "-m", "i2i.cli", "emoji", str(tmp_path / "b"), *args, "--subgroups", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --subgroups nope not in the emoji list")
    assert not (tmp_path / "b").exists()

    proc = subprocess.run(
        [sys.executable, "-m", "i2i.cli", "emoji", str(tmp_path / "c"), *args, "--subgroup-share", "1.5"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # click's message on one line
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--subgroup-share" in proc.stderr and "less than or equal to 1" in proc.stderr
    assert not (tmp_path / "c").exists()
