"""The ClickHouse store's schema: designed for the engine, not translated from PostgreSQL,
and its numbered migrations (`llmlog.store.clickhouse` applies them on open).

- `calls` is the table itself (no view): every column inline, the text columns compressed
  with ZSTD. Content is not stored once by hash as in the other stores: ClickHouse
  compresses a column's values block by block, and rows of one feature lie together (the
  sort key), so a system prompt re-sent on every turn compresses to almost nothing without
  a join on every read. (Measured by the bench: stored bytes per call beside the others.)
- `ReplacingMergeTree` on the sort key, which ends in the call's id: a batch sent twice is
  one call once merged; the store also skips ids it already holds before inserting.
- Sorted by (day, feature, model, time, id): the UI's paths (newest calls; of a feature; of
  a model) read a day's granules of one feature or model. Monthly partitions, so retention
  drops whole months where it can.
- Low-cardinality strings (model, feature, provider, version, stop reason, rate card) are
  `LowCardinality`.
- `daily`: the rollup the dashboard and reports read, kept by a materialized view as calls
  arrive (`SummingMergeTree`: rows of one day and group are summed as parts merge, so it is
  read with `sum()`).

Cluster mode (`LLMLOG_CLICKHOUSE_CLUSTER=name`): every statement runs `ON CLUSTER name`, the
tables are `Replicated…MergeTree` ones named `…_local` on each shard, and `calls` and
`daily` are `Distributed` tables over them, sharded by the call's id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

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

DAILY_COLUMNS = f"""
    day Date,
    feature {TAG},
    model {TAG},
    provider {TAG},
    prompt_template_version {TAG},
    calls UInt64,
    errors UInt64,
    input_tokens Int64,
    output_tokens Int64,
    cache_read_tokens Int64,
    cache_creation_tokens Int64,
    cost_usd Float64,
    priced_calls UInt64,
    latency_ms Float64,
    first_token_ms Float64,
    output_calls UInt64,
    tool_calls UInt64
"""

# What `daily` sums from each call (as the other stores' triggers do). The calls' columns
# are named through `c.`: ClickHouse would take `cost_usd` for the alias of its own sum.
DAILY_SELECT = """
    toDate(c.timestamp) AS day, c.feature AS feature, c.model AS model, c.provider AS provider,
    c.prompt_template_version AS prompt_template_version,
    count() AS calls,
    countIf(c.error IS NOT NULL) AS errors,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    sum(ifNull(c.cache_read_tokens, 0)) AS cache_read_tokens,
    sum(ifNull(c.cache_creation_tokens, 0)) AS cache_creation_tokens,
    sum(ifNull(c.cost_usd, 0)) AS cost_usd,
    countIf(c.cost_usd IS NOT NULL) AS priced_calls,
    sum(ifNull(c.latency_ms, 0)) AS latency_ms,
    sum(ifNull(c.first_token_ms, 0)) AS first_token_ms,
    countIf(c.output_tokens IS NOT NULL) AS output_calls,
    countIf(JSONLength(ifNull(c.tool_calls, '[]')) > 0) AS tool_calls
"""
DAILY_GROUP = "day, feature, model, provider, prompt_template_version"


class Runner(Protocol):
    def command(self, sql: str) -> None: ...


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
    yield (
        f"CREATE TABLE IF NOT EXISTS calls{local}{on} ({CALL_COLUMNS})"
        f" ENGINE = {engine('ReplacingMergeTree', 'calls')}"
        " PARTITION BY toYYYYMM(timestamp)"
        " ORDER BY (toDate(timestamp), ifNull(feature, ''), ifNull(model, ''), timestamp, id)"
    )
    yield (
        f"CREATE TABLE IF NOT EXISTS daily{local}{on} ({DAILY_COLUMNS})"
        f" ENGINE = {engine('SummingMergeTree', 'daily')}"
        f" PARTITION BY toYYYYMM(day) ORDER BY ({DAILY_GROUP}) {nullable_key}"
    )
    # Fed by inserts into the (local) calls table: on a cluster, each shard rolls up its own.
    yield (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS daily_rollup{on} TO daily{local}"
        f" AS SELECT {DAILY_SELECT} FROM calls{local} AS c GROUP BY {DAILY_GROUP}"
    )
    yield (
        f"CREATE TABLE IF NOT EXISTS settings{local}{on} (key String, value String, version UInt64)"
        f" ENGINE = {engine('ReplacingMergeTree', 'settings')} ORDER BY key"
    )
    if cluster:
        for table, key in (("calls", "cityHash64(id)"), ("daily", "rand()"), ("settings", "cityHash64(key)")):
            yield (
                f"CREATE TABLE IF NOT EXISTS {table}{on} AS {table}_local"
                f" ENGINE = Distributed({cluster}, currentDatabase(), {table}_local, {key})"
            )


def m001_initial(runner: Runner, cluster: str | None) -> None:
    for sql in statements(cluster):
        runner.command(sql)


MIGRATIONS: list[Callable[[Runner, str | None], None]] = [m001_initial]
