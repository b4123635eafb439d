"""Stores: where calls are kept. `open_store(url)` picks one from the URL."""

from __future__ import annotations

from llmlog.store.base import QueryResult, ReadOnlyError, Store
from llmlog.store.urls import redact_url, sqlite_path

__all__ = [
    "QueryResult",
    "ReadOnlyError",
    "Store",
    "open_store",
    "redact_url",
    "sqlite_path",
]


def open_store(url: str, reader_url: str | None = None) -> Store:
    """A plain path, or `sqlite:///relative.db` / `sqlite:////absolute.db` (SQLAlchemy's
    forms: three slashes then the path as written), opens the embedded store; `postgresql://…` (or
    `postgres://…`, any libpq URL) a PostgreSQL database; `clickhouse://…` a ClickHouse
    server, `chdb:///path` the ClickHouse engine embedded. Migrations are applied on open.

    `reader_url` (LLMLOG_READER_DB): for a PostgreSQL or ClickHouse server, the login that
    read-only SQL a person writes runs as, where the store could not make its own."""
    path = sqlite_path(url)
    if path is not None:
        from llmlog.store.sqlite import SQLiteStore

        return SQLiteStore(path)
    scheme = url.split("://", 1)[0]
    if scheme in ("postgresql", "postgres"):
        from llmlog.store.postgres import PostgresStore

        return PostgresStore(url, reader_url)
    if scheme == "chdb":
        from llmlog.store.clickhouse_embedded import EmbeddedClickHouseStore

        return EmbeddedClickHouseStore(url)
    if scheme in ("clickhouse", "clickhouses"):
        from llmlog.store.clickhouse import ClickHouseStore

        return ClickHouseStore(url, reader_url=reader_url)
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use a file path, sqlite:///relative.db,"
        " sqlite:////absolute.db, postgresql://…,"
        " clickhouse://… or chdb:///path"
    )
