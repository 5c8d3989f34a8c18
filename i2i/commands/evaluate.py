"""`i2i eval [RUN ...]`: the reference protocol on a pairs split, exact and through Qdrant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.errors import UserError
from i2i.commands._util import Force, InferencePrecision, MaxBadImages, images_up_front


def command(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="Training run (or checkpoint) directories; several with --compare."),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="A run or checkpoint directory (same as giving RUN).")
    ] = None,
    vectors: Annotated[
        list[Path] | None,
        typer.Option(help="Vectors directory from `i2i embed` (read, not embedded again); repeatable."),
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Evaluate every RUN given and print them side by side.")
    ] = False,
    notes: Annotated[
        Path | None, typer.Option(help="Notes Parquet (default: the one the run was trained on).")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option(help="mine-pairs directory or a split's Parquet (default: the run's).")
    ] = None,
    split: Annotated[str, typer.Option(help="Which split of --pairs: train, val or test.")] = "test",
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Synthetic truth.parquet for relation slices (default: beside the notes, if there)."
        ),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="Folder relative image paths start from (default: the notes file's).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where report.json/md and recall_at_k.png go (default: the run dir; ./eval for none/many)."
        ),
    ] = None,
    baselines: Annotated[bool, typer.Option(help="Also evaluate BM25 and image-only baselines.")] = True,
    ann: Annotated[bool, typer.Option(help="Also run the queries through a Qdrant collection.")] = True,
    short_chars: Annotated[
        int | None,
        typer.Option(min=0, help="Short-text threshold in characters (default: the split's median)."),
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="Evaluate at most this many queries.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Notes per model forward pass.")] = 32,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: auto).")] = None,
    precision: InferencePrecision = "auto",
    max_bad_images: MaxBadImages = 0.05,
    resamples: Annotated[
        int, typer.Option(min=1, help="Bootstrap resamples of the queries for the 95% intervals.")
    ] = 2000,
    force: Force = False,
) -> None:
    """Recall@K, MRR and NDCG@10 of RUN(s) and baselines; writes report.json, report.md, a plot.

    Every value comes with its 95% bootstrap interval over queries, and the first RUN
    (else BM25) minus each other method with a paired interval; * marks a difference
    whose interval excludes 0.
    """
    from core.bootstrap import Bootstrap
    from core.contracts import SPLITS
    from retriever.report import comparison_table, write_report
    from retriever.runner import run_defaults, run_eval
    from train.checkpoint import resolve_checkpoint

    if split not in SPLITS:
        raise UserError(f"--split {split!r} is not a split of the pairs; expected one of {', '.join(SPLITS)}")
    chosen = [*(runs or []), *([checkpoint] if checkpoint else [])]
    if len(chosen) + len(vectors or []) > 1 and not compare:
        raise UserError(
            f"{len(chosen)} runs given ({', '.join(map(str, chosen))}); pass --compare to evaluate several"
        )
    for run in chosen:  # a missing checkpoint fails before any image or note is read
        resolve_checkpoint(run)
    defaults = run_defaults(chosen[0]) if chosen else {}
    notes = notes or (Path(defaults["notes"]) if "notes" in defaults else None)
    pairs = pairs or (Path(defaults["pairs"]) if "pairs" in defaults else None)
    if notes is None or pairs is None:
        raise UserError(
            "say which data to evaluate: --notes notes.parquet --pairs PAIRS_DIR (the run records none)"
        )
    out = _output(out, chosen, [notes, pairs, *([truth] if truth else [])], force)
    if baselines or any(_variant(run) != "text-only" for run in chosen):  # image-only baseline too
        images_up_front(notes, image_root, max_bad_images)
    console = Console(stderr=True)
    report = run_eval(
        chosen,
        notes,
        pairs,
        split,
        truth,
        image_root,
        baselines=baselines,
        ann=ann,
        short_chars=short_chars,
        max_queries=max_queries,
        batch_size=batch_size,
        device=device,
        precision=precision,
        vectors=vectors or [],
        bootstrap=Bootstrap(resamples=resamples),
        log=lambda msg: console.print(f"[dim]{msg}[/]"),
    )
    paths = write_report(report, out)
    Console().print(comparison_table(report))
    console.print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")


REPORT_OUTPUTS = ("report.json", "report.md", "recall_at_k.png")


def _output(out: Path | None, runs: list[Path], inputs: list[Path], force: bool) -> Path:
    """Where the report goes, checked before any work: a run evaluated alone takes its
    report beside its checkpoints; any other directory must hold only report files, and
    no input (or `--force`: then only the report files change)."""
    from core.outputs import check_output_dir

    chosen = out or (runs[0] if len(runs) == 1 else Path("eval"))
    if any(chosen.resolve() == run.resolve() for run in runs):
        return chosen
    return check_output_dir(chosen, REPORT_OUTPUTS, label="eval", inputs=inputs, force=force)


def _variant(run: Path) -> str | None:
    """The model variant a run or checkpoint directory holds (None when unreadable)."""
    import json

    from train.checkpoint import resolve_checkpoint

    try:
        return json.loads((resolve_checkpoint(run) / "config.json").read_text()).get("variant")
    except (OSError, ValueError, AttributeError):
        return None
