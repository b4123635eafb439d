"""`llmlog report` and `llmlog prompts`: investigations over the stored calls, and the
prompt versions in the app's repository."""

from __future__ import annotations

import difflib
import json
from contextlib import nullcontext
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from llmlog.analysis import drift, reports
from llmlog.analysis.dashboard import Period
from llmlog.cli.core import (
    MAX_COUNT,
    MAX_DAYS,
    Ctx,
    as_text,
    cli,
    console,
    err_console,
    filter_of,
    filter_options,
    fmt_time,
    pass_ctx,
)
from llmlog.core import prompts
from llmlog.core.filters import parse_when
from llmlog.providers.conversation import gist, last_user_turn, response_turns
from llmlog.store import ReadOnlyError, vectors


def _period(days: int) -> Period:
    """The last `days` whole UTC days, through today (--days is a day or more)."""
    return Period.ending(days)


def period_option(default: int) -> Any:
    return click.option(
        "--days",
        default=default,
        show_default=True,
        type=click.IntRange(1, MAX_DAYS),
        help="The period: this many whole UTC days, through today.",
    )


# Reading the kept calls for `report drift --by-day`: a person waits for it, once.
CLI_BUDGET_S = 300.0

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
    """Each prompt, its versions (the current one marked) and the calls stored with each.
    Without a prompts directory: the versions the store's calls carry (NAME@VERSION).

    \b
    Examples:
      llmlog prompts list
      llmlog prompts list --dir app/prompts
    """
    found = prompts.catalog(root)
    calls = {
        str(version): int(n)
        for version, n in ctx.store.internal_query(
            "SELECT prompt_template_version, SUM(calls) FROM daily GROUP BY 1", limit=1_000_000
        ).rows
        if version is not None
    }
    table = Table("prompt", "version", "calls")
    if found:
        for p in found:
            for v in p.versions:
                label = f"{v} (current)" if v == p.current else v
                table.add_row(as_text(p.name), as_text(label), f"{calls.get(f'{p.name}@{v}', 0):,}")
        console.print(table)
        return
    # No files to read: the versions the calls carry are still worth listing (`diff` needs
    # the files). A version with no NAME@ (a hash of an unversioned prompt) names no prompt.
    named: list[tuple[str, str, int]] = []
    for version, n in calls.items():
        name, at, v = version.rpartition("@")
        if at and name:
            named.append((name, v, n))
    named.sort(key=lambda row: (row[0], prompts.natural(row[1])))
    if not named:
        raise click.ClickException(
            f"no prompts in {prompts.directory(root)} (a folder NAME/ with v1.txt, …),"
            " and no call in the store carries a prompt version NAME@VERSION"
        )
    err_console.print(
        f"No prompt files in {prompts.directory(root)}: the prompt versions the stored calls carry"
        " (`prompts diff` reads the files).",
        markup=False,
    )
    for name, v, n in named:
        table.add_row(as_text(name), as_text(v), f"{n:,}")
    console.print(table)


@prompts_group.command(name="diff")
@click.argument("name")
@click.argument("old")
@click.argument("new")
@click.option("--dir", "root", metavar="PATH", help=DIR_HELP)
def prompts_diff(name: str, old: str, new: str, root: str | None) -> None:
    """What changed from one version of a prompt to another, line by line.

    \b
    Examples:
      llmlog prompts diff code-review v1 v2
      llmlog prompts diff support-bot v3 v4 --dir app/prompts
    """
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
        out.append_text(as_text(line if line.endswith("\n") else line + "\n", styles.get(line[:1], "")))
    console.print(out if out else Text(f"{a.version} and {b.version} are the same text."), end="")


@cli.group(name="report", invoke_without_command=True)
@click.pass_context
def report(click_ctx: click.Context) -> None:
    """Reports: the questions the calls answer, over both retention tiers.

    \b
    Examples:
      llmlog report                    # the reports there are
      llmlog report errors --days 7
      llmlog report errors --json | jq '.[] | select(.new)'
    """
    if click_ctx.invoked_subcommand is None:
        for name, what in reports.REPORTS.items():
            console.print(as_text(f"{name:<10} {what}"))


@report.command(name="errors")
@period_option(7)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def report_errors(ctx: Ctx, days: int, as_json: bool) -> None:
    """Errors by type, model and feature: how many, the share of calls, per day, new types
    (none in the four weeks before), and the newest calls that failed that way.

    \b
    Examples:
      llmlog report errors
      llmlog report errors --days 1
      llmlog report errors --json | jq '.[] | select(.new)'
    """
    groups = reports.errors_report(ctx.store, _period(days))
    if as_json:
        click.echo(json.dumps([g.to_json() for g in groups], indent=2))
        return
    if not groups:
        console.print(f"No errors in the last {days} day(s).")
        return
    table = Table("error", "model", "feature", "errors", "rate", "per day", "new", "examples")
    for g in groups:
        table.add_row(
            as_text(g.error_type), as_text(g.model or ""), as_text(g.feature or ""), f"{g.errors:,}",
            f"{g.rate:.1%}", reports.sparkline(g.per_day), "new" if g.new else "",
            as_text(" ".join(e[:8] for e in g.examples)),
        )  # fmt: skip
    console.print(table)


@report.command(name="cost")
@period_option(30)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_ctx
def report_cost(ctx: Ctx, days: int, as_json: bool) -> None:
    """Cost by model, feature and user, and the features sending short, tool-free calls to a
    model costing 3× or more per call what another they use costs (with the savings).

    \b
    Examples:
      llmlog report cost
      llmlog report cost --days 7
      llmlog report cost --json
    """
    r = reports.cost_report(ctx.store, _period(days))
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=2))
        return
    console.print(f"${r.total_usd:,.4f} over {days} day(s)")
    for title, rows in (("model", r.by_model), ("feature", r.by_feature), ("user", r.by_user)):
        table = Table(title, "calls", "cost", title=f"by {title}")
        for s in rows[:10]:
            table.add_row(as_text(s.name or "(none)"), f"{s.calls:,}", f"${s.cost_usd:,.4f}")
        console.print(table)
    if not r.over_routing:
        console.print("No feature sends short, tool-free calls to a pricier model than it needs.")
        return
    table = Table("feature", "model", "instead of", "calls", "avg out", "per call", "cheaper", "saving",
                  title="over-routing")  # fmt: skip
    for o in r.over_routing:
        table.add_row(
            as_text(o.feature or "(none)"), as_text(o.model or ""), as_text(o.cheaper or ""), f"{o.calls:,}",
            f"{o.avg_output_tokens:,.0f}", f"${o.cost_per_call:,.5f}", f"${o.cheaper_cost_per_call:,.5f}",
            f"${o.savings_usd:,.4f}",
        )  # fmt: skip
    console.print(table)


def _figure(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric in reports.RATES:
        return f"{value:.1%}"
    return f"${value:,.5f}" if metric == "cost_usd" else f"{value:,.4g}"


def _change_row(c: reports.Change) -> list[str]:
    effect = (
        "" if c.effect is None else f"{c.effect:+.1%}" if c.metric in reports.RATES else f"{c.effect:+.2f} sd"
    )
    return [
        c.metric, _figure(c.metric, c.before), _figure(c.metric, c.after), effect,
        "" if c.p is None else f"{c.p:.1e}", "changed" if c.flagged else "",
    ]  # fmt: skip


@report.command(name="drift")
@click.option(
    "--days",
    default=None,
    type=click.IntRange(1, MAX_DAYS),
    help="The recent period, in days [7; with --by-day, the days shown: 30].",
)
@click.option(
    "--baseline",
    default=None,
    type=click.IntRange(1, MAX_DAYS),
    help="The days before it to compare with [28].",
)
@click.option(
    "--by-day",
    is_flag=True,
    help="Per feature and UTC day instead: output tokens per call, the refusal and tool-call"
    " rates, and the days each prompt version and model first appeared.",
)
@click.option("--feature", metavar="NAME", help="With --by-day: this feature only.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def report_drift(
    ctx: Ctx, days: int | None, baseline: int | None, by_day: bool, feature: str | None, as_json: bool
) -> None:
    """What changed, per feature and prompt version (and per feature over its versions,
    where a new version shows): output tokens, latency, cost per call, error, tool-call and
    refusal rates, the last days against the ones before, where the change is real
    (p < 0.001) and large (half a standard deviation, or 5 points). With --by-day: each
    feature's figures per day, and what was new on each.

    \b
    Examples:
      llmlog report drift
      llmlog report drift --days 1 --baseline 14
      llmlog report drift --by-day --feature code-review
    """
    if by_day:
        if baseline is not None:
            raise click.UsageError("--baseline compares two periods; --by-day shows each day")
        _drift_by_day(ctx, days or 30, feature, as_json)
        return
    if feature is not None:
        raise click.UsageError("--feature goes with --by-day (the report lists every feature)")
    days, baseline = days or 7, baseline or 28
    changes = reports.drift_report(ctx.store, days, baseline)
    if as_json:
        click.echo(json.dumps([c.to_json() for c in changes], indent=2))
        return
    if not changes:
        console.print(f"Nothing changed in the last {days} day(s) beyond chance.")
        return
    table = Table("feature", "version", "metric", "before", "after", "effect", "p", "", "calls")
    for c in changes:
        version = "(all versions)" if c.version == reports.ALL_VERSIONS else c.version or "(none)"
        table.add_row(
            as_text(c.feature or "(none)"),
            as_text(version),
            *_change_row(c),
            f"{c.n_before:,} → {c.n_after:,}",
        )
    console.print(table)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _drift_by_day(ctx: Ctx, days: int, feature: str | None, as_json: bool) -> None:
    store = ctx.store
    r = drift.drift_by_day(lambda: nullcontext(store), _period(days), budget_s=CLI_BUDGET_S, feature=feature)
    if r.unread:
        err_console.print(
            f"The calls of {len(r.unread)} day(s) were not read within {CLI_BUDGET_S:g} s:"
            " they show no rates.",
            markup=False,
        )
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=2))
        return
    if not r.features:
        console.print(as_text(f"No calls{f' of {feature}' if feature else ''} in the last {days} day(s)."))
        return
    for f in r.features:
        new: dict[str, list[str]] = {}
        for a in f.marks(r.period):
            new.setdefault(a.day, []).append(f"{a.kind} {a.name}")
        title = f"{f.feature or '(none)'}: {f.calls:,} calls"
        table = Table("day", "calls", "output tokens", "refusals", "tool calls", "new", title=as_text(title))
        for d in f.days:
            if d.calls:
                table.add_row(
                    d.day, f"{d.calls:,}", "-" if d.output_tokens is None else f"{d.output_tokens:,.1f}",
                    _rate(d.refusal_rate), _rate(d.tool_call_rate), as_text(", ".join(new.get(d.day, []))),
                )  # fmt: skip
        console.print(table)
    if r.more:
        console.print(f"and {r.more} more feature(s) (--feature NAME shows one)")


@report.command(name="compare")
@click.argument("feature")
@click.argument("old", required=False)
@click.argument("new", required=False)
@click.option(
    "--at", "moment", metavar="TIME", help="Compare before and after this moment (a deploy) instead."
)
@click.option(
    "--days",
    default=None,
    type=click.IntRange(1, MAX_DAYS),
    help="Over the last this many days [28; with --at, 7 each side].",
)
@click.option(
    "--pairs",
    default=3,
    show_default=True,
    type=click.IntRange(0, MAX_COUNT),
    help="Calls from each side to read.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def report_compare(
    ctx: Ctx, feature: str, old: str | None, new: str | None, moment: str | None, days: int | None,
    pairs: int, as_json: bool,
) -> None:  # fmt: skip
    """FEATURE's prompt version OLD against NEW, or before and after a moment: every
    metric side by side with its significance, and pairs of calls from each side to read.

    \b
    Examples:
      llmlog report compare code-review v1 v2        # or code-review@v1 code-review@v2
      llmlog report compare support-bot --at "2026-11-28 14:00"
      llmlog report compare support-bot --at 3d      # three days ago
    """
    # A name the store does not know would compare nothing with nothing, "no change": refuse it,
    # saying which names there are. A version is accepted as stored or by its short name.
    try:
        known = reports.known_versions(ctx.store, timeout_s=30.0)
        reports.known_feature(known, feature)
        if old and new and moment is None:
            old, new = (reports.known_version(known, feature, v) for v in (old, new))
    except (LookupError, ReadOnlyError) as exc:
        raise click.ClickException(str(exc)) from None
    if moment is not None:
        if old or new:
            raise click.UsageError("give two versions, or --at, not both")
        try:
            at = parse_when(moment)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--at") from None
        try:
            r = reports.compare_moment(ctx.store, feature, at, days or 7, pairs=pairs)
        except OverflowError:  # a moment near the ends of the calendar, once its days are added
            raise click.BadParameter(
                f"{moment!r} and {days or 7} day(s) each side fall outside the calendar", param_hint="--at"
            ) from None
    elif old and new:
        r = reports.compare_versions(ctx.store, feature, old, new, days or 28, pairs=pairs)
    else:
        raise click.UsageError("give two versions (OLD NEW), or a moment (--at)")
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=2))
        return
    table = Table("metric", r.old, r.new, "effect", "p", "", title=f"{r.feature}: {r.old} → {r.new}")
    for c in r.metrics:
        table.add_row(*[as_text(v) for v in _change_row(c)])
    console.print(table)
    n = r.metrics[0]
    console.print(f"{n.n_before:,} calls → {n.n_after:,} calls; {r.verdict}.")
    if r.pairs:
        console.print("To read, side by side (llmlog show ID):")
        for a, b in r.pairs:
            console.print(as_text(f"  {a or '-':<36}  {b or '-'}"))


@report.command(name="spikes")
@period_option(7)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_ctx
def report_spikes(ctx: Ctx, days: int, as_json: bool) -> None:
    """The costliest sessions and their users, and the users far above their peers on cost,
    calls or error rate: "one user is breaking it".

    \b
    Examples:
      llmlog report spikes
      llmlog report spikes --days 30 --json
    """
    r = reports.spikes_report(ctx.store, _period(days))
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=2))
        return
    table = Table("session", "user", "turns", "cost", "errors", title="costliest sessions")
    for s in r.sessions:
        table.add_row(
            as_text(s.session_id),
            as_text(s.user_id or ""),
            f"{s.calls:,}",
            f"${s.cost_usd:,.4f}",
            f"{s.errors:,}",
        )
    console.print(table)
    if not r.outliers:
        console.print("No user sits far above the others.")
        return
    table = Table("user", "metric", "value", "median user", "calls", title="far above their peers")
    for o in r.outliers:
        value = f"{o.value:.1%}" if o.metric == "error_rate" else f"{o.value:,.4g}"
        median = f"{o.median:.1%}" if o.metric == "error_rate" else f"{o.median:,.4g}"
        table.add_row(as_text(o.user_id), o.metric, value, median, f"{o.calls:,}")
    console.print(table)


@cli.command(name="search")
@click.argument("words")
@filter_options
@click.option(
    "-n", "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="How many calls."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def search_cmd(ctx: Ctx, words: str, limit: int, as_json: bool, **filters: Any) -> None:
    """Calls whose words match, best first: what the user said, tool results, the response,
    its tool calls and the error (not the system prompt: search by --version for that).

    WORDS reads as a search box: every word must occur (any form: "refunds" finds
    "refund"), "a phrase" in order, -word must not, OR takes either side.

    \b
    Examples:
      llmlog search "refund"
      llmlog search '"order not found" -test' --feature support-bot --since 7d
      llmlog search "timeout OR overloaded" --errors --json
    """
    hits = ctx.store.search(words, filter_of(ctx, **filters), limit)
    if as_json:
        found = [
            {"id": h.call.id, "timestamp": h.call.timestamp.isoformat(), "feature": h.call.feature,
             "model": h.call.model, "user_id": h.call.user_id, "score": h.score,
             "snippet": "".join(text for text, _ in h.snippet)}
            for h in hits
        ]  # fmt: skip
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    if not hits:
        err_console.print("No calls match.")
        return
    table = Table("id", "time (UTC)", "feature", "model", "where it matched", box=None, header_style="bold")
    for h in hits:
        where = Text()
        for text, matched in h.snippet:
            where.append_text(as_text(text, "bold yellow" if matched else ""))
        c = h.call
        table.add_row(
            as_text(c.id),
            as_text(fmt_time(c.timestamp)),
            as_text(c.feature or "-"),
            as_text(c.model or "-"),
            where,
        )
    console.print(table)


@cli.command(name="similar")
@click.argument("call_id", required=False)
@filter_options
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many.")
@click.option(
    "--enable", is_flag=True, help="Embed calls in this store from now on, and those stored before."
)
@click.option("--disable", is_flag=True, help="Stop embedding new calls.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def similar_cmd(
    ctx: Ctx, call_id: str | None, limit: int, enable: bool, disable: bool, as_json: bool, **filters: Any
) -> None:
    """Calls like CALL_ID: what they said and heard means the same, in other words
    (compared by a small embedding model run here, among the newest 100,000 calls the
    filters select). Needs llmlog installed with the semantic extra (from a checkout:
    pip install '/path/to/llmlog[semantic]') and, once per store, --enable.

    \b
    Examples:
      llmlog similar --enable
      llmlog similar 3f2a --feature support-bot --since 7d
    """
    store = ctx.store
    if enable or disable:
        if disable:
            store.disable_vectors()
            console.print("New calls are no longer embedded; the vectors stored stay.")
            return
        try:
            with console.status("embedding the calls stored so far") as status:
                n = store.enable_vectors(lambda done: status.update(f"embedded {done:,} calls"))
        except vectors.Unavailable as exc:
            raise click.ClickException(str(exc)) from None
        console.print(f"Embedded {n:,} calls; calls stored from now on are embedded as they arrive.")
        return
    if not call_id:
        raise click.UsageError("give a call id (or --enable)")
    try:
        call = store.get(call_id)  # an id prefix is enough
        if call is None:
            raise LookupError(f"no call with id {call_id!r}")
        found = store.similar(call.id, filter_of(ctx, **filters), limit)
    except (vectors.Unavailable, LookupError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        rows = [{"id": c.id, "score": score, "feature": c.feature, "model": c.model} for c, score in found]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not found:
        err_console.print("No call to compare with: none has a vector yet (llmlog similar --enable).")
        return
    table = Table("id", "like", "time (UTC)", "feature", "what it said", box=None, header_style="bold")
    for c, score in found:
        table.add_row(
            as_text(c.id), f"{score:.2f}", as_text(fmt_time(c.timestamp)), as_text(c.feature or "-"),
            as_text(gist(last_user_turn(c) + response_turns(c), 100)),
        )  # fmt: skip
    console.print(table)
