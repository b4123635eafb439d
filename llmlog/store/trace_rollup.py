"""`traces`: one row per trace with its figures (`llmlog.core.record.TraceSummary`), so that a
list of recent traces, filtered, and one trace's figures are read without reading every call
or span. Kept by the database itself as `daily` is (`llmlog.store.rollup`), on the engines
that keep `daily` by triggers (SQLite, PostgreSQL): a trigger on the calls and one on the
spans add what each insert brings to its trace's row, one on the calls follows a new cost,
and one on the spans sums a trace again when a span sent again changed it. ClickHouse
computes the same figures when they are read (`clickhouse.traces`).

The SQL here is written once for both engines (what differs is their `Dialect`'s): the same
expressions feed the triggers and the from-scratch computation (`from_scratch_sql`) that fills
the table on migration, sums a trace again after an erasure or a changed span, and that tests
compare it with.

What is counted, and how the triggers and the computation from scratch agree:
- `started`, `ended`: the earliest span start or call time; the latest span end or call end
  (its time plus its latency; its time alone without one).
- `spans`, `failed_spans` (status 'error'), `name`, `service` of the root span (the span with
  no parent; with several, the earliest, then the lowest span id: `root_id`, `root_start`).
  A span is counted in the form stored last (a span sent again with changes replaces the
  one kept: `Traces.insert_spans`).
- `calls`, `errors`, the token sums (NULL as 0), `cost_usd` (the known costs; 0 when none,
  exactly, however often a cost was changed), `priced_calls` (calls with a cost).
- `feature`, `user_id`, `session_id`: each that of the earliest call (by its time) that has
  one; of calls made at the same time, the smallest value. Neither the order calls arrive
  in nor their ids decide it, so the triggers, the computation from scratch and ClickHouse
  agree whatever the order: the triggers keep beside each value the time of the call it came
  from (`feature_at`, `user_at`, `session_at`) and take a new call's value only when it is
  earlier (`MERGE_CALLS`), as a root span is taken (`_EARLIER_ROOT`). A value whose call
  retention deleted before these times were kept has none: it stays (`m018` on SQLite).

An OTLP model call is a span (with `call_id`) and a call: counted once as each. A call a
wrapped client made inside `llmlog.span` is a call whose parent is a span: counted as a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from llmlog.core.filters import TraceFilter
from llmlog.core.record import TraceSummary
from llmlog.store.dialect import Dialect

# `traces`'s columns, in table order: `TraceSummary`'s fields first, then what the triggers
# keep to stay exact (the number of priced calls, the root span and its start, and the time
# of the call each of the feature, user and session came from).
SUMMARY_COLUMNS = (
    "trace_id", "started", "ended", "name", "service", "spans", "calls", "errors", "failed_spans",
    "input_tokens", "output_tokens", "cost_usd", "feature", "user_id", "session_id",
)  # fmt: skip
# Each value a trace takes from its earliest call that has one, and the column keeping that
# call's time.
VALUES_AT = {"feature": "feature_at", "user_id": "user_at", "session_id": "session_at"}
TRACES_COLUMNS = (*SUMMARY_COLUMNS, "priced_calls", "root_id", "root_start", *VALUES_AT.values())
# What the calls give a trace's row, and what its spans give.
FROM_CALLS = (
    "trace_id", "started", "ended", "calls", "errors", "input_tokens", "output_tokens", "cost_usd",
    "priced_calls", *VALUES_AT, *VALUES_AT.values(),
)  # fmt: skip
FROM_SPANS = (
    "trace_id", "started", "ended", "spans", "failed_spans", "name", "service", "root_id", "root_start",
)  # fmt: skip
# A span's columns that its trace's figures read (`spans_sql`): a span sent again that changes
# one of them has its trace summed again.
SPAN_FIGURES = ("parent_id", "name", "start_time", "end_time", "status", "service")

# The filters people use most, each in an index ending in `started`, so that "the newest 50
# of X" is an index range scan; and traces with a failure, in an index of their own.
FILTER_COLUMNS = ("name", "feature", "user_id", "session_id")
FAILED = "(errors > 0 OR failed_spans > 0)"


# A trace's calls by an index (`CallFilter(trace_id=…)`, erasure's sums): the calls in no
# trace, most of them, are left out of it.
CALLS_INDEX = (
    "CREATE INDEX IF NOT EXISTS call_data_trace ON call_data (trace_id, timestamp) WHERE trace_id IS NOT NULL"
)


def index_statements() -> list[str]:
    """The indexes `list_traces` reads along (the same on SQLite and PostgreSQL), in its
    order: started, then trace id (how a page of many traces started at one moment goes on)."""
    return [
        "CREATE INDEX IF NOT EXISTS traces_started ON traces (started, trace_id)",
        *(
            f"CREATE INDEX IF NOT EXISTS traces_{c} ON traces ({c}, started, trace_id)"
            for c in FILTER_COLUMNS
        ),
        f"CREATE INDEX IF NOT EXISTS traces_failed ON traces (started, trace_id) WHERE {FAILED}",
    ]


# ------------------------------------------------------------------ from scratch


def calls_sql(dialect: Dialect, source: str = "call_data", where: str = "") -> str:
    """What the calls in `source` (a table, or a transition table in a trigger) give each of
    their traces, in `FROM_CALLS` order; `where` (a condition) narrows the calls."""
    total = dialect.rollup_sql().total.replace("{x}", "cost_usd")

    def first(column: str, of: str) -> str:
        # Of the earliest call that has a value (the smallest value of calls made at once):
        # `of`, its value or its time.
        order = f"{column} IS NULL, timestamp, {column}{dialect.bytewise}"
        return f"first_value({of}) OVER (PARTITION BY trace_id ORDER BY {order})"

    firsts = ", ".join(
        f"{first(c, c)} AS first_{c}, {first(c, f'CASE WHEN {c} IS NOT NULL THEN timestamp END')}"
        f" AS first_{at}"
        for c, at in VALUES_AT.items()
    )
    picked = ", ".join(f"min(first_{c}) AS {c}" for c in (*VALUES_AT, *VALUES_AT.values()))
    return f"""
        SELECT trace_id, min(timestamp) AS started, max(ended) AS ended, count(*) AS calls,
            count(error) AS errors, CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
            CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens, {total} AS cost_usd,
            count(cost_usd) AS priced_calls, {picked}
        FROM (
            SELECT trace_id, timestamp, {dialect.later_by_ms("timestamp", "latency_ms")} AS ended, error,
                input_tokens, output_tokens, cost_usd, {firsts}
            FROM {source} WHERE trace_id IS NOT NULL{f" AND {where}" if where else ""}
        ) AS c
        GROUP BY trace_id"""


def spans_sql(source: str = "spans", where: str = "") -> str:
    """What the spans in `source` give each of their traces, in `FROM_SPANS` order."""

    def root(column: str) -> str:
        return f"first_value(CASE WHEN parent_id IS NULL THEN {column} END) OVER w"

    return f"""
        SELECT trace_id, min(start_time) AS started, max(end_time) AS ended, count(*) AS spans,
            count(CASE WHEN status = 'error' THEN 1 END) AS failed_spans, min(root_name) AS name,
            min(root_service) AS service, min(root_id) AS root_id, min(root_start) AS root_start
        FROM (
            SELECT trace_id, start_time, end_time, status, {root("name")} AS root_name,
                {root("service")} AS root_service, {root("span_id")} AS root_id,
                {root("start_time")} AS root_start
            FROM {source} {f"WHERE {where}" if where else ""}
            WINDOW w AS (PARTITION BY trace_id ORDER BY parent_id IS NOT NULL, start_time, span_id)
        ) AS s
        GROUP BY trace_id"""


def from_scratch_sql(dialect: Dialect, where: str = "") -> str:
    """`traces`'s rows computed from the calls and spans stored, in `TRACES_COLUMNS` order;
    `where`, a condition on `trace_id`, narrows them to some traces (its parameters are
    given twice: once for the calls, once for the spans)."""
    texts = ("name", "service", "root_id", "root_start", *VALUES_AT, *VALUES_AT.values())

    def part(given: Sequence[str]) -> str:
        # Named, as the first part of a UNION names its columns.
        return ", ".join(
            f"{c if c in given else 'NULL' if c in texts else '0.0' if c == 'cost_usd' else '0'} AS {c}"
            for c in TRACES_COLUMNS
        )

    summed = {
        "trace_id": "trace_id", "started": "min(started)", "ended": "max(ended)", "cost_usd": "sum(cost_usd)",
        **{c: f"max({c})" for c in texts},
    }  # fmt: skip
    out = ", ".join(summed.get(c, f"CAST(sum({c}) AS BIGINT)") + f" AS {c}" for c in TRACES_COLUMNS)
    return f"""
        SELECT {out} FROM (
            SELECT {part(FROM_CALLS)} FROM ({calls_sql(dialect, where=where)}) AS from_calls
            UNION ALL
            SELECT {part(FROM_SPANS)} FROM ({spans_sql(where=where)}) AS from_spans
        ) AS parts
        GROUP BY trace_id"""


# ------------------------------------------------------------------ what the triggers add

# A new row's figures added to a trace's row (SQLite's upsert and PostgreSQL's take the same
# clause: `traces.x` is the row as it was, `EXCLUDED.x` what comes). Times compare as the
# column holds them (SQLite: fixed-width text, so text order is time order).
_TIMES = (
    "started = CASE WHEN EXCLUDED.started < traces.started THEN EXCLUDED.started ELSE traces.started END,"
    " ended = CASE WHEN traces.ended IS NULL OR EXCLUDED.ended > traces.ended THEN EXCLUDED.ended"
    " ELSE traces.ended END"
)


def _earlier(value: str, at: str, bytewise: str = "") -> str:
    """Whether what comes (`EXCLUDED`) has a `value` that goes before the row's: the row has
    none, or it is from an earlier time (`at`), or from the same time and smaller (compared
    as `bytewise` says). A value the row has without a time (its call's time unknown) stays."""
    return (
        f"EXCLUDED.{value} IS NOT NULL AND (traces.{value} IS NULL OR EXCLUDED.{at} < traces.{at}"
        f" OR (EXCLUDED.{at} = traces.{at} AND EXCLUDED.{value} < traces.{value}{bytewise}))"
    )


def merge_calls_sql(dialect: Dialect) -> str:
    """What new calls' figures (`EXCLUDED`, in `FROM_CALLS`) do to their trace's row. With no
    priced call left, the cost is 0 exactly, not what adding and taking away leaves."""
    return (
        f"{_TIMES}, "
        + ", ".join(
            f"{c} = traces.{c} + EXCLUDED.{c}" for c in ("calls", "errors", "input_tokens", "output_tokens")
        )
        + ", cost_usd = CASE WHEN traces.priced_calls + EXCLUDED.priced_calls = 0 THEN 0"
        " ELSE traces.cost_usd + EXCLUDED.cost_usd END,"
        " priced_calls = traces.priced_calls + EXCLUDED.priced_calls, "
        + ", ".join(
            f"{v} = CASE WHEN {_earlier(c, at, dialect.bytewise)} THEN EXCLUDED.{v} ELSE traces.{v} END"
            for c, at in VALUES_AT.items()
            for v in (c, at)
        )
    )


_EARLIER_ROOT = _earlier("root_id", "root_start")
MERGE_SPANS = (
    f"{_TIMES}, spans = traces.spans + EXCLUDED.spans,"
    " failed_spans = traces.failed_spans + EXCLUDED.failed_spans, "
    + ", ".join(
        f"{c} = CASE WHEN {_EARLIER_ROOT} THEN EXCLUDED.{c} ELSE traces.{c} END"
        for c in ("name", "service", "root_id", "root_start")
    )
)


def call_row_sql(dialect: Dialect, row: str) -> str:
    """What one call (`NEW` in a row trigger) gives its trace, in `FROM_CALLS` order: the
    same figures `calls_sql` sums."""
    r = f"{row}."
    return (
        f"{r}trace_id, {r}timestamp, {dialect.later_by_ms(f'{r}timestamp', f'{r}latency_ms')}, 1,"
        f" CASE WHEN {r}error IS NULL THEN 0 ELSE 1 END, coalesce({r}input_tokens, 0),"
        f" coalesce({r}output_tokens, 0), coalesce({r}cost_usd, 0.0),"
        f" CASE WHEN {r}cost_usd IS NULL THEN 0 ELSE 1 END, {r}feature, {r}user_id, {r}session_id, "
        + ", ".join(f"CASE WHEN {r}{c} IS NOT NULL THEN {r}timestamp END" for c in VALUES_AT)
    )


def span_row_sql(row: str) -> str:
    """What one span gives its trace, in `FROM_SPANS` order, as `spans_sql` sums it."""
    r = f"{row}."

    def root(value: str) -> str:
        return f"CASE WHEN {r}parent_id IS NULL THEN {value} END"

    return (
        f"{r}trace_id, {r}start_time, {r}end_time, 1, CASE WHEN {r}status = 'error' THEN 1 ELSE 0 END,"
        f" {root(f'{r}name')}, {root(f'{r}service')}, {root(f'{r}span_id')}, {root(f'{r}start_time')}"
    )


def span_changed_sql(dialect: Dialect, old: str, new: str) -> str:
    """Whether a span's form `new` (a row's name) changes what its trace's figures read of
    its form `old` (`SPAN_FIGURES`): then its trace is summed again (`resum_sql`)."""
    same = dialect.null_safe_equal()
    return " OR ".join(f"NOT ({old}.{c} {same} {new}.{c})" for c in SPAN_FIGURES)


def values_by_time_sql(dialect: Dialect) -> str:
    """A statement giving each trace's row the feature, user and session of its earliest
    call that has one, with that call's time (`VALUES_AT`), from the calls stored: those of a
    trace whose calls are all still stored (as many as its row counts). A trace that lost
    calls to retention keeps the values its row has, without a time (which `_earlier` keeps):
    the call they came from may be among those gone."""
    whole = "v.calls = traces.calls"
    sets = ", ".join(
        f"{c} = CASE WHEN {whole} THEN v.{c} ELSE traces.{c} END, {at} = CASE WHEN {whole} THEN v.{at} END"
        for c, at in VALUES_AT.items()
    )
    return f"UPDATE traces SET {sets} FROM ({calls_sql(dialect)}) AS v WHERE v.trace_id = traces.trace_id"


def resum_sql(dialect: Dialect, among: str) -> list[str]:
    """Statements that sum some traces again from what is stored of them (after an erasure
    deleted some of their calls and spans, or a span sent again changed); a trace with
    nothing left loses its row. `among`
    is a condition on `trace_id` naming them, whose parameters the first statement takes
    once and the second twice."""
    return [
        f"DELETE FROM traces WHERE {among}",
        f"INSERT INTO traces ({', '.join(TRACES_COLUMNS)}) {from_scratch_sql(dialect, where=among)}",
    ]


# ------------------------------------------------------------------ reading


def filter_sql(dialect: Dialect, f: TraceFilter) -> tuple[list[str], list[Any]]:
    """`f`'s conditions on a trace's figures (`SUMMARY_COLUMNS` by name), and their parameters."""
    p = dialect.placeholder
    clauses: list[str] = []
    params: list[Any] = []
    for column in FILTER_COLUMNS:
        if getattr(f, column) is not None:
            clauses.append(f"{column} = {p}")
            params.append(getattr(f, column))
    if f.errors:
        clauses.append(FAILED)  # as the partial index says it, so that it is used
    if f.min_duration_ms is not None:
        clauses.append(f"ended IS NOT NULL AND {dialect.ms_between('started', 'ended')} >= {p}")
        params.append(f.min_duration_ms)
    if f.min_cost_usd is not None:
        clauses.append(f"cost_usd >= {p}")
        params.append(f.min_cost_usd)
    if f.since is not None:
        clauses.append(f"started >= {p}")
        params.append(dialect.time_param(f.since))
    if f.until is not None and f.before is not None:
        clauses.append(f"(started < {p} OR (started = {p} AND trace_id < {p}))")
        params += [dialect.time_param(f.until), dialect.time_param(f.until), f.before]
    elif f.until is not None:
        clauses.append(f"started < {p}")
        params.append(dialect.time_param(f.until))
    return clauses, params


def list_sql(dialect: Dialect, f: TraceFilter, limit: int) -> tuple[str, list[Any]]:
    """The newest traces `f` selects from `traces`, newest started first."""
    clauses, params = filter_sql(dialect, f)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order = "ORDER BY started DESC, trace_id DESC"  # the order `TraceFilter.before` goes on in
    sql = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM traces {where} {order} LIMIT {int(limit)}"
    return sql, params


def summary_sql(dialect: Dialect) -> str:
    return f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM traces WHERE trace_id = {dialect.placeholder}"


def summary(row: Sequence[Any], when: Callable[[Any], datetime]) -> TraceSummary:
    """A row of `SUMMARY_COLUMNS` as read, its times read by `when`."""
    t, started, ended, name, service, *counts, cost, feature, user, session = row
    spans, calls, errors, failed, inp, out = (int(n) for n in counts)
    return TraceSummary(
        t, when(started), None if ended is None else when(ended), name, service, spans, calls, errors, failed,
        inp, out, float(cost), feature, user, session,
    )  # fmt: skip
