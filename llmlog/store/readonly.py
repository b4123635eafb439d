"""What every store's read-only SQL shares: its result, its refusal, and the bound on how much
of a result is held in memory.

Read-only SQL comes in two kinds. `Store.query` runs SQL a person wrote (the console,
`/sql.json`, `llmlog query`): on each store it runs as something that can read the calls and
nothing else, whatever the SQL says. `Store.internal_query` runs SQL llmlog writes itself
(reports, the dashboard) on the store's own connection; no user text ever reaches it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

# The most a person's query may hold in memory as its result (the text and bytes of its
# values, counted as they arrive). 10,000 rows of a large conversation fit; 10,000 copies of
# a value built to be huge do not, and stop here rather than take the server's memory.
RESULT_MAX_BYTES = 64 * 2**20


class ReadOnlyError(Exception):
    """A query was refused (it would write, or read what it may not), or stopped (time limit)."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    # Why the rows stop short of the query's, when that is not the row limit (the size limit).
    note: str | None = None


class QueryRows:
    """A reading query's rows as they arrive, at most `limit` of them, none held here: what a
    caller does not take is never read (`close` stops the query). Its time limit covers the
    whole of it, reading the rows and whatever the caller does between them: a row asked for
    past the deadline is an error, not a row.

    `source` is the store's: a generator that yields the column names first, then the rows,
    and raises ReadOnlyError for what the engine refuses (it is closed when the caller stops)."""

    def __init__(
        self, source: Generator[Sequence[Any], None, None], limit: int, timeout_s: float, deadline: float
    ) -> None:
        self._source = source
        self.limit = limit
        self.timeout_s = timeout_s
        self.deadline = deadline
        # Set once the rows stop at `limit` with more to come.
        self.truncated = False
        try:
            self.columns = [str(c) for c in next(source)]
        except StopIteration:  # a source that found nothing to say
            self.columns = []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        taken = 0
        try:
            for row in self._source:
                if time.monotonic() > self.deadline:
                    raise ReadOnlyError(timed_out(self.timeout_s))
                if taken == self.limit:
                    self.truncated = True  # one row past the limit read, to know there are more
                    return
                taken += 1
                yield tuple(row)
        finally:
            self.close()

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> QueryRows:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def deadline_after(timeout_s: float) -> float:
    """The `time.monotonic()` past which a query begun now has taken too long."""
    return time.monotonic() + timeout_s


def timed_out(timeout_s: float) -> str:
    return f"query took longer than the {timeout_s:g} s limit"


def value_size(value: Any) -> int:
    """Roughly what a value costs held in memory: its length for text and bytes, a word else."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return len(value)
    return 16


def bounded(
    rows: Iterable[Sequence[Any]], limit: int, max_bytes: int | None
) -> tuple[list[Sequence[Any]], bool, str | None]:
    """At most `limit` rows of `rows`, taken one at a time, and no more than `max_bytes` of
    values in all: (rows, truncated, note). The caller gives rows as they arrive (a cursor),
    so what is not taken is never held."""
    taken: list[Sequence[Any]] = []
    size = 0
    for row in rows:
        if len(taken) == limit:
            return taken, True, None
        size += sum(value_size(v) for v in row)
        if max_bytes is not None and size > max_bytes:
            return taken, True, f"the result passed {max_bytes // 2**20} MB after {len(taken):,} rows"
        taken.append(row)
    return taken, False, None


def held(rows: QueryRows, max_bytes: int | None) -> QueryResult:
    """All of `rows` in memory, no more than `max_bytes` of values (the web console, reports)."""
    taken, _, note = bounded(rows, rows.limit, max_bytes)
    return QueryResult(rows.columns, [tuple(r) for r in taken], rows.truncated or note is not None, note)


def too_large(max_bytes: int) -> str:
    return f"a value or the result passed the {max_bytes // 2**20} MB a query may hold: ask for less"


# JSON_VALUE(doc, path), the SQL standard's reading of one value of a JSON document, in every
# store's read-only SQL: ClickHouse and PostgreSQL 17 have it, PostgreSQL 15 and 16 get a
# function of that name (migration 14), SQLite this one. A JSON column's key reads the same
# everywhere: JSON_VALUE(metadata, '$.tier'). Operators differ: SQLite's ->> takes '$.tier'
# and 'tier', PostgreSQL's only 'tier' ('$.tier' is a key of that name: NULL), ClickHouse has
# none.
_JSON_PATH = re.compile(r'\$((?:\.[A-Za-z_][A-Za-z0-9_\-]*|\."[^"]*"|\[\d+\])*)')
_JSON_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_\-]*)|\."([^"]*)"|\[(\d+)\]')


def json_value(doc: str | bytes | None, path: str | None) -> str | None:
    """The scalar at `path` ($.key, $."a key", $.list[0], …) in the JSON text `doc`, as text
    (numbers as written, true and false as words), as the standard's JSON_VALUE gives it; NULL
    where there is none, where it is an object, an array or null, and for text that is not
    JSON. A path it cannot read is an error, not a NULL that would look like an answer."""
    if path is None:
        return None
    m = _JSON_PATH.fullmatch(path.strip())
    if m is None:
        raise ValueError(f"JSON_VALUE: {path!r} is not a path like '$.key', '$.a.b' or '$.list[0]'")
    if doc is None:
        return None
    try:
        value: Any = json.loads(doc)
    except ValueError:
        return None
    for key, quoted, index in _JSON_STEP.findall(m.group(1)):
        if index:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        else:
            value = value.get(key or quoted) if isinstance(value, dict) else None
        if value is None:
            return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return value if isinstance(value, str) else None
