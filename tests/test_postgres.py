"""PostgreSQL end to end: the demo and the CLI through the console script, `llmlog copy`
between SQLite and PostgreSQL, `llmlog migrate`, and the server going away while the app runs.
(The store behaviour itself is tested on both kinds by tests/test_store.py.)"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import psycopg
import pytest
from click.testing import CliRunner

import llmlog
from llmlog.cli import cli
from llmlog.core.config import Settings, cache_bytes
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.writer import SHARED_FROM, Writer
from llmlog.store import open_store
from llmlog.store.postgres.store import PostgresStore
from tests.backends import PostgresBackend, TempPostgres, new_schema
from tests.conftest import temp_postgres
from tests.test_cli import llmlog_script

T0 = datetime(2026, 1, 30, 23, 0, tzinfo=UTC)  # calls cross a month, so two partitions


def script(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMLOG_DB": db, "LLMLOG_PRICES": ""}
    return subprocess.run([llmlog_script(), *args], capture_output=True, text=True, env=env, timeout=180)


def test_demo_and_cli_on_postgres(pg_url: str) -> None:
    """`LLMLOG_DB=postgresql://… llmlog demo`, then calls, show and the three first queries."""
    demo = script("demo", "--calls", "120", "--history", "0", db=pg_url)
    assert demo.returncode == 0, demo.stderr
    assert "Recorded 120 calls" in demo.stderr

    listed = script("calls", "-n", "200", "--json", db=pg_url)
    assert listed.returncode == 0, listed.stderr
    calls = json.loads(listed.stdout)
    assert len(calls) == 120
    assert {c["provider"] for c in calls} == {"anthropic", "openai"}

    one = next(c for c in calls if c["messages"] and c["system_prompt"])
    shown = script("show", one["id"][:12], db=pg_url)
    assert shown.returncode == 0, shown.stderr
    assert one["id"] in shown.stdout and one["model"] in shown.stdout and "cost" in shown.stdout

    errors = script("query", "--format", "json", FIRST_ERRORS, db=pg_url)
    assert errors.returncode == 0, errors.stderr
    rows = json.loads(errors.stdout)
    assert rows and all(r["error"] for r in rows)
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)
    # jsonb comes back as its JSON text. Most errors are the provider's (an HTTP status); one
    # the client met (a timeout on a loaded machine) has none.
    parsed = [json.loads(r["error"]) for r in rows]
    assert all(isinstance(e, dict) and e["type"] for e in parsed)
    assert any((e["status"] or 0) >= 400 for e in parsed)

    by_model = script("query", "--format", "json", FIRST_BY_MODEL, db=pg_url)
    assert by_model.returncode == 0, by_model.stderr
    assert sum(r["count"] for r in json.loads(by_model.stdout)) == 120

    by_version = script("query", "--format", "csv", FIRST_BY_VERSION, db=pg_url)
    assert by_version.returncode == 0, by_version.stderr
    lines = by_version.stdout.splitlines()
    assert lines[0] == "prompt_template_version,avg" and len(lines) > 3

    # PostgreSQL's own JSON operators work on the jsonb columns.
    tiers = script("query", "--format", "json", TIERS, db=pg_url)
    assert tiers.returncode == 0, tiers.stderr
    assert {r["tier"] for r in json.loads(tiers.stdout)} == {"enterprise", "free"}


FIRST_ERRORS = "SELECT * FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC"
FIRST_BY_MODEL = "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model"
FIRST_BY_VERSION = "SELECT prompt_template_version, AVG(output_tokens) FROM calls GROUP BY 1 ORDER BY 1"
TIERS = "SELECT metadata->>'tier' AS tier, COUNT(*) FROM calls GROUP BY 1"


# ---------------------------------------------------------------- copy


def _history(n: int) -> list[Call]:
    """A long session (repeated content) across a month boundary, plus odd ones."""
    system = "You are the billing assistant. " * 100
    calls, messages = [], []
    for i in range(n):
        messages = [*messages, {"role": "user", "content": f"question {i}"}]
        calls.append(
            Call(
                timestamp=T0 + timedelta(minutes=5 * i),
                session_id="s1",
                model="claude-sonnet-4-5",
                feature="billing",
                system_prompt=system,
                messages=messages,
                response={"content": [{"type": "text", "text": f"answer {i}"}]},
                input_tokens=100 + i,
                output_tokens=10,
                cost_usd=0.001 * i,
                rate_card="genai-prices 0.2.3",
                metadata={"i": i},
                tags=["t"],
                error={"type": "overloaded_error", "status": 529} if i % 17 == 0 else None,
            )
        )
    return calls


def _copy(source: str, target: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["copy", "--from", source, "--to", target, *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stderr


def _everything(url: str) -> list[dict]:
    with open_store(url) as store:
        return [c.to_dict() for c in store.iter_calls(CallFilter())]


def test_copy_sqlite_to_postgres_and_back(tmp_path: Path, pg_url: str) -> None:
    sqlite_db = str(tmp_path / "source.db")
    calls = _history(60)
    with open_store(sqlite_db) as store:
        store.insert(calls)

    code, err = _copy(sqlite_db, pg_url, "--batch", "7")
    assert code == 0, err
    assert "Copied 60 call(s)" in err
    assert _everything(pg_url) == _everything(sqlite_db) == [c.to_dict() for c in calls]
    # Repeated content is stored once on the target too.
    contents = PostgresBackend(pg_url).sql("SELECT count(*) FROM content")[0][0]
    assert contents == 1 + 60  # the system prompt once, each question once


def test_copy_is_resumable_and_never_duplicates(tmp_path: Path, pg_url: str) -> None:
    sqlite_db = str(tmp_path / "source.db")
    calls = _history(50)
    with open_store(sqlite_db) as store:
        store.insert(calls)
    # An interrupted copy: some calls (not a prefix) are already in the target.
    with open_store(pg_url) as store:
        store.insert(calls[5:20] + calls[40:41])

    code, err = _copy(sqlite_db, pg_url, "--batch", "8")
    assert code == 0, err
    assert "Copied 34 call(s)" in err and "16 call(s) and 0 span(s) already there" in err
    code, err = _copy(sqlite_db, pg_url)
    assert code == 0 and "Copied 0 call(s)" in err and "50 call(s) and 0 span(s) already there" in err
    assert PostgresBackend(pg_url).sql("SELECT count(*), count(DISTINCT id) FROM call_data") == [(50, 50)]

    back = str(tmp_path / "back.db")
    code, err = _copy(pg_url, back)
    assert code == 0 and "Copied 50 call(s)" in err
    assert _everything(back) == [c.to_dict() for c in calls]


def test_copy_refuses_the_same_store_and_reports_a_dead_server(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    open_store(db).close()
    code, err = _copy(db, db)
    assert code == 2 and "same store" in err
    dead = "postgresql://llmlog:s3cret@127.0.0.1:1/none?connect_timeout=2"
    code, err = _copy(db, dead)
    assert code == 1
    assert "cannot open store postgresql://llmlog:***@127.0.0.1:1/none" in err
    assert "s3cret" not in err and "Traceback" not in err
    code, err = _copy(db, "postgresql://llmlog@127.0.0.1:1/none?password=s3cret&connect_timeout=2")
    assert code == 1 and "postgresql://llmlog:***@127.0.0.1:1/none" in err and "s3cret" not in err
    code, err = _copy(str(tmp_path / "typo.db"), dead)
    assert code == 2 and "no such file" in err and not (tmp_path / "typo.db").exists()
    code, err = _copy(db, str(tmp_path / "b.db"), "--batch", "0")
    assert code == 2


def test_migrate_command(pg_url: str, tmp_path: Path) -> None:
    for url in (pg_url, str(tmp_path / "m.db")):
        first = CliRunner().invoke(cli, ["--db", url, "migrate"])
        assert first.exit_code == 0 and "schema migrated from version 0 to" in first.stderr, first.stderr
        again = CliRunner().invoke(cli, ["--db", url, "migrate"])
        assert again.exit_code == 0 and "schema up to date" in again.stderr


# ---------------------------------------------------------------- the server goes away


@pytest.fixture
def own_postgres() -> Iterator[TempPostgres]:
    """A server of this test's own, so that it can be stopped and started again."""
    server = temp_postgres()
    yield server
    server.destroy()


def _client(fake: FakeProvider) -> anthropic.Anthropic:
    return llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))


def _call(client: anthropic.Anthropic, i: int) -> anthropic.types.Message:
    return client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": f"call {i}"}]
    )


def test_server_down_while_the_app_runs(
    own_postgres: TempPostgres, fake: FakeProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = new_schema(own_postgres.url)
    llmlog.configure(db=url)
    client = _client(fake)
    try:
        for i in range(5):
            _call(client, i)
        assert llmlog.flush(timeout=15)
        assert llmlog.stats().recorded == 5

        own_postgres.stop()
        with caplog.at_level(logging.WARNING, logger="llmlog"):
            started = time.monotonic()
            for i in range(5, 25):
                assert isinstance(_call(client, i), anthropic.types.Message)  # the app goes on
            assert time.monotonic() - started < 10
            assert not llmlog.flush(timeout=1)
            stats = llmlog.stats()
            assert stats.store_errors >= 1 and stats.recorded == 5 and stats.dropped == 0
        assert any("retrying" in r.getMessage() for r in caplog.records)

        own_postgres.start()
        assert llmlog.flush(timeout=30)
        stats = llmlog.stats()
        assert (stats.recorded, stats.dropped, stats.failed) == (25, 0, 0)
        with open_store(url) as store:
            got = sorted(c.messages[0]["content"] for c in store.iter_calls(CallFilter()))  # type: ignore[index]
        assert got == sorted(f"call {i}" for i in range(25))
    finally:
        llmlog.configure(db=str(tmp_path / "other.db"))


def test_server_down_past_the_queue_is_counted(
    own_postgres: TempPostgres, fake: FakeProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What cannot wait in the bounded queue is dropped, counted and reported — never silent."""
    _, url = new_schema(own_postgres.url)
    llmlog.configure(db=url, queue_size=4, batch_size=2)
    client = _client(fake)
    try:
        _call(client, 0)
        assert llmlog.flush(timeout=15)
        own_postgres.stop()
        with caplog.at_level(logging.WARNING, logger="llmlog"):
            for i in range(1, 21):
                _call(client, i)
        dropped = llmlog.stats().dropped
        assert dropped >= 20 - 4 - 3 * 2  # the queue, and three batches the writer holds while retrying
        assert any("queue full" in r.getMessage() for r in caplog.records)
        own_postgres.start()
        assert llmlog.flush(timeout=30)
        stats = llmlog.stats()
        assert stats.recorded + stats.dropped == 21 and stats.dropped == dropped
        with open_store(url) as store:
            assert store.count(CallFilter()) == stats.recorded
    finally:
        llmlog.configure(db=str(tmp_path / "other.db"))


def test_an_unstorable_call_does_not_block_the_rest(pg_url: str, fake: FakeProvider, tmp_path: Path) -> None:
    """A feature name too long for an index entry can never be stored in PostgreSQL: it is
    counted and logged, and the calls around it are stored (not retried as an outage)."""
    llmlog.configure(db=pg_url)
    client = _client(fake)
    try:
        _call(client, 0)
        with llmlog.context(feature=os.urandom(4000).hex()):  # incompressible, over ~2.7 kB
            _call(client, 1)
        _call(client, 2)
        assert llmlog.flush(timeout=30)
        stats = llmlog.stats()
        assert (stats.recorded, stats.failed, stats.dropped, stats.store_errors) == (2, 1, 0, 0)
        with open_store(pg_url) as store:
            assert store.count(CallFilter()) == 2
    finally:
        llmlog.configure(db=str(tmp_path / "other.db"))


def test_one_sessions_calls_waiting_do_not_hold_up_anothers(pg_url: str) -> None:
    """Under load the writer stores into PostgreSQL through two connections, each taking a
    share of the sessions. While one share waits (here on a `daily` row another transaction
    holds), the other's calls are stored; then the first's, once the row is let go. An app
    that records less holds one connection."""

    def feature_call(i: int, feature: str) -> Call:
        return Call(
            id=f"call-{i}",
            timestamp=T0,
            model="claude-sonnet-4-6",
            feature=feature,
            session_id=f"session-{feature}",
            messages=[{"role": "user", "content": f"{feature}: question {i}"}],
        )

    with open_store(pg_url) as store:  # the group row of the feature held below
        store.insert([feature_call(0, "held")])
    features = ["held"] + [f"free-{i}" for i in range(19)]
    # Each round of calls one batch: they arrive well within the flush interval.
    writer = Writer(Settings(db=pg_url, url=None, flush_interval_s=1.0))
    for i in range(SHARED_FROM - 1):  # a batch too small to share
        assert writer.submit(feature_call(1000 + i, features[i % len(features)]))
    assert writer.flush(10), writer.stats()
    assert [sink is not None for sink in writer._sinks] == [True, False]
    with psycopg.connect(pg_url) as holder, psycopg.connect(pg_url, autocommit=True) as reader:

        def stored() -> int:
            return int(reader.execute("SELECT count(*) FROM call_data").fetchone()[0])  # type: ignore[index]

        holder.execute("SELECT 1 FROM daily WHERE feature = 'held' FOR UPDATE")
        try:
            for i in range(1, SHARED_FROM + 1):
                assert writer.submit(feature_call(i, features[i % len(features)]))
            deadline = time.monotonic() + 10
            while stored() == SHARED_FROM and time.monotonic() < deadline:
                time.sleep(0.05)
            # Some of the other sessions' calls, and not the held session's.
            assert stored() > SHARED_FROM
            held_before = 1 + len(range(0, SHARED_FROM - 1, len(features)))
            assert reader.execute("SELECT count(*) FROM call_data WHERE feature = 'held'").fetchone() == (
                held_before,
            )
        finally:
            holder.rollback()
        assert writer.flush(10), writer.stats()
        # Each connection's store names content by identity for its share of the sessions:
        # together they hold what one store's cache may.
        held = [sink._content.max_bytes for sink in writer._sinks if isinstance(sink, PostgresStore)]
        assert len(held) == 2 and sum(held) <= cache_bytes("named")
        writer.close()
        assert stored() == 2 * SHARED_FROM


def test_a_session_id_given_as_a_list_does_not_stop_recording(pg_url: str) -> None:
    """An app that gives a session id that is not text (here a list) has that call stored,
    its session id as text, and every call after it: sharing a batch out between the
    writer's two connections does not stop the writer's thread."""
    writer = Writer(Settings(db=pg_url, url=None, flush_interval_s=1.0))
    try:
        assert writer.submit(Call(id="first", timestamp=T0, model="m"))  # the first connection made
        assert writer.flush(15), writer.stats()
        listed = Call(id="listed", timestamp=T0, model="m", session_id=["tenant-7", "chat-1"])  # type: ignore[arg-type]
        assert writer.submit(listed)
        for i in range(SHARED_FROM):  # one batch, shared out
            assert writer.submit(Call(id=f"call-{i}", timestamp=T0, model="m", session_id=f"session-{i % 7}"))
        assert writer.flush(15), writer.stats()
        stats = writer.stats()
        assert (stats.recorded, stats.failed, stats.store_errors) == (SHARED_FROM + 2, 0, 0)
    finally:
        writer.close(1)
    with open_store(pg_url) as store:
        assert store.count(CallFilter()) == SHARED_FROM + 2
        stored = store.get("listed")
        assert stored is not None and stored.session_id == "['tenant-7', 'chat-1']"
