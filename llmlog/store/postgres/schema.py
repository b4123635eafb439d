"""The PostgreSQL store's schema: the `calls` view and the numbered migrations that build
and change the tables (`llmlog.store.postgres.store` applies them on open)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql as pgsql

from llmlog.core.record import KIND, Call
from llmlog.store import migrations, search
from llmlog.store.layout import select_list
from llmlog.store.postgres import POSTGRES
from llmlog.store.postgres.reader import create_reader
from llmlog.store.postgres.trace_schema import m016_traces, m017_trace_values_by_time, usage_follows
from llmlog.store.rollup import DAILY_COLUMNS, GROUP, cold_columns, from_raw_sql, repair_sql
from llmlog.store.traces import SPANS_CALL_INDEX

# What the response echoed of the request (m015) is put back in place from `content`.
_ECHOED_RESPONSE = """CASE
        WHEN ri.id IS NULL AND rt.id IS NULL THEN d.response
        WHEN rt.id IS NULL THEN jsonb_set(d.response, '{instructions}', ri.body)
        WHEN ri.id IS NULL THEN jsonb_set(d.response, '{tools}', rt.body)
        ELSE jsonb_set(jsonb_set(d.response, '{instructions}', ri.body), '{tools}', rt.body)
    END"""
_ECHO_JOINS = """
LEFT JOIN content AS ri ON ri.id = d.response_instructions_id
LEFT JOIN content AS rt ON rt.id = d.response_tools_id"""


_MESSAGES = """CASE WHEN d.message_ids IS NULL THEN NULL ELSE COALESCE((
        SELECT jsonb_agg(m.body ORDER BY j.ord)
        FROM unnest(d.message_ids) WITH ORDINALITY AS j(content_id, ord)
        JOIN content AS m ON m.id = j.content_id
    ), '[]'::jsonb) END"""


def calls_view(cur: psycopg.Cursor[Any]) -> str:
    """The `calls` view over the `call_data` the store has now: before migration 15 it has
    no echoed response to put back, and a column added later is not there yet. Its columns
    only ever grow at the end, so one form replaces another in place, grants and all."""
    cur.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'call_data'"
    )
    present = {row[0] for row in cur.fetchall()}
    echo = "response_instructions_id" in present
    elsewhere = {
        "system_prompt": "s.body #>> '{}'",
        "messages": _MESSAGES,
        "tools": "t.body",
        "params": "p.body",
        "response": _ECHOED_RESPONSE if echo else "d.response",
    }
    return f"""
CREATE OR REPLACE VIEW calls AS
SELECT
    {select_list(elsewhere, present)}
FROM call_data AS d
LEFT JOIN content AS s ON s.id = d.system_id
LEFT JOIN content AS t ON t.id = d.tools_id
LEFT JOIN content AS p ON p.id = d.params_id{_ECHO_JOINS if echo else ""}
"""


# Each kind of the column table (`llmlog.core.record.Column.kind`) as `call_data` holds it.
_TYPES = {
    "id": "text", "text": "text", "timestamp": "timestamptz", "json": "jsonb", "integer": "bigint",
    "real": "double precision",
}  # fmt: skip


def add_call_column(cur: psycopg.Cursor[Any], name: str) -> None:
    """A column of the table added to `call_data` (and its partitions) and the view: a
    migration adding a column to `llmlog.core.record.CALL_COLUMNS` calls this. Without a
    default, nothing stored is rewritten."""
    cur.execute(f"ALTER TABLE call_data ADD COLUMN IF NOT EXISTS {name} {_TYPES[KIND[name]]}")
    cur.execute(calls_view(cur))


# ------------------------------------------------------------------ migrations
# Numbered functions, applied in order on open, each in its own transaction; the table
# llmlog_schema records the last one. Concurrent openers serialize on an advisory lock.


def m001_initial(cur: psycopg.Cursor[Any]) -> None:
    cur.execute(
        """
        CREATE TABLE content (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            hash bytea NOT NULL UNIQUE,  -- first 16 bytes of SHA-256 of the JSON text
            body jsonb NOT NULL
        )
        """
    )
    cur.execute(
        """
        CREATE TABLE call_data (
            id text COLLATE "C" NOT NULL,  -- byte order, as in SQLite: prefixes and paging agree
            session_id text, user_id text, timestamp timestamptz NOT NULL,
            provider text, model text, feature text, prompt_template_version text,
            system_id bigint, message_ids bigint[], tools_id bigint, params_id bigint,
            response jsonb, tool_calls jsonb, stop_reason text,
            input_tokens bigint, output_tokens bigint,
            cache_read_tokens bigint, cache_creation_tokens bigint,
            cost_usd double precision, rate_card text,
            first_token_ms double precision, latency_ms double precision,
            error jsonb, metadata jsonb, tags jsonb, trace_id text, parent_id text,
            PRIMARY KEY (id, timestamp)
        ) PARTITION BY RANGE (timestamp)
        """
    )
    cur.execute("CREATE INDEX call_data_timestamp ON call_data (timestamp)")
    # Each filter index ends in timestamp, so "newest 100 of X" is an index range scan.
    for col in ("feature", "model", "user_id", "session_id", "prompt_template_version"):
        cur.execute(f"CREATE INDEX call_data_{col} ON call_data ({col}, timestamp)")
    cur.execute("CREATE INDEX call_data_errors ON call_data (timestamp) WHERE error IS NOT NULL")
    cur.execute(calls_view(cur))


def m002_daily(cur: psycopg.Cursor[Any]) -> None:
    """`daily`: the calls rolled up per UTC day, feature, model, provider and prompt version,
    kept by the database itself (triggers on the partitioned `call_data`, which see the rows
    of every partition, those created later included), so reports over days read a few
    hundred rows instead of every call, and stay exact whoever inserts (the store, INSERT …
    SELECT or COPY by hand, `llmlog copy`). Rows inserted into a partition by name, not
    through `call_data`, are not seen.

    No DELETE trigger, on purpose: deleting calls (or dropping a month) is retention's
    business, which keeps their rollup rows (the cold tier). Besides inserts, only what the
    store changes in a stored call is followed: its cost (`update_costs`, `llmlog reprice`);
    an UPDATE of other columns leaves the rollup off."""
    version = cur.execute("SHOW server_version_num").fetchone()
    if version is None or int(version[0]) < 150000:
        raise RuntimeError("llmlog needs PostgreSQL 15 or later (UNIQUE NULLS NOT DISTINCT)")
    schema = cur.execute("SELECT current_schema()").fetchone()
    if schema is None or schema[0] is None:
        raise RuntimeError("no schema to create tables in: the search_path names none that exists")
    group = "day, feature, model, provider, prompt_template_version"
    cur.execute(
        f"""
        CREATE TABLE daily (
            day date NOT NULL,  -- the UTC date of the calls
            feature text, model text, provider text, prompt_template_version text,
            calls bigint NOT NULL,
            errors bigint NOT NULL,  -- calls whose error is not NULL
            input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,  -- sums; NULL counts as 0
            cache_read_tokens bigint NOT NULL, cache_creation_tokens bigint NOT NULL,
            cost_usd double precision NOT NULL,  -- sum of the known costs; 0 when none
            priced_calls bigint NOT NULL,  -- calls whose cost_usd is not NULL
            latency_ms double precision NOT NULL, first_token_ms double precision NOT NULL,  -- sums
            -- NULL is one value of a group, as in GROUP BY. Led by day, the index this makes
            -- also serves "the days from … to …".
            CONSTRAINT daily_key UNIQUE NULLS NOT DISTINCT ({group})
        )
        """
    )
    rollup = """
        SELECT (timestamp AT TIME ZONE 'UTC')::date, feature, model, provider, prompt_template_version,
            count(*), count(error), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
            coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_creation_tokens), 0),
            coalesce(sum(cost_usd), 0), count(cost_usd), coalesce(sum(latency_ms), 0),
            coalesce(sum(first_token_ms), 0)
        FROM {} GROUP BY 1, 2, 3, 4, 5
        """
    sums = (
        "calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_creation_tokens", "priced_calls", "latency_ms", "first_token_ms",
    )  # fmt: skip
    # Adds a batch's figures to its groups' rows, new or not. In key order, as every writer
    # does: concurrent writers wait on each other's group rows in one order, never in a cycle.
    # With no priced call left a group's cost is 0 exactly, not the rounding left over from
    # adding and taking away.
    upsert = f"""
        INSERT INTO daily {{}} ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT ({group}) DO UPDATE SET
            {", ".join(f"{c} = daily.{c} + EXCLUDED.{c}" for c in sums)},
            cost_usd = CASE WHEN daily.priced_calls + EXCLUDED.priced_calls = 0 THEN 0
                ELSE daily.cost_usd + EXCLUDED.cost_usd END
        """
    # The functions name their tables through a search_path of their own: a session whose
    # path leads elsewhere (INSERT INTO llmlog.call_data …) still updates this `daily`.
    path = pgsql.SQL("SET search_path = {}, pg_temp").format(pgsql.Identifier(schema[0])).as_string(cur)
    cur.execute(
        f"""
        CREATE FUNCTION daily_add_calls() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        BEGIN
            {upsert.format(rollup.format("new_calls"))};
            RETURN NULL;
        END
        $$
        """
    )
    # Statement triggers: one aggregate and one upsert per statement, whatever its size. The
    # transition table of INSERT … ON CONFLICT DO NOTHING holds only the rows inserted.
    cur.execute(
        "CREATE TRIGGER call_data_daily_insert AFTER INSERT ON call_data"
        " REFERENCING NEW TABLE AS new_calls FOR EACH STATEMENT EXECUTE FUNCTION daily_add_calls()"
    )
    # A new cost moves its group's sum by the difference. Statement-level, not row-level: a
    # repricing of 500k calls is 100 statements (update_costs' chunks), each one join of the
    # old and new rows and one upsert taking the group rows in key order, where a row trigger
    # would update a group row per call, in the order of the calls, which could deadlock
    # against writers. Transition tables cannot go with UPDATE OF cost_usd, so the trigger
    # fires on every UPDATE and the function keeps the rows whose cost changed. A statement
    # changing a call's id or time is not matched (the store never does).
    changes = """
        SELECT (o.timestamp AT TIME ZONE 'UTC')::date, o.feature, o.model, o.provider,
            o.prompt_template_version, 0, 0, 0, 0, 0, 0,
            sum(coalesce(n.cost_usd, 0) - coalesce(o.cost_usd, 0)), count(n.cost_usd) - count(o.cost_usd),
            0, 0
        FROM old_calls AS o JOIN new_calls AS n ON n.id = o.id AND n.timestamp = o.timestamp
        WHERE n.cost_usd IS DISTINCT FROM o.cost_usd
        GROUP BY 1, 2, 3, 4, 5
        """
    cur.execute(
        f"""
        CREATE FUNCTION daily_add_costs() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        BEGIN
            {upsert.format(changes)};
            RETURN NULL;
        END
        $$
        """
    )
    cur.execute(
        "CREATE TRIGGER call_data_daily_cost AFTER UPDATE ON call_data"
        " REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls"
        " FOR EACH STATEMENT EXECUTE FUNCTION daily_add_costs()"
    )
    # The calls already stored, after the triggers: creating them locked out writers (until
    # this transaction ends), so every call is either in this pass or counted by a trigger.
    cur.execute(f"INSERT INTO daily {rollup.format('call_data')}")


# `daily`'s rows (a query in `DAILY_COLUMNS` order, in `{}`, with its INSERT) added to the
# groups' rows: sums added, counts merged, a cost 0 exactly when no priced call is left.
_DAILY_SUMS = (
    "calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_creation_tokens", "priced_calls", "latency_ms", "first_token_ms",
    "output_calls", "tool_calls", "users", "sessions",
)  # fmt: skip
_DAILY_COUNTS = ("error_types", "latency_hist", "first_token_hist")
_DAILY_UPSERT = f"""
    {{}} ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (day, {", ".join(GROUP)}) DO UPDATE SET
        {", ".join(f"{c} = daily.{c} + EXCLUDED.{c}" for c in _DAILY_SUMS)},
        {", ".join(f"{c} = llmlog_add_counts(daily.{c}, EXCLUDED.{c})" for c in _DAILY_COUNTS)},
        cost_usd = CASE WHEN daily.priced_calls + EXCLUDED.priced_calls = 0 THEN 0
            ELSE daily.cost_usd + EXCLUDED.cost_usd END
    """
# `people_daily`'s, likewise (a query in its columns' order, in `{}`). In key order, as for
# `daily`: concurrent writers never wait on each other in a cycle.
_PEOPLE_UPSERT = """
    INSERT INTO people_daily {} ORDER BY 1, 2, 3
    ON CONFLICT (day, user_id, session_id) DO UPDATE SET
        calls = people_daily.calls + EXCLUDED.calls, errors = people_daily.errors + EXCLUDED.errors,
        input_tokens = people_daily.input_tokens + EXCLUDED.input_tokens,
        output_tokens = people_daily.output_tokens + EXCLUDED.output_tokens,
        priced_calls = people_daily.priced_calls + EXCLUDED.priced_calls,
        cost_usd = CASE WHEN people_daily.priced_calls + EXCLUDED.priced_calls = 0 THEN 0
            ELSE people_daily.cost_usd + EXCLUDED.cost_usd END,
        first = least(people_daily.first, EXCLUDED.first),
        last = greatest(people_daily.last, EXCLUDED.last)
    """


def m003_people_daily(cur: psycopg.Cursor[Any]) -> None:
    """`people_daily`: the calls rolled up per UTC day, user and session, kept by statement
    triggers as `daily` is, so the sessions and users pages over a week or a month read a
    row per session and day instead of every call. Calls with neither a user nor a session
    are left out. No DELETE trigger, for the reason `daily` has none."""
    schema = cur.execute("SELECT current_schema()").fetchone()
    assert schema is not None and schema[0] is not None  # m002 checked it
    group = "day, user_id, session_id"
    cur.execute(
        f"""
        CREATE TABLE people_daily (
            day date NOT NULL,  -- the UTC date of the calls
            user_id text, session_id text,
            calls bigint NOT NULL, errors bigint NOT NULL,
            input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,  -- sums; NULL counts as 0
            cost_usd double precision NOT NULL, priced_calls bigint NOT NULL,  -- as in `daily`
            first timestamptz NOT NULL, last timestamptz NOT NULL,  -- the earliest and latest call
            CONSTRAINT people_daily_key UNIQUE NULLS NOT DISTINCT ({group})
        )
        """
    )
    rollup = """
        SELECT (timestamp AT TIME ZONE 'UTC')::date, user_id, session_id, count(*), count(error),
            coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0),
            count(cost_usd), min(timestamp), max(timestamp)
        FROM {} WHERE user_id IS NOT NULL OR session_id IS NOT NULL GROUP BY 1, 2, 3
        """
    upsert = _PEOPLE_UPSERT
    path = pgsql.SQL("SET search_path = {}, pg_temp").format(pgsql.Identifier(schema[0])).as_string(cur)
    cur.execute(
        f"""
        CREATE FUNCTION people_daily_add_calls() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        BEGIN
            {upsert.format(rollup.format("new_calls"))};
            RETURN NULL;
        END
        $$
        """
    )
    cur.execute(
        "CREATE TRIGGER call_data_people_insert AFTER INSERT ON call_data"
        " REFERENCING NEW TABLE AS new_calls FOR EACH STATEMENT EXECUTE FUNCTION people_daily_add_calls()"
    )
    # A group row always exists for a stored call's group, so the cost change joins it.
    changes = """
        SELECT (o.timestamp AT TIME ZONE 'UTC')::date, o.user_id, o.session_id, 0, 0, 0, 0,
            sum(coalesce(n.cost_usd, 0) - coalesce(o.cost_usd, 0)), count(n.cost_usd) - count(o.cost_usd),
            min(o.timestamp), max(o.timestamp)
        FROM old_calls AS o JOIN new_calls AS n ON n.id = o.id AND n.timestamp = o.timestamp
        WHERE n.cost_usd IS DISTINCT FROM o.cost_usd AND (o.user_id IS NOT NULL OR o.session_id IS NOT NULL)
        GROUP BY 1, 2, 3
        """
    cur.execute(
        f"""
        CREATE FUNCTION people_daily_add_costs() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        BEGIN
            {upsert.format(changes)};
            RETURN NULL;
        END
        $$
        """
    )
    cur.execute(
        "CREATE TRIGGER call_data_people_cost AFTER UPDATE ON call_data"
        " REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls"
        " FOR EACH STATEMENT EXECUTE FUNCTION people_daily_add_costs()"
    )
    cur.execute(f"INSERT INTO people_daily {rollup.format('call_data')}")


def m004_spans(cur: psycopg.Cursor[Any]) -> None:
    """`spans` and `span_events`, as in SQLite's migration 6."""
    cur.execute(
        """
        CREATE TABLE spans (
            trace_id text NOT NULL, span_id text NOT NULL, parent_id text,
            name text NOT NULL, kind text, start_time timestamptz NOT NULL, end_time timestamptz,
            status text, status_message text, attributes jsonb, events jsonb, service text,
            call_id text,  -- the call this span became, if it was a model call
            PRIMARY KEY (trace_id, span_id)
        )
        """
    )
    cur.execute(
        """
        CREATE TABLE span_events (
            key bytea PRIMARY KEY,  -- a hash of the event: the same event sent twice is kept once
            trace_id text NOT NULL, span_id text NOT NULL, name text NOT NULL,
            attributes jsonb, body jsonb, received bigint NOT NULL
        )
        """
    )
    cur.execute("CREATE INDEX span_events_span ON span_events (trace_id, span_id, received)")


def m005_cold_figures(cur: psycopg.Cursor[Any]) -> None:
    """What `daily` needs to stand for the calls once retention has deleted them, as in
    SQLite's migration 7, and `settings`, the store's own settings."""
    schema = cur.execute("SELECT current_schema()").fetchone()
    assert schema is not None and schema[0] is not None  # m002 checked it
    for column, kind in cold_columns(POSTGRES):
        cur.execute(f"ALTER TABLE daily ADD COLUMN {column} {kind}")
    path = pgsql.SQL("SET search_path = {}, pg_temp").format(pgsql.Identifier(schema[0])).as_string(cur)
    # Two {key: count} objects added key by key: how a group's histograms take in a batch's.
    cur.execute(
        f"""
        CREATE FUNCTION llmlog_add_counts(a jsonb, b jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE {path} AS $$
            SELECT coalesce(jsonb_object_agg(k, n), '{{}}'::jsonb) FROM (
                SELECT k, sum(v::bigint) AS n
                FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) AS x(k, v)
                GROUP BY k
            ) AS y
        $$
        """
    )
    group = "day, " + ", ".join(GROUP)
    upsert = _DAILY_UPSERT
    # `daily_seen`: which users and sessions each day and group has counted already. A batch's
    # are inserted there first (in key order, as everywhere); those it did insert are new.
    seen_key = f"{group}, kind, who"
    cur.execute(
        f"""
        CREATE TABLE daily_seen (
            day date NOT NULL, feature text, model text, provider text, prompt_template_version text,
            kind text NOT NULL,  -- 'user' or 'session'
            who text NOT NULL,  -- the user or session id
            CONSTRAINT daily_seen_key UNIQUE NULLS NOT DISTINCT ({seen_key})
        )
        """
    )
    cur.execute("CREATE INDEX daily_seen_who ON daily_seen (who, kind)")  # erasure deletes by it
    day = "(timestamp AT TIME ZONE 'UTC')::date"
    people = f"""
        seen AS (
            INSERT INTO daily_seen
            SELECT DISTINCT {day}, {", ".join(GROUP)}, 'user', user_id FROM new_calls
                WHERE user_id IS NOT NULL
            UNION SELECT DISTINCT {day}, {", ".join(GROUP)}, 'session', session_id FROM new_calls
                WHERE session_id IS NOT NULL
            ORDER BY 1, 2, 3, 4, 5, 6, 7
            ON CONFLICT DO NOTHING RETURNING {group}, kind
        ),
        fresh AS (
            SELECT {group}, count(*) FILTER (WHERE kind = 'user') AS users,
                count(*) FILTER (WHERE kind = 'session') AS sessions
            FROM seen GROUP BY {group}
        )"""
    cur.execute(
        f"""
        CREATE OR REPLACE FUNCTION daily_add_calls() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        BEGIN
            {upsert.format(from_raw_sql(POSTGRES, "new_calls", people=people, into="INSERT INTO daily"))};
            RETURN NULL;
        END
        $$
        """
    )
    changes = """
        SELECT (o.timestamp AT TIME ZONE 'UTC')::date, o.feature, o.model, o.provider,
            o.prompt_template_version, 0, 0, 0, 0, 0, 0,
            sum(coalesce(n.cost_usd, 0) - coalesce(o.cost_usd, 0)), count(n.cost_usd) - count(o.cost_usd),
            0, 0, 0, 0, 0, 0, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb
        FROM old_calls AS o JOIN new_calls AS n ON n.id = o.id AND n.timestamp = o.timestamp
        WHERE n.cost_usd IS DISTINCT FROM o.cost_usd
        GROUP BY 1, 2, 3, 4, 5
        """
    cur.execute(
        f"""
        CREATE OR REPLACE FUNCTION daily_add_costs() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        BEGIN
            {upsert.format("INSERT INTO daily " + changes)};
            RETURN NULL;
        END
        $$
        """
    )
    # The calls already stored (writers wait on the trigger change until this transaction
    # ends). A group whose calls were deleted by hand keeps its zeros.
    new = DAILY_COLUMNS[15:]
    same_key = " AND ".join(f"r.{c} IS NOT DISTINCT FROM daily.{c}" for c in ("day", *GROUP))
    cur.execute(
        f"UPDATE daily SET ({', '.join(new)}) = ({', '.join(f'r.{c}' for c in new)})"
        f" FROM ({from_raw_sql(POSTGRES)}) AS r WHERE {same_key}"
    )
    for column, kind in (("user_id", "user"), ("session_id", "session")):
        cur.execute(
            f"INSERT INTO daily_seen SELECT DISTINCT {day}, {', '.join(GROUP)}, '{kind}', {column}"
            f" FROM call_data WHERE {column} IS NOT NULL ON CONFLICT DO NOTHING"
        )
    cur.execute("CREATE TABLE settings (key text PRIMARY KEY, value jsonb NOT NULL)")
    # Counts the deletions of content (`Store.erase`, retention), so writers that cache
    # content ids know when to forget them.
    cur.execute("INSERT INTO settings VALUES ('content_epoch', '0')")


def m006_audit(cur: psycopg.Cursor[Any]) -> None:
    """`audit`, as in SQLite's migration 8."""
    cur.execute(
        """
        CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            time timestamptz NOT NULL, who text NOT NULL, action text NOT NULL, call_ids jsonb NOT NULL
        )
        """
    )


def m007_accounts(cur: psycopg.Cursor[Any]) -> None:
    """Accounts and API tokens, as in SQLite's migration 9; private, as `audit` is."""
    cur.execute(
        "CREATE TABLE accounts (name text PRIMARY KEY, role text NOT NULL, password text NOT NULL,"
        " created text NOT NULL)"
    )
    cur.execute(
        "CREATE TABLE api_tokens (hash bytea PRIMARY KEY, name text NOT NULL UNIQUE, scope text NOT NULL,"
        " created text NOT NULL)"
    )


def m008_search(cur: psycopg.Cursor[Any]) -> None:
    """Full-text search, as SQLite's migration 10 but inside the row: `search`, the
    `tsvector` of what the call newly said and heard (`llmlog.store.search`), with a GIN
    index. It goes with its row, so erasure and retention leave no words behind (vacuum
    clears the index's entries). Existing calls are indexed here."""
    cur.execute("ALTER TABLE call_data ADD COLUMN search tsvector")
    cur.execute("CREATE INDEX call_data_search ON call_data USING gin (search)")
    with cur.connection.cursor(name="llmlog_search_backfill") as rows:
        rows.execute("SELECT id, timestamp, messages, response, error FROM calls")
        while batch := rows.fetchmany(1000):
            docs = []
            for call_id, timestamp, messages, response, error in batch:
                doc = search.pg_document(Call(messages=messages, response=response, error=error))
                if doc:
                    docs.append((search.PG_CONFIG, doc, call_id, timestamp))
            cur.executemany(
                "UPDATE call_data SET search = to_tsvector(%s::regconfig, %s)"
                " WHERE id = %s AND timestamp = %s",
                docs,
            )


def m009_vectors(cur: psycopg.Cursor[Any]) -> None:
    """`call_data.embedding`, as in SQLite's migration 11."""
    cur.execute("ALTER TABLE call_data ADD COLUMN embedding bytea")


def _schema(cur: psycopg.Cursor[Any]) -> str:
    row = cur.execute("SELECT current_schema()").fetchone()
    assert row is not None and row[0] is not None
    return pgsql.Identifier(row[0]).as_string(cur)


# The shared role read-only SQL ran as before m010 (under SET ROLE on the owner's connection).
LEGACY_READER = "llmlog_reader"


def m010_reader_login(cur: psycopg.Cursor[Any]) -> None:
    """The store's own reader login (`postgres.reader`), made here when the user may make
    roles (else on a later open that may, or by an administrator); and the shared role of
    before loses what it was granted here (it was NOLOGIN, entered by SET ROLE, which a
    query could leave)."""
    create_reader(cur)
    if cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (LEGACY_READER,)).fetchone():
        try:
            with cur.connection.transaction():
                cur.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {_schema(cur)} FROM {LEGACY_READER}")
                cur.execute(f"REVOKE ALL ON SCHEMA {_schema(cur)} FROM {LEGACY_READER}")
        except psycopg.errors.InsufficientPrivilege:
            pass  # granted by someone else: theirs to take back


def m011_web_sessions(cur: psycopg.Cursor[Any]) -> None:
    """`web_sessions`, as in SQLite's migration 12; private, as `accounts` is (the reader is
    granted the public tables only: `postgres.reader`)."""
    cur.execute(
        "CREATE TABLE web_sessions (hash bytea PRIMARY KEY, name text NOT NULL, expires bigint NOT NULL)"
    )
    cur.execute("CREATE INDEX web_sessions_name ON web_sessions (name)")


def m012_repair_figures(cur: psycopg.Cursor[Any]) -> None:
    """Figures stored before they were checked (NaN, infinities, negative costs, times or
    token counts) made NULL, and the rollup rows they fell in summed again
    (`rollup.repair_sql`)."""
    for sql in repair_sql(POSTGRES):
        cur.execute(sql)


def m013_waiting_events(cur: psycopg.Cursor[Any]) -> None:
    """`span_events` by arrival, as in SQLite's migration 14."""
    cur.execute("CREATE INDEX IF NOT EXISTS span_events_received ON span_events (received)")


def m014_json_value(cur: psycopg.Cursor[Any]) -> None:
    """JSON_VALUE(doc, path) before PostgreSQL 17 has its own, so that read-only SQL reads a
    JSON key in the form every store takes (`readonly.json_value`): the scalar there as
    text, NULL for an object, an array, null or nothing."""
    cur.execute("SELECT current_setting('server_version_num')::int")
    row = cur.fetchone()
    if row is not None and int(row[0]) >= 170000:
        return
    cur.execute(
        """
        CREATE OR REPLACE FUNCTION json_value(doc jsonb, path jsonpath) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE WHEN jsonb_typeof(v) IN ('object', 'array', 'null') THEN NULL ELSE v #>> '{}' END
            FROM (SELECT jsonb_path_query_first(doc, path) AS v) AS found
        $$
        """
    )


def m015_response_echo(cur: psycopg.Cursor[Any]) -> None:
    """The instructions and tool list the OpenAI Responses API echoes in every response
    (several KB, the request's own system prompt and tools) kept in `content`, as SQLite's
    migration 4 does: the row holds a null in their place and the ids here, and the view puts
    them back. Calls stored before keep their responses whole (both ids NULL). Adding
    columns without a default rewrites nothing, on the parent or its partitions; a store
    whose version was set back by hand still has them."""
    cur.execute(
        "ALTER TABLE call_data ADD COLUMN IF NOT EXISTS response_instructions_id bigint,"
        " ADD COLUMN IF NOT EXISTS response_tools_id bigint"
    )
    cur.execute(calls_view(cur))


def m018_alerts(cur: psycopg.Cursor[Any]) -> None:
    """The state of alerts, as in SQLite's migration 19; private, as `settings` is (the reader
    is granted the public tables only)."""
    cur.execute(
        """
        CREATE TABLE IF NOT EXISTS alerts (
            key text PRIMARY KEY, kind text NOT NULL, status text NOT NULL,
            opened text, seen text, cleared text,  -- as format_timestamp writes them
            sentence text NOT NULL, numbers text NOT NULL, link text NOT NULL,
            deliveries text NOT NULL, problem text
        )
        """
    )
    cur.execute(
        """
        CREATE TABLE IF NOT EXISTS alert_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            time text NOT NULL, key text NOT NULL, kind text NOT NULL, event text NOT NULL,
            webhook text, detail text NOT NULL
        )
        """
    )
    cur.execute("CREATE INDEX IF NOT EXISTS alert_events_time ON alert_events (time)")
    cur.execute(
        "CREATE TABLE IF NOT EXISTS alert_lease (name text PRIMARY KEY, holder text NOT NULL,"
        " expires bigint NOT NULL)"
    )


def m019_spans_by_call(cur: psycopg.Cursor[Any]) -> None:
    """The spans that stand for a call, by its id, as in SQLite's migration 20."""
    cur.execute(SPANS_CALL_INDEX)


def m020_experiments(cur: psycopg.Cursor[Any]) -> None:
    """Experiments' definitions, as in SQLite's migration 21 (the definition as JSON text, as
    the other engines keep it); private, as `alerts` is (the reader is granted the public
    tables only)."""
    cur.execute(
        "CREATE TABLE IF NOT EXISTS experiments (id text PRIMARY KEY,"
        " created text NOT NULL,"  # as format_timestamp writes it: text order is time order
        " definition text NOT NULL)"
    )
    cur.execute("CREATE INDEX IF NOT EXISTS experiments_created ON experiments (created)")


# The search index's pending list, in kB (GIN's `fastupdate`): new entries wait there and are
# merged into the index in bulk once it passes this, and the pages it held stay with the
# index. At PostgreSQL's default of 4 MB that is up to 4 MB more in every month's partition:
# on 10,000 calls of long English answers the index took 635 B a call, 362 with 1 MB, and
# writing them was no slower (`make bench`'s storage part; BENCHMARKS.md).
SEARCH_PENDING_KB = 1024


def tune_search_index(cur: psycopg.Cursor[Any], partition: str | None = None) -> None:
    """The search index of each partition of `call_data` (or of `partition` alone) given
    `SEARCH_PENDING_KB`. Set on each: the partitioned index takes no storage parameters
    (PostgreSQL refuses ALTER INDEX SET on it), and a partition's index is made from it."""
    cur.execute("SELECT to_regclass('call_data_search') IS NOT NULL")
    found = cur.fetchone()
    if not found or not found[0]:
        return  # a store from before its search index (m008)
    cur.execute(
        "SELECT i.inhrelid::regclass::text FROM pg_inherits AS i"
        " JOIN pg_index AS x ON x.indexrelid = i.inhrelid"
        " WHERE i.inhparent = 'call_data_search'::regclass"
        " AND (%s::text IS NULL OR x.indrelid = to_regclass(%s))",
        (partition, partition),
    )
    for (index,) in cur.fetchall():
        cur.execute(f"ALTER INDEX {index} SET (gin_pending_list_limit = {SEARCH_PENDING_KB})")


def m021_search_pending_list(cur: psycopg.Cursor[Any]) -> None:
    """The search index's pending list bounded (`SEARCH_PENDING_KB`) in every partition made
    so far; the store sets it on each it makes from now on."""
    tune_search_index(cur)


def m022_usage_follows(cur: psycopg.Cursor[Any]) -> None:
    """Usage given to a stored call after it (its tokens came in a later span:
    `Store.update_usage`) moves `daily`, `people_daily` and `traces` by the difference, as a
    new cost does (SQLite's migration 24): the functions that follow a call's cost follow its
    token counts too."""
    schema = cur.execute("SELECT current_schema()").fetchone()
    assert schema is not None and schema[0] is not None  # m002 checked it
    path = pgsql.SQL("SET search_path = {}, pg_temp").format(pgsql.Identifier(schema[0])).as_string(cur)
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")

    def moved(columns: tuple[str, ...]) -> str:
        return ", ".join(f"sum(coalesce(n.{c}, 0) - coalesce(o.{c}, 0))" for c in columns)

    def changed(columns: tuple[str, ...]) -> str:
        return " OR ".join(f"n.{c} IS DISTINCT FROM o.{c}" for c in ("cost_usd", *columns))

    cost = "sum(coalesce(n.cost_usd, 0) - coalesce(o.cost_usd, 0)), count(n.cost_usd) - count(o.cost_usd)"
    pairs = "old_calls AS o JOIN new_calls AS n ON n.id = o.id AND n.timestamp = o.timestamp"
    daily = f"""
        INSERT INTO daily
        SELECT (o.timestamp AT TIME ZONE 'UTC')::date, o.feature, o.model, o.provider,
            o.prompt_template_version, 0, 0, {moved(tokens)}, {cost}, 0, 0,
            count(n.output_tokens) - count(o.output_tokens), 0, 0, 0,
            '{{}}'::jsonb, '{{}}'::jsonb, '{{}}'::jsonb
        FROM {pairs} WHERE {changed(tokens)}
        GROUP BY 1, 2, 3, 4, 5
        """
    people = f"""
        SELECT (o.timestamp AT TIME ZONE 'UTC')::date, o.user_id, o.session_id, 0, 0,
            {moved(tokens[:2])}, {cost}, min(o.timestamp), max(o.timestamp)
        FROM {pairs}
        WHERE ({changed(tokens[:2])}) AND (o.user_id IS NOT NULL OR o.session_id IS NOT NULL)
        GROUP BY 1, 2, 3
        """
    for name, upsert in (
        ("daily_add_costs", _DAILY_UPSERT.format(daily)),
        ("people_daily_add_costs", _PEOPLE_UPSERT.format(people)),
    ):
        cur.execute(
            f"""
            CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql {path} AS $$
            BEGIN
                {upsert};
                RETURN NULL;
            END
            $$
            """
        )
    usage_follows(cur)


MIGRATIONS: list[Callable[[psycopg.Cursor[Any]], None]] = [
    m001_initial,
    m002_daily,
    m003_people_daily,
    m004_spans,
    m005_cold_figures,
    m006_audit,
    m007_accounts,
    m008_search,
    m009_vectors,
    m010_reader_login,
    m011_web_sessions,
    m012_repair_figures,
    m013_waiting_events,
    m014_json_value,
    m015_response_echo,
    m016_traces,
    m017_trace_values_by_time,
    m018_alerts,
    m019_spans_by_call,
    m020_experiments,
    m021_search_pending_list,
    m022_usage_follows,
]


def schema_lock(cur: psycopg.Cursor[Any]) -> None:
    """Serialize schema changes per schema, for the rest of the transaction."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.llmlog'))")


class NoSchema(LookupError):
    """The URL's search_path names no schema of the database: there is nowhere to read from
    or to create the tables in (PostgreSQL would say "no schema has been selected")."""


def check_schema(conn: psycopg.Connection[Any]) -> str:
    """The schema the store's tables are in (the first of the search_path that exists);
    NoSchema when none of it does."""
    row = conn.execute("SELECT current_schema(), current_setting('search_path')").fetchone()
    if row is None or row[0] is None:
        path = row[1] if row else "?"
        if "," in path:
            raise NoSchema(f"no schema of the search_path {path} exists in this database")
        raise NoSchema(f"schema {path} does not exist in this database")
    return str(row[0])


def store_missing(conn: psycopg.Connection[Any]) -> str | None:
    """Why this database holds no llmlog store, for a reading command that must not make one;
    None when it holds one."""
    try:
        schema = check_schema(conn)
    except NoSchema as exc:
        return str(exc)
    return None if schema_version(conn) else f"no llmlog tables in schema {schema}"


def schema_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('llmlog_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT version FROM llmlog_schema").fetchone()
    return int(row[0]) if row else 0


class _Versions:
    """The version is the one row of `llmlog_schema`; a step is a transaction holding the
    schema's advisory lock, so concurrent openers migrate it once."""

    where = "this PostgreSQL store"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def read(self) -> int:
        return schema_version(self.conn)

    @contextlib.contextmanager
    def step(self) -> Iterator[psycopg.Cursor[Any]]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            schema_lock(cur)
            cur.execute("CREATE TABLE IF NOT EXISTS llmlog_schema (version integer NOT NULL)")
            yield cur

    def read_in(self, cur: psycopg.Cursor[Any]) -> int:
        return schema_version(self.conn)

    def write(self, cur: psycopg.Cursor[Any], version: int) -> None:
        cur.execute("DELETE FROM llmlog_schema")
        cur.execute("INSERT INTO llmlog_schema (version) VALUES (%s)", (version,))


def migrate(conn: psycopg.Connection[Any], target: int | None = None) -> int:
    """Apply pending migrations (up to `target`), each in its own transaction."""
    return migrations.migrate(_Versions(conn), MIGRATIONS, target)
