"""What every store's read-only SQL shares: its result, its refusal, and the bound on how much
of a result is held in memory.

Read-only SQL comes in two kinds. `Store.query` runs SQL a person wrote (the console,
`/sql.json`, `llmlog query`): on each store it runs as something that can read the calls and
nothing else, whatever the SQL says. `Store.internal_query` runs SQL llmlog writes itself
(reports, the dashboard) on the store's own connection; no user text ever reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


def too_large(max_bytes: int) -> str:
    return f"a value or the result passed the {max_bytes // 2**20} MB a query may hold: ask for less"
