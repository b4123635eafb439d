"""`llmlog import`: calls from the files people keep (reading them: `llmlog.pipeline.importer`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click

from llmlog.cli.core import Ctx, as_text, cli, err_console, pass_ctx, progress_bar
from llmlog.core.record import RecordError
from llmlog.pipeline.importer import EXTRA_KEY, STDIN, BadRecord, Read, Reader, sources
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store

#: Bad records listed one by one; past this many, only counted.
SHOWN_BAD = 50
BATCH = 1000


@cli.command(name="import", creates_store=True)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True))
@pass_ctx
def import_(ctx: Ctx, paths: tuple[str, ...]) -> None:
    """Import calls from files, a directory of them, or - (stdin); bad records are reported
    as FILE:LINE: reason, good ones kept.

    Files are read in name order with one progress bar; a directory gives its own .jsonl,
    .ndjson and .json files. Each file is NDJSON (one call per line, as `llmlog export`
    writes) or JSON: one call, pretty-printed or not, an array of calls, or several such
    values one after another.

    A call is in the record's column names, or the minimal format timestamp, model,
    system_prompt, user_message, assistant_response, input_tokens, output_tokens,
    latency_ms, tags. As logs write them: "error": "timeout" is taken as
    {"message": "timeout"} (an empty string as no error), numbers written as strings
    ("123", "0.05") as numbers, and fields llmlog has no column for are kept in the call's
    metadata under import_extra (the summary says how many lines had some). Calls without
    an id get one derived from their content, so importing a file twice stores each once.

    \b
    Examples:
      llmlog import calls-2026-11-20.jsonl
      llmlog import ~/llm-logs/
      llmlog import export.json day1.jsonl day2.jsonl
      cat logs/*.jsonl | llmlog import -
    """
    if "-" in paths and len(paths) > 1:
        raise click.UsageError("- (stdin) is read on its own, not with files")
    try:
        files = ["-"] if paths == ("-",) else sources(paths)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # As every way in: redacted (LLMLOG_REDACT…), sealed (LLMLOG_KEY), priced when unpriced.
    # User ids and prompt versions are kept as the file has them: it is an export, as a rule.
    intake = Intake(ctx.settings, Pricer(ctx.settings.prices), stored=True)
    store = ctx.store  # opened first: a store that cannot be is said before any file is read
    reader = Reader()
    total = stored = 0
    sizes = [_size(f) for f in files]
    with progress_bar() as progress:
        task = progress.add_task("importing", total=None if None in sizes else sum(s or 0 for s in sizes))
        batch: list[Read] = []
        for name, file in _opened(files):
            with file:
                for read in reader.read(name, file, lambda n: progress.advance(task, n)):
                    try:
                        read.call = intake.call(read.call)
                    except (RecordError, RecursionError, ValueError, TypeError) as exc:
                        reader.bad.append(BadRecord(read.source, read.line, _reason(exc)))
                        continue
                    batch.append(read)
                    total += 1
                    if len(batch) >= BATCH:
                        stored += _insert(store, batch, reader.bad)
                        batch = []
        stored += _insert(store, batch, reader.bad)
    _summary(reader, files, total, stored)
    if reader.bad:
        sys.exit(1)


def _insert(store: Store, batch: list[Read], bad: list[BadRecord]) -> int:
    """Store a batch; if a call in it cannot be stored, the others are stored one by one and
    that one reported by its line, not the whole import lost."""
    if not batch:
        return 0
    try:
        return store.insert([r.call for r in batch])
    except (ValueError, TypeError, OverflowError, RecursionError):
        pass
    stored = 0
    for read in batch:
        try:
            stored += store.insert([read.call])
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            bad.append(BadRecord(read.source, read.line, f"cannot be stored: {_reason(exc)}"))
    return stored


def _reason(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _summary(reader: Reader, files: list[str], total: int, stored: int) -> None:
    bad = sorted(reader.bad, key=lambda b: (files.index(b.source) if b.source in files else -1, b.line))
    for b in bad[:SHOWN_BAD]:
        err_console.print(as_text(f"{b.source}:{b.line}: {b.reason}", style="red"))
    if len(bad) > SHOWN_BAD:
        err_console.print(as_text(f"… and {len(bad) - SHOWN_BAD} more bad line(s)", style="red"))
    if reader.extra:
        err_console.print(
            f"{reader.extra} line(s) had fields llmlog has no column for: kept in metadata.{EXTRA_KEY}"
        )
    err_console.print(
        f"Imported {stored} new call(s) from {total} good line(s)"
        + (f" in {len(files)} files" if len(files) > 1 else "")
        + (f", {total - stored} already stored" if total - stored else "")
        + (f"; {len(bad)} bad line(s) skipped" if bad else "")
    )


def _opened(files: list[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """Each file opened for reading as bytes, one at a time; one that cannot be opened (gone
    since, or not readable) stops the import, named."""
    for name in files:
        if name == "-":
            yield STDIN, sys.stdin.buffer
            continue
        # One that cannot be opened is said as any file llmlog cannot read (llmlog.cli.core).
        yield name, open(name, "rb")  # noqa: SIM115 (closed by the caller's with)


def _size(name: str) -> int | None:
    if name == "-":
        return None
    try:
        return Path(name).stat().st_size
    except OSError:
        return None
