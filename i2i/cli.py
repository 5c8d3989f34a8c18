"""The `i2i` command line: a thin layer that parses arguments and calls one library
function per command. Each command lives in `i2i/commands/<name>.py`.

User mistakes raise `core.errors.UserError`; `main` prints them as one red line and exits
with code 2 (no traceback).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from core.errors import UserError
from i2i.commands import demo, emoji, evaluate, index, mine_pairs, models, related, synth, train

app = typer.Typer(
    name="i2i",
    help="Item-to-item related-note retrieval with NoteLLM-2: mine pairs, train, index, query, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a `UserError` into one red line and exit code 2, also under `CliRunner`.

    (`CliRunner` invokes `app` directly, bypassing `main`.)
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


app.command("synth")(_user_errors(synth.command))
app.command("emoji")(_user_errors(emoji.command))
app.command("mine-pairs")(_user_errors(mine_pairs.command))
app.command("train")(_user_errors(train.command))
app.add_typer(models.app, name="models")  # its commands map UserError themselves
app.command("index")(_user_errors(index.command))
app.command("related")(_user_errors(related.command))
app.command("eval")(_user_errors(evaluate.command))
app.command("demo")(_user_errors(demo.command))


def main() -> None:
    """Console-script entry point: run the app, turning `UserError` into exit code 2."""
    try:
        # Without standalone mode, click returns (not raises) the code of a `typer.Exit`.
        code = app(standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
    except UserError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        Console(stderr=True).print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code and message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
