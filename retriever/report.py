"""Evaluation reports: `report.json`, `report.md`, `recall_at_k.png`, and a side-by-side table.

A report (built by `retriever.runner.run_eval`) is a dict with the protocol settings and
`methods`: name -> {"metrics": {...}, "slices": {...}, "ann": {...}?}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from core.io import atomic_path, write_json_atomic

ROW_ORDER = ("recall@10", "recall@100", "recall@1000", "recall@10000", "recall@100000", "mrr", "ndcg@10")


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def metric_rows(report: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(row label, value per method) for the overall metrics, slices and ANN check."""
    methods = list(report["methods"].values())
    keys = [k for k in ROW_ORDER if any(k in m["metrics"] for m in methods)]
    rows = [(k, [m["metrics"].get(k) for m in methods]) for k in keys]
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


def _slice_cell(method: dict[str, Any], name: str) -> str | None:
    s = method.get("slices", {}).get(name)
    return None if s is None else f"{s.get('recall@10', float('nan')):.4f} ({int(s['queries'])})"


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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and recall_at_k.png into `out` (atomically each)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "recall_at_k.png"}
    write_json_atomic(paths["json"], report)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown(report))
    plot_recall(report, paths["png"])
    return paths
