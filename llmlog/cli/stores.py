"""`llmlog reprice`, `migrate`, `copy` and `demo`: what changes a store as a whole."""

from __future__ import annotations

from pathlib import Path

import click

from llmlog.cli.core import (
    MAX_COUNT,
    MAX_DAYS,
    CliError,
    Ctx,
    cli,
    err_console,
    open_url,
    pass_ctx,
    progress_bar,
    read_prices,
    since_time,
)
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, RecordError
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.pricing import Pricer
from llmlog.store import redact_url, sqlite_path


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
    f = CallFilter(since=since_time(since))
    changed = 0
    with progress_bar() as progress:
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
    with open_url(source, create=False) as src, open_url(target) as dst, progress_bar() as progress:
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
    versions, recorded by `llmlog.wrap` exactly as in an application; the agents' requests
    traced with `llmlog.span` (retrieve, model, tool, model, format). Copies of them over the
    30 days before (tagged 'history'), their traces with them, give the dashboard a month to
    show.

    \b
    Examples:
      llmlog demo
      llmlog --db /tmp/demo.db demo --calls 500 --history 0
    """
    from llmlog.demo.traffic import run_demo

    read_prices(ctx.settings)
    run_demo(ctx.settings, n_calls=n_calls, seed=seed, console=err_console, history_days=history_days)
