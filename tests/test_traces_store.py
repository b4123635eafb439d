"""Each trace's figures on every store (`Store.list_traces`, `Store.trace_summary`): kept by
the database on SQLite and PostgreSQL (`llmlog.store.trace_rollup`), summed as read on
ClickHouse. Checked against the figures computed here from the calls and spans stored: after
inserts in batches, duplicates, a repricing, retention and erasure; through the OTLP pipeline
and the SDK wrap inside `llmlog.span`; the filters and paging; the migration that fills the
table from what is stored; and the indexes the reads go along."""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import psycopg
import pytest

import llmlog
from llmlog.core.config import Settings
from llmlog.core.filters import BadFilter, CallFilter, TraceFilter, parse_trace_filter
from llmlog.core.record import Call, Span, TraceSummary, format_timestamp
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.otlp import ingest_spans
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store
from llmlog.store.postgres import schema as pg
from llmlog.store.sqlite import connect as sqlite_connect
from llmlog.store.sqlite.schema import MIGRATIONS, m017_traces, migrate
from llmlog.store.trace_rollup import from_scratch_sql, list_sql
from tests.backends import Backend

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
FEATURES = ("support", "search", None)
USERS = ("u1", "u2", "u3", None)
NAMES = ("agent run", "request", "ingest")


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    return every_engine


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def make_traces(n: int = 40, seed: int = 24, begin: datetime = T0) -> tuple[list[Call], list[Span]]:
    """`n` traces of 2–6 calls and 2–5 spans, with what the figures must get right: calls
    without a latency, a cost, tokens, a feature, a user or a session (the first ones of a
    trace, so that "the first that has one" is not the first), errors and failed spans,
    spans still open, traces whose root was not kept, two roots starting at once, model-call
    spans with their calls; and calls in no trace; over the three days from `begin`. Calls
    oldest first, as they are made."""
    rng = random.Random(seed)
    calls: list[Call] = []
    spans: list[Span] = []
    for k in range(n):
        trace = _hex(rng, 128)
        start = begin + timedelta(seconds=rng.randint(0, 3 * 86400), microseconds=rng.randint(0, 999_999))
        ids = [_hex(rng, 64) for _ in range(rng.randint(2, 5))]
        service = rng.choice(["svc-a", "svc-b", None])
        for i, span_id in enumerate(ids):
            parent: str | None = ids[0]
            if i == 0:
                parent = None if k % 7 != 3 else "f" * 16  # a root not kept: none named
            elif i == 1 and k % 11 == 5:
                parent = None  # a second root, starting with the first
            at = start if parent is None else start + timedelta(milliseconds=rng.randint(1, 4000))
            end = (
                None
                if (k % 9 == 0 and i == len(ids) - 1)
                else at + timedelta(microseconds=rng.randint(0, 9_000_000))
            )
            status = "error" if rng.random() < 0.1 else rng.choice(["ok", "unset"])
            name = rng.choice(NAMES) if parent is None else f"step-{i}"
            spans.append(Span(trace, span_id, parent, name, "internal", at, end, status, service=service))
        for i in range(rng.randint(2, 6)):
            late = i > 0 or rng.random() < 0.5  # a trace's first call often lacks them
            call = Call(
                id=str(uuid.UUID(int=rng.getrandbits(128))),
                timestamp=start + timedelta(milliseconds=rng.randint(0, 5000),
                                            microseconds=rng.randint(0, 999)),
                feature=rng.choice(FEATURES) if late else None,
                user_id=rng.choice(USERS) if late else None,
                session_id=rng.choice(["s1", "s2", None]) if late else None,
                model="gpt-4.1", provider="openai",
                input_tokens=rng.choice([None, rng.randint(1, 5000)]),
                output_tokens=rng.choice([None, rng.randint(1, 900)]),
                cost_usd=rng.choice([None, round(rng.random() / 50, 6)]),
                latency_ms=rng.choice([None, rng.randint(10, 9000) + rng.choice([0, 0.5, 0.125])]),
                error={"type": "overloaded_error"} if rng.random() < 0.15 else None,
                trace_id=trace, parent_id=ids[0],
            )  # fmt: skip
            calls.append(call)
            if k % 3 == 0 and i == 0:  # an OTLP model call: a span of its own, naming it
                end = call.timestamp + timedelta(milliseconds=call.latency_ms or 0)
                spans.append(Span(trace, _hex(rng, 64), ids[0], "chat gpt-4.1", "client", call.timestamp, end,
                                  call_id=call.id, service=service))  # fmt: skip
    for i in range(12):  # calls in no trace
        calls.append(
            Call(timestamp=begin + timedelta(hours=i), feature="support", cost_usd=0.01, user_id="u2")
        )
    calls.sort(key=lambda c: (c.timestamp, c.id))
    return calls, spans


def summarize(calls: Iterable[Call], spans: Iterable[Span]) -> dict[str, TraceSummary]:
    """Each trace's figures computed here, as `TraceSummary` says they are."""
    out: dict[str, TraceSummary] = {}

    def of(trace: str, at: datetime) -> TraceSummary:
        return out.setdefault(
            trace, TraceSummary(trace, at, None, None, None, 0, 0, 0, 0, 0, 0, 0.0, None, None, None)
        )

    def later(a: datetime | None, b: datetime | None) -> datetime | None:
        return b if a is None or (b is not None and b > a) else a

    calls = list(calls)
    for c in sorted(calls, key=lambda c: (c.timestamp, c.id)):
        if c.trace_id is None:
            continue
        t = of(c.trace_id, c.timestamp)
        t.started = min(t.started, c.timestamp)
        t.ended = later(t.ended, c.timestamp + timedelta(milliseconds=c.latency_ms or 0))
        t.calls += 1
        t.errors += c.error is not None
        t.input_tokens += c.input_tokens or 0
        t.output_tokens += c.output_tokens or 0
        t.cost_usd += c.cost_usd or 0.0
    # Each value of the earliest call that has one; of calls made at once, the smallest.
    for name in ("feature", "user_id", "session_id"):
        firsts: dict[str, tuple[datetime, str]] = {}
        for c in calls:
            value = getattr(c, name)
            if c.trace_id is not None and value is not None:
                firsts[c.trace_id] = min(firsts.get(c.trace_id, (c.timestamp, value)), (c.timestamp, value))
        for trace, (_, value) in firsts.items():
            setattr(out[trace], name, value)
    roots: dict[str, Span] = {}
    for s in spans:
        t = of(s.trace_id, s.start)
        t.started = min(t.started, s.start)
        t.ended = later(t.ended, s.end)
        t.spans += 1
        t.failed_spans += s.status == "error"
        root = roots.get(s.trace_id)
        if s.parent_id is None and (root is None or (s.start, s.span_id) < (root.start, root.span_id)):
            roots[s.trace_id] = s
            t.name, t.service = s.name, s.service
    return out


def stored_figures(store: Store) -> dict[str, TraceSummary]:
    """The figures computed here from what the store holds now."""
    calls = [c for c in store.iter_calls(CallFilter()) if c.trace_id is not None]
    traces = {c.trace_id for c in calls if c.trace_id} | {
        t.trace_id for t in store.list_traces(TraceFilter(), 10**6)
    }
    return summarize(calls, store.traces(sorted(traces)))


def assert_same(got: TraceSummary | None, expected: TraceSummary) -> None:
    assert got is not None, expected.trace_id
    assert dataclasses.replace(got, cost_usd=0.0) == dataclasses.replace(expected, cost_usd=0.0)
    assert got.cost_usd == pytest.approx(expected.cost_usd, rel=1e-9, abs=1e-12)
    assert isinstance(got.cost_usd, float) and isinstance(got.calls, int)


def assert_all(store: Store, expected: dict[str, TraceSummary]) -> None:
    """Every trace, one by one and as the list gives them (newest started first)."""
    for t in expected.values():
        assert_same(store.trace_summary(t.trace_id), t)
    listed = store.list_traces(TraceFilter(), 10**6)
    assert [t.trace_id for t in listed] == [t.trace_id for t in newest_first(expected.values())]
    for t in listed:
        assert_same(t, expected[t.trace_id])


def newest_first(traces: Iterable[TraceSummary]) -> list[TraceSummary]:
    return sorted(traces, key=lambda t: t.started, reverse=True)


def fill(store: Store, calls: Sequence[Call], spans: Sequence[Span]) -> None:
    for i in range(0, len(calls), 25):  # several batches (PostgreSQL: several statements)
        assert store.insert(calls[i : i + 25]) == len(calls[i : i + 25])
    for i in range(0, len(spans), 40):
        assert store.insert_spans(spans[i : i + 40]) == []


def test_the_figures_are_those_of_the_calls_and_spans(store: Store, backend: Backend) -> None:
    calls, spans = make_traces()
    fill(store, calls, spans)
    expected = summarize(calls, spans)
    # The set is as varied as it claims.
    assert len(expected) == 40
    assert {t.name for t in expected.values()} >= {None, *NAMES}
    assert any(s.end is None for s in spans) and any(s.call_id for s in spans)
    assert any(t.errors for t in expected.values()) and any(t.failed_spans for t in expected.values())
    assert any(t.feature is None for t in expected.values()) and any(t.feature for t in expected.values())
    assert_all(store, expected)
    assert store.trace_summary("0" * 32) is None
    one = next(iter(expected.values()))
    got = store.trace_summary(one.trace_id)
    assert got is not None and got.duration_ms == (one.ended - one.started).total_seconds() * 1000  # type: ignore[operator]
    if backend.kind != "clickhouse":
        # The table, read as anyone reads it, is what the engine computes from scratch.
        kept = store.query("SELECT * FROM traces ORDER BY trace_id", limit=1000)
        scratch = store.query(
            f"SELECT * FROM ({from_scratch_sql(store.dialect)}) AS s ORDER BY trace_id", limit=1000
        )
        assert kept.columns == scratch.columns
        assert [r[:11] + r[12:] for r in kept.rows] == [r[:11] + r[12:] for r in scratch.rows]
        assert [r[11] for r in kept.rows] == pytest.approx([r[11] for r in scratch.rows], rel=1e-9)


def test_a_call_or_span_stored_twice_is_counted_once(store: Store, backend: Backend) -> None:
    calls, spans = make_traces(12)
    fill(store, calls, spans)
    expected = summarize(calls, spans)
    assert store.insert(calls) == 0
    assert store.insert([calls[3], calls[3].replace(cost_usd=9.0), calls[5]]) == 0
    # Sent again, and again with the call it became (the upsert that gives it its call id).
    assert store.insert_spans(spans) == []
    assert store.insert_spans([dataclasses.replace(s, call_id=calls[0].id) for s in spans[:3]]) == []
    # A new span twice in one batch, the second time with the call it became: one span,
    # with its call id.
    late = Span(spans[0].trace_id, "e" * 16, spans[0].span_id, "late", "internal", spans[0].start, None)
    assert store.insert_spans([late, dataclasses.replace(late, call_id=calls[0].id)]) == []
    assert [s.call_id for s in store.trace(late.trace_id) if s.span_id == late.span_id] == [calls[0].id]
    spans = [*spans, late]
    # A new call sent twice in one batch.
    traced = [c for c in calls if c.trace_id]
    twice = traced[7].replace(
        id=str(uuid.UUID(int=77)), timestamp=traced[-1].timestamp + timedelta(seconds=1)
    )
    assert store.insert([twice, twice]) == 1
    if backend.kind == "clickhouse":
        # Rows the engine holds twice until its parts merge: a batch sent twice at once.
        engine = store.engine  # type: ignore[attr-defined]
        engine.command(f"INSERT INTO call_data SELECT * FROM call_data WHERE id = '{calls[4].id}'")
        assert store.count(CallFilter(ids=[calls[4].id])) == 2
    now = summarize([*calls, twice], spans)
    assert_all(store, now)
    assert now[traced[7].trace_id or ""].calls == expected[traced[7].trace_id or ""].calls + 1


def test_a_new_cost_moves_its_trace_cost(store: Store) -> None:
    calls, spans = make_traces(12)
    fill(store, calls, spans)
    traced = [c for c in calls if c.trace_id]
    priced = [c for c in traced if c.cost_usd is not None]
    unpriced = [c for c in traced if c.cost_usd is None]
    changes = {priced[0].id: 0.5, priced[1].id: None, unpriced[0].id: 0.25, priced[2].id: priced[2].cost_usd}
    assert store.update_costs([(i, cost, "card v2") for i, cost in changes.items()]) == 4
    repriced = [c.replace(cost_usd=changes.get(c.id, c.cost_usd)) for c in calls]
    assert_all(store, summarize(repriced, spans))
    # A trace left with no priced call costs 0 exactly, not what rounding leaves over.
    trace = priced[3].trace_id
    mine = [c for c in repriced if c.trace_id == trace]
    assert store.update_costs([(c.id, None, None) for c in mine]) == len(mine)
    assert store.trace_summary(trace or "").cost_usd == 0.0  # type: ignore[union-attr]
    assert store.update_costs([(mine[0].id, 0.1, "x"), (mine[-1].id, 0.2, "x")]) == 2
    assert store.trace_summary(trace or "").cost_usd == pytest.approx(0.3, rel=1e-12)  # type: ignore[union-attr]


def _filtered(expected: dict[str, TraceSummary], keep: Any) -> list[str]:
    return [t.trace_id for t in newest_first(expected.values()) if keep(t)]


def recent() -> datetime:
    """Three days before now: traces of the last three days, as a list of the newest reads
    them (ClickHouse looks at the last hours first)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


def test_each_filter(store: Store) -> None:
    begin = recent()
    calls, spans = make_traces(begin=begin)
    fill(store, calls, spans)
    expected = summarize(calls, spans)
    ordered = newest_first(expected.values())
    # Thresholds between two traces' figures: the engines sum and subtract in their own order.
    durations = sorted(t.duration_ms or 0 for t in ordered)
    costs = sorted(t.cost_usd for t in ordered)
    slow, costly = (durations[24] + durations[25]) / 2, (costs[29] + costs[30]) / 2
    middle = ordered[len(ordered) // 2].started
    cases: list[tuple[TraceFilter, Any]] = [
        (TraceFilter(name="agent run"), lambda t: t.name == "agent run"),
        (TraceFilter(feature="support"), lambda t: t.feature == "support"),
        (TraceFilter(user_id="u1"), lambda t: t.user_id == "u1"),
        (TraceFilter(session_id="s2"), lambda t: t.session_id == "s2"),
        (TraceFilter(errors=True), lambda t: t.errors > 0 or t.failed_spans > 0),
        (TraceFilter(min_duration_ms=slow), lambda t: (t.duration_ms or 0) >= slow),
        (TraceFilter(min_cost_usd=costly), lambda t: t.cost_usd >= costly),
        (TraceFilter(since=middle), lambda t: t.started >= middle),
        (TraceFilter(until=middle), lambda t: t.started < middle),
        (TraceFilter(feature="search", errors=True, since=begin), lambda t: t.feature == "search"
         and (t.errors or t.failed_spans)),
    ]  # fmt: skip
    for f, keep in cases:
        want = _filtered(expected, keep)
        assert 0 < len(want) < len(expected), f
        assert [t.trace_id for t in store.list_traces(f, 100)] == want, f
        assert [t.trace_id for t in store.list_traces(f, 3)] == want[:3], f
    # Only the calls' errors, or only the spans'.
    assert any(t.errors and not t.failed_spans for t in ordered)
    assert any(t.failed_spans and not t.errors for t in ordered)
    # A filter no trace passes.
    assert store.list_traces(TraceFilter(name="no such span"), 50) == []
    assert store.list_traces(TraceFilter(min_duration_ms=durations[-1] + 1), 50) == []


def test_paging_with_until_gives_every_trace_once(store: Store) -> None:
    calls, spans = make_traces(begin=recent())
    fill(store, calls, spans)
    expected = summarize(calls, spans)
    for f in (TraceFilter(), TraceFilter(errors=True)):
        seen: list[str] = []
        page = store.list_traces(f, 7)
        while page:
            assert len(page) <= 7
            seen += [t.trace_id for t in page]
            page = store.list_traces(dataclasses.replace(f, until=page[-1].started), 7)
        want = _filtered(expected, lambda t, f=f: not f.errors or t.errors or t.failed_spans)
        assert seen == want


def test_a_long_trace_is_listed_by_when_it_started(store: Store) -> None:
    """A trace that started days ago and still makes calls comes after the traces that
    started since, however recent its calls (ClickHouse finds traces by their recent calls and
    spans first)."""
    now = datetime.now(UTC).replace(microsecond=0)

    def trace(name: str, started: datetime, *calls: datetime) -> tuple[list[Call], Span]:
        t = uuid.uuid4().hex
        root = Span(t, name[0] * 16, None, name, "internal", started, calls[-1] + timedelta(seconds=1))
        return [Call(timestamp=at, trace_id=t, parent_id=root.span_id) for at in calls], root

    a = trace("a", now - timedelta(minutes=30), now - timedelta(minutes=29))
    b = trace("b", now - timedelta(hours=5), now - timedelta(hours=5))
    long = trace("long", now - timedelta(days=13), now - timedelta(days=13), now - timedelta(minutes=10))
    old = trace("old", now - timedelta(days=14), now - timedelta(days=14))
    fill(
        store,
        sorted(a[0] + b[0] + long[0] + old[0], key=lambda c: c.timestamp),
        [a[1], b[1], long[1], old[1]],
    )
    assert [t.name for t in store.list_traces(TraceFilter(), 2)] == ["a", "b"]
    assert [t.name for t in store.list_traces(TraceFilter(), 3)] == ["a", "b", "long"]
    assert [t.name for t in store.list_traces(TraceFilter(until=now - timedelta(hours=1)), 2)] == [
        "b",
        "long",
    ]
    assert [t.name for t in store.list_traces(TraceFilter(since=now - timedelta(days=13, minutes=1)), 9)] == [
        "a", "b", "long"
    ]  # fmt: skip
    got = store.trace_summary(long[1].trace_id)
    assert got is not None and (got.calls, got.started) == (2, now - timedelta(days=13))


def test_erasure_leaves_no_row_naming_the_person(store: Store, backend: Backend) -> None:
    calls, spans = make_traces()
    # A trace of a day retention deletes, its one call by u9, on a session of its own: on
    # SQLite and PostgreSQL its row outlives the call (as `daily` does), naming them.
    old = T0 - timedelta(days=40)
    cold = Call(timestamp=old, trace_id="c" * 32, user_id="u9", session_id="s9", feature="old", cost_usd=0.5)
    cold_root = Span("c" * 32, "d" * 16, None, "nightly", "internal", old, old + timedelta(seconds=3))
    fill(store, [cold, *calls], [cold_root, *spans])
    gone = store.purge(old.date(), ["old"])
    assert gone.calls == 1
    if backend.kind != "clickhouse":
        kept = store.trace_summary("c" * 32)
        assert kept is not None and (kept.calls, kept.user_id, kept.cost_usd) == (1, "u9", 0.5)
    before = stored_figures(store)
    erased = store.erase(user_id="u9")
    assert erased.calls == 0  # its calls went to retention before
    erased = store.erase(user_id="u2")
    assert erased.calls > 0
    erased = store.erase(session_id="s2")
    assert erased.calls > 0
    listed = store.list_traces(TraceFilter(), 10**6)
    assert not [t for t in listed if t.user_id in ("u2", "u9") or t.session_id in ("s2", "s9")]
    for f in (TraceFilter(user_id="u2"), TraceFilter(user_id="u9"), TraceFilter(session_id="s2")):
        assert store.list_traces(f, 50) == []
    # What is left of each trace is what its row says; a trace untouched keeps its figures.
    after = stored_figures(store)
    assert_all(store, after)
    touched = {c.trace_id for c in calls if c.user_id == "u2" or c.session_id == "s2"}
    assert touched and all(after[t] == before[t] for t in before if t not in touched and t != "c" * 32)
    if backend.kind != "clickhouse":
        assert store.query("SELECT count(*) FROM traces WHERE user_id = 'u9' OR user_id = 'u2'").rows == [
            (0,)
        ]


def test_an_otlp_model_call_is_one_call_and_one_span(store: Store) -> None:
    """Through the OTLP pipeline (`ingest_spans`, what the collector runs): a root span, a
    model-call span (its call stored, the span naming it) and a tool span; sent twice."""
    now = datetime.now(UTC).replace(microsecond=0)
    trace = "5b8efff798038103d269b633813fc60c"
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-6", "user.id": "u7", "session.id": "s7",
            "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30}  # fmt: skip

    def spans() -> list[Span]:
        return [
            Span(trace, "a" * 16, None, "agent run", "internal", now, now + timedelta(seconds=4),
                 service="agent"),
            Span(trace, "b" * 16, "a" * 16, "chat", "client", now + timedelta(seconds=1),
                 now + timedelta(seconds=2, milliseconds=500), "error", attributes=chat, service="agent"),
            Span(trace, "c" * 16, "a" * 16, "tool lookup", "internal", now + timedelta(seconds=3),
                 now + timedelta(seconds=3, milliseconds=200), service="agent"),
        ]  # fmt: skip

    intake = Intake(Settings(), Pricer())
    assert ingest_spans(store, spans(), intake)[0] == 1
    assert ingest_spans(store, spans(), intake)[0] == 0  # sent again
    (call,) = store.recent(CallFilter(trace_id=trace), 10)
    kept = store.trace(trace)
    assert [s.call_id for s in kept] == [None, call.id, None]
    got = store.trace_summary(trace)
    assert got is not None
    assert (got.spans, got.calls, got.failed_spans, got.errors) == (3, 1, 1, call.error is not None)
    assert (got.input_tokens, got.output_tokens, got.name, got.service) == (120, 30, "agent run", "agent")
    assert (got.started, got.ended) == (now, now + timedelta(seconds=4))
    assert (got.user_id, got.session_id) == (call.user_id, "s7") and got.user_id
    assert got.cost_usd == pytest.approx(call.cost_usd or 0.0) and got.cost_usd > 0
    assert_same(got, summarize([call], kept)[trace])


def test_a_wrapped_call_inside_a_span_is_counted(
    backend: Backend, fake: FakeProvider, tmp_path: Path
) -> None:
    """The SDK wrap inside `llmlog.span`: the span kept by the writer, the call its child
    with no span of its own."""
    llmlog.configure(db=backend.url)
    fake.reset()
    client = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))
    try:
        with llmlog.context(feature="answer", user_id="u5"), llmlog.span("request") as request:
            for text in ("first", "second"):
                client.messages.create(
                    model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": text}]
                )
        assert llmlog.flush(timeout=10)
    finally:
        llmlog.configure(db=str(tmp_path / "after.db"))  # the writer closes the store
    with backend.open() as store:
        calls = store.recent(CallFilter(trace_id=request.trace_id), 10)
        assert len(calls) == 2 and {c.parent_id for c in calls} == {request.span_id}
        (span,) = store.trace(request.trace_id)
        assert span.call_id is None
        got = store.trace_summary(request.trace_id)
        assert got is not None and (got.spans, got.calls, got.name, got.feature) == (
            1,
            2,
            "request",
            "answer",
        )
        assert got.user_id == calls[0].user_id and got.user_id  # as stored (hashed or not)
        assert_same(got, summarize(calls, [span])[request.trace_id])
        assert store.list_traces(TraceFilter(name="request"), 5) == [got]


# ---------------------------------------------------------------- the filter's names


def test_the_filter_reads_its_names_and_refuses_bad_values() -> None:
    f = parse_trace_filter({"name": "agent run", "feature": "search", "user": "u1", "session": "s1",
                            "status": "error", "min_ms": "250.5", "min_cost": "0.01", "since": "7d",
                            "until": "2026-03-02T00:00:00Z", "other": "not ours"})  # fmt: skip
    assert (f.name, f.feature, f.user_id, f.session_id, f.errors) == ("agent run", "search", "u1", "s1", True)
    assert (f.min_duration_ms, f.min_cost_usd) == (250.5, 0.01)
    assert f.until == datetime(2026, 3, 2, tzinfo=UTC)
    assert f.since is not None and timedelta(days=6) < datetime.now(UTC) - f.since < timedelta(days=8)
    assert parse_trace_filter({}) == TraceFilter()
    assert parse_trace_filter({"status": "", "min_ms": "", "name": ""}) == TraceFilter()
    for params, said in (
        ({"status": "ok"}, "status"),
        ({"min_ms": "slow"}, "min_ms"),
        ({"min_ms": "-1"}, "min_ms"),
        ({"min_cost": "nan"}, "min_cost"),
        ({"min_cost": "inf"}, "min_cost"),
        ({"since": "yesterday"}, "since"),
        ({"until": "0001-01-01T00:00:00+01:00"}, "until"),
    ):
        with pytest.raises(BadFilter, match=f"^{said}: "):
            parse_trace_filter(params)


# ---------------------------------------------------------------- migration and indexes

BEFORE_TRACES = {"sqlite": MIGRATIONS.index(m017_traces), "postgres": pg.MIGRATIONS.index(pg.m016_traces)}


def test_the_migration_fills_the_table_from_what_is_stored(backend: Backend) -> None:
    """A store with calls and spans, at the version before `traces`: its migration sums
    them; from then on the triggers keep it."""
    kind = backend.kind
    if kind == "clickhouse":
        pytest.skip("ClickHouse sums a trace as it is read: nothing to fill")
    calls, spans = make_traces(20)
    if kind == "sqlite":
        db = sqlite_connect(backend.url)
        assert migrate(db, target=BEFORE_TRACES[kind]) == BEFORE_TRACES[kind]
        db.close()
    else:
        with psycopg.connect(backend.url, autocommit=True) as conn:
            assert pg.migrate(conn, target=BEFORE_TRACES[kind]) == BEFORE_TRACES[kind]
        from tests.test_store import _partitions_by_hand

        _partitions_by_hand(backend, calls)
    call_columns = (
        "id", "timestamp", "feature", "user_id", "session_id", "input_tokens", "output_tokens", "cost_usd",
        "latency_ms", "error", "trace_id", "parent_id",
    )  # fmt: skip
    rows = [
        (c.id, format_timestamp(c.timestamp), c.feature, c.user_id, c.session_id, c.input_tokens,
         c.output_tokens, c.cost_usd, c.latency_ms, json.dumps(c.error) if c.error else None, c.trace_id,
         c.parent_id)
        for c in calls
    ]  # fmt: skip
    marks = "(" + ", ".join("?" * len(call_columns)) + ")"
    backend.sql(
        f"INSERT INTO call_data ({', '.join(call_columns)}) VALUES {', '.join([marks] * len(rows))}",
        [v for r in rows for v in r],
    )
    span_rows = [
        (s.trace_id, s.span_id, s.parent_id, s.name, s.kind, format_timestamp(s.start),
         format_timestamp(s.end) if s.end else None, s.status, "{}", "[]", s.service, s.call_id)
        for s in spans
    ]  # fmt: skip
    columns = (
        "trace_id, span_id, parent_id, name, kind, start_time, end_time, status, attributes, events, service,"
        " call_id"
    )
    marks = "(" + ", ".join("?" * 12) + ")"
    backend.sql(
        f"INSERT INTO spans ({columns}) VALUES {', '.join([marks] * len(span_rows))}",
        [v for r in span_rows for v in r],
    )
    with backend.open() as store:
        assert store.schema_found == BEFORE_TRACES[kind]
        assert_all(store, summarize(calls, spans))
        later = [
            c.replace(id=str(uuid.UUID(int=900 + i)), timestamp=c.timestamp + timedelta(days=9))
            for i, c in enumerate(calls[:6])
        ]
        assert store.insert(later) == 6
        assert_all(store, summarize([*calls, *later], spans))


def _plan(backend: Backend, sql: str, params: Sequence[Any]) -> str:
    if backend.kind == "sqlite":
        return "\n".join(str(r[-1]) for r in backend.sql(f"EXPLAIN QUERY PLAN {sql}", params))
    with psycopg.connect(backend.url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a few rows: the index as it is used on many
        return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql.replace('?', '%s')}", params or None))


def test_a_list_and_a_trace_s_calls_are_read_along_indexes(store: Store, backend: Backend) -> None:
    """The common lists (no filter; one filter that is a value) go along an index already in
    `started` order, newest first, with no sort; a trace's calls along an index of trace ids."""
    calls, spans = make_traces(12)
    fill(store, calls, spans)
    trace = calls[5].trace_id or ""
    if backend.kind == "clickhouse":
        engine = store.engine  # type: ignore[attr-defined]
        _, rows = engine.rows(f"EXPLAIN indexes = 1 SELECT id FROM call_data WHERE trace_id = '{trace}'")
        assert "by_trace" in "\n".join(str(r[0]) for r in rows)
        return
    filters = {
        "started": TraceFilter(), "name": TraceFilter(name="request"),
        "feature": TraceFilter(feature="support"),
        "user_id": TraceFilter(user_id="u1"), "session_id": TraceFilter(session_id="s1"),
        "failed": TraceFilter(errors=True),
    }  # fmt: skip
    for index, f in filters.items():
        sql, params = list_sql(store.dialect, f, 50)
        plan = _plan(backend, sql, params)
        assert f"traces_{index}" in plan, plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    where, params = store._where(CallFilter(trace_id=trace))
    plan = _plan(backend, f"SELECT id FROM call_data {where} ORDER BY timestamp DESC LIMIT 10", params)
    assert "call_data_trace" in plan or "trace_id_timestamp_idx" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_cold_rows_outlive_their_calls(store: Store, backend: Backend) -> None:
    """Retention deletes a day's calls and their spans; a trace's row keeps its figures (the
    cold tier), as `daily` does. (ClickHouse sums what is stored: there it goes with them.)"""
    calls, spans = make_traces(12)
    fill(store, calls, spans)
    expected = summarize(calls, spans)
    day = min(c.timestamp for c in calls).date()
    features = sorted({c.feature for c in calls if c.timestamp.date() == day}, key=str)
    gone = store.purge(day, list(features))
    assert gone.calls > 0
    assert store.purge_traces(datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)) > 0
    if backend.kind == "clickhouse":
        assert_all(store, stored_figures(store))
    else:
        assert_all(store, expected)
