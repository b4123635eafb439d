"""`llmlog calls`, `sample`, `show` and `export`: the calls a store holds, read.

Everything logged is untrusted text: it is printed through rich `Text` objects (never as
markup), so a prompt containing markup stays text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llmlog.cli.core import (
    MAX_COUNT,
    Ctx,
    as_text,
    cli,
    console,
    err_console,
    error_text,
    filter_of,
    filter_options,
    fitted,
    fmt_cost,
    fmt_ms,
    fmt_time,
    or_dash,
    pass_ctx,
    printable,
    progress_bar,
)
from llmlog.core.record import Call
from llmlog.pipeline.pricing import Pricer
from llmlog.providers.conversation import Part, Turn, conversation, response_turns, said_and_answered

# The calls table's columns, in order; `_CALLS_DROP` says which give way first on a narrow
# terminal. The id (what `show` takes) and the error are what the table is read for: never dropped.
_CALLS_COLUMNS: list[tuple[str, str]] = [
    ("id", "left"),
    ("time (UTC)", "left"),
    ("feature", "left"),
    ("model", "left"),
    ("user", "left"),
    ("in", "right"),
    ("out", "right"),
    ("cost", "right"),
    ("latency", "right"),
    ("error", "left"),
]
_CALLS_DROP = ["user", "latency", "in", "out", "cost", "model", "time (UTC)", "feature"]
_ERROR_MIN = 30  # room kept for the error before other columns are cut; a longer one wraps
# `calls --preview`: what was said and answered, after the other columns, each cut to one
# line of the room left (at least _PREVIEW_MIN: the other columns give way first).
_PREVIEW_COLUMNS: list[tuple[str, str]] = [("said", "left"), ("answered", "left")]
_PREVIEW, _PREVIEW_MIN = 200, 24


_PART_LABEL = {"tool_call": ("→ tool call ", "cyan"), "tool_result": ("← tool result ", "magenta")}


def _call_cells(c: Call) -> dict[str, Text]:
    return {
        "id": as_text(c.id[:8]),
        "time (UTC)": as_text(fmt_time(c.timestamp)),
        "feature": as_text(c.feature or "-"),
        "model": as_text(c.model or "-"),
        "user": as_text((c.user_id or "-")[:16]),
        "in": as_text("-" if c.input_tokens is None else str(c.input_tokens)),
        "out": as_text("-" if c.output_tokens is None else str(c.output_tokens)),
        "cost": as_text(fmt_cost(c.cost_usd)),
        "latency": as_text(fmt_ms(c.latency_ms)),
        "error": as_text(error_text(c.error), style="red"),
    }


def _preview_cells(c: Call) -> dict[str, Text]:
    said, answered = said_and_answered(c, _PREVIEW)
    return {"said": as_text(said, style="dim"), "answered": as_text(answered)}


def _calls_table(calls: list[Call], width: int | None = None, preview: bool = False) -> Table:
    """The calls as a table that fits `width` (the terminal's): the least useful columns are
    left out until the rest fit whole, rather than every column cut to `…`. With `preview`,
    what was said and answered last, each cut to one line of the room left (at least
    `_PREVIEW_MIN`): the other columns give way to them, and they to the id and the error."""
    rows = [{**_call_cells(c), **(_preview_cells(c) if preview else {})} for c in calls]
    columns = _CALLS_COLUMNS + (_PREVIEW_COLUMNS if preview else [])
    caps = {"error": _ERROR_MIN}
    drop = _CALLS_DROP
    if preview:
        # Given way to last, but before the id and the error, which never are.
        caps |= dict.fromkeys(("said", "answered"), _PREVIEW_MIN)
        drop = [*_CALLS_DROP, "answered", "said"]
    natural, shown = fitted(rows, [name for name, _ in columns], drop, width, caps)
    if width is not None:
        # The room the other columns leave (each is two apart), shared, as far as the text goes.
        left = width - sum(natural[n] for n in shown) - 2 * (len(shown) - 1)
        previews = [name for name, _ in _PREVIEW_COLUMNS if name in shown]
        for line in previews:
            longest = max(r[line].cell_len for r in rows)
            natural[line] = max(natural[line], min(longest, natural[line] + left // len(previews)))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in columns:
        if name not in shown:
            continue
        if name in ("said", "answered"):  # one line, cut to its room
            w = natural[name]
            table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=w, max_width=w)
            continue
        # The id never shrinks (a cut id cannot be pasted into `show`); the error wraps.
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=name != "error",
            min_width=natural[name] if name != "error" else min(natural[name], 12),
        )
    for r in rows:
        table.add_row(*(r[n] for n in shown))
    return table


def _emit_calls(calls: list[Call], as_json: bool, preview: bool = False) -> None:
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in calls], ensure_ascii=False, indent=2))
    elif not calls:
        err_console.print("No calls match.")
    else:
        console.print(_calls_table(calls, console.width, preview))


@cli.command()
@filter_options
@click.option(
    "-n", "--limit", default=100, show_default=True, type=click.IntRange(1, MAX_COUNT), help="How many calls."
)
@click.option(
    "-p",
    "--preview",
    is_flag=True,
    help="Also what the caller said last and what the model answered, cut to a line each.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def calls(ctx: Ctx, limit: int, preview: bool, as_json: bool, **filters: Any) -> None:
    """The most recent calls, newest first.

    \b
    Examples:
      llmlog calls
      llmlog calls --feature support-bot --since 1h --preview
      llmlog calls --errors --model claude-sonnet-4-5 --json
    """
    # The table reads each call brief: its last message and the response, for the preview,
    # and no more of the conversation (JSON is whole).
    _emit_calls(ctx.store.recent(filter_of(ctx, **filters), limit, brief=not as_json), as_json, preview)


@cli.command()
@click.option("-n", default=20, show_default=True, type=click.IntRange(1, MAX_COUNT), help="How many calls.")
@click.option(
    "--since", default="1h", show_default=True, help="Window to sample from: 1h, 30m, 7d or ISO-8601."
)
@click.option("--feature", help="Only calls from this feature.")
@click.option("--model", help="Only calls answered by this model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def sample(ctx: Ctx, n: int, since: str, feature: str | None, model: str | None, as_json: bool) -> None:
    """Random calls from a recent window, for spot-checking.

    \b
    Examples:
      llmlog sample
      llmlog sample -n 5 --since 24h --feature summarize
    """
    f = filter_of(ctx, since=since, feature=feature, model=model)
    _emit_calls(ctx.store.sample(f, n, brief=not as_json), as_json)


def _part_text(part: Part) -> Text:
    if part.kind == "tool_call":
        label, style = _PART_LABEL["tool_call"]
        return Text.assemble(
            (label, style), (printable(part.name), f"bold {style}"), printable(f" {part.text}")
        )
    if part.kind == "tool_result":
        label, style = _PART_LABEL["tool_result"]
        return Text.assemble((label, style), printable(part.text))
    return as_text(part.text, style="dim" if part.kind in ("image", "note") else "")


def _turn_text(turn: Turn) -> tuple[str, Text]:
    return turn.role, Text("\n").join(_part_text(p) for p in turn.parts)


@cli.command()
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@pass_ctx
def show(ctx: Ctx, call_id: str, as_json: bool) -> None:
    """One call, whole: prompt, conversation, tools, response, cost breakdown, timing.

    \b
    Examples:
      llmlog show 3f2a9c1e            # an id prefix is enough
      llmlog show 3f2a9c1e --json | jq .response
    """
    try:
        call = ctx.store.get(call_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    if call is None:
        raise click.ClickException(f"no call with id {call_id!r}")
    if as_json:
        click.echo(json.dumps(call.to_dict(), ensure_ascii=False, indent=2))
        return
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    # Text with no spaces (a long token, Japanese) folds onto more lines: `show` is the whole call.
    summary.add_column(overflow="fold")
    for label, value in [
        ("id", call.id),
        ("time", call.timestamp.isoformat()),
        ("provider / model", f"{call.provider or '-'} / {call.model or '-'}"),
        ("feature", call.feature or "-"),
        ("prompt version", call.prompt_template_version or "-"),
        ("session", call.session_id or "-"),
        ("user", call.user_id or "-"),
        ("stop reason", call.stop_reason or "-"),
        (
            "tokens",
            f"in {or_dash(call.input_tokens)} (cache read {or_dash(call.cache_read_tokens)}, "
            f"cache write {or_dash(call.cache_creation_tokens)}), out {or_dash(call.output_tokens)}",
        ),
        ("latency", f"first token {fmt_ms(call.first_token_ms)}, total {fmt_ms(call.latency_ms)}"),
        ("cost", f"{fmt_cost(call.cost_usd)}  ({call.rate_card or 'not priced'})"),
        ("trace / parent", f"{call.trace_id or '-'} / {call.parent_id or '-'}"),
        ("tags", ", ".join(call.tags or []) or "-"),
    ]:
        summary.add_row(as_text(label), as_text(str(value)))
    out: list[Any] = [summary]
    if call.error:
        out.append(
            Panel(
                as_text(json.dumps(call.error, ensure_ascii=False, indent=2)),
                title="error",
                border_style="red",
            )
        )
    if call.system_prompt:
        out.append(Panel(as_text(call.system_prompt), title="system prompt", border_style="blue"))
    convo = Table.grid(padding=(0, 1))
    convo.add_column(style="bold", no_wrap=True)
    convo.add_column(overflow="fold")
    for turn in conversation(call):
        role, text = _turn_text(turn)
        convo.add_row(as_text(role), text)
    out.append(Panel(convo, title=f"messages ({len(call.messages or [])})"))
    if call.tools:
        names = [
            or_dash(t.get("name") or (t.get("function") or {}).get("name") or t.get("type"))
            for t in call.tools
            if isinstance(t, dict)
        ]
        out.append(Panel(as_text(", ".join(names)), title=f"tools ({len(call.tools)})"))
    resp = Table.grid(padding=(0, 1))
    resp.add_column(style="bold", no_wrap=True)
    resp.add_column(overflow="fold")
    for turn in response_turns(call):
        role, text = _turn_text(turn)
        resp.add_row(as_text(role), text)
    out.append(Panel(resp, title="response", border_style="green"))
    if call.tool_calls:
        tc_text = Text("\n").join(
            as_text(
                f"{or_dash(tc.get('name'))}({json.dumps(tc.get('input'), ensure_ascii=False)})"
                f"  id={or_dash(tc.get('id'))}"
            )
            if isinstance(tc, dict)
            else as_text(tc)  # sealed, read without its key
            for tc in call.tool_calls
        )
        out.append(Panel(tc_text, title="tool calls"))
    out.append(_cost_panel(ctx, call))
    if isinstance(call.params, dict) and call.params:
        params = dict(call.params)
        if isinstance(params.get("system"), list):  # block-form system prompt: its text is shown above
            params["system"] = [
                {**b, "text": f"<system prompt text, {len(str(b.get('text', '')))} chars>"}
                if isinstance(b, dict)
                else b
                for b in params["system"]
            ]
        out.append(Panel(as_text(json.dumps(params, ensure_ascii=False, indent=2)), title="params"))
    if call.metadata:
        out.append(Panel(as_text(json.dumps(call.metadata, ensure_ascii=False, indent=2)), title="metadata"))
    console.print(Group(*out))


def _cost_panel(ctx: Ctx, call: Call) -> Panel:
    breakdown = Pricer(ctx.settings.prices).breakdown(call)
    if breakdown is None:
        return Panel(as_text("not priced (unknown model or no usage reported)"), title="cost")
    table = Table(box=None, header_style="bold")
    for col in ("", "tokens", "USD / MTok", "cost"):
        table.add_column(col, justify="right" if col else "left")
    for line in breakdown.lines:
        rate = "-" if line.rate_mtok is None else f"{line.rate_mtok.normalize():f}"
        table.add_row(line.label, f"{line.tokens:,}", rate, fmt_cost(line.cost))
    table.add_row(as_text("total", style="bold"), "", "", as_text(fmt_cost(breakdown.total), style="bold"))
    title = f"cost ({breakdown.model}, {breakdown.rate_card})"
    if call.rate_card and call.rate_card != breakdown.rate_card:
        title += f"; stored figure from {call.rate_card}: llmlog reprice updates it"
    return Panel(table, title=as_text(title))


@cli.command()
@filter_options
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File to write (default stdout)."
)
@pass_ctx
def export(ctx: Ctx, output: str | None, **filters: Any) -> None:
    """Export calls as JSONL, oldest first, in the record's column names.

    \b
    Examples:
      llmlog export --since 7d -o last-week.jsonl
      llmlog export --feature support-bot | gzip > support.jsonl.gz
    """
    f = filter_of(ctx, **filters)
    if output is None:
        for call in ctx.store.iter_calls(f):
            sys.stdout.write(call.to_json() + "\n")
        return
    n = 0
    with open(output, "w", encoding="utf-8") as out, progress_bar() as progress:
        task = progress.add_task("exporting", total=ctx.store.count(f))
        for call in ctx.store.iter_calls(f):
            out.write(call.to_json() + "\n")
            n += 1
            progress.advance(task)
    err_console.print(f"Exported {n} call(s) to {output}")
