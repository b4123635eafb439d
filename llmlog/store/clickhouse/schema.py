"""The ClickHouse store's schema: designed for the engine, not translated from PostgreSQL,
and its numbered migrations (`llmlog.store.clickhouse.store` applies them on open).

- `call_data` holds every column inline, the text columns compressed with ZSTD; `calls`
  is a view of it, as in the other stores (so the SQL shared with them reads the same).
  Content is not stored once by hash as in the other stores: ClickHouse compresses a
  column's values block by block, and rows of one feature lie together (the sort key), so
  a system prompt re-sent on every turn compresses to almost nothing without a join on
  every read. (Measured by the bench: stored bytes per call beside the others.)
- `ReplacingMergeTree` on the sort key, which ends in the call's id: a batch sent twice is
  one call once merged; the store also skips ids it already holds before inserting.
- Sorted by (day, feature, model, time, id): the UI's paths (newest calls; of a feature; of
  a model) read a day's granules of one feature or model. Monthly partitions, so retention
  drops whole months where it can.
- Low-cardinality strings (model, feature, provider, version, stop reason, rate card) are
  `LowCardinality`.
- `daily` and `people_daily`: the rollups the dashboard, reports and people pages read, as
  in the other stores. Materialized views keep their parts (`daily_parts`, `people_parts`:
  `AggregatingMergeTree`) as calls arrive; rows of one day and group are added up as the
  parts merge (maps by `sumMap`, distinct users and sessions by `uniqExact` states), and the
  views add up what has not merged yet.

Cluster mode (`LLMLOG_CLICKHOUSE_CLUSTER=name`): every statement runs `ON CLUSTER name`, the
tables are `Replicated…MergeTree` ones named `…_local` on each shard, and `call_data`,
`daily`, `people_daily` and `settings` are `Distributed` tables over them, sharded by the
call's id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from llmlog.core.record import COLUMNS, KIND
from llmlog.store import migrations
from llmlog.store.alerts import HISTORY_DAYS
from llmlog.store.clickhouse import CLICKHOUSE
from llmlog.store.rollup import bucket_sql

TEXT = "Nullable(String) CODEC(ZSTD(3))"
TAG = "LowCardinality(Nullable(String))"

CALL_COLUMNS = f"""
    id String,
    session_id Nullable(String),
    user_id Nullable(String),
    timestamp DateTime64(6, 'UTC'),
    provider {TAG},
    model {TAG},
    feature {TAG},
    prompt_template_version {TAG},
    system_prompt {TEXT},
    messages {TEXT},
    tools {TEXT},
    params {TEXT},
    response {TEXT},
    tool_calls {TEXT},
    stop_reason {TAG},
    input_tokens Nullable(Int64),
    output_tokens Nullable(Int64),
    cache_read_tokens Nullable(Int64),
    cache_creation_tokens Nullable(Int64),
    cost_usd Nullable(Float64),
    rate_card {TAG},
    first_token_ms Nullable(Float64),
    latency_ms Nullable(Float64),
    error {TEXT},
    metadata {TEXT},
    tags Nullable(String),
    trace_id Nullable(String),
    parent_id Nullable(String)
"""

# What search reads (`llmlog.store.search`: the last message, the response, the error),
# lower-cased, computed as a call is stored (and again when a mutation changes it): a search
# then scans one compressed text column instead of parsing every conversation.
SEARCH_COLUMN = (
    "search_text String MATERIALIZED lower(concat(JSONExtractArrayRaw(ifNull(messages, '[]'))[-1], ' ',"
    " ifNull(response, ''), ' ', ifNull(error, ''))) CODEC(ZSTD(3))"
)


# Each figure is an aggregate the engine merges as parts merge (`AggregatingMergeTree`):
# sums as `sum`, the {key: count} maps as `sumMap` (a `SummingMergeTree` keeps one part's map
# of a merged row and drops the others'), and distinct users and sessions as `uniqExact`
# states, which merge into the distinct count of the union (a count cannot be added up).
def _summed(kind: str) -> str:
    return f"SimpleAggregateFunction(sum, {kind})"


DAILY_COLUMNS = f"""
    day Date,
    feature {TAG},
    model {TAG},
    provider {TAG},
    prompt_template_version {TAG},
    calls {_summed("Int64")},
    errors {_summed("Int64")},
    input_tokens {_summed("Int64")},
    output_tokens {_summed("Int64")},
    cache_read_tokens {_summed("Int64")},
    cache_creation_tokens {_summed("Int64")},
    cost_usd {_summed("Float64")},
    priced_calls {_summed("Int64")},
    latency_ms {_summed("Float64")},
    first_token_ms {_summed("Float64")},
    output_calls {_summed("Int64")},
    tool_calls {_summed("Int64")},
    users AggregateFunction(uniqExact, Nullable(String)),
    sessions AggregateFunction(uniqExact, Nullable(String)),
    error_types SimpleAggregateFunction(sumMap, Map(String, Int64)),
    latency_hist SimpleAggregateFunction(sumMap, Map(String, Int64)),
    first_token_hist SimpleAggregateFunction(sumMap, Map(String, Int64))
"""

_tools = CLICKHOUSE.tool_count("c.tool_calls")
_error_type = CLICKHOUSE.error_type("c.error")
_latency = bucket_sql(CLICKHOUSE, "c.latency_ms")
_first = bucket_sql(CLICKHOUSE, "c.first_token_ms")

# What `daily` sums from each call (as the other stores' triggers do). The calls' columns
# are named through `c.`: ClickHouse would take `cost_usd` for the alias of its own sum.
DAILY_SELECT = f"""
    toDate(c.timestamp) AS day, c.feature AS feature, c.model AS model, c.provider AS provider,
    c.prompt_template_version AS prompt_template_version,
    toInt64(count()) AS calls,
    toInt64(countIf(c.error IS NOT NULL)) AS errors,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    sum(ifNull(c.cache_read_tokens, 0)) AS cache_read_tokens,
    sum(ifNull(c.cache_creation_tokens, 0)) AS cache_creation_tokens,
    sum(ifNull(c.cost_usd, 0)) AS cost_usd,
    toInt64(countIf(c.cost_usd IS NOT NULL)) AS priced_calls,
    sum(ifNull(c.latency_ms, 0)) AS latency_ms,
    sum(ifNull(c.first_token_ms, 0)) AS first_token_ms,
    toInt64(countIf(c.output_tokens IS NOT NULL)) AS output_calls,
    toInt64(countIf({_tools} > 0)) AS tool_calls,
    uniqExactState(c.user_id) AS users,
    uniqExactState(c.session_id) AS sessions,
    sumMapIf(map({_error_type}, toInt64(1)), c.error IS NOT NULL) AS error_types,
    sumMapIf(map(ifNull(toString({_latency}), ''), toInt64(1)), {_latency} IS NOT NULL) AS latency_hist,
    sumMapIf(map(ifNull(toString({_first}), ''), toInt64(1)), {_first} IS NOT NULL) AS first_token_hist
"""
PEOPLE_COLUMNS = """
    day Date,
    user_id Nullable(String),
    session_id Nullable(String),
    calls SimpleAggregateFunction(sum, Int64),
    errors SimpleAggregateFunction(sum, Int64),
    input_tokens SimpleAggregateFunction(sum, Int64),
    output_tokens SimpleAggregateFunction(sum, Int64),
    cost_usd SimpleAggregateFunction(sum, Float64),
    priced_calls SimpleAggregateFunction(sum, Int64),
    first SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
"""
PEOPLE_SELECT = """
    toDate(c.timestamp) AS day, c.user_id AS user_id, c.session_id AS session_id,
    toInt64(count()) AS calls,
    toInt64(countIf(c.error IS NOT NULL)) AS errors,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    sum(ifNull(c.cost_usd, 0)) AS cost_usd,
    toInt64(countIf(c.cost_usd IS NOT NULL)) AS priced_calls,
    min(c.timestamp) AS first,
    max(c.timestamp) AS last
"""
COLUMN_NAMES = ", ".join(line.split()[0] for line in CALL_COLUMNS.strip().splitlines())
DAILY_SUMS = ", ".join(
    f"sumMap({c}) AS {c}"
    if c.endswith(("_types", "_hist"))
    else f"toInt64(uniqExactMerge({c})) AS {c}"
    if c in ("users", "sessions")
    else f"sum({c}) AS {c}"
    for c in (line.split()[0] for line in DAILY_COLUMNS.strip().splitlines()[5:])
)
PEOPLE_SUMS = ", ".join(
    f"min({c}) AS {c}" if c == "first" else f"max({c}) AS {c}" if c == "last" else f"sum({c}) AS {c}"
    for c in (line.split()[0] for line in PEOPLE_COLUMNS.strip().splitlines()[3:])
)
DAILY_GROUP = "day, feature, model, provider, prompt_template_version"


class Runner(Protocol):
    def command(self, sql: str) -> None: ...

    def rows(
        self, sql: str, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...


def statements(cluster: str | None = None) -> Iterator[str]:
    """The first schema's DDL, for one server or (`cluster`) a cluster."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    nullable_key = "SETTINGS allow_nullable_key = 1"

    def engine(kind: str, table: str) -> str:
        if not cluster:
            return f"{kind}()"
        path = f"'/clickhouse/tables/{{shard}}/{{database}}/{table}'"
        return f"Replicated{kind}({path}, '{{replica}}')"

    local = "_local" if cluster else ""
    # One call by id (its page, a duplicate check) without reading every id: a bloom filter
    # per granule says where it cannot be.
    by_id = ", INDEX by_id id TYPE bloom_filter(0.001) GRANULARITY 1"
    yield (
        f"CREATE TABLE IF NOT EXISTS call_data{local}{on} ({CALL_COLUMNS}, {SEARCH_COLUMN}{by_id})"
        f" ENGINE = {engine('ReplacingMergeTree', 'call_data')}"
        " PARTITION BY toYYYYMM(timestamp)"
        " ORDER BY (toDate(timestamp), ifNull(feature, ''), ifNull(model, ''), timestamp, id)"
    )
    yield (
        f"CREATE TABLE IF NOT EXISTS daily_parts{local}{on} ({DAILY_COLUMNS})"
        f" ENGINE = {engine('AggregatingMergeTree', 'daily_parts')}"
        f" PARTITION BY toYYYYMM(day) ORDER BY ({DAILY_GROUP}) {nullable_key}"
    )
    yield (
        f"CREATE TABLE IF NOT EXISTS people_parts{local}{on} ({PEOPLE_COLUMNS})"
        f" ENGINE = {engine('AggregatingMergeTree', 'people_parts')}"
        f" PARTITION BY toYYYYMM(day) ORDER BY (day, user_id, session_id) {nullable_key}"
    )
    # Fed by inserts into the (local) table: on a cluster, each shard rolls up its own calls.
    yield (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS daily_rollup{on} TO daily_parts{local}"
        f" AS SELECT {DAILY_SELECT} FROM call_data{local} AS c GROUP BY {DAILY_GROUP}"
    )
    yield (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS people_rollup{on} TO people_parts{local}"
        f" AS SELECT {PEOPLE_SELECT} FROM call_data{local} AS c"
        " WHERE c.user_id IS NOT NULL OR c.session_id IS NOT NULL GROUP BY day, user_id, session_id"
    )
    yield (
        f"CREATE TABLE IF NOT EXISTS settings{local}{on} (key String, value String, version UInt64)"
        f" ENGINE = {engine('ReplacingMergeTree', 'settings')} ORDER BY key"
    )
    if cluster:
        sharding = {"call_data": "cityHash64(id)", "daily_parts": "rand()", "people_parts": "rand()"}
        for table, key in {**sharding, "settings": "cityHash64(key)"}.items():
            yield (
                f"CREATE TABLE IF NOT EXISTS {table}{on} AS {table}_local"
                f" ENGINE = Distributed({cluster}, currentDatabase(), {table}_local, {key})"
            )
    yield f"CREATE VIEW IF NOT EXISTS calls{on} AS SELECT {COLUMN_NAMES} FROM call_data"
    # The rollups as the other stores have them, one row per day and group: the parts not yet
    # merged are added up as they are read (a few rows per day and group at most).
    yield (
        f"CREATE VIEW IF NOT EXISTS daily{on} AS SELECT {DAILY_GROUP}, {DAILY_SUMS}"
        f" FROM daily_parts GROUP BY {DAILY_GROUP}"
    )
    yield (
        f"CREATE VIEW IF NOT EXISTS people_daily{on} AS SELECT day, user_id, session_id, {PEOPLE_SUMS}"
        " FROM people_parts GROUP BY day, user_id, session_id"
    )


# Each kind of the column table (`llmlog.core.record.Column.kind`) as `call_data` holds it.
_TYPES = {
    "id": "String", "text": "Nullable(String)", "timestamp": "DateTime64(6, 'UTC')", "json": TEXT,
    "integer": "Nullable(Int64)", "real": "Nullable(Float64)",
}  # fmt: skip


def add_call_column(runner: Runner, cluster: str | None, name: str) -> None:
    """A column of the table added to `call_data` (on a cluster, each shard's table and the
    distributed one over them): a migration adding a column to
    `llmlog.core.record.CALL_COLUMNS` calls this. The store reads and writes every column of
    the table by name, so nothing else changes."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    for table in ("call_data_local", "call_data") if cluster else ("call_data",):
        runner.command(f"ALTER TABLE {table}{on} ADD COLUMN IF NOT EXISTS {name} {_TYPES[KIND[name]]}")
    # The `calls` view names its columns: made again with those `call_data` has now (a later
    # migration's column is not there yet), in the table's order.
    _, rows = runner.rows(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'call_data'"
    )
    present = {row[0] for row in rows}
    columns = ", ".join(c for c in COLUMNS if c in present)
    runner.command(f"CREATE OR REPLACE VIEW calls{on} AS SELECT {columns} FROM call_data")


def m001_initial(runner: Runner, cluster: str | None) -> None:
    for sql in statements(cluster):
        runner.command(sql)


def m002_accounts(runner: Runner, cluster: str | None) -> None:
    """Accounts and API tokens (`llmlog.operations.accounts`): a handful of rows each, changed by writing
    a newer version of the row (`deleted` = 1 removes it), read with FINAL."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    replicated = "Replicated" if cluster else ""
    for table, key_column in (("accounts", "name String, role String, password String"),
                              ("api_tokens", "name String, hash String, scope String")):  # fmt: skip
        args = f"'/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}', " if cluster else ""
        runner.command(
            f"CREATE TABLE IF NOT EXISTS {table}{on} ({key_column}, created String, version UInt64,"
            f" deleted UInt8) ENGINE = {replicated}ReplacingMergeTree({args}version, deleted) ORDER BY name"
        )


def m003_spans(runner: Runner, cluster: str | None) -> None:
    """Spans and span events received over OTLP. A span sent again (with the call it became)
    is a newer version of its row; an event sent twice is kept once (its key, a hash)."""
    on = f" ON CLUSTER {cluster}" if cluster else ""

    def engine(table: str, version: str = "") -> str:
        if not cluster:
            return f"ReplacingMergeTree({version})"
        path = f"'/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}'"
        return f"ReplicatedReplacingMergeTree({path}{', ' + version if version else ''})"

    runner.command(
        f"CREATE TABLE IF NOT EXISTS spans{on} (trace_id String, span_id String, parent_id Nullable(String),"
        " name String, kind Nullable(String), start_time DateTime64(6, 'UTC'),"
        " end_time Nullable(DateTime64(6, 'UTC')), status Nullable(String), status_message Nullable(String),"
        f" attributes String CODEC(ZSTD(3)), events String CODEC(ZSTD(3)), service Nullable(String),"
        f" call_id Nullable(String), version UInt64) ENGINE = {engine('spans', 'version')}"
        " ORDER BY (trace_id, span_id)"
    )
    runner.command(
        f"CREATE TABLE IF NOT EXISTS span_events{on} (key String, trace_id String, span_id String,"
        " name String, attributes String CODEC(ZSTD(3)), body Nullable(String) CODEC(ZSTD(3)),"
        " received Int64)"
        f" ENGINE = {engine('span_events')} ORDER BY (trace_id, span_id, key)"
    )


def m004_audit_and_vectors(runner: Runner, cluster: str | None) -> None:
    """The audit log of regulated mode, and each call's vector for "calls like this one"
    (`llmlog.store.vectors`, hex), filled only in a store that asks for it."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    engine = (
        "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/audit', '{replica}')"
        if cluster
        else "MergeTree"
    )
    runner.command(
        f"CREATE TABLE IF NOT EXISTS audit{on} (time DateTime64(6, 'UTC'), who String, action String,"
        f" call_ids String CODEC(ZSTD(3))) ENGINE = {engine} ORDER BY time"
    )
    for table in ("call_data_local", "call_data") if cluster else ("call_data",):
        runner.command(f"ALTER TABLE {table}{on} ADD COLUMN IF NOT EXISTS embedding Nullable(String)")


def m005_web_sessions(runner: Runner, cluster: str | None) -> None:
    """Who is signed in to the web UI (`llmlog.web.auth`), by the SHA-256 of the cookie (hex):
    versioned rows as `accounts` (`deleted` = 1 ends a session); the engine drops them once
    expired (TTL). Private: the reader is granted the public tables only (`clickhouse.reader`);
    the embedded store keeps sessions in its private file, and drops this table."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    replicated = "Replicated" if cluster else ""
    args = "'/clickhouse/tables/{shard}/{database}/web_sessions', '{replica}', " if cluster else ""
    runner.command(
        f"CREATE TABLE IF NOT EXISTS web_sessions{on} (hash String, name String, expires Int64,"
        f" version UInt64, deleted UInt8) ENGINE = {replicated}ReplacingMergeTree({args}version, deleted)"
        " ORDER BY hash TTL toDateTime(expires)"
    )


def _part(value: str) -> str:
    """A label in a key, its length first: no two labels (which are anyone's text, '|'
    included) can run together into another's key. NULL is '-', told apart from ''."""
    return f"ifNull(concat(toString(length({value})), ':', {value}), '-')"


def _key(table: str = "") -> str:
    """A `daily` row's day and group as one value, NULL told apart from ''."""
    prefix = f"{table}." if table else ""
    day = f"toDate({prefix}timestamp)" if table == "c" else f"{prefix}day"
    parts = ", '|', ".join(_part(f"{prefix}{g}") for g in DAILY_GROUP.split(", ")[1:])
    return f"concat(toString({day}), '|', {parts})"


def m006_daily_that_merges(runner: Runner, cluster: str | None) -> None:
    """`daily_parts` as an `AggregatingMergeTree` whose merges add the maps up and keep users
    and sessions (the `SummingMergeTree` before it kept one part's maps of a merged row and
    dropped the others'). Rebuilt from the calls; a day and group whose calls are gone (the
    cold tier) keeps its old row, with no users or sessions, which it never counted."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    local = "_local" if cluster else ""

    def has(table: str, column: str | None = None) -> bool:
        where = f"database = currentDatabase() AND table = '{table}'"
        source = "system.columns" if column else "system.tables"
        if column:
            where += f" AND name = '{column}'"
        return int(runner.rows(f"SELECT count() FROM {source} WHERE {where}")[1][0][0]) > 0

    if has(f"daily_parts{local}", "users"):
        return  # made by `statements` as it is now
    runner.command(f"DROP VIEW IF EXISTS daily_rollup{on}")
    runner.command(f"DROP VIEW IF EXISTS daily{on}")
    if cluster:
        runner.command(f"DROP TABLE IF EXISTS daily_parts{on}")
    if not has(f"daily_parts_v1{local}"):  # (renamed already by a run that stopped half way)
        runner.command(f"RENAME TABLE daily_parts{local} TO daily_parts_v1{local}{on}")
    runner.command(f"DROP TABLE IF EXISTS daily_parts{local}{on}")
    for sql in statements(cluster):  # IF NOT EXISTS: what exists is left as it is
        runner.command(sql)
    runner.command(
        f"INSERT INTO daily_parts SELECT {DAILY_SELECT} FROM call_data AS c GROUP BY {DAILY_GROUP}"
    )
    nobody = "uniqExactState(CAST(NULL AS Nullable(String)))"
    old = ", ".join(
        f"sumMap({c})"
        if c.endswith(("_types", "_hist"))
        else nobody
        if c in ("users", "sessions")
        else f"sum({c})"
        for c in (line.split()[0] for line in DAILY_COLUMNS.strip().splitlines()[5:])
    )
    # On a cluster every shard's old rows, read from one replica of each.
    source = f"cluster('{cluster}', currentDatabase(), daily_parts_v1_local)" if cluster else "daily_parts_v1"
    runner.command(
        f"INSERT INTO daily_parts SELECT {DAILY_GROUP}, {old} FROM {source} AS o"
        f" WHERE {_key('o')} NOT IN (SELECT {_key('c')} FROM call_data AS c) GROUP BY {DAILY_GROUP}"
    )
    runner.command(f"DROP TABLE IF EXISTS daily_parts_v1{local}{on}")


def _bad(column: str) -> str:
    """True for a figure no call may have: NaN, ±infinity or negative (not for NULL)."""
    return f"ifNull(NOT isFinite(toFloat64({column})) OR {column} < 0, 0)"


def m007_repair_figures(runner: Runner, cluster: str | None) -> None:
    """Figures stored before they were checked (NaN, infinities, negative costs, times or
    token counts) made NULL, and the rollup rows they fell in summed again from the calls;
    a row whose calls are gone (the cold tier) has its bad sums set to 0."""
    from llmlog.store.clickhouse.engine import bind
    from llmlog.store.rollup import CALL_FIGURES, DAILY_FIGURES, PEOPLE_FIGURES

    on = f" ON CLUSTER {cluster}" if cluster else ""
    local = "_local" if cluster else ""
    mutation = " SETTINGS mutations_sync = 2"

    def any_bad(columns: tuple[str, ...], alias: str = "") -> str:
        return " OR ".join(_bad(f"{alias}{c}") for c in columns)

    def keys(sql: str) -> list[str]:
        return [str(r[0]) for r in runner.rows(sql)[1]]

    people_key = (
        "concat(toString({day}), '|', " + _part("{p}user_id") + ", '|', " + _part("{p}session_id") + ")"
    )
    call_people = people_key.format(day="toDate(c.timestamp)", p="c.")
    daily_keys = keys(
        f"SELECT DISTINCT {_key('c')} FROM call_data AS c WHERE {any_bad(CALL_FIGURES, 'c.')}"
        f" UNION DISTINCT SELECT {_key()} FROM daily WHERE {any_bad(DAILY_FIGURES)}"
    )
    people_keys = keys(
        f"SELECT DISTINCT {call_people} FROM call_data AS c WHERE ({any_bad(CALL_FIGURES, 'c.')})"
        " AND (c.user_id IS NOT NULL OR c.session_id IS NOT NULL)"
        f" UNION DISTINCT SELECT {people_key.format(day='day', p='')} FROM people_daily"
        f" WHERE {any_bad(PEOPLE_FIGURES)}"
    )
    if not daily_keys and not people_keys:
        return
    sets = ", ".join(f"{c} = if({_bad(c)}, NULL, {c})" for c in CALL_FIGURES)
    runner.command(f"ALTER TABLE call_data{local}{on} UPDATE {sets} WHERE {any_bad(CALL_FIGURES)}{mutation}")
    for table, found, key, call_key, figures, select, group, only in (
        ("daily_parts", daily_keys, _key(), _key("c"), DAILY_FIGURES, DAILY_SELECT,
         DAILY_GROUP, ""),
        ("people_parts", people_keys, people_key.format(day="day", p=""), call_people, PEOPLE_FIGURES,
         PEOPLE_SELECT, "day, user_id, session_id",
         " AND (c.user_id IS NOT NULL OR c.session_id IS NOT NULL)"),
    ):  # fmt: skip
        if not found:
            continue
        hot = keys(bind(f"SELECT DISTINCT {call_key} FROM call_data AS c WHERE {call_key} IN %s", [found]))
        cold = sorted(set(found) - set(hot))
        if hot:
            runner.command(bind(f"ALTER TABLE {table}{local}{on} DELETE WHERE {key} IN %s{mutation}", [hot]))
            runner.command(
                bind(
                    f"INSERT INTO {table} SELECT {select} FROM call_data AS c WHERE {call_key} IN %s{only}"
                    f" GROUP BY {group}",
                    [hot],
                )
            )
        if cold:
            zeros = ", ".join(f"{c} = if({_bad(c)}, 0, {c})" for c in figures)
            runner.command(
                bind(f"ALTER TABLE {table}{local}{on} UPDATE {zeros} WHERE {key} IN %s{mutation}", [cold])
            )


def m008_trace_index(runner: Runner, cluster: str | None) -> None:
    """A trace's calls (`CallFilter(trace_id=…)`, a trace's figures) found without reading
    every call: a bloom filter on `call_data.trace_id` per granule says where they cannot be,
    as `by_id` does for an id. Built for the parts stored already too (a mutation that writes
    the index files only). No `traces` table: a trace's figures are summed as they are read
    (`clickhouse.traces`), for the duplicates and mutations no trigger here could follow."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    table = "call_data_local" if cluster else "call_data"
    index = "by_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1"
    runner.command(f"ALTER TABLE {table}{on} ADD INDEX IF NOT EXISTS {index}")
    runner.command(f"ALTER TABLE {table}{on} MATERIALIZE INDEX by_trace SETTINGS mutations_sync = 2")


def m009_alerts(runner: Runner, cluster: str | None) -> None:
    """The state of alerts (`llmlog.store.alerts`, `clickhouse.alerts`): each finding's and
    the lease, as versioned rows (`deleted` = 1 removes one), read with FINAL; the history,
    dropped by the engine after `HISTORY_DAYS` (TTL). Private: the reader is granted the
    public tables only; the embedded store keeps them in its private file, and drops these."""
    on = f" ON CLUSTER {cluster}" if cluster else ""

    def engine(table: str, kind: str, args: str = "") -> str:
        if not cluster:
            return f"{kind}({args})"
        path = f"'/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}'"
        return f"Replicated{kind}({path}{', ' + args if args else ''})"

    runner.command(
        f"CREATE TABLE IF NOT EXISTS alerts{on} (key String, kind String, status String,"
        " opened Nullable(String), seen Nullable(String), cleared Nullable(String), sentence String,"
        " numbers String, link String, deliveries String, problem Nullable(String), version UInt64,"
        f" deleted UInt8) ENGINE = {engine('alerts', 'ReplacingMergeTree', 'version, deleted')} ORDER BY key"
    )
    runner.command(
        f"CREATE TABLE IF NOT EXISTS alert_events{on} (time DateTime64(6, 'UTC'), key String, kind String,"
        f" event String, webhook Nullable(String), detail String)"
        f" ENGINE = {engine('alert_events', 'MergeTree')} ORDER BY time"
        f" TTL toDateTime(time) + INTERVAL {HISTORY_DAYS} DAY"
    )
    runner.command(
        f"CREATE TABLE IF NOT EXISTS alert_lease{on} (name String, holder String, expires Int64,"
        f" version UInt64) ENGINE = {engine('alert_lease', 'ReplacingMergeTree', 'version')} ORDER BY name"
    )


def m011_people_with_calls(runner: Runner, cluster: str | None) -> None:
    """`people_daily` without a row of no calls: a call given a user or a session after it
    was stored moves its share out of the row it was in by a row of differences
    (`ClickHouseStore._attributed`), which can leave that row at none; SQLite and PostgreSQL
    delete such a row."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    runner.command(
        f"CREATE OR REPLACE VIEW people_daily{on} AS SELECT day, user_id, session_id, {PEOPLE_SUMS}"
        " FROM people_parts GROUP BY day, user_id, session_id HAVING sum(people_parts.calls) > 0"
    )


def m010_experiments(runner: Runner, cluster: str | None) -> None:
    """Experiments' definitions (`llmlog.store.experiments`, `clickhouse.experiments`), as
    versioned rows read with FINAL, the newest version of an id its definition. Private: the
    reader is granted the public tables only; the embedded store keeps it in its private file,
    and drops this one."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    engine = "ReplacingMergeTree(version)"
    if cluster:
        path = "'/clickhouse/tables/{shard}/{database}/experiments', '{replica}'"
        engine = f"ReplicatedReplacingMergeTree({path}, version)"
    runner.command(
        f"CREATE TABLE IF NOT EXISTS experiments{on} (id String, created String, definition String,"
        f" version UInt64) ENGINE = {engine} ORDER BY id"
    )


MIGRATIONS: list[Callable[[Runner, str | None], None]] = [
    m001_initial,
    m002_accounts,
    m003_spans,
    m004_audit_and_vectors,
    m005_web_sessions,
    m006_daily_that_merges,
    m007_repair_figures,
    m008_trace_index,
    m009_alerts,
    m010_experiments,
    m011_people_with_calls,
]


class Versions:
    """The version is the largest in `llmlog_schema`. A step is no transaction (ClickHouse's
    DDL has none): every migration is written to be run again safely (IF NOT EXISTS, and
    checks of what a half-done run left), so two processes migrating at once do no harm."""

    where = "this ClickHouse store"

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def read(self) -> int:
        self.runner.command(
            "CREATE TABLE IF NOT EXISTS llmlog_schema (version UInt32, applied DateTime DEFAULT now())"
            " ENGINE = MergeTree ORDER BY version"
        )
        _, rows = self.runner.rows("SELECT max(version) FROM llmlog_schema")
        return int(rows[0][0] or 0) if rows else 0

    def step(self) -> contextlib.AbstractContextManager[Runner]:
        return contextlib.nullcontext(self.runner)

    def read_in(self, runner: Runner) -> int:
        return self.read()

    def write(self, runner: Runner, version: int) -> None:
        runner.command(f"INSERT INTO llmlog_schema (version) VALUES ({int(version)})")


def migrate(runner: Runner, cluster: str | None, target: int | None = None) -> int:
    """Apply pending migrations (up to `target`) for one server or (`cluster`) a cluster."""

    def step(migration: Callable[[Runner, str | None], None]) -> Callable[[Runner], None]:
        return lambda runner: migration(runner, cluster)

    steps = [step(m) for m in MIGRATIONS]
    return migrations.migrate(Versions(runner), steps, target)
