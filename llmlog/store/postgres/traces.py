"""Spans and span events (OTLP) in the PostgreSQL store: `PostgresStore`'s part of `Traces`.

Every write reads the store's settings first in its own transaction, after the share lock
on the content epoch that `llmlog keys rotate`'s sealed-only mark conflicts with (as a
call's insert does), so regulated mode holds for spans however long ago the store was
opened: a span or event with clear text is sealed by a process with a key and refused,
alone, by one without, once the store keeps text sealed only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from llmlog.core.filters import TraceFilter
from llmlog.core.record import Span, SpanEvent, TraceSummary, json_text
from llmlog.store import trace_rollup
from llmlog.store.base import NAMING_ATTRIBUTES, Store
from llmlog.store.content import digest
from llmlog.store.postgres import POSTGRES
from llmlog.store.regulated import Refused
from llmlog.store.traces import SPAN_COLUMNS, newest_forms

# PostgreSQL text holds neither NUL nor unpaired surrogates (jsonb refuses \u0000 too).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """The value with every character PostgreSQL cannot hold replaced by U+FFFD."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


_SPAN_COLUMNS = (
    "trace_id, span_id, parent_id, name, kind, start_time, end_time, status, status_message,"
    " attributes, events, service, call_id"
)


# A batch of spans as arrays, one a column, in the table's order.
_BATCH = (
    "unnest("
    + ", ".join(f"%b::{kind}[]" for kind in ("text",) * 5 + ("timestamptz",) * 2 + ("text",) * 6)
    + ") AS u(t, s, p, n, k, st, en, status, msg, a, e, svc, c)"
)
# Each of a span's columns that a newer form replaces (`SPAN_COLUMNS`), as the batch gives it.
_NEW = {"parent_id": "u.p", "name": "u.n", "kind": "u.k", "start_time": "u.st", "end_time": "u.en",
        "status": "u.status", "status_message": "u.msg", "attributes": "u.a::jsonb", "events": "u.e::jsonb",
        "service": "u.svc"}  # fmt: skip
_FORM = f"u.t, u.s, {', '.join(_NEW[c] for c in SPAN_COLUMNS)}, u.c"
# The new ones; those kept already are left to `_REPLACE_SPANS`.
_INSERT_SPANS = (
    f"INSERT INTO spans SELECT {_FORM} FROM {_BATCH} ORDER BY u.t, u.s"
    " ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id"
)
# Those kept already, replaced by their newer form where it differs (jsonb compares as
# values), keeping their call id or gaining the one they lacked. In a statement of its own:
# its UPDATE trigger sums their traces again (`trace_schema._triggers`).
_REPLACE_SPANS = (
    "UPDATE spans SET "
    + ", ".join(f"{c} = {_NEW[c]}" for c in SPAN_COLUMNS)
    + f", call_id = coalesce(spans.call_id, u.c) FROM {_BATCH}"
    " WHERE spans.trace_id = u.t AND spans.span_id = u.s AND ("
    + " OR ".join(f"spans.{c} IS DISTINCT FROM {_NEW[c]}" for c in SPAN_COLUMNS)
    + " OR (spans.call_id IS NULL AND u.c IS NOT NULL))"
)


def _span(row: Sequence[Any]) -> Span:
    t, s, p, n, k, st, en, status, message, attrs, evs, service, call = row
    return Span(t, s, p, n, k, st.astimezone(UTC), en.astimezone(UTC) if en else None, status, message,
                attrs or {}, evs or [], service, call)  # fmt: skip


def naming_sql(column: str, value: str, fields: Sequence[str]) -> tuple[str, list[Any]]:
    """A condition on a row of `spans` or `span_events` that names the person erasure is for
    (`Store.erase`: `column` = `value`): an attribute of `NAMING_ATTRIBUTES` equal to it, or
    it as a JSON string in one of `fields` (jsonb, as its text writes one); its parameters."""
    names = NAMING_ATTRIBUTES[column]
    named = [f"attributes ->> '{a}' = %s" for a in names]
    found = [f"strpos({f}::text, %s) > 0" for f in fields]
    needle = json.dumps(value, ensure_ascii=False)
    return f"({' OR '.join(named + found)})", [*[value] * len(names), *[needle] * len(fields)]


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows of spans as a batch's arrays, one a column (`_BATCH`)."""
    return [list(c) for c in zip(*rows, strict=True)]


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


def _event_row(e: SpanEvent, received: int) -> tuple[Any, ...]:
    """An event as `span_events` keeps it: keyed by a hash of its form as stored."""
    name, attributes, body = storable(e.name), json_text(storable(e.attributes)), json_text(storable(e.body))
    key = digest(f"{e.trace_id}\n{e.span_id}\n{name}\n{attributes}\n{body}")
    return (key, e.trace_id, e.span_id, name, attributes, body, received)


class PostgresTraces(Store):
    """The part of `PostgresStore` that keeps traces; its connection and the settings each
    writing transaction reads first are the store's."""

    @property
    def conn(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _settings_now(self, cur: psycopg.Cursor[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def insert_spans(self, spans: Sequence[Span]) -> list[Refused]:
        spans = self._sealed_spans(spans)
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            # Regulated mode as the settings say now, not as when the store was opened.
            admitted = self._enforce_spans(spans, self._settings_now(cur))
            # One statement for the batch, so that the trigger keeping `traces` runs once a
            # batch (as for calls), not once a span; and one more for the spans kept already,
            # when there are any. A span twice in the batch is one row, as one statement must
            # have it (`newest_forms`). In key order: writers take the rows of `traces` in one
            # order, as the calls' trigger does.
            rows = sorted(
                [s.trace_id, s.span_id, s.parent_id, storable(s.name), storable(s.kind), s.start, s.end,
                 s.status, storable(s.status_message), json_text(storable(s.attributes)),
                 json_text(storable(s.events)), storable(s.service), storable(s.call_id)]
                for s in newest_forms(admitted.records)
            )  # fmt: skip
            if rows:
                new = set(cur.execute(_INSERT_SPANS, _columns(rows), binary=True).fetchall())
                kept = [r for r in rows if (r[0], r[1]) not in new]
                if kept:
                    cur.execute(_REPLACE_SPANS, _columns(kept), binary=True)
        return admitted.refused

    def existing_spans(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        traces, spans = zip(*keys, strict=True)
        rows = self.conn.execute(
            "SELECT trace_id, span_id FROM spans"
            " WHERE (trace_id, span_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            (list(traces), list(spans)),
        )
        return {(t, s) for t, s in rows}

    def traces(self, trace_ids: Sequence[str]) -> list[Span]:
        rows = self.conn.execute(
            f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = ANY(%s) ORDER BY start_time, span_id",
            (sorted(set(trace_ids)),),
        )
        return [_span(row) for row in rows]

    def spans_of_call(self, trace_id: str, call_id: str, limit: int = 20) -> list[Span]:
        rows = self.conn.execute(
            f"SELECT {_SPAN_COLUMNS} FROM spans WHERE call_id = %s AND trace_id = %s"
            " ORDER BY start_time, span_id LIMIT %s",
            (call_id, trace_id, limit),
        )
        return [_span(row) for row in rows]

    def spans_by_id(self, trace_id: str, span_ids: Sequence[str]) -> list[Span]:
        rows = self.conn.execute(
            f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = %s AND span_id = ANY(%s)",
            (trace_id, sorted(set(span_ids))),
        )
        return [_span(row) for row in rows]

    def list_traces(self, f: TraceFilter, limit: int = 50) -> list[TraceSummary]:
        sql, params = trace_rollup.list_sql(self.dialect, f, limit)
        return [trace_rollup.summary(row, _utc) for row in self.conn.execute(sql, params)]

    def trace_summary(self, trace_id: str) -> TraceSummary | None:
        row = self.conn.execute(trace_rollup.summary_sql(self.dialect), (trace_id,)).fetchone()
        return None if row is None else trace_rollup.summary(row, _utc)

    @staticmethod
    def _erase_from_traces(
        cur: psycopg.Cursor[Any], column: str, value: str, traces: Sequence[str]
    ) -> tuple[int, int]:
        """In erasure's transaction, after its calls went: as SQLite's (the spans of their
        traces and those naming them, with their log events; then the traces they were in,
        and those whose row names them, summed again). How many spans and events went."""
        named, params = naming_sql(column, value, ("attributes", "events"))
        gone = cur.execute(
            f"DELETE FROM spans WHERE trace_id = ANY(%s) OR {named} RETURNING trace_id, span_id",
            [list(traces), *params],
        ).fetchall()
        events = 0
        if gone:
            events = cur.execute(
                "DELETE FROM span_events WHERE (trace_id, span_id)"
                " IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([t for t, _ in gone], [s for _, s in gone]),
            ).rowcount
        rows = cur.execute(f"SELECT trace_id FROM traces WHERE {column} = %s", (value,)).fetchall()
        ids = sorted({*traces, *(t for t, _ in gone), *(t for (t,) in rows)})
        drop, fill = trace_rollup.resum_sql(POSTGRES, "trace_id = ANY(%s)")
        cur.execute(drop, (ids,))
        cur.execute(fill, (ids, ids))
        return len(gone), events

    def insert_span_events(self, events: Sequence[SpanEvent]) -> list[Refused]:
        events = self._sealed_events(events)
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            admitted = self._enforce_events(events, self._settings_now(cur))
            cur.executemany(
                "INSERT INTO span_events VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)"
                " ON CONFLICT (key) DO NOTHING",
                [_event_row(e, time.time_ns()) for e in admitted.records],
            )
        return admitted.refused

    def span_events(self, spans: Sequence[tuple[str, str]]) -> list[SpanEvent]:
        if not spans:
            return []
        traces, ids = zip(*sorted(set(spans)), strict=True)
        rows = self.conn.execute(
            "SELECT trace_id, span_id, name, attributes, body FROM span_events"
            " WHERE (trace_id, span_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY received, key",
            (list(traces), list(ids)),
        )
        return [SpanEvent(t, s, n, a or {}, b) for t, s, n, a, b in rows]

    def drop_span_events(self, spans: Sequence[tuple[str, str]], before: int) -> int:
        if not spans:
            return 0
        traces, ids = zip(*sorted(set(spans)), strict=True)
        with self.conn.transaction():
            return self.conn.execute(
                "DELETE FROM span_events WHERE (trace_id, span_id)"
                " IN (SELECT * FROM unnest(%s::text[], %s::text[])) AND received < %s",
                (list(traces), list(ids), before),
            ).rowcount

    def expire_span_events(self, before: int) -> int:
        with self.conn.transaction():
            return self.conn.execute("DELETE FROM span_events WHERE received < %s", (before,)).rowcount

    # -------------------------------------------------------------- for `llmlog keys rotate`

    def iter_spans(self, batch: int = 1000) -> Iterator[Span]:
        after = ("", "")
        while True:
            rows = self.conn.execute(
                f"SELECT {_SPAN_COLUMNS} FROM spans WHERE (trace_id, span_id) > (%s, %s)"
                " ORDER BY trace_id, span_id LIMIT %s",
                (*after, batch),
            ).fetchall()
            yield from (_span(row) for row in rows)
            if len(rows) < batch:
                return
            after = (rows[-1][0], rows[-1][1])

    def update_spans(self, spans: Sequence[Span]) -> list[Refused]:
        spans = self._sealed_spans(spans)
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            admitted = self._enforce_spans(spans, self._settings_now(cur))
            rows = [
                (storable(s.status_message), json_text(storable(s.attributes)),
                 json_text(storable(s.events)), s.trace_id, s.span_id)
                for s in admitted.records
            ]  # fmt: skip
            cur.executemany(
                "UPDATE spans SET status_message = %s, attributes = %s::jsonb, events = %s::jsonb"
                " WHERE trace_id = %s AND span_id = %s",
                rows,
            )
        return admitted.refused

    def iter_span_events(self, batch: int = 1000) -> Iterator[tuple[Any, SpanEvent]]:
        after = b""
        while True:
            rows = self.conn.execute(
                "SELECT key, trace_id, span_id, name, attributes, body FROM span_events"
                " WHERE key > %s ORDER BY key LIMIT %s",
                (after, batch),
            ).fetchall()
            yield from ((bytes(k), SpanEvent(t, s, n, a or {}, b)) for k, t, s, n, a, b in rows)
            if len(rows) < batch:
                return
            after = bytes(rows[-1][0])

    def replace_span_events(self, events: Sequence[tuple[Any, SpanEvent]]) -> list[Refused]:
        keys = [key for key, _ in events]
        sealed = self._sealed_events([e for _, e in events])
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            admitted = self._enforce_events(sealed, self._settings_now(cur))
            for i, e in zip(admitted.positions, admitted.records, strict=True):
                # Deleted and written anew (the key is a hash of the form), in its place in
                # the order events came; the same event kept already in this form stays once.
                old = cur.execute("DELETE FROM span_events WHERE key = %s RETURNING received", (keys[i],))
                row = old.fetchone()
                if row is not None:
                    cur.execute(
                        "INSERT INTO span_events VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)"
                        " ON CONFLICT (key) DO NOTHING",
                        _event_row(e, row[0]),
                    )
        return admitted.refused
