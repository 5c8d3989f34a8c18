"""Does late fusion restore the image's share of attention? The paper's analysis, here.

NoteLLM-2 traces visual neglect to attention: in a basic MLRM the pooled token (the
last prompt token, whose hidden state becomes the note's embedding) attends little to
the visual tokens, and the paper finds that late fusion gives the image back its share
in the shallow layers. This script measures it on finished `benchmarks/quality.py`
replicates. For each variant's trained model and each of the replicate's test queries
(at most `--max-notes`, the same notes for every variant) it splits the pooled token's
attention in every layer, averaged over heads, into the prompt's first token (the
attention sink), the visual tokens, the `<IMG_EMB>` token of the mICL prompt and the
rest of the text (`train.attention_share`).

The table gives the visual tokens' share averaged over the shallow, middle and deep
thirds of the layers, with 95% bootstrap intervals over notes (pooled over replicates
as in `benchmarks/quality_replicates.py`), each variant minus `--reference` paired on
the same notes, and the share the visual tokens would get if attention were spread
evenly over the real tokens. The plot shows the share layer by layer.

`basic@0` (in the default `--variants`) is the basic run's model before its first step:
the pretrained LLM with a freshly initialised connector, built from the run's config
and seed. It tells the neglect that training brings from the neglect the LLM starts with.

    python benchmarks/attention_share.py bench_out/quality-emoji-s0 --out bench_out/attention

Each replicate's shares are cached in REPLICATE/runs/VARIANT/attention_share.json
(`attention_share@0.json` for an untrained model).
Writes OUT/results.json, OUT/results.md and OUT/attention_share.png.
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
from core.contracts import Note
from core.errors import UserError
from core.images import note_image
from core.io import atomic_path, write_json_atomic
from retriever.report import excludes_zero, markdown_table, marked_difference, save_png
from train.attention_share import PARTS, attention_shares
from train.checkpoint import load_checkpoint, resolve_checkpoint
from train.loop import seed_everything
from train.model import NoteLLM2, build_model
from train.train_config import TrainConfig

CACHE = "attention_share.json"
UNTRAINED = "@0"  # `basic@0` in --variants: the basic run's model before its first step
BANDS = ("shallow", "middle", "deep")
SLICES = ("all", "query_text=short", "query_text=long")
# The image reaches the pooled token through the visual tokens and, in the mICL prompt,
# through the summary token and <IMG_EMB>: IMAGE is the three together.
IMAGE = "image"
IMAGE_PARTS = ("visual", "img_summary", "img_emb")
COMPARED = ("visual", IMAGE)  # the parts paired against --reference


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("replicates", nargs="+", type=Path, help="benchmarks/quality.py --out directories")
    p.add_argument(
        "--variants",
        default="basic@0,basic,late-fusion,micl,notellm2",
        help="comma-separated; VARIANT@0 is that run's model before training (its config and seed)",
    )
    p.add_argument("--reference", default="basic", help="the variant every other is paired against")
    p.add_argument("--max-notes", type=int, default=256, help="test queries per replicate (a fixed sample)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def band_layers(layers: int) -> dict[str, np.ndarray]:
    """The layer indices of the shallow, middle and deep thirds (np.array_split's sizes);
    a model with fewer than three layers has fewer bands."""
    parts = np.array_split(np.arange(layers), 3)
    return {band: idx for band, idx in zip(BANDS, parts, strict=True) if len(idx)}


def sample_notes(queries: list[Note], max_notes: int) -> list[int]:
    """A fixed sample of query indices: every query when they fit, else an even spread by id."""
    order = sorted(range(len(queries)), key=lambda i: str(queries[i]["note_id"]))
    if len(order) <= max_notes:
        return order
    picks = np.linspace(0, len(order) - 1, max_notes).round().astype(int)
    return [order[i] for i in picks]


def untrained_model(run: Path) -> NoteLLM2:
    """The model `run` started from: its config.json's model built under its seed, as
    `i2i train` builds it before step 1 (pretrained LLM, freshly initialised connector)."""
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    seed_everything(cfg.seed)
    return build_model(cfg.model).eval()


def measure(model: NoteLLM2, notes: list[Note], image_root: Path, batch_size: int) -> dict[str, Any]:
    """The shares (notes, layers, PARTS) and token counts (notes, PARTS) of one model."""
    if model.vision is None:
        raise UserError("a text-only model has no visual tokens to attend to; drop it from --variants")
    shares, counts = [], []
    for start in range(0, len(notes), batch_size):
        chunk = notes[start : start + batch_size]
        pixels = torch.stack([model.vision.transform(note_image(n, image_root)[0]) for n in chunk])
        s, c = attention_shares(model, model.collate(chunk, pixels))
        shares.append(s)
        counts.append(c)
    return {
        "parts": list(PARTS),
        "note_ids": [str(n["note_id"]) for n in notes],
        "shares": np.concatenate(shares).round(6).tolist(),
        "counts": np.concatenate(counts).astype(int).tolist(),
    }


def _cached(cache: Path, ids: list[str]) -> dict[str, Any] | None:
    """The record in `cache` when it holds these notes' shares over today's PARTS, else None."""
    if not cache.exists():
        return None
    data = json.loads(cache.read_text())
    return data if data.get("note_ids") == ids and data.get("parts") == list(PARTS) else None


def replicate_record(rep: Path, variants: list[str], args: argparse.Namespace) -> dict[str, Any]:
    es = quality_eval_set(rep)
    picks = sample_notes(es.queries, args.max_notes)
    notes = [es.queries[i] for i in picks]
    record: dict[str, Any] = {
        "replicate": str(rep),
        "slices": {s: es.slices[s][picks].astype(bool).tolist() for s in SLICES[1:] if s in es.slices},
        "variants": {},
    }
    ids = [str(n["note_id"]) for n in notes]
    for variant in variants:
        name, untrained = variant.removesuffix(UNTRAINED), variant.endswith(UNTRAINED)
        run = rep / "runs" / name
        if not run.is_dir():
            raise UserError(f"{run} not found; train it with quality.py --out {rep} --variants {name}")
        cache = run / (CACHE.replace(".json", f"{UNTRAINED}.json") if untrained else CACHE)
        cached = _cached(cache, ids)
        if cached is not None:
            record["variants"][variant] = cached
            continue
        t0 = time.perf_counter()
        model = untrained_model(run) if untrained else load_checkpoint(resolve_checkpoint(run))
        result = measure(model, notes, quality_source(rep).images, args.batch_size)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(cache, result)
        record["variants"][variant] = result
        print(f"{rep.name} {variant}: {len(notes)} notes in {result['seconds']} s", flush=True)
    return record


def _part(values: np.ndarray, part: str) -> np.ndarray:
    """`values` (..., PARTS) reduced to one part: a column of PARTS, or IMAGE (the sum of
    the three image parts)."""
    picks = [PARTS.index(p) for p in IMAGE_PARTS] if part == IMAGE else [PARTS.index(part)]
    return values[..., picks].sum(-1)


def _band_values(result: dict[str, Any], part: str, mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per band, each note's mean share of `part` (see `_part`) over the band's layers."""
    shares = _part(np.asarray(result["shares"]), part)  # (notes, layers)
    if mask is not None:
        shares = shares[mask]
    return {band: shares[:, layers].mean(1) for band, layers in band_layers(shares.shape[1]).items()}


def _stacked(
    records: list[dict[str, Any]], variant: str, key: str, masks: list[np.ndarray | None]
) -> np.ndarray:
    """`key` ("shares" or "counts") of `variant` over every replicate's notes in its mask."""
    parts = [np.asarray(r["variants"][variant][key]) for r in records]
    return np.concatenate([a if m is None else a[m] for a, m in zip(parts, masks, strict=True)])


def pool(
    records: list[dict[str, Any]], variants: list[str], reference: str, boot: Bootstrap
) -> dict[str, Any]:
    """Per slice, variant and part: pooled band intervals, and minus `reference` (paired)."""
    out: dict[str, Any] = {}
    for slice_name in SLICES:
        masks = [None if slice_name == "all" else np.asarray(r["slices"][slice_name]) for r in records]
        rows: dict[str, Any] = {}
        for variant in variants:
            row: dict[str, Any] = {}
            for part in (*PARTS, IMAGE):
                values = [
                    _band_values(r["variants"][variant], part, m) for r, m in zip(records, masks, strict=True)
                ]
                row[part] = {k: iv.to_dict() for k, iv in pooled_intervals(values, boot).items()}
                if part in COMPARED and variant != reference:
                    ref = [
                        _band_values(r["variants"][reference], part, m)
                        for r, m in zip(records, masks, strict=True)
                    ]
                    paired = pooled_paired_intervals(values, ref, boot)
                    row[f"{part}_minus_reference"] = {k: iv.to_dict() for k, iv in paired.items()}
            counts = _stacked(records, variant, "counts", masks)
            for part in COMPARED:  # the share if every real token got the same attention
                row[f"uniform_{part}"] = float((_part(counts, part) / counts.sum(1)).mean())
            layers = _stacked(records, variant, "shares", masks)
            row["per_layer"] = {p: _part(layers, p).mean(0).round(5).tolist() for p in (*PARTS, IMAGE)}
            rows[variant] = row
        notes = sum(
            len(r["variants"][reference]["note_ids"]) if m is None else int(m.sum())
            for r, m in zip(records, masks, strict=True)
        )
        out[slice_name] = {"notes": notes, **rows}
    return out


def _pct(iv: dict[str, float], signed: bool = False) -> str:
    """A share as a percentage with its interval: `0.31% [0.30, 0.32]` (`+0.05 pp [...]`)."""
    f = "{:+.2f}" if signed else "{:.2f}"
    unit = " pp" if signed else "%"
    low, high = f.format(100 * iv["low"]), f.format(100 * iv["high"])
    return f"{f.format(100 * iv['estimate'])}{unit} [{low}, {high}]"


def markdown(results: dict[str, Any], variants: list[str], reference: str) -> list[str]:
    bands = list(results["bands"])
    lines = [
        "# Share of the pooled token's attention on the image",
        "",
        f"Replicates: {', '.join(results['replicates'])}. Layers: {results['layers']} "
        f"(thirds: {', '.join(f'{b} {v[0]}-{v[1]}' for b, v in results['bands'].items())}). "
        "Each cell: the mean over the band's layers and the notes, with its 95% bootstrap "
        f"interval over notes; differences from {reference} are paired on the same notes, in "
        "percentage points, * where the interval excludes 0. Even spread: the part's share "
        "if the pooled token attended equally to every real token.",
    ]
    titles = {"visual": "the visual tokens", IMAGE: "the image: visual tokens + summary token + <IMG_EMB>"}
    for slice_name in SLICES:
        part = results["pooled"][slice_name]
        lines += ["", f"## {slice_name} ({part['notes']} notes)"]
        for compared in COMPARED:
            head = [
                "variant",
                *(f"{compared}, {b}" for b in bands),
                *(f"− {reference}, {b}" for b in bands),
                "even spread",
            ]
            rows = []
            for v in variants:
                row = part[v]
                cells = [v, *(_pct(row[compared][b]) for b in bands)]
                for b in bands:
                    d = row.get(f"{compared}_minus_reference", {}).get(b)
                    cells.append("-" if d is None else marked_difference(_pct(d, True), excludes_zero(d)))
                rows.append([*cells, f"{100 * row['uniform_' + compared]:.1f}%"])
            lines += ["", f"Share on {titles[compared]}:", "", *markdown_table(head, rows)]
    lines += [
        "",
        "## Where the rest goes (all notes; shares per band, " + " / ".join(bands) + ")",
        "",
        *markdown_table(
            ["variant", *PARTS],
            [
                [
                    v,
                    *(
                        " / ".join(
                            f"{100 * results['pooled']['all'][v][p][b]['estimate']:.1f}" for b in bands
                        )
                        for p in PARTS
                    ),
                ]
                for v in variants
            ],
        ),
    ]
    return lines


def plot(results: dict[str, Any], variants: list[str], path: Path) -> None:
    """Per layer, the share on the visual tokens (left) and on the whole image (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    part = results["pooled"]["all"]
    titles = ("the visual tokens", "the image: visual + summary + <IMG_EMB>")
    for ax, compared, title in zip(axes, COMPARED, titles, strict=True):
        for v in variants:
            share = 100 * np.asarray(part[v]["per_layer"][compared])
            ax.plot(range(1, len(share) + 1), share, marker="o", markersize=3, label=v)
        ax.set_yscale("log")
        ax.set_xlabel("LLM layer")
        ax.set_title(f"attention on {title}", fontsize=10)
    axes[0].set_ylabel("% of the pooled token's attention (log)")
    axes[0].legend()
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.reference not in variants:
        raise UserError(f"--reference {args.reference!r} is not among --variants {variants}")
    records = [replicate_record(rep, variants, args) for rep in args.replicates]
    layers = len(records[0]["variants"][variants[0]]["shares"][0])
    results = {
        "replicates": [str(r) for r in args.replicates],
        "variants": variants,
        "reference": args.reference,
        "layers": layers,
        "bands": {b: [int(i) + 1 for i in idx[[0, -1]]] for b, idx in band_layers(layers).items()},
        "pooled": pool(records, variants, args.reference, Bootstrap(resamples=args.resamples)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", results)
    with atomic_path(args.out / "results.md") as tmp:
        tmp.write_text("\n".join(markdown(results, variants, args.reference)) + "\n")
    plot(results, variants, args.out / "attention_share.png")
    print("\n".join(markdown(results, variants, args.reference)))
    return results


if __name__ == "__main__":
    main()
