"""The ClickHouse store with its engine embedded (chdb): where its private tables live.

The embedded engine has no users, so no grant can keep a query from a table it names; a table
in the engine is a table read-only SQL can read (`merge('…')` and `mergeTreeIndex` reach past
any filter). So the private tables, accounts, API tokens, settings, the web UI's sessions,
the audit log, the state of alerts and the experiments, are not in the engine: they are a
small SQLite file beside its data, with the SQLite store's layout and statements. Read-only
SQL runs in a session of its own with `readonly = 1` from its start (`clickhouse.reader`),
which refuses `file()`, `sqlite()` and every other way out of the engine, so it cannot open
that file either.

A store made before keeps its private rows: they move into the file on open, and their tables
are dropped from the engine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from llmlog.core.record import format_timestamp, parse_timestamp
from llmlog.store.alerts import SQLITE_TABLES as ALERT_TABLES
from llmlog.store.base import AuditEntry, ReadOnlyError, RowTables, Store
from llmlog.store.clickhouse import reader
from llmlog.store.clickhouse.engine import EmbeddedEngine, Engine
from llmlog.store.clickhouse.store import ClickHouseStore
from llmlog.store.experiments import SQLITE_TABLES as EXPERIMENT_TABLES

PRIVATE_FILE = "llmlog-private.sqlite3"
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, time TEXT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
    call_ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    hash BLOB PRIMARY KEY, name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS web_sessions (hash BLOB PRIMARY KEY, name TEXT NOT NULL, expires INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS web_sessions_name ON web_sessions (name);
"""
    + ALERT_TABLES
    + ";"
    + EXPERIMENT_TABLES
)
# Reader sessions kept open at once (one per time limit asked for).
_READERS = 4


class EmbeddedClickHouseStore(RowTables, ClickHouseStore):
    # Accounts, sessions and tokens as the row stores keep them (`RowTables`, first among
    # the bases), through `_run` on the private file. One process at a time opens the
    # engine's directory: the process's own lock is enough.
    ingest_lock = Store.ingest_lock

    def __init__(self, url: str, engine: Engine | None = None, reader_url: str | None = None) -> None:
        self._path = urlsplit(url).path or "llmlog-chdb"
        os.makedirs(self._path, exist_ok=True)
        self._private = sqlite3.connect(
            os.path.join(self._path, PRIVATE_FILE), isolation_level=None, check_same_thread=False
        )
        # What is deleted (the alerts naming someone erased) is overwritten, not left in free pages.
        self._private.execute("PRAGMA secure_delete = ON")
        self._private.executescript(_SCHEMA)
        self._private_lock = threading.Lock()
        self._readers: dict[tuple[Any, ...], EmbeddedEngine] = {}
        try:
            super().__init__(url, engine, reader_url)
        except BaseException:
            self._private.close()
            raise

    def close(self) -> None:
        for engine in self._readers.values():
            engine.close()
        self._readers.clear()
        super().close()
        self._private.close()

    def _prepare(self) -> None:
        """The private tables of a store made before: their rows into the file, the tables gone."""
        _, rows = self.engine.rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase()"
            " AND name IN ('settings', 'accounts', 'api_tokens', 'audit', 'web_sessions', 'alerts',"
            " 'alert_events', 'alert_lease', 'experiments')"
        )
        present = {r[0] for r in rows}
        for made in ("web_sessions", "alerts", "alert_events", "alert_lease", "experiments"):
            if made in present:  # made by the migrations, kept in the file instead
                self.engine.command(f"DROP TABLE {made}")
        moves = {
            "settings": (
                "SELECT key, argMax(value, version) FROM settings GROUP BY key",
                "INSERT OR IGNORE INTO settings VALUES (?, ?)",
            ),
            "accounts": (
                "SELECT name, role, password, created FROM accounts FINAL WHERE deleted = 0",
                "INSERT OR IGNORE INTO accounts VALUES (?, ?, ?, ?)",
            ),
            "api_tokens": (
                "SELECT hash, name, scope, created FROM api_tokens FINAL WHERE deleted = 0",
                "INSERT OR IGNORE INTO api_tokens VALUES (?, ?, ?, ?)",
            ),
            "audit": (
                "SELECT time, who, action, call_ids FROM audit ORDER BY time",
                "INSERT INTO audit (time, who, action, call_ids) VALUES (?, ?, ?, ?)",
            ),
        }
        for table, (read, write) in moves.items():
            if table not in present:
                continue
            _, found = self.engine.rows(read)
            if table == "audit":
                found = [(format_timestamp(_utc(t)), *rest) for t, *rest in found]
            if table == "api_tokens":
                found = [(bytes.fromhex(h), *rest) for h, *rest in found]  # kept as hex there
            with self._private_lock:
                self._private.execute("BEGIN IMMEDIATE")
                self._private.executemany(write, found)
                self._private.execute("COMMIT")
            self.engine.command(f"DROP TABLE {table}")

    # -------------------------------------------------------------- the private file

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._private_lock:
            return [tuple(r) for r in self._private.execute(sql, params).fetchall()]

    def setting(self, key: str) -> Any:
        rows = self._run("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def _settings_now(self) -> dict[str, Any]:
        marks = ",".join("?" * len(self.WRITE_SETTINGS))
        rows = self._run(f"SELECT key, value FROM settings WHERE key IN ({marks})", self.WRITE_SETTINGS)
        return {key: json.loads(value) for key, value in rows}

    def _store_setting(self, key: str, value: Any) -> None:
        self._run(
            "INSERT INTO settings VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def audit(self, who: str, action: str, call_ids: Sequence[str]) -> None:
        self._run(
            "INSERT INTO audit (time, who, action, call_ids) VALUES (?, ?, ?, ?)",
            (format_timestamp(datetime.now(UTC)), who, action, json.dumps(list(call_ids))),
        )

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._run("SELECT time, who, action, call_ids FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(parse_timestamp(t), who, action, json.loads(ids)) for t, who, action, ids in rows]

    # -------------------------------------------------------------- read-only SQL

    def _reader(self, timeout_s: float, max_bytes: int) -> Engine:
        fixed = reader.embedded_settings(timeout_s, max_bytes)
        key = tuple(sorted(fixed.items()))
        engine = self._readers.get(key)
        if engine is None:
            if len(self._readers) >= _READERS:
                self._readers.pop(next(iter(self._readers))).close()
            try:
                engine = self._readers[key] = EmbeddedEngine(self._path, fixed)
            except Exception as exc:
                raise ReadOnlyError(f"cannot open a read-only session: {exc}") from None
        return engine

    def _stream(self, engine: Any, sql: str, timeout_s: float, max_bytes: int) -> tuple[list[str], Any]:
        return engine.stream(sql)  # its limits are the session's

    def _reader_failed(self) -> None:
        # A session whose query was stopped answers its next one with the rest of the stopped
        # one's output: start afresh.
        for engine in self._readers.values():
            engine.close()
        self._readers.clear()

    def reader_setup(self) -> str | None:
        return None


def _utc(t: Any) -> datetime:
    if isinstance(t, datetime):
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return parse_timestamp(str(t))
