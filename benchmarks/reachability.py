"""How much of the quality benchmark can each signal reach? Ceilings, not methods.

On the test split of a finished `benchmarks/quality.py` run (the same queries, pool
and relation slices), ranks the pool by:

- `topic oracle` / `motif oracle` / `topic+motif oracle`: one-hot of the generator's
  ground-truth labels (`truth.parquet`). On emoji the topic is the subgroup (what the
  words say), the motif the dominant-colour cluster (what no word names). Their Recall@10
  on each relation slice is the ceiling of that relation.
- `colour histogram`: the image's RGB colours (4 levels per channel), no learning.
- `image-only`: the frozen encoder's CLS feature (EfficientNet-Lite0, ImageNet).
- `cls probe@N`: a linear map (CLS -> 64) trained with the NoteLLM-2 pair contrastive
  loss on the training pairs for N steps of 16 pairs: all that late fusion's linear path
  (`v = W_v . cls`) could ever take from the frozen feature, at the benchmark's budget
  (60 steps) and far past it.
- `bm25`: the text baseline, for reference.

Every value has a 95% bootstrap interval over queries. If the colour histogram reaches
the colour relation and the encoder's feature, even with a trained probe, does not, the
image signal is lost at the frozen encoder: no connector or fusion behind it can
restore it.

    python benchmarks/quality.py --data emoji --variants text-only     # makes the split
    python benchmarks/reachability.py --out bench_out/quality-emoji
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from quality_data import QualitySource, quality_eval_set, quality_source  # sibling (on sys.path)
from rich.console import Console
from rich.table import Table

from core.bootstrap import Bootstrap
from core.contracts import notes_to_dicts, read_notes, read_pairs
from core.errors import UserError
from core.io import write_json_atomic
from retriever.baselines import bm25_scorer, embedding_scorer, image_only_embedder
from retriever.evaluate import EvalSet, evaluate_scores
from retriever.oracles import ColourHistogramEmbedder, LabelEmbedder
from retriever.report import markdown_table, wide_console, with_interval
from train.loss import pair_contrastive_loss

SLICES = ("relation=text", "relation=image", "relation=both", "relation=none")


class FixedEmbedder:
    """Precomputed vectors by note id (an `Embedder` over notes it already knows)."""

    def __init__(self, vectors: dict[str, np.ndarray], model_id: str) -> None:
        self.vectors, self.model_id = vectors, model_id
        self.dim = len(next(iter(vectors.values())))

    def embed(self, notes: list[Any], image_root: Any = None, batch_size: int = 32, **_: Any) -> np.ndarray:
        return np.stack([self.vectors[n["note_id"]] for n in notes]).astype(np.float32)


def train_probe(
    features: torch.Tensor, train_q: np.ndarray, train_d: np.ndarray, steps: list[int], seed: int
) -> dict[int, torch.Tensor]:
    """A linear map features -> 64 trained contrastively (16 pairs a step, AdamW lr 1e-3,
    learnable temperature from 3.0); its weights at each of `steps`."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    weight = torch.nn.Parameter(torch.randn(features.shape[1], 64, generator=gen) / features.shape[1] ** 0.5)
    temperature = torch.nn.Parameter(torch.tensor(3.0))
    opt = torch.optim.AdamW([weight, temperature], lr=1e-3, weight_decay=0.001)
    snapshots: dict[int, torch.Tensor] = {}
    for step in range(1, max(steps) + 1):
        batch = rng.choice(len(train_q), 16, replace=False)
        q = torch.nn.functional.normalize(features[train_q[batch]] @ weight, dim=1)
        d = torch.nn.functional.normalize(features[train_d[batch]] @ weight, dim=1)
        loss = pair_contrastive_loss(q, d, temperature.exp(), gather=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in steps:
            snapshots[step] = weight.detach().clone()
    return snapshots


def probe_embedders(
    source: QualitySource, es: EvalSet, steps: list[int], seed: int, console: Console
) -> dict[str, FixedEmbedder]:
    """`cls probe@N` for each N in `steps`, trained on the training split's pairs."""
    notes = read_notes(source.notes)
    train = read_pairs(source.pairs / "train.parquet")
    ids = sorted(set(train["query_id"].to_list()) | set(train["target_id"].to_list()))
    ids += sorted({n["note_id"] for n in es.queries + es.pool} - set(ids))
    by_id = {n["note_id"]: n for n in notes_to_dicts(notes.filter(pl.col("note_id").is_in(ids)))}
    console.print(f"probe: encoding {len(ids)} images with the frozen encoder")
    cls = image_only_embedder(None).embed([by_id[i] for i in ids], image_root=source.images, batch_size=64)
    row = {nid: i for i, nid in enumerate(ids)}
    features = torch.from_numpy(cls)
    train_q = np.array([row[i] for i in train["query_id"].to_list()])
    train_d = np.array([row[i] for i in train["target_id"].to_list()])
    out = {}
    for step, weight in train_probe(features, train_q, train_d, steps, seed).items():
        projected = torch.nn.functional.normalize(features @ weight, dim=1).numpy()
        out[f"cls probe@{step}"] = FixedEmbedder(dict(zip(ids, projected, strict=True)), f"cls-probe-{step}")
    return out


def mean_scorer(scorers: list[Any]) -> Any:
    """The mean of several `score_rows` (two label one-hots: 1 when a note shares both
    labels, 0.5 when it shares one)."""
    return lambda idx: sum(score(idx) for score in scorers) / len(scorers)


def reachability(out: Path, probe_steps: list[int], boot: Bootstrap, console: Console) -> dict[str, Any]:
    source = quality_source(out)
    if source.truth is None:
        raise UserError(
            f"{source.data} has no truth.parquet: the oracles need a generated platform's labels "
            "(quality.py --data emoji or synth)"
        )
    es = quality_eval_set(out)
    truth = pl.read_parquet(source.truth)
    topic = dict(zip(truth["note_id"].to_list(), truth["topic"].to_list(), strict=True))
    motif = dict(zip(truth["note_id"].to_list(), truth["motif"].to_list(), strict=True))
    embedders: dict[str, Any] = {
        "topic oracle": LabelEmbedder(topic, "topic"),
        "motif oracle": LabelEmbedder(motif, "motif"),
        "colour histogram": ColourHistogramEmbedder(),
        "image-only": image_only_embedder(None),
        **probe_embedders(source, es, probe_steps, boot.seed, console),
    }
    methods: dict[str, dict[str, Any]] = {}
    for name, embedder in embedders.items():
        methods[name] = evaluate_scores(embedding_scorer(embedder, es, source.images), es, name, boot=boot)
        console.print(f"{name}: recall@10 {methods[name]['metrics']['recall@10']:.3f}")
        if name == "motif oracle":
            methods["topic+motif oracle"] = evaluate_scores(
                mean_scorer([embedding_scorer(embedders[k], es) for k in ("topic oracle", "motif oracle")]),
                es,
                "topic+motif",
                boot=boot,
            )
    methods["bm25"] = evaluate_scores(bm25_scorer(es), es, "bm25", boot=boot)
    return {
        "data": str(out),
        "queries": len(es.queries),
        "pool": len(es.pool),
        "chance_recall@10": 10 / len(es.pool),
        "slice_sizes": {k: int(v.sum()) for k, v in es.slices.items()},
        "methods": {n: {k: v for k, v in m.items() if k != "per_query"} for n, m in methods.items()},
    }


def rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    sizes = results["slice_sizes"]
    header = ["method", "R@10"] + [f"{s.split('=')[1]} R@10 ({sizes.get(s, 0)})" for s in SLICES]
    body = []
    for name, m in results["methods"].items():
        cells = [name, with_interval(m["metrics"]["recall@10"], m["intervals"]["recall@10"])]
        for s in SLICES:
            value = m["slices"].get(s, {}).get("recall@10")
            cells.append(with_interval(value, m["slice_intervals"].get(s, {}).get("recall@10")))
        body.append(cells)
    return header, body


def markdown(results: dict[str, Any]) -> str:
    header, body = rows(results)
    lines = [
        "# Reachability: what each signal can reach on the test split",
        "",
        f"{results['queries']} test queries, pool {results['pool']} (chance Recall@10 "
        f"{results['chance_recall@10']:.3f}); 95% bootstrap intervals over queries; the "
        "slice sizes are in the column titles.",
        "",
        *markdown_table(header, body),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/quality-emoji"), help="a quality run's --out")
    p.add_argument("--probe-steps", default="60,1000", help="probe snapshots (steps of 16 pairs)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    console = wide_console()
    try:
        steps = sorted({int(s) for s in args.probe_steps.split(",")})
        if steps[0] < 1:
            raise ValueError
    except ValueError:
        p.error(f"--probe-steps: expected positive integers like 60,1000, got {args.probe_steps!r}")
    t0 = time.perf_counter()
    try:
        results = reachability(args.out, steps, Bootstrap(resamples=args.resamples, seed=args.seed), console)
    except UserError as e:
        console.print(f"[red]{e}[/]")
        raise SystemExit(2) from None
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(args.out / "reachability.json", results)
    (args.out / "reachability.md").write_text(markdown(results))
    header, body = rows(results)
    table = Table(title=f"reachability on {args.out}")
    for h in header:
        table.add_column(h)
    for r in body:
        table.add_row(*r)
    console.print(table)
    return results


if __name__ == "__main__":
    main()
