"""Does NoteLLM-2 do what the paper says? The five variants side by side.

On one `i2i synth` platform, trains each variant with the same budget and seed
(`text-only`, `basic`, `micl`, `late-fusion`, `notellm2`; SmolLM2-135M shortened to its
first layers + EfficientNet-Lite0, offline), evaluates each with the `i2i eval` harness
(same split, same greedy queries, same pool) next to the BM25 and image-only baselines,
and again with the image blanked and with the text blanked, as the paper does, to show
how much each variant relies on each modality. Also reports the mean late-fusion gate
z (the share of each dimension kept from the LLM; 1 - z is the image's share).

What the paper leads us to expect: `notellm2` above `basic` overall and clearly above it
on pairs related by the image only; `basic` close to `text-only` (visual neglect).

    python benchmarks/quality.py                      # ~25 min on 2 CPU cores
    python benchmarks/quality.py --tiny --out /tmp/q  # smoke test with tiny random models

Writes OUT/results.json and OUT/results.md; re-running skips finished runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from core.contracts import read_notes, read_pairs, read_split_notes
from core.io import write_json_atomic
from i2i.demo import default_demo_model
from pipeline.mine import mine_pairs, write_pairs
from pipeline.synth import generate_platform
from retriever.baselines import BlankedEmbedder, bm25_scorer, embedding_scorer, image_only_embedder
from retriever.evaluate import build_eval_set, evaluate_embedder, evaluate_scores
from train.config import VARIANTS
from train.embed import load_embedder
from train.loop import TrainConfig, train

SLICES = ("relation=text", "relation=image", "relation=both", "query_text=short")


def _data(args: argparse.Namespace, out: Path, console: Console) -> tuple[Path, Path]:
    data, pairs = out / "data", out / "pairs"
    if not (data / "synth.json").exists():
        console.print(f"synth: {args.notes} notes, {args.events} events")
        generate_platform(
            data,
            notes=args.notes,
            users=args.users,
            days=14,
            events=args.events,
            image_size=96,
            seed=args.seed,
        )
    if not (pairs / "summary.json").exists():
        # 1h: the synthetic sessions (see DemoConfig.window); real logs use the 7d default
        write_pairs(mine_pairs(data / "logs", window="1h", split=(0.8, 0.1, 0.1), seed=args.seed), pairs)
    return data, pairs


def _model(args: argparse.Namespace, variant: str):  # -> ModelConfig
    if args.tiny:
        from train.testing import tiny_model_config

        return tiny_model_config(variant=variant)
    model = default_demo_model(args.llm_layers)
    model.variant = variant
    model.temperature_init = args.temperature_init
    model.validate()
    return model


def _train_variant(
    args: argparse.Namespace, variant: str, data: Path, pairs: Path, out: Path, console: Console
) -> tuple[Path, float]:
    run = out / "runs" / variant
    if (run / "summary.json").exists():
        return run, float(json.loads((run / "summary.json").read_text()).get("seconds", 0.0))
    cfg = TrainConfig(
        notes=str(data / "notes.parquet"),
        images=str(data),
        pairs=str(pairs),
        out=str(run),
        model=_model(args, variant),
        lr=args.lr,
        llm_lr=args.llm_lr,
        max_steps=args.steps,
        pairs_per_step=args.pairs_per_step,
        val_every=args.steps,  # validate once at the end: the budget goes to training
        val_at_start=False,
        num_workers=1,
        seed=args.seed,
        device="cpu",
    )
    t0 = time.perf_counter()
    train(cfg, console, resume=(run / "last").is_dir())
    return run, time.perf_counter() - t0


@contextlib.contextmanager
def _gate_recorder(model: Any) -> Iterator[list[tuple[float, int]]]:
    """Record (mean late-fusion gate z, batch size) of every forward while active."""
    gates: list[tuple[float, int]] = []
    if model.fusion is None:
        yield gates
        return
    hook = model.register_forward_hook(
        lambda _m, _i, out: gates.append((float(out.gate), out.multimodal.shape[0]))
    )
    try:
        yield gates
    finally:
        hook.remove()


def _row(res: dict[str, Any]) -> dict[str, float | None]:
    m, s = res["metrics"], res.get("slices", {})
    row: dict[str, float | None] = {"recall@10": m.get("recall@10"), "recall@100": m.get("recall@100")}
    for name in SLICES:
        row[f"{name} r@10"] = s.get(name, {}).get("recall@10")
        row[f"{name} r@100"] = s.get(name, {}).get("recall@100")
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/quality"))
    p.add_argument("--notes", type=int, default=2000)
    p.add_argument("--users", type=int, default=800)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=80, help="optimizer steps per variant (same for all)")
    p.add_argument("--pairs-per-step", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="new modules: connector, fusion, head")
    p.add_argument("--llm-lr", type=float, default=1e-4, help="SmolLM2's own weights")
    p.add_argument("--llm-layers", type=int, default=4, help="SmolLM2 layers kept (of 30)")
    p.add_argument("--temperature-init", type=float, default=3.0, help="t0: logits scaled by exp(t)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="tiny random models: a smoke test in seconds")
    args = p.parse_args(argv)
    console = Console()
    out: Path = args.out
    t_start = time.perf_counter()
    data, pairs = _data(args, out, console)

    notes_df = read_notes(data / "notes.parquet")
    es = build_eval_set(
        notes_df,
        read_pairs(pairs / "test.parquet"),
        pl.read_parquet(data / "truth.parquet"),
        "test",
        split_notes=read_split_notes(pairs, "test"),
    )
    counts = {k: int(v.sum()) for k, v in es.slices.items()}
    console.print(f"test split: {len(es.queries)} queries, pool {len(es.pool)}; slice sizes {counts}")

    results: dict[str, Any] = {"queries": len(es.queries), "pool": len(es.pool), "slice_sizes": counts}
    rows: dict[str, dict[str, Any]] = {}
    rows["bm25"] = _row(evaluate_scores(bm25_scorer(es), es, "bm25"))
    vision = image_only_embedder(None)  # EfficientNet-Lite0 (ImageNet), offline
    rows["image-only"] = _row(evaluate_scores(embedding_scorer(vision, es, data), es, "image-only"))

    for variant in args.variants.split(","):
        run, train_s = _train_variant(args, variant, data, pairs, out, console)
        embedder = load_embedder(run, device="cpu")
        # the gate is read off the same forwards that embed the test notes
        with _gate_recorder(embedder.model) as gates:
            full = evaluate_embedder(embedder, es, data, name=variant, ann=False)
        row = _row(full)
        for blank in ("image", "text"):
            if blank == "image" and variant == "text-only":
                row[f"blank {blank} r@10"] = row["recall@10"]  # it never sees the image
                continue
            blanked = evaluate_embedder(BlankedEmbedder(embedder, blank), es, data, ann=False)
            row[f"blank {blank} r@10"] = blanked["metrics"].get("recall@10")
        row["gate z"] = sum(g * n for g, n in gates) / sum(n for _, n in gates) if gates else None
        row["train s"] = round(train_s, 1)
        rows[variant] = row
        console.print(f"{variant}: recall@10 {row['recall@10']:.3f}")

    results["rows"] = rows
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(_markdown(rows, results))
    console.print(_table(rows, results))
    return results


COLUMNS = (
    ("recall@10", "R@10"),
    ("recall@100", "R@100"),
    ("relation=text r@10", "text R@10"),
    ("relation=image r@10", "image R@10"),
    ("relation=both r@10", "both R@10"),
    ("relation=image r@100", "image R@100"),
    ("query_text=short r@10", "short-q R@10"),
    ("blank image r@10", "no-image R@10"),
    ("blank text r@10", "no-text R@10"),
    ("gate z", "gate z"),
)


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _table(rows: dict[str, dict[str, Any]], results: dict[str, Any]) -> Table:
    t = Table(title=f"quality: {results['queries']} test queries, pool {results['pool']}")
    t.add_column("method")
    for _, title in COLUMNS:
        t.add_column(title, justify="right")
    for name, row in rows.items():
        t.add_row(name, *(_fmt(row.get(key)) for key, _ in COLUMNS))
    return t


def _markdown(rows: dict[str, dict[str, Any]], results: dict[str, Any]) -> str:
    head = "| method | " + " | ".join(title for _, title in COLUMNS) + " |"
    sep = "|---" * (len(COLUMNS) + 1) + "|"
    body = [
        f"| {name} | " + " | ".join(_fmt(row.get(k)) for k, _ in COLUMNS) + " |" for name, row in rows.items()
    ]
    return (
        f"# Quality benchmark\n\n{results['queries']} test queries, pool {results['pool']}; "
        f"slice sizes {results['slice_sizes']}; {results['seconds']} s in all.\n\n"
        + "\n".join([head, sep, *body])
        + "\n"
    )


if __name__ == "__main__":
    main()
