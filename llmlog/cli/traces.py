"""`llmlog traces`: the recent traces, filtered, with their figures; `llmlog trace`: one trace
as a tree in the terminal, each span and call with its offset, its duration and a bar on the
trace's time axis (the tree is `llmlog.analysis.traces`'s, as the trace page draws it).

Span names, status messages and error types are logged text: printed through rich `Text`
(never as markup, never terminal control).
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import JustifyMethod
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
    err_console,
    fitted,
    fmt_cost,
    fmt_ms,
    fmt_time,
    or_dash,
    pass_ctx,
    printable,
)
from llmlog.core.filters import BadFilter, TraceFilter, parse_trace_filter
from llmlog.core.record import TraceSummary
from llmlog.pipeline.intake import hash_user_id

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
    title.append(f"  {printable(t.trace_id)}", style="dim")
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
            f"no trace with id {printable(trace_id)!r} (`llmlog traces` lists them; the start of an"
            " id is taken for traces with spans)"
        )
    if as_json:
        click.echo(json.dumps(traces.tree_json(tree, text=True), ensure_ascii=False, indent=2))
        return
    console.print(_header(tree))
    console.print(tree_table(tree))
    if tree.truncated:
        more = tree.total - len(tree.nodes)
        console.print(as_text(f"… {more} more spans and calls: --limit {tree.total} prints them all", "dim"))
    if tree.gone:
        console.print(as_text("its spans and calls are no longer kept (retention): only its figures", "dim"))
    if tree.calls_capped:
        console.print(as_text(f"only its latest {tree.calls_read} calls are in the tree", "dim"))
    if tree.orphans:
        console.print(as_text(f"{tree.orphans} at the top name a parent span that never arrived", "dim"))


# ---------------------------------------------------------------- the list

# The list's columns, in order; `_DROP` says which give way first on a narrow terminal. The
# id (what `trace` takes) is never dropped.
_COLUMNS: list[tuple[str, JustifyMethod]] = [
    ("id", "left"),
    ("started (UTC)", "left"),
    ("name", "left"),
    ("duration", "right"),
    ("spans", "right"),
    ("calls", "right"),
    ("in / out", "right"),
    ("cost", "right"),
    ("errors", "left"),
]
_DROP = ["spans", "in / out", "started (UTC)", "calls", "cost", "name", "duration", "errors"]


def _row(t: TraceSummary) -> dict[str, Text]:
    failed = ", ".join(
        part
        for n, what in ((t.errors, "call"), (t.failed_spans, "span"))
        if n
        for part in [f"{n} failed {what}{'' if n == 1 else 's'}"]
    )
    return {
        "id": as_text(t.trace_id),
        "started (UTC)": as_text(fmt_time(t.started)),
        "name": as_text(t.name or "-"),
        "duration": as_text(fmt_ms(t.duration_ms)),
        "spans": as_text(str(t.spans)),
        "calls": as_text(str(t.calls)),
        "in / out": as_text(f"{t.input_tokens} / {t.output_tokens}"),
        "cost": as_text(fmt_cost(t.cost_usd)),
        "errors": as_text(failed, style="red"),
    }


def traces_table(found: list[TraceSummary], width: int | None = None) -> Table:
    """The traces as a table that fits `width`: the least useful columns are left out until
    the rest fit whole (as `llmlog calls` does)."""
    rows = [_row(t) for t in found]
    natural, shown = fitted(rows, [name for name, _ in _COLUMNS], _DROP, width)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in _COLUMNS:
        if name in shown:
            # The id never shrinks: a cut id cannot be pasted into `trace`.
            least = natural[name] if name == "id" else None
            table.add_column(name, justify=justify, no_wrap=True, min_width=least)
    for r in rows:
        table.add_row(*(r[n] for n in shown))
    return table


def trace_filter_of(ctx: Ctx, **kw: Any) -> TraceFilter:
    """The filter on traces the options ask for, read by the traces page's parser. A user id
    is hashed first where a secret is set (it is stored hashed)."""
    user = kw.get("user")
    if user is not None and ctx.settings.user_id_secret:
        user = hash_user_id(user, ctx.settings.user_id_secret)
    params = {
        "name": kw.get("name"),
        "feature": kw.get("feature"),
        "user": user,
        "session": kw.get("session"),
        "status": "error" if kw.get("errors") else None,
        "min_ms": kw.get("min_ms"),
        "min_cost": kw.get("min_cost"),
        "since": kw.get("since"),
        "until": kw.get("until"),
    }
    try:
        return parse_trace_filter(params)
    except BadFilter as exc:
        # The parser names the query string's parameter (min_ms: …): said as the option.
        name, _, why = str(exc).partition(": ")
        if name in params and why:
            raise click.BadParameter(why, param_hint=f"'--{name.replace('_', '-')}'") from None
        raise click.BadParameter(str(exc)) from None


@cli.command(name="traces")
@click.option("--name", help="Only traces whose root span has this name.")
@click.option("--feature", help="Only traces of this feature (their calls').")
@click.option("--user", help="Only this user's traces (hashed first if a secret is set).")
@click.option("--session", help="Only traces of this session.")
@click.option("--errors", is_flag=True, help="Only traces with a failed call or span.")
@click.option("--min-ms", metavar="MS", help="Only traces that took at least this long (ms).")
@click.option("--min-cost", metavar="USD", help="Only traces that cost at least this much.")
@click.option("--since", help="Started from this time: 1h, 30m, 7d or ISO-8601.")
@click.option("--until", help="Started before this time: 1h, 30m, 7d or ISO-8601.")
@click.option(
    "-n", "--limit", default=50, show_default=True, type=click.IntRange(1, MAX_COUNT), help="How many traces."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def traces_command(ctx: Ctx, limit: int, as_json: bool, **filters: Any) -> None:
    """The most recent traces, newest started first, each with its duration, spans, calls,
    tokens, cost and failures; `llmlog trace ID` draws one.

    \b
    Examples:
      llmlog traces
      llmlog traces --errors --since 1h
      llmlog traces --name "agent run" --min-ms 2000 --min-cost 0.05 --json
    """
    found = ctx.store.list_traces(trace_filter_of(ctx, **filters), limit)
    if as_json:
        click.echo(json.dumps([traces.summary_json(t) for t in found], ensure_ascii=False, indent=2))
    elif not found:
        err_console.print("No traces match.")
    else:
        console.print(traces_table(found, console.width))
