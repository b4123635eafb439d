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
