"""`i2i demo`: the whole pipeline, offline, in one command.

    synth (or emoji, or your platform) -> mine-pairs -> train -> index -> eval -> related -> gallery.html

Every step writes where the matching CLI command would, under one directory, so a user
can re-run any single command on it (the demo prints those commands at the end):

    DIR/data/      notes.parquet, images/, logs/, truth.parquet   (i2i synth, or i2i emoji;
                   with --data PLATFORM your directory is read where it is, never written)
    DIR/pairs/     train/val/test.parquet, notes_split.parquet,   (i2i mine-pairs)
                   summary.json
    DIR/run/       config.json, metrics.jsonl, best/, last/,      (i2i train)
                   report.json, report.md, recall_at_k.png        (i2i eval)
    DIR/qdrant/    the embedded Qdrant Edge collection            (i2i index)
    DIR/gallery.html, DIR/demo.json                               (this module)

A re-run skips the steps whose output is complete (the stages are idempotent and the
training run resumes), so an interrupted demo picks up where it stopped.

The default model is real and offline: SmolLM2-135M-Instruct at full depth, trained
with LoRA (low-rank adapters) so that a few minutes on a 2-core CPU move it, with the
ImageNet EfficientNet-Lite0 image encoder. Tests pass a tiny random model instead.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from core.contracts import SPLITS, notes_to_dicts, read_notes, read_pairs
from core.errors import UserError
from core.io import write_json_atomic
from core.metrics import protocol_pairs
from train.model_config import ModelConfig
from train.presets import FUSION_PRETRAIN_STEPS, SHORT_BUDGET_FUSION_PRETRAIN_AT, preset
from train.train_config import TrainConfig

COLLECTION = "notes"
# What the demo writes under its directory (each step refuses foreign files of its own).
DEMO_OUTPUTS = ("data/*", "pairs/*", "run/*", "qdrant/*", "demo.json", "gallery.html")
DATASETS = ("synth", "emoji")


def default_demo_model(llm_layers: int | None = None) -> ModelConfig:
    """The `demo` preset (`train.presets`), optionally with another number of LLM layers."""
    if llm_layers is None:
        return preset("demo")
    return preset("demo", llm_overrides={"num_hidden_layers": llm_layers})


@dataclass
class DemoConfig:
    """Sizes and budget of the demo. The defaults fit ~10 minutes on 2 CPU cores."""

    out: Path = Path("demo")
    # the platform: "synth" (made-up words, drawn motifs), "emoji" (the Unicode emoji,
    # real words and pictures; `notes` does not apply, `subgroups` keeps a subset), or the
    # path of a platform directory of your own (notes.parquet, images relative to it,
    # logs/), read in place
    data: str = "synth"
    subgroups: tuple[str, ...] | None = None
    notes: int = 1600
    users: int = 600
    days: int = 14
    events: int = 80_000
    image_size: int = 96
    seed: int = 0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    # The synthetic users browse in sessions of about an hour and switch interests
    # between sessions; with a few hundred users, a week-long window mixes sessions and
    # ~40% of mined pairs share neither topic nor motif (1h: ~23%). Real logs: use the
    # `mine-pairs` default of 7d.
    window: str = "1h"
    # the model and its training budget
    model: ModelConfig = field(default_factory=default_demo_model)
    steps: int = 80
    pairs_per_step: int = 16
    lr: float = 1e-3  # the new modules (connector, late fusion, head, temperature)
    # How SmolLM2 trains: LoRA adapters on every linear layer at 5e-4, or every weight
    # ("full", at the same rate: on the 6-layer cut, 80 steps, 5e-4 ranked as well as
    # 5e-5 on one draw and better on another; benchmarks/QUALITY.md), or not at all.
    llm_train: str = "lora"
    llm_lr: float = 5e-4
    # The late fusion on this budget (train.presets): the joint stage as the paper runs
    # it (the fusion at `lr` unless `fusion_lr` is set), then W_v aligned on the pairs
    # through the trained head, and the image share's weight chosen on val.
    fusion_lr: float | None = None
    fusion_pretrain_steps: int = FUSION_PRETRAIN_STEPS
    fusion_pretrain_at: str = SHORT_BUDGET_FUSION_PRETRAIN_AT
    fusion_calibrate: bool = True
    val_every: int = 40  # twice in the 80 steps (`i2i demo` sets steps // 2)
    num_workers: int = 1
    # what the end shows
    samples: int = 6
    k: int = 8
    # write into a directory that holds other files (only the demo's own files change)
    force: bool = False

    def describe_model(self) -> str:
        m = self.model
        layers = m.llm_overrides.get("num_hidden_layers")
        llm = m.llm if m.llm_config is None else f"{m.llm} (random init)"
        if layers:
            llm += f", first {layers} layers"
        return f"{m.variant}: {llm} ({self.llm_train}) + {m.vision} via {m.connector}"


def check_platform(path: Path) -> None:
    """A platform directory of the user's: notes.parquet (images relative to it) and logs/."""
    if not path.is_dir():
        raise UserError(
            f"--data {str(path)!r} is neither synth, emoji nor a directory; expected a platform "
            "directory holding notes.parquet and logs/"
        )
    missing = [name for name in ("notes.parquet", "logs") if not (path / name).exists()]
    if missing:
        raise UserError(
            f"--data {path}: no {' or '.join(missing)} there; a platform directory holds notes.parquet "
            "(image paths relative to it) and the view logs in logs/"
        )


@dataclass
class DemoPaths:
    """Where each step's output goes; `platform` is a user's own platform directory, read
    in place (None: the generated one under DIR/data)."""

    root: Path
    platform: Path | None = None

    @property
    def data(self) -> Path:
        return self.platform if self.platform is not None else self.root / "data"

    @property
    def notes(self) -> Path:
        return self.data / "notes.parquet"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def pairs(self) -> Path:
        return self.root / "pairs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def gallery(self) -> Path:
        return self.root / "gallery.html"


def _step(console: Console, n: int, title: str) -> float:
    console.rule(f"[bold]{n}/7 {title}")
    return time.perf_counter()


def _done(console: Console, t0: float, what: str) -> float:
    seconds = time.perf_counter() - t0
    console.print(f"[green]✓[/] {what} [dim]({seconds:.1f} s)[/]")
    return round(seconds, 2)


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, Any]:
    """Run every stage into `cfg.out` and return the demo summary (also `demo.json`)."""
    from core.outputs import check_output_dir
    from pipeline.mine import mine_pairs, write_pairs
    from train.model_config import LLM_MODES

    own = cfg.data not in DATASETS
    if own:
        check_platform(Path(cfg.data))
    if cfg.llm_train not in LLM_MODES:
        raise UserError(f"--llm-train {cfg.llm_train!r} is not known; expected one of {', '.join(LLM_MODES)}")
    if cfg.fusion_lr is not None and not (math.isfinite(cfg.fusion_lr) and cfg.fusion_lr > 0):
        raise UserError(f"--fusion-lr {cfg.fusion_lr:g} is not a learning rate; give a number > 0, e.g. 1e-3")
    console = console or Console()
    paths = DemoPaths(Path(cfg.out), platform=Path(cfg.data) if own else None)
    check_output_dir(paths.root, DEMO_OUTPUTS, label="demo", force=cfg.force)
    paths.root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    llm_rate = f"{cfg.llm_train} at {cfg.llm_lr:g}"
    if cfg.model.uses_late_fusion:
        llm_rate += f", late fusion at {cfg.fusion_lr if cfg.fusion_lr is not None else cfg.lr:g}"
        if cfg.fusion_pretrain_steps:
            when = "after the last step" if cfg.fusion_pretrain_at == "end" else "before the first step"
            llm_rate += f", W_v aligned in {cfg.fusion_pretrain_steps} steps {when}"
    console.print(
        Panel.fit(
            f"[bold]i2i demo[/] into {paths.root}\nmodel: {cfg.describe_model()}\n"
            f"budget: {cfg.steps} steps x {cfg.pairs_per_step} pairs, lr {cfg.lr:g} (LLM {llm_rate}); "
            f"pairs co-viewed within {cfg.window}"
            + (" (simulated sessions; real logs: 7d)" if not own else "")
            + (
                "\n[yellow]shortened for a CPU demo: the LLM keeps only its first layers; "
                "the paper trains the full model for an epoch on 8 GPUs[/]"
                if cfg.model.llm_overrides.get("num_hidden_layers")
                else "\n[yellow]a CPU budget of minutes; the paper trains for an epoch on 8 GPUs[/]"
            ),
            title="NoteLLM-2, offline",
        )
    )

    t0 = _step(console, 1, _platform_title(cfg.data))
    if own:
        n_notes = read_notes(paths.notes).height  # the notes contract, checked before any work
        timings["platform"] = _done(console, t0, f"{n_notes} notes and the logs of {paths.data} (read only)")
    else:
        n_notes = _generate(cfg, paths, console)
        timings[cfg.data] = _done(console, t0, f"{n_notes} notes, {cfg.events} events in {paths.data}")

    t0 = _step(console, 2, f"mine-pairs: co-views within {cfg.window}")
    if (paths.pairs / "summary.json").exists():
        console.print(f"{paths.pairs} exists: kept")
    else:
        mined = mine_pairs(paths.logs, window=cfg.window, split=cfg.split, seed=cfg.seed)
        write_pairs(mined, paths.pairs, force=cfg.force)
    counts = {
        s: pl.scan_parquet(paths.pairs / f"{s}.parquet").select(pl.len()).collect().item() for s in SPLITS
    }
    timings["mine-pairs"] = _done(console, t0, "pairs " + ", ".join(f"{s} {n}" for s, n in counts.items()))

    t0 = _step(console, 3, "train: NoteLLM-2 on the train pairs")
    result = _train(cfg, paths, console)
    timings["train"] = _done(console, t0, f"{result['steps']} steps; checkpoint {result['checkpoint']}")

    t0 = _step(console, 4, "index: embed every note into embedded Qdrant")
    index_summary = _index(paths, console)
    timings["index"] = _done(console, t0, f"{index_summary['points']} points in {index_summary['location']}")

    t0 = _step(console, 5, "eval: Recall@K against BM25 and image-only")
    report = _eval(paths, console)
    timings["eval"] = _done(console, t0, f"report in {paths.run}/report.md and recall_at_k.png")

    t0 = _step(console, 6, "related: top-k for sample notes")
    rows = _related_rows(cfg, paths)
    _print_related(console, rows)
    timings["related"] = _done(console, t0, f"{len(rows)} sample queries")

    t0 = _step(console, 7, "gallery")
    from retriever.gallery import render_gallery

    render_gallery(
        rows,
        paths.gallery,
        paths.data,
        title="i2i demo: related notes",
        subtitle=(
            f"{cfg.describe_model()}; green = a co-viewed pair mined from the logs "
            "(pairs stay within a split)"
        ),
    )
    timings["gallery"] = _done(console, t0, f"{paths.gallery}")

    summary = {
        "out": str(paths.root),
        "config": {**asdict(cfg), "out": str(cfg.out), "model": cfg.model.to_dict()},
        "pairs": counts,
        "train": result,
        "index": index_summary,
        "eval": {name: m.get("metrics", {}) for name, m in report["methods"].items()},
        "seconds": timings,
        "commands": _commands(cfg, paths),
    }
    write_json_atomic(paths.root / "demo.json", summary)
    _print_end(console, report, cfg, paths, timings)
    return summary


def _generate(cfg: DemoConfig, paths: DemoPaths, console: Console) -> int:
    """Write the synth or emoji platform into DIR/data (kept when it is there); its note count."""
    summary_file = paths.data / f"{cfg.data}.json"
    if summary_file.exists():
        console.print(f"{paths.data} exists: kept (delete it to regenerate)")
    elif cfg.data == "emoji":
        from pipeline.emoji import generate_emoji

        generate_emoji(
            paths.data,
            users=cfg.users,
            days=cfg.days,
            events=cfg.events,
            image_size=cfg.image_size,
            seed=cfg.seed,
            subgroups=cfg.subgroups,
            force=cfg.force,
        )
    else:
        from pipeline.synth import generate_platform

        generate_platform(
            paths.data,
            notes=cfg.notes,
            users=cfg.users,
            days=cfg.days,
            events=cfg.events,
            image_size=cfg.image_size,
            seed=cfg.seed,
            force=cfg.force,
        )
    return int(json.loads(summary_file.read_text())["notes"])


def _platform_title(data: str) -> str:
    if data == "emoji":
        return "emoji: the Unicode emoji"
    if data == "synth":
        return "synth: a synthetic platform"
    return f"your platform: {data}"


def _train(cfg: DemoConfig, paths: DemoPaths, console: Console) -> dict[str, Any]:
    from train.loop import train

    summary_file = paths.run / "summary.json"
    if summary_file.exists():
        console.print(f"{paths.run} holds a finished run: kept")
        done = json.loads(summary_file.read_text())
        return {
            "steps": done.get("steps"),
            "checkpoint": str(_checkpoint(paths.run)),
            "best": done.get("best"),
        }
    tc = demo_train_config(cfg, paths)
    from i2i.commands.train import summary_table

    # A run with config.json continues from last/, or starts over if it was killed
    # before its first checkpoint (train.run_dir.starts_from_checkpoint).
    resume = (paths.run / "config.json").exists()
    res = train(tc, console, resume=resume)
    console.print(summary_table(res))
    return {"steps": res.steps, "checkpoint": str(_checkpoint(paths.run)), "best": res.best}


def demo_train_config(cfg: DemoConfig, paths: DemoPaths) -> TrainConfig:
    """The training run of the demo (`infra/launch/demo.toml` is the same recipe as a
    config file for `i2i train` on your own data)."""
    return TrainConfig(
        notes=str(paths.notes),
        images=str(paths.data),
        pairs=str(paths.pairs),
        out=str(paths.run),
        model=cfg.model,
        lr=cfg.lr,
        llm_train=cfg.llm_train,
        llm_lr=cfg.llm_lr,
        fusion_lr=cfg.fusion_lr,
        fusion_pretrain_steps=cfg.fusion_pretrain_steps,
        fusion_pretrain_at=cfg.fusion_pretrain_at,
        fusion_calibrate=cfg.fusion_calibrate,
        max_steps=cfg.steps,
        pairs_per_step=cfg.pairs_per_step,
        val_every=cfg.val_every,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        device="cpu",
    )


def _checkpoint(run: Path) -> Path:
    return run / "best" if (run / "best").is_dir() else run / "last"


def _store(paths: DemoPaths):  # -> VectorStore
    from indexer.backends import StoreSpec, open_store

    return open_store(StoreSpec(collection=COLLECTION, workspace=paths.root))


def _index(paths: DemoPaths, console: Console) -> dict[str, Any]:
    from indexer.job import index_notes
    from train.embed import load_embedder

    embedder = load_embedder(paths.run, device="cpu")
    store = _store(paths)
    try:
        s = index_notes(paths.notes, embedder, store, paths.data)
    finally:
        store.close()
    console.print(
        f"embedded {s.embedded} notes ({s.unchanged} unchanged) at {s.notes_per_s:.1f} notes/s; "
        f"{s.image_missing + s.image_unreadable} image problems"
    )
    return {
        "location": s.location,
        "points": s.points,
        "embedded": s.embedded,
        "seconds": round(s.seconds, 2),
    }


def _eval(paths: DemoPaths, console: Console) -> dict[str, Any]:
    from retriever.report import write_report
    from retriever.runner import run_eval

    report = run_eval([paths.run], paths.notes, paths.pairs, split="test", log=console.print)
    write_report(report, paths.run)  # the table prints once, at the end
    return report


def mined_pairs(pairs_dir: Path) -> set[tuple[str, str]]:
    """Every (query, target) pair `mine-pairs` wrote, over all splits, read through the
    one pairs reader. A split keeps only pairs whose notes are both in it, so a pair
    co-viewed across splits is not here."""
    pairs: set[tuple[str, str]] = set()
    for split in SPLITS:
        df = read_pairs(pairs_dir / f"{split}.parquet")
        pairs.update(zip(df["query_id"].to_list(), df["target_id"].to_list(), strict=True))
    return pairs


def _related_rows(cfg: DemoConfig, paths: DemoPaths) -> list[Any]:
    """Sample test queries with their top-k from the collection, each hit judged against
    the pairs `mine-pairs` wrote (every split; a split keeps only pairs within it, so a
    co-viewed note of another split is not marked)."""
    from pipeline.synth import pair_relation
    from retriever.gallery import GalleryRow, RelatedHit
    from retriever.related import related

    notes = {n["note_id"]: n for n in notes_to_dicts(read_notes(paths.notes))}
    coviewed = mined_pairs(paths.pairs)
    test = read_pairs(paths.pairs / "test.parquet")
    queries, _ = protocol_pairs(
        test["query_id"].to_list(), test["target_id"].to_list(), test["rank"].to_list()
    )
    queries = queries[: cfg.samples]
    truth_file = paths.data / "truth.parquet"
    truth = pl.read_parquet(truth_file) if truth_file.exists() else None
    store = _store(paths)
    rows = []
    try:
        for q in queries:
            hits = related(store, q, k=cfg.k)
            ids = [h.note_id for h in hits]
            relations = pair_relation(truth, [q] * len(ids), ids) if truth is not None else [None] * len(ids)
            rows.append(
                GalleryRow(
                    notes[q],
                    [
                        RelatedHit(notes[h.note_id], h.score, (q, h.note_id) in coviewed, rel)
                        for h, rel in zip(hits, relations, strict=True)
                    ],
                )
            )
    finally:
        store.close()
    return rows


def _print_related(console: Console, rows: list[Any]) -> None:
    for row in rows[:3]:
        table = Table(
            title=f"related to {row.query['note_id']}: {row.query['title'][:40]!r}", title_justify="left"
        )
        for col in ("rank", "score", "note id", "title", "co-viewed"):
            table.add_column(col)
        for i, hit in enumerate(row.hits, start=1):
            table.add_row(
                str(i),
                f"{hit.score:.3f}",
                hit.note["note_id"],
                hit.note["title"][:40],
                "✓" if hit.is_true_pair else "",
            )
        console.print(table)


def _commands(cfg: DemoConfig, paths: DemoPaths) -> list[str]:
    """The CLI commands that redo each step on the demo's files."""
    r = paths.root
    split = ",".join(f"{x:g}" for x in cfg.split)
    sizes = f"--users {cfg.users} --days {cfg.days} --events {cfg.events} --image-size {cfg.image_size}"
    generate = []
    if cfg.data == "emoji":
        subset = f" --subgroups {','.join(cfg.subgroups)}" if cfg.subgroups else ""
        generate = [f"i2i emoji {paths.data} {sizes} --seed {cfg.seed}{subset}"]
    elif cfg.data == "synth":
        generate = [f"i2i synth {paths.data} --notes {cfg.notes} {sizes} --seed {cfg.seed}"]
    return [
        *generate,
        f"i2i mine-pairs {paths.logs} --out {paths.pairs} --window {cfg.window} --split {split} "
        f"--seed {cfg.seed}",
        f"i2i train --out {paths.run} --resume",
        f"i2i index {paths.notes} --checkpoint {paths.run} --workspace {r}",
        f"i2i eval {paths.run}",
        f"i2i related NOTE_ID --workspace {r}",
    ]


def _print_end(
    console: Console, report: dict[str, Any], cfg: DemoConfig, paths: DemoPaths, timings: dict[str, float]
) -> None:
    from retriever.report import comparison_table

    console.rule("[bold]done")
    console.print(comparison_table(report))
    console.print(
        f"total {sum(timings.values()):.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    )
    console.print(f"gallery: {paths.gallery}\nre-run any step on these files:")
    for c in _commands(cfg, paths):
        console.print(f"  {c}", highlight=False, soft_wrap=True)
