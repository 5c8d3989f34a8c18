"""The synthetic platform: contract layout, determinism, planted structure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from core.contracts import NOTE_OPTIONAL_COLUMNS, NOTE_REQUIRED_COLUMNS, read_notes
from core.errors import UserError
from pipeline.motifs import COLORS, SHAPES
from pipeline.synth import generate_platform, pair_relation
from pipeline.vocab import topic_words

SMALL = {"notes": 60, "users": 30, "days": 3, "events": 1500, "image_size": 16}


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "synth.json"  # synth.json records the wall time
    }


def test_same_seed_same_platform_other_seed_differs(tmp_path: Path) -> None:
    a = generate_platform(tmp_path / "a", seed=3, **SMALL)
    generate_platform(tmp_path / "b", seed=3, **SMALL)
    generate_platform(tmp_path / "c", seed=4, **SMALL)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    assert a["events"] == SMALL["events"]


def test_layout_matches_the_data_contracts(synth_platform: Path) -> None:
    raw = pl.read_parquet(synth_platform / "notes.parquet")
    assert raw.columns == [*NOTE_REQUIRED_COLUMNS, *NOTE_OPTIONAL_COLUMNS]
    assert raw.schema["tags"] == pl.List(pl.Utf8)
    notes = read_notes(synth_platform / "notes.parquet")
    with Image.open(synth_platform / notes["image"][0]) as im:
        assert (im.mode, im.size) == ("RGB", (32, 32))
    logs = pl.read_parquet(synth_platform / "logs" / "*.parquet")
    assert logs.schema == pl.Schema(
        {"user_id": pl.Utf8, "note_id": pl.Utf8, "ts": pl.Datetime("us"), "event": pl.Utf8}
    )
    assert logs.height == 4000
    assert len(list((synth_platform / "logs").glob("part-*.parquet"))) == 7
    assert set(logs["note_id"]) <= set(notes["note_id"])
    shares = logs["event"].value_counts(normalize=True)
    assert dict(shares.iter_rows())["view"] > 0.75
    truth = pl.read_parquet(synth_platform / "truth.parquet")
    assert {"note_id", "topic", "motif", "shape", "color", "texture", "text_length"} <= set(truth.columns)


def test_text_never_names_the_motif_but_names_the_topic(synth_platform: Path) -> None:
    notes = read_notes(synth_platform / "notes.parquet")
    truth = pl.read_parquet(synth_platform / "truth.parquet")
    visual = set(SHAPES) | set(COLORS)
    vocab = topic_words(4)
    on_topic = []
    for (title, content, tags), topic, length in zip(
        notes.select("title", "content", "tags").iter_rows(),
        truth["topic"],
        truth["text_length"],
        strict=True,
    ):
        text = f"{title} {content} {' '.join(tags)}"
        assert all(c.isalnum() or c in " #.'-" for c in text), (
            text
        )  # words only (once `").split("` leaked in)
        words = set(text.lower().replace("#", " ").replace(".", " ").split())
        assert not words & visual
        if length == "long":
            on_topic.append(
                len(words & set(vocab[topic])) > max(len(words & set(v)) for v in vocab if v != vocab[topic])
            )
        if length == "empty":
            assert content == "" and tags == []
    assert np.mean(on_topic) > 0.9
    assert set(truth["text_length"]) == {"empty", "short", "long"}


def test_heavy_tails_in_activity_and_popularity(tmp_path: Path) -> None:
    generate_platform(tmp_path / "p", notes=400, users=400, days=7, events=40_000, images=False)
    logs = pl.read_parquet(tmp_path / "p" / "logs" / "*.parquet")
    per_user = logs["user_id"].value_counts()["count"].to_numpy()
    per_note = logs["note_id"].value_counts()["count"].to_numpy()
    for counts in (per_user, per_note):
        top = np.sort(counts)[::-1]
        # The busiest 10% hold far more than 10% (about 30%+) of the events.
        assert top[: len(top) // 10].sum() / top.sum() > 0.25
    assert not (tmp_path / "p" / "images").joinpath("n000000.png").exists()


def test_pair_relation() -> None:
    truth = pl.DataFrame({"note_id": ["a", "b", "c", "d"], "topic": [0, 0, 1, 1], "motif": [5, 5, 5, 6]})
    got = pair_relation(truth, ["a", "a", "b", "c", "a"], ["b", "c", "d", "a", "zzz"])
    assert got == ["both", "image", "none", "image", "none"]
    assert pair_relation(truth, ["c"], ["d"]) == ["text"]


def test_round_trip_finds_the_planted_structure(synth_platform: Path, synth_pairs: Path) -> None:
    """Top-ranked mined pairs share a topic or a motif far more often than chance."""
    truth = pl.read_parquet(synth_platform / "truth.parquet")
    pairs = pl.concat([pl.read_parquet(synth_pairs / f"{s}.parquet") for s in ("train", "val", "test")])
    top = pairs.filter(pl.col("rank") <= 3)
    rel = pl.Series(pair_relation(truth, top["query_id"], top["target_id"]))
    share = {k: float((rel == k).mean()) for k in ("both", "text", "image", "none")}
    # Chance: random pairs of distinct notes share a factor about 1 - (3/4)^2 = 44% of the time.
    ids = truth["note_id"].to_list()
    rng = np.random.default_rng(0)
    q, t = rng.choice(len(ids), (2, 5000))
    keep = q != t
    chance = pl.Series(pair_relation(truth, [ids[i] for i in q[keep]], [ids[i] for i in t[keep]]))
    assert share["none"] < 0.5 * float((chance == "none").mean())
    for kind in ("both", "text", "image"):
        assert rel.eq(kind).sum() >= 20, (kind, share)  # every kind of relation is planted


def test_bad_sizes_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--notes 0 is too small"):
        generate_platform(tmp_path / "x", notes=0)
    with pytest.raises(UserError, match="--image-size 4 is too small"):
        generate_platform(tmp_path / "x", image_size=4)
    assert not (tmp_path / "x").exists()
