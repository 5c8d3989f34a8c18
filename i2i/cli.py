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

import typer

from i2i.commands import demo, embed, emoji, evaluate, index, mine_pairs, models, related, serve, synth, train
from i2i.commands._util import user_errors

app = typer.Typer(
    name="i2i",
    help="Item-to-item related-note retrieval with NoteLLM-2: mine pairs, train, index, query, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.command("synth")(user_errors(synth.command))
app.command("emoji")(user_errors(emoji.command))
app.command("mine-pairs")(user_errors(mine_pairs.command))
app.command("train")(user_errors(train.command))
app.add_typer(models.app, name="models")
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
