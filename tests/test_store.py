"""The stores, on real databases: round trips, content-addressed storage, the `calls` view, the
read-only `query`, migrations and several writer processes.

One suite for both stores: every behaviour test takes the `backend` fixture (conftest.py), so it
runs once on a SQLite file and once on a fresh PostgreSQL schema. Where the SQL dialect really
differs, a test keeps one body and a small per-kind table of statements or expectations. Tests
of engine internals (SQLite's authorizer and PRAGMAs, PostgreSQL's monthly partitions) pin
`backend` to one kind with `sqlite_only` / `postgres_only`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import COLUMNS, JSON_COLUMNS, Call, Span, format_timestamp
from llmlog.store import ReadOnlyError, Store, open_store, search
from llmlog.store.clickhouse import schema as ch
from llmlog.store.content import digest
from llmlog.store.errors import NewerStore
from llmlog.store.postgres import schema as pg
from llmlog.store.sqlite import connect
from llmlog.store.sqlite import connect as sqlite_connect
from llmlog.store.sqlite.schema import MIGRATIONS, m003_daily, m005_people_daily, migrate
from llmlog.store.sqlite.store import SQLiteStore
from tests.backends import (
    Backend,
    ClickHouseBackend,
    PostgresBackend,
    SQLiteBackend,
    admin,
    new_schema,
    stored_bytes,
)


@pytest.fixture(params=["sqlite", "postgres", "clickhouse"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The store suite runs on every store, ClickHouse's engine embedded included."""
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "calls.db")
    if request.param == "clickhouse":
        return ClickHouseBackend(tmp_path / "ch")
    return PostgresBackend(request.getfixturevalue("pg_url"))


def one_process_engine(backend: Backend) -> None:
    """Processes share a ClickHouse server; the engine embedded here belongs to one process."""
    if backend.kind == "clickhouse":
        pytest.skip("the embedded ClickHouse engine is one process's; several share a server")


def row_stores_only(backend: Backend, why: str) -> None:
    """This test looks at how the SQLite and PostgreSQL stores lay calls out (content stored
    once by hash, partitions, triggers); the ClickHouse store keeps them another way."""
    if backend.kind == "clickhouse":
        pytest.skip(f"ClickHouse keeps this another way: {why}")


T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KINDS = ("sqlite", "postgres")
SCHEMA_VERSION = {"sqlite": len(MIGRATIONS), "postgres": len(pg.MIGRATIONS), "clickhouse": len(ch.MIGRATIONS)}

# Pin a test to one store kind (overrides the `backend` fixture's params).
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def per_kind(table: dict[str, list[Any]]) -> list[Any]:
    """(kind, *case) parameters for a test parametrized on `backend` and per-kind cases."""
    cases = [(kind, *(c if isinstance(c, tuple) else (c,))) for kind in KINDS for c in table[kind]]
    return [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in cases]


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()


def raw_query(backend: Backend, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows from the engine's own driver, outside the store."""
    if backend.kind == "sqlite":
        db = sqlite_connect(backend.url)
        try:
            cur = db.execute(sql)
            return [d[0] for d in cur.description], cur.fetchall()
        finally:
            db.close()
    if backend.kind == "clickhouse":
        from llmlog.store.clickhouse.engine import EmbeddedEngine

        engine = EmbeddedEngine(backend.path)  # type: ignore[attr-defined]
        try:
            return engine.rows(sql)
        finally:
            engine.close()
    import psycopg

    with psycopg.connect(backend.url, autocommit=True) as conn:
        cur = conn.execute(sql)  # type: ignore[arg-type]
        return [d.name for d in cur.description or ()], cur.fetchall()


def as_json(value: Any) -> Any:
    """A JSON column's value from a raw driver: SQLite gives text, psycopg parses jsonb."""
    return json.loads(value) if isinstance(value, str) else value


def full_call(**changes: Any) -> Call:
    """A call with every column set: nested JSON, unicode, microseconds."""
    call = Call(
        id="0b7f3c1e-9a4d-4e2b-8c6f-1d2e3f4a5b6c", session_id="sess_ünï_42", user_id="user_7",
        timestamp=datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC), provider="anthropic",
        model="claude-sonnet-4-5", feature="support-bot", prompt_template_version="support-bot@v4",
        system_prompt="Tu es un assistant. 日本語もOK 😀\nSecond line\twith tab.",
        messages=[
            {"role": "user", "content": "Bonjour, où est ma commande ? 🚚"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Je regarde."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"order_id": "A-1"}},
            ]},
            {"role": "user",
             "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"status": "ok"}'}]},
        ],
        tools=[{"name": "lookup_order", "description": "Look up an order.",
                "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}],
        params={"max_tokens": 1024, "temperature": 0.25, "stream": True, "stop_sequences": ["\n\nHuman:"]},
        response={
            "id": "msg_1", "role": "assistant",
            "content": [{"type": "text", "text": "Votre commande arrive demain. ✅"}],
            "usage": {"input_tokens": 1200, "output_tokens": 45, "nested": {"deep": [1, 2.5, None, True]}},
        },
        tool_calls=[{"id": "toolu_2", "name": "escalate", "input": {"priority": "high", "tags": ["ä", "b"]}}],
        stop_reason="end_turn", input_tokens=1200, output_tokens=45, cache_read_tokens=800,
        cache_creation_tokens=100, cost_usd=0.0123456789, rate_card="genai-prices 0.2.3",
        first_token_ms=123.456, latency_ms=2345.678,
        error={"type": "overloaded_error", "status": 529, "message": "Überlastet"},
        metadata={"tier": "enterprise", "nested": {"a": [1, {"b": "ç"}]}},
        tags=["demo", "prod", "ünicode"], trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        parent_id="00f067aa0ba902b7",
    )  # fmt: skip
    return call.replace(**changes)


# ---------------------------------------------------------------- round trips


def test_every_column_round_trips_exactly(store: Store) -> None:
    original = full_call()
    assert store.insert([original]) == 1
    got = store.get(original.id)
    assert got is not None
    assert got.to_dict() == original.to_dict()
    for name in COLUMNS:  # and the types, not just equal-comparing values
        assert type(getattr(got, name)) is type(getattr(original, name)), name
    assert got.timestamp == original.timestamp
    assert got.timestamp.microsecond == 789012


def test_nulls_round_trip(store: Store, backend: Backend) -> None:
    bare = Call(id="11111111-2222-3333-4444-555555555555", timestamp=T0)
    store.insert([bare])
    got = store.get(bare.id)
    assert got is not None
    assert got.to_dict() == bare.to_dict()
    assert all(getattr(got, name) is None for name in COLUMNS if name not in ("id", "timestamp"))
    (row,) = backend.sql("SELECT * FROM calls")
    assert row.count(None) == len(COLUMNS) - 2


def test_empty_containers_are_not_null(store: Store) -> None:
    c = full_call(messages=[], tools=[], params={}, tags=[], metadata={}, system_prompt="")
    store.insert([c])
    got = store.get(c.id)
    assert got is not None
    assert (got.messages, got.tools, got.params, got.tags, got.metadata, got.system_prompt) == (
        [], [], {}, [], {}, "",
    )  # fmt: skip


def test_non_utc_timestamp_is_stored_as_utc(store: Store, backend: Backend) -> None:
    ts = datetime(2026, 5, 1, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    c = full_call(timestamp=ts)
    store.insert([c])
    # Raw: SQLite keeps our fixed-width UTC text, PostgreSQL a timestamptz (the same instant).
    (raw,) = backend.sql("SELECT timestamp FROM calls")
    expected = (
        "2026-05-01T08:00:00.000005Z" if backend.kind == "sqlite" else datetime(2026, 5, 1, 8, 0, 0, 5, UTC)
    )
    assert raw == (expected,)
    # `query` gives the same text on both.
    assert store.query("SELECT timestamp FROM calls").rows == [("2026-05-01T08:00:00.000005Z",)]
    got = store.get(c.id)
    assert got is not None and got.timestamp == ts and got.timestamp.tzinfo == UTC


def test_many_traces_and_their_events_in_one_read(store: Store, backend: Backend) -> None:
    """An OTLP request names up to 512 traces: the store reads their spans and the events
    waiting for some of them at once, and only those (not another trace's span of the same
    id, nor another span of the same trace), in the order they came."""
    from llmlog.core.record import SpanEvent

    def span(trace: str, sid: str, minute: int) -> Span:
        t = T0 + timedelta(minutes=minute)
        return Span(trace_id=trace, span_id=sid, parent_id=None, name=sid, kind="client", start=t, end=t)

    traces = [f"{i:032x}" for i in range(600)]  # past one statement's parameters in SQLite
    assert store.insert_spans([span(t, "s1", i % 50) for i, t in enumerate(traces)]) == []
    assert store.insert_spans([span(traces[0], "s2", -1), span("other", "s1", 0)]) == []
    got = store.traces(traces)
    assert len(got) == 601 and {s.trace_id for s in got} == set(traces)
    assert [(s.start, s.span_id) for s in got] == sorted((s.start, s.span_id) for s in got)
    assert [s.span_id for s in store.trace(traces[0])] == ["s2", "s1"]
    events = [SpanEvent(t, sid, "gen_ai.user.message", {}, {"n": i})
              for i, (t, sid) in enumerate([(traces[3], "s1"), (traces[1], "s1"), (traces[1], "s2"),
                                            ("other", "s1"), (traces[599], "s1")])]  # fmt: skip
    for e in events:  # one at a time: each arrives after the one before
        assert store.insert_span_events([e]) == []
    wanted = [(traces[599], "s1"), (traces[1], "s1"), (traces[3], "s1"), *((t, "s1") for t in traces[4:500])]
    assert [e.body for e in store.span_events(wanted)] == [{"n": 0}, {"n": 1}, {"n": 4}]
    assert store.span_events([]) == [] and store.drop_span_events([], time.time_ns()) == 0
    joined = [(traces[1], "s1"), (traces[3], "s1"), (traces[1], "s9")]
    assert store.drop_span_events(joined, time.time_ns()) == 2
    assert sorted(e.body["n"] for _, e in store.iter_span_events()) == [2, 3, 4]  # type: ignore[index]


def test_same_id_is_stored_once(store: Store, backend: Backend) -> None:
    c = full_call()
    assert store.insert([c]) == 1
    assert store.insert([c]) == 0
    # Also a duplicate inside one batch, and a changed record with the same id: the first wins.
    assert store.insert([c.replace(model="other"), c]) == 0
    other = full_call(id="22222222-2222-2222-2222-222222222222")
    assert store.insert([other.replace(model="first"), other, other.replace(model="third")]) == 1
    assert store.count(CallFilter()) == 2
    got = store.get(c.id)
    assert got is not None and got.model == "claude-sonnet-4-5"
    got = store.get(other.id)
    assert got is not None and got.model == "first"
    assert backend.sql("SELECT COUNT(*) FROM call_data") == [(2,)]
    # A batch long enough to go in statements of many rows, with repeats inside one statement
    # and across statements: still the first of each wins, and a stored id is skipped.
    many = [full_call(id=str(uuid.UUID(int=100 + i % 40)), model=f"m{i}") for i in range(90)]
    assert store.insert([*many, c]) == 40
    assert store.insert(many[:60]) == 0
    assert store.count(CallFilter()) == 42
    assert [store.get(str(uuid.UUID(int=100 + i))).model for i in (0, 24, 25, 39)] == [
        "m0",
        "m24",
        "m25",
        "m39",
    ]  # type: ignore[union-attr]


@pytest.mark.parametrize("limit", [None, 999])
def test_sqlite_stores_a_batch_in_a_few_statements(tmp_path: Path, limit: int | None) -> None:
    # The sqlite3 module lets go of the interpreter lock around each statement's steps, and
    # taking it back waits behind the app's busy threads up to the switch interval (5 ms);
    # Python called from SQL takes it back for each call. A batch of 300 new calls, each with
    # messages of its own, goes in a few statements (its calls in one; where SQLite takes
    # 999 parameters a statement, before 3.32, in statements of 32 rows, none lost), and
    # the search index gets their words without the triggers calling Python.
    with SQLiteStore(str(tmp_path / "calls.db")) as store:
        if limit is not None:
            store.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
        db = store.db
        executed: list[tuple[str, int]] = []
        read_in_python: list[Any] = []

        def document(*row: Any) -> str:
            read_in_python.append(row)
            return search.sqlite_document(*row)

        db.create_function("llmlog_document", 3, document, deterministic=True)

        class Counted:  # the connection, saying what each statement was given
            def execute(self, sql: str, values: Sequence[Any] = ()) -> sqlite3.Cursor:
                executed.append((sql, len(values)))
                return db.execute(sql, values)

            def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
                rows = list(rows)
                executed.extend((sql, len(row)) for row in rows)  # a statement a row
                return db.executemany(sql, rows)

            def __getattr__(self, name: str) -> Any:
                return getattr(db, name)

        store.db = Counted()  # type: ignore[assignment]
        calls = [
            full_call(
                id=str(uuid.UUID(int=i)), user_id=f"u{i % 7}", messages=[{"role": "user", "content": f"n{i}"}]
            )
            for i in range(300)
        ]
        assert store.insert(calls) == 300
        store.db = db
        width = len(SQLiteStore._INSERT_COLUMNS) + 1  # a row's values and its mark
        rows = [n // width for sql, n in executed if sql.startswith("INSERT INTO call_data")]
        assert rows == ([512] if limit is None else [32] * 9 + [16])  # padded to a power of two
        if limit is None:
            assert len(executed) <= 10, [sql[:60] for sql, _ in executed]
        assert read_in_python == []
        # Their messages again, under new ids: content known by the identity of its objects
        # (which may have changed since), so the trigger reads those rows' words from them.
        again = [c.replace(id=str(uuid.UUID(int=1000 + i))) for i, c in enumerate(calls)]
        assert store.insert(again) == 300
        assert len(read_in_python) == 300
        store.db.execute("DELETE FROM call_data WHERE id >= ?", (str(uuid.UUID(int=1000)),))
        assert store.count(CallFilter()) == 300
        assert {c.id for c in store.recent(CallFilter(), limit=300)} == {c.id for c in calls}
        assert [hit.call.id for hit in store.search("n17", CallFilter())] == [calls[17].id]
        assert db.execute("SELECT COUNT(*) FROM call_words").fetchone() == (0,)


def test_failed_batch_is_rolled_back_and_content_cache_stays_right(store: Store, backend: Backend) -> None:
    prompt = "A system prompt that is first stored in a batch that fails."
    good = Call(system_prompt=prompt, messages=[{"role": "user", "content": "hi"}], timestamp=T0)
    bad = Call(input_tokens=2**70, timestamp=T0)  # too big for SQLite's INTEGER and PostgreSQL's bigint
    # A data error (the writer stores the rest of a batch one by one), not "the store is down".
    with pytest.raises(store.data_errors):
        store.insert([good, bad])
    assert backend.sql("SELECT COUNT(*) FROM call_data") == [(0,)]
    content = backend.kind != "clickhouse"  # which keeps content inline, in the row
    assert not content or backend.sql("SELECT COUNT(*) FROM content") == [(0,)]
    # The rolled-back content ids must not be reused from a cache (nothing would join to them).
    assert store.insert([good]) == 1
    got = store.get(good.id)
    assert got is not None
    assert got.system_prompt == prompt
    assert got.messages == [{"role": "user", "content": "hi"}]
    assert not content or backend.sql("SELECT COUNT(*) FROM content") == [(2,)]


def test_sql_injection_looking_text_is_stored_verbatim(store: Store, backend: Backend) -> None:
    evil = "'); DROP TABLE call_data; --"
    c = full_call(
        system_prompt=evil, feature="x' OR '1'='1", user_id='"; DELETE FROM content; --',
        messages=[{"role": "user", "content": "Robert'); DROP TABLE calls;--"}],
        metadata={"tier": "'; ATTACH DATABASE '/tmp/x' AS x; --"},
    )  # fmt: skip
    other = full_call(id="33333333-3333-3333-3333-333333333333", feature="plain")
    store.insert([c, other])
    got = store.get(c.id)
    assert got is not None and got.to_dict() == c.to_dict()
    assert [x.id for x in store.recent(CallFilter(feature="x' OR '1'='1"))] == [c.id]
    assert [x.id for x in store.recent(CallFilter(user_id='"; DELETE FROM content; --'))] == [c.id]
    assert backend.sql("SELECT COUNT(*) FROM call_data") == [(2,)]
    assert backend.sql("SELECT system_prompt FROM calls WHERE id = ?", (c.id,)) == [(evil,)]


def test_content_that_looks_like_array_syntax_is_stored_verbatim(store: Store) -> None:
    """Content goes to PostgreSQL as arrays of hashes and bodies: text shaped like an array
    literal's syntax (braces, commas, quotes, backslashes, NULL, blanks) must come back as
    it was sent, as a body and as a message read back by id."""
    odd = ["{a,b}", "NULL", "null", '"quoted", \\back\\slash', " ", "", "{}", "}{", "ARRAY[1]", "é ✓ 🙂"]
    c = full_call(
        system_prompt="{NULL}", messages=[{"role": "user", "content": text} for text in odd],
        tools=[{"name": "t", "description": '{"x": NULL}'}],
    )  # fmt: skip
    store.insert([c])
    got = store.get(c.id)
    assert got is not None and got.to_dict() == c.to_dict()


def _swap(value: Any, old: str, new: str) -> Any:
    """The value with `old` replaced by `new` in every string, keys included."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {_swap(k, old, new): _swap(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    return value


@pytest.mark.parametrize("char", ["\x00", "\ud800", "\udfff"], ids=["nul", "high-surrogate", "low-surrogate"])
def test_text_postgresql_cannot_hold_is_stored(store: Store, backend: Backend, char: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates: such a call is stored with them
    replaced by U+FFFD rather than lost. SQLite keeps them exactly in JSON columns (escaped) and
    NUL everywhere; a lone surrogate in a text column becomes U+FFFD there too (`unicode_text`),
    as it does everywhere in ClickHouse. (An encoder's "replace" made it '?', a question mark
    the text never had.)"""
    c = full_call(
        feature=f"feature{char}", system_prompt=f"system {char} prompt", tags=[char],
        messages=[{"role": "user", "content": f"x{char}y"}], metadata={f"key{char}": f"value{char}"},
        error={"message": f"bad {char}"},
    )  # fmt: skip
    clean = full_call(id="55555555-5555-5555-5555-555555555555")  # same batch, stored exactly
    assert store.insert([c, clean]) == 2
    if backend.kind == "postgres" or (backend.kind == "clickhouse" and char != "\x00"):
        expected = c.replace(**{n: _swap(getattr(c, n), char, "\ufffd") for n in COLUMNS if n != "timestamp"})
    elif char == "\x00":
        expected = c
    else:
        text = [n for n in COLUMNS if n not in JSON_COLUMNS and n != "id" and isinstance(getattr(c, n), str)]
        expected = c.replace(**{n: getattr(c, n).replace(char, "\ufffd") for n in text})
    got = store.get(c.id)
    assert got is not None and got.to_dict() == expected.to_dict()
    again = store.get(clean.id)
    assert again is not None and again.to_dict() == clean.to_dict()


@pytest.mark.parametrize("char", ["\ud800", "\udfff"], ids=["high-surrogate", "low-surrogate"])
def test_a_call_whose_id_holds_a_lone_surrogate_is_stored(store: Store, char: str) -> None:
    """An id is a text column like the others: one holding a lone surrogate (text read from
    bad UTF-16) is stored with it replaced, as the other text columns are, not refused as
    data and lost; the rest of its batch is stored beside it."""
    c = full_call(id=f"call-{char}")
    clean = full_call(id="55555555-5555-5555-5555-555555555555")
    assert store.insert([c, clean]) == 2
    assert store.count(CallFilter()) == 2
    again = store.get(clean.id)
    assert again is not None and again.to_dict() == clean.to_dict()
    assert store.get("call-\ufffd") is not None  # replaced as every engine replaces it


# ---------------------------------------------------------------- content-addressed storage


def _file_bytes(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


def _stored_bytes(backend: Backend) -> int:
    if backend.kind == "sqlite":
        # The file, with its write-ahead log, less what an empty store's file holds (a page
        # per table and index): that fixed overhead would swamp 40 calls.
        empty = backend.url + ".empty"
        SQLiteStore(empty).close()
        return _file_bytes(backend.url) - _file_bytes(empty)
    # The rows themselves: a fresh schema's fixed page and index overhead would swamp 40 calls.
    ((n,),) = backend.sql(
        "SELECT (SELECT sum(pg_column_size(c.*)) FROM content AS c)"
        " + (SELECT sum(pg_column_size(d.*)) FROM call_data AS d)"
    )
    return int(n)


def test_repeated_content_is_stored_once(backend: Backend) -> None:
    row_stores_only(backend, "content is inline and compressed; the bench measures its bytes per call")
    system = "You are the support assistant.\n" + "\n".join(
        f"{i}. Always be precise about rule number {i}; cite the policy and never guess." for i in range(80)
    )
    assert len(system) > 5000
    tools = [
        {"name": f"tool_{i}", "description": "Does a thing. " * 30, "input_schema": {"type": "object"}}
        for i in range(4)
    ]
    assert len(json.dumps(tools)) > 1500
    params = {"max_tokens": 1024, "model": "claude-sonnet-4-5"}
    turns = 40
    calls: list[Call] = []
    history: list[dict[str, Any]] = []
    for i in range(turns):
        history = [*history, {"role": ("user", "assistant")[i % 2], "content": f"turn {i}: " + "x" * 200}]
        calls.append(Call(
            timestamp=T0 + timedelta(seconds=i), session_id="sess_long", system_prompt=system, tools=tools,
            params=params, messages=history, model="claude-sonnet-4-5",
        ))  # fmt: skip
    with backend.open() as store:
        for i in range(0, turns, 7):  # several batches, so the cache and the table lookups both serve
            assert store.insert(calls[i : i + 7]) == len(calls[i : i + 7])
    distinct = 1 + 1 + 1 + turns  # system prompt, tool list, params, one row per message
    assert backend.sql("SELECT COUNT(*) FROM content") == [(distinct,)]
    # A new store (empty cache) finds the existing rows instead of adding new ones.
    with backend.open() as store:
        store.insert([calls[-1].replace(id="44444444-4444-4444-4444-444444444444")])
    assert backend.sql("SELECT COUNT(*) FROM content") == [(distinct,)]
    jsonl = sum(len(c.to_json().encode()) + 1 for c in calls)
    size = _stored_bytes(backend)
    print(f"JSONL {jsonl:,} bytes, {backend.kind} {size:,} bytes")
    assert size * 5 < jsonl, (size, jsonl)
    # And the data is whole again when read back.
    with backend.open() as store:
        back = list(store.iter_calls(CallFilter(session_id="sess_long")))
    back = [c for c in back if c.id != "44444444-4444-4444-4444-444444444444"]
    assert [c.to_dict() for c in back] == [c.to_dict() for c in calls]


VIEW_SQL = {
    "sqlite": "SELECT messages, json_array_length(messages), json_extract(messages, '$[0].content'),"
    " json_extract(messages, '$[5].content[1].text') FROM calls",
    "postgres": "SELECT messages, jsonb_array_length(messages), messages->0->>'content',"
    " messages->5->'content'->1->>'text' FROM calls",
    "clickhouse": "SELECT messages, JSONLength(messages), JSONExtractString(messages, 1, 'content'),"
    " JSONExtractString(messages, 6, 'content', 2, 'text') FROM calls",
}


def test_calls_view_presents_messages_whole_and_in_order(store: Store, backend: Backend) -> None:
    # A repeated message (same content twice) and non-object items must keep their places.
    messages = [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "hi"}, "a bare string", [1, [2, 3]],
        {"role": "user", "content": [{"type": "text", "text": "z"}, {"type": "text", "text": "a"}]},
    ]  # fmt: skip
    store.insert([full_call(messages=messages)])
    ((whole, n, first, last_text),) = backend.sql(VIEW_SQL[backend.kind])
    assert as_json(whole) == messages
    assert (n, first, last_text) == (6, "hi", "a")
    row_stores_only(backend, "messages are stored inline, compressed, not as content ids")
    # The stored row holds content ids, the repeated message has the same id twice.
    ((ids,),) = backend.sql("SELECT message_ids FROM call_data")
    ids = as_json(ids)
    assert len(ids) == 6 and ids[0] == ids[2] and len(set(ids)) == 5


# ---------------------------------------------------------------- SQL people write


def _reporting_calls() -> list[Call]:
    def c(i: int, **kw: Any) -> Call:
        return Call(id=f"00000000-0000-0000-0000-00000000000{i}", timestamp=T0 + timedelta(minutes=i), **kw)

    return [
        c(1, model="claude-sonnet-4-5", cost_usd=0.01, output_tokens=100, prompt_template_version="v1",
          metadata={"tier": "free"}),
        c(2, model="claude-sonnet-4-5", cost_usd=0.02, output_tokens=300, prompt_template_version="v2",
          error={"type": "rate_limit_error", "status": 429}, metadata={"tier": "enterprise"}),
        c(3, model="gpt-4.1", cost_usd=0.005, output_tokens=50, prompt_template_version="v1",
          metadata={"tier": "free"}),
        c(4, model="gpt-4.1", prompt_template_version="v2", error={"type": "server_error", "status": 500}),
        c(5, model="gpt-4.1", cost_usd=0.25, output_tokens=200, metadata={"tier": "enterprise"}),
    ]  # fmt: skip


@pytest.fixture
def reporting(store: Store) -> Store:
    store.insert(list(reversed(_reporting_calls())))
    return store


FIRST_QUERIES = {
    "errors": "SELECT * FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC",
    "by_model": "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model",
    "by_version": "SELECT prompt_template_version, AVG(output_tokens) FROM calls GROUP BY 1 ORDER BY 1",
}
# PostgreSQL names an aggregate column after the function and sorts NULL last.
AGGREGATE_COLUMNS = {
    "sqlite": (["model", "COUNT(*)", "SUM(cost_usd)"], ["prompt_template_version", "AVG(output_tokens)"]),
    "postgres": (["model", "count", "sum"], ["prompt_template_version", "avg"]),
    "clickhouse": (["model", "COUNT()", "SUM(cost_usd)"], ["prompt_template_version", "AVG(output_tokens)"]),
}
BY_VERSION = {
    "sqlite": [(None, 200.0), ("v1", 75.0), ("v2", 300.0)],
    "postgres": [("v1", 75.0), ("v2", 300.0), (None, 200.0)],
    "clickhouse": [("v1", 75.0), ("v2", 300.0), (None, 200.0)],
}


@pytest.mark.parametrize("via", ["store.query", "driver"])
def test_first_queries_work_as_written(reporting: Store, backend: Backend, via: str) -> None:
    def run(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        if via == "store.query":
            r = reporting.query(sql)
            assert not r.truncated
            return r.columns, r.rows
        return raw_query(backend, sql)

    cols, rows = run(FIRST_QUERIES["errors"])
    assert cols == list(COLUMNS)
    assert [r[0][-1] for r in rows] == ["4", "2"]
    assert as_json(rows[1][cols.index("error")]) == {"type": "rate_limit_error", "status": 429}

    model_cols, version_cols = AGGREGATE_COLUMNS[backend.kind]
    cols, rows = run(FIRST_QUERIES["by_model"])
    assert cols == model_cols
    got = {m: (n, s) for m, n, s in rows}
    assert got.keys() == {"claude-sonnet-4-5", "gpt-4.1"}
    assert got["claude-sonnet-4-5"][0] == 2 and got["claude-sonnet-4-5"][1] == pytest.approx(0.03)
    assert got["gpt-4.1"][0] == 3 and got["gpt-4.1"][1] == pytest.approx(0.255)

    cols, rows = run(FIRST_QUERIES["by_version"])
    assert cols == version_cols
    assert rows == BY_VERSION[backend.kind]  # psycopg itself gives Decimal, equal to these floats
    if via == "store.query":  # `query` gives plain floats on both
        assert all(type(avg) is float for _, avg in rows)


# (function form, operator form) of "the tier in metadata".
TIER = {
    "sqlite": ("json_extract(metadata, '$.tier')", "metadata->>'$.tier'"),
    "postgres": ("jsonb_extract_path_text(metadata, 'tier')", "metadata->>'tier'"),
    "clickhouse": (
        "JSONExtract(metadata, 'tier', 'Nullable(String)')",
        "nullIf(JSONExtractString(metadata, 'tier'), '')",
    ),
}


def test_json_extract_on_metadata(reporting: Store, backend: Backend) -> None:
    for expr in TIER[backend.kind]:
        sql = f"SELECT {expr} AS tier, COUNT(*) FROM calls GROUP BY 1 ORDER BY 1 NULLS FIRST"
        assert reporting.query(sql).rows == [(None, 1), ("enterprise", 2), ("free", 2)]
        sql = f"SELECT {expr}, COUNT(*) FROM calls WHERE {expr} = 'free' GROUP BY 1"
        assert reporting.query(sql).rows == [("free", 2)]
        rows = backend.sql(f"SELECT id FROM calls WHERE {expr} = 'enterprise' ORDER BY id")
        assert [r[0][-1] for r in rows] == ["2", "5"]


def test_timestamps_sort_in_time_order(store: Store) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    stamps = [
        base + timedelta(microseconds=1), base,
        datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),  # 2025-12-31T23:00Z
        base + timedelta(seconds=9), base + timedelta(seconds=10),
        base + timedelta(days=300, microseconds=999999), datetime(2025, 12, 31, 23, 0, 0, 1, tzinfo=UTC),
    ]  # fmt: skip
    store.insert([Call(timestamp=t, model=f"m{i}") for i, t in enumerate(stamps)])
    # SQLite orders its stored text, PostgreSQL its timestamptz; `query` shows both as our text.
    texts = [r[0] for r in store.query("SELECT timestamp FROM calls ORDER BY timestamp").rows]
    assert texts == [format_timestamp(t) for t in sorted(stamps)]
    assert len({len(t) for t in texts}) == 1  # fixed width
    assert texts[0] == "2025-12-31T23:00:00.000000Z"
    assert [c.timestamp for c in store.recent(CallFilter())] == sorted(stamps, reverse=True)
    # Comparison with a literal in our text form works as time comparison (ClickHouse reads
    # its own form, '2026-01-01 00:00:00.000001').
    clickhouse = store.dialect.name == "clickhouse"
    literal = "'2026-01-01 00:00:00.000001'" if clickhouse else "'2026-01-01T00:00:00.000001Z'"
    n = store.query(f"SELECT COUNT(*) FROM calls WHERE timestamp >= {literal}").rows
    assert n == [(4,)]


def test_early_year_timestamps_keep_order_and_stay_readable(store: Store) -> None:
    """Years before 1000: the text form must stay fixed width (zero-padded) and readable, and
    PostgreSQL must be able to create a partition for such a month."""
    old = Call(timestamp=datetime(999, 1, 1, tzinfo=UTC), model="old")
    new = Call(timestamp=datetime(2026, 1, 1, tzinfo=UTC), model="new")
    if store.dialect.name == "clickhouse":  # DateTime64 holds the years 1900 to 2299: refused, not mangled
        with pytest.raises(store.data_errors, match="1900"):
            store.insert([old])
        return
    store.insert([old, new])
    assert [c.model for c in store.recent(CallFilter())] == ["new", "old"]
    assert format_timestamp(old.timestamp) == "0999-01-01T00:00:00.000000Z"
    assert store.query("SELECT MIN(timestamp) FROM calls").rows == [("0999-01-01T00:00:00.000000Z",)]


# ---------------------------------------------------------------- reading API


@pytest.fixture
def filtered(store: Store) -> Store:
    rows = [
        # feature, model, user, session, version, minutes after T0, error
        ("support-bot", "claude-sonnet-4-5", "u1", "s1", "support@v3", 0, None),
        ("support-bot", "claude-sonnet-4-5", "u1", "s1", "support@v3", 1, {"type": "overloaded_error"}),
        ("support-bot", "claude-haiku-4-5", "u2", "s2", "support@v4", 2, None),
        ("summarize", "claude-haiku-4-5", "u2", None, "summarize@v7", 3, None),
        ("summarize", "gpt-4.1", "u3", None, "summarize@v7", 4, {"type": "server_error", "status": 500}),
        ("code-review", "gpt-4.1", "u3", None, "review@v1", 5, None),
    ]
    store.insert([
        Call(id=f"aaaaaaaa-0000-0000-0000-00000000000{i}", feature=f, model=m, user_id=u, session_id=s,
             prompt_template_version=v, timestamp=T0 + timedelta(minutes=mins), error=e)
        for i, (f, m, u, s, v, mins, e) in enumerate(rows)
    ])  # fmt: skip
    # Tags, metadata and text, for the filters that read inside JSON and content.
    store.insert([
        Call(id="aaaaaaaa-0000-0000-0000-000000000006", timestamp=T0 + timedelta(minutes=6),
             tags=["beta", "eu"], metadata={"tier": "pro", "n": 5, "flag": True, "llmlog": {"retry": 1}},
             system_prompt="You answer about Zebra_Crossings, 100% of the time.",
             messages=[{"role": "user", "content": "Where is my refund?"}]),
        Call(id="aaaaaaaa-0000-0000-0000-000000000007", timestamp=T0 + timedelta(minutes=7),
             tags=["beta"], metadata={"tier": "free", "note": "o'hara"},
             response={"content": [{"type": "text", "text": "Your parcel is DELAYED."}]},
             tool_calls=[{"id": "t1", "name": "lookup_order", "input": {"id": 7}}],
             trace_id="0af7651916cd43dd8448eb211c80319c", parent_id="b7ad6b7169203331"),
        Call(id="aaaaaaaa-0000-0000-0000-000000000008", timestamp=T0 + timedelta(minutes=8),
             error={"type": "rate_limit_error", "message": "slow down, zebra"},
             trace_id="0af7651916cd43dd8448eb211c80319c"),
    ])  # fmt: skip
    return store


def _ids(calls: list[Call]) -> list[int]:
    return [int(c.id[-1]) for c in calls]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (CallFilter(), [8, 7, 6, 5, 4, 3, 2, 1, 0]),
        (CallFilter(feature="support-bot"), [2, 1, 0]),
        (CallFilter(model="claude-haiku-4-5"), [3, 2]),
        (CallFilter(user_id="u3"), [5, 4]),
        (CallFilter(session_id="s1"), [1, 0]),
        (CallFilter(prompt_template_version="summarize@v7"), [4, 3]),
        (CallFilter(until=T0 + timedelta(minutes=2)), [1, 0]),
        (CallFilter(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=6)), [5, 4, 3, 2]),
        (CallFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4)), [3, 2, 1]),
        (CallFilter(errors=True), [8, 4, 1]),
        (CallFilter(errors=False), [7, 6, 5, 3, 2, 0]),
        (CallFilter(tag="beta"), [7, 6]),
        (CallFilter(tag="eu"), [6]),
        (CallFilter(tag="bet"), []),
        (CallFilter(metadata=[("tier", "pro")]), [6]),
        (CallFilter(metadata=[("tier", "pro"), ("n", "5")]), [6]),
        (CallFilter(metadata=[("flag", "true")]), [6]),
        (CallFilter(metadata=[("llmlog.retry", "1")]), [6]),
        (CallFilter(metadata=[("note", "o'hara")]), [7]),
        (CallFilter(metadata=[("tier", "pro"), ("n", "6")]), []),
        (CallFilter(metadata=[("missing", "x")]), []),
        (CallFilter(tag="beta", metadata=[("tier", "free")]), [7]),
        (CallFilter(text="zebra"), [8, 6]),  # system prompt and error, any case
        (CallFilter(text="refund"), [6]),  # a message
        (CallFilter(text="delayed"), [7]),  # the response
        (CallFilter(text="lookup_order"), [7]),  # a tool call
        (CallFilter(text="100%"), [6]),  # % and _ are literal
        (CallFilter(text="Zebra_C"), [6]),
        (CallFilter(text="1_0"), []),
        (CallFilter(text="zebra", errors=True), [8]),
        (CallFilter(feature="support-bot", errors=False, model="claude-sonnet-4-5"), [0]),
        (CallFilter(ids=["aaaaaaaa-0000-0000-0000-000000000003", "nope"]), [3]),
        (CallFilter(feature="nope"), []),
        (CallFilter(trace_id="0af7651916cd43dd8448eb211c80319c"), [8, 7]),
        (CallFilter(trace_id="0af7651916cd43dd8448eb211c80319c", errors=True), [8]),
    ],
)
def test_filters_on_recent(filtered: Store, flt: CallFilter, expected: list[int]) -> None:
    assert _ids(filtered.recent(flt)) == expected
    assert filtered.count(flt) == len(expected)


def test_recent_limit_and_sample(filtered: Store) -> None:
    assert _ids(filtered.recent(CallFilter(), limit=2)) == [8, 7]
    picked = filtered.sample(CallFilter(feature="support-bot"), n=10)
    assert sorted(_ids(picked)) == [0, 1, 2]
    assert len({c.id for c in filtered.sample(CallFilter(), n=4)}) == 4
    assert _ids(filtered.sample(CallFilter(tag="beta"), n=5)) == [6, 7]  # oldest first, whole
    assert filtered.sample(CallFilter(tag="beta"), n=5)[0].system_prompt is not None


def test_brief_calls_carry_the_row_and_the_last_message(store: Store) -> None:
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "last <b>one</b>"}]  # fmt: skip
    whole = Call(timestamp=T0, model="m", session_id="s", system_prompt="sys", messages=msgs,
                 tools=[{"name": "t"}], params={"max_tokens": 5}, input_tokens=3, cost_usd=0.5,
                 response={"content": [{"type": "text", "text": "ok"}]}, error={"type": "x"},
                 tool_calls=[{"id": "1"}], metadata={"k": 1}, tags=["a"])  # fmt: skip
    empty = Call(timestamp=T0 + timedelta(seconds=1), messages=[])
    bare = Call(timestamp=T0 + timedelta(seconds=2))
    store.insert([whole, empty, bare])
    got = {c.id: c for c in store.recent(CallFilter(), brief=True)}
    b = got[whole.id]
    assert b.messages == [msgs[-1]] and b.system_prompt is None and b.tools is None and b.params is None
    for name in ("model", "session_id", "input_tokens", "cost_usd", "response", "error", "tool_calls",
                 "metadata", "tags", "timestamp"):  # fmt: skip
        assert getattr(b, name) == getattr(whole, name), name
    assert got[empty.id].messages == [] and got[bare.id].messages is None
    assert [c.id for c in store.sample(CallFilter(model="m"), brief=True)] == [whole.id]
    assert store.sample(CallFilter(model="m"), brief=True)[0].messages == [msgs[-1]]


@pytest.mark.parametrize("key", ["", "a..b", 'x"y', "a b", "$.x"])
def test_metadata_keys_are_checked(key: str) -> None:
    with pytest.raises(ValueError, match="metadata key"):
        CallFilter(metadata=[(key, "v")])


def test_iter_calls_pages_past_the_batch_size(store: Store) -> None:
    # Groups of calls share a timestamp, so paging must also order by id.
    calls = [
        Call(timestamp=T0 + timedelta(seconds=i // 5), model="m", feature=f"f{i % 3}") for i in range(53)
    ]
    store.insert(list(reversed(calls)))
    got = list(store.iter_calls(CallFilter(), batch=7))
    assert len(got) == 53
    assert len({c.id for c in got}) == 53
    assert [(c.timestamp, c.id) for c in got] == sorted((c.timestamp, c.id) for c in calls)
    f1 = list(store.iter_calls(CallFilter(feature="f1"), batch=4))
    assert sorted(c.id for c in f1) == sorted(c.id for c in calls if c.feature == "f1")
    assert len(list(store.iter_calls(CallFilter(), batch=53))) == 53  # exactly one full page
    assert list(store.iter_calls(CallFilter(feature="none"), batch=5)) == []


def test_get_by_a_prefix_of_an_id_of_the_apps_own_making(store: Store) -> None:
    """Ids given through the library need not be UUIDs: a start of one finds it on every
    engine, whatever its length, and whatever characters follow."""
    long = Call(id="custom-id-" + "z" * 40, timestamp=T0)
    wide = Call(id="x\U0001f389-call", timestamp=T0)
    store.insert([long, wide])
    got = store.get("custom-id-" + "z" * 26)  # 36 characters, not the whole id
    assert got is not None and got.id == long.id
    got = store.get("x")
    assert got is not None and got.id == wide.id
    assert store.get("custom-id-" + "z" * 41) is None


def test_get_unique_prefix_and_ambiguous_prefix(store: Store) -> None:
    a = Call(id="3f2a9c1e-0000-4000-8000-000000000001", timestamp=T0)
    b = Call(id="3f2a9c1e-0000-4000-8000-000000000002", timestamp=T0)
    c = Call(id="7c00ffee-0000-4000-8000-000000000003", timestamp=T0)
    store.insert([a, b, c])
    got = store.get("7c0")
    assert got is not None and got.id == c.id
    with pytest.raises(LookupError, match="ambiguous"):
        store.get("3f2a")
    with pytest.raises(LookupError, match="ambiguous"):
        store.get("3f2a9c1e-0000-4000-8000-00000000000")  # 35 characters, still both
    got = store.get("3f2a9c1e-0000-4000-8000-000000000002")
    assert got is not None and got.id == b.id
    got = store.get("3f2a9c1e-0000-4000-8000-00000000000" + "1")
    assert got is not None and got.id == a.id
    assert store.get("ffff") is None
    assert store.get("00000000-0000-0000-0000-000000000000") is None


def test_existing_ids(store: Store) -> None:
    """More ids than SQLite's 500-per-statement chunk, in any order, repeated, mixed with unknown
    ones; whole ids only (the import uses this to skip calls it already has)."""
    calls = [Call(timestamp=T0 + timedelta(seconds=i)) for i in range(1200)]
    assert store.insert(calls) == 1200
    present = [c.id for c in calls]
    absent = [str(uuid.UUID(int=i)) for i in range(1, 601)]
    assert store.existing_ids(present[::-1] + absent + present[:10]) == set(present)
    assert store.existing_ids(absent + present[-3:]) == set(present[-3:])  # found in the 2nd chunk only
    assert store.existing_ids(absent) == set()
    assert store.existing_ids([]) == set()
    assert store.existing_ids([present[0][:8], present[1].upper()]) == set()


def test_update_costs(store: Store) -> None:
    a, b = full_call(), full_call(id="66666666-6666-6666-6666-666666666666")
    store.insert([a, b])
    assert store.update_costs([(a.id, 1.5, "card v2"), (str(uuid.UUID(int=1)), 2.0, "x")]) == 1
    got = store.get(a.id)
    assert got is not None and (got.cost_usd, got.rate_card) == (1.5, "card v2")
    untouched = store.get(b.id)
    assert untouched is not None and untouched.to_dict() == b.to_dict()
    assert store.update_costs([(b.id, None, None)]) == 1
    cleared = store.get(b.id)
    assert cleared is not None and (cleared.cost_usd, cleared.rate_card) == (None, None)


# ---------------------------------------------------------------- the `daily` rollup

DAILY_GROUP = ("day", "feature", "model", "provider", "prompt_template_version")
DAILY_SUMS = (
    "calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
    "cost_usd", "priced_calls", "latency_ms", "first_token_ms",
)  # fmt: skip
# What `daily` must hold, computed by the engine from the `calls` view (`query` runs in UTC).
DAY_OF = {
    "sqlite": "substr(timestamp, 1, 10)",
    "postgres": "to_char(timestamp, 'YYYY-MM-DD')",
    "clickhouse": "toString(toDate(timestamp))",
}
ROLLUP_OF_CALLS = (
    "SELECT {day}, feature, model, provider, prompt_template_version, count(*), count(error),"
    " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cache_read_tokens), 0),"
    " coalesce(sum(cache_creation_tokens), 0), coalesce(sum(cost_usd), 0), count(cost_usd),"
    " coalesce(sum(latency_ms), 0), coalesce(sum(first_token_ms), 0) FROM calls GROUP BY 1, 2, 3, 4, 5"
)
# The migration that adds `daily`: a database at this version has calls and no rollup yet.
BEFORE_DAILY = {"sqlite": MIGRATIONS.index(m003_daily), "postgres": pg.MIGRATIONS.index(pg.m002_daily)}
Group = tuple[Any, ...]
HEAVY = ("2026-03-01", "support-bot", "gpt-4.1", "openai", "v1")  # the group of every 5th call


def _daily_calls() -> list[Call]:
    """Calls over four UTC days (one in a month with no partition yet), with NULL (and '') in
    the group columns, errors, unpriced calls, missing token counts and latencies."""
    rng = random.Random(20260301)
    stamps = [
        T0 - timedelta(days=1), T0, T0 + timedelta(days=1),
        datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC),
        datetime(2026, 3, 2, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # 2026-03-01 in UTC
        datetime(2031, 7, 4, 8, 0, tzinfo=UTC),
    ]  # fmt: skip

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.2 else value

    calls = []
    for i in range(150):
        model = rng.choice([None, "claude-sonnet-4-5", "gpt-4.1"])
        call = Call(
            id=str(uuid.UUID(int=rng.getrandbits(128))), timestamp=rng.choice(stamps),
            feature=rng.choice([None, "", "support-bot", "summarize"]), model=model,
            provider=None if model is None else ("anthropic" if model.startswith("claude") else "openai"),
            prompt_template_version=rng.choice([None, "v1"]),
            input_tokens=maybe(rng.randint(1, 50_000)), output_tokens=maybe(rng.randint(1, 4000)),
            cache_read_tokens=maybe(rng.randint(0, 30_000)),
            cache_creation_tokens=maybe(rng.randint(0, 9000)),
            cost_usd=maybe(rng.random() / 10), latency_ms=maybe(rng.uniform(50, 9000)),
            first_token_ms=maybe(rng.uniform(20, 900)),
            error={"type": "server_error", "status": 500} if rng.random() < 0.2 else None,
        )  # fmt: skip
        if i % 5 == 0:
            call = call.replace(timestamp=T0, feature="support-bot", model="gpt-4.1", provider="openai",
                                prompt_template_version="v1")  # fmt: skip
        calls.append(call)
    return calls


def _group(c: Call) -> Group:
    return (format_timestamp(c.timestamp)[:10], c.feature, c.model, c.provider, c.prompt_template_version)


def _expected_daily(calls: Iterable[Call]) -> dict[Group, tuple[Any, ...]]:
    """`daily` computed here, from the calls as inserted."""
    groups: dict[Group, list[Any]] = {}
    for c in calls:
        sums = groups.setdefault(_group(c), [0, 0, 0, 0, 0, 0, 0.0, 0, 0.0, 0.0])
        figures = (
            1, int(c.error is not None), c.input_tokens or 0, c.output_tokens or 0, c.cache_read_tokens or 0,
            c.cache_creation_tokens or 0, c.cost_usd or 0.0, int(c.cost_usd is not None), c.latency_ms or 0.0,
            c.first_token_ms or 0.0,
        )  # fmt: skip
        for i, value in enumerate(figures):
            sums[i] += value
    return {key: tuple(sums) for key, sums in groups.items()}


def _daily(store: Store) -> dict[Group, tuple[Any, ...]]:
    """`daily` as a user sees it, through the read-only `query`: group → sums."""
    result = store.query(f"SELECT {', '.join((*DAILY_GROUP, *DAILY_SUMS))} FROM daily")
    rows = {row[:5]: row[5:] for row in result.rows}
    assert len(rows) == len(result.rows)  # one row per group, NULL being one value
    return rows


def _assert_rollup(got: dict[Group, tuple[Any, ...]], expected: dict[Group, tuple[Any, ...]]) -> None:
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    for key, sums in expected.items():
        row = got[key]
        assert [type(v) for v in row] == [int] * 6 + [float, int, float, float], (key, row)
        counts, floats = (0, 1, 2, 3, 4, 5, 7), (6, 8, 9)
        assert [row[i] for i in counts] == [sums[i] for i in counts], key  # exactly
        assert [row[i] for i in floats] == pytest.approx([sums[i] for i in floats], rel=1e-12), key


def test_daily_rolls_up_every_call(store: Store, backend: Backend) -> None:
    calls = _daily_calls()
    for i in range(0, len(calls), 40):  # several batches (PostgreSQL: several statements)
        assert store.insert(calls[i : i + 40]) == len(calls[i : i + 40])
    expected = _expected_daily(calls)
    # The set is as varied as it claims: many groups, NULL and '' apart, groups of several calls.
    assert len(expected) > 50
    assert {k[1] for k in expected} == {None, "", "support-bot", "summarize"}
    assert {k[0] for k in expected} == {"2026-02-28", "2026-03-01", "2026-03-02", "2031-07-04"}
    assert expected[HEAVY][0] >= 30 and 0 < expected[HEAVY][7] < expected[HEAVY][0] and expected[HEAVY][1] > 0
    got = _daily(store)
    _assert_rollup(got, expected)
    from_calls = store.query(ROLLUP_OF_CALLS.format(day=DAY_OF[backend.kind]))
    _assert_rollup(got, {row[:5]: row[5:] for row in from_calls.rows})


def test_daily_counts_only_calls_not_stored_before(store: Store) -> None:
    calls = _daily_calls()
    store.insert(calls)
    before = _daily(store)
    assert store.insert(calls) == 0
    # A stored id again, changed or not, in a batch of its own or with itself.
    assert store.insert([calls[3].replace(model="other", cost_usd=9.0), calls[3], calls[0]]) == 0
    assert _daily(store) == before
    again = calls[0].replace(id=str(uuid.UUID(int=7)))
    assert store.insert([*calls[:20], again, again]) == 1
    _assert_rollup(_daily(store), _expected_daily([*calls, again]))


def test_daily_follows_cost_changes(store: Store, backend: Backend) -> None:
    calls = _daily_calls()
    store.insert(calls)
    priced = [c for c in calls if c.cost_usd is not None and _group(c) != HEAVY]
    unpriced = [c for c in calls if c.cost_usd is None and _group(c) != HEAVY]
    changes = [
        (priced[0].id, 0.5, "card v2"), (priced[1].id, None, None), (unpriced[0].id, 0.25, "card v2"),
        (priced[2].id, priced[2].cost_usd, "same cost"), (str(uuid.UUID(int=1)), 1.0, "no such call"),
    ]  # fmt: skip
    assert store.update_costs(changes) == 4
    costs = {call_id: cost for call_id, cost, _ in changes}
    repriced = [c.replace(cost_usd=costs.get(c.id, c.cost_usd)) for c in calls]
    _assert_rollup(_daily(store), _expected_daily(repriced))
    from_calls = store.query(ROLLUP_OF_CALLS.format(day=DAY_OF[backend.kind]))
    _assert_rollup(_daily(store), {row[:5]: row[5:] for row in from_calls.rows})
    # A group left with no priced call costs 0 exactly, not what rounding leaves over.
    heavy = [c for c in calls if _group(c) == HEAVY]
    assert store.update_costs([(c.id, None, None) for c in heavy]) == len(heavy)
    assert _daily(store)[HEAVY][:8] == (len(heavy), *_expected_daily(heavy)[HEAVY][1:6], 0.0, 0)
    assert store.update_costs([(heavy[0].id, 0.1, "x"), (heavy[1].id, 0.2, "x")]) == 2
    assert _daily(store)[HEAVY][6:8] == (pytest.approx(0.3, rel=1e-12), 2)


def test_daily_counts_rows_inserted_by_hand(store: Store, backend: Backend) -> None:
    """Rows that reach `call_data` by plain SQL, not through the store (INSERT … SELECT, as the
    benchmark grows a store, or one row), are counted too."""
    calls = _daily_calls()
    store.insert(calls)
    columns = (
        "timestamp, provider, model, feature, prompt_template_version, input_tokens, output_tokens,"
        " cache_read_tokens, cache_creation_tokens, cost_usd, first_token_ms, latency_ms, error"
    )
    backend.sql(f"INSERT INTO call_data (id, {columns}) SELECT id || '-copy', {columns} FROM call_data")
    backend.sql(
        "INSERT INTO call_data (id, timestamp, model, cost_usd)"
        " VALUES ('by-hand', '2026-03-01T12:00:00Z', 'hand', 1.5)"
    )
    by_hand = Call(timestamp=T0, model="hand", cost_usd=1.5)
    _assert_rollup(_daily(store), _expected_daily([*calls, *calls, by_hand]))


def _partitions_by_hand(backend: Backend, calls: list[Call]) -> None:
    """The month partitions of `calls`, made as the store would (for a schema it did not
    migrate all the way)."""
    for month in sorted({format_timestamp(c.timestamp)[:7] for c in calls}):
        year, n = int(month[:4]), int(month[5:])
        end = f"{year + n // 12:04d}-{n % 12 + 1:02d}"
        backend.sql(
            f"CREATE TABLE call_data_{year:04d}{n:02d} PARTITION OF call_data"
            f" FOR VALUES FROM ('{month}-01T00:00:00Z') TO ('{end}-01T00:00:00Z')"
        )


def test_an_existing_database_gets_an_exact_rollup_on_upgrade(backend: Backend) -> None:
    """A database with calls, at the version before `daily`: the migration fills it from them."""
    row_stores_only(backend, "the rollups come with the first schema: no store predates them")
    kind, calls = backend.kind, _daily_calls()
    if kind == "sqlite":
        db = connect(backend.url)
        assert migrate(db, target=BEFORE_DAILY[kind]) == BEFORE_DAILY[kind]
        db.close()
    else:
        import psycopg

        with psycopg.connect(backend.url, autocommit=True) as conn:
            assert pg.migrate(conn, target=BEFORE_DAILY[kind]) == BEFORE_DAILY[kind]
        _partitions_by_hand(backend, calls)
    assert backend.sql("SELECT count(*) FROM call_data") == [(0,)]
    columns = (
        "id", "timestamp", "provider", "model", "feature", "prompt_template_version", "input_tokens",
        "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd", "first_token_ms",
        "latency_ms", "error",
    )  # fmt: skip
    values = [
        (c.id, format_timestamp(c.timestamp), c.provider, c.model, c.feature, c.prompt_template_version,
         c.input_tokens, c.output_tokens, c.cache_read_tokens, c.cache_creation_tokens, c.cost_usd,
         c.first_token_ms, c.latency_ms, json.dumps(c.error) if c.error is not None else None)
        for c in calls
    ]  # fmt: skip
    marks = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(values))
    backend.sql(
        f"INSERT INTO call_data ({', '.join(columns)}) VALUES {marks}", [v for row in values for v in row]
    )
    with backend.open() as store:
        assert (store.schema_found, store.schema_version) == (BEFORE_DAILY[kind], SCHEMA_VERSION[kind])
        _assert_rollup(_daily(store), _expected_daily(calls))
        # And from then on the triggers keep it.
        later = [Call(timestamp=T0, model="later", cost_usd=0.5), calls[0].replace(id=str(uuid.UUID(int=9)))]
        assert store.insert([*later, calls[1]]) == 2
        _assert_rollup(_daily(store), _expected_daily([*calls, *later]))


def test_cost_by_day_reads_whole_utc_days(store: Store, backend: Backend) -> None:
    day = datetime(2026, 3, 10, tzinfo=UTC)

    def at(days: int, hours: float, microseconds: int = 0) -> datetime:
        return day + timedelta(days=days, hours=hours, microseconds=microseconds)

    plus2 = timezone(timedelta(hours=2))
    store.insert([
        Call(timestamp=at(0, 0, -1), model="a", cost_usd=1.0),  # the day before: out
        Call(timestamp=at(0, 0), model="a", cost_usd=0.25),  # since's day, before since's time: in
        Call(timestamp=at(0, 18), model="b"),  # unpriced: counted, cost None
        Call(timestamp=at(0, 20), model="a", cost_usd=0.5, error={"type": "x"}),
        Call(timestamp=at(1, 12), model="b", cost_usd=2.0),
        Call(timestamp=at(1, 13), model="b", feature="other"),
        Call(timestamp=datetime(2026, 3, 13, 0, 30, tzinfo=plus2), model="a", cost_usd=4.0),  # 12th, UTC
        Call(timestamp=at(3, 0, -1), cost_usd=0.125),  # until's day, after until's time: in
        Call(timestamp=at(3, 0), model="a", cost_usd=8.0),  # the day after: out
    ])  # fmt: skip
    window = [
        ("2026-03-10", "a", 2, 0.75),
        ("2026-03-10", "b", 1, None),
        ("2026-03-11", "b", 2, 2.0),
        ("2026-03-12", None, 1, 0.125),  # NULL model first on both stores
        ("2026-03-12", "a", 1, 4.0),
    ]
    got = store.cost_by_day(at(0, 12), at(2, 6))
    assert got == window
    assert [type(v) for v in got[0]] == [str, str, int, float]  # a float on PostgreSQL too, not Decimal
    # Times in another zone, or naive (UTC), name their UTC day.
    assert store.cost_by_day(datetime(2026, 3, 11, 1, 0, tzinfo=plus2), datetime(2026, 3, 12, 23)) == window
    assert store.cost_by_day(datetime(2026, 3, 11, 23), datetime(2026, 3, 11)) == window[2:3]
    assert store.cost_by_day(at(20, 0), at(30, 0)) == []
    # Without until: through today.
    now = datetime.now(UTC)
    store.insert([Call(timestamp=now, model="today", cost_usd=1.0), Call(timestamp=now + timedelta(days=3))])
    assert store.cost_by_day(now - timedelta(days=1)) == [(format_timestamp(now)[:10], "today", 1, 1.0)]
    # It reads the rollup: calls deleted (as retention will) leave their days' figures.
    backend.sql("DELETE FROM call_data")
    assert store.count(CallFilter()) == 0
    assert store.cost_by_day(at(0, 12), at(2, 6)) == window


# ---------------------------------------------------------------- read-only query


COMMON_REFUSED = [
    "INSERT INTO call_data (id, timestamp) VALUES ('x', '2026-01-01T00:00:00Z')",
    "UPDATE call_data SET model = 'hacked'", "DELETE FROM call_data", "DELETE FROM content",
    "DROP TABLE call_data", "DROP VIEW calls",
    "CREATE TABLE evil (x int)", "CREATE TEMP TABLE evil (x int)", "CREATE INDEX evil ON call_data(model)",
    "WITH x AS (SELECT 1) UPDATE call_data SET model = 'hacked'",
    "WITH x AS (UPDATE call_data SET model = 'hacked' RETURNING 1) SELECT * FROM x",
    "BEGIN",
]  # fmt: skip
REFUSED = {
    "sqlite": [
        *COMMON_REFUSED,
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA journal_mode=DELETE", "PRAGMA user_version=5", "PRAGMA writable_schema=ON",
        "REPLACE INTO content (id, hash, body) VALUES (1, x'00', 'x')", "VACUUM", "BEGIN IMMEDIATE",
    ],
    "postgres": [
        *COMMON_REFUSED,
        "SELECT 1; DROP TABLE call_data",
        "SELECT 1; COMMIT; DROP TABLE call_data",  # end the read-only transaction, then write
        "(SELECT 1); END; DELETE FROM content",
        "SELECT '/*'; COMMIT; DROP TABLE call_data; SELECT '*/'",  # a "comment" the text check strips
        "/* SELECT */ DROP TABLE call_data", "-- SELECT\nDELETE FROM call_data",
        "SELECT * FROM call_data FOR UPDATE", "SELECT nextval('content_id_seq')",
        "SELECT * INTO evil FROM call_data", "COPY call_data TO STDOUT",
        "DO $$ BEGIN DELETE FROM call_data; END $$",
        "SET default_transaction_read_only = off", "SELECT set_config('transaction_read_only', 'off', false)",
        "TRUNCATE call_data", "CALL x()", "ALTER TABLE call_data ADD COLUMN x int", "LOCK TABLE call_data",
        "VACUUM",
    ],
}  # fmt: skip

FINGERPRINT = {
    "sqlite": [
        "SELECT COUNT(*), group_concat(model), group_concat(id) FROM call_data",
        "SELECT COUNT(*) FROM content",
        "SELECT group_concat(name) FROM sqlite_master",
        "PRAGMA journal_mode",
        "PRAGMA user_version",
    ],
    "postgres": [
        "SELECT count(*), string_agg(model, ',' ORDER BY id), string_agg(id, ',' ORDER BY id) FROM call_data",
        "SELECT count(*) FROM content",
        "SELECT last_value, is_called FROM content_id_seq",  # nextval is not undone by a rollback
        "SELECT string_agg(tablename, ',' ORDER BY 1) FROM pg_tables WHERE schemaname = current_schema()",
        "SELECT string_agg(viewname, ',' ORDER BY 1) FROM pg_views WHERE schemaname = current_schema()",
        "SELECT version FROM llmlog_schema",
    ],
}


def _fingerprint(backend: Backend) -> list[list[tuple[Any, ...]]]:
    """What a refused statement must not change, seen from a connection of our own."""
    return [backend.sql(sql) for sql in FINGERPRINT[backend.kind]]


@pytest.mark.parametrize(("backend", "sql"), per_kind(REFUSED), indirect=["backend"])
def test_query_refuses_writes(reporting: Store, backend: Backend, sql: str) -> None:
    before = _fingerprint(backend)
    assert before[-1] == [(SCHEMA_VERSION[backend.kind],)]
    assert before[0][0][0] == 5
    with pytest.raises(ReadOnlyError):
        reporting.query(sql)
    assert _fingerprint(backend) == before
    # The store is still usable for reading and writing afterwards.
    assert reporting.query("SELECT COUNT(*) FROM calls").rows == [(5,)]
    assert reporting.insert([Call(timestamp=T0)]) == 1


# These get through PostgreSQL's READ ONLY transaction, yet committed they would leave a large
# object behind, or a session setting that stops the store from writing or finding its tables.
UNDONE = [
    "SELECT lo_create(0)",
    "SELECT set_config('default_transaction_read_only', 'on', false)",
    "SELECT set_config('search_path', 'pg_catalog', false)",
]


@postgres_only
@pytest.mark.parametrize("sql", UNDONE)
def test_query_is_always_rolled_back(reporting: Store, backend: Backend, sql: str) -> None:
    objects = "SELECT count(*) FROM pg_largeobject_metadata"
    before = (_fingerprint(backend), backend.sql(objects))
    with contextlib.suppress(ReadOnlyError):  # refusing them would do too
        reporting.query(sql)
    assert (_fingerprint(backend), backend.sql(objects)) == before
    assert reporting.query("SELECT COUNT(*) FROM calls").rows == [(5,)]
    assert reporting.insert([Call(timestamp=T0)]) == 1


@postgres_only
def test_query_leaves_no_session_lock_behind(reporting: Store, backend: Backend) -> None:
    """A session advisory lock outlives a rollback; taken on the key schema changes use, it
    would block partition creation and migrations in every other process."""
    key = "hashtext(current_schema() || '.llmlog')"
    reporting.query(f"SELECT pg_advisory_lock({key})")
    assert backend.sql(f"SELECT pg_try_advisory_lock({key})") == [(True,)]


COMMON_ALLOWED = [
    ("SELECT COUNT(*) FROM calls", (), [(5,)]),
    (
        "WITH e AS (SELECT * FROM calls WHERE error IS NOT NULL) SELECT COUNT(*), MAX(timestamp) FROM e",
        (), [(2, "2026-03-01T12:04:00.000000Z")],
    ),
    (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) SELECT SUM(x) FROM n",
        (), [(55,)],
    ),
    ("/* a comment */ SELECT model FROM calls WHERE id LIKE '%5'", (), [("gpt-4.1",)]),
]  # fmt: skip
ALLOWED = {
    "sqlite": [
        *COMMON_ALLOWED,
        ("SELECT id FROM calls WHERE model = ? ORDER BY id LIMIT 1", ("gpt-4.1",),
         [("00000000-0000-0000-0000-000000000003",)]),
        ("SELECT json_array_length(messages), json_extract(error, '$.status') FROM calls WHERE id LIKE '%4'",
         (), [(None, 500)]),
        ("PRAGMA user_version", (), [(len(MIGRATIONS),)]),
    ],
    "postgres": [
        *COMMON_ALLOWED,
        ("SELECT id FROM calls WHERE model = %s ORDER BY id LIMIT 1", ("gpt-4.1",),
         [("00000000-0000-0000-0000-000000000003",)]),
        ("SELECT jsonb_array_length(messages), (error->>'status')::int FROM calls WHERE id LIKE '%4'",
         (), [(None, 500)]),
        ("SELECT version FROM llmlog_schema", (), [(len(pg.MIGRATIONS),)]),
        ("TABLE llmlog_schema", (), [(len(pg.MIGRATIONS),)]),
        ("VALUES (1, 'a'), (2, 'b')", (), [(1, "a"), (2, "b")]),
        ("(SELECT count(*) FROM call_data)", (), [(5,)]),
    ],
}  # fmt: skip


@pytest.mark.parametrize(("backend", "sql", "params", "expected"), per_kind(ALLOWED), indirect=["backend"])
def test_query_allows_reads(reporting: Store, sql: str, params: tuple[Any, ...], expected: list[Any]) -> None:
    assert reporting.query(sql, params).rows == expected


@sqlite_only
@pytest.mark.parametrize(
    "sql", ["PRAGMA table_info(call_data)", "SELECT name FROM pragma_table_info('call_data') ORDER BY cid"]
)
def test_query_allows_table_info(reporting: Store, sql: str) -> None:
    """The authorizer lets introspection PRAGMAs through, whatever table they name (SQLite passes
    the table name as arg2), and pragma_table_info() as a table-valued function."""
    result = reporting.query(sql)
    names = [r[result.columns.index("name")] for r in result.rows]
    assert names[:4] == ["rowid", "id", "session_id", "user_id"]
    assert "rate_card" in names


@sqlite_only
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("""SELECT value FROM json_each('["a","b"]')""", [("a",), ("b",)]),
        ("""SELECT COUNT(*) FROM json_tree('{"a":{"b":1}}')""", [(3,)]),
        (
            "SELECT key FROM json_each((SELECT metadata FROM calls"
            " WHERE id = '00000000-0000-0000-0000-000000000001'))",
            [("tier",)],
        ),
        (
            "SELECT j.value, COUNT(*) FROM call_data AS d, json_each(d.metadata) AS j GROUP BY 1 ORDER BY 1",
            [("enterprise", 2), ("free", 2)],
        ),
    ],
)
def test_query_allows_json_table_functions(reporting: Store, sql: str, expected: list[Any]) -> None:
    """json_each()/json_tree() on their own (a literal, a scalar subquery, the `call_data` table):
    declaring the eponymous virtual table asks the authorizer for SQLITE_UPDATE on sqlite_master,
    which must be allowed for SQLite's own setup."""
    assert reporting.query(sql).rows == expected


def test_query_limit_truncates(reporting: Store) -> None:
    r = reporting.query("SELECT id FROM calls ORDER BY id", limit=3)
    assert r.truncated is True and len(r.rows) == 3
    r = reporting.query("SELECT id FROM calls ORDER BY id", limit=5)
    assert r.truncated is False and len(r.rows) == 5


RUNAWAY = {
    "sqlite": [
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000)"
        " SELECT COUNT(*) FROM n"
    ],
    "postgres": [
        "SELECT pg_sleep(30)",  # waiting, not computing
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000)"
        " SELECT COUNT(*) FROM n",
    ],
    "clickhouse": ["SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) = 1"],
}


def test_runaway_query_is_stopped(reporting: Store, backend: Backend) -> None:
    for sql in RUNAWAY[backend.kind]:
        started = time.monotonic()
        with pytest.raises(ReadOnlyError, match="limit"):
            reporting.query(sql, timeout_s=0.5)
        assert time.monotonic() - started < 5
        # The next query gets its own time budget.
        assert reporting.query("SELECT COUNT(*) FROM calls", timeout_s=0.5).rows == [(5,)]


QUERY_ERROR = {
    "sqlite": "no such column: nope",
    "postgres": 'column "nope" does not exist',
    "clickhouse": "Unknown expression identifier `nope`",
}


def test_query_error_is_reported(reporting: Store, backend: Backend) -> None:
    with pytest.raises(ReadOnlyError, match=QUERY_ERROR[backend.kind]):
        reporting.query("SELECT nope FROM calls")
    assert reporting.query("SELECT COUNT(*) FROM calls").rows == [(5,)]  # and the store goes on


# ---------------------------------------------------------------- migrations


RELATIONS = {
    "sqlite": (
        "SELECT name, type FROM sqlite_master WHERE name IN ('calls', 'call_data', 'content') ORDER BY 1",
        [("call_data", "table"), ("calls", "view"), ("content", "table")],
    ),
    "postgres": (
        "SELECT relname::text, relkind::text FROM pg_class"
        " WHERE relnamespace = current_schema()::regnamespace"
        " AND relname IN ('calls', 'call_data', 'content') ORDER BY 1",
        [("call_data", "p"), ("calls", "v"), ("content", "r")],
    ),
    "clickhouse": (
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
        " AND name IN ('calls', 'call_data', 'content') ORDER BY 1",
        [("call_data", "ReplacingMergeTree"), ("calls", "View")],
    ),
}
VERSION_SQL = {
    "sqlite": "PRAGMA user_version",
    "postgres": "SELECT version FROM llmlog_schema",
    "clickhouse": "SELECT max(version) FROM llmlog_schema",
}


def test_migrations_run_on_open_and_reopening_is_a_no_op(backend: Backend) -> None:
    version = SCHEMA_VERSION[backend.kind]
    with backend.open() as store:
        assert (store.schema_found, store.schema_version) == (0, version)
        store.insert([full_call()])
    sql, relations = RELATIONS[backend.kind]
    assert backend.sql(sql) == relations
    assert backend.sql(VERSION_SQL[backend.kind]) == [(version,)]  # one row on PostgreSQL
    for _ in range(2):
        with backend.open() as store:
            assert (store.schema_found, store.schema_version) == (version, version)
            got = store.get(full_call().id)
            assert got is not None and got.to_dict() == full_call().to_dict()
    assert backend.sql(sql) == relations
    assert backend.sql(VERSION_SQL[backend.kind]) == [(version,)]


@sqlite_only
def test_migrates_a_version_1_database(backend: Backend) -> None:
    path = backend.url
    db = connect(path)
    assert migrate(db, target=1) == 1
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'calls'").fetchone() is None
    system, message = "Old system prompt ✓", json.dumps({"role": "user", "content": "old question"})
    sid = db.execute(
        "INSERT INTO content(hash, body) VALUES (?, ?) RETURNING id", (digest(system), system)
    ).fetchone()[0]
    mid = db.execute(
        "INSERT INTO content(hash, body) VALUES (?, ?) RETURNING id", (digest(message), message)
    ).fetchone()[0]
    db.execute(
        "INSERT INTO call_data (id, session_id, user_id, timestamp, provider, model, feature,"
        " prompt_template_version, system_id, message_ids, response, stop_reason, input_tokens,"
        " output_tokens, cost_usd, latency_ms, metadata, tags)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "99999999-0000-4000-8000-000000000001", "s_old", "u_old", "2025-06-01T10:00:00.123456Z",
            "anthropic", "claude-haiku-4-5", "legacy", "legacy@v1", sid, json.dumps([mid, mid]),
            json.dumps({"content": [{"type": "text", "text": "old answer"}]}), "end_turn", 10, 20,
            0.00011, 42.5, json.dumps({"tier": "free"}), json.dumps(["old"]),
        ),
    )  # fmt: skip
    db.close()

    with SQLiteStore(path) as store:
        assert (store.schema_found, store.schema_version) == (1, len(MIGRATIONS))
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        kinds = dict(store.db.execute("SELECT name, type FROM sqlite_master"))
        assert kinds["calls"] == "view"
        assert kinds["call_data_feature"] == "index"
        cols = [r[1] for r in store.db.execute("PRAGMA table_info(call_data)")]
        assert "rate_card" in cols
        got = store.get("99999999-0000-4000-8000-000000000001")
        assert got is not None
        assert got.system_prompt == system
        assert got.messages == [{"role": "user", "content": "old question"}] * 2
        assert got.response == {"content": [{"type": "text", "text": "old answer"}]}
        assert got.timestamp == datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=UTC)
        assert (got.input_tokens, got.output_tokens, got.cost_usd, got.latency_ms) == (10, 20, 0.00011, 42.5)
        assert got.metadata == {"tier": "free"} and got.tags == ["old"]
        assert got.rate_card is None and got.tools is None and got.params is None
        assert store.query("SELECT feature, rate_card FROM calls").rows == [("legacy", None)]
        assert store.cost_by_day(datetime(2025, 6, 1), datetime(2025, 6, 1)) == [
            ("2025-06-01", "claude-haiku-4-5", 1, 0.00011)
        ]
        # New rows go in beside the old one.
        assert store.insert([Call(timestamp=T0, rate_card="card")]) == 1
        assert store.query("SELECT day, model, calls FROM daily ORDER BY day").rows == [
            ("2025-06-01", "claude-haiku-4-5", 1), ("2026-03-01", None, 1),
        ]  # fmt: skip
    # Opening again is a no-op.
    with open_store(path) as store:
        assert (store.schema_found, store.schema_version) == (len(MIGRATIONS), len(MIGRATIONS))
        assert store.count(CallFilter()) == 2
        assert store.query("PRAGMA user_version").rows == [(len(MIGRATIONS),)]


# ---------------------------------------------------------------- several processes
# Children are started with "spawn" (a fresh interpreter, as separate application processes
# would be) and open the store by URL, as an application does.


def _run_processes(target: Callable[..., None], args_list: Sequence[tuple[Any, ...]]) -> list[int | None]:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    for p in procs:
        if p.exitcode is None:  # hung (deadlocked?): do not leave it behind
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def _drain(q: Any) -> list[Any]:
    found = []
    while True:
        try:
            found.append(q.get(timeout=0.2))
        except queue.Empty:
            return found


def _writer_process(url: str, worker: int, n: int, batch: int, start: Any) -> None:
    store = open_store(url)
    start.wait(timeout=30)
    shared = "Shared system prompt. " * 200
    for i in range(0, n, batch):
        store.insert([
            Call(model="m", feature=f"w{worker}", system_prompt=shared,
                 messages=[{"role": "user", "content": f"worker {worker} call {j}"}])
            for j in range(i, min(i + batch, n))
        ])  # fmt: skip
    store.close()


def test_several_processes_write_at_once(backend: Backend) -> None:
    one_process_engine(backend)
    backend.open().close()  # created (migrated; in WAL mode on SQLite) before the writers start
    start = multiprocessing.get_context("spawn").Barrier(4)
    codes = _run_processes(_writer_process, [(backend.url, w, 200, 10, start) for w in range(4)])
    assert codes == [0, 0, 0, 0]
    with backend.open() as store:
        assert store.count(CallFilter()) == 800
        for w in range(4):
            assert store.count(CallFilter(feature=f"w{w}")) == 200
        assert store.query("SELECT COUNT(DISTINCT id) FROM calls").rows == [(800,)]
        # One shared system prompt row, one row per distinct message.
        assert store.query("SELECT COUNT(*) FROM content").rows == [(801,)]
        # Each counted once in the rollup (a day apart if the writers ran over midnight).
        daily = "SELECT feature, SUM(calls) FROM daily GROUP BY feature ORDER BY feature"
        assert store.query(daily).rows == [(f"w{w}", 200) for w in range(4)]


def _open_fresh(urls: list[str], worker: int, start: Any, errors: Any) -> None:
    for url in urls:
        start.wait(timeout=30)
        try:
            store = open_store(url)
            store.insert([Call(model="m", feature=f"w{worker}")])
            store.close()
        except Exception as exc:
            errors.put(f"{url}: {type(exc).__name__}: {exc}")


def test_several_processes_opening_a_new_database_at_once(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    """An application's first workers open the same new database at the same moment: on SQLite
    the switch to WAL does not wait on the busy handler (connect() retries it); on PostgreSQL the
    migrations must run once, the others waiting on the migration lock."""
    one_process_engine(backend)
    server, schemas = "", []
    if backend.kind == "sqlite":
        urls = [str(Path(backend.url).parent / f"fresh{i}.db") for i in range(40)]
    else:
        server = request.getfixturevalue("postgres_server")
        schemas = [new_schema(server) for _ in range(10)]
        urls = [url for _, url in schemas]
    try:
        ctx = multiprocessing.get_context("spawn")
        start, errors = ctx.Barrier(6), ctx.Queue()
        codes = _run_processes(_open_fresh, [(urls, w, start, errors) for w in range(6)])
        assert codes == [0] * 6
        assert _drain(errors) == []
        for url in urls:
            with open_store(url) as store:
                assert store.count(CallFilter()) == 6
                assert store.schema_found == store.schema_version == SCHEMA_VERSION[backend.kind]
    finally:
        for schema, _ in schemas:
            admin(server, f"DROP SCHEMA {schema} CASCADE")


def _batch_writer(url: str, batches: list[list[Call]], start: Any, results: Any) -> None:
    store = open_store(url)
    new = 0
    for batch in batches:
        start.wait(timeout=30)  # every round, all writers at once: the most contention there can be
        new += store.insert(batch)
    results.put(new)
    store.close()


@postgres_only
def test_overlapping_writers_never_deadlock_or_lose_calls(backend: Backend) -> None:
    """Writers whose batches (20-50 calls) bring the same new content at the same moment, each in
    its own order, and even the same calls (ids) in their own order, across three new months.
    Rows locked in batch order would deadlock (PostgreSQL then aborts a writer: the child fails)."""
    rng = random.Random(1234)
    workers, rounds = 6, 8
    plans: list[list[list[Call]]] = [[] for _ in range(workers)]
    everything: dict[str, Call] = {}
    for r in range(rounds):
        pool = [{"role": "user", "content": f"round {r} message {i} " + "m" * 40} for i in range(300)]
        prompt = f"System prompt of round {r}. " * 50

        def call(r: int = r, pool: list[dict[str, str]] = pool, prompt: str = prompt) -> Call:
            return Call(
                id=str(uuid.UUID(int=rng.getrandbits(128))), feature="overlap", system_prompt=prompt,
                timestamp=T0 + timedelta(days=31 * (r % 3), seconds=r),  # March, April, May
                messages=rng.sample(pool, 25),  # a different order in every call
            )  # fmt: skip

        shared = [call() for _ in range(15)]  # every worker stores these too
        for plan in plans:
            batch = [*shared, *(call() for _ in range(rng.randint(5, 35)))]
            rng.shuffle(batch)
            plan.append(batch)
            everything.update((c.id, c) for c in batch)
    backend.open().close()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(workers), ctx.Queue()
    codes = _run_processes(_batch_writer, [(backend.url, plan, start, results) for plan in plans])
    assert codes == [0] * workers
    total = len(everything)
    assert sum(_drain(results)) == total  # each call reported new exactly once
    assert backend.sql("SELECT count(*), count(DISTINCT id) FROM call_data") == [(total, total)]
    # Each counted once in the rollup: one group per day (every call is "overlap", no model).
    assert backend.sql("SELECT day, calls FROM daily ORDER BY day") == backend.sql(
        "SELECT (timestamp AT TIME ZONE 'UTC')::date, count(*) FROM call_data GROUP BY 1 ORDER BY 1"
    )
    contents = {json.dumps(m) for c in everything.values() for m in c.messages or []}
    contents |= {c.system_prompt for c in everything.values()}
    assert backend.sql("SELECT count(*) FROM content") == [(len(contents),)]
    with backend.open() as store:
        back = {c.id: c.to_dict() for c in store.iter_calls(CallFilter(feature="overlap"), batch=200)}
    assert back == {i: c.to_dict() for i, c in everything.items()}


# ---------------------------------------------------------------- PostgreSQL monthly partitions

PARTITIONS = (
    "SELECT c.relname::text FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'call_data'::regclass ORDER BY 1"
)


def _ahead() -> set[str]:
    """The months a store creates on open, ahead of need: this one and the next."""
    now = datetime.now(UTC)
    return {f"call_data_{t:%Y%m}" for t in (now, now + timedelta(days=31))}


def _partitions(backend: Backend) -> list[str]:
    """The partitions made for calls, leaving out those made ahead of need."""
    return [name for (name,) in backend.sql(PARTITIONS) if name not in _ahead()]


@postgres_only
def test_a_call_in_a_new_month_gets_its_partition(store: Store, backend: Backend) -> None:
    """`call_data` is partitioned by month; a month's table is made when its first call arrives
    (this month's and next month's are made on open, ahead of need)."""
    assert {name for (name,) in backend.sql(PARTITIONS)} == _ahead()
    made = partial(_partitions, backend)
    first = Call(timestamp=T0, model="march")
    assert store.insert([first]) == 1
    assert made() == ["call_data_202603"]
    # One batch, mixed months: early years, one already there, the last month there is.
    stamps = [
        datetime(999, 1, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        T0 + timedelta(days=3),
        datetime(2027, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-1))),  # 2027-12-01 in UTC
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    batch = [Call(timestamp=t, model=f"m{i}") for i, t in enumerate(stamps)]
    assert store.insert(batch) == len(batch)
    assert made() == [
        "call_data_000101", "call_data_099901", "call_data_202603", "call_data_202712", "call_data_999912",
    ]  # fmt: skip
    # Each row is in its month's partition.
    where = dict(backend.sql("SELECT id, tableoid::regclass::text FROM call_data"))
    for c in [first, *batch]:
        assert where[c.id] == "call_data_" + format_timestamp(c.timestamp)[:7].replace("-", "")
    # A second store (knowing no partitions yet) writes into the existing ones.
    with backend.open() as other:
        assert other.insert([Call(timestamp=datetime(999, 1, 1, tzinfo=UTC), model="again")]) == 1
    assert len(made()) == 5
    assert [c.timestamp for c in store.recent(CallFilter())] == sorted(
        [c.timestamp for c in [first, *batch]] + [datetime(999, 1, 1, tzinfo=UTC)], reverse=True
    )


SEARCH_INDEXES = (
    "SELECT p.relname::text, c.reloptions FROM pg_inherits AS i"
    " JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_index AS x ON x.indexrelid = c.oid"
    " JOIN pg_class AS p ON p.oid = x.indrelid WHERE i.inhparent = 'call_data_search'::regclass"
)


def _pending_lists(backend: Backend) -> dict[str, list[str] | None]:
    return dict(backend.sql(SEARCH_INDEXES))


@postgres_only
def test_each_partitions_search_index_has_a_bounded_pending_list(backend: Backend) -> None:
    """A store of the version before has partitions whose search index keeps PostgreSQL's 4 MB
    pending list; the migration bounds it in each, and the store in each partition it makes
    later (the partitioned index cannot carry the setting for them). Its calls are still found."""
    import psycopg

    with psycopg.connect(backend.url, autocommit=True) as conn:
        pg.migrate(conn, target=pg.MIGRATIONS.index(pg.m021_search_pending_list))
    old = Call(timestamp=T0, model="m", response={"content": [{"type": "text", "text": "a quiet harbour"}]})
    _partitions_by_hand(backend, [old])
    assert _pending_lists(backend) == {"call_data_202603": None}
    bounded = [f"gin_pending_list_limit={pg.SEARCH_PENDING_KB}"]
    with backend.open() as store:
        assert store.insert([old]) == 1
        later = Call(timestamp=datetime(2031, 5, 2, tzinfo=UTC), response={"content": "harbour lights"})
        assert store.insert([later]) == 1
        assert {h.call.id for h in store.search("harbour", CallFilter(), 10)} == {later.id, old.id}
        assert [c.id for c in store.recent(CallFilter(text="quiet harb"), 10, brief=True)] == [old.id]
    made = _pending_lists(backend)
    assert {"call_data_202603", "call_data_203105", *_ahead()} <= set(made)
    assert all(options == bounded for options in made.values()), made


@postgres_only
def test_a_dropped_month_is_created_again(store: Store, backend: Backend) -> None:
    """Old calls are dropped by dropping their month's table (postgres.py's docstring). A store
    that created that month earlier must create it again for a late call from it, not fail with
    "no partition found for row", an integrity error the writer would count as unstorable."""
    old = Call(timestamp=datetime(2026, 1, 5, tzinfo=UTC))
    assert store.insert([old]) == 1
    backend.sql("DROP TABLE call_data_202601")
    late = Call(timestamp=datetime(2026, 1, 6, tzinfo=UTC), model="late")
    assert store.insert([late, Call(timestamp=T0)]) == 2
    assert _partitions(backend) == ["call_data_202601", "call_data_202603"]
    assert store.get(old.id) is None
    got = store.get(late.id)
    assert got is not None and got.model == "late"


def _same_month_writer(url: str, worker: int, start: Any) -> None:
    store = open_store(url)
    start.wait(timeout=30)
    store.insert([
        Call(timestamp=datetime(2031, 7, 1 + worker, tzinfo=UTC), feature=f"w{worker}"),
        Call(timestamp=datetime(2031, 8, 1 + worker, tzinfo=UTC), feature=f"w{worker}"),
    ])  # fmt: skip
    store.close()


@postgres_only
def test_processes_creating_the_same_new_month_at_once(backend: Backend) -> None:
    """Every writer sees the new months at once: one creates each table, the others wait and use it."""
    backend.open().close()
    workers = 8
    start = multiprocessing.get_context("spawn").Barrier(workers)
    codes = _run_processes(_same_month_writer, [(backend.url, w, start) for w in range(workers)])
    assert codes == [0] * workers
    assert _partitions(backend) == ["call_data_203107", "call_data_203108"]
    assert backend.sql("SELECT count(*), count(DISTINCT feature) FROM call_data") == [(2 * workers, workers)]
    assert backend.sql("SELECT count(*), sum(calls) FROM daily") == [(2 * workers, 2 * workers)]


# ---------------------------------------------------------------- SQLite in memory


@pytest.mark.parametrize("sql", REFUSED["sqlite"])
def test_query_refuses_writes_on_an_in_memory_store(sql: str) -> None:
    # No read-only connection here: the authorizer alone must hold.
    store = SQLiteStore(":memory:")
    try:
        store.insert(_reporting_calls())
        with pytest.raises(ReadOnlyError):
            store.query(sql)
        assert store.query("SELECT COUNT(*), group_concat(model) FROM calls").rows == [
            (5, "claude-sonnet-4-5,claude-sonnet-4-5,gpt-4.1,gpt-4.1,gpt-4.1")
        ]
        assert store.db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert store.insert([Call(timestamp=T0)]) == 1  # the store's own writes still work
    finally:
        store.close()


def test_echoed_instructions_and_tools_round_trip_and_are_stored_once(backend: Backend) -> None:
    """The Responses API echoes the request's instructions and tools in every response."""
    instructions = "You are the research agent. " * 150
    tools = [
        {"type": "function", "name": f"f{i}", "description": "Finds. " * 40, "strict": True} for i in range(3)
    ]
    calls = [
        Call(
            timestamp=T0 + timedelta(seconds=i), provider="openai", model="gpt-4.1",
            system_prompt=instructions,
            messages=[{"role": "user", "content": f"question {i}"}],
            tools=[{k: v for k, v in t.items() if k != "strict"} for t in tools],
            response={"id": f"resp_{i}", "object": "response", "instructions": instructions, "tools": tools,
                      "output": [{"type": "message", "content": [{"type": "output_text", "text": f"a{i}"}]}],
                      "usage": {"input_tokens": 10, "output_tokens": 2}},
        )
        for i in range(5)
    ]  # fmt: skip
    odd = Call(
        timestamp=T0, provider="openai", model="gpt-4.1",
        response={"instructions": None, "tools": [], "output": []},  # nothing to move: kept as is
    )  # fmt: skip
    with backend.open() as store:
        store.insert([*calls, odd])
        for c in [*calls, odd]:
            got = store.get(c.id)
            assert got is not None and got.response == c.response
        if backend.kind == "sqlite":
            # Key order too, as the view presents it to SQL.
            text = store.query("SELECT response FROM calls WHERE id = ?", (calls[0].id,)).rows[0][0]
            assert list(json.loads(text)) == list(calls[0].response or {})
    if backend.kind in KINDS:
        # The response rows hold no copy; the echoed text is one content row shared by all.
        size = "length(llmlog_text(response))" if backend.kind == "sqlite" else "pg_column_size(response)"
        assert backend.sql(f"SELECT max({size}) FROM call_data WHERE provider = 'openai'")[0][0] < 300
        body = "llmlog_text(body)" if backend.kind == "sqlite" else "body::text"
        n = backend.sql(f"SELECT count(*) FROM content WHERE {body} LIKE '%You are the research agent%'")
        assert n == [(1,)]


def test_echoed_content_outlives_the_call_that_sent_it(backend: Backend) -> None:
    """A call whose only link to a piece of content is its response's echo keeps it when the
    call whose request sent that content is erased."""
    row_stores_only(backend, "no content table")
    instructions = "You are the billing agent. " * 100
    tools = [{"type": "function", "name": "lookup", "description": "Looks up. " * 60}]
    reply = {"object": "response", "instructions": instructions, "tools": tools, "output": []}
    sender = Call(
        timestamp=T0, provider="openai", user_id="u1", system_prompt=instructions, tools=tools, response=reply
    )
    echo_only = Call(timestamp=T0 + timedelta(seconds=1), provider="openai", user_id="u2", response=reply)
    with backend.open() as store:
        store.insert([sender, echo_only])
        assert store.erase(user_id="u1").calls == 1
        assert store.collect_content() == 0
        got = store.get(echo_only.id)
        assert got is not None and got.response == reply
        # Its content replaced (as redaction or sealing does): the new echo, read back whole.
        redacted = {**reply, "instructions": "[REDACTED]"}
        store.update_content(echo_only.replace(response=redacted))
        got = store.get(echo_only.id)
        assert got is not None and got.response == redacted


@sqlite_only
def test_migrates_a_version_2_database_with_responses(backend: Backend) -> None:
    path = backend.url
    db = connect(path)
    assert migrate(db, target=2) == 2
    db.execute(
        "INSERT INTO call_data (id, timestamp, provider, response) VALUES (?, ?, ?, ?)",
        ("99999999-0000-4000-8000-000000000002", "2026-01-01T00:00:00.000000Z", "openai",
         json.dumps({"instructions": "old", "tools": [{"name": "t"}], "output": []})),
    )  # fmt: skip
    db.close()
    with SQLiteStore(path) as store:
        got = store.get("99999999-0000-4000-8000-000000000002")
        assert got is not None and got.response == {
            "instructions": "old",
            "tools": [{"name": "t"}],
            "output": [],
        }


@postgres_only
def test_migrates_a_postgres_store_with_echoed_responses(backend: Backend) -> None:
    """A store from before the echo was kept apart: its responses read whole (through the
    view's grants, the reader's too), and new calls keep the echo once."""
    import psycopg

    before = pg.MIGRATIONS.index(pg.m015_response_echo)
    with psycopg.connect(backend.url, autocommit=True) as conn:
        assert pg.migrate(conn, target=before) == before
    old_reply = {"instructions": "old", "tools": [{"name": "t"}], "output": []}
    old = Call(timestamp=T0, provider="openai", response=old_reply)
    _partitions_by_hand(backend, [old])
    backend.sql(
        "INSERT INTO call_data (id, timestamp, provider, response) VALUES (?, ?, ?, ?::jsonb)",
        (old.id, format_timestamp(old.timestamp), "openai", json.dumps(old_reply)),
    )
    reply = {"instructions": "You are new. " * 200, "tools": [{"name": "t2"}], "output": []}
    new = Call(timestamp=T0 + timedelta(seconds=1), provider="openai", response=reply)
    with backend.open() as store:
        assert (store.schema_found, store.schema_version) == (before, SCHEMA_VERSION["postgres"])
        store.insert([new])
        assert [c.response for c in store.recent(CallFilter())] == [reply, old_reply]
        rows = store.query("SELECT id, response FROM calls ORDER BY timestamp").rows
        assert [(i, as_json(r)) for i, r in rows] == [(old.id, old_reply), (new.id, reply)]
    stored = "SELECT response_instructions_id IS NULL, response -> 'instructions' FROM call_data"
    assert backend.sql(stored + " ORDER BY timestamp") == [(True, "old"), (False, None)]


@pytest.mark.parametrize(
    "flt",
    [
        CallFilter(),
        CallFilter(feature="support-bot"),
        CallFilter(errors=True),
        CallFilter(errors=False, model="gpt-4.1"),
        CallFilter(user_id="u2"),  # not in the rollup: counted from the calls
        CallFilter(tag="beta"),
        CallFilter(since=T0 + timedelta(minutes=3)),
    ],
)
@pytest.mark.parametrize("column", ["feature", "model", "prompt_template_version", "user_id", "error"])
def test_facets_count_what_the_filter_selects(filtered: Store, flt: CallFilter, column: str) -> None:
    calls = list(filtered.iter_calls(flt))
    if column == "error":
        values = ["error" if c.error else "ok" for c in calls]
    else:
        values = [getattr(c, column) for c in calls]
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is not None, kv[0] or ""))
    facet = filtered.facets(flt, [column])[column]
    assert facet.latest is None and not facet.too_slow
    got = facet.values
    assert sorted(got, key=lambda kv: (-kv[1], str(kv[0]))) == sorted(
        expected, key=lambda kv: (-kv[1], str(kv[0]))
    )


def test_facets_from_the_rollup_past_their_time_limit_are_said_too_slow(
    filtered: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counts read from the rollup are time-limited too: past the limit (a store under
    load), the calls page failed with a 500 instead of saying the counts were too slow."""

    def slow(*args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyError("query took longer than the 0.3 s limit")

    monkeypatch.setattr(filtered, "internal_query", slow)
    got = filtered.facets(CallFilter(), ["feature", "error", "user_id"], timeout_s=0.3)
    assert all(facet.too_slow and not facet.values for facet in got.values())


def test_facets_beyond_the_rollup_count_the_latest_matching_calls(filtered: Store) -> None:
    # User is not in the rollup: with a window of 4, the four newest support-bot or summarize
    # calls are counted, and the facet says so; the feature facet stays exact.
    flt = CallFilter(since=T0)
    got = filtered.facets(flt, ["user_id", "feature", "error"], window=4)
    newest = list(filtered.iter_calls(flt))[-4:]
    assert got["user_id"].latest == 4 and got["error"].latest == 4
    assert sorted(got["user_id"].values, key=str) == sorted(
        Counter(c.user_id for c in newest).items(), key=str
    )
    assert sum(n for _, n in got["error"].values) == 4
    # Fewer matches than the window: exact, and not said to be partial.
    few = filtered.facets(CallFilter(user_id="u3"), ["model", "user_id"], window=4)
    assert few["model"].latest is None and few["model"].values == [("gpt-4.1", 2)]
    with pytest.raises(ValueError, match="no facet"):
        filtered.facets(flt, ["input_tokens"])


def _people_expected(calls: list[Call], key: str) -> dict[str, tuple[Any, ...]]:
    groups: dict[str, list[Call]] = {}
    for c in calls:
        k = getattr(c, key)
        if k is not None:
            groups.setdefault(k, []).append(c)
    out = {}
    for k, cs in groups.items():
        priced = [c.cost_usd for c in cs if c.cost_usd is not None]
        also = (
            min((c.user_id for c in cs if c.user_id), default=None)
            if key == "session_id"
            else len({c.session_id for c in cs if c.session_id})
        )
        out[k] = (also, len(cs), sum(c.input_tokens or 0 for c in cs), sum(c.output_tokens or 0 for c in cs),
                  round(sum(priced), 9) if priced else None, sum(1 for c in cs if c.error), len(priced),
                  min(c.timestamp for c in cs), max(c.timestamp for c in cs))  # fmt: skip
    return out


def test_sessions_and_users_add_whole_days_and_part_days_exactly(store: Store) -> None:
    # Calls every 7 hours over 12 days, some unpriced, some failed, some without a user or
    # session; then a repricing, which the rollup follows.
    rng = random.Random(5)
    day0 = datetime(2026, 3, 1, tzinfo=UTC)
    calls = [
        Call(timestamp=day0 + timedelta(hours=7 * i, minutes=rng.randrange(60)),
             user_id=rng.choice(["u1", "u2", "u3", None]),
             session_id=rng.choice(["s1", "s2", "s3", "s4", None]),
             input_tokens=rng.choice([None, 10, 200]), output_tokens=rng.randrange(50),
             cost_usd=rng.choice([None, 0.25, 0.5]), error={"type": "x"} if i % 9 == 0 else None)
        for i in range(42)
    ]  # fmt: skip
    store.insert(calls)
    changed = [c for c in calls if c.cost_usd is None][:3]
    store.update_costs((c.id, 1.0, "test") for c in changed)
    for c in changed:
        c.cost_usd = 1.0
    windows = [
        (None, None),
        (day0 + timedelta(days=2, hours=5), None),
        (day0 + timedelta(days=2), day0 + timedelta(days=9)),  # midnight to midnight
        (day0 + timedelta(days=1, hours=13), day0 + timedelta(days=8, hours=2)),
        (day0 + timedelta(days=3, hours=1), day0 + timedelta(days=3, hours=20)),  # within a day
        (day0 + timedelta(days=3, hours=20), day0 + timedelta(days=4, hours=9)),  # across one midnight
        (None, day0 + timedelta(days=6, hours=11)),
    ]
    for since, until in windows:
        for user in (None, "u2"):
            flt = CallFilter(since=since, until=until, user_id=user)
            chosen = [
                c for c in calls
                if (since is None or c.timestamp >= since) and (until is None or c.timestamp < until)
                and (user is None or c.user_id == user)
            ]  # fmt: skip
            sessions = {
                s.session_id: (s.user_id, s.calls, s.input_tokens, s.output_tokens,
                               None if s.cost_usd is None else round(s.cost_usd, 9), s.errors, s.priced_calls,
                               s.first, s.last)
                for s in store.sessions(flt)
            }  # fmt: skip
            assert sessions == _people_expected(chosen, "session_id"), (since, until, user)
            users = {
                u.user_id: (u.sessions, u.calls, u.input_tokens, u.output_tokens,
                            None if u.cost_usd is None else round(u.cost_usd, 9), u.errors, u.priced_calls,
                            u.first, u.last)
                for u in store.users(flt)
            }  # fmt: skip
            assert users == _people_expected(chosen, "user_id"), (since, until, user)
    # A filter the rollup does not know is counted from the calls.
    failed = {s.session_id: s.calls for s in store.sessions(CallFilter(errors=True))}
    assert failed == dict(Counter(c.session_id for c in calls if c.error and c.session_id))


BEFORE_PEOPLE = {
    "sqlite": MIGRATIONS.index(m005_people_daily),
    "postgres": pg.MIGRATIONS.index(pg.m003_people_daily),
}


def test_an_existing_database_gets_the_people_rollup_on_upgrade(backend: Backend) -> None:
    row_stores_only(backend, "the rollups come with the first schema: no store predates them")
    kind = backend.kind
    rng = random.Random(3)
    calls = [
        Call(timestamp=T0 + timedelta(hours=5 * i), user_id=rng.choice(["u1", "u2", None]),
             session_id=rng.choice(["s1", "s2", None]), input_tokens=i, cost_usd=rng.choice([None, 0.5]))
        for i in range(30)
    ]  # fmt: skip
    if kind == "sqlite":
        db = connect(backend.url)
        migrate(db, target=BEFORE_PEOPLE[kind])
        db.close()
    else:
        import psycopg

        with psycopg.connect(backend.url, autocommit=True) as conn:
            pg.migrate(conn, target=BEFORE_PEOPLE[kind])
        _partitions_by_hand(backend, calls)
    values = [(c.id, format_timestamp(c.timestamp), c.user_id, c.session_id, c.input_tokens, c.cost_usd)
              for c in calls]  # fmt: skip
    marks = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(values))
    backend.sql(
        f"INSERT INTO call_data (id, timestamp, user_id, session_id, input_tokens, cost_usd) VALUES {marks}",
        [v for row in values for v in row],
    )
    since = T0 + timedelta(days=1, hours=3)
    with backend.open() as store:
        assert store.schema_found == BEFORE_PEOPLE[kind]
        got = {
            u.user_id: (u.sessions, u.calls, u.input_tokens, u.cost_usd)
            for u in store.users(CallFilter(since=since))
        }
        chosen = [c for c in calls if c.timestamp >= since]
        expected = {k: (v[0], v[1], v[2], v[4]) for k, v in _people_expected(chosen, "user_id").items()}
        assert got == expected


def test_erasure_leaves_no_trace_of_a_users_content(backend: Backend) -> None:
    shared = "You are the support assistant. " * 20
    a = [
        Call(timestamp=T0 + timedelta(minutes=i), user_id="alice", session_id="sa", system_prompt=shared,
             messages=[{"role": "user", "content": "hi"},
                       {"role": "user", "content": f"alice-secret-{i} my IBAN"}],
             metadata={"note": "alice-meta"})
        for i in range(3)
    ]  # fmt: skip
    b = Call(timestamp=T0, user_id="bob", session_id="sb", system_prompt=shared,
             messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    with backend.open() as store:
        store.insert([*a, b])
        store.insert_spans([Span(trace_id="t1", span_id="s1", parent_id=None, name="llm", kind="client",
                                 start=T0, end=T0, call_id=a[0].id)])  # fmt: skip
        erased = store.erase(user_id="alice")
        contents = 0 if backend.kind == "clickhouse" else 3  # ClickHouse's went inline, with the calls
        assert (erased.calls, erased.contents, erased.spans, erased.rollup_rows) == (3, contents, 1, 1)
        assert store.count(CallFilter(user_id="alice")) == 0
        # Bob's call is whole: the prompt and the "hi" both of them sent are still there.
        kept = store.get(b.id)
        assert kept is not None and kept.system_prompt == shared and kept.messages == b.messages
        assert [u.user_id for u in store.users(CallFilter())] == ["bob"]
        assert store.trace("t1") == []
        with pytest.raises(ValueError, match="exactly one"):
            store.erase()
    if backend.kind == "clickhouse":  # the parts in use hold none of it
        assert backend.sql("SELECT count() FROM call_data WHERE position(messages, 'alice') > 0") == [(0,)]
        return
    assert backend.sql("SELECT count(*) FROM content") == [(2,)]  # the shared prompt and "hi"
    if backend.kind == "sqlite":  # the file itself holds none of it
        raw = stored_bytes(backend.url)
        assert b"alice-secret" not in raw and b"alice-meta" not in raw and b"alice" not in raw


def test_a_store_upgraded_by_a_newer_llmlog_is_not_used(backend: Backend) -> None:
    # Its view and triggers may call what this version lacks: an older process writing into
    # it would fail call by call (or worse), so it refuses to open it, saying why.
    with backend.open() as store:
        store.insert([Call(timestamp=datetime(2026, 11, 2, tzinfo=UTC), model="m")])
    if backend.kind == "sqlite":
        backend.sql(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    elif backend.kind == "postgres":
        backend.sql(f"UPDATE llmlog_schema SET version = {len(pg.MIGRATIONS) + 1}")
    else:  # every engine's migrations are run by one runner, which checks this for all
        backend.sql(f"INSERT INTO llmlog_schema (version) VALUES ({len(ch.MIGRATIONS) + 1})")
    with pytest.raises(NewerStore, match="upgraded by a newer llmlog"):
        backend.open()
    result = CliRunner().invoke(cli, ["calls", "--db", backend.url])
    assert result.exit_code == 1 and "upgraded by a newer llmlog" in result.output, result.output
    assert "Traceback" not in result.output


def test_content_inserts_of_every_size_do_not_each_keep_a_statement(tmp_path: Path) -> None:
    # A batch's new content goes in one statement of as many rows: kept made for each count,
    # statements would grow without bound (up to 10,922 rows each).
    SQLiteStore._INSERT_ROWS.clear()
    with open_store(str(tmp_path / "s.db")) as store:
        n = 0
        for k in range(1, 61):
            store.insert([Call(messages=[{"role": "user", "content": f"m{n + j}"} for j in range(k)])])
            n += k
    assert len(SQLiteStore._INSERT_ROWS) <= 10, len(SQLiteStore._INSERT_ROWS)
