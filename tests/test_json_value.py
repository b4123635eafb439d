"""Reading a metadata key in read-only SQL: JSON_VALUE(metadata, '$.tier') reads the same on
SQLite, PostgreSQL (a function of that name before 17, the server's own from 17) and
ClickHouse, through the store and `llmlog query`; `metadata->>'tier'` reads it on SQLite and
PostgreSQL, where `metadata->>'$.tier'` (SQLite's form) is a key of that name, and NULL."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.store import ReadOnlyError, open_store
from llmlog.store.readonly import json_value
from tests.backends import Backend

METADATA = [
    {"tier": "pro", "n": 3, "ratio": 0.5, "beta": True, "nested": {"plan": "team"}, "list": ["a", "b"]},
    {"tier": "pro", "n": 10, "nested": {"plan": "solo"}},
    {"tier": "free", "nested": {}},
    {"other": "x"},
    None,
]
# (expression, what it reads for each call above, in order)
FORMS = [
    ("JSON_VALUE(metadata, '$.tier')", ["pro", "pro", "free", None, None]),
    ("JSON_VALUE(metadata, '$.n')", ["3", "10", None, None, None]),
    ("JSON_VALUE(metadata, '$.ratio')", ["0.5", None, None, None, None]),
    ("JSON_VALUE(metadata, '$.beta')", ["true", None, None, None, None]),
    ("JSON_VALUE(metadata, '$.nested.plan')", ["team", "solo", None, None, None]),
    ("JSON_VALUE(metadata, '$.list[1]')", ["b", None, None, None, None]),
    ("JSON_VALUE(metadata, '$.nested')", [None, None, None, None, None]),  # an object: no value
]


def fill(url: str) -> None:
    with open_store(url) as store:
        store.insert([Call(id=f"00000000-0000-4000-8000-00000000000{i}", model="m", metadata=m)
                      for i, m in enumerate(METADATA)])  # fmt: skip


def read(url: str, expression: str) -> list[object]:
    with open_store(url) as store:
        return [r[0] for r in store.query(f"SELECT {expression} FROM calls ORDER BY id").rows]


@pytest.mark.parametrize(("expression", "expected"), FORMS)
def test_json_value_reads_a_key_on_sqlite_and_postgresql(
    backend: Backend, expression: str, expected: list[object]
) -> None:
    fill(backend.url)
    assert read(backend.url, expression) == expected


def test_the_quickstart_query_runs_alike_on_sqlite_and_postgresql(backend: Backend) -> None:
    fill(backend.url)
    for sql in (
        "SELECT JSON_VALUE(metadata, '$.tier') AS tier, COUNT(*) FROM calls GROUP BY 1 ORDER BY 1",
        "SELECT metadata->>'tier' AS tier, COUNT(*) FROM calls GROUP BY 1 ORDER BY 1",
    ):
        result = CliRunner().invoke(cli, ["--db", backend.url, "query", sql, "--format", "json"])
        assert result.exit_code == 0, result.output
        assert "free" in result.stdout and "pro" in result.stdout
        with open_store(backend.url) as store:
            rows = store.query(sql).rows
        assert sorted(rows, key=str) == sorted([("free", 1), ("pro", 2), (None, 2)], key=str)
    # SQLite's '$.tier' after ->> is, on PostgreSQL, a key named "$.tier": nothing.
    dollar = read(backend.url, "metadata->>'$.tier'")
    assert dollar == (["pro", "pro", "free", None, None] if backend.kind == "sqlite" else [None] * 5)


def test_json_value_on_clickhouse(tmp_path: Path) -> None:
    pytest.importorskip("chdb")
    url = f"chdb://{tmp_path}/ch"
    fill(url)
    for expression, expected in FORMS:
        # ClickHouse reads a key that a call's metadata lacks as '' (NULL without metadata).
        got = [None if v == "" else v for v in read(url, expression)]
        assert got == expected, expression


def test_a_path_json_value_cannot_read_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a path"):
        json_value('{"tier": "pro"}', "tier")
    assert json_value("not json", "$.tier") is None and json_value(None, "$.tier") is None


def test_sqlite_refuses_a_bad_path_rather_than_answer_null(tmp_path: Path) -> None:
    url = str(tmp_path / "calls.db")
    fill(url)
    with pytest.raises(ReadOnlyError):
        read(url, "JSON_VALUE(metadata, 'tier')")
