"""docs/cli.md is every command's --help, and every command's help shows how it is used."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.cli.docs import help_text, render, walk

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/cli.md is not the commands' --help any more: run `make docs`"
        " (or `python -m llmlog.cli.docs > docs/cli.md`) and commit it"
    )


def _examples(help: str) -> list[str]:
    """The lines of the help's Examples section that run llmlog."""
    _, found, rest = help.partition("\n  Examples:\n")
    lines = rest.split("\n\n", 1)[0].splitlines() if found else []
    return [line for line in lines if "llmlog " in line]


def test_every_command_has_examples() -> None:
    commands = list(walk(cli))
    # Every group and command that exists is walked, nested groups included.
    assert {"llmlog", "llmlog report drift", "llmlog keys sensitive-metadata set", "llmlog wrap"} <= {
        path for path, _, _ in commands
    }
    missing = [path for path, command, ctx in commands if not _examples(help_text(command, ctx))]
    assert not missing, f"no Examples section in the help of: {', '.join(missing)}"


def test_reference_is_what_help_prints() -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    for path, command, ctx in walk(cli):
        out = runner.invoke(cli, [*path.split()[1:], "--help"], prog_name="llmlog")
        assert out.exit_code == 0, path
        assert out.output == help_text(command, ctx), path
