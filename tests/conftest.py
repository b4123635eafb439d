from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import llmlog
from llmlog.fake_provider import FakeProvider
from llmlog.record import Call
from llmlog.store import CallFilter, open_store


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
