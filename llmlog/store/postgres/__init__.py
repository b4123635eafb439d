"""The PostgreSQL store: the store (`store`), its schema and migrations (`schema`), its reader
login (`reader`), its spans (`traces`). What `llmlog.store.open_store` asks of every engine is
here; the rest (and psycopg) is imported when a store is opened."""

from __future__ import annotations

from llmlog.store.base import Store

SCHEMES = ("postgresql", "postgres")


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
