"""`i2i demo`: synth -> mine-pairs -> train -> index -> eval -> related, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from i2i.commands._util import Force


def command(
    out: Annotated[Path, typer.Option(help="Directory for every step's output.")] = Path("demo"),
    data: Annotated[
        str,
        typer.Option(
            help="synth (made-up words, drawn motifs), emoji (the Unicode emoji: real content), or a "
            "platform directory of your own: notes.parquet (images relative to it) and logs/, read "
            "in place."
        ),
    ] = "synth",
    notes: Annotated[int, typer.Option(help="Notes on the synthetic platform (synth only).", min=50)] = 1600,
    users: Annotated[
        int | None, typer.Option(help="Users browsing (default: synth 600, emoji 3000).", min=10)
    ] = None,
    events: Annotated[
        int | None,
        typer.Option(help="Log events to simulate (default: synth 80000, emoji 300000).", min=1000),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="Co-view window for mine-pairs (default: 1h for synth and emoji, whose sessions last "
            "~1h; 7d for your own logs)."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps (optimizer updates).", min=1)] = 80,
    pairs_per_step: Annotated[int, typer.Option(help="Pairs per step (in-batch negatives).", min=2)] = 16,
    llm_layers: Annotated[
        int | None,
        typer.Option(
            help="Keep only the first N of SmolLM2's 30 layers (faster on CPU, but it loses text "
            "understanding). Default: all 30.",
            min=1,
            max=30,
        ),
    ] = None,
    llm_train: Annotated[
        str,
        typer.Option(help="How SmolLM2 trains: lora (adapters), full (every weight) or frozen."),
    ] = "lora",
    fusion_lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate of the late fusion (W_v and the gate) in the joint stage "
            "(default: --lr, as the paper trains every module at one rate)."
        ),
    ] = None,
    samples: Annotated[int, typer.Option(help="Sample queries shown and put in the gallery.", min=1)] = 6,
    k: Annotated[int, typer.Option("-k", help="Related notes per sample query.", min=1)] = 8,
    tiny: Annotated[
        bool,
        typer.Option(help="A tiny random model instead of the pretrained ones: a smoke test in seconds."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for data, split and training.")] = 0,
    force: Force = False,
) -> None:
    """Run the whole pipeline offline on embedded defaults and write DIR/gallery.html.

    --data emoji uses the Unicode emoji (apt-get install fonts-noto-color-emoji
    unicode-cldr-core unicode-data) with a 0.6/0.1/0.3 split, so the test split keeps
    300+ queries. --data DIR runs it on your own notes and logs (nothing is written in DIR).
    """
    from i2i.demo import DATASETS, DemoConfig, default_demo_model, run_demo

    if tiny:
        from train.presets import preset

        model = preset("tiny")
    else:
        model = default_demo_model(llm_layers)
    if data == "emoji":
        from pipeline.emoji import DEFAULT_EVENTS, DEFAULT_SPLIT, DEFAULT_USERS

        sizes: dict[str, Any] = {
            "users": users or DEFAULT_USERS,
            "events": events or DEFAULT_EVENTS,
            "split": DEFAULT_SPLIT,
        }
    else:
        sizes = {"users": users or 600, "events": events or 80_000}
    if window is None:
        window = "1h" if data in DATASETS else "7d"  # simulated sessions last about an hour
    cfg = DemoConfig(
        out=out,
        data=data,
        notes=notes,
        **sizes,
        window=window,
        steps=steps,
        pairs_per_step=pairs_per_step,
        model=model,
        samples=samples,
        k=k,
        seed=seed,
        val_every=max(1, steps // 2),
        llm_train=llm_train,
        fusion_lr=fusion_lr,
        force=force,
    )
    run_demo(cfg)
