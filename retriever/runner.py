"""`run_eval`: evaluate checkpoints and baselines on one split, as `i2i eval` does."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from core.bootstrap import Bootstrap
from core.contracts import read_notes, read_pairs, read_split_notes
from core.errors import UserError
from retriever.evaluate import EvalSet, build_eval_set, evaluate_embedder, evaluate_scores, paired_differences

DEFINITIONS = [
    "pairs are taken greedily in (query_id, rank, target_id) order so that no note is used twice, "
    "as query or target",
    "pool = every note of the split that is not a query, including split notes with no pair "
    "(mine-pairs' notes_split.parquet; without it, only the notes of the split's pairs)",
    "ties: a target tied with g other pool notes from rank r counts for Recall@K with probability "
    "clamp((K - r + 1) / (g + 1), 0, 1), its expectation under random tie-breaking (MRR and NDCG@10 "
    "likewise average over the g + 1 equally likely ranks), for every method",
    "embeddings: exact dot product of L2-normalised vectors (chunked brute force)",
    "intervals: 95% percentile bootstrap over queries (2000 resamples by default); a difference "
    "'A - B' is paired: each resample draws one set of queries for both methods, and an interval "
    "that excludes 0 (marked *) is a difference these queries support",
    "ANN: the same query vectors through a temporary Qdrant Edge collection of the pool "
    "(production HNSW settings); recall@10 vs exact = overlap of ANN and exact top-10",
    "short/long: title + content characters <= / > short_chars (default: the split's median)",
    "relation=text/image/both/none: which synthetic factor the query and target share (truth.parquet)",
]


def read_split(pairs: str | Path, split: str) -> tuple[pl.DataFrame, Path]:
    """The pairs of `split` from a mine-pairs directory (or a Parquet file given directly)."""
    path = Path(pairs)
    if path.is_dir():
        path = path / f"{split}.parquet"
    return read_pairs(path), path


def split_note_ids(pairs_file: Path, split: str) -> list[str] | None:
    """Every note of `split` per the mine-pairs directory holding `pairs_file`, or None."""
    return read_split_notes(pairs_file.parent, split)


TRUTH_COLUMNS = ("note_id", "topic", "motif")


def read_truth(
    truth: str | Path | None, notes: Path, log: Callable[[str], None] = lambda _: None
) -> tuple[pl.DataFrame | None, Path | None]:
    """The synthetic platform's truth table for relation slices, and its path.

    An explicit `truth` must exist and have `note_id, topic, motif` (else `UserError`).
    Without one, `truth.parquet` beside the notes is used only when it has those
    columns; any other file of that name is ignored with a note through `log`.
    """
    explicit = truth is not None
    path = Path(truth) if truth is not None else notes.parent / "truth.parquet"
    if not path.exists():
        if explicit:
            raise UserError(f"truth file not found: {path} (a synthetic platform's truth.parquet)")
        return None, None
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        if explicit:
            raise UserError(f"cannot read truth file {path}: {str(exc).splitlines()[0]}") from None
        log(f"ignoring {path}: not a readable Parquet file (no relation slices; --truth names one)")
        return None, None
    missing = [c for c in TRUTH_COLUMNS if c not in df.columns]
    if missing:
        if explicit:
            raise UserError(
                f"truth file {path} lacks column(s) {', '.join(missing)}; expected "
                f"{', '.join(TRUTH_COLUMNS)} (the truth.parquet written by `i2i synth`)"
            )
        log(
            f"ignoring {path}: it lacks {', '.join(missing)}, so it is not an `i2i synth` truth table "
            "(no relation slices; --truth names one)"
        )
        return None, None
    return df, path


def run_defaults(run: str | Path) -> dict[str, Any]:
    """`notes` and `pairs` recorded in a training run's config.json, if any."""
    f = Path(run) / "config.json"
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return {k: cfg[k] for k in ("notes", "pairs") if isinstance(cfg.get(k), str)}


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    return out


def run_eval(
    checkpoints: Sequence[str | Path],
    notes: str | Path,
    pairs: str | Path,
    split: str = "test",
    truth: str | Path | None = None,
    image_root: str | Path | None = None,
    *,
    baselines: bool = True,
    ann: bool = True,
    short_chars: int | None = None,
    max_queries: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    precision: str = "auto",
    vectors: Sequence[str | Path] = (),
    bootstrap: Bootstrap | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Evaluate each checkpoint, each vectors directory (`i2i embed`, read instead of
    embedding again) and the BM25 / image-only baselines on one split.

    `precision` is the checkpoints' embedding precision (`train.embed.NoteEmbedder`).
    Every metric gets a bootstrap interval over queries; `differences` holds the first
    method (the first checkpoint or vectors, else BM25) minus every other, with paired
    intervals.
    """
    boot = bootstrap or Bootstrap()
    from train.embed import load_embedder

    notes = Path(notes)
    image_root = Path(image_root) if image_root is not None else notes.parent
    notes_df = read_notes(notes)
    pairs_df, pairs_file = read_split(pairs, split)
    truth_df, truth_path = read_truth(truth, notes, log)
    split_notes = split_note_ids(pairs_file, split)
    if split_notes is None:
        log(
            f"no notes_split.parquet beside {pairs_file}: the pool is only the notes of the split's pairs "
            "(re-run mine-pairs for the reference pool of every split note)"
        )
    es = build_eval_set(
        notes_df,
        pairs_df,
        truth_df,
        split,
        short_chars=short_chars,
        max_queries=max_queries,
        split_notes=split_notes,
    )
    log(
        f"split {split}: {len(es.queries)} queries, pool {len(es.pool)} "
        f"({es.info['split_notes_without_pairs']} split notes without a pair; "
        f"{es.dropped_pairs} pairs dropped)"
    )

    methods: dict[str, Any] = {}
    for ckpt in checkpoints:
        log(f"embedding with {ckpt}")
        embedder = load_embedder(ckpt, device=device, precision=precision)
        name = _unique(Path(ckpt).resolve().name, methods)
        res = evaluate_embedder(
            embedder, es, image_root, name=name, ann=ann, batch_size=batch_size, device=device, boot=boot
        )
        res["checkpoint"] = str(ckpt)
        res["precision"] = precision
        methods[name] = res
    for folder in vectors:
        from indexer.vectors import VectorFiles

        log(f"vectors from {folder}")
        stored = VectorFiles(folder)
        name = _unique(Path(folder).resolve().name, methods)
        res = evaluate_embedder(
            stored, es, image_root, name=name, ann=ann, batch_size=batch_size, device=device, boot=boot
        )
        res["vectors"] = str(folder)
        methods[name] = res
    if baselines:
        from retriever.baselines import bm25_scorer, embedding_scorer, image_only_embedder

        log("baseline: BM25")
        methods["bm25"] = evaluate_scores(bm25_scorer(es), es, "bm25", boot=boot)
        log("baseline: image only (frozen vision features)")
        vision = image_only_embedder(checkpoints[0] if checkpoints else None, device=device)
        methods["image-only"] = evaluate_scores(
            embedding_scorer(vision, es, image_root, batch_size), es, "image-only", boot=boot
        )
        methods["image-only"]["model_id"] = vision.model_id
    if not methods:
        raise UserError("nothing to evaluate: give a checkpoint (RUN) or keep the baselines on")
    return {
        "split": split,
        "notes_file": str(notes),
        "pairs_file": str(pairs_file),
        "truth_file": str(truth_path) if truth_path is not None else None,
        "queries": len(es.queries),
        "pool": len(es.pool),
        "dropped_pairs": es.dropped_pairs,
        "pool_source": es.info["pool_source"],
        "split_notes_without_pairs": es.info["split_notes_without_pairs"],
        "short_chars": es.short_chars,
        "definitions": DEFINITIONS,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bootstrap": {"resamples": boot.resamples, "confidence": boot.confidence, "seed": boot.seed},
        "methods": methods,
        "differences": method_differences(methods, es, boot),
    }


def method_differences(
    methods: dict[str, Any], es: EvalSet, boot: Bootstrap, reference: str | None = None
) -> dict[str, Any]:
    """`reference` (default: the first method) minus each other method, per metric and
    slice, with paired bootstrap intervals over the same resampled queries."""
    names = list(methods)
    if not names:
        return {"reference": None, "methods": {}}
    ref = reference or names[0]
    return {
        "reference": ref,
        "methods": {
            name: paired_differences(methods[ref], methods[name], es, boot) for name in names if name != ref
        },
    }
