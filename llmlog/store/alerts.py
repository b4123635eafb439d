"""What every store keeps for alerts (`llmlog.analysis.alerts`): each finding's state, so that
it is posted to a webhook once when it appears and again only after it cleared and came back;
the history of what happened (opened, posted, a delivery failed, cleared); and a lease, so
that of the servers and cron jobs sharing a store one evaluates at a time.

Private, as `settings` and `audit` are: read-only SQL (the console, `llmlog query`) is granted
the calls and their figures only, and these tables are not among them. The row stores
(SQLite, PostgreSQL, and the embedded ClickHouse store's private file) share the statements
here (`RowAlerts`); a ClickHouse server keeps versions of rows (`clickhouse.alerts`).
"""

from __future__ import annotations

import abc
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from llmlog.core.record import format_timestamp, parse_timestamp

# How long the history and the cleared findings' rows are kept.
HISTORY_DAYS = 90
# The one lease alerts take (`take_alert_lease`), by name.
LEASE = "alerts"

# The tables, as SQLite and the embedded ClickHouse store's private file make them; times
# are text as `call_data.timestamp` is (`format_timestamp`), JSON is text.
SQLITE_TABLES = """
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,  -- what the finding is about (`Finding.key`)
    kind TEXT NOT NULL,
    status TEXT NOT NULL,  -- open or cleared
    opened TEXT, seen TEXT, cleared TEXT,
    sentence TEXT NOT NULL, numbers TEXT NOT NULL, link TEXT NOT NULL,
    deliveries TEXT NOT NULL,  -- per webhook: sent, or failures and when to try again
    problem TEXT  -- a rule whose query failed at its last evaluation: why
);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY, time TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
    event TEXT NOT NULL, webhook TEXT, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_time ON alert_events (time);
CREATE TABLE IF NOT EXISTS alert_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires INTEGER NOT NULL)
"""


@dataclass
class Delivery:
    """One finding's delivery to one webhook, while it is open."""

    sent: datetime | None = None
    failures: int = 0  # failed tries of this webhook while this waited
    retry: datetime | None = None  # not before then (after a failure)
    error: str | None = None  # the last failure, as `webhooks.post` says it

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": _text(self.sent),
            "failures": self.failures,
            "retry": _text(self.retry),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, value: Any) -> Delivery:
        if not isinstance(value, dict):
            return cls()
        return cls(_time(value.get("sent")), int(value.get("failures") or 0), _time(value.get("retry")),
                   value.get("error"))  # fmt: skip


@dataclass
class Alert:
    """A finding's state: open since `opened` (last found at `seen`), or cleared."""

    key: str
    kind: str
    status: str = "open"  # or "cleared"
    opened: datetime | None = None  # None: a rule that has only ever failed
    seen: datetime | None = None
    cleared: datetime | None = None
    sentence: str = ""
    numbers: dict[str, float] = field(default_factory=dict)
    link: str = ""  # a path on the UI
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # by webhook name
    problem: str | None = None

    @property
    def open(self) -> bool:
        return self.status == "open"

    def row(self) -> tuple[Any, ...]:
        deliveries = {name: d.to_json() for name, d in sorted(self.deliveries.items())}
        return (self.key, self.kind, self.status, _text(self.opened), _text(self.seen), _text(self.cleared),
                self.sentence, json.dumps(self.numbers), self.link, json.dumps(deliveries),
                self.problem)  # fmt: skip

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Alert:
        key, kind, status, opened, seen, cleared, sentence, numbers, link, deliveries, problem = row
        given = json.loads(deliveries or "{}")
        return cls(key, kind, status, _time(opened), _time(seen), _time(cleared), sentence,
                   json.loads(numbers or "{}"), link or "",
                   {str(n): Delivery.from_json(d) for n, d in given.items()}, problem or None)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "status": self.status,
            "opened": _text(self.opened),
            "seen": _text(self.seen),
            "cleared": _text(self.cleared),
            "sentence": self.sentence,
            "numbers": self.numbers,
            "link": self.link,
            "deliveries": {name: d.to_json() for name, d in sorted(self.deliveries.items())},
            "problem": self.problem,
        }


ALERT_COLUMNS = "key, kind, status, opened, seen, cleared, sentence, numbers, link, deliveries, problem"


@dataclass
class AlertEvent:
    """A line of the history: "opened", "cleared", "posted" or "failed" (to `webhook`),
    "rule_failed", "rule_recovered"."""

    time: datetime
    key: str
    kind: str
    event: str
    webhook: str | None = None
    detail: str = ""  # the sentence when opened; what failed

    def to_json(self) -> dict[str, Any]:
        return {"time": format_timestamp(self.time), "key": self.key, "kind": self.kind, "event": self.event,
                "webhook": self.webhook, "detail": self.detail}  # fmt: skip


def _text(t: datetime | None) -> str | None:
    return None if t is None else format_timestamp(t)


def _time(value: Any) -> datetime | None:
    return None if value in (None, "") else parse_timestamp(value)


def _parts(rows: Sequence[Any], n: int = 200) -> list[Sequence[Any]]:
    """`rows` in parts small enough for one statement's parameters."""
    return [rows[i : i + n] for i in range(0, len(rows), n)]


def naming(value: str) -> Callable[[str | None], bool]:
    """Whether a text names `value` (a user's or a session's id, as erasure gives it): as a
    whole word, or encoded as a link's path encodes it; "u1" is not named by "u10"."""
    forms = "|".join(re.escape(f) for f in sorted({value, quote(value, safe="")}, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w-])(?:{forms})(?![\w-])")
    return lambda text: bool(text) and pattern.search(text or "") is not None


def history_start(now: datetime | None = None) -> datetime:
    """What is older than this goes (`forget_alerts`)."""
    return (now or datetime.now(UTC)) - timedelta(days=HISTORY_DAYS)


class Alerts(abc.ABC):
    """Mixed into `Store`."""

    @abc.abstractmethod
    def take_alert_lease(
        self, holder: str, seconds: float, now: float | None = None, *, name: str = LEASE
    ) -> bool:
        """Hold the alerts' lease (or another, by `name`: an experiment's run takes one) for
        `seconds` from `now` (Unix time; default: the present), if nobody else holds it
        unexpired; `holder` renews its own. Whether it is held."""

    @abc.abstractmethod
    def drop_alert_lease(self, holder: str, *, name: str = LEASE) -> None:
        """Let go of the lease, if `holder` has it."""

    @abc.abstractmethod
    def alerts(self) -> list[Alert]:
        """Every finding's state, open and cleared."""

    @abc.abstractmethod
    def save_alerts(self, alerts: Sequence[Alert]) -> None:
        """Keep these states (by key), in place of any before."""

    @abc.abstractmethod
    def add_alert_events(self, events: Sequence[AlertEvent]) -> None: ...

    @abc.abstractmethod
    def alert_events(self, limit: int = 100) -> list[AlertEvent]:
        """The latest lines of the history, newest first."""

    @abc.abstractmethod
    def forget_alerts(self, before: datetime) -> None:
        """The history from before `before` gone, and the findings cleared before it."""

    @abc.abstractmethod
    def forget_alerts_naming(self, value: str) -> int:
        """Erasure (`Store.erase` calls it): the findings' states and the lines of the history
        whose key, sentence, link or detail name `value` (`naming`), gone; how many. A
        finding about them found again (their calls are gone: it is not) would open anew."""


class RowAlerts(Alerts):
    """`Alerts` in rows updated in place, by statements each row store runs as written
    (through `RowTables._run`, whose parameters are `?`)."""

    @abc.abstractmethod
    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def take_alert_lease(
        self, holder: str, seconds: float, now: float | None = None, *, name: str = LEASE
    ) -> bool:
        at = time.time() if now is None else now
        # One statement: taken where free or expired, renewed where ours, else left (no row back).
        rows = self._run(
            "INSERT INTO alert_lease VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " holder = excluded.holder, expires = excluded.expires"
            " WHERE alert_lease.expires <= ? OR alert_lease.holder = ? RETURNING holder",
            (name, holder, int((at + seconds) * 1000), int(at * 1000), holder),
        )
        return bool(rows) and rows[0][0] == holder

    def drop_alert_lease(self, holder: str, *, name: str = LEASE) -> None:
        self._run("DELETE FROM alert_lease WHERE name = ? AND holder = ?", (name, holder))

    def alerts(self) -> list[Alert]:
        return [Alert.from_row(r) for r in self._run(f"SELECT {ALERT_COLUMNS} FROM alerts ORDER BY key")]

    def save_alerts(self, alerts: Sequence[Alert]) -> None:
        # Rows in few statements, each its own transaction: a round's changes are many rows.
        # A key once per statement (PostgreSQL's upsert updates a row once): the last given.
        rows = list({a.key: a.row() for a in alerts}.values())
        names = ALERT_COLUMNS.split(", ")
        sets = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
        for part in _parts(rows):
            values = ", ".join(["(" + ", ".join("?" * len(names)) + ")"] * len(part))
            self._run(
                f"INSERT INTO alerts ({ALERT_COLUMNS}) VALUES {values}"
                f" ON CONFLICT (key) DO UPDATE SET {sets}",
                [v for row in part for v in row],
            )

    def add_alert_events(self, events: Sequence[AlertEvent]) -> None:
        rows = [(format_timestamp(e.time), e.key, e.kind, e.event, e.webhook, e.detail) for e in events]
        for part in _parts(rows):
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(part))
            self._run(
                f"INSERT INTO alert_events (time, key, kind, event, webhook, detail) VALUES {values}",
                [v for row in part for v in row],
            )

    def alert_events(self, limit: int = 100) -> list[AlertEvent]:
        rows = self._run(
            "SELECT time, key, kind, event, webhook, detail FROM alert_events ORDER BY id DESC LIMIT ?",
            (int(limit),),
        )
        return [AlertEvent(parse_timestamp(t), k, kind, e, w, d) for t, k, kind, e, w, d in rows]

    def forget_alerts_naming(self, value: str) -> int:
        names = naming(value)
        keys = [r[0] for r in self._run("SELECT key, sentence, link FROM alerts") if any(map(names, r))]
        events = self._run("SELECT id, key, detail FROM alert_events")
        lines = [i for i, key, detail in events if names(key) or names(detail)]
        for part in _parts(keys):
            self._run(f"DELETE FROM alerts WHERE key IN ({', '.join('?' * len(part))})", part)
        for part in _parts(lines):
            self._run(f"DELETE FROM alert_events WHERE id IN ({', '.join('?' * len(part))})", part)
        return len(keys) + len(lines)

    def forget_alerts(self, before: datetime) -> None:
        cutoff = format_timestamp(before)
        self._run("DELETE FROM alert_events WHERE time < ?", (cutoff,))
        self._run("DELETE FROM alerts WHERE status = 'cleared' AND cleared < ?", (cutoff,))
