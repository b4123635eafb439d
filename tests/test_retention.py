"""Retention: `daily` holds what the calls say, so deleting the calls past the window loses
no figure; a year-long dashboard reads the same after a run as before; runs stop and carry
on; content and spans go with their calls; the space comes back; writers that cached a
deleted piece's id store it again; and the CLI and `serve` run it."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import statistics
import time
import uuid
from collections import Counter
from contextlib import nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmlog.analysis import dashboard
from llmlog.cli import cli
from llmlog.core.record import Call, Span, format_timestamp
from llmlog.operations import retention
from llmlog.store import Store, open_store, retention_policy
from llmlog.store.rollup import DAILY_COLUMNS, PER_OCTAVE, counts_of, from_raw_sql
from llmlog.store.sqlite.store import SQLiteStore
from tests.backends import Backend, SQLiteBackend, with_schema

NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()
FEATURES = ["search", "support-bot", "summarize", None]
WINDOW = retention_policy.Policy(days=30, features={"support-bot": 7})


def bucket(ms: float | None) -> int | None:
    """A latency's histogram bucket, computed here, apart from the SQL that stores it."""
    if ms is None or not 0 <= ms <= 1e12:
        return None
    return 0 if ms < 1 else 1 + math.floor(PER_OCTAVE * math.log2(ms))


def year_of_calls(n: int = 3000, seed: int = 7, days: int = 365) -> list[Call]:
    """Calls spread over the `days` days up to now, varied in every column `daily` keeps."""
    rng = random.Random(seed)
    systems = [f"You are assistant {k}. " + "Be brief. " * 50 for k in range(5)]
    calls = []
    for i in range(n):
        model = rng.choice(["claude-sonnet-4-5", "gpt-4.1", "gpt-4.1-mini"])
        latency = rng.choice([rng.lognormvariate(6.5, 0.8), rng.lognormvariate(6.5, 0.8), None, 0.5, 1024.0])
        calls.append(
            Call(
                id=str(uuid.UUID(int=rng.getrandbits(128))),
                timestamp=NOW - timedelta(seconds=rng.randint(0, (days - 1) * 86_400)),
                provider="anthropic" if model.startswith("claude") else "openai",
                model=model,
                feature=rng.choice(FEATURES),
                prompt_template_version=rng.choice(["v1", "v2", None]),
                user_id=rng.choice([None, *(f"user-{k}" for k in range(25))]),
                session_id=rng.choice([None, *(f"session-{k}" for k in range(60))]),
                system_prompt=rng.choice(systems),
                messages=[{"role": "user", "content": f"question {i}: needle-{i:05d} " + "x" * 400}],
                response={"content": [{"type": "text", "text": f"answer {i}"}]},
                tool_calls=[{"id": f"t{k}", "name": "lookup"} for k in range(rng.choice([0, 0, 1, 2]))]
                or None,
                input_tokens=rng.randint(10, 5000),
                output_tokens=rng.choice([None, rng.randint(1, 900)]),
                cache_read_tokens=rng.choice([None, rng.randint(0, 3000)]),
                cost_usd=rng.choice([None, rng.random() / 100]),
                latency_ms=latency,
                first_token_ms=None if latency is None else latency * rng.random(),
                error=rng.choice([None] * 8 + [{"type": "rate_limit_error"}, {"type": "overloaded_error"}]),
            )
        )
    return calls


def insert(store: Store, calls: list[Call]) -> None:
    for i in range(0, len(calls), 400):
        store.insert(calls[i : i + 400])


def daily_rows(store: Store) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every column of `daily`, by group; days as text and JSON objects as dicts on both stores."""
    result = store.query("SELECT * FROM daily", limit=1_000_000)
    assert tuple(result.columns) == DAILY_COLUMNS
    return {(str(r[0]), *r[1:5]): _norm(r[5:]) for r in result.rows}


def _norm(figures: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(counts_of(v) if i >= 14 else v for i, v in enumerate(figures))


def expected_daily(calls: list[Call]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """`daily` computed here from the calls: the new figures of the cold tier."""
    groups: dict[tuple[Any, ...], list[Call]] = {}
    for c in calls:
        key = (format_timestamp(c.timestamp)[:10], c.feature, c.model, c.provider, c.prompt_template_version)
        groups.setdefault(key, []).append(c)
    out = {}
    for key, group in groups.items():
        out[key] = {
            "calls": len(group),
            "errors": sum(c.error is not None for c in group),
            "output_tokens": sum(c.output_tokens or 0 for c in group),
            "output_calls": sum(c.output_tokens is not None for c in group),
            "tool_calls": sum(len(c.tool_calls or []) for c in group),
            "users": len({c.user_id for c in group if c.user_id is not None}),
            "sessions": len({c.session_id for c in group if c.session_id is not None}),
            "error_types": dict(Counter(c.error["type"] for c in group if c.error)),
            "latency_hist": _hist(c.latency_ms for c in group),
            "first_token_hist": _hist(c.first_token_ms for c in group),
        }
    return out


def _hist(values: Any) -> dict[str, int]:
    return {str(b): n for b, n in Counter(bucket(v) for v in values if bucket(v) is not None).items()}


def test_daily_holds_what_the_calls_say(backend: Backend) -> None:
    calls = year_of_calls(n=1500, days=3)
    with backend.open() as store:
        insert(store, calls)
        insert(store, calls[:100])  # again: counted once
        got = daily_rows(store)
        expected = expected_daily(calls)
        assert sorted(got, key=repr) == sorted(expected, key=repr)
        index = {c: i - 5 for i, c in enumerate(DAILY_COLUMNS)}
        for key, figures in expected.items():
            row = got[key]
            assert {name: row[index[name]] for name in figures} == figures, key
        # The varied set is varied: several users, types and buckets in one group.
        assert max(len(e["error_types"]) for e in expected.values()) == 2
        assert max(e["users"] for e in expected.values()) > 3
        assert max(len(e["latency_hist"]) for e in expected.values()) > 5
        # And the engine's own rollup from scratch (what the migration fills `daily` with) agrees.
        scratch = store.query(from_raw_sql(store.dialect), limit=1_000_000)
        assert_same_rollup({(str(r[0]), *r[1:5]): _norm(r[5:]) for r in scratch.rows}, got)


@pytest.mark.parametrize("clause", ["", "OR REPLACE", "OR IGNORE", "OR ABORT", "OR FAIL", "OR ROLLBACK"])
def test_users_and_sessions_are_counted_once_however_rows_come_by_hand(tmp_path: Path, clause: str) -> None:
    """Copies of stored calls under new ids, inserted by hand in SQL with each conflict clause
    a user may write: each day and group counts a user or session once, and no insert fails
    on one it counted already (an OR clause rules the trigger's own statements too)."""
    calls = year_of_calls(n=600, days=3)
    with open_store(str(tmp_path / "hand.db")) as store:
        assert isinstance(store, SQLiteStore)
        insert(store, calls[:400])
        columns = [
            r[1] for r in store.db.execute("PRAGMA table_info(call_data)") if r[1] not in ("rowid", "id")
        ]
        listed = ", ".join(columns)
        store.db.execute(
            f"INSERT {clause} INTO call_data (id, {listed}) SELECT id || '-copy', {listed} FROM call_data"
        )
        insert(store, calls[400:])
        got = daily_rows(store)
    copies = [c.replace(id=f"{c.id}-copy") for c in calls[:400]]
    expected = expected_daily([*calls, *copies])
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    index = {c: i - 5 for i, c in enumerate(DAILY_COLUMNS)}
    for key, figures in expected.items():
        assert (got[key][index["calls"]], got[key][index["users"]], got[key][index["sessions"]]) == (
            figures["calls"], figures["users"], figures["sessions"],
        ), key  # fmt: skip
    assert (
        max(e["users"] for e in expected.values()) > 3 and max(e["sessions"] for e in expected.values()) > 3
    )


def _float_sums_approx(value: Any) -> Any:
    """`value` with each float as approx(rel=1e-9): a sum of costs read from the calls and the
    same sum kept by the rollup add the same floats in another order (PostgreSQL's plans
    choose it), which may move the last digit."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9)
    if isinstance(value, dict):
        return {k: _float_sums_approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_float_sums_approx(v) for v in value]
    return value


def assert_same_rollup(got: dict[Any, tuple[Any, ...]], expected: dict[Any, tuple[Any, ...]]) -> None:
    """Equal, but for the rounding of float sums added in another order."""
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    for key, row in got.items():
        for a, b in zip(row, expected[key], strict=True):
            if isinstance(a, float) and math.isnan(a):
                assert isinstance(b, float) and math.isnan(b), key
            elif isinstance(a, float):
                assert a == pytest.approx(b, rel=1e-9), key
            else:
                assert a == b, key


def test_an_existing_store_gets_the_cold_figures_on_upgrade(backend: Backend, tmp_path: Path) -> None:
    """A store with calls from before the cold figures: the migration computes them."""
    calls = year_of_calls(n=500, days=5)
    source_backend = SQLiteBackend(tmp_path / "source.db")
    with source_backend.open() as source:
        insert(source, calls)
        expected = daily_rows(source)
    if backend.kind == "sqlite":
        from llmlog.store.sqlite import connect
        from llmlog.store.sqlite.schema import MIGRATIONS, m007_cold_figures, migrate

        before = MIGRATIONS.index(m007_cold_figures)
        db = connect(backend.url)
        migrate(db, target=before)
        db.execute("ATTACH ? AS source", (source_backend.path,))
        db.execute("INSERT INTO content SELECT * FROM source.content")
        # The columns the table had then (today's has more).
        columns = ", ".join(r[1] for r in db.execute("PRAGMA main.table_info(call_data)"))
        db.execute(f"INSERT INTO call_data ({columns}) SELECT {columns} FROM source.call_data")
        db.close()
    else:
        import psycopg

        from llmlog.store.postgres import schema as pg
        from tests.test_store import _partitions_by_hand

        before = pg.MIGRATIONS.index(pg.m005_cold_figures)
        with psycopg.connect(backend.url, autocommit=True) as conn:
            pg.migrate(conn, target=before)
        _partitions_by_hand(backend, calls)
        # The calls as the store of the time wrote them (the table has not changed since),
        # through a store of today in a schema beside this one.
        schema = backend.sql("SELECT current_schema()")[0][0]
        backend.sql(f"CREATE SCHEMA {schema}_src")
        try:
            with open_store(with_schema(backend.url, f"{schema}_src")) as source:
                insert(source, calls)
            backend.sql(f"INSERT INTO content OVERRIDING SYSTEM VALUE SELECT * FROM {schema}_src.content")
            # The columns the table had then (today's has more: search's and vectors').
            (columns,) = backend.sql(
                "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position)"
                " FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'call_data'"
            )[0]
            backend.sql(f"INSERT INTO call_data SELECT {columns} FROM {schema}_src.call_data")
        finally:
            backend.sql(f"DROP SCHEMA {schema}_src CASCADE")
    with backend.open() as store:
        assert store.schema_found == before
        assert_same_rollup(daily_rows(store), expected)


def dashboard_of(store: Store) -> dict[str, Any]:
    period = dashboard.Period.ending(365, TODAY)
    d = dashboard.dashboard(lambda: nullcontext(store), period, dashboard.DayCache())
    return dashboard.dashboard_json(d)


def referenced_content(backend: Backend) -> tuple[int, int]:
    """(content rows, of which no call uses) seen from outside the store."""
    if backend.kind == "sqlite":
        used = (
            "SELECT system_id FROM call_data UNION SELECT tools_id FROM call_data"
            " UNION SELECT params_id FROM call_data UNION SELECT response_instructions_id FROM call_data"
            " UNION SELECT response_tools_id FROM call_data"
            " UNION SELECT j.value FROM call_data, json_each(call_data.message_ids) AS j"
        )
    else:
        used = "SELECT unnest(coalesce(message_ids, '{}') || ARRAY[system_id, tools_id, params_id,"
        used += " response_instructions_id, response_tools_id]) FROM call_data"
    total = backend.sql("SELECT count(*) FROM content")[0][0]
    unused = backend.sql(
        f"WITH u(id) AS ({used}) SELECT count(*) FROM content"
        " WHERE id NOT IN (SELECT id FROM u WHERE id IS NOT NULL)"
    )
    return total, unused[0][0]


def test_a_simulated_year_reads_the_same_after_retention(backend: Backend) -> None:
    calls = year_of_calls()
    with backend.open() as store:
        retention_policy.set_policy(store, WINDOW)
        insert(store, calls)
        old_span = Span("a" * 32, "1" * 16, None, "agent", "internal", NOW - timedelta(days=200), None)
        new_span = Span("b" * 32, "2" * 16, None, "agent", "internal", NOW - timedelta(hours=1), None)
        gone_call = min(calls, key=lambda c: c.timestamp)
        call_span = Span("c" * 32, "3" * 16, None, "llm", "client", NOW, None, call_id=gone_call.id)
        store.insert_spans([old_span, new_span, call_span])
        before = dashboard_of(store)
        daily_before = daily_rows(store)
        people_before = store.query("SELECT * FROM people_daily", limit=1_000_000).rows

        # What the year's dashboard shows before is what the calls say.
        assert before["totals"]["rows"]["calls"] == len(calls)
        by_model = Counter(c.model for c in calls)
        assert {r["model"]: r["calls"] for r in before["calls_by_model"]["rows"]} == by_model
        for row in before["latency_by_model"]["rows"]:
            values = sorted(
                c.latency_ms for c in calls if c.model == row["model"] and c.latency_ms is not None
            )
            true = statistics.quantiles(values, n=100, method="inclusive")
            assert row["p50_ms"] == pytest.approx(true[49], rel=0.045)
            assert row["p95_ms"] == pytest.approx(true[94], rel=0.045)

        report = retention.run(store)
        kept = [c for c in calls if c.timestamp.date() >= WINDOW.cutoff(c.feature, TODAY)]
        assert report.calls == len(calls) - len(kept) > len(calls) // 2
        assert {d.day for d in report.days} == {
            c.timestamp.date() for c in calls if c.timestamp.date() < WINDOW.cutoff(c.feature, TODAY)
        }
        assert report.contents >= report.calls  # every deleted call had a message of its own
        kept_ids = {c.id for c in kept}
        assert {r[0] for r in backend.sql("SELECT id FROM call_data")} == kept_ids

        # The same year, the day after. But for the newest errors: a list of calls, which
        # shows the kept ones, newest first, as before.
        after = dashboard_of(store)
        errors_before = [r["id"] for r in before.pop("recent_errors")["rows"]]
        errors_after = [r["id"] for r in after.pop("recent_errors")["rows"]]
        assert after == _float_sums_approx(before)
        still = [e for e in errors_before if e in kept_ids]
        assert len(still) < 10 and errors_after[: len(still)] == still
        assert len(errors_after) == 10 and set(errors_after) <= kept_ids
        assert daily_rows(store) == daily_before
        assert store.query("SELECT * FROM people_daily", limit=1_000_000).rows == people_before

        # The text of the deleted calls is gone; the kept calls' is whole.
        total, unused = referenced_content(backend)
        assert unused == 0 and total > 0
        like = "CAST(body AS TEXT) LIKE ?" if backend.kind == "postgres" else "body LIKE ?"
        gone = next(i for i, c in enumerate(calls) if c.id not in kept_ids)
        assert backend.sql(f"SELECT count(*) FROM content WHERE {like}", [f"%needle-{gone:05d}%"]) == [(0,)]
        for c in kept[:20]:
            got = store.get(c.id)
            assert got is not None and got.messages == c.messages and got.system_prompt == c.system_prompt
        assert store.trace(old_span.trace_id) == [] and store.trace(call_span.trace_id) == []
        assert [s.span_id for s in store.trace(new_span.trace_id)] == [new_span.span_id]

        # Run again: nothing more goes.
        again = retention.run(store)
        assert (again.days, again.calls, again.contents) == ([], 0, 0)
        assert daily_rows(store) == daily_before


def test_a_feature_can_keep_its_calls_longer(backend: Backend) -> None:
    calls = year_of_calls(n=600, days=100)
    with backend.open() as store:
        insert(store, calls)
        retention_policy.set_policy(store, retention_policy.Policy(days=10, features={"search": 365}))
        retention.run(store)
        left = Counter(r[0] for r in backend.sql("SELECT feature FROM call_data"))
        assert left["search"] == sum(c.feature == "search" for c in calls)
        assert left["summarize"] == sum(
            c.feature == "summarize" and c.timestamp.date() >= TODAY - timedelta(days=10) for c in calls
        )


def test_a_run_stopped_midway_carries_on(backend: Backend) -> None:
    calls = year_of_calls(n=1500)
    with backend.open() as store:
        retention_policy.set_policy(store, WINDOW)
        insert(store, calls)
        daily_before = daily_rows(store)
        plan = retention.plan(store, WINDOW, TODAY)
        done: list[date] = []

        def stop_after_three(day: retention.Day) -> None:
            done.append(day.day)
            if len(done) == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            retention.run(store, on_day=stop_after_three)
        # Three whole days went, in their own transactions; the rest is still there.
        left = retention.plan(store, WINDOW, TODAY)
        assert [d.day for d in left] == [d.day for d in plan[3:]]
        assert referenced_content(backend)[1] > 0  # what the three days used, not yet collected

        report = retention.run(store)
        assert [d.day for d in report.days] == [d.day for d in plan[3:]]
        assert retention.plan(store, WINDOW, TODAY) == []
        assert referenced_content(backend)[1] == 0
        assert daily_rows(store) == daily_before


def test_disk_space_comes_back_from_sqlite(tmp_path: Path) -> None:
    calls = [
        c.replace(messages=[{"role": "user", "content": c.id * 300}]) for c in year_of_calls(n=800, days=90)
    ]
    # A store made now (incremental vacuum) and one made before it was the default.
    legacy = tmp_path / "legacy.db"
    with sqlite3.connect(legacy) as db:
        db.execute("CREATE TABLE kept_by_the_user (x)")
    for path in (tmp_path / "new.db", legacy):
        with SQLiteStore(path) as store:
            insert(store, calls)
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            before = store.size_bytes()
            report = retention.run(store, retention_policy.Policy(days=30))
            assert report.bytes_before == before
            assert report.calls > len(calls) // 2
            assert store.size_bytes() == report.bytes_after < before * 0.6, path
            assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
            assert store.db.execute("PRAGMA freelist_count").fetchone()[0] < 50


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgresql_drops_the_months_that_went(backend: Backend) -> None:
    calls = year_of_calls(n=800, days=200)
    with backend.open() as store:
        insert(store, calls)

        def months() -> set[str]:
            return {
                r[0]
                for r in backend.sql(
                    "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'call_data'::regclass"
                )
            }

        before, size = months(), store.size_bytes()
        retention.run(store, retention_policy.Policy(days=30))
        after = months()
        oldest_kept = TODAY - timedelta(days=30)
        assert f"call_data_{oldest_kept.year:04d}{oldest_kept.month:02d}" in after
        assert len(before) - len(after) >= 4
        assert all(name >= f"call_data_{oldest_kept.year:04d}{oldest_kept.month:02d}" for name in after)
        assert store.size_bytes() < size
        # A late call for a dropped month still finds a table to go in.
        late = calls[0].replace(id="late", timestamp=NOW - timedelta(days=150))
        assert store.insert([late]) == 1


def test_writers_forget_content_ids_after_a_deletion(backend: Backend) -> None:
    """A writer that cached the id of a piece of content another process deleted stores the
    piece again, not a pointer to nothing (or to another piece that took the id)."""
    system = "A system prompt only erased users' calls use. " * 10
    with backend.open() as writer, backend.open() as admin:
        first = Call(id="first", timestamp=NOW, user_id="erased", system_prompt=system)
        writer.insert([first])  # caches the prompt's content id
        assert admin.erase(user_id="erased").contents >= 1
        other = Call(id="other", timestamp=NOW, system_prompt="Another prompt, which may take the free id.")
        admin.insert([other])
        second = Call(id="second", timestamp=NOW, system_prompt=system)
        writer.insert([second])
        got = writer.get("second")
        assert got is not None and got.system_prompt == system
        # The same after retention collects content.
        old = Call(id="old", timestamp=NOW - timedelta(days=90), system_prompt="Old prompt. " * 10)
        writer.insert([old])
        assert retention.run(admin, retention_policy.Policy(days=30)).contents >= 1
        writer.insert([Call(id="again", timestamp=NOW, system_prompt=old.system_prompt)])
        got = writer.get("again")
        assert got is not None and got.system_prompt == old.system_prompt


def test_a_policy_is_whole_days(tmp_path: Path) -> None:
    for bad in (0, -1, 1.5, retention_policy.MAX_DAYS + 1):
        with pytest.raises(ValueError, match="whole number of days"):
            retention_policy.Policy(days=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="support"):
        retention_policy.Policy(days=30, features={"support": 0})
    with SQLiteStore(tmp_path / "calls.db") as store:
        assert retention_policy.policy(store) == retention_policy.Policy(days=retention_policy.DEFAULT_DAYS)
        retention_policy.set_policy(store, WINDOW)
        assert retention_policy.policy(store) == WINDOW


def test_the_cli_sets_shows_and_runs_it(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    calls = year_of_calls(n=300, days=60)
    with SQLiteStore(db) as store:
        insert(store, calls)
    runner = CliRunner()

    def llmlog(*args: str) -> Any:
        return runner.invoke(cli, ["--db", db, *args], catch_exceptions=False)

    assert llmlog("retention", "show").output.startswith("calls kept 60 days\nNothing is past its window.")
    r = llmlog("retention", "set", "--days", "20", "--feature", "search=5", "--feature", "summarize=40")
    assert r.exit_code == 0 and r.output == "calls kept 20 days (search: 5 days, summarize: 40 days)\n"
    assert (
        llmlog("retention", "set", "--feature", "summarize=").output
        == "calls kept 20 days (search: 5 days)\n"
    )
    for bad in (["--days", "0"], ["--feature", "search"], ["--feature", "search=soon"]):
        r = llmlog("retention", "set", *bad)
        assert r.exit_code == 2, bad
    past = {
        c.id
        for c in calls
        if c.timestamp.date() < retention_policy.Policy(20, {"search": 5}).cutoff(c.feature, TODAY)
    }
    dry = llmlog("retention", "run", "--dry-run")
    assert f"{len(past):,} call(s) of" in dry.output and "would go" in dry.output
    with SQLiteStore(db) as store:
        assert store.count(reports_filter()) == len(calls)
    done = llmlog("retention", "run")
    assert done.exit_code == 0 and f"Deleted {len(past):,} call(s)" in done.output and "MiB" in done.output
    with SQLiteStore(db) as store:
        assert store.count(reports_filter()) == len(calls) - len(past)
    assert "Nothing is past its window." in llmlog("retention", "run", "--dry-run").output


def reports_filter() -> Any:
    from llmlog.core.filters import CallFilter

    return CallFilter()


def test_serve_runs_it_every_day(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    with SQLiteStore(db) as store:
        retention_policy.set_policy(store, retention_policy.Policy(days=30))
        insert(store, year_of_calls(n=200, days=60))
    daily = retention.Daily(lambda: open_store(db), every_s=0.2, first_s=0.05).start()
    try:
        deadline = time.monotonic() + 20
        while len(daily.runs) < 2:
            assert time.monotonic() < deadline, "retention did not run twice"
            time.sleep(0.05)
    finally:
        daily.stop()
    assert daily.runs[0].calls > 0 and daily.runs[1].calls == 0
    with SQLiteStore(db) as store:
        assert retention.plan(store, retention_policy.Policy(days=30), TODAY) == []


def test_histogram_percentiles_bound_the_error() -> None:
    from llmlog.store.rollup import histogram_percentile

    rng = random.Random(3)
    values = [rng.lognormvariate(6, 1.2) for _ in range(20_000)]
    hist = _hist(values)
    exact = statistics.quantiles(values, n=100, method="inclusive")
    for p in (0.5, 0.95, 0.99):
        assert histogram_percentile(hist, p) == pytest.approx(exact[round(p * 100) - 1], rel=0.045)
    assert histogram_percentile({"0": 3}, 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        histogram_percentile({}, 0.5)
    assert json.dumps(hist)  # plain JSON, as stored
