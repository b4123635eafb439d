"""Stores: where calls are kept. `open_store(url)` picks one from the URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from llmlog.store.base import CallFilter, QueryResult, ReadOnlyError, Store, parse_when

__all__ = [
    "CallFilter",
    "QueryResult",
    "ReadOnlyError",
    "Store",
    "open_store",
    "parse_when",
    "redact_url",
    "sqlite_path",
]


def redact_url(url: str) -> str:
    """The URL fit for a log line or an error message: any password replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        return url


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
