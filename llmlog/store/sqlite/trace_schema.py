"""The embedded store's `traces` table (`llmlog.store.trace_rollup`): the migrations that make
it (17) and give its feature, user and session by time (18), and the triggers that keep it,
which both write as this code defines them (`schema.MIGRATIONS` lists them)."""

from __future__ import annotations

import sqlite3

from llmlog.store.sqlite import SQLITE
from llmlog.store.trace_rollup import (
    CALLS_INDEX,
    FROM_CALLS,
    FROM_SPANS,
    MERGE_SPANS,
    SPAN_FIGURES,
    TRACES_COLUMNS,
    VALUES_AT,
    call_row_sql,
    from_scratch_sql,
    index_statements,
    merge_calls_sql,
    resum_sql,
    span_changed_sql,
    span_row_sql,
    values_by_time_sql,
)

_TRIGGERS = ("call_data_traces_insert", "spans_traces_insert", "call_data_traces_cost", "spans_traces_update")


def changed_sql(columns: tuple[str, ...]) -> str:
    """A row trigger's condition: one of `columns` changed (NULL to a value included)."""
    return " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)


def usage_follows(db: sqlite3.Connection) -> None:
    """`traces` follows usage given after a call (`Store.update_usage`), as it follows a new
    cost: its triggers made again (schema migration 24)."""
    _triggers(db)


def m017_traces(db: sqlite3.Connection) -> None:
    """A trace's calls by an index (`CallFilter(trace_id=…)` reads them, not every call), and
    `traces`: one row per trace with its figures (`llmlog.store.trace_rollup`), kept by the
    database as `daily` is, whoever inserts, so that the traces page reads a page of rows.

    Row triggers (`_triggers`): an insert into `call_data` with a trace id adds the call to
    its trace's row, an insert into `spans` the span. An insert skipped by ON CONFLICT DO
    NOTHING fires none, and neither does a span sent again the same (the upsert updates
    nothing): a call or a span stored twice is counted once. A span sent again changed
    (m018) sums its trace again. A new cost (`llmlog reprice`) moves its trace's cost by the
    difference. Nothing else the store changes in a call or a span is counted here:
    `update_content` changes text (never a figure, a time, a trace, a feature, a user or a
    session), and `llmlog keys rotate` seals text again through it and through
    `update_spans` (status messages, attributes and events; a span's name, service and
    status stay clear). `llmlog copy` stores calls through the store: the target's triggers
    count them as any insert (it copies calls, not spans).

    No DELETE trigger, as for `daily`: retention deletes old calls and spans and their
    trace's row stays, with its figures (the cold tier). Erasure is different: it sums again,
    from what is left, every trace that held one of the person's calls, held a span naming
    them, or whose row names them (its calls may have gone before, to retention), so that no
    row shows their user or session id; a trace with nothing left loses its row.

    The traces already stored are summed from their calls and spans here, in one statement
    (`from_scratch_sql`; the migration holds the write lock: nothing arrives meanwhile). Run
    again on a store whose version was set back, it keeps the rows it finds (its triggers
    kept them) and adds those missing."""
    db.execute(CALLS_INDEX)
    counts = ("spans", "calls", "errors", "failed_spans", "input_tokens", "output_tokens")
    db.execute(
        f"""
        CREATE TABLE IF NOT EXISTS traces (
            trace_id TEXT PRIMARY KEY,
            started TEXT NOT NULL, ended TEXT,  -- as call_data.timestamp
            name TEXT, service TEXT,  -- the root span's
            {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in counts)},
            cost_usd REAL NOT NULL DEFAULT 0,  -- the known costs; 0 when none
            feature TEXT, user_id TEXT, session_id TEXT,  -- the earliest call's that has one
            priced_calls INTEGER NOT NULL DEFAULT 0,  -- calls whose cost_usd is not NULL
            root_id TEXT, root_start TEXT  -- the root span: the earliest without a parent
        ) WITHOUT ROWID
        """
    )
    _value_times(db)
    for sql in index_statements():
        db.execute(sql)
    db.execute(f"INSERT OR IGNORE INTO traces ({', '.join(TRACES_COLUMNS)}) {from_scratch_sql(SQLITE)}")
    _triggers(db)


def m018_trace_values_by_time(db: sqlite3.Connection) -> None:
    """A trace's feature, user and session are those of its earliest call that has one (of
    calls made at once, the smallest value), as ClickHouse and the computation from scratch
    say, not of the first call stored: its row keeps the time of the call each came from
    (`feature_at`, `user_at`, `session_at`) and the calls' trigger takes a new call's value
    only when it is earlier. A span sent again changed replaces the one kept
    (`Traces.insert_spans`), and a trigger sums its trace again from what is stored
    (`resum_sql`) when what the figures read of it changed.

    The values of the traces stored are given again from their calls
    (`trace_rollup.values_by_time_sql`; a trace that lost calls to retention keeps its own,
    its other figures are not touched). Run again, it finds the columns made, makes the
    triggers again and gives the same values."""
    _value_times(db)
    _triggers(db)
    db.execute(values_by_time_sql(SQLITE))


def _value_times(db: sqlite3.Connection) -> None:
    """The columns keeping the time of the call each value came from, where missing."""
    have = {row[1] for row in db.execute("PRAGMA table_info(traces)")}
    for at in VALUES_AT.values():
        if at not in have:
            db.execute(f"ALTER TABLE traces ADD COLUMN {at} TEXT")  # as call_data.timestamp


def _triggers(db: sqlite3.Connection) -> None:
    """The triggers keeping `traces`, made again as this code writes them."""
    for trigger in _TRIGGERS:
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute(
        f"""
        CREATE TRIGGER call_data_traces_insert AFTER INSERT ON call_data WHEN NEW.trace_id IS NOT NULL BEGIN
            INSERT INTO traces ({", ".join(FROM_CALLS)}) VALUES ({call_row_sql(SQLITE, "NEW")})
            ON CONFLICT (trace_id) DO UPDATE SET {merge_calls_sql(SQLITE)};
        END
        """
    )
    db.execute(
        f"""
        CREATE TRIGGER spans_traces_insert AFTER INSERT ON spans BEGIN
            INSERT INTO traces ({", ".join(FROM_SPANS)}) VALUES ({span_row_sql("NEW")})
            ON CONFLICT (trace_id) DO UPDATE SET {MERGE_SPANS};
        END
        """
    )
    # A new cost, or usage given after the call (`Store.update_usage`), moves its trace's
    # figures by the difference.
    priced = "priced_calls + (NEW.cost_usd IS NOT NULL) - (OLD.cost_usd IS NOT NULL)"
    tokens = ("input_tokens", "output_tokens")
    db.execute(
        f"""
        CREATE TRIGGER call_data_traces_cost AFTER UPDATE OF cost_usd, {", ".join(tokens)} ON call_data
        WHEN OLD.trace_id IS NOT NULL AND ({changed_sql(("cost_usd", *tokens))}) BEGIN
            UPDATE traces SET
                cost_usd = CASE WHEN {priced} = 0 THEN 0.0
                    ELSE cost_usd + ifnull(NEW.cost_usd, 0.0) - ifnull(OLD.cost_usd, 0.0) END,
                priced_calls = {priced},
                {", ".join(f"{c} = {c} + ifnull(NEW.{c}, 0) - ifnull(OLD.{c}, 0)" for c in tokens)}
            WHERE trace_id = OLD.trace_id;
        END
        """
    )
    # A span replaced by a newer form (`Traces.insert_spans`): its trace summed again, from
    # scratch, when what its figures read changed; rare (an exporter's second sight of a
    # span), so exactness over speed. Not for what rotation rewrites (text only).
    drop, fill = resum_sql(SQLITE, "trace_id = NEW.trace_id")
    db.execute(
        f"""
        CREATE TRIGGER spans_traces_update AFTER UPDATE OF {", ".join(SPAN_FIGURES)} ON spans
        WHEN {span_changed_sql(SQLITE, "OLD", "NEW")} BEGIN
            {drop};
            {fill};
        END
        """
    )
