"""Spans and span events (OTLP) in the SQLite store: `SQLiteStore`'s part of `Traces`.

Every write takes the write lock (BEGIN IMMEDIATE) and reads the store's settings under it,
as a call's insert does, so regulated mode holds for spans however long ago the store was
opened: a span or event with clear text is sealed by a process with a key and refused,
alone, by one without, once the store keeps text sealed only.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

from llmlog.core.filters import TraceFilter
from llmlog.core.record import Span, SpanEvent, TraceSummary, format_timestamp, parse_timestamp
from llmlog.store import trace_rollup
from llmlog.store.base import NAMING_ATTRIBUTES, Store, unicode_text
from llmlog.store.content import digest
from llmlog.store.regulated import Refused
from llmlog.store.traces import SPAN_COLUMNS


def json_safe(value: Any) -> str:
    # Everything non-ASCII escaped: the rare text that is not valid Unicode (a lone
    # surrogate from a \ud800 escape) cannot be stored as UTF-8, but its escape can.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)


_SPAN_COLUMNS = (
    "trace_id, span_id, parent_id, name, kind, start_time, end_time, status, status_message,"
    " attributes, events, service, call_id"
)


# A span kept already is replaced by its newer form only when that differs (as stored: text
# sealed, JSON as `json_safe` writes it), keeping its call id or gaining the one it lacked: the
# same span sent again is no UPDATE, which would sum its trace again (`spans_traces_update`).
_INSERT_SPANS = (
    "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (trace_id, span_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in SPAN_COLUMNS)
    + ", call_id = ifnull(spans.call_id, excluded.call_id) WHERE "
    + " OR ".join(f"spans.{c} IS NOT excluded.{c}" for c in SPAN_COLUMNS)
    + " OR (spans.call_id IS NULL AND excluded.call_id IS NOT NULL)"
)


def _span(row: Sequence[Any]) -> Span:
    t, s, p, n, k, st, en, status, message, attrs, evs, service, call = row
    return Span(t, s, p, n, k, parse_timestamp(st), parse_timestamp(en) if en else None, status, message,
                json.loads(attrs or "{}"), json.loads(evs or "[]"), service, call)  # fmt: skip


def _event(row: Sequence[Any]) -> SpanEvent:
    t, s, n, a, b = row
    return SpanEvent(t, s, n, json.loads(a or "{}"), json.loads(b) if b else None)


def _event_row(e: SpanEvent, received: int) -> tuple[Any, ...]:
    """An event as `span_events` keeps it: keyed by a hash of its form as stored."""
    name, attributes, body = _text(e.name), json_safe(e.attributes), json_safe(e.body)
    key = digest(f"{e.trace_id}\n{e.span_id}\n{name}\n{attributes}\n{body}")
    return (key, e.trace_id, e.span_id, name, attributes, body, received)


def _text(value: Any) -> Any:
    """Text as SQLite can keep it: a lone surrogate (text read from bad UTF-16) replaced by
    U+FFFD, as in a call's text; without it the span was refused as data and lost."""
    return unicode_text(value) if isinstance(value, str) else value


def naming_sql(column: str, value: str, fields: Sequence[str]) -> tuple[str, list[Any]]:
    """A condition on a row of `spans` or `span_events` that names the person erasure is for
    (`Store.erase`: `column` = `value`): an attribute of `NAMING_ATTRIBUTES` equal to it, or
    it as a JSON string in one of `fields` (JSON, as `json_safe` writes it); its parameters."""
    names = NAMING_ATTRIBUTES[column]
    named = [f"CAST(json_extract(attributes, '$.\"{a}\"') AS TEXT) = ?" for a in names]
    found = [f"instr({f}, ?) > 0" for f in fields]
    return f"({' OR '.join(named + found)})", [*[value] * len(names), *[json_safe(value)] * len(fields)]


def _parts(items: Sequence[Any], n: int = 400) -> Iterator[Sequence[Any]]:
    """`items` in parts small enough for one statement's parameters."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


class SQLiteTraces(Store):
    """The part of `SQLiteStore` that keeps traces; its connection, write lock and the
    settings read under it are the store's."""

    db: sqlite3.Connection

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _settings_now(self) -> dict[str, Any]:
        raise NotImplementedError

    def insert_spans(self, spans: Sequence[Span]) -> list[Refused]:
        spans = self._sealed_spans(spans)
        with self._writing():
            # Regulated mode as the settings say now, under the write lock that `llmlog
            # keys rotate` takes to mark the store sealed-only.
            admitted = self._enforce_spans(spans, self._settings_now())
            rows = [
                (s.trace_id, s.span_id, s.parent_id, _text(s.name), _text(s.kind), format_timestamp(s.start),
                 format_timestamp(s.end) if s.end else None, s.status, _text(s.status_message),
                 json_safe(s.attributes), json_safe(s.events), _text(s.service), _text(s.call_id))
                for s in admitted.records
            ]  # fmt: skip
            self.db.executemany(_INSERT_SPANS, rows)
        return admitted.refused

    def existing_spans(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for part in _parts(sorted(set(keys))):
            # Row values, each one a look-up in the primary key.
            marks = ",".join("(?, ?)" for _ in part)
            rows = self.db.execute(
                f"SELECT trace_id, span_id FROM spans WHERE (trace_id, span_id) IN (VALUES {marks})",
                [v for key in part for v in key],
            )
            found.update((t, s) for t, s in rows)
        return found

    def traces(self, trace_ids: Sequence[str]) -> list[Span]:
        rows: list[Any] = []
        for part in _parts(sorted(set(trace_ids))):
            marks = ",".join("?" * len(part))
            rows += self.db.execute(f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id IN ({marks})", part)
        spans = [_span(row) for row in rows]
        spans.sort(key=lambda s: (s.start, s.span_id))
        return spans

    def spans_of_call(self, trace_id: str, call_id: str, limit: int = 20) -> list[Span]:
        # Along `spans_call` (the trace id's `+` keeps the planner off the primary key, which
        # would read the whole trace).
        rows = self.db.execute(
            f"SELECT {_SPAN_COLUMNS} FROM spans WHERE call_id = ? AND +trace_id = ?"
            " ORDER BY start_time, span_id LIMIT ?",
            (call_id, trace_id, limit),
        )
        return [_span(row) for row in rows]

    def spans_by_id(self, trace_id: str, span_ids: Sequence[str]) -> list[Span]:
        rows: list[Any] = []
        for part in _parts(sorted(set(span_ids))):
            marks = ",".join("?" * len(part))
            rows += self.db.execute(
                f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = ? AND span_id IN ({marks})",
                [trace_id, *part],
            )
        return [_span(row) for row in rows]

    def list_traces(self, f: TraceFilter, limit: int = 50) -> list[TraceSummary]:
        sql, params = trace_rollup.list_sql(self.dialect, f, limit)
        return [trace_rollup.summary(row, parse_timestamp) for row in self.db.execute(sql, params)]

    def trace_summary(self, trace_id: str) -> TraceSummary | None:
        row = self.db.execute(trace_rollup.summary_sql(self.dialect), (trace_id,)).fetchone()
        return None if row is None else trace_rollup.summary(row, parse_timestamp)

    def _erase_from_traces(self, column: str, value: str, traces: Sequence[str]) -> tuple[int, int]:
        """In erasure's write transaction, after its calls went: the spans of the traces that
        held the person's calls (`traces`) and the spans anywhere that name them
        (`naming_sql`: a root or chain span's `user.id`, its input), with their log events;
        then those traces, the traces of those spans and those whose row names them
        (`column` = `value`: their calls may have gone to retention before), summed again
        from what is left of them. How many spans and events went."""
        among = "trace_id IN (SELECT value FROM json_each(?))"
        named, params = naming_sql(column, value, ("attributes", "events"))
        picked = f"{among} OR {named}"
        given = [json.dumps(sorted(set(traces))), *params]
        events = self.db.execute(
            "DELETE FROM span_events WHERE (trace_id, span_id) IN"
            f" (SELECT trace_id, span_id FROM spans WHERE {picked})",
            given,
        ).rowcount
        gone = self.db.execute(f"DELETE FROM spans WHERE {picked} RETURNING trace_id", given).fetchall()
        rows = self.db.execute(f"SELECT trace_id FROM traces WHERE {column} = ?", (value,)).fetchall()
        ids = json.dumps(sorted({*traces, *(t for (t,) in gone), *(t for (t,) in rows)}))
        drop, fill = trace_rollup.resum_sql(self.dialect, among)
        self.db.execute(drop, (ids,))
        self.db.execute(fill, (ids, ids))
        return len(gone), events

    def insert_span_events(self, events: Sequence[SpanEvent]) -> list[Refused]:
        events = self._sealed_events(events)
        with self._writing():
            admitted = self._enforce_events(events, self._settings_now())
            self.db.executemany(
                "INSERT INTO span_events VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                [_event_row(e, time.time_ns()) for e in admitted.records],
            )
        return admitted.refused

    def span_events(self, spans: Sequence[tuple[str, str]]) -> list[SpanEvent]:
        wanted = set(spans)
        rows: list[Any] = []
        # By trace (the index's first column); the few other spans' events of those traces
        # are left out here.
        for part in _parts(sorted({t for t, _ in wanted})):
            marks = ",".join("?" * len(part))
            rows += self.db.execute(
                "SELECT received, rowid, trace_id, span_id, name, attributes, body FROM span_events"
                f" WHERE trace_id IN ({marks})",
                part,
            )
        rows.sort(key=lambda r: (r[0], r[1]))
        return [_event(row[2:]) for row in rows if (row[2], row[3]) in wanted]

    def drop_span_events(self, spans: Sequence[tuple[str, str]], before: int) -> int:
        if not spans:
            return 0
        n = 0
        with self._writing():
            for part in _parts(sorted(set(spans))):
                pairs = ",".join(["(?, ?)"] * len(part))
                n += self.db.execute(
                    f"DELETE FROM span_events WHERE (trace_id, span_id) IN (VALUES {pairs}) AND received < ?",
                    [*(v for pair in part for v in pair), before],
                ).rowcount
        return n

    def expire_span_events(self, before: int) -> int:
        # A read first: most sweeps find nothing, and take no write lock for it.
        old = self.db.execute("SELECT 1 FROM span_events WHERE received < ? LIMIT 1", (before,))
        if old.fetchone() is None:
            return 0
        with self._writing():
            return self.db.execute("DELETE FROM span_events WHERE received < ?", (before,)).rowcount

    # -------------------------------------------------------------- for `llmlog keys rotate`

    def iter_spans(self, batch: int = 1000) -> Iterator[Span]:
        after = ("", "")
        while True:
            rows = self.db.execute(
                f"SELECT {_SPAN_COLUMNS} FROM spans WHERE (trace_id, span_id) > (?, ?)"
                " ORDER BY trace_id, span_id LIMIT ?",
                (*after, batch),
            ).fetchall()
            yield from (_span(row) for row in rows)
            if len(rows) < batch:
                return
            after = (rows[-1][0], rows[-1][1])

    def update_spans(self, spans: Sequence[Span]) -> list[Refused]:
        spans = self._sealed_spans(spans)
        with self._writing():
            admitted = self._enforce_spans(spans, self._settings_now())
            self.db.executemany(
                "UPDATE spans SET status_message = ?, attributes = ?, events = ?"
                " WHERE trace_id = ? AND span_id = ?",
                [
                    (
                        _text(s.status_message),
                        json_safe(s.attributes),
                        json_safe(s.events),
                        s.trace_id,
                        s.span_id,
                    )
                    for s in admitted.records
                ],
            )
        return admitted.refused

    def iter_span_events(self, batch: int = 1000) -> Iterator[tuple[Any, SpanEvent]]:
        after = b""
        while True:
            rows = self.db.execute(
                "SELECT key, trace_id, span_id, name, attributes, body FROM span_events"
                " WHERE key > ? ORDER BY key LIMIT ?",
                (after, batch),
            ).fetchall()
            yield from ((row[0], _event(row[1:])) for row in rows)
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def replace_span_events(self, events: Sequence[tuple[Any, SpanEvent]]) -> list[Refused]:
        keys = [key for key, _ in events]
        sealed = self._sealed_events([e for _, e in events])
        with self._writing():
            admitted = self._enforce_events(sealed, self._settings_now())
            for i, e in zip(admitted.positions, admitted.records, strict=True):
                # Deleted and written anew (the key is a hash of the form), in its place in
                # the order events came; the same event kept already in this form stays once.
                old = self.db.execute(
                    "DELETE FROM span_events WHERE key = ? RETURNING received", (keys[i],)
                ).fetchone()
                if old is not None:
                    self.db.execute(
                        "INSERT INTO span_events VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                        _event_row(e, old[0]),
                    )
        return admitted.refused
