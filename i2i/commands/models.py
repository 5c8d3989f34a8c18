"""`i2i models ...`: prepare offline pretrained weights (lands with issue 3)."""

from __future__ import annotations

import typer

from i2i.commands._util import not_yet

app = typer.Typer(help="Prepare and list offline pretrained models.", no_args_is_help=True)


@app.command("prepare")
def prepare() -> None:
    """Not implemented yet (issue 3)."""
    not_yet("models prepare", 3)
