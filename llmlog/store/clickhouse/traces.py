"""Spans and span events (OTLP) in the ClickHouse store: `ClickHouseStore`'s part of `Traces`.

ClickHouse has no transaction to hold regulated mode's setting still while rows go in, so
a write of spans or events does what a call's insert does (`ClickHouseStore.insert`): the
settings are read just before it (clear text sealed with a key, refused without) and again
just after; if the store turned sealed-only meanwhile, the clear rows it let in are deleted
again and refused. A span sent again is a newer version of its row; changing one (`llmlog
keys rotate`) writes the new version and deletes the older ones, a mutation that rewrites
the parts holding them.

A trace's figures (`list_traces`, `trace_summary`) are computed as they are read, not kept:
the other stores' `traces` table is kept by triggers that count each row once as it is
inserted, and here nothing can. A call sent twice at once is two rows of `call_data` until
its parts merge (`ReplacingMergeTree`), a span sent again is a second version of its row,
and a new cost or an erasure is a mutation, which a materialized view never sees (`daily`
is summed again by day for it: `ClickHouseStore._recount`). So the figures are an aggregate
over what is stored, each call counted once by its id and each span once by its id (its
newest version), with the same meaning as `llmlog.store.trace_rollup`'s: one trace's calls
are found through the bloom filter on `call_data.trace_id` (migration 8), its spans by the
sorting key of `spans`, which leads with the trace id. Erasure and retention need nothing
here, since what they delete is no longer summed.

A list of the newest traces sums only the traces that may be in it, looking back in steps
(`_WINDOWS`): a trace that started at or after a time has all its calls and spans at or
after it, so the traces with something stored since then, summed whole, hold every trace
that started since then; when those that pass the filter fill the list, it is the list.
Else the look goes further back, to all traces at last. The traces a filter on a value asks
for are looked for among those with a call (a root span, a failure) of that value, which any
such trace has: a list of one user's traces reads that user's calls, not every trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from llmlog.core.encryption import Policy, trace_clear_parts
from llmlog.core.filters import TraceFilter
from llmlog.core.record import Span, SpanEvent, TraceSummary, json_text
from llmlog.store import trace_rollup
from llmlog.store.base import NAMING_ATTRIBUTES, Store
from llmlog.store.clickhouse import CLICKHOUSE
from llmlog.store.clickhouse.engine import Engine, utc_time
from llmlog.store.content import digest
from llmlog.store.regulated import Admitted, Refused
from llmlog.store.traces import SPAN_COLUMNS, newest_forms

_INSERTED = ["trace_id", "span_id", *SPAN_COLUMNS, "call_id", "version"]
_EVENT_COLUMNS = ["key", "trace_id", "span_id", "name", "attributes", "body", "received"]
# The newest version of each span; the call it became from whichever version named it.
_LATEST = f"trace_id, span_id, {', '.join(f'argMax({c}, version)' for c in SPAN_COLUMNS)}, max(call_id)"


# How far back from `until` (or now) a list first looks, then looks again: most lists are of
# the newest traces; the last look has no bound.
_WINDOWS = (timedelta(hours=1), timedelta(hours=8), timedelta(days=3), timedelta(days=21), None)


def _candidates(f: TraceFilter, since: datetime | None) -> tuple[str, list[Any]]:
    """The ids of the traces with a call or a span at or after `since` (ever, when None) that
    may pass `f`: for a filter on a value, those with a call of it (a root span of that name,
    a failed call or span), which every trace passing it has. Its parameters."""
    calls, spans = ["trace_id IS NOT NULL"], ["true"]
    params: tuple[list[Any], list[Any]] = ([], [])
    if since is not None:
        calls.append("timestamp >= %s")
        spans.append("start_time >= %s")
        params[0].append(since)
        params[1].append(since)
    value = next(
        ((c, getattr(f, c)) for c in ("feature", "user_id", "session_id") if getattr(f, c) is not None), None
    )
    if value is not None:
        calls.append(f"{value[0]} = %s")
        params[0].append(value[1])
        spans.append("false")
    elif f.name is not None:
        calls.append("false")
        spans += ["parent_id IS NULL", "name = %s"]
        params[1].append(f.name)
    elif f.errors:
        calls.append("error IS NOT NULL")
        spans.append("status = 'error'")
    sql = (
        f"SELECT assumeNotNull(trace_id) FROM call_data WHERE {' AND '.join(calls)}"
        f" UNION DISTINCT SELECT trace_id FROM spans WHERE {' AND '.join(spans)}"
    )
    return sql, [*params[0], *params[1]]


def _figures_sql(where: str = "") -> str:
    """Each trace's figures, in `trace_rollup.SUMMARY_COLUMNS` order, from its calls (each
    once, by id) and its spans (each once, its newest version); `where`, a condition on
    `trace_id` (its parameters given twice), narrows them to some traces. Filters on the
    figures go in a HAVING clause after it."""
    also = f" AND {where}" if where else ""
    end = CLICKHOUSE.later_by_ms("c.at", "c.latency")

    def first(column: str) -> str:
        # The earliest call's value among those that have one (of calls made at once, the
        # smallest value), as from scratch elsewhere (`trace_rollup.VALUES_AT`).
        return (
            f"CAST(argMinIf(c.{column}, (c.at, assumeNotNull(c.{column})), c.{column} IS NOT NULL)"
            " AS Nullable(String))"
        )

    # The inner columns have names of their own: ClickHouse reads a name as its alias first.
    calls = f"""
        SELECT assumeNotNull(c.trace) AS trace_id, min(c.at) AS t_started,
            CAST(max({end}) AS Nullable(DateTime64(6, 'UTC'))) AS t_ended,
            CAST(NULL AS Nullable(String)) AS t_name, CAST(NULL AS Nullable(String)) AS t_service,
            toInt64(0) AS t_spans, toInt64(count()) AS t_calls, toInt64(sum(c.failed)) AS t_errors,
            toInt64(0) AS t_failed_spans, toInt64(sum(ifNull(c.input, 0))) AS t_input,
            toInt64(sum(ifNull(c.output, 0))) AS t_output, toFloat64(sum(ifNull(c.cost, 0))) AS t_cost,
            {first("feature")} AS t_feature, {first("user")} AS t_user, {first("session")} AS t_session
        FROM (
            SELECT id, any(trace_id) AS trace, any(timestamp) AS at, any(latency_ms) AS latency,
                max(error IS NOT NULL) AS failed, any(input_tokens) AS input, any(output_tokens) AS output,
                any(cost_usd) AS cost, any(feature) AS feature, any(user_id) AS user,
                any(session_id) AS session
            FROM call_data WHERE trace_id IS NOT NULL{also} GROUP BY id
        ) AS c
        GROUP BY c.trace"""
    latest = ", ".join(
        f"argMax({c}, version) AS s_{c}"
        for c in ("parent_id", "name", "start_time", "end_time", "status", "service")
    )
    root = "s.s_parent_id IS NULL"
    spans = f"""
        SELECT s.trace_id AS trace_id, min(s.s_start_time) AS t_started,
            CAST(max(s.s_end_time) AS Nullable(DateTime64(6, 'UTC'))) AS t_ended,
            if(countIf({root}) > 0, argMinIf(s.s_name, (s.s_start_time, s.span_id), {root}), NULL) AS t_name,
            CAST(argMinIf(s.s_service, (s.s_start_time, s.span_id), {root}) AS Nullable(String)) AS t_service,
            toInt64(count()) AS t_spans, toInt64(0) AS t_calls, toInt64(0) AS t_errors,
            toInt64(countIf(s.s_status = 'error')) AS t_failed_spans, toInt64(0) AS t_input,
            toInt64(0) AS t_output,
            toFloat64(0) AS t_cost, CAST(NULL AS Nullable(String)) AS t_feature,
            CAST(NULL AS Nullable(String)) AS t_user, CAST(NULL AS Nullable(String)) AS t_session
        FROM (
            SELECT trace_id, span_id, {latest} FROM spans {f"WHERE {where}" if where else ""}
            GROUP BY trace_id, span_id
        ) AS s
        GROUP BY s.trace_id"""
    summed = (
        "min(p.t_started) AS started, max(p.t_ended) AS ended, max(p.t_name) AS name,"
        " max(p.t_service) AS service, sum(p.t_spans) AS spans, sum(p.t_calls) AS calls,"
        " sum(p.t_errors) AS errors, sum(p.t_failed_spans) AS failed_spans, sum(p.t_input) AS input_tokens,"
        " sum(p.t_output) AS output_tokens, sum(p.t_cost) AS cost_usd, max(p.t_feature) AS feature,"
        " max(p.t_user) AS user_id, max(p.t_session) AS session_id"
    )
    return (
        f"SELECT p.trace_id AS trace_id, {summed} FROM ({calls} UNION ALL {spans}) AS p GROUP BY p.trace_id"
    )


def naming_sql(column: str, value: str, fields: Sequence[str]) -> tuple[str, list[Any]]:
    """A condition on a row of `spans` or `span_events` that names the person erasure is for
    (`Store.erase`: `column` = `value`): an attribute of `NAMING_ATTRIBUTES` equal to it, or
    it as a JSON string in one of `fields` (JSON, as `json_text` writes it); its parameters."""
    names = NAMING_ATTRIBUTES[column]
    named = [f"JSONExtractString(attributes, '{a}') = %s" for a in names]
    found = [f"position({f}, %s) > 0" for f in fields]
    return f"({' OR '.join(named + found)})", [*[value] * len(names), *[json_text(value)] * len(fields)]


def _span(row: Sequence[Any]) -> Span:
    t, s, p, n, k, st, en, status, message, attrs, evs, service, call = row
    return Span(t, s, p, n, k, utc_time(st), utc_time(en) if en else None, status, message,
                json.loads(attrs or "{}"), json.loads(evs or "[]"), service, call)  # fmt: skip


def _span_row(s: Span, version: int) -> list[Any]:
    return [s.trace_id, s.span_id, s.parent_id, s.name, s.kind, s.start, s.end, s.status, s.status_message,
            json_text(s.attributes), json_text(s.events), s.service, s.call_id, version]  # fmt: skip


def _event_row(e: SpanEvent, received: int) -> list[Any]:
    """An event as `span_events` keeps it: keyed by a hash of its form as stored."""
    attributes, body = json_text(e.attributes), json_text(e.body)
    key = digest(f"{e.trace_id}\n{e.span_id}\n{e.name}\n{attributes}\n{body}").hex()
    return [key, e.trace_id, e.span_id, e.name, attributes, body, received]


def _version() -> int:
    return int(datetime.now(UTC).timestamp() * 1e6)


class ClickHouseTraces(Store):
    """The part of `ClickHouseStore` that keeps traces; its engine, statements and settings
    are the store's."""

    engine: Engine

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _mutate(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def _settings_now(self) -> dict[str, Any]:
        raise NotImplementedError

    def _cleared(self, admitted: Admitted[Any], after: dict[str, Any]) -> list[tuple[int, Any]]:
        """After a write that raced the sealed-only mark: what it stored that the mark refuses."""
        if self.keyring is not None or not Policy.from_settings(after).required:
            return []
        return [
            (i, r) for i, r in zip(admitted.positions, admitted.records, strict=True) if trace_clear_parts(r)
        ]

    @staticmethod
    def _taken_back(wrong: list[tuple[int, Any]], what: str) -> list[Refused]:
        said = (
            f"{what}: the store was made to keep text encrypted (regulated mode) while it was stored"
            " with clear text; it was deleted again"
        )
        return [Refused(i, said) for i, _ in wrong]

    def insert_spans(self, spans: Sequence[Span]) -> list[Refused]:
        if not spans:
            return []
        spans = self._sealed_spans(spans)
        before = self._settings_now()
        admitted = self._enforce_spans(spans, before)
        if not admitted.records:
            return admitted.refused
        version = _version()
        # A span twice in the batch is one row: two rows of one version would tie.
        rows = [_span_row(s, version) for s in newest_forms(admitted.records)]
        self.engine.insert("spans", _INSERTED, rows)
        after = self._settings_now()
        if after != before and (wrong := self._cleared(admitted, after)):
            ids = [(s.trace_id, s.span_id) for _, s in wrong]
            self._mutate(
                "ALTER TABLE spans DELETE WHERE (trace_id, span_id) IN %s AND version = %s", [ids, version]
            )
            admitted.refused += self._taken_back(wrong, "span")
        return sorted(admitted.refused)

    def existing_spans(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        keys = sorted(set(keys))
        for i in range(0, len(keys), 5000):
            part = keys[i : i + 5000]
            # The trace ids first: the sorting key leads with them.
            rows = self._select(
                "SELECT DISTINCT trace_id, span_id FROM spans"
                " WHERE trace_id IN %s AND (trace_id, span_id) IN %s",
                [sorted({t for t, _ in part}), part],
            )
            found.update((t, s) for t, s in rows)
        return found

    def traces(self, trace_ids: Sequence[str]) -> list[Span]:
        if not trace_ids:
            return []
        rows = self._select(
            f"SELECT {_LATEST} FROM spans WHERE trace_id IN %s"
            " GROUP BY trace_id, span_id ORDER BY 6, span_id",
            [sorted(set(trace_ids))],
        )
        return [_span(row) for row in rows]

    def spans_of_call(self, trace_id: str, call_id: str, limit: int = 20) -> list[Span]:
        # Within the trace (the sorting key's first column); each span's newest version, of
        # those a version of which names the call.
        rows = self._select(
            f"SELECT {_LATEST} FROM spans WHERE trace_id = %s AND span_id IN"
            " (SELECT span_id FROM spans WHERE trace_id = %s AND call_id = %s)"
            f" GROUP BY trace_id, span_id ORDER BY 6, span_id LIMIT {int(limit)}",
            [trace_id, trace_id, call_id],
        )
        return [_span(row) for row in rows]

    def spans_by_id(self, trace_id: str, span_ids: Sequence[str]) -> list[Span]:
        if not span_ids:
            return []
        rows = self._select(
            f"SELECT {_LATEST} FROM spans WHERE trace_id = %s AND span_id IN %s GROUP BY trace_id, span_id",
            [trace_id, sorted(set(span_ids))],
        )
        return [_span(row) for row in rows]

    def list_traces(self, f: TraceFilter, limit: int = 50) -> list[TraceSummary]:
        # The conditions the other stores put on `traces`, here on the figures as summed.
        clauses, params = trace_rollup.filter_sql(CLICKHOUSE, f)
        top = f.until or datetime.now(UTC)
        for window in _WINDOWS:
            since = None if window is None else top - window
            last = since is None or (f.since is not None and since <= f.since)
            if f.since is not None and (since is None or since < f.since):
                since = f.since  # the filter's own bound is as far back as any look need go
            among, among_params = _candidates(f, since)
            having = [*clauses, *(["started >= %s"] if since is not None else [])]
            sql = (
                f"{_figures_sql(f'trace_id IN ({among})')}"
                f"{' HAVING ' + ' AND '.join(having) if having else ''}"
                f" ORDER BY started DESC, trace_id DESC LIMIT {int(limit)}"
            )
            rows = self._select(sql, [*among_params, *among_params, *params, *([since] if since else [])])
            if len(rows) >= limit or last:
                return [trace_rollup.summary(row, utc_time) for row in rows]
        raise AssertionError("the last look has no bound")

    def trace_summary(self, trace_id: str) -> TraceSummary | None:
        rows = self._select(_figures_sql("trace_id = %s"), [trace_id, trace_id])
        return trace_rollup.summary(rows[0], utc_time) if rows else None

    def insert_span_events(self, events: Sequence[SpanEvent]) -> list[Refused]:
        if not events:
            return []
        events = self._sealed_events(events)
        before = self._settings_now()
        admitted = self._enforce_events(events, before)
        if not admitted.records:
            return admitted.refused
        rows = [_event_row(e, time.time_ns()) for e in admitted.records]
        self.engine.insert("span_events", _EVENT_COLUMNS, rows)
        after = self._settings_now()
        if after != before and (wrong := self._cleared(admitted, after)):
            # By key and arrival: the same event kept before the mark is rotation's to seal.
            placed = dict(zip(admitted.positions, rows, strict=True))
            ids = [(placed[i][0], placed[i][6]) for i, _ in wrong]
            self._mutate("ALTER TABLE span_events DELETE WHERE (key, received) IN %s", [ids])
            admitted.refused += self._taken_back(wrong, "log event")
        return sorted(admitted.refused)

    def span_events(self, spans: Sequence[tuple[str, str]]) -> list[SpanEvent]:
        if not spans:
            return []
        wanted = set(spans)
        # By trace (the sorting key's first column); the few other spans' events of those
        # traces are left out here.
        rows = self._select(
            "SELECT trace_id, span_id, name, any(attributes), any(body), min(received) FROM span_events"
            " WHERE trace_id IN %s GROUP BY trace_id, span_id, name, key ORDER BY 6",
            [sorted({t for t, _ in wanted})],
        )
        return [
            SpanEvent(t, s, n, json.loads(a or "{}"), json.loads(b) if b else None)
            for t, s, n, a, b, _ in rows
            if (t, s) in wanted
        ]

    def _delete_spans(self, where: str, params: Sequence[Any]) -> tuple[int, int]:
        """The spans one of whose versions `where` picks (on `spans`), every version of them
        (an older one left would stand for the span), and their events; how many spans and
        events. The events first: they are found through the spans."""
        picked = f"(trace_id, span_id) IN (SELECT trace_id, span_id FROM spans WHERE {where})"
        spans = int(
            self._select(f"SELECT uniqExact(trace_id, span_id) FROM spans WHERE {where}", params)[0][0]
        )
        if not spans:
            return 0, 0
        events = int(self._select(f"SELECT count() FROM span_events WHERE {picked}", params)[0][0])
        if events:
            self._mutate(f"ALTER TABLE span_events DELETE WHERE {picked}", params)
        self._mutate(f"ALTER TABLE spans DELETE WHERE {picked}", params)
        return spans, events

    def purge_traces(self, before: datetime) -> int:
        n = sum(self._delete_spans("start_time < %s", [before]))
        old = int(
            self._select(
                "SELECT count() FROM span_events WHERE received < %s", [int(before.timestamp() * 1e9)]
            )[0][0]
        )
        if old:
            self._mutate(
                "ALTER TABLE span_events DELETE WHERE received < %s", [int(before.timestamp() * 1e9)]
            )
        return n + old

    def drop_span_events(self, spans: Sequence[tuple[str, str]], before: int) -> int:
        if not spans:
            return 0
        where = "(trace_id, span_id) IN %s AND received < %s"
        params = [sorted(set(spans)), before]
        n = int(self._select(f"SELECT count() FROM span_events WHERE {where}", params)[0][0])
        if n:
            self._mutate(f"ALTER TABLE span_events DELETE WHERE {where}", params)
        return n

    def expire_span_events(self, before: int) -> int:
        n = int(self._select("SELECT count() FROM span_events WHERE received < %s", [before])[0][0])
        if n:  # a mutation rewrites parts: only when there is something to delete
            self._mutate("ALTER TABLE span_events DELETE WHERE received < %s", [before])
        return n

    # -------------------------------------------------------------- for `llmlog keys rotate`

    def iter_spans(self, batch: int = 1000) -> Iterator[Span]:
        after = ("", "")
        while True:
            rows = self._select(
                f"SELECT {_LATEST} FROM spans WHERE (trace_id, span_id) > (%s, %s)"
                f" GROUP BY trace_id, span_id ORDER BY trace_id, span_id LIMIT {int(batch)}",
                list(after),
            )
            yield from (_span(row) for row in rows)
            if len(rows) < batch:
                return
            after = (rows[-1][0], rows[-1][1])

    def update_spans(self, spans: Sequence[Span]) -> list[Refused]:
        """A new version of each span, then its older versions deleted (a mutation): none
        of their text is left in the parts in use. Checked before only, as `update_content`."""
        if not spans:
            return []
        spans = self._sealed_spans(spans)
        admitted = self._enforce_spans(spans, self._settings_now())
        if admitted.records:
            version = _version()
            self.engine.insert("spans", _INSERTED, [_span_row(s, version) for s in admitted.records])
            ids = [(s.trace_id, s.span_id) for s in admitted.records]
            self._mutate(
                "ALTER TABLE spans DELETE WHERE (trace_id, span_id) IN %s AND version < %s", [ids, version]
            )
        return admitted.refused

    def iter_span_events(self, batch: int = 1000) -> Iterator[tuple[Any, SpanEvent]]:
        after = ""
        while True:
            rows = self._select(
                "SELECT key, trace_id, span_id, name, any(attributes), any(body) FROM span_events"
                f" WHERE key > %s GROUP BY key, trace_id, span_id, name ORDER BY key LIMIT {int(batch)}",
                [after],
            )
            yield from ((k, SpanEvent(t, s, n, json.loads(a or "{}"), json.loads(b) if b else None))
                        for k, t, s, n, a, b in rows)  # fmt: skip
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def replace_span_events(self, events: Sequence[tuple[Any, SpanEvent]]) -> list[Refused]:
        """The new forms inserted where the old ones came (their arrival kept), then the old
        ones deleted (a mutation). Checked before only, as `update_content`."""
        if not events:
            return []
        keys = [key for key, _ in events]
        sealed = self._sealed_events([e for _, e in events])
        admitted = self._enforce_events(sealed, self._settings_now())
        if admitted.records:
            old = [keys[i] for i in admitted.positions]
            received = dict(
                self._select("SELECT key, min(received) FROM span_events WHERE key IN %s GROUP BY key", [old])
            )
            rows = [
                _event_row(e, received.get(k, time.time_ns()))
                for k, e in zip(old, admitted.records, strict=True)
            ]
            self.engine.insert("span_events", _EVENT_COLUMNS, rows)
            gone = sorted(set(old) - {r[0] for r in rows})
            if gone:
                self._mutate("ALTER TABLE span_events DELETE WHERE key IN %s", [gone])
        return admitted.refused
