"""The ClickHouse store, on a server (`clickhouse://`) or embedded (`chdb:///path`): the store
(`store`, `embedded`), its engines (`engine`), its schema and migrations (`schema`), its reader
user (`reader`), its spans (`traces`). What `llmlog.store.open_store` asks of every engine is
here; the rest is imported when a store is opened."""

from __future__ import annotations

from llmlog.store.base import Store
from llmlog.store.dialect import Dialect

#: What its SQL says differently (`llmlog.store.dialect`).
CLICKHOUSE = Dialect(
    name="clickhouse",
    placeholder="%s",
    null_safe=None,
    iso_text=False,
    log2_of="log2({x})",
    error_type_of="coalesce(nullIf(JSONExtractString(ifNull({x}, '{}'), 'type'), ''), 'error')",
    tool_count_of="if(JSONType(ifNull({x}, 'null')) = 'Array', JSONLength({x}), 0)",
    day_of="substr({x}, 1, 10)",
    id_starts_with="startsWith(id, %s)",
    any_word_in_response=(
        "CASE WHEN multiSearchAnyCaseInsensitiveUTF8(ifNull(response, ''), %s) THEN response END"
    ),
    later_by_ms_of="({t} + toIntervalMicrosecond(toInt64(round(least(ifNull({ms}, 0), 1e12) * 1000))))",
    ms_between_of="(dateDiff('microsecond', {a}, {b}) / 1000)",
)


SCHEMES = ("clickhouse", "clickhouses", "chdb")

#: How many connections a writer stores its batches through at once.
WRITERS = 1


def opens(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES


def open_url(url: str, reader_url: str | None = None) -> Store:
    if url.startswith("chdb://"):
        from llmlog.store.clickhouse.embedded import EmbeddedClickHouseStore

        return EmbeddedClickHouseStore(url)
    from llmlog.store.clickhouse.store import ClickHouseStore

    return ClickHouseStore(url, reader_url=reader_url)


def missing(url: str) -> str | None:
    """Opening a ClickHouse store makes nothing a reading command would regret."""
    return None
