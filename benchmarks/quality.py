"""Does NoteLLM-2 do what the paper says? The five variants side by side, with error bars.

On one platform (`--data emoji`: the Unicode emoji, real words and pictures; `--data
synth`: the synthetic platform), trains each variant with the same budget and seed
(`text-only`, `basic`, `micl`, `late-fusion`, `notellm2`; by default the CPU recipe:
full-depth SmolLM2-135M with LoRA on the LLM, EfficientNet-Lite0, 60 steps x 16 pairs,
offline), evaluates each with the `i2i eval` harness
(the reference pool: every test-split note; same greedy queries for every method) next
to the BM25 and image-only baselines, and again with the image blanked and with the
text blanked, to show how much each variant relies on each modality. Also reports the
mean late-fusion gate z (the share of each dimension kept from the LLM) and the image
share's weight g (chosen on val after training; 1 is the paper's equation).

Every metric has a 95% bootstrap interval over the test queries, and the reference
method (`--reference`, default notellm2) minus every other method has a paired interval
(the same resampled queries for both); a difference whose interval excludes 0 is
marked `*`. The split leaves at least 300 test queries with the default sizes (the run
warns when it does not).

`--data DIR` runs the same study on a platform of your own: `DIR/notes.parquet` (images
relative to DIR, or `--images ROOT`) and view logs in `DIR/logs/`, mined with a week's
window (`--window`), or pairs mined already (`--pairs PAIRS`). Nothing is written into
DIR; OUT/source.json records where it is. Without a `truth.parquet` (which only the
generators write) the tables slice by the query's text length instead of by relation.

What the paper leads us to expect: `notellm2` above `basic` overall and clearly above it
on pairs related by the image only; `basic` close to `text-only` (visual neglect).

    python benchmarks/quality.py --data emoji --no-blank      # ~2 h on 2 CPU cores
    python benchmarks/quality.py --data synth
    python benchmarks/quality.py --data emoji --tiny --out /tmp/q   # smoke test, tiny models
    python benchmarks/quality.py --data platform/ --out bench_out/quality-mine   # your own notes and logs
    python benchmarks/quality.py --data emoji --micl-weights 9,1 --llm-train lora \\
        --set warmup_ratio=0.05 --set qformer_layers=4 --variants notellm2,basic

Every training knob of the recipe is a flag (`--lr --llm-lr --steps --pairs-per-step
--llm-layers --micl-weights --temperature-init --llm-train full|frozen|lora --variants`),
and `--set KEY=VALUE` (repeatable) sets any other `TrainConfig` or `ModelConfig` field.
Writes OUT/results.json and OUT/results.md; re-running skips finished data, pairs and
runs (change `--out` when changing the recipe). Each variant's evaluation is cached in
its run directory (`quality_eval.json`), so variants trained and evaluated by separate
processes (`--variants X --threads 1`, one per core) are assembled by a final plain run.
Without `--threads 1`, two such processes each start one compute thread per core and
oversubscribe the cores: measured on 2 cores, 0.33-0.48 pairs/s each instead of ~0.9.
`--add LABEL=RUN_DIR` puts another finished run in the same table and paired
comparisons (the same test queries), e.g. the same variant at another budget:

    python benchmarks/quality.py --steps 240 --variants text-only,notellm2 \
        --add notellm2@60=bench_out/quality-emoji-60/runs/notellm2

One run is one draw of the experiment: one simulated log, one split, one training run
per variant, and its intervals hold only the query sampling. `--seed S` draws all of
them anew; `benchmarks/quality_replicates.py` pools several such runs (their
results.json hold every method's per-query values) into intervals over all their
queries and over the replicates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from quality_data import (  # the sibling module (benchmarks/ is on sys.path)
    BUILT_IN,
    QualitySource,
    built_in_source,
    record_source,
    source_eval_set,
    user_source,
)
from rich.console import Console
from rich.table import Table

from core.bootstrap import Bootstrap
from core.errors import UserError
from core.io import write_json_atomic
from pipeline.mine import mine_pairs, write_pairs
from pipeline.options import DEFAULT_SUBGROUP_SHARE
from retriever.baselines import BlankedEmbedder, bm25_scorer, embedding_scorer, image_only_embedder
from retriever.evaluate import EvalSet, evaluate_embedder, evaluate_scores
from retriever.report import (
    excludes_zero,
    markdown_table,
    marked_difference,
    rich_table,
    styled_difference,
    wide_console,
    with_interval,
)
from retriever.runner import method_differences
from train.embed import load_embedder
from train.loop import TrainConfig, train
from train.model_config import VARIANTS, ModelConfig, parse_micl_weights
from train.presets import FUSION_PRETRAIN_STEPS, SHORT_BUDGET_FUSION_PRETRAIN_AT, preset
from train.train_config import FUSION_PRETRAIN_AT

MIN_QUERIES = 300
# (result key, column title): overall metrics and slices, each shown with its interval.
METRICS = (
    ("recall@10", "R@10"),
    ("recall@100", "R@100"),
    ("mrr", "MRR"),
)
# Recall@10 slices shown in the tables when the eval set has them: why a pair is related
# (a generated platform's truth.parquet) and the query's text length (every platform).
SLICES = (
    ("relation=text", "text R@10"),
    ("relation=image", "image R@10"),
    ("relation=both", "both R@10"),
    ("query_text=short", "short-text R@10"),
    ("query_text=long", "long-text R@10"),
)
# Per dataset: generator sizes and the split (shares of notes) that leaves 300+ test
# queries; a platform directory of the user's (--data DIR) takes the split and a week's window.
DATASETS: dict[str, dict[str, Any]] = {
    "synth": {"notes": 3000, "users": 1500, "events": 200_000, "split": "0.6,0.1,0.3", "window": "1h"},
    "emoji": {"users": 3000, "events": 300_000, "split": "0.6,0.1,0.3", "window": "1h"},
}
PLATFORM_DEFAULTS: dict[str, Any] = {"split": "0.6,0.1,0.3", "window": "7d"}
assert tuple(DATASETS) == BUILT_IN


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        default="emoji",
        help="emoji or synth (generated under OUT/data), or a platform directory of your own: "
        "notes.parquet, images relative to it and view logs in logs/ (nothing is written there)",
    )
    p.add_argument("--images", type=Path, default=None, help="--data DIR: the image root (default: DIR)")
    p.add_argument(
        "--pairs",
        type=Path,
        default=None,
        help="--data DIR: pairs mined already (a mine-pairs --out directory) instead of mining DIR/logs",
    )
    p.add_argument("--out", type=Path, default=None, help="default: bench_out/quality-DATA")
    p.add_argument("--notes", type=int, default=None, help="synth: notes (default 3000)")
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--subgroups", default=None, help="emoji: keep only these subgroups (comma-separated)")
    p.add_argument(
        "--subgroup-share",
        type=float,
        default=None,
        help="emoji: share of sessions that follow a subgroup, the words (default 0.5; the rest "
        "follow a colour cluster)",
    )
    p.add_argument("--split", default=None, help="train,val,test shares of notes (default 0.6,0.1,0.3)")
    p.add_argument(
        "--window",
        default=None,
        help="co-view window (default: 1h for emoji and synth, whose simulated sessions last ~1h; "
        "7d for a platform directory)",
    )
    # the training recipe
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per variant (same for all)")
    p.add_argument("--pairs-per-step", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="new modules: connector, fusion, head")
    p.add_argument("--llm-lr", type=float, default=5e-4, help="SmolLM2's own weights (LoRA adapters or all)")
    p.add_argument(
        "--fusion-lr",
        type=float,
        default=None,
        help="the late fusion (W_v and the gate) in the joint stage (default: --lr, the paper's one rate)",
    )
    p.add_argument(
        "--fusion-pretrain-steps",
        type=int,
        default=FUSION_PRETRAIN_STEPS,
        help="steps of 64 pairs that align late fusion's W_v on the cached image features "
        "(0: off, the paper's one stage)",
    )
    p.add_argument(
        "--fusion-pretrain-at",
        choices=FUSION_PRETRAIN_AT,
        default=SHORT_BUDGET_FUSION_PRETRAIN_AT,
        help="align W_v before the first step (start) or after the last, through the trained head (end)",
    )
    p.add_argument(
        "--no-fusion-calibrate",
        dest="fusion_calibrate",
        action="store_false",
        help="keep the image share's weight at 1 (the paper's equation) instead of choosing it on val",
    )
    p.add_argument(
        "--llm-layers",
        type=int,
        default=30,
        help="SmolLM2 layers kept (of 30; a cut LLM loses most of its text knowledge)",
    )
    p.add_argument("--llm-train", choices=("full", "frozen", "lora"), default="lora")
    p.add_argument("--micl-weights", default=None, help="text,vision mICL loss weights (default: 9,1)")
    p.add_argument("--temperature-init", type=float, default=3.0, help="t0: logits scaled by exp(t)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig or ModelConfig field, e.g. warmup_ratio=0.05 (repeatable; JSON values)",
    )
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--reference", default="notellm2", help="the method every other is compared with")
    p.add_argument(
        "--add",
        dest="extra_runs",
        action="append",
        default=[],
        metavar="LABEL=RUN_DIR",
        help="also evaluate a finished run (e.g. another budget: --add notellm2@60=runs/notellm2) "
        "on the same test queries, under LABEL; repeatable",
    )
    p.add_argument("--no-blank", action="store_true", help="skip the blanked-modality evaluations")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="tiny random models: a smoke test in minutes")
    p.add_argument(
        "--threads", type=int, default=None, help="torch compute threads (1 when running a variant per core)"
    )
    args = p.parse_args(argv)
    built_in = args.data in DATASETS
    args.out = args.out or Path(f"bench_out/quality-{args.data if built_in else Path(args.data).name}")
    defaults = DATASETS[args.data] if built_in else PLATFORM_DEFAULTS
    for key in ("notes", "users", "events", "split", "window"):
        if getattr(args, key, None) is None and key in defaults:
            setattr(args, key, defaults[key])
    if built_in and (args.images is not None or args.pairs is not None):
        p.error(f"--images and --pairs apply to a platform directory, not --data {args.data}")
    generator_flags = ("notes", "users", "events", "subgroups", "subgroup_share")
    if not built_in and any(getattr(args, k) is not None for k in generator_flags):
        p.error("--notes, --users, --events, --subgroups and --subgroup-share apply to --data emoji or synth")
    if args.subgroup_share is not None and args.data != "emoji":
        p.error("--subgroup-share applies to --data emoji only")
    if args.data == "emoji" and args.subgroup_share is None:
        args.subgroup_share = DEFAULT_SUBGROUP_SHARE
    if args.fusion_pretrain_steps < 0:
        p.error(f"--fusion-pretrain-steps must be >= 0, got {args.fusion_pretrain_steps}")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"--variants {','.join(unknown)} unknown; expected some of {','.join(VARIANTS)}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def _prepare(args: argparse.Namespace, out: Path, console: Console) -> QualitySource:
    """The run's platform and its mined pairs: generated, or the user's directory."""
    if args.data in DATASETS:
        source = built_in_source(out, args.data)
        _generate(args, source.data, console)
        if args.data == "emoji" and args.subgroup_share != DEFAULT_SUBGROUP_SHARE:
            # another corpus: quality_replicates.py pools only runs of one label
            source = dataclasses.replace(source, label=f"emoji-share{args.subgroup_share:g}")
    else:
        source = user_source(out, Path(args.data), images=args.images, pairs=args.pairs)
        record_source(out, source)
    if not (source.pairs / "test.parquet").exists():
        console.print(f"mine-pairs: {source.data / 'logs'}, window {args.window}, split {args.split}")
        mined = mine_pairs(source.data / "logs", window=args.window, split=args.split, seed=args.seed)
        write_pairs(mined, source.pairs)
    return source


def _generate(args: argparse.Namespace, data: Path, console: Console) -> None:
    summary = data / f"{args.data}.json"
    if summary.exists():
        _check_generated(args, json.loads(summary.read_text()), data)
    else:
        if args.data == "emoji":
            from pipeline.emoji import generate_emoji

            console.print(f"emoji: {args.users} users, {args.events} events")
            subgroups = args.subgroups.split(",") if args.subgroups else None
            generate_emoji(
                data,
                users=args.users,
                events=args.events,
                image_size=96,
                seed=args.seed,
                subgroups=subgroups,
                subgroup_share=args.subgroup_share,
            )
        else:
            from pipeline.synth import generate_platform

            console.print(f"synth: {args.notes} notes, {args.users} users, {args.events} events")
            generate_platform(
                data, notes=args.notes, users=args.users, events=args.events, image_size=96, seed=args.seed
            )


def _check_generated(args: argparse.Namespace, saved: dict[str, Any], data: Path) -> None:
    """A platform generated by an earlier run is reused only for the same generator
    arguments: a re-run with other sizes, seed or share must not measure the old data."""
    wanted: dict[str, Any] = {"seed": args.seed, "users": args.users, "events": args.events}
    if args.data == "emoji":
        wanted["subgroup_share"] = args.subgroup_share
        saved = {"subgroup_share": DEFAULT_SUBGROUP_SHARE, **saved}  # written before the option
    else:
        wanted["notes"] = args.notes
    differ = [f"{k} {saved.get(k)} (asked: {v})" for k, v in wanted.items() if saved.get(k) != v]
    if differ:
        raise UserError(
            f"{data} holds a {args.data} platform generated with {', '.join(differ)}; "
            "use another --out for other generator arguments"
        )


def _apply_overrides(cfg: TrainConfig, overrides: list[str]) -> None:
    """`KEY=VALUE` onto the TrainConfig field KEY, else the ModelConfig field KEY (JSON values)."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if key in train_fields and key != "model":
            setattr(cfg, key, value)
        elif key in model_fields:
            setattr(cfg.model, key, value)
        else:
            raise UserError(f"--set {key}: no such TrainConfig or ModelConfig field")
    cfg.model.__post_init__()  # normalises and validates the model fields


def _train_config(args: argparse.Namespace, variant: str, source: QualitySource, run: Path) -> TrainConfig:
    if args.tiny:
        model = preset("tiny", variant=variant)
    else:  # the demo's model (train.presets) at --llm-layers
        model = preset(
            "demo",
            llm_overrides={"num_hidden_layers": args.llm_layers},
            variant=variant,
            temperature_init=args.temperature_init,
        )
    if args.micl_weights:
        model.micl_weights = parse_micl_weights(args.micl_weights)
    cfg = TrainConfig(
        notes=str(source.notes),
        images=str(source.images),
        pairs=str(source.pairs),
        out=str(run),
        model=model,
        lr=args.lr,
        llm_lr=args.llm_lr,
        fusion_lr=args.fusion_lr,
        fusion_pretrain_steps=args.fusion_pretrain_steps,
        fusion_pretrain_at=args.fusion_pretrain_at,
        fusion_calibrate=args.fusion_calibrate,
        llm_train=args.llm_train,
        max_steps=args.steps,
        pairs_per_step=args.pairs_per_step,
        val_every=args.steps,  # validate once at the end: the budget goes to training
        val_at_start=False,
        num_workers=1,
        seed=args.seed,
        device="cpu",
    )
    _apply_overrides(cfg, args.overrides)
    return cfg


def _train_variant(
    args: argparse.Namespace, variant: str, source: QualitySource, out: Path, console: Console
) -> tuple[Path, dict[str, Any]]:
    run = out / "runs" / variant
    if (run / "summary.json").exists():
        return run, json.loads((run / "summary.json").read_text())
    cfg = _train_config(args, variant, source, run)
    t0 = time.perf_counter()
    train(cfg, console, resume=(run / "last").is_dir())
    done = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    done.setdefault("seconds", time.perf_counter() - t0)
    return run, done


@contextlib.contextmanager
def _gate_recorder(model: Any) -> Iterator[list[tuple[float, int]]]:
    """Record (mean late-fusion gate z, batch size) of every forward while active."""
    gates: list[tuple[float, int]] = []
    if getattr(model, "fusion", None) is None:
        yield gates
        return
    hook = model.register_forward_hook(
        lambda _m, _i, out: gates.append((float(out.gate), out.multimodal.shape[0]))
    )
    try:
        yield gates
    finally:
        hook.remove()


def _evaluate_variant(
    args: argparse.Namespace, variant: str, run: Path, es: EvalSet, images: Path, boot: Bootstrap
) -> dict[str, Any]:
    """The variant's results, cached in its run directory (`quality_eval.json`) so variants
    can be evaluated by separate processes as their training finishes, and a re-run only
    assembles the table. The cache is used only for the same checkpoint, eval set and
    bootstrap settings."""
    cache = run / "quality_eval.json"
    key = {
        "checkpoint_mtime": (run / "summary.json").stat().st_mtime,
        "queries": len(es.queries),
        "pool": len(es.pool),
        "targets": es.targets,
        "resamples": boot.resamples,
        "seed": boot.seed,
        "no_blank": bool(args.no_blank),
    }
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            res = saved["result"]
            res["per_query"] = {k: np.asarray(v, dtype=np.float64) for k, v in res["per_query"].items()}
            return res
    res = _evaluate_variant_now(args, variant, run, es, images, boot)
    plain = {**res, "per_query": {k: np.asarray(v).tolist() for k, v in res["per_query"].items()}}
    write_json_atomic(cache, {"key": key, "result": plain})
    return res


def _evaluate_variant_now(
    args: argparse.Namespace, variant: str, run: Path, es: EvalSet, images: Path, boot: Bootstrap
) -> dict[str, Any]:
    embedder = load_embedder(run, device="cpu")
    with _gate_recorder(embedder.model) as gates:
        res = evaluate_embedder(embedder, es, images, name=variant, ann=False, boot=boot)
    res["gate z"] = sum(g * n for g, n in gates) / sum(n for _, n in gates) if gates else None
    fusion = getattr(embedder.model, "fusion", None)
    res["image weight g"] = None if fusion is None else float(embedder.model.config.fusion_image_gain)
    res["blanked"] = {}
    if not args.no_blank:
        for blank in ("image", "text"):
            if blank == "image" and variant == "text-only":
                res["blanked"][blank] = {"metrics": res["metrics"], "intervals": res["intervals"]}
                continue  # it never sees the image
            b = evaluate_embedder(BlankedEmbedder(embedder, blank), es, images, ann=False, boot=boot)
            res["blanked"][blank] = {"metrics": b["metrics"], "intervals": b["intervals"]}
    return res


def _extra_runs(specs: list[str]) -> list[tuple[str, Path]]:
    """`--add LABEL=RUN_DIR` values -> (label, run); each run must be a finished training run."""
    runs = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        run = Path(path)
        if not sep or not label or not path:
            raise SystemExit(f"--add {spec!r}: expected LABEL=RUN_DIR, e.g. notellm2@60=runs/notellm2")
        if not (run / "summary.json").exists():
            raise SystemExit(f"--add {spec!r}: {run} is not a finished run (no summary.json)")
        runs.append((label, run))
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = wide_console()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    t_start = time.perf_counter()
    boot = Bootstrap(resamples=args.resamples, seed=args.seed)
    try:
        source = _prepare(args, out, console)
        es = source_eval_set(source, out)
    except UserError as e:
        console.print(f"[red]error: {e}[/]", highlight=False)
        raise SystemExit(2) from None
    counts = {k: int(v.sum()) for k, v in es.slices.items()}
    console.print(f"test split: {len(es.queries)} queries, pool {len(es.pool)}; slice sizes {counts}")
    if len(es.queries) < MIN_QUERIES:
        console.print(
            f"[bold red]only {len(es.queries)} test queries (< {MIN_QUERIES}): intervals will be wide; "
            "raise --events/--users or the test share of --split[/]"
        )

    methods: dict[str, dict[str, Any]] = {}
    methods["bm25"] = evaluate_scores(bm25_scorer(es), es, "bm25", boot=boot)
    vision = image_only_embedder(None)  # EfficientNet-Lite0 (ImageNet), offline
    methods["image-only"] = evaluate_scores(
        embedding_scorer(vision, es, source.images), es, "image-only", boot=boot
    )
    for variant in args.variants.split(","):
        run, done = _train_variant(args, variant, source, out, console)
        methods[variant] = _evaluate_variant(args, variant, run, es, source.images, boot)
        methods[variant]["train"] = {k: done.get(k) for k in ("seconds", "steps", "best") if k in done}
        console.print(
            f"{variant}: recall@10 {methods[variant]['metrics'].get('recall@10', float('nan')):.3f}"
        )

    for label, run in _extra_runs(args.extra_runs):
        methods[label] = _evaluate_variant(args, label, run, es, source.images, boot)
        done = json.loads((run / "summary.json").read_text())
        methods[label]["train"] = {k: done.get(k) for k in ("seconds", "steps", "best") if k in done}
        console.print(f"{label}: recall@10 {methods[label]['metrics'].get('recall@10', float('nan')):.3f}")

    reference = args.reference if args.reference in methods else list(methods)[-1]
    diffs = method_differences(methods, es, boot, reference=reference)
    results = {
        "data": source.label,
        "source": source.to_dict(),
        "queries": len(es.queries),
        "pool": len(es.pool),
        "enough_queries": len(es.queries) >= MIN_QUERIES,
        "slice_sizes": counts,
        "bootstrap": {"resamples": boot.resamples, "confidence": boot.confidence, "seed": boot.seed},
        "methods": {name: {k: v for k, v in m.items() if k != "per_query"} for name, m in methods.items()},
        "differences": diffs,
        "per_query": per_query_record(methods, es),
        "seconds": round(time.perf_counter() - t_start, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(markdown(results))
    console.print(methods_table(results))
    console.print(differences_table(results))
    return results


def per_query_record(methods: dict[str, dict[str, Any]], es: EvalSet) -> dict[str, Any]:
    """Every method's per-query values, the query ids and the slice masks: what
    `benchmarks/quality_replicates.py` pools over replicates."""
    return {
        "query_ids": [q["note_id"] for q in es.queries],
        "slices": {name: mask.astype(bool).tolist() for name, mask in es.slices.items()},
        "methods": {
            name: {k: np.asarray(v, dtype=np.float64).round(6).tolist() for k, v in m["per_query"].items()}
            for name, m in methods.items()
        },
    }


# --- tables ---------------------------------------------------------------------------


def _cell(method: dict[str, Any], key: str, slice_name: str | None = None) -> str:
    if slice_name is None:
        value, iv = method.get("metrics", {}).get(key), method.get("intervals", {}).get(key)
    else:
        value = method.get("slices", {}).get(slice_name, {}).get(key)
        iv = method.get("slice_intervals", {}).get(slice_name, {}).get(key)
    return with_interval(value, iv)


def _slices(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The SLICES this run's eval set has (no relation slices without a truth.parquet)."""
    return [(s, title) for s, title in SLICES if s in results.get("slice_sizes", {})]


def method_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per method: each metric with its interval, blanked-modality
    Recall@10, the gate, the image share's weight g (late fusion) and the training time."""
    slices = _slices(results)
    head = ["method", *(t for _, t in METRICS), *(t for _, t in slices), "no-image R@10", "no-text R@10"]
    head += ["gate z", "image g", "steps", "train s"]
    rows = []
    for name, m in results["methods"].items():
        row = [name, *(_cell(m, k) for k, _ in METRICS), *(_cell(m, "recall@10", s) for s, _ in slices)]
        for blank in ("image", "text"):
            row.append(_cell(m["blanked"][blank], "recall@10") if blank in m.get("blanked", {}) else "-")
        gate = m.get("gate z")
        row.append("-" if gate is None else f"{gate:.3f}")
        gain = m.get("image weight g")
        row.append("-" if gain is None else f"{gain:g}")
        steps = m.get("train", {}).get("steps")
        row.append("-" if steps is None else str(steps))
        seconds = m.get("train", {}).get("seconds")
        row.append("-" if seconds is None else f"{seconds:.0f}")
        rows.append(row)
    return head, rows


def difference_rows(results: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and one row per other method: reference - method, paired interval, and
    whether it excludes 0."""
    diffs = results["differences"]
    slices = _slices(results)
    head = [f"{diffs['reference']} − method", *(t for _, t in METRICS), *(t for _, t in slices)]
    rows = []
    for name, d in diffs["methods"].items():
        row = [(name, False)]
        for key, _ in METRICS:
            iv = d["metrics"].get(key)
            row.append(
                ("-", False) if iv is None else (with_interval(iv["estimate"], iv, True), excludes_zero(iv))
            )
        for s, _ in slices:
            iv = d["slices"].get(s, {}).get("recall@10")
            row.append(
                ("-", False) if iv is None else (with_interval(iv["estimate"], iv, True), excludes_zero(iv))
            )
        rows.append(row)
    return head, rows


def _title(results: dict[str, Any]) -> str:
    return (
        f"quality on {results['data']}: {results['queries']} test queries, pool {results['pool']}; "
        f"values with {results['bootstrap']['confidence']:.0%} bootstrap intervals over queries"
    )


def methods_table(results: dict[str, Any]) -> Table:
    return rich_table(_title(results), *method_rows(results))


def differences_table(results: dict[str, Any]) -> Table:
    head, rows = difference_rows(results)
    return rich_table(
        f"{results['differences']['reference']} minus each method, paired intervals",
        head,
        [[row[0][0], *(styled_difference(text, real) for text, real in row[1:])] for row in rows],
        caption="* and colour: the interval excludes 0 (green: reference better, red: worse)",
    )


def markdown(results: dict[str, Any]) -> str:
    head, rows = method_rows(results)
    lines = [
        "# Quality benchmark",
        "",
        f"{_title(results)}; slice sizes {results['slice_sizes']}; {results['seconds']} s in all.",
        "",
        *markdown_table(head, rows),
    ]
    head, drows = difference_rows(results)
    lines += [
        "",
        f"## {results['differences']['reference']} minus each method",
        "",
        "Paired 95% bootstrap intervals (the same resampled queries for both methods); "
        "**bold \\*** = the interval excludes 0, a difference these queries support.",
        "",
        *markdown_table(head, [[r[0][0], *(marked_difference(t, real) for t, real in r[1:])] for r in drows]),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
