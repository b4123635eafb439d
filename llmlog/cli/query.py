"""`llmlog query`: read-only SQL, its rows printed as they arrive.

Nothing is held but a first screenful: a result of any size starts printing at once and
stops as soon as its reader does (`| head`). In a terminal it is a table whose long values
are cut to fit (or, when the columns cannot fit side by side, one block per row); to a pipe
or a file it is tab-separated text, every value whole.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import click
from rich.cells import cell_len, set_cell_size

from llmlog.analysis.dashboard import QUERY_ROW_LIMIT, QUERY_TIMEOUT_S, csv_cell
from llmlog.cli.core import Ctx, cli, err_console, pass_ctx, printable
from llmlog.store import ReadOnlyError
from llmlog.store.readonly import value_size

FORMATS = ("table", "json", "jsonl", "csv", "tsv")
# The widest a table's column grows (in terminal cells) unless --full: a conversation in a
# cell would otherwise push every other column off the screen.
CELL_WIDTH = 40
# The narrowest a long value's column is squeezed to before the table gives way to one block
# per row (as psql's expanded display).
CELL_FLOOR = 16
# A table's column widths are measured on its first rows, at most this many, or those that
# arrive within this long: the first row is not kept waiting for a slow query's 50th.
SAMPLE_ROWS = 50
SAMPLE_S = 0.5
SAMPLE_BYTES = 2**20
# Where stdout is no terminal (an explicit --format table into a file) and COLUMNS is unset.
PLAIN_WIDTH = 120


# What a query may be made of and still hold no statement: blanks, `;`, and comments.
_NO_STATEMENT = re.compile(r"(?:\s|;|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)


def _no_statement(sql: str) -> bool:
    """Whether `sql` holds nothing to run. A comment marker inside a string cannot make a
    real statement look empty: the text before the string is left over."""
    return _NO_STATEMENT.fullmatch(sql) is not None


def _when_absent(_: click.Context, __: click.Parameter, value: str | None) -> str:
    # Decided when the command runs, not at import: CliRunner and pipes swap stdout.
    return value or ("table" if sys.stdout.isatty() else "tsv")


@cli.command()
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    callback=_when_absent,
    help="table: aligned columns, long values cut to fit. json: an array of objects; jsonl: an object"
    " a line; csv: RFC 4180; tsv: a header, then a line per row, tab-separated. All but table give"
    " every value whole.  [default: table in a terminal, tsv to a pipe or file]",
)
@click.option("--full", is_flag=True, help="In a table, show long values whole instead of cut.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=QUERY_TIMEOUT_S,
    show_default=True,
    help="Seconds the query may take, reading and printing its rows included (time waiting on a"
    " pager counts: raise it to page through a long result).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=QUERY_ROW_LIMIT,
    show_default=True,
    help="Most rows to print.",
)
@pass_ctx
def query(ctx: Ctx, sql: str, fmt: str, full: bool, timeout: float, limit: int) -> None:
    """Run read-only SQL against the `calls` relation.

    Only reading gets through, and only of the calls: accounts, tokens, settings and the
    audit log are out of reach (on PostgreSQL and a ClickHouse server the query runs as a
    reader login of its own: see --reader-db). Rows are printed as they arrive, none held,
    so `| head` stops the query at once (on ClickHouse a result past 64 MB is refused).
    The query is stopped, with an error, once it has taken --timeout seconds, its rows'
    printing included. `JSON_VALUE(metadata, '$.tier')` reads a key of a JSON column on
    every store (on ClickHouse a missing key reads ''); the engines' own operators differ
    (SQLite `metadata->>'$.tier'`, PostgreSQL `metadata->>'tier'`).

    In a terminal the rows are a table, long values cut with … (newlines shown as ↵); when
    the columns cannot fit side by side (SELECT *), each row is a block of `column value`
    lines. Elsewhere (a pipe, a file) the default is tsv: NULL is an empty field, and a tab,
    newline, carriage return, backslash or other control character in a value is written
    \\t, \\n, \\r, \\\\ or \\xNN. BLOBs are written in hex in every format.

    \b
    Examples:
      llmlog query "SELECT * FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC"
      llmlog query --full "SELECT id, error FROM calls WHERE error IS NOT NULL LIMIT 5"
      llmlog query "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model"
      llmlog query "SELECT id, feature, latency_ms FROM calls" | sort -t$'\\t' -k3 -n | tail
      llmlog query --format csv "SELECT JSON_VALUE(metadata, '$.tier') AS t, COUNT(*) FROM calls GROUP BY 1"
      llmlog query --format jsonl --limit 100000 "SELECT * FROM calls" > calls.jsonl
    """
    if _no_statement(sql):  # the engines answer it with nothing at all: a blank line, "success"
        raise click.ClickException("no SQL to run: the query is empty (or only comments)")
    try:
        with ctx.store.query_rows(sql, timeout_s=timeout, limit=limit) as rows:
            write = WRITERS[fmt]
            write(rows.columns, iter(rows), sys.stdout, full)
            truncated = rows.truncated
    except ReadOnlyError as exc:
        sys.stdout.flush()  # the rows printed before the error come before it
        raise click.ClickException(str(exc)) from None
    if truncated:
        err_console.print(f"(first {limit} rows shown; raise --limit for more)")


# ---------------------------------------------------------------- machine formats


def _blob(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes | bytearray | memoryview) else value


def _json_default(value: object) -> str:
    # What json cannot write itself: a BLOB as hex, anything else as its text.
    return bytes(value).hex() if isinstance(value, bytes | bytearray | memoryview) else str(value)


def _dumps(columns: list[str], row: Sequence[Any]) -> str:
    return json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, default=_json_default)


# Each writer takes the column names and the rows as they arrive, and flushes after each
# row: a reader at the other end of a pipe sees a row as soon as the store gives it.


def write_json(columns: list[str], rows: Iterator[Sequence[Any]], out: IO[str], full: bool) -> None:
    """An array of objects keyed by column name (JSON columns stay text), an object a line."""
    first = True
    for row in rows:
        out.write(("[\n  " if first else ",\n  ") + _dumps(columns, row))
        out.flush()
        first = False
    out.write("[]\n" if first else "\n]\n")


def write_jsonl(columns: list[str], rows: Iterator[Sequence[Any]], out: IO[str], full: bool) -> None:
    for row in rows:
        out.write(_dumps(columns, row) + "\n")
        out.flush()


def write_csv(columns: list[str], rows: Iterator[Sequence[Any]], out: IO[str], full: bool) -> None:
    """As `reports.write_csv` writes a held result: NULL empty, text a spreadsheet would run as
    a formula made text (`csv_cell`), CRLF line ends (RFC 4180)."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([csv_cell(c) for c in columns])
    for row in rows:
        w.writerow([csv_cell(_blob(v)) for v in row])
        out.flush()


_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _tsv_field(value: Any) -> str:
    if value is None:
        return ""
    text = str(_blob(value))
    for char, escaped in _TSV_ESCAPES.items():
        text = text.replace(char, escaped)
    return printable(text)  # any other control character as \xNN: never sent to a terminal


def write_tsv(columns: list[str], rows: Iterator[Sequence[Any]], out: IO[str], full: bool) -> None:
    out.write("\t".join(_tsv_field(c) for c in columns) + "\n")
    out.flush()
    for row in rows:
        out.write("\t".join(_tsv_field(v) for v in row) + "\n")
        out.flush()


# ---------------------------------------------------------------- table


def _width() -> int:
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    # An explicit table into a file or a pipe: as wide as COLUMNS says.
    try:
        return max(int(os.environ.get("COLUMNS", "")), 20)
    except ValueError:
        return PLAIN_WIDTH


def _cell(value: Any, most: int | None) -> str:
    """A value as one line of a table: newlines as ↵, control characters escaped, cut to
    `most` terminal cells with … (only the start of a long value is ever copied)."""
    if value is None:
        return "NULL"
    text = str(_blob(value))
    if most is not None:
        text = text[: most * 2 + 8]  # enough for `most` cells whatever the characters
    text = printable(text.replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵").replace("\t", " "))
    if most is not None and cell_len(text) > most:
        text = set_cell_size(text, most - 1) + "…"
    return text


def _sample(rows: Iterator[Sequence[Any]]) -> list[Sequence[Any]]:
    """The first rows, to measure the columns on: SAMPLE_ROWS, or fewer if the rest are slow
    or these are large (a row of whole conversations is enough to measure on)."""
    taken: list[Sequence[Any]] = []
    until = time.monotonic() + SAMPLE_S
    size = 0
    for row in rows:
        taken.append(row)
        size += sum(value_size(v) for v in row)
        if len(taken) == SAMPLE_ROWS or size > SAMPLE_BYTES or time.monotonic() > until:
            break
    return taken


def _fit(natural: list[int], floors: list[int], room: int, cut: set[int]) -> list[int] | None:
    """Column widths that fit in `room`, or None. Only the columns already cut (`cut`: long
    text) give way, the widest a cell at a time (so that they end up alike), none below its
    floor: an id or a time cut short is no use, and a table of slivers is what this replaced."""
    widths = list(natural)
    excess = sum(widths) - room
    while excess > 0:
        narrowable = [i for i in cut if widths[i] > floors[i]]
        if not narrowable:
            return None
        widths[max(narrowable, key=lambda i: widths[i])] -= 1
        excess -= 1
    return widths


class _Style:
    """Bold and dim in a terminal that takes colour (NO_COLOR unset), else nothing."""

    def __init__(self, out: IO[str]) -> None:
        self.on = out.isatty() and not os.environ.get("NO_COLOR")

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on else text


def write_table(columns: list[str], rows: Iterator[Sequence[Any]], out: IO[str], full: bool) -> None:
    room = _width()
    style = _Style(out)
    first = _sample(rows)
    cap = None if full else CELL_WIDTH
    natural = [cell_len(_cell(c, cap)) for c in columns]
    for row in first:
        for i, value in enumerate(row):
            natural[i] = max(natural[i], cell_len(_cell(value, cap)))
    floors = [max(CELL_FLOOR, cell_len(c)) for c in columns]
    cut = {i for i, n in enumerate(natural) if cap is not None and n >= cap}
    widths = _fit(natural, floors, room - 2 * (len(columns) - 1), cut) if columns else []
    if not first:
        err_console.print("(0 rows)")  # else a block per row would show nothing at all
    every = _chain(first, rows)
    if widths is None:
        _records(columns, every, out, full, room, style)
        return
    last = len(columns) - 1
    out.write(
        "  ".join(
            style(_pad(_cell(c, w), w, i == last), "1")
            for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
        + "\n"
    )
    for row in every:
        cells = []
        for i, value in enumerate(row):
            # A long text column is cut to its width; a later value wider than the first
            # rows' in another (a count past 99) widens it from there on: a number is never cut.
            text = _cell(value, None if full else widths[i] if i in cut else cap)
            widths[i] = max(widths[i], cell_len(text))
            padded = _pad(text, widths[i], i == last)
            cells.append(style(padded, "2") if value is None else padded)
        out.write("  ".join(cells) + "\n")
        out.flush()


def _pad(text: str, width: int, last: bool) -> str:
    return text if last else text + " " * max(width - cell_len(text), 0)


def _records(
    columns: list[str], rows: Iterator[Sequence[Any]], out: IO[str], full: bool, room: int, style: _Style
) -> None:
    """One block per row, a `column value` line per column: for a result too wide for a table."""
    names = max((cell_len(printable(c)) for c in columns), default=0)
    value_room = max(room - names - 2, CELL_FLOOR)
    for n, row in enumerate(rows, 1):
        head = f"─[ row {n} ]"
        out.write(style(head + "─" * max(min(room, 60) - len(head), 0), "2") + "\n")
        for name, value in zip(columns, row, strict=True):
            if value is None:
                text = style("NULL", "2")
            elif full:
                # Whole, its own lines kept, each indented under the first.
                text = printable(str(_blob(value)).replace("\r\n", "\n").replace("\r", "\n"))
                text = text.replace("\n", "\n" + " " * (names + 2))
            else:
                text = _cell(value, value_room)
            out.write(style(_pad(printable(name), names, False), "1") + "  " + text + "\n")
        out.flush()


def _chain(first: list[Sequence[Any]], rest: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    yield from first
    first.clear()  # not held past their printing
    yield from rest


WRITERS: dict[str, Callable[[list[str], Iterator[Sequence[Any]], IO[str], bool], None]] = {
    "table": write_table,
    "json": write_json,
    "jsonl": write_jsonl,
    "csv": write_csv,
    "tsv": write_tsv,
}
