"""The `llmlog` command: read, query, import, export and reprice the calls a store holds.

Everything logged is untrusted text: it is printed through rich `Text` objects (never as
markup) and queried with parameters, so a prompt containing markup or SQL stays text.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from llmlog.cli.core import DB_HELP, MAX_COUNT, MAX_DAYS, READER_DB_HELP, CliError, Main, embedded_path
from llmlog.core.config import Settings
from llmlog.core.filters import BadFilter, parse_filter
from llmlog.core.record import Call, RecordError
from llmlog.pipeline.intake import Intake, hash_user_id
from llmlog.pipeline.pricing import Pricer
from llmlog.providers.conversation import Part, Turn, conversation, response_turns
from llmlog.store import CallFilter, Store, open_store, parse_when, redact_url, sqlite_path

# Piped output is not cut to 80 columns: it is usually read by grep or a wider pager.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 220)
# Messages are not hard-wrapped: they hold URLs and ids people copy.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# Control characters in logged text (an ESC starting a terminal sequence, say) are shown
# escaped, never sent to the reader's terminal; tab and newline stay as they are.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _clean(value: object) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _text(value: object, style: str = "") -> Text:
    """Logged content as plain text: never markup, never terminal control."""
    return Text(_clean(value), style=style)


def _progress(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )


class Ctx:
    def __init__(self, db: str | None, reader_db: str | None = None) -> None:
        try:
            self.settings = Settings(db=db) if db else Settings()
        except (ValueError, OSError) as exc:  # a bad key, a key file that cannot be read
            raise CliError(str(exc), exit_code=2) from None
        if reader_db:
            self.settings.reader_db = reader_db
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            command = click.get_current_context(silent=True)
            # A reading command never makes a store: a mistyped --db is said, not an empty store.
            create = bool(command and getattr(command.command, "creates_store", False))
            self._store = _open(self.settings.db, self.settings.reader_db, create=create)
            # Regulated mode: what is sealed opens with the keys set here, each reading audited.
            self._store.keyring = self.settings.keyring
            name = " ".join(["llmlog", *(command.command_path.split()[1:] if command else [])])
            self._store.reader = f"{getpass.getuser()} ({name})"
        return self._store


def _open(url: str, reader_url: str | None = None, *, create: bool = True) -> Store:
    """Open the store at `url`; with `create` False, one that does not exist yet is an error
    (an embedded store's file is not made; a server's database is never made by us)."""
    path = embedded_path(url)
    # An empty file is no store either (`touch calls.db`, a failed copy): a reading command
    # must not write a schema into it.
    if not create and path is not None and (not Path(path).exists() or _empty_file(path)):
        raise CliError(
            f"no store at {os.path.abspath(path)} ("
            + ("an empty file" if Path(path).exists() else "nothing recorded there yet")
            + ": check --db or LLMLOG_DB; `llmlog demo` or `llmlog import` make one)"
        )
    try:
        why = None if create else _server_store_missing(url)
        if why is None:
            return open_store(url, reader_url)
    except ValueError as exc:  # a URL of no engine we know
        raise CliError(str(exc), exit_code=2) from None
    except Exception as exc:  # a server that is down, a database that does not exist, a file we may not write
        raise CliError(f"cannot open store {redact_url(url)}: {exc}") from None
    raise CliError(f"no store at {redact_url(url)} ({why}: check --db or LLMLOG_DB)")


def _server_store_missing(url: str) -> str | None:
    """Why a PostgreSQL database holds no store, asked before opening it: opening one makes
    its tables, which a reading command must not."""
    if url.split("://", 1)[0] not in ("postgresql", "postgres"):
        return None
    from llmlog.store.postgres import missing

    return missing(url)


def _empty_file(path: str) -> bool:
    try:
        return Path(path).is_file() and Path(path).stat().st_size == 0
    except OSError:  # not ours to say here: opening it says why
        return False


pass_ctx = click.make_pass_decorator(Ctx)


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _filter(ctx: Ctx, **kw: Any) -> CallFilter:
    """The filter the options ask for, read by the web UI's parser (`llmlog.core.filters`): the
    same names select the same calls. A user id is hashed first where a secret is set (it is
    stored hashed)."""
    user = kw.get("user")
    if user is not None and ctx.settings.user_id_secret:
        user = hash_user_id(user, ctx.settings.user_id_secret)  # stored hashed: compare hashed
    errors = kw.get("errors")
    params = {
        **{name: kw.get(name) for name in ("feature", "model", "provider", "session", "version", "tag")},
        "user": user,
        "meta": list(kw.get("meta") or ()),
        "q": kw.get("search"),
        "status": None if errors is None else "error" if errors else "ok",
        "since": kw.get("since"),
        "until": kw.get("until"),
    }
    try:
        return parse_filter(params)
    except BadFilter as exc:
        raise click.BadParameter(str(exc)) from None


def filter_options(fn: Any) -> Any:
    for opt in reversed(
        [
            click.option("--feature", help="Only calls from this feature."),
            click.option("--model", help="Only calls answered by this model."),
            click.option("--provider", help="Only calls to this provider (anthropic, openai, …)."),
            click.option("--user", help="Only this user's calls (hashed first if a secret is set)."),
            click.option("--session", help="Only calls of this session."),
            click.option("--version", help="Only calls with this prompt template version."),
            click.option("--tag", help="Only calls carrying this tag."),
            click.option(
                "--meta",
                multiple=True,
                metavar="KEY=VALUE",
                help="Only calls whose metadata holds this value (repeatable; a dotted key reaches"
                " nested values: llmlog.retry=1).",
            ),
            click.option(
                "--search",
                metavar="TEXT",
                help="Only calls with this text in the system prompt, a message, the response,"
                " the tool calls or the error (case-insensitive).",
            ),
            click.option("--since", help="From this time: 1h, 30m, 7d or ISO-8601."),
            click.option("--until", help="Before this time: 1h, 30m, 7d or ISO-8601."),
            click.option("--errors/--successes", default=None, help="Only failed / only successful calls."),
        ]
    ):
        fn = opt(fn)
    return fn


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="LLMLOG_DB", metavar="PATH|URL", help=DB_HELP)
@click.option("--reader-db", envvar="LLMLOG_READER_DB", metavar="URL", help=READER_DB_HELP)
@click.version_option(package_name="llmlog")
@click.pass_context
def cli(click_ctx: click.Context, db: str | None, reader_db: str | None) -> None:
    """llmlog: the flight recorder for LLM calls.

    \b
    Examples:
      llmlog demo                 # record a few thousand calls through the real SDKs
      llmlog calls --errors       # the latest failures
      llmlog show 3f2a            # one call, whole (an id prefix is enough)
      llmlog query "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model"
      llmlog --db postgresql://llmlog@db.internal/llmlog calls -n 20
      llmlog copy --from calls.db --to postgresql://llmlog@db.internal/llmlog
    """
    click_ctx.obj = Ctx(db, reader_db)
    click_ctx.call_on_close(lambda: click_ctx.obj._store and click_ctx.obj._store.close())


# ---------------------------------------------------------------- formatting


def _fmt_cost(value: float | Decimal | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms"


def _or_dash(value: object) -> str:
    """A figure or name a call may lack (a failed call has no tokens): "-", never "None"."""
    return "-" if value is None else str(value)


def _fmt_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    status = f" {error['status']}" if error.get("status") else ""
    return f"{error.get('type', 'error')}{status}"


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


def _call_cells(c: Call) -> dict[str, Text]:
    return {
        "id": _text(c.id[:8]),
        "time (UTC)": _text(_fmt_time(c.timestamp)),
        "feature": _text(c.feature or "-"),
        "model": _text(c.model or "-"),
        "user": _text((c.user_id or "-")[:16]),
        "in": _text("-" if c.input_tokens is None else str(c.input_tokens)),
        "out": _text("-" if c.output_tokens is None else str(c.output_tokens)),
        "cost": _text(_fmt_cost(c.cost_usd)),
        "latency": _text(_fmt_ms(c.latency_ms)),
        "error": _text(_error_text(c.error), style="red"),
    }


def _calls_table(calls: list[Call], width: int | None = None) -> Table:
    """The calls as a table that fits `width` (the terminal's): the least useful columns are
    left out until the rest fit whole, rather than every column cut to `…`."""
    rows = [_call_cells(c) for c in calls]
    natural = {name: max([len(name), *(r[name].cell_len for r in rows)]) for name, _ in _CALLS_COLUMNS}
    natural["error"] = min(natural["error"], _ERROR_MIN)
    shown = [name for name, _ in _CALLS_COLUMNS]
    if width is not None:
        for name in _CALLS_DROP:
            if sum(natural[n] for n in shown) + 2 * (len(shown) - 1) <= width:
                break
            shown.remove(name)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in _CALLS_COLUMNS:
        if name in shown:
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


def _emit_calls(calls: list[Call], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in calls], ensure_ascii=False, indent=2))
    elif not calls:
        err_console.print("No calls match.")
    else:
        console.print(_calls_table(calls, console.width))


# ---------------------------------------------------------------- commands


@cli.command()
@filter_options
@click.option(
    "-n", "--limit", default=100, show_default=True, type=click.IntRange(1, MAX_COUNT), help="How many calls."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def calls(ctx: Ctx, limit: int, as_json: bool, **filters: Any) -> None:
    """The most recent calls, newest first.

    \b
    Examples:
      llmlog calls
      llmlog calls --feature support-bot --since 1h
      llmlog calls --errors --model claude-sonnet-4-5 --json
    """
    # The table shows the summary columns only: it reads no conversation (JSON is whole).
    _emit_calls(ctx.store.recent(_filter(ctx, **filters), limit, brief=not as_json), as_json)


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
    f = _filter(ctx, since=since, feature=feature, model=model)
    _emit_calls(ctx.store.sample(f, n, brief=not as_json), as_json)


_PART_LABEL = {"tool_call": ("→ tool call ", "cyan"), "tool_result": ("← tool result ", "magenta")}


def _part_text(part: Part) -> Text:
    if part.kind == "tool_call":
        label, style = _PART_LABEL["tool_call"]
        return Text.assemble((label, style), (_clean(part.name), f"bold {style}"), _clean(f" {part.text}"))
    if part.kind == "tool_result":
        label, style = _PART_LABEL["tool_result"]
        return Text.assemble((label, style), _clean(part.text))
    return _text(part.text, style="dim" if part.kind in ("image", "note") else "")


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
            f"in {_or_dash(call.input_tokens)} (cache read {_or_dash(call.cache_read_tokens)}, "
            f"cache write {_or_dash(call.cache_creation_tokens)}), out {_or_dash(call.output_tokens)}",
        ),
        ("latency", f"first token {_fmt_ms(call.first_token_ms)}, total {_fmt_ms(call.latency_ms)}"),
        ("cost", f"{_fmt_cost(call.cost_usd)}  ({call.rate_card or 'not priced'})"),
        ("trace / parent", f"{call.trace_id or '-'} / {call.parent_id or '-'}"),
        ("tags", ", ".join(call.tags or []) or "-"),
    ]:
        summary.add_row(_text(label), _text(str(value)))
    out: list[Any] = [summary]
    if call.error:
        out.append(
            Panel(
                _text(json.dumps(call.error, ensure_ascii=False, indent=2)), title="error", border_style="red"
            )
        )
    if call.system_prompt:
        out.append(Panel(_text(call.system_prompt), title="system prompt", border_style="blue"))
    convo = Table.grid(padding=(0, 1))
    convo.add_column(style="bold", no_wrap=True)
    convo.add_column(overflow="fold")
    for turn in conversation(call):
        role, text = _turn_text(turn)
        convo.add_row(_text(role), text)
    out.append(Panel(convo, title=f"messages ({len(call.messages or [])})"))
    if call.tools:
        names = [
            _or_dash(t.get("name") or (t.get("function") or {}).get("name") or t.get("type"))
            for t in call.tools
            if isinstance(t, dict)
        ]
        out.append(Panel(_text(", ".join(names)), title=f"tools ({len(call.tools)})"))
    resp = Table.grid(padding=(0, 1))
    resp.add_column(style="bold", no_wrap=True)
    resp.add_column(overflow="fold")
    for turn in response_turns(call):
        role, text = _turn_text(turn)
        resp.add_row(_text(role), text)
    out.append(Panel(resp, title="response", border_style="green"))
    if call.tool_calls:
        tc_text = Text("\n").join(
            _text(
                f"{_or_dash(tc.get('name'))}({json.dumps(tc.get('input'), ensure_ascii=False)})"
                f"  id={_or_dash(tc.get('id'))}"
            )
            if isinstance(tc, dict)
            else _text(tc)  # sealed, read without its key
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
        out.append(Panel(_text(json.dumps(params, ensure_ascii=False, indent=2)), title="params"))
    if call.metadata:
        out.append(Panel(_text(json.dumps(call.metadata, ensure_ascii=False, indent=2)), title="metadata"))
    console.print(Group(*out))


def _cost_panel(ctx: Ctx, call: Call) -> Panel:
    breakdown = Pricer(ctx.settings.prices).breakdown(call)
    if breakdown is None:
        return Panel(_text("not priced (unknown model or no usage reported)"), title="cost")
    table = Table(box=None, header_style="bold")
    for col in ("", "tokens", "USD / MTok", "cost"):
        table.add_column(col, justify="right" if col else "left")
    for line in breakdown.lines:
        rate = "-" if line.rate_mtok is None else f"{line.rate_mtok.normalize():f}"
        table.add_row(line.label, f"{line.tokens:,}", rate, _fmt_cost(line.cost))
    table.add_row(_text("total", style="bold"), "", "", _text(_fmt_cost(breakdown.total), style="bold"))
    title = f"cost ({breakdown.model}, {breakdown.rate_card})"
    if call.rate_card and call.rate_card != breakdown.rate_card:
        title += f"; stored figure from {call.rate_card}: llmlog reprice updates it"
    return Panel(table, title=_text(title))


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
    f = _filter(ctx, **filters)
    if output is None:
        for call in ctx.store.iter_calls(f):
            sys.stdout.write(call.to_json() + "\n")
        return
    n = 0
    with open(output, "w", encoding="utf-8") as out, _progress() as progress:
        task = progress.add_task("exporting", total=ctx.store.count(f))
        for call in ctx.store.iter_calls(f):
            out.write(call.to_json() + "\n")
            n += 1
            progress.advance(task)
    err_console.print(f"Exported {n} call(s) to {output}")


@cli.command()
@click.option("--since", help="Only calls from this time: 1h, 30m, 7d or ISO-8601.")
@click.option("--prices", type=click.Path(exists=True, dir_okay=False), help="Price override file (TOML).")
@pass_ctx
def reprice(ctx: Ctx, since: str | None, prices: str | None) -> None:
    """Recompute cost_usd with the current rate card (and overrides).

    \b
    Examples:
      llmlog reprice
      llmlog reprice --since 30d --prices prices.toml
    """
    pricer = Pricer(prices or ctx.settings.prices)
    f = CallFilter(since=_when(since))
    changed = 0
    with _progress() as progress:
        task = progress.add_task("repricing", total=ctx.store.count(f))
        updates: list[tuple[str, float | None, str | None]] = []
        for call in ctx.store.iter_calls(f):
            old = (call.cost_usd, call.rate_card)
            pricer.price(call)
            if (call.cost_usd, call.rate_card) != old:
                updates.append((call.id, call.cost_usd, call.rate_card))
            progress.advance(task)
        changed = ctx.store.update_costs(updates)
    err_console.print(f"Repriced {changed} call(s) with {pricer.rate_card}")


@cli.command(creates_store=True)
@pass_ctx
def migrate(ctx: Ctx) -> None:
    """Bring the store's schema up to date (opening a store does this too).

    \b
    Examples:
      llmlog migrate
      llmlog --db postgresql://llmlog@db.internal/llmlog migrate
    """
    store = ctx.store
    where = redact_url(store.url)
    if store.schema_found == store.schema_version:
        err_console.print(f"{where}: schema up to date (version {store.schema_version})")
    else:
        found, now = store.schema_found, store.schema_version
        err_console.print(f"{where}: schema migrated from version {found} to {now}")
    missing = store.reader_setup()
    if missing:
        err_console.print(f"note: {missing}")


@cli.command()
@click.option("--from", "source", required=True, metavar="PATH|URL", help="Store to copy calls from.")
@click.option("--to", "target", required=True, metavar="PATH|URL", help="Store to copy them into.")
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1, MAX_COUNT),
    help="Calls per transaction.",
)
@pass_ctx
def copy(ctx: Ctx, source: str, target: str, batch: int) -> None:
    """Copy every call from one store into another, e.g. SQLite into PostgreSQL and back.

    Calls already in the target are skipped, so an interrupted copy is resumed by running it
    again, and copying twice stores each call once. Costs and user ids are copied as stored.
    Text goes into the target as into any store: redacted with LLMLOG_REDACT's rules, and
    with LLMLOG_KEY set, what is stored clear is sealed (what is sealed is copied sealed).

    \b
    Examples:
      llmlog copy --from ~/.local/share/llmlog/llmlog.db --to postgresql://llmlog@db.internal/llmlog
      llmlog copy --from postgresql://llmlog@db.internal/llmlog --to backup.db
    """
    if source == target:
        raise click.UsageError("--from and --to name the same store")
    path = sqlite_path(source)
    if path is not None and path != ":memory:" and not Path(path).exists():
        raise CliError(f"--from: no such file {path!r}", exit_code=2)
    copied = skipped = 0
    refused: list[str] = []  # "id: reason" of each call the target cannot keep
    # Read as stored (sealed text stays sealed, unread); no pricing: costs are copied as stored.
    # A figure the source store holds that cannot be stored (a NaN cost, kept before figures
    # were checked) is dropped with a note, as the stores' own repair does: the call is kept.
    intake = Intake(ctx.settings, stored=True, repair=True)
    with _open(source, create=False) as src, _open(target) as dst, _progress() as progress:
        task = progress.add_task("copying", total=src.count(CallFilter()))

        def flush(page: list[Call]) -> None:
            nonlocal copied, skipped
            have = dst.existing_ids([c.id for c in page])
            new: list[Call] = []
            for c in page:
                if c.id in have:
                    skipped += 1
                    continue
                try:
                    new.append(intake.call(c))
                except RecordError as exc:  # nested too deeply to keep, say: this call only
                    refused.append(f"{c.id}: {exc}")
            try:
                copied += dst.insert(new)
            except dst.data_errors:
                # One call the target cannot hold must not stop the copy: the rest one by one.
                for c in new:
                    try:
                        copied += dst.insert([c])
                    except dst.data_errors as exc:
                        refused.append(f"{c.id}: {exc}")
            progress.advance(task, len(page))

        page: list[Call] = []
        for call in src.iter_calls(CallFilter(), batch=batch):
            page.append(call)
            if len(page) >= batch:
                flush(page)
                page = []
        flush(page)
    err_console.print(
        f"Copied {copied} call(s) from {redact_url(source)} to {redact_url(target)}"
        + (f"; {skipped} already there" if skipped else "")
        + (f"; {len(refused)} could not be kept" if refused else ""),
        markup=False,
    )
    for line in refused[:20]:
        err_console.print(f"  {line}", markup=False)
    if len(refused) > 20:
        err_console.print(f"  … and {len(refused) - 20} more", markup=False)
    if refused:
        raise SystemExit(1)


@cli.command(creates_store=True)
@click.option(
    "--calls",
    "n_calls",
    default=2000,
    show_default=True,
    type=click.IntRange(1, MAX_COUNT),
    help="About how many calls to make.",
)
@click.option("--seed", default=7, show_default=True, help="Seed for a reproducible workload.")
@click.option(
    "--history",
    "history_days",
    default=30,
    show_default=True,
    type=click.IntRange(0, MAX_DAYS),
    help="Also copy a third of the sessions into each of this many days before (0: none).",
)
@pass_ctx
def demo(ctx: Ctx, n_calls: int, seed: int, history_days: int) -> None:
    """Fill the store with realistic calls made through the real SDKs against a local fake provider.

    Several features, multi-turn sessions, tool use, streaming, a few errors and several prompt
    versions, recorded by `llmlog.wrap` exactly as in an application. Copies of them over the
    30 days before (tagged 'history') give the dashboard a month to show.

    \b
    Examples:
      llmlog demo
      llmlog --db /tmp/demo.db demo --calls 500 --history 0
    """
    from llmlog.demo.traffic import run_demo

    _read_prices(ctx.settings)
    run_demo(ctx.settings, n_calls=n_calls, seed=seed, console=err_console, history_days=history_days)


def _read_prices(settings: Settings) -> None:
    """Read the price file (LLMLOG_PRICES) before recording calls: the writer reads it at the
    first call to price, and a bad one there loses every call, each with a traceback."""
    Pricer(settings.prices)


from llmlog.cli import admin, importing, investigate, query, serve  # noqa: E402, F401
