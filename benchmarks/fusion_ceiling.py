"""How much can an image signal add to a trained text model on this corpus? A ceiling
for late fusion.

NoteLLM-2's late fusion mixes the frozen image feature into the LLM's embedding. Before
asking a trained model to beat its text-only twin, ask how far the best possible mix of
the two could go. For each replicate (a finished `benchmarks/quality.py --seed S` run),
this script embeds the test split with the replicate's trained text-only model and
ranks the pool by

    score_w = (1 - w) * z(cos_text) + w * z(cos_image)        w = 0, 0.05, ..., 1

where z standardises a query's scores over the pool, and the image signal is either

- `frozen encoder`: the frozen EfficientNet-Lite0 feature that every variant's image
  path starts from (the image-only baseline), or
- `colour histogram`: the image's colours (4 levels per channel), a feature that keeps
  what this encoder drops (`benchmarks/reachability.py`).
- `stem colour`: the same frozen encoder's colour statistics at its stem, as
  `--vision efficientnet-lite0+stem` gives them in its CLS feature: each of the 32 stem
  channels' per-cell mean and standard deviation, averaged over the cells. Each of the
  64 values is standardised over the notes ranked.

w = 0 is the text model alone. Each replicate's weight is chosen on the *other*
replicates (leave one out), so the gain is never tuned on the queries it is measured
on; with a single replicate it is chosen on its own queries and the table says so. The
pooled gain over the text model alone has a paired stratified bootstrap interval, as in
`benchmarks/quality_replicates.py`, and the replicate's trained notellm2 (from its
results.json) is shown on the same queries.

    python benchmarks/fusion_ceiling.py bench_out/quality-emoji-s{0,1,2,3,4} \\
        --out bench_out/fusion-ceiling-emoji

Each replicate's curves are cached in REPLICATE/fusion_ceiling.json. Writes
OUT/results.json, OUT/results.md and OUT/curves.png.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from quality_data import quality_eval_set, quality_source  # sibling module (benchmarks/ on sys.path)

from core.bootstrap import Bootstrap, pooled_intervals, pooled_paired_intervals
from core.errors import UserError
from core.io import atomic_path, write_json_atomic
from retriever.baselines import VisionFeatureEmbedder, image_only_embedder
from retriever.evaluate import evaluate_scores
from retriever.oracles import ColourHistogramEmbedder
from retriever.report import (
    excludes_zero,
    markdown_table,
    marked_difference,
    save_png,
    wide_console,
    with_interval,
)

WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
SIGNALS = ("frozen encoder", "colour histogram", "stem colour")
METRICS = ("recall@10", "recall@100")
SLICES = ("relation=text", "relation=image", "relation=both")
CACHE = "fusion_ceiling.json"
TEXT_ALONE = "text model alone (w = 0)"


def standardised_rows(scores: np.ndarray) -> np.ndarray:
    """Each query's row of (Q, P) scores standardised over the pool (mean 0, std 1); a
    constant row becomes zeros."""
    scores = scores.astype(np.float64)
    std = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def standardised(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(Q, P) dot products, each query's row standardised over the pool (mean 0, std 1)."""
    return standardised_rows(queries.astype(np.float64) @ pool.astype(np.float64).T)


def mixed(text: np.ndarray, image: np.ndarray, w: float) -> np.ndarray:
    """`(1 - w) * text + w * image`: both standardised (Q, P) score matrices."""
    return (1.0 - w) * text + w * image


# --- one replicate -----------------------------------------------------------------------


def stem_colour_features(queries: Any, pool: Any, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 64 stem colour statistics of `efficientnet-lite0+stem` (the last 64 values of its
    CLS feature), each standardised over queries and pool, rows L2-normalised."""
    from train.vision import EfficientNetLite0Encoder, build_vision

    vision = build_vision("efficientnet-lite0+stem")
    encoder = VisionFeatureEmbedder(vision, "efficientnet-lite0+stem")
    stem_values = 2 * EfficientNetLite0Encoder.STEM_CHANNELS
    q, p = (encoder.features(notes, image_root=data)[:, -stem_values:] for notes in (queries, pool))
    both = np.concatenate([q, p])
    mean, std = both.mean(axis=0), both.std(axis=0)
    q, p = ((x - mean) / np.where(std > 0, std, 1.0) for x in (q, p))
    return tuple(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (q, p))  # type: ignore[return-value]


def image_features(signal: str, queries: Any, pool: Any, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """One of SIGNALS for the queries and the pool: (Q, D) and (P, D)."""
    if signal == "stem colour":
        return stem_colour_features(queries, pool, data)
    embedder = image_only_embedder(None) if signal == "frozen encoder" else ColourHistogramEmbedder()
    return embedder.embed(queries, image_root=data), embedder.embed(pool, image_root=data)


def cache_key(run: Path, query_ids: list[str]) -> dict[str, Any]:
    """What a replicate's cached curves depend on, as JSON reads it back (lists, not tuples)."""
    return {
        "run": str(run.resolve()),
        "queries": query_ids,
        "weights": list(WEIGHTS),
        "signals": list(SIGNALS),
    }


def replicate_curves(out: Path, run_name: str, console: Any) -> dict[str, Any]:
    """Per signal and weight, per-query metrics of the mix on replicate `out`'s test split
    (cached in `out/fusion_ceiling.json` for the same run and queries)."""
    from train.embed import load_embedder

    results_path = out / "results.json"
    run = out / "runs" / run_name
    if not results_path.exists() or not run.is_dir():
        raise UserError(
            f"{out}: needs results.json and runs/{run_name}/ from benchmarks/quality.py --out {out}"
        )
    es = quality_eval_set(out)
    query_ids = [q["note_id"] for q in es.queries]
    key = cache_key(run, query_ids)
    cache = out / CACHE
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved
    results = json.loads(results_path.read_text())
    data = quality_source(out).images
    t0 = time.perf_counter()
    text_model = load_embedder(run)
    text = standardised(
        text_model.embed(es.queries, image_root=data), text_model.embed(es.pool, image_root=data)
    )
    console.print(f"{out}: {run_name} embedded {len(es.queries)} queries + {len(es.pool)} pool notes")
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for signal in SIGNALS:
        image = standardised(*image_features(signal, es.queries, es.pool, data))
        curves[signal] = {}
        for w in WEIGHTS:
            res = evaluate_scores(
                mixed(text, image, w).__getitem__, es, f"{signal}@{w}", boot=Bootstrap(resamples=1)
            )
            curves[signal][str(w)] = {m: np.round(res["per_query"][m], 6).tolist() for m in METRICS}
    record = {
        "key": key,
        "replicate": str(out),
        "slices": {s: es.slices[s].astype(bool).tolist() for s in SLICES if s in es.slices},
        # The trained variants of this replicate, on the same queries (quality.py's record).
        "trained": results.get("per_query", {}).get("methods", {}),
        "trained_query_ids": results.get("per_query", {}).get("query_ids"),
        "curves": curves,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json_atomic(cache, record)
    return record


# --- pooling -----------------------------------------------------------------------------


def curve_means(record: dict[str, Any], signal: str, metric: str = "recall@10") -> np.ndarray:
    """The replicate's mean `metric` at every weight of WEIGHTS."""
    return np.array([np.mean(record["curves"][signal][str(w)][metric]) for w in WEIGHTS])


def chosen_weights(records: Sequence[dict[str, Any]], signal: str) -> list[float]:
    """Each replicate's weight: the best mean Recall@10 over the *other* replicates (the
    mean of their means; ties go to the smaller weight). One replicate: its own best."""
    means = np.stack([curve_means(r, signal) for r in records])
    chosen = []
    for g in range(len(records)):
        others = means if len(records) == 1 else np.delete(means, g, axis=0)
        chosen.append(WEIGHTS[int(np.argmax(others.mean(axis=0)))])
    return chosen


def _masked(per_query: dict[str, list[float]], mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """METRICS of one method's per-query values, on the queries in `mask` (all when None)."""
    return {
        m: np.asarray(per_query[m])[mask] if mask is not None else np.asarray(per_query[m]) for m in METRICS
    }


def _values(
    record: dict[str, Any], signal: str, w: float, mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    return _masked(record["curves"][signal][str(w)], mask)


def _trained(
    record: dict[str, Any], method: str, mask: np.ndarray | None = None
) -> dict[str, np.ndarray] | None:
    values = record["trained"].get(method)
    if values is None or record["trained_query_ids"] != record["key"]["queries"]:
        return None
    return _masked(values, mask)


def pool(records: Sequence[dict[str, Any]], boot: Bootstrap, compare: str = "notellm2") -> dict[str, Any]:
    """Pooled rows: the text model alone, each signal's mix at its leave-one-out weight,
    and the trained `compare` variant (when every replicate has it on the same queries);
    each with its pooled interval and its paired difference from the text model alone,
    overall and on the relation slices."""
    masks = [{s: np.asarray(r["slices"][s]) for s in r["slices"]} for r in records]
    # Per part (all queries, each slice): every replicate's mask, and the text model alone on it.
    parts = {part: [None if part == "all" else m.get(part) for m in masks] for part in ("all", *SLICES)}
    alone = {
        part: [_values(r, SIGNALS[0], 0.0, mask) for r, mask in zip(records, part_masks, strict=True)]
        for part, part_masks in parts.items()
    }
    rows: dict[str, Any] = {}

    def add(name: str, pick: Any, weights: list[float] | None = None) -> None:
        """`pick(g, mask)`: replicate g's per-query values (on `mask`), or None."""
        row: dict[str, Any] = {"weights": weights}
        for part, part_masks in parts.items():
            values = [pick(g, mask) for g, mask in enumerate(part_masks)]
            if any(v is None for v in values):
                return
            row[part] = {
                "value": {k: iv.to_dict() for k, iv in pooled_intervals(values, boot).items()},
                "minus_text": {
                    k: iv.to_dict() for k, iv in pooled_paired_intervals(values, alone[part], boot).items()
                },
            }
        rows[name] = row

    add(TEXT_ALONE, lambda g, mask: _values(records[g], SIGNALS[0], 0.0, mask))
    for signal in SIGNALS:
        weights = chosen_weights(records, signal)
        add(
            f"text model + {signal}",
            lambda g, mask, s=signal, ws=weights: _values(records[g], s, ws[g], mask),
            weights,
        )
    add(f"trained {compare}", lambda g, mask: _trained(records[g], compare, mask))
    curves = {
        s: np.stack([curve_means(r, s) for r in records]).mean(axis=0).round(6).tolist() for s in SIGNALS
    }
    return {
        "replicates": [r["replicate"] for r in records],
        "queries": sum(len(r["key"]["queries"]) for r in records),
        "weights_chosen": "leave one replicate out" if len(records) > 1 else "in sample (one replicate)",
        "rows": rows,
        "curves": {"weights": list(WEIGHTS), **curves},
    }


# --- report ------------------------------------------------------------------------------


def table(pooled: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["ranking", "w per replicate", "R@10", "− text alone", "R@100", "− text alone"]
    header += [f"{s.split('=')[1]} R@10 − text alone" for s in SLICES]
    body = []
    for name, row in pooled["rows"].items():
        a = row["all"]
        cells = [name, " / ".join(f"{w:g}" for w in row["weights"]) if row["weights"] else "-"]
        for m in METRICS:
            cells.append(with_interval(a["value"][m]["estimate"], a["value"][m]))
            cells.append(_diff(a["minus_text"][m]) if name != TEXT_ALONE else "-")
        for s in SLICES:
            d = row.get(s, {}).get("minus_text", {}).get("recall@10")
            cells.append(_diff(d) if d and name != TEXT_ALONE else "-")
        body.append(cells)
    return header, body


def _diff(iv: dict[str, float]) -> str:
    return marked_difference(with_interval(iv["estimate"], iv, signed=True), excludes_zero(iv))


def markdown(pooled: dict[str, Any]) -> str:
    header, body = table(pooled)
    lines = [
        "# Fusion ceiling: the trained text model mixed with an image signal",
        "",
        f"{len(pooled['replicates'])} replicate(s), {pooled['queries']} test queries; weights chosen "
        f"{pooled['weights_chosen']}; pooled 95% intervals (stratified bootstrap over queries), "
        "paired against the text model alone; **bold \\*** = the interval excludes 0.",
        "",
        *markdown_table(header, body),
    ]
    return "\n".join(lines) + "\n"


def plot(pooled: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    weights = pooled["curves"]["weights"]
    for signal in SIGNALS:
        ax.plot(weights, pooled["curves"][signal], marker="o", ms=3, label=f"text model + {signal}")
    for name, row in pooled["rows"].items():
        if name.startswith("trained"):
            ax.axhline(row["all"]["value"]["recall@10"]["estimate"], color="grey", ls="--", label=name)
    ax.set_xlabel("w (image signal's weight; 0 = text model alone)")
    ax.set_ylabel("Recall@10 (mean over replicates)")
    ax.set_title(f"Fusion ceiling, {pooled['queries']} test queries")
    ax.legend(fontsize=8)
    save_png(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "replicates", nargs="+", type=Path, help="finished benchmarks/quality.py --out directories"
    )
    p.add_argument("--out", type=Path, default=Path("bench_out/fusion-ceiling"))
    p.add_argument(
        "--text-run", default="text-only", help="the replicate's run whose embedding is the text side"
    )
    p.add_argument("--compare", default="notellm2", help="the trained variant shown on the same queries")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    console = wide_console()
    try:
        records = [replicate_curves(out, args.text_run, console) for out in args.replicates]
    except UserError as e:
        console.print(f"[red]{e}[/]")
        raise SystemExit(2) from None
    pooled = pool(records, Bootstrap(args.resamples, seed=args.seed), args.compare)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", pooled)
    with atomic_path(args.out / "results.md") as tmp:
        tmp.write_text(markdown(pooled))
    plot(pooled, args.out / "curves.png")
    console.print(markdown(pooled))
    return pooled


if __name__ == "__main__":
    main()
