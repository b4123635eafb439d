"""`llmlog reprice`, `migrate`, `copy` and `demo`: what changes a store as a whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import click
from rich.progress import Progress

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
from llmlog.demo.fake_provider import DEMO_SEED
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.pricing import Pricer
from llmlog.pipeline.writer import keep_spans
from llmlog.store import Store, redact_url, sqlite_path

Record = TypeVar("Record")


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
    help="Calls (and spans) per transaction.",
)
@pass_ctx
def copy(ctx: Ctx, source: str, target: str, batch: int) -> None:
    """Copy every call and span from one store into another, e.g. SQLite into PostgreSQL and back.

    Calls and spans already in the target are skipped, so an interrupted copy is resumed by
    running it again, and copying twice stores each once: the target's traces have their
    whole trees and the same figures. Costs and user ids are copied as stored. Text goes
    into the target as into any store: redacted with LLMLOG_REDACT's rules, and with
    LLMLOG_KEY set, what is stored clear is sealed (what is sealed is copied sealed).
    Only calls and spans are copied: accounts, tokens, settings, alerts and experiments
    stay in the source (an experiment's new calls are copied, as calls).

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
    # Read as stored (sealed text stays sealed, unread); no pricing: costs are copied as stored.
    # A figure the source store holds that cannot be stored (a NaN cost, kept before figures
    # were checked) is dropped with a note, as the stores' own repair does: the call is kept.
    intake = Intake(ctx.settings, stored=True, repair=True)
    with open_url(source, create=False) as src, open_url(target) as dst, progress_bar() as progress:
        calls = _copy_calls(src, dst, intake, batch, progress)
        spans = _copy_spans(src, dst, intake, batch, progress)
    skipped = (
        f"; {calls.skipped} call(s) and {spans.skipped} span(s) already there"
        if calls.skipped or spans.skipped
        else ""
    )
    refused = calls.refused + spans.refused
    err_console.print(
        f"Copied {calls.copied} call(s) and {spans.copied} span(s)"
        f" from {redact_url(source)} to {redact_url(target)}"
        + skipped
        + (f"; {len(refused)} could not be kept" if refused else ""),
        markup=False,
    )
    for line in refused[:20]:
        err_console.print(f"  {line}", markup=False)
    if len(refused) > 20:
        err_console.print(f"  … and {len(refused) - 20} more", markup=False)
    if refused:
        raise SystemExit(1)


@dataclass
class _Copied:
    copied: int = 0
    skipped: int = 0  # already in the target
    refused: list[str] = field(default_factory=list)  # "id: reason" of each the target cannot keep


def _copy_calls(src: Store, dst: Store, intake: Intake, batch: int, progress: Progress) -> _Copied:
    done = _Copied()
    task = progress.add_task("copying calls", total=src.count(CallFilter()))

    def flush(page: list[Call]) -> None:
        have = dst.existing_ids([c.id for c in page])
        new: list[Call] = []
        for c in page:
            if c.id in have:
                done.skipped += 1
                continue
            try:
                new.append(intake.call(c))
            except RecordError as exc:  # nested too deeply to keep, say: this call only
                done.refused.append(f"{c.id}: {exc}")
        try:
            done.copied += dst.insert(new)
        except dst.data_errors:
            # One call the target cannot hold must not stop the copy: the rest one by one.
            for c in new:
                try:
                    done.copied += dst.insert([c])
                except dst.data_errors as exc:
                    done.refused.append(f"{c.id}: {exc}")
        progress.advance(task, len(page))

    for page in _pages(src.iter_calls(CallFilter(), batch=batch), batch):
        flush(page)
    return done


def _copy_spans(src: Store, dst: Store, intake: Intake, batch: int, progress: Progress) -> _Copied:
    """Every span, through what the collector keeps an app's spans with (`keep_spans`):
    redacted and sealed as any span is. A span the target holds is skipped, not sent again:
    ClickHouse would keep a second version of its row until its parts merge."""
    done = _Copied()
    task = progress.add_task("copying spans", total=None)
    for page in _pages(src.iter_spans(batch=batch), batch):
        have = dst.existing_spans([(s.trace_id, s.span_id) for s in page])
        new = [s for s in page if (s.trace_id, s.span_id) not in have]
        done.skipped += len(page) - len(new)
        refusals = keep_spans(dst, intake, new)
        done.copied += len(new) - len(refusals)
        done.refused += [
            f"span {new[r.index].span_id} of trace {new[r.index].trace_id}: {r.reason}" for r in refusals
        ]
        progress.advance(task, len(page))
    return done


def _pages(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    page: list[Record] = []
    for record in records:
        page.append(record)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


@cli.command(creates_store=True)
@click.option(
    "--calls",
    "n_calls",
    default=2000,
    show_default=True,
    type=click.IntRange(1, MAX_COUNT),
    help="About how many calls to make.",
)
@click.option("--seed", default=DEMO_SEED, show_default=True, help="Seed for a reproducible workload.")
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
