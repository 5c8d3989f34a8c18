"""Reference embedders: a label oracle reaches exactly the pairs that share its label, and
the colour histogram counts a glyph's colours and not its white background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from retriever.baselines import embedding_scorer
from retriever.evaluate import build_eval_set, evaluate_scores
from retriever.oracles import ColourHistogramEmbedder, LabelEmbedder, colour_histogram


def test_label_oracle_recalls_exactly_the_pairs_that_share_its_label() -> None:
    # 6 notes; labels a a b b c c. Pairs: n0->n1 (share a), n2->n4 (b vs c), n5->n3 (c vs b)
    labels = dict(zip([f"n{i}" for i in range(6)], "aabbcc", strict=True))
    notes = pl.DataFrame(
        {
            "note_id": list(labels),
            "title": ["t"] * 6,
            "content": [""] * 6,
            "tags": [[]] * 6,
            "image": [None] * 6,
        },
        schema_overrides={"tags": pl.List(pl.Utf8), "image": pl.Utf8},
    )
    pairs = pl.DataFrame({"query_id": ["n0", "n2", "n5"], "target_id": ["n1", "n4", "n3"], "rank": [1, 1, 1]})
    es = build_eval_set(notes, pairs, split_notes=list(labels))
    oracle = LabelEmbedder(labels, "label")
    emb = oracle.embed(es.queries + es.pool)
    assert oracle.dim == 3 and emb.shape == (len(es.queries) + len(es.pool), 3)
    assert np.allclose(emb.sum(1), 1.0)
    result = evaluate_scores(embedding_scorer(oracle, es), es, "oracle", ks=(1, 2))
    # pool = the split's notes that are not queries: n1 (a), n3 (b), n4 (c).
    # n0 -> n1: the only pool note sharing label a: rank 1.
    # n2 -> n4: n3 shares b and scores 1; the target ties at 0 with n1: Recall@1 0, Recall@2 1/2.
    # n5 -> n3: likewise (n4 shares c).
    assert [n["note_id"] for n in es.pool] == ["n1", "n3", "n4"]
    assert result["per_query"]["recall@1"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert result["per_query"]["recall@2"].tolist() == pytest.approx([1.0, 0.5, 0.5])


def test_label_oracle_gives_an_unlabelled_note_the_zero_vector() -> None:
    emb = LabelEmbedder({"a": 1, "b": 2}, "label").embed([{"note_id": "a"}, {"note_id": "zzz"}])
    assert emb[0].sum() == 1.0 and not emb[1].any()


def test_colour_histogram_counts_the_glyph_not_the_background() -> None:
    im = Image.new("RGB", (40, 40), (255, 255, 255))
    im.paste((250, 10, 10), (0, 0, 10, 40))  # a red quarter on white
    h = colour_histogram(im, levels=4)
    red = (3 * 4 + 0) * 4 + 0  # bins (3, 0, 0)
    assert h.shape == (64,) and h[red] == pytest.approx(1.0) and np.count_nonzero(h) == 1
    # a blank white image is counted whole (the white bin), not left empty
    white = colour_histogram(Image.new("RGB", (8, 8), (255, 255, 255)), levels=4)
    assert white[63] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="levels"):
        colour_histogram(im, levels=1)


def test_colour_histogram_embedder_reads_paths_and_decoded_images(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (10, 10, 250)).save(tmp_path / "blue.png")
    notes = [{"note_id": "a", "image": "blue.png"}, {"note_id": "b", "image": "gone.png"}]
    status: list[str] = []
    embedder = ColourHistogramEmbedder(levels=2)
    from_paths = embedder.embed(notes, image_root=tmp_path, image_status=status)
    assert status == ["ok", "missing"]
    blue = (0 * 2 + 0) * 2 + 1
    assert from_paths[0, blue] == pytest.approx(1.0)
    decoded = embedder.embed(notes, images=[Image.open(tmp_path / "blue.png"), None])
    assert np.allclose(decoded[0], from_paths[0])
