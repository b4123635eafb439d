"""The PostgreSQL store's `traces` table (`llmlog.store.trace_rollup`): the migrations that
make it (16) and give its feature, user and session by time (17), and the triggers that keep
it, which both write as this code defines them (`schema.MIGRATIONS` lists them)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql as pgsql

from llmlog.store.postgres import POSTGRES
from llmlog.store.postgres.reader import grant_reading
from llmlog.store.trace_rollup import (
    CALLS_INDEX,
    FROM_CALLS,
    FROM_SPANS,
    MERGE_SPANS,
    TRACES_COLUMNS,
    VALUES_AT,
    calls_sql,
    from_scratch_sql,
    index_statements,
    merge_calls_sql,
    resum_sql,
    span_changed_sql,
    spans_sql,
    values_by_time_sql,
)


def m016_traces(cur: psycopg.Cursor[Any]) -> None:
    """A trace's calls by an index, and `traces`, as in SQLite's migration 17: one row per
    trace with its figures (`llmlog.store.trace_rollup`), kept by statement triggers with
    transition tables as `daily` is (the writer inserts calls by COPY and one statement a
    batch: one aggregate and one upsert a statement, the rows taken in key order as every
    writer takes them, so concurrent writers never wait on each other in a cycle). The
    transition table of an INSERT … ON CONFLICT holds only the rows it inserted: a call or a
    span stored twice is counted once (a span sent again changed is an UPDATE of its own,
    m017). A new cost moves its trace's cost by the difference (the trigger fires on every
    UPDATE of `call_data`, as `daily`'s does, and keeps the rows whose cost changed). What
    else changes calls and spans, and why nothing more follows it (content updates, `llmlog
    keys rotate`, `llmlog copy`), retention (no DELETE trigger: a trace's row outlives its
    calls) and erasure (its traces summed again from what is left): as in SQLite's migration
    17. Rows inserted into a partition by name are not seen.

    The traces already stored, after the triggers (creating them locked out writers until
    this transaction ends), in one statement. Run again on a store whose version was set
    back, it keeps the rows it finds and adds those missing."""
    cur.execute(CALLS_INDEX)
    counts = ("spans", "calls", "errors", "failed_spans", "input_tokens", "output_tokens")
    cur.execute(
        f"""
        CREATE TABLE IF NOT EXISTS traces (
            trace_id text PRIMARY KEY,
            started timestamptz NOT NULL, ended timestamptz,
            name text, service text,  -- the root span's
            {", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in counts)},
            cost_usd double precision NOT NULL DEFAULT 0,  -- the known costs; 0 when none
            feature text, user_id text, session_id text,  -- the earliest call's that has one
            priced_calls bigint NOT NULL DEFAULT 0,  -- calls whose cost_usd is not NULL
            root_id text, root_start timestamptz  -- the root span: the earliest without a parent
        )
        """
    )
    _value_times(cur)
    for sql in index_statements():
        cur.execute(sql)
    _triggers(cur)
    cur.execute(
        f"INSERT INTO traces ({', '.join(TRACES_COLUMNS)}) {from_scratch_sql(POSTGRES)}"
        " ON CONFLICT (trace_id) DO NOTHING"
    )
    grant_reading(cur)


def m017_trace_values_by_time(cur: psycopg.Cursor[Any]) -> None:
    """As SQLite's migration 18: a trace's feature, user and session are those of its
    earliest call that has one, its row keeping the time each came from; a span sent again
    changed replaces the one kept, and a statement trigger on UPDATE of `spans` sums again,
    from what is stored (`resum_sql`), the traces whose spans changed in what the figures
    read (`span_changed_sql`). The writer updates the spans it finds kept in a statement of
    its own, after the insert of the new ones: an INSERT … ON CONFLICT DO UPDATE would fire
    the UPDATE trigger before the INSERT one, which would then add spans the sum already
    holds. The values of the traces stored are given again from their calls, as on SQLite.
    Run again, it finds the columns made, makes the triggers again and gives the same values."""
    _value_times(cur)
    _triggers(cur)
    cur.execute(values_by_time_sql(POSTGRES))


def usage_follows(cur: psycopg.Cursor[Any]) -> None:
    """`traces` follows usage given after a call (`Store.update_usage`), as it follows a new
    cost: its functions and triggers made again (schema migration 22)."""
    _triggers(cur)


def _value_times(cur: psycopg.Cursor[Any]) -> None:
    """The columns keeping the time of the call each value came from, where missing."""
    for at in VALUES_AT.values():
        cur.execute(f"ALTER TABLE traces ADD COLUMN IF NOT EXISTS {at} timestamptz")


def _triggers(cur: psycopg.Cursor[Any]) -> None:
    """The functions and triggers keeping `traces`, made again as this code writes them."""
    schema = cur.execute("SELECT current_schema()").fetchone()
    assert schema is not None and schema[0] is not None  # m002 checked it
    path = pgsql.SQL("SET search_path = {}, pg_temp").format(pgsql.Identifier(schema[0])).as_string(cur)
    # The functions name their tables through a search_path of their own, as `daily`'s do.
    for name, table, source, columns, select, merge in (
        ("traces_add_calls", "call_data", "new_calls", FROM_CALLS, calls_sql(POSTGRES, "new_calls"),
         merge_calls_sql(POSTGRES)),
        ("traces_add_spans", "spans", "new_spans", FROM_SPANS, spans_sql("new_spans"), MERGE_SPANS),
    ):  # fmt: skip
        cur.execute(
            f"""
            CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql {path} AS $$
            BEGIN
                INSERT INTO traces ({", ".join(columns)}) {select} ORDER BY 1
                ON CONFLICT (trace_id) DO UPDATE SET {merge};
                RETURN NULL;
            END
            $$
            """
        )
        cur.execute(
            f"CREATE OR REPLACE TRIGGER {table}_traces_insert AFTER INSERT ON {table}"
            f" REFERENCING NEW TABLE AS {source} FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    # A new cost, or usage given after the call (`Store.update_usage`), moves its trace's
    # figures by the difference.
    tokens = ("input_tokens", "output_tokens")
    cur.execute(
        f"""
        CREATE OR REPLACE FUNCTION traces_add_costs() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        BEGIN
            INSERT INTO traces (trace_id, started, cost_usd, priced_calls, {", ".join(tokens)})
            SELECT o.trace_id, min(o.timestamp), sum(coalesce(n.cost_usd, 0) - coalesce(o.cost_usd, 0)),
                count(n.cost_usd) - count(o.cost_usd),
                {", ".join(f"sum(coalesce(n.{c}, 0) - coalesce(o.{c}, 0))" for c in tokens)}
            FROM old_calls AS o JOIN new_calls AS n ON n.id = o.id AND n.timestamp = o.timestamp
            WHERE ({" OR ".join(f"n.{c} IS DISTINCT FROM o.{c}" for c in ("cost_usd", *tokens))})
                AND o.trace_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
            ON CONFLICT (trace_id) DO UPDATE SET
                cost_usd = CASE WHEN traces.priced_calls + EXCLUDED.priced_calls = 0 THEN 0
                    ELSE traces.cost_usd + EXCLUDED.cost_usd END,
                priced_calls = traces.priced_calls + EXCLUDED.priced_calls,
                {", ".join(f"{c} = traces.{c} + EXCLUDED.{c}" for c in tokens)};
            RETURN NULL;
        END
        $$
        """
    )
    cur.execute(
        "CREATE OR REPLACE TRIGGER call_data_traces_cost AFTER UPDATE ON call_data"
        " REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls"
        " FOR EACH STATEMENT EXECUTE FUNCTION traces_add_costs()"
    )
    # Spans replaced by newer forms: their traces summed again from scratch, once a
    # statement, their rows locked in key order first (as every writer takes them). Fires on
    # rotation's updates too, which change only text: the join finds nothing to sum.
    drop, fill = resum_sql(POSTGRES, "trace_id = ANY(touched)")
    cur.execute(
        f"""
        CREATE OR REPLACE FUNCTION traces_resum_spans() RETURNS trigger LANGUAGE plpgsql {path} AS $$
        DECLARE touched text[];
        BEGIN
            SELECT array_agg(DISTINCT n.trace_id ORDER BY n.trace_id) INTO touched
            FROM new_spans AS n JOIN old_spans AS o ON o.trace_id = n.trace_id AND o.span_id = n.span_id
            WHERE {span_changed_sql(POSTGRES, "o", "n")};
            IF touched IS NOT NULL THEN
                PERFORM 1 FROM traces WHERE trace_id = ANY(touched) ORDER BY trace_id FOR UPDATE;
                {drop};
                {fill};
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    cur.execute(
        "CREATE OR REPLACE TRIGGER spans_traces_update AFTER UPDATE ON spans"
        " REFERENCING OLD TABLE AS old_spans NEW TABLE AS new_spans"
        " FOR EACH STATEMENT EXECUTE FUNCTION traces_resum_spans()"
    )
