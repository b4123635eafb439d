"""Experiments kept by each store (`llmlog.store.experiments`): saved, replaced by id, listed
newest first, found by the id a person types and by no other text, read back after the store
is opened again, and never readable by read-only SQL (the store's `query`, `llmlog query`, the
console, PostgreSQL's reader login). On SQLite, PostgreSQL and ClickHouse embedded (its
private file), and as a ClickHouse server keeps them (versioned rows, on the real engine
embedded). `llmlog copy` and erasure go on as before."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, format_timestamp
from llmlog.store import ReadOnlyError, Store, open_store
from llmlog.store.clickhouse import reader as ch_reader
from llmlog.store.clickhouse import schema as ch
from llmlog.store.clickhouse.embedded import PRIVATE_FILE, EmbeddedClickHouseStore
from llmlog.store.clickhouse.engine import EmbeddedEngine
from llmlog.store.clickhouse.store import ClickHouseStore
from llmlog.store.experiments import Experiment
from llmlog.store.postgres import schema as pg
from llmlog.store.sqlite import schema as sqlite_schema
from tests.backends import Backend, SQLiteBackend, admin
from tests.webui import Running

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
# Text as people and files give it: quotes, a backslash, placeholders of every engine's SQL.
HOSTILE = "it's \"quoted\" \\ ünïcode 🙂 %s ? $1 '); DROP TABLE experiments; --"
MARKER = "zq7experimentmarker"  # in a definition: read-only SQL must never show it

Opens = Callable[[], Store]


def experiment(n: int, created: datetime = NOW, **changes: object) -> Experiment:
    made = Experiment(
        id=f"exp-{n:08x}",
        created=created,
        feature="code-review",
        version="code-review@v1",
        since=NOW - timedelta(days=7),
        until=NOW,
        change={"model": "claude-haiku-4-5", "params": {"temperature": 0, "stop": ["\n\n"]}},
        sample=[f"call-{n}-{i}" for i in range(5)],
        budget_usd=2.5,
        estimate_usd=0.75,
        note=f"{MARKER} {HOSTILE}",
    )
    for name, value in changes.items():
        setattr(made, name, value)
    return made


def server_opens(path: Path) -> Opens:
    """A ClickHouse server's store (versioned rows, the reader's grants), on the engine
    embedded: each open with an engine of its own, which the store closes."""
    return lambda: ClickHouseStore(f"chdb://{path}", EmbeddedEngine(str(path)))


def write_raw(store: Store, experiment_id: str, created: datetime, text: str) -> None:
    """A row as something other than this code might have written it."""
    if isinstance(store, ClickHouseStore) and not isinstance(store, EmbeddedClickHouseStore):
        store.engine.insert(
            "experiments", ["id", "created", "definition", "version"],
            [[experiment_id, format_timestamp(created), text, 1]],
        )  # fmt: skip
        return
    store._run(  # type: ignore[attr-defined]
        "INSERT INTO experiments (id, created, definition) VALUES (?, ?, ?)",
        (experiment_id, format_timestamp(created), text),
    )


# ---------------------------------------------------------------- what each check asks


def check_saved_replaced_and_listed(opens: Opens) -> None:
    with opens() as store:
        assert store.experiments() == [] and store.experiment("exp-00000001") is None
        first = experiment(1, NOW - timedelta(hours=2))
        second = experiment(2, NOW, sample=[f"c{i}" for i in range(3000)])  # a large sample
        third = experiment(3, NOW - timedelta(hours=1), change={}, version=None)
        for e in (first, second, third):
            store.save_experiment(e)
        assert store.experiment(first.id) == first
        assert store.experiment(second.id) == second
        assert store.experiments() == [second, third, first]  # newest first
        assert store.experiments(limit=2) == [second, third]
        assert store.experiments(limit=0) == []
        # Saved again as a run goes on: the row replaced, not added beside it.
        running = experiment(1, first.created, status="running", spent_usd=0.25)
        store.save_experiment(running)
        done = experiment(1, first.created, status="done", spent_usd=0.5, finished=NOW, extra={"k": [1]})
        store.save_experiment(done)
        assert store.experiment(first.id) == done
        assert store.experiments() == [second, third, done]
        # Two created at the same moment: both, in an order that stays put.
        twin = experiment(4, NOW)
        store.save_experiment(twin)
        assert [e.id for e in store.experiments()] == [twin.id, second.id, third.id, done.id]


def check_found_by_its_id_only(opens: Opens) -> None:
    with opens() as store:
        kept = experiment(0x1A2B3C4D)
        store.save_experiment(kept)
        # As people type it: capitals, spaces around.
        assert store.experiment("EXP-1A2B3C4D") == kept
        assert store.experiment(" exp-1a2b3c4d\n") == kept
        for wrong in (
            "exp-1a2b3c4e", "exp-1a2b3c4", "exp-1a2b3c4d0", "", "   ", "exp-%", "exp-________", "%", "*",
            "exp-1a2b3c4d' OR '1'='1", "' OR 1=1 --", "exp-1a2b3c4d\x00", "\x00", "\udc80", "exp-\udc80",
            "x" * 10_000, "exp-1a2b3c4d; DROP TABLE experiments", HOSTILE,
        ):  # fmt: skip
            assert store.experiment(wrong) is None, repr(wrong)
        for wrong_type in (None, 5, b"exp-1a2b3c4d"):
            assert store.experiment(wrong_type) is None  # type: ignore[arg-type]
        assert store.experiments() == [kept]  # nothing above touched it
        # An id no one could type back is not kept.
        for unfit in ("", " exp-1", "EXP-1A2B3C4D", "exp-\x00", "x" * 65):
            with pytest.raises(ValueError, match="id"):
                store.save_experiment(experiment(1, id=unfit))
        assert store.experiments() == [kept]


def check_unreadable_definition_skipped(opens: Opens, caplog: pytest.LogCaptureFixture) -> None:
    with opens() as store:
        good = experiment(1)
        store.save_experiment(good)
        write_raw(store, "exp-0000000b", NOW + timedelta(hours=1), "{not json")
        write_raw(store, "exp-0000000c", NOW + timedelta(hours=2), json.dumps({"id": "exp-0000000c"}))
        write_raw(store, "exp-0000000d", NOW + timedelta(hours=3), json.dumps(["a", "list"]))
        bad_time = {**good.to_json(), "id": "exp-0000000e", "since": "yesterday"}
        write_raw(store, "exp-0000000e", NOW + timedelta(hours=4), json.dumps(bad_time))
        with caplog.at_level(logging.WARNING, logger="llmlog"):
            assert store.experiments() == [good]
            assert store.experiment("exp-0000000b") is None
        said = caplog.text
        for bad in ("exp-0000000b", "exp-0000000c", "exp-0000000d", "exp-0000000e"):
            assert f"experiment '{bad}'" in said and "cannot be read" in said


def check_kept_when_opened_again(opens: Opens) -> None:
    kept = [experiment(n, NOW + timedelta(minutes=n)) for n in range(1, 4)]
    with opens() as store:
        for e in kept:
            store.save_experiment(e)
    with opens() as store:
        assert store.experiments() == kept[::-1]
        store.save_experiment(experiment(2, kept[1].created, status="stopped", note="interrupted"))
    with opens() as store:
        again = store.experiment(kept[1].id)
        assert again is not None and (again.status, again.note) == ("stopped", "interrupted")
        assert len(store.experiments()) == 3


CHECKS = [check_saved_replaced_and_listed, check_found_by_its_id_only, check_kept_when_opened_again]


# ---------------------------------------------------------------- on every engine


def test_saved_replaced_and_listed_newest_first(every_engine: Backend) -> None:
    check_saved_replaced_and_listed(every_engine.open)


def test_found_by_the_id_people_type_and_by_no_other_text(every_engine: Backend) -> None:
    check_found_by_its_id_only(every_engine.open)


def test_a_definition_that_cannot_be_read_is_skipped_and_said(
    every_engine: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    check_unreadable_definition_skipped(every_engine.open, caplog)


def test_kept_when_the_store_is_opened_again(every_engine: Backend) -> None:
    check_kept_when_opened_again(every_engine.open)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_on_a_clickhouse_server(check: Callable[[Opens], None], tmp_path: Path) -> None:
    check(server_opens(tmp_path / "ch"))


def test_an_unreadable_definition_on_a_clickhouse_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    check_unreadable_definition_skipped(server_opens(tmp_path / "ch"), caplog)


# ---------------------------------------------------------------- private


READS = [
    "SELECT * FROM experiments",
    "SELECT count(*) FROM experiments",
    "SELECT definition FROM experiments WHERE id = 'exp-00000001'",
    "WITH e AS (SELECT * FROM experiments) SELECT * FROM e",
    "SELECT id FROM calls UNION ALL SELECT definition FROM experiments",
]


def test_read_only_sql_cannot_read_the_experiments(every_engine: Backend) -> None:
    with every_engine.open() as store:
        store.insert([Call(id="c1", timestamp=NOW, model="m", feature="code-review")])
        store.save_experiment(experiment(1))
        reads = list(READS)
        if every_engine.kind == "sqlite":
            reads += ["SELECT * FROM main.experiments", "SELECT * FROM dbstat WHERE name = 'experiments'"]
        if every_engine.kind == "postgres":
            reads += ["TABLE experiments", "SELECT * FROM pg_read_file('experiments')"]
        if every_engine.kind == "clickhouse":
            private = str(Path(every_engine.path) / PRIVATE_FILE)
            reads += [
                f"SELECT * FROM sqlite('{private}', 'experiments')",
                f"SELECT * FROM file('{private}', 'RawBLOB')",
                "SELECT * FROM merge(currentDatabase(), 'experiments')",
            ]
        for sql in reads:
            with pytest.raises(ReadOnlyError):
                rows = store.query(sql).rows
                assert MARKER not in repr(rows), sql  # a read that answers must not show it
        assert store.query("SELECT count(*) FROM calls").rows == [(1,)]
        if every_engine.kind == "clickhouse":
            # Not in the engine at all: its migration made the table, the store dropped it.
            tables = store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
            assert "experiments" not in {r[0] for r in tables.rows}
    # `llmlog query`, as a person runs it.
    said = CliRunner().invoke(cli, ["--db", every_engine.url, "query", "SELECT * FROM experiments"])
    assert said.exit_code != 0 and MARKER not in said.output, said.output
    # The console of the web UI.
    with Running(every_engine) as ui:
        for sql in READS:
            r = ui.get("/sql.json", params={"q": sql})
            assert r.status_code == 400 and MARKER not in r.text, (sql, r.text)
        assert ui.get("/sql.json", params={"q": "SELECT count(*) FROM calls"}).status_code == 200


def test_a_clickhouse_servers_reader_is_granted_no_experiments() -> None:
    # A server's read-only SQL runs as a user of its own, granted the tables listed there only.
    assert "experiments" not in ch_reader.PUBLIC_TABLES
    for cluster in (None, "c1"):
        grants = [s for s in ch_reader.statements("db", "reader", None, cluster) if "GRANT" in s]
        assert grants and not any("experiments" in s for s in grants)


def _as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(user)}:pw@{parts.hostname or '127.0.0.1'}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def experiments_reader(pg_url: str, postgres_server: str) -> Iterator[str]:
    """The URL of a login an administrator made for read-only SQL by mistake granted the
    experiments beside the calls."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pg.migrate(conn)
        row = conn.execute("SELECT current_schema()").fetchone()
    assert row is not None
    schema, role = row[0], f"reader_{uuid.uuid4().hex[:10]}"
    admin(postgres_server, f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    admin(postgres_server, f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    tables = ", ".join(f"{schema}.{t}" for t in ("calls", "call_data", "experiments"))
    admin(postgres_server, f"GRANT SELECT ON {tables} TO {role}")
    yield _as_user(pg_url, role)
    admin(postgres_server, f"DROP OWNED BY {role}")
    admin(postgres_server, f"DROP ROLE {role}")


def test_postgres_reader_login_cannot_read_the_experiments(pg_url: str) -> None:
    with open_store(pg_url) as store:
        store.save_experiment(experiment(1))
        with pytest.raises(ReadOnlyError):
            store.query("SELECT * FROM experiments")
    with psycopg.connect(pg_url) as conn:
        reader = conn.execute(
            "SELECT 'llmlog_reader_' || left(md5(current_database() || '/' || current_schema()), 16)"
        ).fetchone()
        assert reader is not None
        granted = conn.execute(
            "SELECT has_table_privilege(%s, 'calls', 'SELECT'),"
            " has_table_privilege(%s, 'experiments', 'SELECT')",
            (reader[0], reader[0]),
        ).fetchone()
    assert granted == (True, False)


def test_a_reader_login_that_can_read_the_experiments_is_refused(
    pg_url: str, experiments_reader: str
) -> None:
    with open_store(pg_url, experiments_reader) as store:
        store.save_experiment(experiment(1))
        with pytest.raises(ReadOnlyError, match="can read private tables"):
            store.query("SELECT count(*) FROM calls")


# ---------------------------------------------------------------- migrations


def test_the_migration_runs_again_and_keeps_what_is_there(every_engine: Backend) -> None:
    kept = experiment(1)
    with every_engine.open() as store:
        store.save_experiment(kept)
    # The version set back before the migration: it runs again over the table it made.
    if every_engine.kind == "sqlite":
        before = sqlite_schema.MIGRATIONS.index(sqlite_schema.m021_experiments)
        every_engine.sql(f"PRAGMA user_version = {before}")
        known = len(sqlite_schema.MIGRATIONS)
    elif every_engine.kind == "postgres":
        every_engine.sql(f"UPDATE llmlog_schema SET version = {pg.MIGRATIONS.index(pg.m020_experiments)}")
        known = len(pg.MIGRATIONS)
    else:
        every_engine.sql(
            "ALTER TABLE llmlog_schema DELETE WHERE version > %s SETTINGS mutations_sync = 2",
            [ch.MIGRATIONS.index(ch.m010_experiments)],
        )
        known = len(ch.MIGRATIONS)
    with every_engine.open() as store:
        assert store.schema_version == known  # type: ignore[attr-defined]
        assert store.experiments() == [kept]
    if every_engine.kind == "clickhouse":  # made again in the engine, dropped again
        tables = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = %s"
        assert every_engine.sql(tables, ["experiments"]) == [(0,)]


def test_the_clickhouse_servers_migration_runs_again(tmp_path: Path) -> None:
    opens = server_opens(tmp_path / "ch")
    with opens() as store:
        store.save_experiment(experiment(1))
        ch.m010_experiments(store.engine, None)  # type: ignore[attr-defined]
        assert store.experiments() == [experiment(1)]


def test_an_embedded_clickhouse_store_from_before_gets_the_table_in_its_private_file(tmp_path: Path) -> None:
    path = tmp_path / "ch"
    engine = EmbeddedEngine(str(path))
    try:
        ch.migrate(engine, None, ch.MIGRATIONS.index(ch.m010_experiments))  # as the release before left it
    finally:
        engine.close()
    with open_store(f"chdb://{path}") as store:
        assert store.schema_found == ch.MIGRATIONS.index(ch.m010_experiments)  # type: ignore[attr-defined]
        store.save_experiment(experiment(1))
    private = SQLiteBackend(path / PRIVATE_FILE)
    assert [r[0] for r in private.sql("SELECT id FROM experiments")] == ["exp-00000001"]


# ---------------------------------------------------------------- copy and erasure


def test_copy_moves_the_calls_and_leaves_the_experiments(every_engine: Backend, tmp_path: Path) -> None:
    with every_engine.open() as store:
        store.insert([Call(id="c1", timestamp=NOW, model="m", feature="code-review", user_id="u1")])
        store.insert([Call(id="c2", timestamp=NOW, model="m2", feature="code-review",
                           metadata={"experiment": "exp-00000001", "replay_of": "c1"})])  # fmt: skip
        store.save_experiment(experiment(1))
    target = str(tmp_path / "copy.db")
    said = CliRunner().invoke(cli, ["copy", "--from", every_engine.url, "--to", target])
    assert said.exit_code == 0, said.output
    with open_store(target) as copied:
        assert copied.count(CallFilter()) == 2
        assert [c.id for c in copied.recent(CallFilter(metadata=[("experiment", "exp-00000001")]))] == ["c2"]
        assert copied.experiments() == []
    with every_engine.open() as store:
        assert store.experiments() == [experiment(1)]


def test_erasure_leaves_the_experiments(every_engine: Backend) -> None:
    kept = experiment(1, sample=["c1", "c2"])
    with every_engine.open() as store:
        store.insert([Call(id=f"c{i}", timestamp=NOW, model="m", feature="code-review", user_id=f"u{i}")
                      for i in (1, 2)])  # fmt: skip
        store.save_experiment(kept)
        erased = store.erase(user_id="u1")
        assert erased.calls == 1
        assert store.experiments() == [kept]
