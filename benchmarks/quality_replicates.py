"""Pool several replicates of the quality benchmark: is a difference real across runs?

One `benchmarks/quality.py` run is one draw of the experiment: one simulated log, one
split of the notes, one training run per variant. Its intervals hold only which test
queries the split happened to hold. With effects of a point or two of Recall@10 and
~500 test queries, one draw cannot separate the variants, and it cannot say how much
another training run would move them. Replicates, each a `quality.py --seed S` run with
its own log, split and training runs, answer both:

- **pooled**: every metric as the mean of the replicates' means, with a stratified
  bootstrap over queries (each resample draws queries within every replicate), and
  the reference method minus each other method with the paired version of it. Like a
  single run's intervals it is conditional on the trained models; with R replicates it
  is about 1/sqrt(R) as wide.
- **across replicates**: the Student-t interval of the replicates' Recall@10 (and of
  the reference's paired difference), from their spread: it holds the run-to-run and
  split-to-split variance too, at R - 1 degrees of freedom (wide for few replicates).
- every replicate's own value, and in how many replicates the reference came out ahead.
- **what each mechanism adds**: the same paired comparisons for the paper's ablation
  (mICL and late fusion each over basic, notellm2 over each alone), or for any
  `--pair A:B`.
- **by the query's text length**: every paired comparison again on the queries whose
  title + content is short (at most the split's median) and on the long ones. The paper
  finds NoteLLM-2's mechanisms help mainly on notes whose text is short.

Only methods present in every replicate are pooled (a replicate may hold more).

    for s in 0 1 2 3 4; do
        python benchmarks/quality.py --seed $s --out bench_out/quality-emoji-s$s \\
            --variants text-only,basic,notellm2 --no-blank
    done
    python benchmarks/quality_replicates.py bench_out/quality-emoji-s{0,1,2,3,4} \\
        --out bench_out/quality-emoji-replicates

Writes OUT/results.json, OUT/results.md and OUT/differences.png (a forest plot of the
differences).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from core.bootstrap import Bootstrap, pooled_intervals, pooled_paired_intervals, replicate_interval
from core.errors import UserError
from core.io import atomic_path, write_json_atomic
from retriever.report import (
    excludes_zero,
    markdown_table,
    marked_difference,
    rich_table,
    save_png,
    styled_difference,
    wide_console,
    with_interval,
)

METRICS = (("recall@10", "R@10"), ("recall@100", "R@100"), ("mrr", "MRR"))
SLICES = (("relation=text", "text R@10"), ("relation=image", "image R@10"), ("relation=both", "both R@10"))
# The paper's slice: short and long query text (title + content, split at the median of
# the split's notes, as `retriever.evaluate` defines it); Recall@10 and @100 on each.
TEXT_LENGTH = (("query_text=short", "short"), ("query_text=long", "long"))
LENGTH_METRICS = (("recall@10", "R@10"), ("recall@100", "R@100"))
# What each of NoteLLM-2's mechanisms adds (the paper's ablation): mICL and late fusion
# each over the basic model, and the full method over each of them alone.
ABLATIONS = (("micl", "basic"), ("late-fusion", "basic"), ("notellm2", "micl"), ("notellm2", "late-fusion"))


def load_replicate(path: Path) -> dict[str, Any]:
    """A finished quality run's results.json (the run directory or the file itself)."""
    file = path / "results.json" if path.is_dir() else path
    if not file.exists():
        raise UserError(f"{file} not found: run benchmarks/quality.py --out {path} first")
    results = json.loads(file.read_text())
    if "per_query" not in results:
        raise UserError(
            f"{file} has no per-query values (written by an older quality.py); re-run "
            f"benchmarks/quality.py with the same --out, --seed and --variants (its cached "
            "evaluations make that quick)"
        )
    results["path"] = str(path)
    per_query = results["per_query"]
    # Arrays once, here: pooling indexes them per method, slice and comparison.
    per_query["methods"] = {
        name: {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        for name, values in per_query["methods"].items()
    }
    per_query["slices"] = {name: np.asarray(mask, dtype=bool) for name, mask in per_query["slices"].items()}
    return results


def _values(replicate: dict[str, Any], method: str, slice_name: str | None = None) -> dict[str, np.ndarray]:
    """A method's per-query arrays in one replicate, over all its queries or one slice
    (none of them when the replicate has no such slice)."""
    values = replicate["per_query"]["methods"][method]
    if slice_name is None:
        return values
    mask = replicate["per_query"]["slices"].get(slice_name)
    return {k: v[mask] if mask is not None else v[:0] for k, v in values.items()}


def _seed(replicate: dict[str, Any]) -> str:
    return str(replicate.get("args", {}).get("seed", "?"))


def paired_difference(replicates: list[dict[str, Any]], a: str, b: str, boot: Bootstrap) -> dict[str, Any]:
    """Method `a` minus method `b`, paired on the same queries: pooled over the replicates,
    per slice, per replicate, across replicates (t), and in how many replicates `a` is ahead."""
    xs = [_values(r, a) for r in replicates]
    ys = [_values(r, b) for r in replicates]
    per_replicate = [
        float(x["recall@10"].mean() - y["recall@10"].mean()) for x, y in zip(xs, ys, strict=True)
    ]
    text_length = {}
    for s, _ in TEXT_LENGTH:
        if all(s in r["per_query"]["slices"] for r in replicates):
            ivs = pooled_paired_intervals(
                [_values(r, a, s) for r in replicates], [_values(r, b, s) for r in replicates], boot
            )
            text_length[s] = {k: ivs[k].to_dict() for k, _ in LENGTH_METRICS}
    return {
        "metrics": {k: iv.to_dict() for k, iv in pooled_paired_intervals(xs, ys, boot).items()},
        "slices": {
            s: pooled_paired_intervals(
                [_values(r, a, s) for r in replicates], [_values(r, b, s) for r in replicates], boot
            )["recall@10"].to_dict()
            for s, _ in SLICES
        },
        "per_replicate_recall@10": per_replicate,
        "across_replicates_recall@10": replicate_interval(per_replicate, boot.confidence).to_dict(),
        "ahead": sum(d > 0 for d in per_replicate),
        # Queries in each slice, over all replicates (absent when the runs predate it).
        "text_length": text_length,
        "text_length_queries": {
            s: int(sum(r["per_query"]["slices"][s].sum() for r in replicates)) for s in text_length
        },
    }


def pool(
    replicates: list[dict[str, Any]],
    reference: str,
    boot: Bootstrap,
    pairs: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The pooled results of `replicates` (each a quality run's results.json).

    `pairs` are extra (a, b) comparisons, a minus b; by default the paper's ablations
    (ABLATIONS) among the methods every replicate holds."""
    explicit_pairs = pairs is not None
    pairs = list(ABLATIONS) if pairs is None else pairs
    if len(replicates) < 2:
        raise UserError(f"pooling needs at least 2 replicates, got {len(replicates)}")
    seeds = [_seed(r) for r in replicates]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(
            f"replicates share --seed {', '.join(repeated)}: they are the same draw of the data and "
            "split, not independent replicates; make each with its own quality.py --seed"
        )
    shared = [r["source"]["pairs"] for r in replicates if "source" in r]
    repeated = sorted({p for p in shared if shared.count(p) > 1})
    if repeated:
        raise UserError(
            f"replicates share the pairs in {', '.join(repeated)} (quality.py --pairs): the same split "
            "and the same test queries, not independent replicates; let each run mine its own split "
            "(leave out --pairs)"
        )
    datasets = sorted({str(r.get("data")) for r in replicates})
    if len(datasets) > 1:
        raise UserError(
            f"replicates come from different datasets ({', '.join(datasets)}); pool one at a time"
        )
    names = [
        m
        for m in replicates[0]["per_query"]["methods"]
        if all(m in r["per_query"]["methods"] for r in replicates)
    ]
    if reference not in names:
        raise UserError(
            f"--reference {reference!r} is not in every replicate; "
            f"methods in all: {', '.join(names) or 'none'}"
        )
    methods: dict[str, Any] = {}
    for name in names:
        groups = [_values(r, name) for r in replicates]
        per_replicate = [float(g["recall@10"].mean()) for g in groups]
        methods[name] = {
            "metrics": {k: iv.to_dict() for k, iv in pooled_intervals(groups, boot).items()},
            "slices": {
                s: pooled_intervals([_values(r, name, s) for r in replicates], boot)["recall@10"].to_dict()
                for s, _ in SLICES
            },
            "per_replicate_recall@10": per_replicate,
            "across_replicates_recall@10": replicate_interval(per_replicate, boot.confidence).to_dict(),
        }
    differences = {
        name: paired_difference(replicates, reference, name, boot) for name in names if name != reference
    }
    missing = sorted({m for pair in pairs for m in pair} - set(names))
    if missing and explicit_pairs:
        raise UserError(
            f"--pair names {', '.join(missing)}, not in every replicate; methods in all: {', '.join(names)}"
        )
    ablations = {
        f"{a} − {b}": paired_difference(replicates, a, b, boot) for a, b in pairs if a in names and b in names
    }
    return {
        "data": datasets[0],
        "replicates": [
            {"path": r["path"], "seed": _seed(r), "queries": r["queries"], "pool": r["pool"]}
            for r in replicates
        ],
        "queries": sum(int(r["queries"]) for r in replicates),
        "left_out": sorted({m for r in replicates for m in r["per_query"]["methods"]} - set(names)),
        "reference": reference,
        "bootstrap": {"resamples": boot.resamples, "confidence": boot.confidence, "seed": boot.seed},
        "methods": methods,
        "differences": differences,
        "ablations": ablations,
    }


# --- tables ---------------------------------------------------------------------------


def _values_text(values: list[float], signed: bool = False) -> str:
    return " / ".join(("{:+.3f}" if signed else "{:.3f}").format(v) for v in values)


def method_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["method", *(f"{t} pooled" for _, t in METRICS), *(t for _, t in SLICES)]
    head += ["R@10 across replicates (t)", "R@10 per replicate"]
    rows = []
    for name, m in results["methods"].items():
        row = [name]
        row += [with_interval(m["metrics"][k]["estimate"], m["metrics"][k]) for k, _ in METRICS]
        row += [with_interval(m["slices"][s]["estimate"], m["slices"][s]) for s, _ in SLICES]
        t = m["across_replicates_recall@10"]
        row += [with_interval(t["estimate"], t), _values_text(m["per_replicate_recall@10"])]
        rows.append(row)
    return head, rows


def difference_rows(
    results: dict[str, Any], key: str = "differences"
) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Reference - method (`differences`) or the extra pairs (`ablations`): each cell's
    text and whether its interval excludes 0."""
    n = len(results["replicates"])
    first = f"{results['reference']} − method" if key == "differences" else "difference"
    head = [first, *(f"{t} pooled" for _, t in METRICS), *(t for _, t in SLICES)]
    head += ["R@10 across replicates (t)", "R@10 per replicate", "ahead in"]
    rows = []
    for name, d in results.get(key, {}).items():
        row: list[tuple[str, bool]] = [(name, False)]
        for iv in [*(d["metrics"][k] for k, _ in METRICS), *(d["slices"][s] for s, _ in SLICES)]:
            row.append((with_interval(iv["estimate"], iv, True), excludes_zero(iv)))
        t = d["across_replicates_recall@10"]
        row.append((with_interval(t["estimate"], t, True), excludes_zero(t)))
        row.append((_values_text(d["per_replicate_recall@10"], True), False))
        row.append((f"{d['ahead']}/{n}", False))
        rows.append(row)
    return head, rows


def text_length_rows(results: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Every paired comparison (differences, then ablations) on short and on long query
    text; no rows when the replicates carry no text-length slices."""
    compared = [(f"{results['reference']} − {name}", d) for name, d in results["differences"].items()]
    compared += list(results.get("ablations", {}).items())
    compared = [(label, d) for label, d in compared if len(d.get("text_length", {})) == len(TEXT_LENGTH)]
    if not compared:
        return [], []
    sizes = compared[0][1]["text_length_queries"]
    head = ["difference"] + [
        f"{metric} {label} ({sizes[s]} q)" for _, metric in LENGTH_METRICS for s, label in TEXT_LENGTH
    ]
    rows = []
    for label, d in compared:
        row: list[tuple[str, bool]] = [(label, False)]
        for k, _ in LENGTH_METRICS:
            for s, _ in TEXT_LENGTH:
                iv = d["text_length"][s][k]
                row.append((with_interval(iv["estimate"], iv, True), excludes_zero(iv)))
        rows.append(row)
    return head, rows


def _title(results: dict[str, Any]) -> str:
    reps = results["replicates"]
    return (
        f"quality on {results['data']}, {len(reps)} replicates (seeds "
        f"{', '.join(r['seed'] for r in reps)}; {' + '.join(str(r['queries']) for r in reps)} = "
        f"{results['queries']} test queries); {results['bootstrap']['confidence']:.0%} intervals"
    )


def markdown(results: dict[str, Any]) -> str:
    head, rows = method_rows(results)
    lines = [
        "# Quality benchmark, pooled over replicates",
        "",
        f"{_title(results)}. Each replicate is a `benchmarks/quality.py --seed S` run: its own simulated "
        "log, split and training runs. *Pooled*: the mean of the replicates' means, with a stratified "
        "bootstrap over queries (conditional on the trained models). *Across replicates (t)*: the "
        "Student-t interval from the replicates' spread, which also holds run-to-run variance.",
        "",
        *markdown_table(head, rows),
    ]
    if results["left_out"]:
        lines += ["", f"Not in every replicate, so not pooled: {', '.join(results['left_out'])}."]
    head, drows = difference_rows(results)
    lines += [
        "",
        f"## {results['reference']} minus each method",
        "",
        "Paired intervals (the same resampled queries for both methods); **bold \\*** = the interval "
        "excludes 0.",
        "",
        *markdown_table(head, [[marked_difference(t, real) for t, real in r] for r in drows]),
    ]
    if results.get("ablations"):
        head, arows = difference_rows(results, "ablations")
        lines += [
            "",
            "## What each mechanism adds",
            "",
            "The paper's ablation: mICL and late fusion each over the basic model, and the full method "
            "over each alone. Paired as above; *ahead in*: replicates where the first method is ahead.",
            "",
            *markdown_table(head, [[marked_difference(t, real) for t, real in r] for r in arows]),
        ]
    head, lrows = text_length_rows(results)
    if lrows:
        lines += [
            "",
            "## By the query's text length",
            "",
            "Every comparison above on the queries whose title + content is short (at most the "
            "median length of the split's notes) and on the long ones, paired as above. The paper "
            "finds NoteLLM-2's mechanisms help mainly on notes whose text is short.",
            "",
            *markdown_table(head, [[marked_difference(t, real) for t, real in r] for r in lrows]),
        ]
    return "\n".join(lines) + "\n"


def console_tables(results: dict[str, Any]) -> list[Table]:
    caption = "* and colour: the interval excludes 0 (green: the first better, red: worse)"
    tables = [rich_table(_title(results), *method_rows(results))]
    for key, title in (
        ("differences", f"{results['reference']} minus each method, paired"),
        ("ablations", "what each mechanism adds, paired"),
    ):
        head, rows = difference_rows(results, key)
        if rows:
            styled = [[styled_difference(t, real) for t, real in r] for r in rows]
            tables.append(rich_table(title, head, styled, caption=caption))
    head, rows = text_length_rows(results)
    if rows:
        styled = [[styled_difference(t, real) for t, real in r] for r in rows]
        tables.append(rich_table("by the query's text length, paired", head, styled, caption=caption))
    return tables


def parse_pair(text: str) -> tuple[str, str]:
    """'A:B' -> (A, B); method names hold hyphens, so the separator is a colon."""
    a, sep, b = text.partition(":")
    if not sep or not a or not b or a == b:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two different methods as A:B, e.g. micl:basic")
    return a, b


def plot_differences(results: dict[str, Any], path: Path) -> None:
    """A forest plot of Recall@10 differences: per row the pooled paired interval (thick),
    the across-replicate t-interval (thin) and each replicate's difference (dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{results['reference']} − {name}", d) for name, d in results["differences"].items()]
    shown = {label for label, _ in rows}
    rows += [(label, d) for label, d in results.get("ablations", {}).items() if label not in shown]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for y, (_, d) in enumerate(reversed(rows)):
        pooled, t = d["metrics"]["recall@10"], d["across_replicates_recall@10"]
        colour = "tab:green" if pooled["low"] > 0 else "tab:red" if pooled["high"] < 0 else "tab:grey"
        ax.plot([t["low"], t["high"]], [y, y], color=colour, linewidth=1, alpha=0.6)
        ax.plot([pooled["low"], pooled["high"]], [y, y], color=colour, linewidth=5, solid_capstyle="butt")
        ax.plot(pooled["estimate"], y, "|", color="black", markersize=12)
        ax.plot(d["per_replicate_recall@10"], [y] * len(d["per_replicate_recall@10"]), ".", color="black")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)])
    ax.set_xlabel("Recall@10 difference")
    ax.set_title(
        f"{results['data']}, {len(results['replicates'])} replicates, {results['queries']} queries\n"
        "pooled paired 95% interval (thick), across replicates (thin),\neach replicate (dots)",
        fontsize=9,
    )
    ax.grid(True, axis="x", alpha=0.3)
    save_png(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "replicates", nargs="+", type=Path, help="quality.py --out directories (or their results.json)"
    )
    p.add_argument("--out", type=Path, default=None, help="default: bench_out/quality-DATA-replicates")
    p.add_argument("--reference", default="notellm2", help="the method every other is compared with")
    p.add_argument(
        "--pair",
        action="append",
        type=parse_pair,
        default=None,
        metavar="A:B",
        help="also compare method A minus method B (repeatable); default: the paper's ablations "
        "(micl:basic, late-fusion:basic, notellm2:micl, notellm2:late-fusion) among the pooled methods",
    )
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the queries")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    console = wide_console()
    t0 = time.perf_counter()
    try:
        replicates = [load_replicate(path) for path in args.replicates]
        boot = Bootstrap(resamples=args.resamples, seed=args.seed)
        results = pool(replicates, args.reference, boot, args.pair)
    except UserError as e:
        console.print(f"[red]{e}[/]")
        raise SystemExit(2) from None
    out: Path = args.out or Path(f"bench_out/quality-{results['data']}-replicates")
    out.mkdir(parents=True, exist_ok=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out / "results.json", results)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown(results))
    plot_differences(results, out / "differences.png")
    for table in console_tables(results):
        console.print(table)
    console.print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'differences.png'}")
    return results


if __name__ == "__main__":
    main()
