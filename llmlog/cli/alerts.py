"""`llmlog alerts`: the webhooks findings are posted to, the rules people write, the link base,
what is open and what happened; and `alerts run`, one round now, for a cron job. The rounds
themselves are `llmlog.analysis.alerts`'s; `llmlog serve` runs them on a schedule."""

from __future__ import annotations

import json
import re
import sys

import click
from rich.table import Table

from llmlog.analysis import alerts
from llmlog.analysis.alerts import Round, Rule, RuleRun, notify, run_rule
from llmlog.analysis.webhooks import FORMATS, Webhook, post
from llmlog.cli.core import CliError, Ctx, as_text, cli, console, err_console, pass_ctx
from llmlog.store import Store

_WHEN = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


def _config(store: Store) -> alerts.Config:
    try:
        return alerts.config(store)
    except (ValueError, KeyError, TypeError) as exc:  # a setting changed by hand
        raise CliError(f"the store's alerts setting cannot be read: {exc}") from None


@cli.group(name="alerts")
def alerts_group() -> None:
    """Findings and rules posted to webhooks, once each until they clear.

    `llmlog serve` evaluates the findings and the rules every few minutes (--alerts-every)
    and posts each new one to every webhook: generic JSON, or Slack's {"text": …}. A finding
    is posted once when it appears, and again only after it cleared and came back; a
    delivery that fails is tried again later. What is posted is the finding's sentence, its
    figures and a link (under the link base): never the text of a call. Servers and cron
    jobs sharing a store agree through it: one evaluates at a time, and none posts twice.

    A rule is a read-only query (as `llmlog query` runs one) that gives one number, and a
    comparison with a threshold: it is a finding while the comparison holds.

    \b
    Examples:
      llmlog alerts webhook add ops https://hooks.example.com/llmlog
      llmlog alerts webhook add team https://hooks.slack.com/services/T0/B0/XYZ --format slack
      llmlog alerts rule add failures "SELECT count(*) FROM calls WHERE error IS NOT NULL
          AND timestamp > datetime('now', '-1 hour')" --when "> 20"
      llmlog alerts link-base https://llmlog.example.com
      llmlog alerts show
      llmlog alerts run                  # one round now, for a cron job
    """


@alerts_group.command(name="show")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_ctx
def alerts_show(ctx: Ctx, as_json: bool) -> None:
    """The webhooks, the rules, the link base, and the findings open now.

    \b
    Examples:
      llmlog alerts show
      llmlog alerts show --json
    """
    cfg = _config(ctx.store)
    state = ctx.store.alerts()
    if as_json:
        shown = {
            "webhooks": [{"name": w.name, "url": w.shown, "format": w.format} for w in cfg.webhooks],
            "rules": [r.to_json() for r in cfg.rules],
            "link_base": cfg.link_base,
            "open": [a.to_json() for a in state if a.open],
            "rule_problems": [{"key": a.key, "problem": a.problem} for a in state if a.problem],
        }
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    console.print(as_text(f"link base: {cfg.link_base or '(none: no link is posted)'}"))
    _webhooks_table(cfg)
    _rules_table(cfg)
    table = Table("open since", "kind", "finding", "posted to")
    for a in state:
        if a.open:
            sent = sorted(n for n, d in a.deliveries.items() if d.sent is not None)
            since = a.opened.strftime("%Y-%m-%d %H:%M") if a.opened else ""
            table.add_row(since, as_text(a.kind), as_text(a.sentence), as_text(", ".join(sent)))
    console.print(table)
    for a in state:
        if a.problem:
            console.print(as_text(f"rule {a.key.removeprefix('rule:')}: {a.problem}"), style="red")


@alerts_group.command(name="history")
@click.option("-n", "limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Lines.")
@click.option("--json", "as_json", is_flag=True, help="As JSON lines, newest first.")
@pass_ctx
def alerts_history(ctx: Ctx, limit: int, as_json: bool) -> None:
    """What happened: findings opened and cleared, posts, failed deliveries, rules failing.

    \b
    Examples:
      llmlog alerts history
      llmlog alerts history -n 200 --json
    """
    events = ctx.store.alert_events(limit)
    if as_json:
        for e in events:
            click.echo(json.dumps(e.to_json(), ensure_ascii=False))
        return
    table = Table("time", "event", "webhook", "key", "detail")
    for e in events:
        when = e.time.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, e.event, as_text(e.webhook or ""), as_text(e.key), as_text(e.detail))
    console.print(table)


@alerts_group.command(name="run")
@click.option("--json", "as_json", is_flag=True, help="What the round did, as JSON.")
@pass_ctx
def alerts_run(ctx: Ctx, as_json: bool) -> None:
    """Evaluate the findings and the rules now and post what is new: one round, for a cron job.

    Exits 1 when a delivery failed or a rule's query failed (each is tried again next
    time), 0 otherwise. A server or job running a round on this store at the same moment
    does it instead: this one then does nothing.

    \b
    Examples:
      llmlog alerts run
      */10 * * * * llmlog --db postgresql://llmlog@db/llmlog alerts run   # crontab
    """
    done = run_round(ctx.store)
    if as_json:
        click.echo(json.dumps(done.to_json(), indent=2, ensure_ascii=False))
    else:
        console.print(as_text(done.summary()))
    if done.failed or done.problems:
        sys.exit(1)


def run_round(store: Store) -> Round:
    """The findings evaluated (those that cannot be, said, and none of their kind cleared),
    then one round of `alerts.notify`."""
    found, unsure = alerts.evaluate_findings(store)
    if unsure:
        err_console.print("note: the findings could not all be evaluated: none of them clears this time")
    return notify(store, found, unsure=unsure)


# ---------------------------------------------------------------- webhooks


@alerts_group.group(name="webhook")
def webhook_group() -> None:
    """Where findings are posted.

    \b
    Examples:
      llmlog alerts webhook add ops https://hooks.example.com/llmlog
      llmlog alerts webhook add team https://hooks.slack.com/services/T0/B0/XYZ --format slack
      llmlog alerts webhook list
      llmlog alerts webhook test team
      llmlog alerts webhook remove ops
    """


@webhook_group.command(name="add", creates_store=True)
@click.argument("name")
@click.argument("url")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="json",
    show_default=True,
    help='json: {"source": "llmlog", "sentence": …, "numbers": …, "link": …}; slack: {"text": …}.',
)
@pass_ctx
def webhook_add(ctx: Ctx, name: str, url: str, fmt: str) -> None:
    """Add a webhook; it has every finding open now at the next round, then each new one.

    The URL is kept in the store's settings, which read-only SQL cannot read, and is never
    shown whole again (its path is often its secret).

    \b
    Examples:
      llmlog alerts webhook add ops https://hooks.example.com/llmlog
      llmlog alerts webhook add team https://hooks.slack.com/services/T0/B0/XYZ --format slack
    """
    try:
        alerts.add_webhook(ctx.store, Webhook(name, url, fmt))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(as_text(f"Added webhook {name} ({fmt})."))


def _webhooks_table(cfg: alerts.Config) -> None:
    table = Table("webhook", "format", "url")
    for w in cfg.webhooks:
        table.add_row(as_text(w.name), w.format, as_text(w.shown))
    console.print(table)


@webhook_group.command(name="list")
@pass_ctx
def webhook_list(ctx: Ctx) -> None:
    """The webhooks: names, formats, and where they post (the host; never the path).

    \b
    Examples:
      llmlog alerts webhook list
    """
    _webhooks_table(_config(ctx.store))


@webhook_group.command(name="remove")
@click.argument("name")
@pass_ctx
def webhook_remove(ctx: Ctx, name: str) -> None:
    """Remove a webhook.

    \b
    Examples:
      llmlog alerts webhook remove ops
    """
    if not alerts.remove_webhook(ctx.store, name):
        raise click.ClickException(f"no webhook {name!r}")
    console.print(as_text(f"Removed webhook {name}."))


@webhook_group.command(name="test")
@click.argument("name")
@pass_ctx
def webhook_test(ctx: Ctx, name: str) -> None:
    """Post a test message to a webhook, and say whether it took it.

    \b
    Examples:
      llmlog alerts webhook test team
    """
    cfg = _config(ctx.store)
    webhook = next((w for w in cfg.webhooks if w.name == name), None)
    if webhook is None:
        raise click.ClickException(f"no webhook {name!r}")
    said = f"llmlog: a test of the webhook {name}; findings will be posted here."
    body = (
        {"text": said}
        if webhook.format == "slack"
        else {"source": "llmlog", "event": "test", "sentence": said}
    )
    problem = post(webhook, body)
    if problem is not None:
        raise click.ClickException(f"webhook {name}: {problem}")
    console.print(as_text(f"Webhook {name} took it."))


# ---------------------------------------------------------------- rules


def _when(value: str) -> tuple[str, float]:
    m = _WHEN.fullmatch(value)
    if m is None:
        raise click.BadParameter("a comparison and a number: '> 20', '<= 0.5', '!= 0'", param_hint="--when")
    return m.group(1), float(m.group(2))


def _problem(run: RuleRun) -> str:
    """Why a rule gave no number, with what the engine said (this is a terminal)."""
    return f"{run.problem} ({run.detail})" if run.detail else str(run.problem)


@alerts_group.group(name="rule")
def rule_group() -> None:
    """Rules: a read-only query that gives one number, and when that number is a finding.

    The query runs as `llmlog query` runs one (it may only read the calls), within 10
    seconds, and must give one row of one number; a query that writes, takes too long, or
    gives text, no row or NULL is refused when added, and reported if it fails later.

    \b
    Examples:
      llmlog alerts rule add failures "SELECT count(*) FROM calls WHERE error IS NOT NULL
          AND timestamp > datetime('now', '-1 hour')" --when "> 20"
      llmlog alerts rule list
      llmlog alerts rule test failures
      llmlog alerts rule remove failures
    """


@rule_group.command(name="add", creates_store=True)
@click.argument("name")
@click.argument("sql")
@click.option("--when", "when", required=True, metavar="'OP NUMBER'", help="When it is a finding: '> 20'.")
@pass_ctx
def rule_add(ctx: Ctx, name: str, sql: str, when: str) -> None:
    """Add a rule, once its query has run and given a number.

    \b
    Examples:
      llmlog alerts rule add failures "SELECT count(*) FROM calls WHERE error IS NOT NULL
          AND timestamp > datetime('now', '-1 hour')" --when "> 20"
      llmlog alerts rule add spend "SELECT coalesce(sum(cost_usd), 0) FROM calls
          WHERE timestamp > datetime('now', '-1 day')" --when ">= 50"
    """
    op, threshold = _when(when)
    try:
        rule = Rule(name, sql, op, threshold)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    run = run_rule(ctx.store, rule)
    if run.problem is not None:
        raise click.ClickException(f"rule {name} not added: {_problem(run)}")
    try:
        alerts.add_rule(ctx.store, rule)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    state = "a finding now" if run.tripped else "not a finding now"
    console.print(as_text(f"Added rule {name}: its query gives {run.value:g}, {op} {threshold:g}: {state}."))


def _rules_table(cfg: alerts.Config) -> None:
    table = Table("rule", "when", "query")
    for r in cfg.rules:
        table.add_row(as_text(r.name), as_text(r.condition), as_text(r.sql))
    console.print(table)


@rule_group.command(name="list")
@pass_ctx
def rule_list(ctx: Ctx) -> None:
    """The rules, their comparisons and queries.

    \b
    Examples:
      llmlog alerts rule list
    """
    _rules_table(_config(ctx.store))


@rule_group.command(name="remove")
@click.argument("name")
@pass_ctx
def rule_remove(ctx: Ctx, name: str) -> None:
    """Remove a rule; its finding, if open, clears at the next round.

    \b
    Examples:
      llmlog alerts rule remove failures
    """
    if not alerts.remove_rule(ctx.store, name):
        raise click.ClickException(f"no rule {name!r}")
    console.print(as_text(f"Removed rule {name}."))


@rule_group.command(name="test")
@click.argument("name")
@pass_ctx
def rule_test(ctx: Ctx, name: str) -> None:
    """Run a rule's query now and say what it gives (or what the engine said).

    \b
    Examples:
      llmlog alerts rule test failures
    """
    rule = next((r for r in _config(ctx.store).rules if r.name == name), None)
    if rule is None:
        raise click.ClickException(f"no rule {name!r}")
    run = run_rule(ctx.store, rule)
    if run.problem is not None:
        raise click.ClickException(f"rule {name}: {_problem(run)}")
    state = "a finding" if run.tripped else "not a finding"
    console.print(as_text(f"Rule {name}: its query gives {run.value:g}, {rule.condition}: {state}."))


@alerts_group.command(name="link-base", creates_store=True)
@click.argument("url", required=False)
@click.option("--clear", is_flag=True, help="Post no link.")
@pass_ctx
def link_base(ctx: Ctx, url: str | None, clear: bool) -> None:
    """Where the web UI is reached (its public URL): the links posted are under it.

    Without one, no link is posted (the server's own address is often loopback, which
    nobody reading a channel can open).

    \b
    Examples:
      llmlog alerts link-base https://llmlog.example.com
      llmlog alerts link-base --clear
    """
    if (url is None) == (not clear):
        raise click.UsageError("give a URL, or --clear")
    try:
        alerts.set_link_base(ctx.store, None if clear else url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(as_text(f"Links posted under {url}." if url else "No link is posted."))
