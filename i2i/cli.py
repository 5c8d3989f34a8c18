"""The `i2i` command line: a thin layer that parses arguments and calls one library
function per command. Each command lives in `i2i/commands/<name>.py`.

Three kinds of failure, three behaviours, the same under the console script and under
typer's `CliRunner`:

- a usage error (no command, an unknown one, a missing argument, a value out of range)
  is printed by click as usual (usage line + message) with exit code 2;
- a user mistake (`core.errors.UserError`) is one red line, exit code 2;
- an operating-system problem with a path (`OSError`: read-only output, a path under a
  file, a full disk) is one red line naming the path, exit code 2.

No traceback in any of these cases (`I2I_DEBUG=1` shows it for an OSError). Importing
this module is cheap: the command modules import heavy libraries (torch, polars) only
inside the commands that need them, so `i2i related` and `--help` start fast.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from core.errors import UserError
from i2i.commands import demo, embed, emoji, evaluate, index, mine_pairs, models, related, serve, synth, train

app = typer.Typer(
    name="i2i",
    help="Item-to-item related-note retrieval with NoteLLM-2: mine pairs, train, index, query, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: what failed, on which path(s), and the system's reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(str(p) for p in paths)
    return f"{where}: {reason}" if where else reason


def print_error(message: str) -> None:
    """The one red line every failure a user can act on ends with."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a `UserError` or an `OSError` into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print_error(str(exc))
            raise typer.Exit(code=2) from None
        except OSError as exc:
            if os.environ.get("I2I_DEBUG"):
                raise
            print_error(os_error_message(exc))
            raise typer.Exit(code=2) from None

    return wrapper


app.command("synth")(user_errors(synth.command))
app.command("emoji")(user_errors(emoji.command))
app.command("mine-pairs")(user_errors(mine_pairs.command))
app.command("train")(user_errors(train.command))
app.add_typer(models.app, name="models")  # its commands map UserError themselves
app.command("embed")(user_errors(embed.command))
app.command("index")(user_errors(index.command))
app.command("related")(user_errors(related.command))
app.command("eval")(user_errors(evaluate.command))
app.command("demo")(user_errors(demo.command))
app.command("serve")(user_errors(serve.command))


def main() -> None:
    """Console-script entry point.

    Standalone mode: click prints usage errors (exit 2), `--help` exits 0, a
    `typer.Exit` carries its code, Ctrl-C prints "Aborted!" (exit 1).
    """
    app()


if __name__ == "__main__":
    main()
