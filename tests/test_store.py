"""The SQLite store, on real files: round trips, content-addressed storage, the `calls` view,
the read-only `query`, migrations and several writer processes on one file."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from llmlog.record import COLUMNS, Call, format_timestamp
from llmlog.store import CallFilter, ReadOnlyError, open_store
from llmlog.store.sqlite import MIGRATIONS, SQLiteStore, _digest, connect, migrate

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _db_bytes(path: Path) -> int:
    return sum(
        os.path.getsize(f"{path}{suffix}") for suffix in ("", "-wal") if os.path.exists(f"{path}{suffix}")
    )


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "calls.db")
    yield s
    s.close()


def full_call(**changes) -> Call:
    """A call with every column set: nested JSON, unicode, microseconds."""
    call = Call(
        id="0b7f3c1e-9a4d-4e2b-8c6f-1d2e3f4a5b6c",
        session_id="sess_ünï_42",
        user_id="user_7",
        timestamp=datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
        provider="anthropic",
        model="claude-sonnet-4-5",
        feature="support-bot",
        prompt_template_version="support-bot@v4",
        system_prompt="Tu es un assistant. 日本語もOK 😀\nSecond line\twith tab.",
        messages=[
            {"role": "user", "content": "Bonjour, où est ma commande ? 🚚"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Je regarde."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup_order",
                        "input": {"order_id": "A-1"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"status": "ok"}'}],
            },
        ],
        tools=[
            {
                "name": "lookup_order",
                "description": "Look up an order.",
                "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            }
        ],
        params={"max_tokens": 1024, "temperature": 0.25, "stream": True, "stop_sequences": ["\n\nHuman:"]},
        response={
            "id": "msg_1",
            "role": "assistant",
            "content": [{"type": "text", "text": "Votre commande arrive demain. ✅"}],
            "usage": {"input_tokens": 1200, "output_tokens": 45, "nested": {"deep": [1, 2.5, None, True]}},
        },
        tool_calls=[{"id": "toolu_2", "name": "escalate", "input": {"priority": "high", "tags": ["ä", "b"]}}],
        stop_reason="end_turn",
        input_tokens=1200,
        output_tokens=45,
        cache_read_tokens=800,
        cache_creation_tokens=100,
        cost_usd=0.0123456789,
        rate_card="genai-prices 0.2.3",
        first_token_ms=123.456,
        latency_ms=2345.678,
        error={"type": "overloaded_error", "status": 529, "message": "Überlastet"},
        metadata={"tier": "enterprise", "nested": {"a": [1, {"b": "ç"}]}},
        tags=["demo", "prod", "ünicode"],
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        parent_id="00f067aa0ba902b7",
    )
    return call.replace(**changes)


# ---------------------------------------------------------------- round trips


def test_every_column_round_trips_exactly(store: SQLiteStore) -> None:
    original = full_call()
    assert store.insert([original]) == 1
    got = store.get(original.id)
    assert got is not None
    assert got.to_dict() == original.to_dict()
    for name in COLUMNS:  # and the types, not just equal-comparing values
        assert type(getattr(got, name)) is type(getattr(original, name)), name
    assert got.timestamp == original.timestamp
    assert got.timestamp.microsecond == 789012


def test_nulls_round_trip(store: SQLiteStore) -> None:
    bare = Call(id="11111111-2222-3333-4444-555555555555", timestamp=T0)
    store.insert([bare])
    got = store.get(bare.id)
    assert got is not None
    assert got.to_dict() == bare.to_dict()
    assert all(getattr(got, name) is None for name in COLUMNS if name not in ("id", "timestamp"))
    row = sqlite3.connect(store.path).execute("SELECT * FROM calls").fetchone()
    assert row.count(None) == len(COLUMNS) - 2


def test_empty_containers_are_not_null(store: SQLiteStore) -> None:
    c = full_call(messages=[], tools=[], params={}, tags=[], metadata={}, system_prompt="")
    store.insert([c])
    got = store.get(c.id)
    assert got is not None
    assert (got.messages, got.tools, got.params, got.tags, got.metadata, got.system_prompt) == (
        [],
        [],
        {},
        [],
        {},
        "",
    )


def test_non_utc_timestamp_is_stored_as_utc(store: SQLiteStore) -> None:
    ts = datetime(2026, 5, 1, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    c = full_call(timestamp=ts)
    store.insert([c])
    text = sqlite3.connect(store.path).execute("SELECT timestamp FROM calls").fetchone()[0]
    assert text == "2026-05-01T08:00:00.000005Z"
    got = store.get(c.id)
    assert got is not None and got.timestamp == ts and got.timestamp.tzinfo == UTC


def test_same_id_is_stored_once(store: SQLiteStore) -> None:
    c = full_call()
    assert store.insert([c]) == 1
    assert store.insert([c]) == 0
    # Also a duplicate inside one batch, and a changed record with the same id: the first wins.
    assert store.insert([c.replace(model="other"), c]) == 0
    other = full_call(id="22222222-2222-2222-2222-222222222222")
    assert store.insert([other, other]) == 1
    assert store.count(CallFilter()) == 2
    got = store.get(c.id)
    assert got is not None and got.model == "claude-sonnet-4-5"
    n = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM call_data").fetchone()[0]
    assert n == 2


def test_failed_batch_is_rolled_back_and_content_cache_stays_right(store: SQLiteStore) -> None:
    prompt = "A system prompt that is first stored in a batch that fails."
    good = Call(system_prompt=prompt, messages=[{"role": "user", "content": "hi"}], timestamp=T0)
    bad = Call(input_tokens=2**70, timestamp=T0)  # too big for an SQLite INTEGER
    with pytest.raises(OverflowError):
        store.insert([good, bad])
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT COUNT(*) FROM call_data").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM content").fetchone()[0] == 0
    # The rolled-back content ids must not be reused from a cache.
    assert store.insert([good]) == 1
    got = store.get(good.id)
    assert got is not None
    assert got.system_prompt == prompt
    assert got.messages == [{"role": "user", "content": "hi"}]


def test_sql_injection_looking_text_is_stored_verbatim(store: SQLiteStore) -> None:
    evil = "'); DROP TABLE call_data; --"
    c = full_call(
        system_prompt=evil,
        feature="x' OR '1'='1",
        user_id='"; DELETE FROM content; --',
        messages=[{"role": "user", "content": "Robert'); DROP TABLE calls;--"}],
        metadata={"tier": "'; ATTACH DATABASE '/tmp/x' AS x; --"},
    )
    other = full_call(id="33333333-3333-3333-3333-333333333333", feature="plain")
    store.insert([c, other])
    got = store.get(c.id)
    assert got is not None and got.to_dict() == c.to_dict()
    assert [x.id for x in store.recent(CallFilter(feature="x' OR '1'='1"))] == [c.id]
    assert [x.id for x in store.recent(CallFilter(user_id='"; DELETE FROM content; --'))] == [c.id]
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT COUNT(*) FROM call_data").fetchone()[0] == 2
    assert db.execute("SELECT system_prompt FROM calls WHERE id = ?", (c.id,)).fetchone()[0] == evil


# ---------------------------------------------------------------- content-addressed storage


def test_repeated_content_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "dedup.db"
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
    history: list[dict] = []
    for i in range(turns):
        history = [
            *history,
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "x" * 200},
        ]
        calls.append(
            Call(
                timestamp=T0 + timedelta(seconds=i),
                session_id="sess_long",
                system_prompt=system,
                tools=tools,
                params=params,
                messages=history,
                model="claude-sonnet-4-5",
            )
        )
    with SQLiteStore(path) as store:
        for i in range(0, turns, 7):  # several batches, so the cache and the table lookups both serve
            assert store.insert(calls[i : i + 7]) == len(calls[i : i + 7])
    distinct = 1 + 1 + 1 + turns  # system prompt, tool list, params, one row per message
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM content").fetchone()[0] == distinct
    # A new store (empty cache) finds the existing rows instead of adding new ones.
    with SQLiteStore(path) as store:
        store.insert([calls[-1].replace(id="44444444-4444-4444-4444-444444444444")])
    assert db.execute("SELECT COUNT(*) FROM content").fetchone()[0] == distinct
    db.close()
    jsonl = sum(len(c.to_json().encode()) + 1 for c in calls)
    size = _db_bytes(path)
    print(f"JSONL {jsonl:,} bytes, SQLite {size:,} bytes")
    assert size * 5 < jsonl, (size, jsonl)
    # And the data is whole again when read back.
    with SQLiteStore(path) as store:
        back = [
            c
            for c in store.iter_calls(CallFilter(session_id="sess_long"))
            if c.id != "44444444-4444-4444-4444-444444444444"
        ]
    assert [c.to_dict() for c in back] == [c.to_dict() for c in calls]


def test_calls_view_presents_messages_whole_and_in_order(store: SQLiteStore) -> None:
    # A repeated message (same content twice) and non-object items must keep their places.
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "hi"},
        "a bare string",
        [1, [2, 3]],
        {"role": "user", "content": [{"type": "text", "text": "z"}, {"type": "text", "text": "a"}]},
    ]
    c = full_call(messages=messages)
    store.insert([c])
    db = sqlite3.connect(store.path)
    text, n, first, last_text = db.execute(
        "SELECT messages, json_array_length(messages), json_extract(messages, '$[0].content'),"
        " json_extract(messages, '$[5].content[1].text') FROM calls"
    ).fetchone()
    assert json.loads(text) == messages
    assert (n, first, last_text) == (6, "hi", "a")
    # The stored row holds content ids, the repeated message has the same id twice.
    ids = json.loads(db.execute("SELECT message_ids FROM call_data").fetchone()[0])
    assert len(ids) == 6 and ids[0] == ids[2] and len(set(ids)) == 5


# ---------------------------------------------------------------- SQL people write


def _reporting_calls() -> list[Call]:
    def c(i: int, **kw) -> Call:
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
def reporting(store: SQLiteStore) -> SQLiteStore:
    store.insert(list(reversed(_reporting_calls())))
    return store


FIRST_QUERIES = {
    "errors": "SELECT * FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC",
    "by_model": "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model",
    "by_version": "SELECT prompt_template_version, AVG(output_tokens) FROM calls GROUP BY 1 ORDER BY 1",
}


@pytest.mark.parametrize("via", ["store.query", "sqlite3"])
def test_first_queries_work_as_written(reporting: SQLiteStore, via: str) -> None:
    def run(sql: str) -> tuple[list[str], list[tuple]]:
        if via == "store.query":
            r = reporting.query(sql)
            assert not r.truncated
            return r.columns, r.rows
        db = sqlite3.connect(reporting.path)
        cur = db.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    cols, rows = run(FIRST_QUERIES["errors"])
    assert cols == list(COLUMNS)
    assert [r[0] for r in rows] == [
        "00000000-0000-0000-0000-000000000004",
        "00000000-0000-0000-0000-000000000002",
    ]
    err = json.loads(rows[1][cols.index("error")])
    assert err == {"type": "rate_limit_error", "status": 429}

    cols, rows = run(FIRST_QUERIES["by_model"])
    assert cols == ["model", "COUNT(*)", "SUM(cost_usd)"]
    got = {m: (n, s) for m, n, s in rows}
    assert got.keys() == {"claude-sonnet-4-5", "gpt-4.1"}
    assert got["claude-sonnet-4-5"][0] == 2 and got["claude-sonnet-4-5"][1] == pytest.approx(0.03)
    assert got["gpt-4.1"][0] == 3 and got["gpt-4.1"][1] == pytest.approx(0.255)

    cols, rows = run(FIRST_QUERIES["by_version"])
    assert cols == ["prompt_template_version", "AVG(output_tokens)"]
    assert rows == [(None, 200.0), ("v1", 75.0), ("v2", 300.0)]


def test_json_extract_on_metadata(reporting: SQLiteStore) -> None:
    sql = "SELECT json_extract(metadata, '$.tier') AS tier, COUNT(*) FROM calls GROUP BY 1 ORDER BY 1"
    assert reporting.query(sql).rows == [(None, 1), ("enterprise", 2), ("free", 2)]
    arrow = "SELECT metadata->>'$.tier', COUNT(*) FROM calls WHERE metadata->>'$.tier' = 'free'"
    assert reporting.query(arrow).rows == [("free", 2)]
    db = sqlite3.connect(reporting.path)
    assert db.execute(
        "SELECT id FROM calls WHERE json_extract(metadata, '$.tier') = 'enterprise' ORDER BY id"
    ).fetchall() == [("00000000-0000-0000-0000-000000000002",), ("00000000-0000-0000-0000-000000000005",)]


def test_timestamps_sort_as_text(store: SQLiteStore) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    stamps = [
        base + timedelta(microseconds=1),
        base,
        datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),  # 2025-12-31T23:00Z
        base + timedelta(seconds=9),
        base + timedelta(seconds=10),
        base + timedelta(days=300, microseconds=999999),
        datetime(2025, 12, 31, 23, 0, 0, 1, tzinfo=UTC),
    ]
    store.insert([Call(timestamp=t, model=f"m{i}") for i, t in enumerate(stamps)])
    texts = [
        r[0] for r in sqlite3.connect(store.path).execute("SELECT timestamp FROM calls ORDER BY timestamp")
    ]
    assert texts == [format_timestamp(t) for t in sorted(stamps)]
    assert len({len(t) for t in texts}) == 1  # fixed width
    assert texts[0] == "2025-12-31T23:00:00.000000Z"
    assert [c.timestamp for c in store.recent(CallFilter())] == sorted(stamps, reverse=True)
    # Text comparison with a literal works as time comparison.
    n = store.query("SELECT COUNT(*) FROM calls WHERE timestamp >= '2026-01-01T00:00:00.000001Z'").rows
    assert n == [(4,)]


def test_early_year_timestamps_keep_text_order_and_stay_readable(store: SQLiteStore) -> None:
    """BUG: format_timestamp() uses strftime('%Y'), which does not zero-pad years < 1000.

    The stored text '999-01-01T…' then sorts after '2026-…', and parse_timestamp() cannot read
    it back, so every read of the store (recent, iter_calls, export, `llmlog calls`) fails.
    """
    old = Call(timestamp=datetime(999, 1, 1, tzinfo=UTC), model="old")
    new = Call(timestamp=datetime(2026, 1, 1, tzinfo=UTC), model="new")
    store.insert([old, new])
    assert [c.model for c in store.recent(CallFilter())] == ["new", "old"]
    assert format_timestamp(old.timestamp) == "0999-01-01T00:00:00.000000Z"


# ---------------------------------------------------------------- reading API


@pytest.fixture
def filtered(store: SQLiteStore) -> SQLiteStore:
    rows = [
        # feature, model, user, session, version, minutes after T0, error
        ("support-bot", "claude-sonnet-4-5", "u1", "s1", "support@v3", 0, None),
        ("support-bot", "claude-sonnet-4-5", "u1", "s1", "support@v3", 1, {"type": "overloaded_error"}),
        ("support-bot", "claude-haiku-4-5", "u2", "s2", "support@v4", 2, None),
        ("summarize", "claude-haiku-4-5", "u2", None, "summarize@v7", 3, None),
        ("summarize", "gpt-4.1", "u3", None, "summarize@v7", 4, {"type": "server_error", "status": 500}),
        ("code-review", "gpt-4.1", "u3", None, "review@v1", 5, None),
    ]
    store.insert(
        [
            Call(
                id=f"aaaaaaaa-0000-0000-0000-00000000000{i}",
                feature=f,
                model=m,
                user_id=u,
                session_id=s,
                prompt_template_version=v,
                timestamp=T0 + timedelta(minutes=mins),
                error=e,
            )
            for i, (f, m, u, s, v, mins, e) in enumerate(rows)
        ]
    )
    return store


def _ids(calls: list[Call]) -> list[int]:
    return [int(c.id[-1]) for c in calls]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (CallFilter(), [5, 4, 3, 2, 1, 0]),
        (CallFilter(feature="support-bot"), [2, 1, 0]),
        (CallFilter(model="claude-haiku-4-5"), [3, 2]),
        (CallFilter(user_id="u3"), [5, 4]),
        (CallFilter(session_id="s1"), [1, 0]),
        (CallFilter(prompt_template_version="summarize@v7"), [4, 3]),
        (CallFilter(since=T0 + timedelta(minutes=2)), [5, 4, 3, 2]),
        (CallFilter(until=T0 + timedelta(minutes=2)), [1, 0]),
        (CallFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4)), [3, 2, 1]),
        (CallFilter(errors=True), [4, 1]),
        (CallFilter(errors=False), [5, 3, 2, 0]),
        (CallFilter(feature="support-bot", errors=False, model="claude-sonnet-4-5"), [0]),
        (CallFilter(feature="nope"), []),
    ],
)
def test_filters_on_recent(filtered: SQLiteStore, flt: CallFilter, expected: list[int]) -> None:
    assert _ids(filtered.recent(flt)) == expected
    assert filtered.count(flt) == len(expected)


def test_recent_limit_and_sample(filtered: SQLiteStore) -> None:
    assert _ids(filtered.recent(CallFilter(), limit=2)) == [5, 4]
    picked = filtered.sample(CallFilter(feature="support-bot"), n=10)
    assert sorted(_ids(picked)) == [0, 1, 2]
    assert len({c.id for c in filtered.sample(CallFilter(), n=4)}) == 4


def test_iter_calls_pages_past_the_batch_size(store: SQLiteStore) -> None:
    calls = []
    for i in range(53):
        # Groups of calls share a timestamp, so paging must also order by id.
        calls.append(Call(timestamp=T0 + timedelta(seconds=i // 5), model="m", feature=f"f{i % 3}"))
    store.insert(list(reversed(calls)))
    got = list(store.iter_calls(CallFilter(), batch=7))
    assert len(got) == 53
    assert len({c.id for c in got}) == 53
    assert [(c.timestamp, c.id) for c in got] == sorted((c.timestamp, c.id) for c in calls)
    f1 = list(store.iter_calls(CallFilter(feature="f1"), batch=4))
    assert sorted(c.id for c in f1) == sorted(c.id for c in calls if c.feature == "f1")
    assert len(list(store.iter_calls(CallFilter(), batch=53))) == 53  # exactly one full page
    assert list(store.iter_calls(CallFilter(feature="none"), batch=5)) == []


def test_get_unique_prefix_and_ambiguous_prefix(store: SQLiteStore) -> None:
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


# ---------------------------------------------------------------- read-only query


REFUSED = [
    "INSERT INTO call_data (id, timestamp) VALUES ('x', '2026')",
    "UPDATE call_data SET model = 'hacked'",
    "DELETE FROM call_data",
    "DELETE FROM content",
    "DROP TABLE call_data",
    "DROP VIEW calls",
    "CREATE TABLE evil (x)",
    "CREATE TEMP TABLE evil (x)",
    "CREATE INDEX evil ON call_data(model)",
    "ATTACH DATABASE ':memory:' AS other",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA user_version=5",
    "PRAGMA writable_schema=ON",
    "WITH x AS (SELECT 1) UPDATE call_data SET model = 'hacked'",
    "REPLACE INTO content (id, hash, body) VALUES (1, x'00', 'x')",
    "VACUUM",
    "BEGIN IMMEDIATE",
]


def _fingerprint(path: str) -> tuple:
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("SELECT COUNT(*), group_concat(model), group_concat(id) FROM call_data").fetchone(),
            db.execute("SELECT COUNT(*) FROM content").fetchone(),
            db.execute("SELECT group_concat(name) FROM sqlite_master").fetchone(),
            db.execute("PRAGMA journal_mode").fetchone(),
            db.execute("PRAGMA user_version").fetchone(),
        )
    finally:
        db.close()


@pytest.mark.parametrize("sql", REFUSED)
def test_query_refuses_writes(reporting: SQLiteStore, sql: str) -> None:
    before = _fingerprint(reporting.path)
    assert before[3] == ("wal",) and before[4] == (len(MIGRATIONS),)
    with pytest.raises(ReadOnlyError):
        reporting.query(sql)
    assert _fingerprint(reporting.path) == before
    # The store is still usable for reading and writing afterwards.
    assert reporting.query("SELECT COUNT(*) FROM calls").rows == [(5,)]
    assert reporting.insert([Call(timestamp=T0)]) == 1


ALLOWED = [
    ("SELECT COUNT(*) FROM calls", [(5,)]),
    ("SELECT id FROM calls WHERE model = ? ORDER BY id LIMIT 1", None),
    (
        "WITH e AS (SELECT * FROM calls WHERE error IS NOT NULL) SELECT COUNT(*), MAX(timestamp) FROM e",
        [(2, "2026-03-01T12:04:00.000000Z")],
    ),
    (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) SELECT SUM(x) FROM n",
        [(55,)],
    ),
    (
        "SELECT json_array_length(messages), json_extract(error, '$.status') FROM calls WHERE id LIKE '%4'",
        [(None, 500)],
    ),
    ("PRAGMA user_version", [(2,)]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "expected"), ALLOWED)
def test_query_allows_reads(reporting: SQLiteStore, sql: str, expected: list | None) -> None:
    params = ("gpt-4.1",) if "?" in sql else ()
    result = reporting.query(sql, params)
    if expected is None:
        assert result.rows == [("00000000-0000-0000-0000-000000000003",)]
    else:
        assert result.rows == expected


@pytest.mark.parametrize(
    "sql", ["PRAGMA table_info(call_data)", "SELECT name FROM pragma_table_info('call_data') ORDER BY cid"]
)
def test_query_allows_table_info(reporting: SQLiteStore, sql: str) -> None:
    """BUG: the authorizer only lets introspection PRAGMAs through when arg2 is None, but for
    `PRAGMA table_info(call_data)` SQLite passes the table name as arg2, so it is refused."""
    result = reporting.query(sql)
    names = [r[result.columns.index("name")] for r in result.rows]
    assert names[:4] == ["rowid", "id", "session_id", "user_id"]
    assert "rate_card" in names


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
def test_query_allows_json_table_functions(reporting: SQLiteStore, sql: str, expected: list) -> None:
    """BUG: json_each()/json_tree() work in `query` only when the `calls` view is expanded first
    in the same statement. Used on their own (a literal, a scalar subquery, or the `call_data`
    table) they fail with 'vtable constructor failed: json_each': declaring the eponymous
    virtual table asks the authorizer for SQLITE_UPDATE on sqlite_master, which it denies.
    (pragma_table_info('call_data') fails the same way, see test_query_allows_table_info.)"""
    assert reporting.query(sql).rows == expected


def test_query_limit_truncates(reporting: SQLiteStore) -> None:
    r = reporting.query("SELECT id FROM calls ORDER BY id", limit=3)
    assert r.truncated is True and len(r.rows) == 3
    r = reporting.query("SELECT id FROM calls ORDER BY id", limit=5)
    assert r.truncated is False and len(r.rows) == 5


def test_runaway_query_is_stopped(reporting: SQLiteStore) -> None:
    sql = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000)"
        " SELECT COUNT(*) FROM n"
    )
    started = time.monotonic()
    with pytest.raises(ReadOnlyError, match="limit"):
        reporting.query(sql, timeout_s=0.5)
    assert time.monotonic() - started < 5
    # The next query gets its own time budget.
    assert reporting.query("SELECT COUNT(*) FROM calls", timeout_s=0.5).rows == [(5,)]


def test_query_error_is_reported(reporting: SQLiteStore) -> None:
    with pytest.raises(ReadOnlyError, match="no such column"):
        reporting.query("SELECT nope FROM calls")


# ---------------------------------------------------------------- migrations


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    db = connect(path)
    assert migrate(db, target=1) == 1
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'calls'").fetchone() is None
    system, message = "Old system prompt ✓", json.dumps({"role": "user", "content": "old question"})
    sid = db.execute(
        "INSERT INTO content(hash, body) VALUES (?, ?) RETURNING id", (_digest(system), system)
    ).fetchone()[0]
    mid = db.execute(
        "INSERT INTO content(hash, body) VALUES (?, ?) RETURNING id", (_digest(message), message)
    ).fetchone()[0]
    db.execute(
        "INSERT INTO call_data (id, session_id, user_id, timestamp, provider, model, feature,"
        " prompt_template_version, system_id, message_ids, response, stop_reason, input_tokens,"
        " output_tokens, cost_usd, latency_ms, metadata, tags)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "99999999-0000-4000-8000-000000000001",
            "s_old",
            "u_old",
            "2025-06-01T10:00:00.123456Z",
            "anthropic",
            "claude-haiku-4-5",
            "legacy",
            "legacy@v1",
            sid,
            json.dumps([mid, mid]),
            json.dumps({"content": [{"type": "text", "text": "old answer"}]}),
            "end_turn",
            10,
            20,
            0.00011,
            42.5,
            json.dumps({"tier": "free"}),
            json.dumps(["old"]),
        ),
    )
    db.close()

    with SQLiteStore(path) as store:
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
        # New rows go in beside the old one.
        assert store.insert([Call(timestamp=T0, rate_card="card")]) == 1
    # Opening again is a no-op.
    with open_store(path) as store:
        assert store.count(CallFilter()) == 2
        assert store.query("PRAGMA user_version").rows == [(len(MIGRATIONS),)]


# ---------------------------------------------------------------- several processes


def _writer_process(path: str, worker: int, n: int, batch: int, start) -> None:
    from llmlog.record import Call as C
    from llmlog.store.sqlite import SQLiteStore as S

    store = S(path)
    start.wait(timeout=30)
    shared = "Shared system prompt. " * 200
    for i in range(0, n, batch):
        store.insert(
            [
                C(
                    model="m",
                    feature=f"w{worker}",
                    system_prompt=shared,
                    messages=[{"role": "user", "content": f"worker {worker} call {j}"}],
                )
                for j in range(i, min(i + batch, n))
            ]
        )
    store.close()


def _run_processes(target, args_list) -> list[int | None]:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    return [p.exitcode for p in procs]


def test_several_processes_write_to_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    SQLiteStore(path).close()  # created (and in WAL mode) before the writers start
    start = multiprocessing.get_context("spawn").Barrier(4)
    codes = _run_processes(_writer_process, [(path, w, 200, 10, start) for w in range(4)])
    assert codes == [0, 0, 0, 0]
    with SQLiteStore(path) as store:
        assert store.count(CallFilter()) == 800
        for w in range(4):
            assert store.count(CallFilter(feature=f"w{w}")) == 200
        assert store.query("SELECT COUNT(DISTINCT id) FROM calls").rows == [(800,)]
        # One shared system prompt row, one row per distinct message.
        assert store.query("SELECT COUNT(*) FROM content").rows == [(801,)]


def _open_fresh_files(paths: list[str], worker: int, start, errors) -> None:
    from llmlog.record import Call as C
    from llmlog.store.sqlite import SQLiteStore as S

    for path in paths:
        start.wait(timeout=30)
        try:
            store = S(path)
            store.insert([C(model="m", feature=f"w{worker}")])
            store.close()
        except Exception as exc:
            errors.put(f"{path}: {type(exc).__name__}: {exc}")


def test_several_processes_opening_a_new_file_at_once(tmp_path: Path) -> None:
    """BUG: `PRAGMA journal_mode = WAL` in connect() runs into 'database is locked' when
    several processes open the same new file at the same moment (the switch to WAL does not
    wait on the busy handler), so an application's first workers can crash on startup."""
    ctx = multiprocessing.get_context("spawn")
    paths = [str(tmp_path / f"fresh{i}.db") for i in range(40)]
    start, errors = ctx.Barrier(6), ctx.Queue()
    codes = _run_processes(_open_fresh_files, [(paths, w, start, errors) for w in range(6)])
    assert codes == [0] * 6
    found = []
    while True:
        try:
            found.append(errors.get(timeout=0.2))
        except queue.Empty:
            break
    assert found == []
    for path in paths:
        with SQLiteStore(path) as store:
            assert store.count(CallFilter()) == 6


@pytest.mark.parametrize("sql", REFUSED)
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
