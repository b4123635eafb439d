"""Where a call sits in its trace, as its page says (`llmlog.analysis.traces.call_in_trace`),
read from the call's own spans and those above them, on every store: the same path as the
trace's whole tree gives it, whatever the trace's shape (spans whose parent never arrived,
parents in a circle, a call with two spans); and for a call in a trace of 100,000 spans, a
handful of spans read along indexes, never the trace."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import psycopg
import pytest

from llmlog.analysis import traces
from llmlog.core.record import Call, Span
from llmlog.store import Store
from tests.backends import Backend
from tests.webui import T0, Running, make_call


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    return every_engine


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def _id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def hostile_traces(n: int, seed: int) -> tuple[list[Call], list[Span]]:
    """`n` traces of every shape a tree must place: nested spans, spans whose parent never
    arrived, a span its own parent, parents in a circle with branches under it, spans and
    calls starting at one moment, calls with a span of their own (some two, one inside the
    other or apart) and calls made inside a span (under a circle, under a lost parent, under
    none)."""
    rng = random.Random(seed)
    calls: list[Call] = []
    spans: list[Span] = []
    for k in range(n):
        trace = uuid.UUID(int=rng.getrandbits(128)).hex
        ids = [_id(rng) for _ in range(rng.randint(3, 14))]
        begin = T0 + timedelta(minutes=k)
        for i, span_id in enumerate(ids):
            roll = rng.random()
            if i == 0 or roll < 0.08:
                parent = None
            elif roll < 0.16:
                parent = _id(rng)  # never arrives
            elif roll < 0.2:
                parent = span_id  # its own parent
            elif roll < 0.35:
                parent = rng.choice(ids)  # anywhere: circles come of it
            else:
                parent = rng.choice(ids[:i])
            at = begin + timedelta(milliseconds=rng.choice([0, 5, rng.randint(0, 900)]))
            name = rng.choice(["step", "tool", "plan", f"s{i}"])
            spans.append(Span(trace, span_id, parent, name, "internal", at, at + timedelta(milliseconds=50)))
        mine = [s for s in spans if s.trace_id == trace]
        for j in range(rng.randint(1, 4)):
            at = begin + timedelta(milliseconds=rng.choice([0, 5, rng.randint(0, 900)]))
            call = make_call(1000 * k + j, timestamp=at, trace_id=trace, parent_id=None)
            roll = rng.random()
            if roll < 0.4:  # an OTLP call: one span of its own, or two
                for _ in range(rng.choice([1, 1, 2])):
                    parent = rng.choice([*mine, None])
                    span = Span(trace, _id(rng), parent.span_id if parent else None, "chat", "client",
                                at, at + timedelta(milliseconds=20), call_id=call.id)  # fmt: skip
                    spans.append(span)
                    mine.append(span)
            elif roll < 0.9:
                call = call.replace(parent_id=rng.choice(mine).span_id)
            elif roll < 0.95:
                call = call.replace(parent_id=_id(rng))
            calls.append(call)
    return calls, spans


def _shown(it: traces.InTrace | None) -> object:
    assert it is not None
    return (
        it.summary.trace_id,
        [(n.name, n.span.span_id if n.span else None, n.call_id) for n in it.path],
        it.offset_ms,
    )


def test_a_call_sits_where_the_whole_tree_puts_it(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, spans = hostile_traces(60, seed=11)
    store.insert(calls)
    assert store.insert_spans(spans) == []
    expected = {}
    for call in calls:
        # What the call page showed when it read the whole trace: its node's path in the tree.
        assert call.trace_id is not None
        tree = traces.build(call.trace_id, store.trace(call.trace_id), [call])
        summary = store.trace_summary(call.trace_id)
        assert tree is not None and summary is not None
        path = tree.path_to(call.id)
        expected[call.id] = (
            call.trace_id,
            [(n.name, n.span.span_id if n.span else None, n.call_id) for n in path],
            (path[-1].start - summary.started).total_seconds() * 1000,
        )
    monkeypatch.setattr(store, "traces", lambda ids: pytest.fail("the whole trace was read"))
    for call in calls:
        assert _shown(traces.call_in_trace(store, call)) == expected[call.id], call.id


# ---------------------------------------------------------------- a trace of 100,000 spans

BIG = 100_000
STEPS = 1000  # the root's children; every other span is under one of them


def _bulk_trace(backend: Backend, trace: str) -> None:
    """A trace of `BIG` spans in one statement: a root, `STEPS` steps under it, the rest
    under the steps (span i's id is i in hex, starting i ms after T0)."""
    parent = f"CASE WHEN i = 0 THEN NULL WHEN i <= {STEPS} THEN {{id0}} ELSE {{idp}} END"
    step = f"1 + i % {STEPS}"  # the step a span is under; `%` is a placeholder to the drivers but SQLite's
    if backend.kind == "sqlite":
        ident = "printf('%016x', {})"
        start = "printf('2026-03-01T12:%02d:%02d.%06dZ', i / 60000, (i / 1000) % 60, (i % 1000) * 1000)"
        sql = (
            f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {BIG - 1})"
            " INSERT INTO spans (trace_id, span_id, parent_id, name, kind, start_time, end_time, status,"
            " attributes, events) SELECT ?, {idi}, {parent}, 'step ' || i, 'internal', {start}, {start},"
            " 'ok', '{{}}', '[]' FROM n"
        )
    elif backend.kind == "postgres":
        ident = "lpad(to_hex({}), 16, '0')"
        step = f"1 + mod(i, {STEPS})"
        start = "timestamptz '2026-03-01 12:00:00+00' + i * interval '1 millisecond'"
        sql = (
            "INSERT INTO spans (trace_id, span_id, parent_id, name, kind, start_time, end_time, status,"
            " attributes, events) SELECT ?, {idi}, {parent}, 'step ' || i, 'internal', {start}, {start},"
            f" 'ok', '{{{{}}}}', '[]' FROM generate_series(0, {BIG - 1}) AS i"
        )
    else:
        ident = "leftPad(lower(hex(toUInt64({}))), 16, '0')"
        step = f"1 + modulo(i, {STEPS})"
        start = "toDateTime64('2026-03-01 12:00:00', 6, 'UTC') + toIntervalMillisecond(i)"
        sql = (
            "INSERT INTO spans (trace_id, span_id, parent_id, name, kind, start_time, end_time, status,"
            " attributes, events, version) SELECT ?, {idi}, {parent}, concat('step ', toString(i)),"
            " 'internal', {start}, {start}, 'ok', '{{}}', '[]', 1"
            f" FROM (SELECT number AS i FROM numbers({BIG}))"
        )
    parent = parent.format(id0=ident.format("0"), idp=ident.format(step))
    backend.sql(sql.format(idi=ident.format("i"), parent=parent, start=start), [trace])


def test_a_call_in_a_trace_of_100000_spans_reads_a_handful(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = "ab" * 16
    step = f"{7:016x}"  # "step 7", under the root
    at = T0 + timedelta(seconds=1)
    plan = Span(trace, "f" * 16, step, "plan", "internal", at, at + timedelta(seconds=2))
    otlp = make_call(1, trace_id=trace, parent_id=plan.span_id, timestamp=at)
    chat = Span(trace, "e" * 16, plan.span_id, "chat gpt-4.1", "client", at, at + timedelta(seconds=1),
                call_id=otlp.id)  # fmt: skip
    wrapped = make_call(2, trace_id=trace, parent_id=plan.span_id, timestamp=at + timedelta(seconds=1))
    with Running(backend) as site:
        _bulk_trace(backend, trace)
        store = site.store
        assert store.insert_spans([plan, chat]) == [] and store.insert([otlp, wrapped]) == 2
        summary = store.trace_summary(trace)
        assert summary is not None and summary.spans == BIG + 2
        # What the page reads: the call's own spans, and the spans above them, a level a read.
        assert store.spans_of_call(trace, otlp.id) == [chat]
        assert store.spans_of_call(trace, wrapped.id) == []
        lineage = store.span_lineage(trace, [chat.span_id], traces.MAX_PATH)
        assert sorted(lineage) == sorted([chat.span_id, plan.span_id, step, f"{0:016x}"])
        assert len(store.span_lineage(trace, [f"{BIG - 1:016x}"], traces.MAX_PATH)) == 3
        assert len(store.spans_by_id(trace, [f"{i:016x}" for i in range(0, BIG, 1000)])) == BIG // 1000

        monkeypatch.setattr(store, "traces", lambda ids: pytest.fail("the whole trace was read"))
        for call, name in ((otlp, "chat gpt-4.1"), (wrapped, wrapped.model)):
            it = traces.call_in_trace(store, call)
            assert it is not None and not it.cut
            assert [n.name for n in it.path] == ["step 0", "step 7", "plan", name]
            page = site.get(f"/calls/{call.id}").text
            assert f'href="/traces/{trace}"' in page and f"{BIG + 2:,} spans, 2 calls over" in page
            assert f"step 0 › step 7 › plan › <b>{name}</b> (this call)" in page


def test_a_path_deeper_than_the_page_reads_is_cut_and_says_so(store: Store) -> None:
    trace = "cd" * 16
    depth = traces.MAX_PATH + 40
    spans = [
        Span(trace, f"{i + 1:016x}", f"{i:016x}" if i else None, f"level {i}", "internal",
             T0 + timedelta(microseconds=i), T0 + timedelta(seconds=1))
        for i in range(depth)
    ]  # fmt: skip
    call = make_call(3, trace_id=trace, parent_id=spans[-1].span_id, timestamp=T0 + timedelta(seconds=0.5))
    assert store.insert_spans(spans) == [] and store.insert([call]) == 1
    it = traces.call_in_trace(store, call)
    assert it is not None and it.cut
    assert len(it.path) == traces.MAX_PATH + 1  # the spans nearest the call, and the call
    assert it.path[0].name == f"level {depth - traces.MAX_PATH}" and it.path[-1].call_id == call.id
    # One span less deep: the whole path, to its root.
    short = make_call(4, trace_id=trace, parent_id=spans[traces.MAX_PATH - 1].span_id, timestamp=T0)
    store.insert([short])
    it = traces.call_in_trace(store, short)
    assert it is not None and not it.cut and it.path[0].name == "level 0"
    assert len(it.path) == traces.MAX_PATH + 1


def test_a_call_s_spans_are_found_along_an_index(store: Store, backend: Backend) -> None:
    """By the call's id (SQLite and PostgreSQL: `spans_call`; ClickHouse: within its trace,
    the sorting key), not by reading every span of the trace."""
    trace = "ef" * 16
    spans = [Span(trace, f"{i:016x}", None, "s", "internal", T0, T0, call_id=str(i) if i % 50 == 0 else None)
             for i in range(500)]  # fmt: skip
    assert store.insert_spans(spans) == []
    if backend.kind == "clickhouse":
        engine = store.engine  # type: ignore[attr-defined]
        _, rows = engine.rows(
            f"EXPLAIN indexes = 1 SELECT span_id FROM spans WHERE trace_id = '{trace}' AND call_id = '50'"
        )
        assert "PrimaryKey" in "\n".join(str(r[0]) for r in rows)
        return
    if backend.kind == "sqlite":
        plan = "\n".join(
            str(r[-1])
            for r in backend.sql(
                "EXPLAIN QUERY PLAN SELECT span_id FROM spans WHERE call_id = ? AND +trace_id = ?",
                ["50", trace],
            )
        )
    else:
        with psycopg.connect(backend.url, autocommit=True) as conn:
            conn.execute("SET enable_seqscan = off")
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN SELECT span_id FROM spans WHERE call_id = %s AND trace_id = %s", ["50", trace]
                )
            )
    assert "spans_call" in plan, plan
