"""Can one embedding serve two relations? The pairs the words explain against the pairs the
image explains, on a corpus with ground truth.

On synth and emoji, co-views follow either the notes' words (a topic) or their pictures (a
motif), and `truth.parquet` says which, so the test pairs split into relation slices
(`pipeline.synth.pair_relation`). A served embedding is one vector per note: its ranking
is one mix of a text signal and an image signal, and a weight that serves one relation
can drown the other. This script measures that trade-off on a quality run's test split
(same queries, pool and slices as `benchmarks/quality.py`), for text signals of known
strength:

- `BM25` and `truth topic` (1 for a pool note of the query's topic, else 0: a perfect
  text signal), each mixed with the frozen image encoder (the image-only baseline):

      score_w = (1 - w) * z(text) + w * z(image)        w = 0, 0.05, ..., 1

  where z standardises a query's scores over the pool (as `benchmarks/fusion_ceiling.py`);
- `BM25 + noise s`: BM25's standardised scores plus independent Gaussian noise of
  standard deviation s, a text signal weakened by a known amount, mixed the same way;
- `--run NAME=PATH` (repeatable): a trained notellm2's own two shares, ranked by the
  embedding it serves, `normalize(llm share + g * image share)` at every g of the
  calibration's grid (`train.fusion_calibration.GAINS`), g = 0 being the LLM share alone.

For each text signal the table gives its strength alone (Recall@10 of the text pairs at
w = 0) and, at the weight best for Recall@10 over all queries (chosen on these test
queries: a ceiling, not a recipe), Recall@10 overall and on the text and image pairs,
with 95% bootstrap intervals over queries, against chance (K / pool). The plot shows
each signal's frontier (text pairs against image pairs over the weights) and, per
signal, its strength alone against what its text pairs keep at the best overall weight.

    python benchmarks/relation_tradeoff.py bench_out/quality-synth \\
        --run notellm2=bench_out/quality-synth/runs/notellm2 --out bench_out/relation-tradeoff-synth

Writes OUT/results.json, OUT/results.md and OUT/tradeoff.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from fusion_ceiling import (
    WEIGHTS,
    mixed,
    standardised,
    standardised_rows,
)  # sibling modules (benchmarks/ on sys.path)
from quality_data import quality_eval_set, quality_source

from core.bootstrap import Bootstrap, intervals
from core.errors import UserError
from core.io import atomic_path, write_json_atomic
from retriever.baselines import bm25_scorer, image_only_embedder
from retriever.evaluate import EvalSet, evaluate_scores
from retriever.report import markdown_table, save_png, wide_console, with_interval

K = 10
NOISE = (0.5, 1.0, 2.0, 4.0)  # BM25 + noise: standard deviations, in units of BM25's per-query spread
SLICES = ("relation=text", "relation=image")
METRIC = f"recall@{K}"


def topic_scores(es: EvalSet, truth: pl.DataFrame) -> np.ndarray:
    """1 where a pool note has the query's topic, else 0: the perfect text signal."""
    topic = dict(zip(truth["note_id"].cast(pl.Utf8).to_list(), truth["topic"].to_list(), strict=True))
    q = np.array([topic.get(n["note_id"], -1) for n in es.queries])
    p = np.array([topic.get(n["note_id"], -2) for n in es.pool])
    return (q[:, None] == p[None, :]).astype(np.float64)


def per_query_recall(scores: np.ndarray, es: EvalSet, name: str) -> np.ndarray:
    """(Q,) tie-aware Recall@K of a (Q, P) score matrix under the protocol."""
    result = evaluate_scores(scores.__getitem__, es, name, ks=(K,), boot=Bootstrap(resamples=1))
    return np.asarray(result["per_query"][METRIC])


def mixed_curve(text: np.ndarray, image: np.ndarray, es: EvalSet, name: str) -> dict[float, np.ndarray]:
    """Per-query Recall@K of `(1 - w) * text + w * image` at every w of WEIGHTS (both standardised)."""
    return {w: per_query_recall(mixed(text, image, w), es, f"{name}@{w}") for w in WEIGHTS}


def run_curve(run: Path, es: EvalSet, images: Path) -> dict[float, np.ndarray]:
    """Per-query Recall@K of a trained run's served sum `normalize(llm + g * image)` at every
    g of the calibration's grid (and the run's own g)."""
    from train.data import NoteImageLoader
    from train.distributed import init_distributed
    from train.embed import load_embedder
    from train.fusion_calibration import GAINS, fusion_shares

    model = load_embedder(run, device="cpu").model
    if model.fusion is None:
        raise UserError(f"{run} has no late fusion (variant {model.config.variant!r}); pass a notellm2 run")
    loader = NoteImageLoader(images, model.vision.transform if model.vision is not None else None)
    env = init_distributed("cpu")  # one process: this script is not run under torchrun
    q_llm, q_img = fusion_shares(model, es.queries, loader, env, batch_size=32, num_workers=0)
    p_llm, p_img = fusion_shares(model, es.pool, loader, env, batch_size=32, num_workers=0)
    own = float(model.config.fusion_image_gain)
    curve = {}
    for g in sorted({*GAINS, own}):
        q = torch.nn.functional.normalize(q_llm + g * q_img, dim=-1)
        p = torch.nn.functional.normalize(p_llm + g * p_img, dim=-1)
        curve[g] = per_query_recall((q @ p.T).double().numpy(), es, f"{run}@g={g:g}")
    return curve


def summarise(
    curve: dict[float, np.ndarray], es: EvalSet, boot: Bootstrap, weight_name: str
) -> dict[str, Any]:
    """The curve's means per weight, its strength alone (the first weight: 0), and the best
    weight overall with its intervals."""
    masks = {s: es.slices[s].astype(bool) for s in SLICES if s in es.slices}
    means = {
        w: {"all": float(v.mean()), **{s: float(v[m].mean()) for s, m in masks.items()}}
        for w, v in curve.items()
    }
    weights = sorted(curve)
    best = max(weights, key=lambda w: (means[w]["all"], -w))  # ties: the smaller weight
    values = curve[best]
    parts = {"all": values, **{s: values[m] for s, m in masks.items()}}
    at_best = {k: intervals({METRIC: v}, boot)[METRIC].to_dict() for k, v in parts.items()}
    return {
        "weight": weight_name,
        "alone": means[weights[0]],
        "best": best,
        "at_best": at_best,
        "curve": {f"{w:g}": m for w, m in means.items()},
    }


def measure(out: Path, runs: dict[str, Path], boot: Bootstrap, seed: int, console: Any) -> dict[str, Any]:
    es = quality_eval_set(out)
    source = quality_source(out)
    if source.truth is None or not all(s in es.slices for s in SLICES):
        raise UserError(f"{out}: needs a corpus with truth.parquet (synth or emoji) for the relation slices")
    t0 = time.perf_counter()
    everything = list(range(len(es.queries)))
    bm25 = standardised_rows(bm25_scorer(es)(everything))
    encoder = image_only_embedder(None)
    image = standardised(
        encoder.embed(es.queries, image_root=source.images), encoder.embed(es.pool, image_root=source.images)
    )
    topic = standardised_rows(topic_scores(es, pl.read_parquet(source.truth)))
    rng = np.random.default_rng(seed)
    texts = {"truth topic": topic, "BM25": bm25}
    for sd in NOISE:
        texts[f"BM25 + noise {sd:g}"] = standardised_rows(bm25 + sd * rng.standard_normal(bm25.shape))
    signals: dict[str, Any] = {}
    for name, text in texts.items():
        signals[name] = summarise(mixed_curve(text, image, es, name), es, boot, "w")
        console.print(f"{name}: {_line(signals[name])}")
    for name, run in runs.items():
        signals[name] = summarise(run_curve(run, es, source.images), es, boot, "g")
        console.print(f"{name}: {_line(signals[name])}")
    return {
        "replicate": str(out),
        "queries": len(es.queries),
        "pool": len(es.pool),
        "slice_sizes": {s: int(es.slices[s].sum()) for s in SLICES},
        "chance": K / len(es.pool),
        "runs": {k: str(v) for k, v in runs.items()},
        "signals": signals,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _line(s: dict[str, Any]) -> str:
    at = s["at_best"]
    return (
        f"alone {s['alone']['relation=text']:.3f} on text pairs; best {s['weight']} = {s['best']:g}: "
        f"R@{K} {at['all']['estimate']:.3f}, text {at['relation=text']['estimate']:.3f}, "
        f"image {at['relation=image']['estimate']:.3f}"
    )


def markdown(record: dict[str, Any]) -> str:
    chance = record["chance"]
    header = [
        "text signal",
        "text pairs, signal alone",
        "best weight overall",
        f"R@{K} there",
        f"text pairs R@{K} there",
        f"image pairs R@{K} there",
        "text pairs above chance",
    ]
    body = []
    for name, s in record["signals"].items():
        at = s["at_best"]
        text = at["relation=text"]
        body.append(
            [
                name,
                f"{s['alone']['relation=text']:.3f}",
                f"{s['weight']} = {s['best']:g}",
                with_interval(at["all"]["estimate"], at["all"]),
                with_interval(text["estimate"], text),
                with_interval(at["relation=image"]["estimate"], at["relation=image"]),
                "yes" if text["low"] > chance else "no",
            ]
        )
    sizes = ", ".join(f"{k.split('=')[1]} {v}" for k, v in record["slice_sizes"].items())
    lines = [
        "# One embedding, two relations: the words' pairs against the image's",
        "",
        f"{record['replicate']}: {record['queries']} test queries ({sizes} pairs), pool {record['pool']}; "
        f"chance Recall@{K} = {chance:.3f}. Image side: the frozen encoder (a run: its own image share). "
        "The best weight is chosen on these queries (a ceiling); 95% bootstrap intervals over queries; "
        "*above chance*: the interval's lower end is above it.",
        "",
        *markdown_table(header, body),
    ]
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    for name, s in record["signals"].items():
        curve = s["curve"]
        xs = [m["relation=image"] for m in curve.values()]
        ys = [m["relation=text"] for m in curve.values()]
        (line,) = left.plot(xs, ys, marker="o", ms=2, lw=1, label=name)
        best = curve[f"{s['best']:g}"]
        left.plot(best["relation=image"], best["relation=text"], "*", ms=11, color=line.get_color())
        right.plot(
            s["alone"]["relation=text"],
            s["at_best"]["relation=text"]["estimate"],
            "o",
            color=line.get_color(),
        )
        right.annotate(
            name, (s["alone"]["relation=text"], s["at_best"]["relation=text"]["estimate"]), fontsize=7
        )
    for ax in (left, right):
        ax.axhline(record["chance"], color="grey", ls=":", lw=1, label="chance")
    left.set_xlabel(f"image pairs Recall@{K}")
    left.set_ylabel(f"text pairs Recall@{K}")
    left.set_title("each weight of the mix (star: best overall)")
    left.legend(fontsize=7)
    right.set_xlabel(f"text pairs Recall@{K}, text signal alone")
    right.set_ylabel(f"text pairs Recall@{K} at the best overall weight")
    right.set_title("what the text pairs keep")
    save_png(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("replicate", type=Path, help="a benchmarks/quality.py --out directory on synth or emoji")
    p.add_argument("--run", action="append", default=[], metavar="NAME=PATH", help="a trained notellm2 run")
    p.add_argument("--out", type=Path, default=Path("bench_out/relation-tradeoff"))
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {}
    for item in args.run:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--run {item!r}: expected NAME=PATH, e.g. notellm2=bench_out/q/runs/notellm2")
        if not Path(path).exists():  # before minutes of work on the others
            p.error(f"--run {item!r}: {path} not found; pass a notellm2 run or checkpoint directory")
        runs[name] = Path(path)
    console = wide_console()
    try:
        record = measure(args.replicate, runs, Bootstrap(args.resamples, seed=args.seed), args.seed, console)
    except UserError as e:
        p.error(str(e))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", record)
    with atomic_path(args.out / "results.md") as tmp:
        tmp.write_text(markdown(record))
    plot(record, args.out / "tradeoff.png")
    console.print(markdown(record))
    return record


if __name__ == "__main__":
    main()
