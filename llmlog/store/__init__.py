"""Stores: where calls are kept. `open_store(url)` picks one from the URL."""

from __future__ import annotations

from types import ModuleType

from llmlog.store import clickhouse, postgres, sqlite
from llmlog.store.base import QueryResult, ReadOnlyError, Store
from llmlog.store.urls import redact_url, sqlite_path

__all__ = [
    "QueryResult",
    "ReadOnlyError",
    "Store",
    "engine_of",
    "open_store",
    "redact_url",
    "sqlite_path",
    "store_missing",
]


#: The engines, each a package here giving `opens(url)`, `open_url(url, reader_url)`,
#: `missing(url)` and `WRITERS` (how many connections a writer stores through at once).
#: Another engine is another package, named here.
ENGINES: tuple[ModuleType, ...] = (sqlite, postgres, clickhouse)


def engine_of(url: str) -> ModuleType:
    """The engine package whose store `url` names; ValueError when none does."""
    for engine in ENGINES:
        if engine.opens(url):
            return engine
    scheme = url.split("://", 1)[0]
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use a file path, sqlite:///relative.db,"
        " sqlite:////absolute.db, postgresql://…,"
        " clickhouse://… or chdb:///path"
    )


def open_store(url: str, reader_url: str | None = None) -> Store:
    """A plain path, or `sqlite:///relative.db` / `sqlite:////absolute.db` (SQLAlchemy's
    forms: three slashes then the path as written), opens the embedded store; `postgresql://…` (or
    `postgres://…`, any libpq URL) a PostgreSQL database; `clickhouse://…` a ClickHouse
    server, `chdb:///path` the ClickHouse engine embedded. Migrations are applied on open.

    `reader_url` (LLMLOG_READER_DB): for a PostgreSQL or ClickHouse server, the login that
    read-only SQL a person writes runs as, where the store could not make its own."""
    store: Store = engine_of(url).open_url(url, reader_url)
    return store


def store_missing(url: str) -> str | None:
    """Why `url` holds no store, found without making one (opening a store makes its tables,
    which a reading command must not); None when it holds one or cannot tell."""
    why: str | None = engine_of(url).missing(url)
    return why
