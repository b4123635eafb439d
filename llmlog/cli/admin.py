"""`llmlog` commands that administer a store: erasure, retention, keys, the audit log,
accounts and API tokens."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from llmlog.cli.core import (
    MAX_COUNT,
    CommandGroup,
    Ctx,
    as_text,
    cli,
    console,
    err_console,
    filter_of,
    pass_ctx,
)
from llmlog.core import encryption
from llmlog.operations import accounts, retention, sealing
from llmlog.store import retention_policy


@cli.command()
@click.option("--user", help="Erase every call of this user (as your app names them).")
@click.option("--session", help="Erase every call of this session.")
@click.option("--yes", is_flag=True, help="Do not ask first.")
@pass_ctx
def delete(ctx: Ctx, user: str | None, session: str | None, yes: bool) -> None:
    """Erase a person's calls, or one session's: the right to erasure.

    Deletes the calls, every prompt, message and tool list no other call uses, the spans of
    their traces and every span naming them, their per-user rollup rows, the log events
    (OTLP) waiting for a span in their traces or naming them, and the alerts' states and
    history naming them, and says what it removed.
    Daily totals (counts, tokens, cost per feature and model) stay: they name no one.

    
    Examples:
      llmlog delete --user u_42
      llmlog delete --session sess_17 --yes
    """
    if (user is None) == (session is None):
        raise click.UsageError("give exactly one of --user and --session")
    flt = filter_of(ctx, user=user, session=session)  # a user id is stored hashed when a secret is set
    n = ctx.store.count(flt)
    who = f"user {user}" if user is not None else f"session {session}"
    if n == 0:
        # No calls; spans naming them, and log events waiting for their span: those go.
        erased = ctx.store.erase(user_id=flt.user_id, session_id=flt.session_id)
        err_console.print(f"No calls of {who}.")
        if erased.spans or erased.events or erased.rollup_rows or erased.alerts:
            console.print(
                f"Erased {erased.spans:,} span(s), {erased.events:,} waiting log event(s),"
                f" {erased.rollup_rows:,} rollup row(s) and {erased.alerts:,} alert state(s) and"
                f" history line(s) of {who}."
            )
        return
    if not yes:
        click.confirm(f"Erase {n:,} call(s) of {who}?", abort=True, err=True)
    erased = ctx.store.erase(user_id=flt.user_id, session_id=flt.session_id)
    console.print(
        f"Erased {erased.calls:,} call(s) of {who}, {erased.contents:,} piece(s) of content no other"
        f" call used, {erased.spans:,} span(s), {erased.events:,} waiting log event(s),"
        f" {erased.rollup_rows:,} rollup row(s) and {erased.alerts:,} alert state(s) and history line(s)."
    )


def _bytes(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _policy_text(p: retention_policy.Policy) -> str:
    features = ", ".join(f"{f}: {d} days" for f, d in sorted(p.features.items()))
    waiting = ""
    if p.events_minutes != retention_policy.DEFAULT_EVENTS_MINUTES:
        waiting = f"; log events waiting for their span kept {p.events_minutes} minutes"
    return f"calls kept {p.days} days" + (f" ({features})" if features else "") + waiting


@cli.group(name="retention")
def retention_group() -> None:
    """How long calls are kept whole: the hot window, then only the daily rollups.

    Calls older than the window are deleted with the prompts and responses only they used
    and their spans; `daily` (counts, errors by type, tokens, cost, latency histograms,
    users and sessions per day, feature, model, provider and prompt version) and
    `people_daily` (per user and session) keep their figures, so the dashboard over a year
    is the same after a run as before. `llmlog serve` runs it once a day.

    \b
    Examples:
      llmlog retention show
      llmlog retention set --days 30 --feature support-bot=7
      llmlog retention run --dry-run
      llmlog retention run
    """


@retention_group.command(name="show")
@pass_ctx
def retention_show(ctx: Ctx) -> None:
    """The store's window, and what a run would delete today.

    \b
    Examples:
      llmlog retention show
      llmlog --db postgresql://llmlog@db.internal/llmlog retention show
    """
    p = retention_policy.policy(ctx.store)
    console.print(_policy_text(p))
    _print_report(retention.run(ctx.store, p, dry_run=True))


@retention_group.command(name="set", creates_store=True)
@click.option("--days", type=int, help="The window: today and this many days before it.")
@click.option(
    "--feature",
    "features",
    multiple=True,
    metavar="NAME=DAYS",
    help="A window of its own for one feature (repeatable); NAME= drops it.",
)
@click.option(
    "--events-minutes",
    type=int,
    help="How long a log event (OTLP) waits for the span whose content it carries (default 60).",
)
@pass_ctx
def retention_set(ctx: Ctx, days: int | None, features: tuple[str, ...], events_minutes: int | None) -> None:
    """Change the store's window, for every process using the store.

    \b
    Examples:
      llmlog retention set --days 90
      llmlog retention set --feature support-bot=7 --feature billing=
      llmlog retention set --events-minutes 15
    """
    p = retention_policy.policy(ctx.store)
    overrides = dict(p.features)
    for item in features:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: write NAME=DAYS", param_hint="--feature")
        if value:
            try:
                overrides[name] = int(value)
            except ValueError:
                raise click.BadParameter(f"{item!r}: DAYS is a number", param_hint="--feature") from None
        else:
            overrides.pop(name, None)
    try:
        wait = events_minutes if events_minutes is not None else p.events_minutes
        p = retention_policy.Policy(days if days is not None else p.days, overrides, wait)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    retention_policy.set_policy(ctx.store, p)
    console.print(_policy_text(p))


@retention_group.command(name="run")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@pass_ctx
def retention_run(ctx: Ctx, dry_run: bool) -> None:
    """Delete the calls past their window, a day at a time; safe to stop and run again.

    \b
    Examples:
      llmlog retention run --dry-run
      llmlog --db postgresql://localhost/llmlog retention run
    """
    p = retention_policy.policy(ctx.store)
    err_console.print(_policy_text(p))
    with err_console.status("deleting…") as status:
        report = retention.run(
            ctx.store, p, dry_run=dry_run, on_day=lambda d: status.update(f"deleted {d.day.isoformat()}")
        )
    _print_report(report)


def _print_report(report: retention.Report) -> None:
    if not report.days and report.dry_run:
        console.print("Nothing is past its window.")
        return
    if report.days:
        table = Table("day", "features", "calls", title="would be deleted" if report.dry_run else "deleted")
        for d in report.days:
            names = ", ".join("(none)" if f is None else f for f in sorted(d.features, key=lambda f: f or ""))
            table.add_row(d.day.isoformat(), names, f"{d.calls:,}")
        console.print(table)
    if report.dry_run:
        console.print(f"{sum(d.calls for d in report.days):,} call(s) of {len(report.days)} day(s) would go.")
        return
    console.print(
        f"Deleted {report.calls:,} call(s) of {len(report.days)} day(s), {report.contents:,} piece(s) of"
        f" content no call used any more, {report.spans:,} span(s) and span event(s),"
        f" {report.events:,} log event(s) that waited for their span too long;"
        f" the store went from {_bytes(report.bytes_before)} to {_bytes(report.bytes_after)}."
    )


# ---------------------------------------------------------------- keys (regulated mode)


@cli.group()
def keys() -> None:
    """Regulated mode: the text of every call encrypted at rest (AES-256-GCM).

    With LLMLOG_KEY (`ID:BASE64`, several separated by commas, the first sealing) or
    LLMLOG_KEY_FILE (one per line) set, the system prompt, messages, tools, response, tool
    calls, error messages and the values of the metadata the store names sensitive (`llmlog
    keys sensitive-metadata`, and LLMLOG_SENSITIVE_METADATA) are sealed before they are
    stored; tokens, cost, latency, model, feature and times stay clear. Once `llmlog keys
    rotate` has run, the store itself refuses clear text from every process, whenever it
    was started. Every reading of sealed text is written to the audit log (`llmlog audit`).

    \b
    Examples:
      llmlog keys new >> /etc/llmlog/keys     # then put it first in the file
      LLMLOG_KEY_FILE=/etc/llmlog/keys llmlog keys rotate
      llmlog keys sensitive-metadata add patient_id,mrn
      llmlog keys status
    """


@keys.command(name="new")
def keys_new() -> None:
    """Print a new random key, `ID:BASE64`, for LLMLOG_KEY or a line of LLMLOG_KEY_FILE.

    \b
    Examples:
      llmlog keys new                       # print one
      llmlog keys new >> /etc/llmlog/keys   # add one to a key file
      export LLMLOG_KEY="$(llmlog keys new)"
    """
    click.echo(encryption.new_key())


@keys.command(name="rotate")
@pass_ctx
def keys_rotate(ctx: Ctx) -> None:
    """Make the store take sealed text only, then seal every stored call with the first key.

    The store refuses clear text from every process from the first moment of the rotation
    (a process with a key seals it). Then text sealed with the other keys, or stored clear
    (before regulated mode), and the values of the metadata named sensitive still clear are
    sealed again with the first key, and so are the spans and span events received over
    OTLP; the old form is deleted, and the other keys can then be retired. Stops, losing
    nothing, at a call, span or event sealed with a key it was not given.

    \b
    Examples:
      LLMLOG_KEY="$(llmlog keys new)" llmlog keys rotate          # turn regulated mode on
      LLMLOG_KEY="$NEW_KEY,$OLD_KEY" llmlog keys rotate           # retire OLD_KEY
    """
    keyring = ctx.settings.keyring
    if keyring is None:
        raise click.UsageError("no key: set LLMLOG_KEY or LLMLOG_KEY_FILE (`llmlog keys new` makes one)")
    store = ctx.store
    try:
        with err_console.status("sealing…") as status:
            done = sealing.rotate(
                store, keyring, store.reader, on_call=lambda n: status.update(f"sealing… {n:,} calls read")
            )
    except encryption.KeyProblem as exc:
        raise click.ClickException(str(exc)) from None
    console.print(
        f"Sealed {done.calls:,} call(s) again with key {keyring.current}; deleted {done.contents:,} piece(s)"
        f" of content in their old form. Sealed {done.spans:,} span(s) and {done.span_events:,} span"
        " event(s) again. The store now takes sealed text only."
    )


@keys.command(name="status")
@pass_ctx
def keys_status(ctx: Ctx) -> None:
    """Which keys sealed the stored calls, spans and span events (a key no longer listed can
    be retired), and whether the store takes sealed text only.

    \b
    Examples:
      llmlog keys status
      LLMLOG_KEY_FILE=/etc/llmlog/keys llmlog keys status
    """
    from collections import Counter

    from llmlog.core.filters import CallFilter

    store = ctx.store
    store.keyring = None  # counting what is stored, not reading it: nothing to open or audit
    calls: Counter[str] = Counter()
    for call in store.iter_calls(CallFilter()):
        for key_id in encryption.sealed_key_ids(call) or {""}:
            calls[key_id] += 1
    # A span or event without text to seal names no key, and is not counted.
    spans = Counter(k for span in store.iter_spans() for k in encryption.trace_key_ids(span))
    events = Counter(k for _, e in store.iter_span_events() for k in encryption.trace_key_ids(e))
    table = Table("key", "calls", "spans", "span events")
    for key_id in sorted({*calls, *spans, *events}):
        row = (f"{counts[key_id]:,}" for counts in (calls, spans, events))
        table.add_row(key_id or "(clear text)", *row)
    console.print(table)
    policy = store.sealing_policy()
    console.print("The store takes sealed text only." if policy.required else "The store takes clear text.")
    _print_sensitive(sorted(policy.sensitive))
    if ctx.settings.keyring is not None:
        console.print(f"Keys here: {', '.join(ctx.settings.keyring.ids)} (the first seals).")


def _print_sensitive(names: list[str]) -> None:
    if names:
        console.print(as_text(f"Metadata sealed by every writer: {', '.join(names)}."))
    else:
        console.print("No metadata named sensitive in the store (`llmlog keys sensitive-metadata add`).")


@keys.group(name="sensitive-metadata")
def sensitive_metadata() -> None:
    """The metadata whose values are sealed like the text: the store's own list.

    Every process writing to the store seals them (with the names in its own
    LLMLOG_SENSITIVE_METADATA, which a remote client uses to seal them before its spool);
    a store that takes sealed text only refuses a call that brings them clear from a
    process without a key. Values stored clear before a name was added are sealed by the
    next `llmlog keys rotate`.

    \b
    Examples:
      llmlog keys sensitive-metadata show
      llmlog keys sensitive-metadata set patient_id,mrn
      llmlog keys sensitive-metadata add ward
      llmlog keys sensitive-metadata remove ward
    """


@sensitive_metadata.command(name="show")
@pass_ctx
def sensitive_show(ctx: Ctx) -> None:
    """The store's list.

    \b
    Examples:
      llmlog keys sensitive-metadata show
    """
    _print_sensitive(sealing.sensitive_metadata(ctx.store))


def _change_sensitive(ctx: Ctx, names: list[str]) -> None:
    before = set(sealing.sensitive_metadata(ctx.store))
    after = sealing.set_sensitive_metadata(ctx.store, names)
    _print_sensitive(after)
    if set(after) - before:
        console.print("Values stored clear before stay so until `llmlog keys rotate`.")


@sensitive_metadata.command(name="set", creates_store=True)
@click.argument("names", nargs=-1)
@pass_ctx
def sensitive_set(ctx: Ctx, names: tuple[str, ...]) -> None:
    """Make NAMES (separated by commas or spaces) the list; none empties it.

    \b
    Examples:
      llmlog keys sensitive-metadata set patient_id,mrn
      llmlog keys sensitive-metadata set patient_id mrn ward
      llmlog keys sensitive-metadata set            # empty the list
    """
    _change_sensitive(ctx, sealing.parse_names(names))


@sensitive_metadata.command(name="add", creates_store=True)
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def sensitive_add(ctx: Ctx, names: tuple[str, ...]) -> None:
    """Add NAMES to the list.

    \b
    Examples:
      llmlog keys sensitive-metadata add ward
      llmlog keys sensitive-metadata add ward,bed
    """
    _change_sensitive(ctx, [*sealing.sensitive_metadata(ctx.store), *sealing.parse_names(names)])


@sensitive_metadata.command(name="remove")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def sensitive_remove(ctx: Ctx, names: tuple[str, ...]) -> None:
    """Take NAMES off the list (values sealed already stay sealed).

    \b
    Examples:
      llmlog keys sensitive-metadata remove ward
    """
    gone = set(sealing.parse_names(names))
    _change_sensitive(ctx, [n for n in sealing.sensitive_metadata(ctx.store) if n not in gone])


@cli.command()
@click.option(
    "-n",
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, MAX_COUNT),
    help="How many entries.",
)
@pass_ctx
def audit(ctx: Ctx, limit: int) -> None:
    """The audit log: who read the sealed text of which calls, and when, newest first.

    \b
    Examples:
      llmlog audit -n 20
    """
    table = Table("time", "who", "action", "calls")
    for e in ctx.store.audit_log(limit):
        ids = ", ".join(e.call_ids[:5]) + (f" … ({len(e.call_ids)})" if len(e.call_ids) > 5 else "")
        table.add_row(e.time.strftime("%Y-%m-%d %H:%M:%S"), as_text(e.who), as_text(e.action), as_text(ids))
    console.print(table)


# ---------------------------------------------------------------- accounts and tokens


@cli.group(name="accounts")
def accounts_group() -> None:
    """Accounts of the web UI: with one or more, `llmlog serve` asks everyone to sign in.

    Roles: viewer (the dashboard, sessions and users: figures, never the text of a call),
    debugger (also every call whole, replays, the SQL console), admin (also accounts,
    tokens and retention, on the Admin page).

    \b
    Examples:
      llmlog accounts add alice --role admin
      echo "$PASSWORD" | llmlog accounts add ci-viewer --role viewer --password-stdin
      llmlog accounts list
      llmlog accounts remove bob
    """


@accounts_group.command(name="add", creates_store=True)
@click.argument("name")
@click.option("--role", type=click.Choice(accounts.ROLES), required=True, help="What the account may see.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_ctx
def accounts_add(ctx: Ctx, name: str, role: str, password_stdin: bool) -> None:
    """Add an account (asks for its password).

    \b
    Examples:
      llmlog accounts add alice --role admin
      echo "$PASSWORD" | llmlog accounts add bob --role viewer --password-stdin
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    try:
        accounts.add_user(ctx.store, name, role, password)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(as_text(f"Added {name} ({role})."))


@accounts_group.command(name="list")
@pass_ctx
def accounts_list(ctx: Ctx) -> None:
    """The accounts, with their roles.

    \b
    Examples:
      llmlog accounts list
    """
    table = Table("name", "role", "since")
    for a in ctx.store.accounts():
        table.add_row(as_text(a.name), a.role, a.created)
    console.print(table)


@accounts_group.command(name="remove")
@click.argument("name")
@pass_ctx
def accounts_remove(ctx: Ctx, name: str) -> None:
    """Remove an account; its sessions end within seconds.

    \b
    Examples:
      llmlog accounts remove bob
    """
    if not ctx.store.remove_account(name):
        raise click.ClickException(f"no account {name!r}")
    console.print(as_text(f"Removed {name}."))


@cli.group()
def tokens() -> None:
    """API tokens for `llmlog serve`, each of one scope.

    ingest: sends calls (POST /v1/calls, OTLP, the provider proxy) and reads nothing. read:
    the JSON API (/api/…), by GET, as a debugger. Sent as `Authorization: Bearer TOKEN`.

    \b
    Examples:
      llmlog tokens add billing-service --scope ingest
      llmlog tokens add grafana --scope read
      llmlog tokens list
      llmlog tokens remove grafana
    """


@tokens.command(name="add", creates_store=True)
@click.argument("name")
@click.option("--scope", type=click.Choice(accounts.SCOPES), required=True, help="What the token opens.")
@pass_ctx
def tokens_add(ctx: Ctx, name: str, scope: str) -> None:
    """Make a token and print it, this once (the store keeps only its hash).

    \b
    Examples:
      llmlog tokens add billing-service --scope ingest
      llmlog tokens add grafana --scope read
    """
    token, digest = accounts.new_token(scope)
    try:
        ctx.store.add_token(name, scope, digest)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)


@tokens.command(name="list")
@pass_ctx
def tokens_list(ctx: Ctx) -> None:
    """The tokens' names and scopes (never the tokens).

    \b
    Examples:
      llmlog tokens list
    """
    table = Table("name", "scope", "since")
    for t in ctx.store.tokens():
        table.add_row(as_text(t.name), t.scope, t.created)
    console.print(table)


@tokens.command(name="remove")
@click.argument("name")
@pass_ctx
def tokens_remove(ctx: Ctx, name: str) -> None:
    """Revoke a token.

    \b
    Examples:
      llmlog tokens remove grafana
    """
    if not ctx.store.remove_token(name):
        raise click.ClickException(f"no token {name!r}")
    console.print(as_text(f"Revoked {name}."))


# `llmlog users` was this group's name, while /users lists the people who use the app: the old
# name still works for the scripts that use it, hidden, and says it was renamed.
cli.add_command(
    CommandGroup(
        name="users",
        commands=accounts_group.commands,
        hidden=True,
        deprecated="use `llmlog accounts`: /users and `llmlog report` name the app's own users",
        help="Renamed `llmlog accounts`.",
    )
)
