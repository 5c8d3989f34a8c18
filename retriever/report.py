"""Evaluation reports: `report.json`, `report.md`, `recall_at_k.png`, and a side-by-side table.

A report (built by `retriever.runner.run_eval`) is a dict with the protocol settings,
`methods`: name -> {"metrics": {...}, "intervals": {...}, "slices": {...},
"slice_intervals": {...}, "per_query": {...}, "ann": {...}?}, and `differences`: the
reference method minus each other one with paired intervals. Tables show each value
with its 95% interval, `0.347 [0.310, 0.390]`, and each difference whose interval
excludes 0 marked with `*` (bold in Markdown, coloured in the terminal). `per_query`
stays out of report.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.io import atomic_path, write_json_atomic

ROW_ORDER = ("recall@10", "recall@100", "recall@1000", "recall@10000", "recall@100000", "mrr", "ndcg@10")


def wide_console(width: int = 200) -> Console:
    """A console for wide result tables: the terminal's own width on a terminal, and
    `width` columns when the output is piped or logged (rich's default there, 80
    columns, wraps every interval onto several lines)."""
    return Console() if sys.stdout.isatty() else Console(width=width)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def with_interval(value: float | None, interval: dict[str, float] | None, signed: bool = False) -> str:
    """`0.347 [0.310, 0.390]` (`+0.052 [+0.010, +0.094]` when `signed`); `-` for none."""
    if value is None:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    if not interval:
        return f.format(value)
    return f"{f.format(value)} [{f.format(interval['low'])}, {f.format(interval['high'])}]"


def excludes_zero(interval: dict[str, float] | None) -> bool:
    """Whether a difference's interval lies entirely above or below 0."""
    if not interval:
        return False
    return interval["low"] > 0.0 or interval["high"] < 0.0


def metric_rows(report: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(row label, value per method) for the overall metrics, slices and ANN check; metric
    and slice values carry their bootstrap interval when the report has one."""
    methods = list(report["methods"].values())
    keys = [k for k in ROW_ORDER if any(k in m["metrics"] for m in methods)]
    rows: list[tuple[str, list[Any]]] = [
        (k, [_metric_cell(m["metrics"].get(k), m.get("intervals", {}).get(k)) for m in methods]) for k in keys
    ]
    slice_names = sorted({s for m in methods for s in m.get("slices", {})})
    for s in slice_names:
        rows.append(
            (f"{s} recall@10 (n)", [_slice_cell(m, s) for m in methods]),
        )
    if any("ann" in m for m in methods):
        rows.append(("ANN recall@10 vs exact", [m.get("ann", {}).get("recall@10_vs_exact") for m in methods]))
        rows.append(
            ("ANN served recall@10", [m.get("ann", {}).get("served", {}).get("recall@10") for m in methods])
        )
    return rows


def _metric_cell(value: float | None, interval: dict[str, float] | None) -> Any:
    return value if value is None or interval is None else with_interval(value, interval)


def _slice_cell(method: dict[str, Any], name: str) -> str | None:
    s = method.get("slices", {}).get(name)
    if s is None:
        return None
    interval = method.get("slice_intervals", {}).get(name, {}).get("recall@10")
    return f"{with_interval(s.get('recall@10', float('nan')), interval)} ({int(s['queries'])})"


def difference_rows(report: dict[str, Any]) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Rows of `reference - method` per metric (and per slice for recall@10): for each
    method column, (cell text, interval excludes 0); the reference's own column is `ref`."""
    diffs = report.get("differences") or {}
    ref = diffs.get("reference")
    per_method = diffs.get("methods") or {}
    if not ref or not per_method:
        return []
    names = list(report["methods"])
    keys = [k for k in ROW_ORDER if any(k in d["metrics"] for d in per_method.values())]
    rows = []

    def cells(get: Any) -> list[tuple[str, bool]]:
        out = []
        for name in names:
            if name == ref:
                out.append(("ref", False))
                continue
            iv = get(per_method.get(name, {}))
            out.append(
                ("-", False)
                if iv is None
                else (with_interval(iv["estimate"], iv, signed=True), excludes_zero(iv))
            )
        return out

    for k in keys:
        rows.append((f"{ref} − method: {k}", cells(lambda d, k=k: d.get("metrics", {}).get(k))))
    slice_names = sorted({s for d in per_method.values() for s in d.get("slices", {})})
    for s in slice_names:
        rows.append(
            (
                f"{ref} − method: {s} recall@10",
                cells(lambda d, s=s: d.get("slices", {}).get(s, {}).get("recall@10")),
            )
        )
    return rows


def comparison_table(report: dict[str, Any]) -> Table:
    """Methods side by side (rich)."""
    table = Table(
        title=f"i2i eval: split {report['split']}, {report['queries']} queries, pool {report['pool']}",
    )
    table.add_column("metric")
    for name in report["methods"]:
        table.add_column(name, justify="right")
    for label, values in metric_rows(report):
        table.add_row(label, *[_fmt(v) for v in values])
    diff_rows = difference_rows(report)
    if diff_rows:
        table.add_section()
        for label, cells in diff_rows:
            table.add_row(label, *[styled_difference(text, real) for text, real in cells])
    if "bootstrap" in report:
        table.caption = escape(
            f"v [low, high] = {report['bootstrap']['confidence']:.0%} bootstrap interval over queries; "
            "* = paired difference interval excludes 0 (green: reference better, red: worse)"
        )
    return table


def styled_difference(text: str, real: bool) -> str:
    """A difference cell for the terminal: `real` (its interval excludes 0) marks it `*`,
    green when the reference is better, red when worse."""
    if not real:
        return text
    return f"[green]{text} *[/]" if text.startswith("+") else f"[red]{text} *[/]"


def marked_difference(text: str, real: bool) -> str:
    """A difference cell for Markdown: bold with `*` when `real`."""
    return f"**{text} \\***" if real else text


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: header, separator, one line per row."""
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def rich_table(title: str, head: list[str], rows: list[list[str]], caption: str | None = None) -> Table:
    """A terminal table: the first column left-aligned, the rest right-aligned."""
    table = Table(title=escape(title), caption=caption)
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _pool_words(report: dict[str, Any]) -> str:
    if report.get("pool_source") == "pairs":
        return (
            "the notes of the split's pairs minus queries: no notes_split.parquet, so not the reference pool"
        )
    extra = report.get("split_notes_without_pairs")
    return "every split note minus queries" + (
        f", {extra} of them without a pair" if extra is not None else ""
    )


def markdown(report: dict[str, Any]) -> str:
    names = list(report["methods"])
    lines = [
        f"# i2i eval: split `{report['split']}`",
        "",
        f"- notes: `{report['notes_file']}`; pairs: `{report['pairs_file']}`",
        f"- {report['queries']} queries (greedy unique pairs), pool {report['pool']} notes "
        f"({_pool_words(report)}); {report['dropped_pairs']} pairs dropped (note not in the table)",
        f"- short text: title + content <= {report['short_chars']} characters",
        "",
        "| metric | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for label, values in metric_rows(report):
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")
    diff_rows = difference_rows(report)
    if diff_rows:
        ref = report["differences"]["reference"]
        lines += [
            "",
            f"## {ref} minus each method",
            "",
            "Paired 95% bootstrap intervals over the same resampled queries; **bold \\*** = the "
            "interval excludes 0, a difference these queries support.",
            "",
            "| difference | " + " | ".join(names) + " |",
            "| --- | " + " | ".join("---:" for _ in names) + " |",
        ]
        for label, cells in diff_rows:
            lines.append(f"| {label} | " + " | ".join(marked_difference(t, real) for t, real in cells) + " |")
    lines += ["", "## Protocol", ""]
    lines += [f"- {line}" for line in report.get("definitions", [])]
    anns = {n: m["ann"] for n, m in report["methods"].items() if "ann" in m}
    if anns:
        lines += ["", "## Through Qdrant (ANN) vs exact", ""]
        for n, a in anns.items():
            how = "full scan below the indexing threshold" if a["indexed_vectors"] == 0 else "graph search"
            lines.append(
                f"- {n}: recall@10 vs exact {a['recall@10_vs_exact']:.4f}; top-{a['k']} served; "
                f"{a['indexed_vectors']} of {a['pool']} pool vectors HNSW-indexed "
                f"({how}); "
                f"{a['queries_per_s']:.0f} queries/s"
            )
    return "\n".join(lines) + "\n"


def plot_recall(report: dict[str, Any], path: Path) -> None:
    """Recall@K against K (log scale), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in report["methods"].items():
        curve = m.get("recall_curve") or {
            k.split("@")[1]: v for k, v in m["metrics"].items() if k.startswith("recall@")
        }
        ks = sorted(curve, key=int)
        if ks:
            ax.plot([int(k) for k in ks], [curve[k] for k in ks], marker="o", markersize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"split {report['split']}: {report['queries']} queries, pool {report['pool']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def save_png(fig: Any, path: Path) -> None:
    """Lay out a matplotlib figure, write it to `path` as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def without_per_query(report: dict[str, Any]) -> dict[str, Any]:
    """The report minus each method's `per_query` arrays (kept in memory for comparisons)."""
    methods = {
        name: {k: v for k, v in m.items() if k != "per_query"}
        for name, m in report.get("methods", {}).items()
    }
    return {**report, "methods": methods}


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and recall_at_k.png into `out` (atomically each)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "recall_at_k.png"}
    write_json_atomic(paths["json"], without_per_query(report))
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown(report))
    plot_recall(report, paths["png"])
    return paths
