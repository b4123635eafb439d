"""The state of alerts on a ClickHouse server (`llmlog.store.alerts`): `ClickHouseStore`'s part
of `Alerts`. Rows are replaced by newer versions (ReplacingMergeTree, read with FINAL), as
accounts are; the history is a MergeTree the engine empties of what is older than
`HISTORY_DAYS` (its TTL).

ClickHouse has no transaction and no conditional write, so the lease is taken in three
steps, read, write and read back (the newest version wins), under a file lock of this host
(as `ClickHouseStore.ingest_lock`): the processes of one user on one host take it one at a
time. Servers on several hosts sharing one ClickHouse store could both take it should their
steps interleave within the same few milliseconds; each then posts what it found, and a
finding may reach a webhook twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from llmlog.store.alerts import ALERT_COLUMNS, LEASE, Alert, AlertEvent, naming
from llmlog.store.base import Store
from llmlog.store.clickhouse.engine import Engine
from llmlog.store.clickhouse.engine import utc_time as _when
from llmlog.store.filelock import FileLock
from llmlog.store.urls import redact_url


class ClickHouseAlerts(Store):
    """The part of `ClickHouseStore` that keeps the state of alerts; its engine and
    statements are the store's."""

    engine: Engine
    _alert_lock: FileLock | None = None
    _alert_version = 0

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _mutate(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def _next_version(self) -> int:
        """A version later than any this process wrote: two writes in one microsecond still
        replace each other in order."""
        self._alert_version = max(int(time.time() * 1e6), self._alert_version + 1)
        return self._alert_version

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        if self._alert_lock is None:
            digest = hashlib.sha256(redact_url(self.url).encode()).hexdigest()[:32]
            path = os.path.join(tempfile.gettempdir(), f"llmlog-alerts-{os.geteuid()}-{digest}.lock")
            self._alert_lock = FileLock(path, 0o600, owned=True)
        with self._alert_lock.held():
            yield

    def _lease(self, name: str) -> tuple[str, int] | None:
        rows = self._select(
            "SELECT argMax(holder, version), argMax(expires, version) FROM alert_lease WHERE name = %s"
            " GROUP BY name",
            [name],
        )
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    def take_alert_lease(
        self, holder: str, seconds: float, now: float | None = None, *, name: str = LEASE
    ) -> bool:
        at = time.time() if now is None else now
        with self._host_lock():
            found = self._lease(name)
            if found is not None and found[0] != holder and found[1] > at * 1000:
                return False
            self.engine.insert(
                "alert_lease",
                ["name", "holder", "expires", "version"],
                [[name, holder, int((at + seconds) * 1000), self._next_version()]],
            )
            found = self._lease(name)
        return found is not None and found[0] == holder

    def drop_alert_lease(self, holder: str, *, name: str = LEASE) -> None:
        with self._host_lock():
            found = self._lease(name)
            if found is not None and found[0] == holder:
                self.engine.insert(
                    "alert_lease",
                    ["name", "holder", "expires", "version"],
                    [[name, "", 0, self._next_version()]],
                )

    def alerts(self) -> list[Alert]:
        rows = self._select(f"SELECT {ALERT_COLUMNS} FROM alerts FINAL WHERE deleted = 0 ORDER BY key")
        return [Alert.from_row(r) for r in rows]

    def save_alerts(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        columns = [*ALERT_COLUMNS.split(", "), "version", "deleted"]
        version = self._next_version()
        self.engine.insert("alerts", columns, [[*a.row(), version, 0] for a in alerts])

    def add_alert_events(self, events: Sequence[AlertEvent]) -> None:
        if events:
            self.engine.insert(
                "alert_events",
                ["time", "key", "kind", "event", "webhook", "detail"],
                [[e.time.astimezone(UTC), e.key, e.kind, e.event, e.webhook, e.detail] for e in events],
            )

    def alert_events(self, limit: int = 100) -> list[AlertEvent]:
        rows = self._select(
            "SELECT time, key, kind, event, webhook, detail FROM alert_events"
            f" ORDER BY time DESC LIMIT {int(limit)}"
        )
        return [AlertEvent(_when(t), k, kind, e, w, d) for t, k, kind, e, w, d in rows]

    def forget_alerts_naming(self, value: str) -> int:
        names = naming(value)
        gone = [a for a in self.alerts() if names(a.key) or names(a.sentence) or names(a.link)]
        if gone:
            # Every version of those keys deleted (a mutation, as the calls' erasure is): a
            # newer version marking them deleted would keep their key and sentence, and the
            # versions before it stay until a merge that may never come.
            self._mutate("ALTER TABLE alerts DELETE WHERE key IN %s", [sorted(a.key for a in gone)])
        rows = self._select("SELECT key, detail FROM alert_events")
        lines = sum(1 for key, detail in rows if names(key) or names(detail))
        # The lines that name them, by the key or the detail that does (no line has an id).
        conditions, params = [], []
        for i, column in enumerate(("key", "detail")):
            found = {r[i] for r in rows if names(r[i])}
            if found:
                conditions.append(f"{column} IN %s")
                params.append(sorted(found))
        if conditions:
            self._mutate(f"ALTER TABLE alert_events DELETE WHERE {' OR '.join(conditions)}", params)
        return len(gone) + lines

    def forget_alerts(self, before: datetime) -> None:
        """The history goes by the table's TTL; the findings cleared before `before` by a
        version that removes them."""
        gone = [a for a in self.alerts() if not a.open and a.cleared is not None and a.cleared < before]
        if gone:
            columns = [*ALERT_COLUMNS.split(", "), "version", "deleted"]
            version = self._next_version()
            self.engine.insert("alerts", columns, [[*a.row(), version, 1] for a in gone])
