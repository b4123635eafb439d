"""`llmlog prompts`: the prompt versions in the app's repository, and how they differ."""

from __future__ import annotations

import difflib

import click
from rich.table import Table
from rich.text import Text

from llmlog import prompts
from llmlog.cli import Ctx, _text, cli, console, pass_ctx

DIR_HELP = "The prompts directory (default: LLMLOG_PROMPTS or ./prompts)."


@cli.group(name="prompts")
def prompts_group() -> None:
    """Prompt versions kept as files: prompts/NAME/v1.txt, v2.txt and `current` ("v2").

    In the app, `llmlog.prompt("NAME")` gives the current text; calls made with it are
    stored with its version, `NAME@v2`. A call whose system prompt is no version gets a
    short hash of the text as its version. The directory is ./prompts, or LLMLOG_PROMPTS.

    \b
    Examples:
      llmlog prompts list
      llmlog prompts diff code-review v1 v2
    """


@prompts_group.command(name="list")
@click.option("--dir", "root", metavar="PATH", help=DIR_HELP)
@pass_ctx
def prompts_list(ctx: Ctx, root: str | None) -> None:
    """Each prompt, its versions (the current one marked) and the calls stored with each."""
    found = prompts.catalog(root)
    if not found:
        raise click.ClickException(f"no prompts in {prompts.directory(root)} (a folder NAME/ with v1.txt, …)")
    calls = {
        str(version): int(n)
        for version, n in ctx.store.query(
            "SELECT prompt_template_version, SUM(calls) FROM daily GROUP BY 1", limit=1_000_000
        ).rows
    }
    table = Table("prompt", "version", "calls")
    for p in found:
        for v in p.versions:
            label = f"{v} (current)" if v == p.current else v
            table.add_row(_text(p.name), _text(label), f"{calls.get(f'{p.name}@{v}', 0):,}")
    console.print(table)


@prompts_group.command(name="diff")
@click.argument("name")
@click.argument("old")
@click.argument("new")
@click.option("--dir", "root", metavar="PATH", help=DIR_HELP)
def prompts_diff(name: str, old: str, new: str, root: str | None) -> None:
    """What changed from one version of a prompt to another, line by line."""
    try:
        a, b = prompts.read(name, old, root), prompts.read(name, new, root)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    lines = difflib.unified_diff(
        a.splitlines(keepends=True), b.splitlines(keepends=True), a.version, b.version
    )
    styles = {"+": "green", "-": "red", "@": "cyan"}
    out = Text()
    for line in lines:
        out.append_text(_text(line if line.endswith("\n") else line + "\n", styles.get(line[:1], "")))
    console.print(out if out else Text(f"{a.version} and {b.version} are the same text."), end="")
