"""The embedded store (SQLite): the store (`store`), its schema and migrations (`schema`), its
spans (`traces`). What `llmlog.store.open_store` asks of every engine is here; the rest is
imported when a store is opened."""

from __future__ import annotations

import sqlite3

from llmlog.store.base import Store
from llmlog.store.dialect import Dialect, RollupSQL
from llmlog.store.urls import sqlite_path

#: What its SQL says differently (`llmlog.store.dialect`).
SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    null_safe="IS",
    iso_text=True,
    log2_of="log2({x})",
    # Its keys lose `"` and `\`, which its JSON paths (used by the trigger) cannot hold.
    error_type_of=(
        "replace(replace(ifnull(CASE WHEN json_valid({x}) AND json_type({x}) = 'object'"
        " THEN CAST(json_extract({x}, '$.type') AS TEXT) END, 'error'), '\"', ''), '\\', '')"
    ),
    tool_count_of=(
        "CASE WHEN json_valid({x}) AND json_type({x}) = 'array' THEN json_array_length({x}) ELSE 0 END"
    ),
    day_of="substr({x}, 1, 10)",
    any_word_in_response=None,
    # Times are our fixed-width text ('…T12:00:00.123456Z'): its microseconds are read as
    # digits, since SQLite's date functions keep milliseconds only.
    later_by_ms_of=(
        "CASE WHEN {ms} IS NULL THEN {t} ELSE strftime('%Y-%m-%dT%H:%M:%S', substr({t}, 1, 19), '+' ||"
        " ((CAST(substr({t}, 21, 6) AS INTEGER) + CAST(round({ms} * 1000) AS INTEGER)) / 1000000)"
        " || ' seconds') || printf('.%06dZ', (CAST(substr({t}, 21, 6) AS INTEGER)"
        " + CAST(round({ms} * 1000) AS INTEGER)) % 1000000) END"
    ),
    ms_between_of=(
        "((CAST(strftime('%s', substr({b}, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr({a}, 1, 19))"
        " AS INTEGER)) * 1000.0 + (CAST(substr({b}, 21, 6) AS INTEGER) - CAST(substr({a}, 21, 6) AS INTEGER))"
        " / 1000.0)"
    ),
    rollup=RollupSQL(
        count_type="INTEGER NOT NULL DEFAULT 0",
        map_type="TEXT NOT NULL DEFAULT '{}'",
        empty_map="'{}'",
        object_agg="json_group_object",
        total="total({x})",
        infinity="9e999",
        map_param="?",
    ),
)

#: How many connections a writer stores its batches through at once: one file has one writer
#: at a time.
WRITERS = 1


def opens(url: str) -> bool:
    """Whether `url` names a store of this engine: a path, or a `sqlite://` URL."""
    return sqlite_path(url) is not None


def open_url(url: str, reader_url: str | None = None) -> Store:
    from llmlog.store.sqlite.store import SQLiteStore

    return SQLiteStore(sqlite_path(url) or ":memory:")


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to a store's file that reads what it holds compressed, as the store
    does (`llmlog_text`, `llmlog_document`, `json_value`): for SQL of your own
    (docs/schema.md)."""
    from llmlog.store.sqlite import store

    return store.connect(path, readonly=readonly)


def missing(url: str) -> str | None:
    """A file that does not exist is the CLI's to judge (it knows an empty one from none)."""
    return None
