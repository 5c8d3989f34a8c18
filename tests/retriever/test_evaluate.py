"""The eval harness against hand-computed values, and the ANN check on a real HNSW graph."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.contracts import Note, read_notes
from core.errors import UserError
from indexer.store import HnswParams
from retriever.baselines import bm25_scorer
from retriever.evaluate import (
    EvalSet,
    build_eval_set,
    evaluate_ann,
    evaluate_embedder,
    evaluate_scores,
    tie_aware_ranks,
)
from retriever.report import comparison_table, write_report


class LookupEmbedder:
    """Fixed vectors per note id: lets a test dictate every score."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dim = len(next(iter(vectors.values())))
        self.model_id = "lookup"

    def embed(self, notes: Sequence[Note], image_root: object = None, batch_size: int = 32) -> np.ndarray:
        return np.stack([self.vectors[n["note_id"]] for n in notes]).astype(np.float32)


def _notes(ids: list[str], texts: dict[str, str] | None = None) -> pl.DataFrame:
    texts = texts or {}
    return pl.DataFrame(
        {
            "note_id": ids,
            "title": [texts.get(i, f"title {i}") for i in ids],
            "content": ["" for _ in ids],
            "tags": [[] for _ in ids],
            "image": [None for _ in ids],
        },
        schema={
            "note_id": pl.Utf8,
            "title": pl.Utf8,
            "content": pl.Utf8,
            "tags": pl.List(pl.Utf8),
            "image": pl.Utf8,
        },
    )


def _pairs(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"query_id": [r[0] for r in rows], "target_id": [r[1] for r in rows], "rank": [r[2] for r in rows]}
    ).with_columns(pl.lit(1.0).alias("score"))


def test_greedy_pairs_pool_and_dropped() -> None:
    notes = _notes(["a", "b", "c", "d", "e", "f"])
    pairs = _pairs(
        [("a", "b", 1), ("a", "c", 2), ("b", "a", 1), ("c", "d", 1), ("e", "zz", 1), ("f", "c", 1)]
    )
    es = build_eval_set(notes, pairs)
    # (a,b) wins for a; b and c... b is used; (c,d) next; (f,c): c used; (e,zz) dropped.
    assert [q["note_id"] for q in es.queries] == ["a", "c"]
    assert es.targets == ["b", "d"]
    assert [p["note_id"] for p in es.pool] == ["b", "d", "f"]  # split notes minus queries
    assert es.dropped_pairs == 1
    assert [es.pool[i]["note_id"] for i in es.target_index] == ["b", "d"]


def _eval_set(queries: list[str], pool: list[str], target_index: list[int], **slices: list[bool]) -> EvalSet:
    return EvalSet(
        split="test",
        queries=[{"note_id": q, "title": "", "content": ""} for q in queries],
        targets=[pool[i] for i in target_index],
        pool=[{"note_id": p, "title": "", "content": ""} for p in pool],
        target_index=np.array(target_index),
        slices={k.replace("_eq_", "="): np.array(v) for k, v in slices.items()},
        short_chars=0,
    )


def test_metrics_equal_hand_computed_values() -> None:
    """3 queries, pool of 12; scores put the targets at ranks 1, 3 and 11."""
    pool = [f"p{j:02d}" for j in range(12)]
    scores = np.full((3, 12), 0.05)  # (query, pool) dot products
    scores[0, 0] = 0.9  # q0 -> p00: rank 1
    scores[1, [1, 2, 3]] = [0.5, 0.6, 0.7]  # q1 -> p01: two score higher, rank 3
    scores[2, 4] = 0.1  # q2 -> p04: ten score higher, rank 11
    scores[2, [j for j in range(12) if j != 4][:10]] = 0.3
    # Queries are one-hot; a pool vector's first 3 coordinates are its scores, the 4th
    # makes it unit length.
    vecs = {
        p: np.append(scores[:, j], math.sqrt(1 - scores[:, j] @ scores[:, j])) for j, p in enumerate(pool)
    }
    vecs.update({f"q{i}": np.eye(4)[i] for i in range(3)})
    es = _eval_set(["q0", "q1", "q2"], pool, [0, 1, 4], query_text_eq_short=[True, True, False])
    res = evaluate_embedder(LookupEmbedder(vecs), es, ann=False)
    m = res["metrics"]
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert set(m) == {"recall@10", "mrr", "ndcg@10", "queries", "pool"}  # only Ks below the pool size
    short = res["slices"]["query_text=short"]
    assert (short["recall@10"], short["mrr"]) == (pytest.approx(1.0), pytest.approx((1 + 1 / 3) / 2))


def test_tie_aware_ranks() -> None:
    scores = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 1.0, 2.0]])
    # Row 0: target 2 tied with 3 others, none higher -> ranks 1..4;
    # row 1: target 1, two higher and one tie -> ranks 3..4.
    r = tie_aware_ranks(scores, np.array([2, 1]))
    assert (r.best.tolist(), r.ties.tolist()) == ([1, 3], [3, 1])


def test_bm25_ranks_word_overlap_first() -> None:
    texts = {
        "q1": "red bike repair",
        "t1": "fixing a red bike chain",
        "q2": "",
        "t2": "sourdough starter",
        "x1": "mountain lake",
        "x2": "vintage camera lens",
        "x3": "garden roses",
    }
    es = build_eval_set(
        _notes(list(texts), texts),
        _pairs([("q1", "t1", 1), ("q2", "t2", 1), ("x1", "x2", 1), ("x3", "x2", 2)]),
    )
    assert [q["note_id"] for q in es.queries] == ["q1", "q2", "x1"]
    res = evaluate_scores(bm25_scorer(es), es, "bm25")
    pool = len(es.pool)  # t1, t2, x2, x3
    # q1 finds t1 first; the empty q2 ties the whole pool: ranks 1..pool equally likely;
    # x1 shares no word with anything: the same.
    all_tied = np.mean([1 / r for r in range(1, pool + 1)])
    assert res["metrics"]["mrr"] == pytest.approx(np.mean([1.0, all_tied, all_tied]))


def test_missing_columns_and_empty_split_are_clear_errors() -> None:
    notes = _notes(["a", "b"])
    with pytest.raises(UserError, match="lack column"):
        build_eval_set(notes, pl.DataFrame({"query_id": ["a"], "target_id": ["b"]}))
    with pytest.raises(UserError, match="no pairs whose notes are in the notes table"):
        build_eval_set(notes, _pairs([("x", "y", 1)]))


def test_ann_against_exact_on_a_real_hnsw_graph() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    x = centres[rng.integers(0, 40, 4000)] + 0.15 * rng.standard_normal((4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    es = _eval_set([f"q{i}" for i in range(200)], [f"p{i}" for i in range(3800)], list(range(200)))
    hnsw = HnswParams(m=16, ef_construct=64, ef=64, full_scan_threshold_kb=1, indexing_threshold_kb=10)
    ann = evaluate_ann(x[3800:], x[:3800], es, k=100, hnsw=hnsw)
    assert ann["indexed_vectors"] == 3800  # a graph answered, not a full scan
    assert ann["recall@10_vs_exact"] >= 0.95
    assert set(ann["served"]) >= {"recall@10", "recall@100", "mrr"}


def test_relation_slices_and_report_files(synth_platform: Path, synth_pairs: Path, tmp_path: Path) -> None:
    from indexer.testing import HashingEmbedder

    notes = read_notes(synth_platform / "notes.parquet")
    truth = pl.read_parquet(synth_platform / "truth.parquet")
    es = build_eval_set(notes, pl.read_parquet(synth_pairs / "test.parquet"), truth)
    relation = sum(int(es.slices[f"relation={f}"].sum()) for f in ("text", "image", "both", "none"))
    assert relation == len(es.queries)
    assert int(es.slices["query_text=short"].sum()) + int(es.slices["query_text=long"].sum()) == len(
        es.queries
    )
    res = evaluate_embedder(HashingEmbedder(64), es)
    report = {
        "split": "test",
        "notes_file": "n",
        "pairs_file": "p",
        "queries": len(es.queries),
        "pool": len(es.pool),
        "dropped_pairs": 0,
        "short_chars": es.short_chars,
        "definitions": ["x"],
        "methods": {"hash": res, "bm25": evaluate_scores(bm25_scorer(es), es, "bm25")},
    }
    paths = write_report(report, tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| recall@10 |" in paths["md"].read_text()
    assert comparison_table(report).columns[1].header == "hash"


def test_reference_pool_is_every_split_note_minus_queries() -> None:
    notes = _notes(["a", "b", "c", "d", "g"])
    pairs = _pairs([("a", "b", 1), ("c", "d", 1)])
    # "g" is in the test split with no test pair; "ghost" is in the split but not the notes table.
    es = build_eval_set(notes, pairs, split_notes=["a", "b", "c", "d", "g", "ghost"])
    assert [p["note_id"] for p in es.pool] == ["b", "d", "g"]
    assert es.info["pool_source"] == "split" and es.info["split_notes_without_pairs"] == 1
    # Without the split's notes (pairs from elsewhere): only the notes of the pairs.
    legacy = build_eval_set(notes, pairs)
    assert [p["note_id"] for p in legacy.pool] == ["b", "d"]
    assert legacy.info["pool_source"] == "pairs"


def test_run_eval_pool_comes_from_notes_split(
    synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    import shutil

    from retriever.runner import run_eval

    pairs_dir = tmp_path / "pairs"
    shutil.copytree(synth_pairs, pairs_dir)
    test = pl.read_parquet(pairs_dir / "test.parquet")
    lonely = test["target_id"][-1]  # take every test pair of one note away: it stays a test note
    test.filter((pl.col("query_id") != lonely) & (pl.col("target_id") != lonely)).write_parquet(
        pairs_dir / "test.parquet"
    )
    report = run_eval([], synth_platform / "notes.parquet", pairs_dir, ann=False, baselines=True)
    splits = pl.read_parquet(pairs_dir / "notes_split.parquet")
    test_notes = splits.filter(pl.col("split") == "test").height
    assert report["pool_source"] == "split"
    assert report["pool"] == test_notes - report["queries"]
    assert report["split_notes_without_pairs"] >= 1
    (pairs_dir / "notes_split.parquet").unlink()  # pairs from elsewhere: the pairs' notes only
    legacy = run_eval([], synth_platform / "notes.parquet", pairs_dir, ann=False, baselines=True)
    assert legacy["pool_source"] == "pairs" and legacy["pool"] < report["pool"]


def test_pair_order_is_query_rank_target_whatever_the_file_order() -> None:
    notes = _notes(["a", "b", "c", "d", "e"])
    rows = [("a", "c", 1), ("a", "b", 1), ("d", "e", 1), ("d", "b", 1), ("c", "e", 2)]
    picks = set()
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]):
        es = build_eval_set(notes, _pairs([rows[i] for i in perm]))
        picks.add((tuple(q["note_id"] for q in es.queries), tuple(es.targets)))
    # a: rank tie between b and c -> b (target id); c -> e; d: b and e are used.
    assert picks == {(("a", "c"), ("b", "e"))}


def test_paired_differences_mark_what_the_queries_support(tmp_path: Path) -> None:
    """Method "good" puts every target first; "noisy" matches it on half the queries and
    misses the others; "twin" equals "good". good - noisy excludes 0, good - twin is 0."""
    from core.bootstrap import Bootstrap
    from retriever.report import markdown
    from retriever.runner import method_differences

    n, pool_n = 60, 200
    pool = [f"p{j:03d}" for j in range(pool_n)]
    es = _eval_set(
        [f"q{i}" for i in range(n)], pool, list(range(n)), query_text_eq_short=[i % 2 == 0 for i in range(n)]
    )
    good = np.zeros((n, pool_n))
    good[np.arange(n), np.arange(n)] = 1.0
    noisy = good.copy()
    noisy[1::2, -1] = 2.0  # odd queries: another note scores higher
    boot = Bootstrap(resamples=300)
    methods = {
        "good": evaluate_scores(lambda idx: good[idx], es, "good", boot=boot),
        "noisy": evaluate_scores(lambda idx: noisy[idx], es, "noisy", boot=boot),
        "twin": evaluate_scores(lambda idx: good[idx], es, "twin", boot=boot),
    }
    diffs = method_differences(methods, es, boot)
    assert diffs["reference"] == "good"
    r10 = diffs["methods"]["noisy"]["metrics"]["recall@10"]
    assert r10["estimate"] == pytest.approx(0.0)  # rank 2 is still in the top 10
    mrr = diffs["methods"]["noisy"]["metrics"]["mrr"]
    assert mrr["estimate"] == pytest.approx(0.25) and mrr["low"] > 0
    assert diffs["methods"]["noisy"]["slices"]["query_text=short"]["mrr"]["estimate"] == pytest.approx(0.0)
    twin = diffs["methods"]["twin"]["metrics"]["mrr"]
    assert (twin["low"], twin["high"]) == (0.0, 0.0)
    report = {
        "split": "test",
        "notes_file": "n",
        "pairs_file": "p",
        "queries": n,
        "pool": pool_n,
        "dropped_pairs": 0,
        "short_chars": 0,
        "definitions": [],
        "bootstrap": {"resamples": 300, "confidence": 0.95, "seed": 0},
        "methods": methods,
        "differences": diffs,
    }
    md = markdown(report)
    assert "**+0.250 [" in md and "] \\*** |" in md  # good - noisy on MRR: bold, starred
    assert "| good − method: recall@10 | ref | +0.000 [+0.000, +0.000] | +0.000 [+0.000, +0.000] |" in md
    noisy_mrr = methods["noisy"]["intervals"]["mrr"]
    assert noisy_mrr["low"] < 0.75 < noisy_mrr["high"]  # (1 + 1/2) / 2 = 0.75 inside its own interval
