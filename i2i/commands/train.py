"""`i2i train`: train a NoteLLM-2 model on mined pairs (library: `train.loop.train`).

Configuration: defaults <- `--config x.toml` <- flags (flags win). `--resume` continues
the run in `--out` from its own config.json (flags still win) and last/ checkpoint.
Multi-GPU / multi-node: run the same command under `torchrun` (infra/launch/README.md):

    torchrun --nproc_per_node 8 -m i2i.cli train --config run.toml
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.errors import UserError
from i2i.commands._util import MaxBadImages, images_up_front

if TYPE_CHECKING:
    from train.run_dir import TrainResult

# Every other parameter of `command` is named after the TrainConfig or ModelConfig field
# it overrides (`config_overrides` routes it; a name that is neither is an error).
CLI_ONLY = ("config", "resume", "force", "max_bad_images")


def command(
    notes: Annotated[
        Path | None, typer.Option(help="Notes Parquet (note_id, title, content, tags, image).")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(help="Image root for relative image paths (default: the notes file's folder)."),
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option(help="Pairs directory from `i2i mine-pairs` (train.parquet, val.parquet).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory, e.g. runs/notellm2 (default: runs/default).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config: training keys at the top, model keys in [model].")
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="text-only | basic | micl | late-fusion | notellm2 (default notellm2).")
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="Causal LM: hub name, local dir, or smollm2-135m (offline).")
    ] = None,
    vision: Annotated[
        str | None,
        typer.Option(
            help="Vision encoder: efficientnet-lite0 (offline), efficientnet-lite0+stem (plus each "
            "cell's stem colour statistics) or open_clip:NAME[@TAG]."
        ),
    ] = None,
    connector: Annotated[str | None, typer.Option(help="qformer (paper default) | mlp.")] = None,
    micl_weights: Annotated[
        str | None,
        typer.Option(
            help="mICL loss weights W_T,W_V of the multimodal and visual losses (default 9,1, as in "
            "every NoteLLM-2 run the paper reports; its ablation sweeps 1,3,9,19 to 1)."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last/ checkpoint.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Start a run in an --out that holds other files (only the run's own are written)."
        ),
    ] = False,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (paper: 3e-6 for a full LLM).")] = None,
    llm_lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate of the LLM's own weights (default: --lr); new modules use --lr."
        ),
    ] = None,
    fusion_lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate of the late fusion (W_v and the gate; default: --lr). The "
            "reference trains every module at one rate."
        ),
    ] = None,
    connector_warmup_steps: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="LLaVA-style stage 1: for the first N steps only the new modules (connector, "
            "fusion, head, temperature) learn and the LLM stays as it is (default 0: off).",
        ),
    ] = None,
    fusion_pretrain_steps: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Train the late fusion's image projection W_v alone on the train pairs for N "
            "steps (before the first step, or after the last: --fusion-pretrain-at), from the "
            "frozen encoder's cached features (seconds; its loudness is kept). Late-fusion "
            "variants only (default 0: off, as in the paper).",
        ),
    ] = None,
    fusion_pretrain_pairs: Annotated[
        int | None, typer.Option(min=2, help="Pairs per --fusion-pretrain-steps step (default 64).")
    ] = None,
    fusion_pretrain_at: Annotated[
        str | None,
        typer.Option(
            help="When --fusion-pretrain-steps align W_v: start (before the first step) or end "
            "(after the last, through the trained head; the joint stage then runs the paper's "
            "equation). Default: start.",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Passes over the train pairs (paper: 1).")] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many optimizer steps.")
    ] = None,
    pairs_per_step: Annotated[
        int | None, typer.Option(min=2, help="Pairs per GPU per forward (paper: 16); negatives x world size.")
    ] = None,
    grad_accum: Annotated[int | None, typer.Option(min=1, help="Forwards per optimizer step.")] = None,
    llm_train: Annotated[
        str | None, typer.Option(help="LLM weights: full | frozen | lora (needs peft).")
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute LLM activations."
        ),
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(min=1, help="Validate and checkpoint every N optimizer steps.")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | bf16 (CUDA, or CPU with native bf16) | fp32."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cuda | cpu.")] = None,
    num_workers: Annotated[int | None, typer.Option(min=0, help="DataLoader workers per process.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and data order.")] = None,
    max_bad_images: MaxBadImages = 0.05,
) -> None:
    """Train a NoteLLM-2 model on related-note pairs; writes runs/<name>/{last,best}/, metrics.jsonl."""
    _run(locals())


def _run(args: dict) -> None:
    """Resolve the config (defaults <- TOML or the run's config.json <- flags) and train."""
    from train.loop import train
    from train.model_config import parse_micl_weights
    from train.train_config import TrainConfig

    overrides, model_overrides = config_overrides(args)
    if model_overrides.get("micl_weights") is not None:
        model_overrides["micl_weights"] = parse_micl_weights(model_overrides["micl_weights"])
    out, resume = args["out"], args["resume"]
    if resume:
        if args["config"] is not None:
            raise UserError("--resume reads the run's own config.json; drop --config (flags still override)")
        if out is None:
            raise UserError("--resume needs --out RUN_DIR: the run to continue")
        saved = out / "config.json"
        if not saved.exists():
            raise UserError(f"nothing to resume in {out}: no config.json; drop --resume to start a new run")
        cfg = TrainConfig.load(saved, overrides, model_overrides)
    else:
        cfg = TrainConfig.load(args["config"], overrides, model_overrides)
    if cfg.notes is not None and cfg.model.variant != "text-only":  # text-only reads no image
        from train.run_data import image_root

        images_up_front(cfg.notes, image_root(cfg), args["max_bad_images"])
    console = Console()
    result = train(cfg, console=console, resume=resume, force=args["force"])
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one table
        console.print(summary_table(result))


def config_overrides(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the command's arguments into TrainConfig and ModelConfig overrides by field name."""
    from train.model_config import ModelConfig
    from train.train_config import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    overrides: dict[str, Any] = {}
    model_overrides: dict[str, Any] = {}
    for name, value in args.items():
        if name in CLI_ONLY:
            continue
        value = str(value) if isinstance(value, Path) else value
        if name in train_fields:
            overrides[name] = value
        elif name in model_fields:
            model_overrides[name] = value
        else:  # a new flag must be named after the field it sets
            raise TypeError(f"i2i train --{name.replace('_', '-')} names no TrainConfig / ModelConfig field")
    return overrides, model_overrides


def summary_table(result: TrainResult) -> Table:
    """The final and best validation metrics, then the run's counters."""
    table = Table(title=f"i2i train: {result.run_dir}")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column(f"best ({result.best_metric})", justify="right")

    def fmt(value: float) -> str:
        return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"

    for key, value in result.metrics.items():
        best = "" if result.best is None else fmt(result.best.get(key, float("nan")))
        table.add_row(key, fmt(value), best)
    for key, value in result.counts.items():
        table.add_row(key, str(value), "")
    return table
