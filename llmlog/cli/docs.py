"""docs/cli.md, written from the commands themselves: `python -m llmlog.cli.docs > docs/cli.md`.

The reference is every command's `--help`, so it cannot say anything the CLI does not; a test
regenerates it and compares it with the committed file, so it cannot fall behind either.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

from llmlog.cli.core import cli

# Click's own limit: the help a terminal of 80 columns or more shows, whoever writes the file.
WIDTH = 80

HEADER = """\
# CLI reference

Every `llmlog` command's `--help`, as the command prints it. This file is generated: after
changing a command, run `make docs` (or `python -m llmlog.cli.docs > docs/cli.md`).
"""


def walk(
    command: click.Command, name: str = "llmlog", parent: click.Context | None = None
) -> Iterator[tuple[str, click.Command, click.Context]]:
    """Each command with its full name and the context its help is written in, depth first."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    yield ctx.command_path, command, ctx
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                yield from walk(child, sub, ctx)


def help_text(command: click.Command, ctx: click.Context) -> str:
    return command.get_help(ctx).rstrip() + "\n"


def render() -> str:
    commands = list(walk(cli))
    parts = [HEADER]
    for path, _, _ in commands:
        parts.append(f"- [`{path}`](#{path.replace(' ', '-')})")
    for path, command, ctx in commands:
        parts += ["", f"## {path}", "", "```text", help_text(command, ctx).rstrip(), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
