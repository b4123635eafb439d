"""The PostgreSQL store: the store (`store`), its schema and migrations (`schema`), its reader
login (`reader`), its spans (`traces`). What `llmlog.store.open_store` asks of every engine is
here; the rest (and psycopg) is imported when a store is opened."""

from __future__ import annotations

from llmlog.store.base import Store
from llmlog.store.dialect import Dialect, RollupSQL

#: What its SQL says differently (`llmlog.store.dialect`).
POSTGRES = Dialect(
    name="postgres",
    placeholder="%s",
    null_safe="IS NOT DISTINCT FROM",
    iso_text=False,
    log2_of="(ln({x}::float8) / ln(2::float8))",
    error_type_of="coalesce({x} ->> 'type', 'error')",
    tool_count_of="CASE WHEN jsonb_typeof({x}) = 'array' THEN jsonb_array_length({x}) ELSE 0 END",
    day_of="({x} AT TIME ZONE 'UTC')::date",
    # lower() and LIKE, not ILIKE: ILIKE tries each pattern case-folding as it goes, 4× the time
    # over a day's responses (0.4 ms a call); the words are given lower-cased.
    any_word_in_response="CASE WHEN lower(response::text) LIKE ANY (%s) THEN response END",
    words_as_patterns=True,
    later_by_ms_of="({t} + least(coalesce({ms}, 0), 1e12) * interval '1 millisecond')",
    ms_between_of="(extract(epoch FROM {b} - {a}) * 1000)",
    bytewise=' COLLATE "C"',
    rollup=RollupSQL(
        count_type="bigint NOT NULL DEFAULT 0",
        map_type="jsonb NOT NULL DEFAULT '{}'",
        empty_map="'{}'::jsonb",
        object_agg="jsonb_object_agg",
        total="coalesce(sum({x}), 0)",
        infinity="'Infinity'::float8",
        map_param="%s::jsonb",
    ),
)


SCHEMES = ("postgresql", "postgres")

#: How many connections a writer stores its batches through at once. Most of a batch's
#: storing is the server's work, in its own process: while one connection waits for it, the
#: next batch's rows are made on the other, and the app's building of calls goes on beside.
WRITERS = 2


def opens(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES


def open_url(url: str, reader_url: str | None = None) -> Store:
    from llmlog.store.postgres.store import PostgresStore

    return PostgresStore(url, reader_url)


def missing(url: str) -> str | None:
    """Why the database holds no store, found without making one (opening makes its tables,
    which a reading command must not); None when it holds one."""
    from llmlog.store.postgres.store import missing

    return missing(url)
