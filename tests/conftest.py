from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmlog
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import Store, open_store
from tests.backends import (
    Backend,
    ClickHouseBackend,
    PostgresBackend,
    PostgresUnavailable,
    SQLiteBackend,
    TempPostgres,
    drop_schema,
    new_schema,
)
from tests.webui import Running, make_call


def no_postgres(reason: str) -> None:
    """Skip, unless PostgreSQL is required (in CI), where a skip would hide a failure."""
    if os.environ.get("LLMLOG_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required (LLMLOG_REQUIRE_POSTGRES=1) but unavailable: {reason}")
    pytest.skip(f"no PostgreSQL: {reason}")


def temp_postgres() -> TempPostgres:
    """A server of our own, started; skips (or fails, in CI) where none can be started."""
    try:
        server = TempPostgres()
    except PostgresUnavailable as exc:
        no_postgres(str(exc))
    try:
        return server.init()
    except PostgresUnavailable as exc:
        server.destroy()
        no_postgres(str(exc))
        raise


@pytest.fixture(scope="session", autouse=True)
def prompts_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """LLMLOG_PROMPTS for the run: `llmlog demo` writes its prompt versions there, not into
    the directory the tests run from."""
    root = tmp_path_factory.mktemp("prompts")
    before = os.environ.get("LLMLOG_PROMPTS")
    os.environ["LLMLOG_PROMPTS"] = str(root)
    yield root
    if before is None:
        os.environ.pop("LLMLOG_PROMPTS", None)
    else:
        os.environ["LLMLOG_PROMPTS"] = before


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: LLMLOG_TEST_POSTGRES_URL, else one started for this run."""
    url = os.environ.get("LLMLOG_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = temp_postgres()
    yield server.url
    server.destroy()


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh schema on the test server; the URL puts llmlog's tables there."""
    schema, url = new_schema(postgres_server)
    yield url
    drop_schema(postgres_server, schema)


@pytest.fixture(params=["sqlite", "postgres", "clickhouse"])
def every_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each engine in turn, ClickHouse's embedded one included: a test module that runs on
    all three names it as its `backend` (or takes `engine_store`)."""
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "calls.db")
    if request.param == "clickhouse":
        return ClickHouseBackend(tmp_path / "ch")
    return PostgresBackend(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine_store(every_engine: Backend) -> Iterator[Store]:
    """A store of `every_engine`, closed after the test."""
    s = every_engine.open()
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each store kind in turn: the store suite runs once per kind."""
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "calls.db")
    return PostgresBackend(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(hang_s=5.0) as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "calls.db")


class Recorder:
    """llmlog configured to a fresh database; `calls()` flushes and reads back, oldest first."""

    def __init__(self, db: str) -> None:
        self.db = db

    def calls(self) -> list[Call]:
        assert llmlog.flush(timeout=10), "writer did not drain"
        with open_store(self.db) as store:
            return list(store.iter_calls(CallFilter()))

    def one(self) -> Call:
        calls = self.calls()
        assert len(calls) == 1, f"expected one call, got {len(calls)}"
        return calls[0]


@pytest.fixture
def recorder(db_path: str, fake: FakeProvider) -> Iterator[Recorder]:
    llmlog.configure(db=db_path)
    fake.reset()
    yield Recorder(db_path)
    llmlog.configure(db=db_path)  # drains and stops the writer


@pytest.fixture
def ui(backend: Backend) -> Iterator[Running]:
    """The web UI over each store kind, with 150 calls (tests/webui.py's `make_call`)."""
    with Running(backend) as running:
        running.store.insert([make_call(i) for i in range(150)])
        yield running
