from typer.testing import CliRunner

from i2i.cli import app


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("synth", "mine-pairs", "train", "index", "related", "eval", "demo", "models"):
        assert name in result.output
