"""`llmlog trace`: one trace as a tree in the terminal, each span and call with its offset,
its duration and a bar on the trace's time axis (the tree is `llmlog.analysis.traces`'s, as
the trace page draws it).

Span names, status messages and error types are logged text: printed through rich `Text`
(never as markup, never terminal control).
"""

from __future__ import annotations

import json

import click
from rich.table import Table
from rich.text import Text

from llmlog.analysis import traces
from llmlog.analysis.traces import Node, Tree
from llmlog.cli.core import (
    MAX_COUNT,
    Ctx,
    as_text,
    cli,
    console,
    fmt_cost,
    fmt_ms,
    or_dash,
    pass_ctx,
    printable,
)

BAR = 32  # the time axis's width, in characters
DEEPEST = 16  # indentation stops here; a deeper node says how deep it is
MESSAGE = 120  # of a failed span's status message, the characters printed


def _bar(n: Node) -> Text:
    """The node's place on the trace's time axis, in BAR characters."""
    start = min(int(n.left * BAR / 100), BAR - 1)
    length = max(1, min(round(n.width * BAR / 100), BAR - start))
    style = "red" if n.failed else "cyan" if n.call_id else "blue"
    return Text.assemble(" " * start, ("█" * length, style), " " * (BAR - start - length))


def _name(n: Node) -> Text:
    indent = "  " * min(n.depth, DEEPEST) + (f"[{n.depth}] " if n.depth > DEEPEST else "")
    out = Text(indent)
    out.append(printable(n.name), style="bold" if n.call_id else "")
    if n.span is None:
        out.append(" (call)", style="dim")
    if n.repeats_call:
        out.append(" (same call as above)", style="dim")
    if n.orphan:
        out.append(" (no parent)", style="yellow")
    if n.span_failed:
        out.append(" ✗ error", style="red")
        if n.span is not None and n.span.status_message:
            message = n.span.status_message
            cut = message[:MESSAGE] + ("…" if len(message) > MESSAGE else "")
            out.append(f": {printable(' '.join(cut.split()))}", style="red")
    if n.error_type:
        out.append(f" ✗ {printable(n.error_type)}", style="red")
    return out


def _tokens(n: Node) -> str:
    c = n.call
    return "" if c is None else f"{or_dash(c.input_tokens)} / {or_dash(c.output_tokens)}"


def tree_table(tree: Tree) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("span / call", no_wrap=True, overflow="ellipsis")
    table.add_column("call", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("in / out", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    table.add_column("at", justify="right", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column(f"0 – {fmt_ms(tree.axis_ms)}", no_wrap=True, min_width=BAR)
    for n in tree.nodes:
        c = n.call
        table.add_row(
            _name(n),
            as_text((n.call_id or "")[:8]),
            as_text(c.model if c and c.model else ""),
            as_text(_tokens(n)),
            as_text(fmt_cost(c.cost_usd) if c else ""),
            as_text(fmt_ms(n.offset_ms)),
            as_text(fmt_ms(n.duration_ms) if n.end else "unfinished"),
            _bar(n),
        )
    return table


def _header(tree: Tree) -> Text:
    t = tree.summary
    title = Text("Trace ", style="bold")
    title.append(printable(t.name or t.trace_id), style="bold")
    title.append(f"  {t.trace_id}", style="dim")
    if t.service:
        title.append(f"  service {printable(t.service)}", style="dim")
    figures = Text(
        f"{fmt_ms(t.duration_ms)} · {t.spans} spans · {t.calls} calls · {t.input_tokens} in /"
        f" {t.output_tokens} out tokens · {fmt_cost(t.cost_usd)} · "
    )
    figures.append(
        f"{t.errors} failed call{'' if t.errors == 1 else 's'},"
        f" {t.failed_spans} failed span{'' if t.failed_spans == 1 else 's'}",
        style="red" if t.errors or t.failed_spans else "",
    )
    return Text("\n").join([title, figures])


@cli.command()
@click.argument("trace_id")
@click.option(
    "-n",
    "--limit",
    default=traces.MAX_NODES,
    show_default=True,
    type=click.IntRange(1, MAX_COUNT),
    help="How many spans and calls to print, in tree order.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the tree as JSON: the trace page's, with each span's text."
)
@pass_ctx
def trace(ctx: Ctx, trace_id: str, limit: int, as_json: bool) -> None:
    """One trace as a tree: each span and model call indented under its parent, with when it
    starts, how long it takes and a bar on the trace's time axis; each call with its model,
    tokens and cost; failures marked. A span whose parent never arrived is shown at the top.

    \b
    Examples:
      llmlog trace 4bf92f3577b34da6a3ce929d0e0e4736
      llmlog trace 4bf92f35                # the start of the id is enough
      llmlog trace 4bf92f35 --json | jq '.nodes[] | select(.call) | .call.cost_usd'
    """
    try:
        tree = traces.find(ctx.store, trace_id, limit)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    if tree is None:
        raise click.ClickException(
            f"no trace with id {printable(trace_id)!r} (`llmlog show CALL` says a call's trace; the"
            " start of an id is taken for traces with spans)"
        )
    if as_json:
        click.echo(json.dumps(traces.tree_json(tree, text=True), ensure_ascii=False, indent=2))
        return
    console.print(_header(tree))
    console.print(tree_table(tree))
    if tree.truncated:
        more = tree.total - len(tree.nodes)
        console.print(as_text(f"… {more} more spans and calls: --limit {tree.total} prints them all", "dim"))
    if tree.calls_capped:
        console.print(as_text(f"only its latest {tree.calls_read} calls are in the tree", "dim"))
    if tree.orphans:
        console.print(as_text(f"{tree.orphans} at the top name a parent span that never arrived", "dim"))
