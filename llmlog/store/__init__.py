"""Stores: where calls are kept. `open_store(url)` picks one from the URL."""

from __future__ import annotations

from pathlib import Path

from llmlog.store.base import CallFilter, QueryResult, ReadOnlyError, Store, parse_when

__all__ = ["CallFilter", "QueryResult", "ReadOnlyError", "Store", "open_store", "parse_when", "sqlite_path"]


def sqlite_path(url: str) -> str | None:
    """The file path of a SQLite URL or plain path; None when the URL names another engine."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :] or ":memory:"
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :] or ":memory:"
    if "://" in url:
        return None
    return str(Path(url).expanduser())


def open_store(url: str) -> Store:
    """`sqlite:///path`, or a plain path, opens the embedded store; `postgresql://…` (or
    `postgres://…`, any libpq URL) a PostgreSQL database. Migrations are applied on open."""
    path = sqlite_path(url)
    if path is not None:
        from llmlog.store.sqlite import SQLiteStore

        return SQLiteStore(path)
    scheme = url.split("://", 1)[0]
    if scheme in ("postgresql", "postgres"):
        from llmlog.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use a file path, sqlite:///path or postgresql://…"
    )
