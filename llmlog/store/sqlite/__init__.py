"""The embedded store (SQLite): the store (`store`), its schema and migrations (`schema`), its
spans (`traces`). What `llmlog.store.open_store` asks of every engine is here; the rest is
imported when a store is opened."""

from __future__ import annotations

from llmlog.store.base import Store
from llmlog.store.urls import sqlite_path


def opens(url: str) -> bool:
    """Whether `url` names a store of this engine: a path, or a `sqlite://` URL."""
    return sqlite_path(url) is not None


def open_url(url: str, reader_url: str | None = None) -> Store:
    from llmlog.store.sqlite.store import SQLiteStore

    return SQLiteStore(sqlite_path(url) or ":memory:")


def missing(url: str) -> str | None:
    """A file that does not exist is the CLI's to judge (it knows an empty one from none)."""
    return None
