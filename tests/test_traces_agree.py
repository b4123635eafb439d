"""A trace reads the same on SQLite, PostgreSQL and ClickHouse, whatever order its parts came
in: erasure leaves no span naming the person (OpenInference puts `user.id` and the input on
the root span, not only on the model call's), a trace's feature, user and session are those
of its earliest call, and a span sent again with changes reads in its newest form, in
`trace()` and in its trace's figures alike; the same span sent again changes nothing."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from llmlog.core.config import Settings
from llmlog.core.encryption import Keyring
from llmlog.core.filters import CallFilter, TraceFilter
from llmlog.core.record import Call, Span, SpanEvent, format_timestamp
from llmlog.core.sealed import is_sealed
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.otlp import ingest_spans
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store
from llmlog.store.postgres.trace_schema import m017_trace_values_by_time
from llmlog.store.sqlite import connect as sqlite_connect
from llmlog.store.sqlite.trace_schema import m018_trace_values_by_time
from llmlog.store.trace_rollup import from_scratch_sql
from tests.backends import Backend
from tests.test_encryption import K1
from tests.test_traces_store import assert_same, summarize

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    return every_engine


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def assert_kept_as_from_scratch(store: Store, backend: Backend) -> None:
    """On the engines that keep `traces`: the table is what the stored calls and spans give."""
    if backend.kind == "clickhouse":
        return  # summed as read: there is no table to drift
    kept = store.query("SELECT * FROM traces ORDER BY trace_id", limit=1000)
    scratch = store.query(
        f"SELECT * FROM ({from_scratch_sql(store.dialect)}) AS s ORDER BY trace_id", limit=1000
    )
    assert kept.columns == scratch.columns
    assert kept.rows == scratch.rows


# ---------------------------------------------------------------- erasure


def test_erasure_deletes_the_spans_of_their_traces_and_those_naming_them(
    store: Store, backend: Backend
) -> None:
    """Through the OTLP pipeline: the person's call's trace (root span naming them and
    holding the input, their chat span, a tool span naming no one); a trace where only the
    root span names them (the chat span's call has no user); a span elsewhere with their id
    in an attribute of its own, with a log event kept for it; and someone else's trace."""
    now = datetime.now(UTC).replace(microsecond=0)
    intake = Intake(Settings(user_id_secret=None), Pricer())
    secret = "what does my biopsy say"

    def chat(user: str | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-6", "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
        }  # fmt: skip
        return attributes if user is None else {**attributes, "user.id": user}

    def trace(t: str, user: str, call_user: str | None, said: str = secret) -> list[Span]:
        root = {"openinference.span.kind": "CHAIN", "user.id": user, "input.value": said}
        return [
            Span(t, t[:15] + "a", None, "agent run", "internal", now, now + timedelta(seconds=4),
                 attributes=root, service="agent"),
            Span(t, t[:15] + "b", t[:15] + "a", "chat", "client", now + timedelta(seconds=1),
                 now + timedelta(seconds=2), attributes=chat(call_user), service="agent"),
            Span(t, t[:15] + "c", t[:15] + "a", "tool lookup", "internal", now + timedelta(seconds=3),
                 now + timedelta(seconds=3, milliseconds=200), service="agent"),
        ]  # fmt: skip

    theirs, rooted, other, elsewhere = (uuid.uuid4().hex for _ in range(4))
    assert ingest_spans(store, trace(theirs, "u9", "u9"), intake)[0] == 1
    assert ingest_spans(store, trace(rooted, "u9", None), intake)[0] == 1
    assert ingest_spans(store, trace(other, "u1", "u1", "another question"), intake)[0] == 1
    named = Span(elsewhere, "e" * 16, None, "nightly", "internal", now, now + timedelta(seconds=1),
                 attributes={"app.customer": "u9"})  # fmt: skip
    plain = Span(elsewhere, "f" * 16, "e" * 16, "step", "internal", now, now, attributes={"n": 1})
    assert store.insert_spans([named, plain]) == []
    assert store.insert_span_events([SpanEvent(elsewhere, "e" * 16, "note", {"k": "v"}, {"x": 1})]) == []
    untouched = store.trace_summary(other)
    (rooted_call,) = store.recent(CallFilter(trace_id=rooted), 10)
    assert rooted_call.user_id is None
    assert any(s.attributes.get("user.id") == "u9" for s in store.trace(rooted))  # what is at stake

    erased = store.erase(user_id="u9")
    assert (erased.calls, erased.spans, erased.events) == (1, 5, 1)
    # Nothing stored names them or holds the input their root spans held.
    left = store.traces([theirs, rooted, other, elsewhere])
    text = json.dumps([dataclasses.asdict(s) for s in left], default=str)
    assert '"u9"' not in text and secret not in text
    assert store.trace(theirs) == [] and store.trace_summary(theirs) is None
    assert [s.span_id for s in store.trace(rooted)] == [rooted[:15] + "b", rooted[:15] + "c"]
    assert [s.span_id for s in store.trace(elsewhere)] == ["f" * 16]
    assert store.span_events([(elsewhere, "e" * 16)]) == []
    # What is left of each trace is what its figures say; someone else's is as it was.
    for t, calls in ((rooted, [rooted_call]), (elsewhere, [])):
        got = store.trace_summary(t)
        assert_same(got, summarize(calls, store.trace(t))[t])
        assert got is not None and got.name is None  # its root went
    assert store.trace_summary(other) == untouched and untouched is not None and untouched.user_id == "u1"
    assert {t.trace_id for t in store.list_traces(TraceFilter(), 10)} == {rooted, other, elsewhere}
    assert_kept_as_from_scratch(store, backend)


# ---------------------------------------------------------------- feature, user, session


def test_a_trace_s_values_are_those_of_its_earliest_call(store: Store, backend: Backend) -> None:
    """Whatever order its calls arrive in: the earliest call (by its time) that has a
    feature (a user, a session) gives it; of calls made at once, the smallest value."""
    first, tied, batch = (uuid.uuid4().hex for _ in range(3))
    calls = [
        # Arrive later-made first, one batch each (each a statement of its own).
        Call(timestamp=T0 + timedelta(seconds=9), trace_id=first, feature="b", user_id="u-b",
             session_id="s-b"),
        Call(timestamp=T0 + timedelta(seconds=5), trace_id=first, feature="a", session_id=None),
        Call(timestamp=T0, trace_id=first, session_id="s-a"),  # the earliest, with a session only
        # Made at the same moment: the smallest value, whichever came first.
        Call(timestamp=T0, trace_id=tied, feature="z", user_id="u-z"),
        Call(timestamp=T0, trace_id=tied, feature="m"),
        Call(timestamp=T0, trace_id=tied, user_id="u-c"),
    ]  # fmt: skip
    for c in calls:
        assert store.insert([c]) == 1
    # The same, in one batch later-made first (PostgreSQL: one statement's transition table).
    again = [c.replace(id=str(uuid.uuid4()), trace_id=batch) for c in calls[:3]]
    assert store.insert(again) == 3
    got = {t: store.trace_summary(t) for t in (first, tied, batch)}
    want = {first: ("a", "u-b", "s-a"), tied: ("m", "u-c", None), batch: ("a", "u-b", "s-a")}
    assert {t: (s.feature, s.user_id, s.session_id) for t, s in got.items() if s} == want
    for t, s in got.items():
        assert_same(s, summarize([*calls, *again], [])[t])
    assert {t.trace_id for t in store.list_traces(TraceFilter(feature="a"), 10)} == {first, batch}
    assert store.list_traces(TraceFilter(feature="b"), 10) == []
    assert_kept_as_from_scratch(store, backend)
    # A later call with another value changes nothing; an earlier one takes its place.
    assert store.insert([Call(timestamp=T0 + timedelta(seconds=6), trace_id=first, feature="0")]) == 1
    assert store.insert([Call(timestamp=T0 - timedelta(seconds=1), trace_id=tied, feature="zz")]) == 1
    assert (store.trace_summary(first).feature, store.trace_summary(tied).feature) == ("a", "zz")  # type: ignore[union-attr]
    assert_kept_as_from_scratch(store, backend)


def test_the_migration_gives_the_stored_traces_their_values_by_time(backend: Backend) -> None:
    """A store whose rows took the first call to arrive (before the times were kept): the
    migration gives each trace the values of its earliest call; a trace that lost calls to
    retention keeps its own. Run again, it gives the same."""
    kind = backend.kind
    if kind == "clickhouse":
        pytest.skip("ClickHouse sums a trace as it is read: nothing to migrate")
    before = backend.migrated_before(m018_trace_values_by_time, m017_trace_values_by_time)
    whole, cut = uuid.uuid4().hex, uuid.uuid4().hex
    calls = [
        Call(id="late", timestamp=T0 + timedelta(seconds=9), trace_id=whole, feature="b", user_id="u-b"),
        Call(id="early", timestamp=T0, trace_id=whole, feature="a"),
        Call(id="kept", timestamp=T0 + timedelta(days=1), trace_id=cut, feature="later"),
    ]
    if kind == "postgres":
        from tests.test_store import _partitions_by_hand

        _partitions_by_hand(backend, calls)
    for c in calls:
        backend.sql(
            "INSERT INTO call_data (id, timestamp, feature, user_id, trace_id) VALUES (?, ?, ?, ?, ?)",
            (c.id, format_timestamp(c.timestamp), c.feature, c.user_id, c.trace_id),
        )
    # As the rows were left by triggers that kept the first call to arrive, without times;
    # `cut` counted a call of its own that retention has deleted since.
    backend.sql(
        "UPDATE traces SET feature = 'b', feature_at = NULL, user_at = NULL WHERE trace_id = ?", (whole,)
    )
    backend.sql("UPDATE traces SET feature = 'old', calls = 2, feature_at = NULL WHERE trace_id = ?", (cut,))
    with backend.open() as store:
        assert store.schema_found == before
        a, b = store.trace_summary(whole), store.trace_summary(cut)
        assert a is not None and b is not None
        assert (a.feature, a.user_id, b.feature, b.calls) == ("a", "u-b", "old", 2)
        # From now on the triggers keep the times: an earlier call takes its place in `whole`;
        # `cut` keeps its value, whose call's time is unknown.
        assert store.insert([Call(timestamp=T0 - timedelta(seconds=1), trace_id=whole, feature="0")]) == 1
        assert store.insert([Call(timestamp=T0, trace_id=cut, feature="earlier")]) == 1
        assert (store.trace_summary(whole).feature, store.trace_summary(cut).feature) == ("0", "old")  # type: ignore[union-attr]
        rows = store.query("SELECT * FROM traces ORDER BY trace_id").rows
    # Run again: the same.
    if kind == "sqlite":
        db = sqlite_connect(backend.url)
        with db:
            m018_trace_values_by_time(db)
        db.close()
    else:
        with psycopg.connect(backend.url) as conn, conn.cursor() as cur:
            m017_trace_values_by_time(cur)
    with backend.open() as store:
        assert store.query("SELECT * FROM traces ORDER BY trace_id").rows == rows


# ---------------------------------------------------------------- a span sent again


def test_a_span_sent_again_with_changes_reads_in_its_newest_form(store: Store, backend: Backend) -> None:
    """An exporter sends a span open, then again ended with an error: the trace, its spans
    and its figures say the newest form on every engine; the same form again changes
    nothing; a span twice in one batch is its last form."""
    t = uuid.uuid4().hex
    call = Call(timestamp=T0 + timedelta(seconds=1), trace_id=t, feature="f", cost_usd=0.25, latency_ms=500)
    root = Span(t, "a" * 16, None, "agent run", "internal", T0, None, attributes={"step": 1})
    child = Span(
        t, "b" * 16, "a" * 16, "retrieve", "internal", T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    )
    assert store.insert([call]) == 1
    assert store.insert_spans([root, child]) == []
    opened = store.trace_summary(t)
    assert opened is not None and (opened.failed_spans, opened.ended) == (0, T0 + timedelta(seconds=2))

    ended = dataclasses.replace(
        root, end=T0 + timedelta(seconds=5), status="error", status_message="boom", attributes={"step": 2}
    )
    assert store.insert_spans([ended]) == []
    kept = store.trace(t)
    assert kept[0] == ended and kept[1] == child
    got = store.trace_summary(t)
    assert got is not None
    assert (got.spans, got.failed_spans, got.ended, got.calls, got.feature) == (
        2,
        1,
        T0 + timedelta(seconds=5),
        1,
        "f",
    )
    assert_same(got, summarize([call], kept)[t])
    assert_kept_as_from_scratch(store, backend)

    # The same form again: counted once, nothing written (SQLite: no change; PostgreSQL: the
    # rows' versions stay).
    marks = _write_marks(store, backend, t)
    assert store.insert_spans([ended, child]) == []
    assert _write_marks(store, backend, t) == marks
    assert store.trace_summary(t) == got and store.trace(t) == kept

    # Twice in one batch: the last form, with the call id the first gave it; its trace summed
    # again (a root that turns out to have a parent: the trace's name goes).
    moved = dataclasses.replace(ended, parent_id="f" * 16, name="agent step")
    assert store.insert_spans([dataclasses.replace(child, status="error", call_id=call.id), moved,
                               dataclasses.replace(child, name="retrieve docs")]) == []  # fmt: skip
    kept = store.trace(t)
    assert [(s.name, s.status, s.call_id) for s in kept] == [
        ("agent step", "error", None), ("retrieve docs", "unset", call.id)
    ]  # fmt: skip
    got = store.trace_summary(t)
    assert got is not None and (got.name, got.failed_spans, got.spans) == (None, 1, 2)
    assert_same(got, summarize([call], kept)[t])
    # Sent again without its call id: it keeps it.
    assert store.insert_spans([dataclasses.replace(child, name="retrieve docs")]) == []
    assert store.trace(t)[1].call_id == call.id
    assert_kept_as_from_scratch(store, backend)


def test_the_same_span_sealed_again_is_the_same_form(store: Store, backend: Backend) -> None:
    """Regulated mode: a span with text, sent twice by a process with the key (a retry), is
    sealed to the same form both times (the nonce comes from the text), so the second send
    changes nothing; sent again with other text, it is replaced."""
    store.keyring = Keyring.parse(K1)
    t = uuid.uuid4().hex
    span = Span(t, "a" * 16, None, "chat", "client", T0, T0 + timedelta(seconds=1), "error",
                "the model said no", attributes={"input.value": "a private question"})  # fmt: skip
    assert store.insert_spans([span]) == []
    (kept,) = store.trace(t)
    assert is_sealed(kept.attributes["input.value"]) and is_sealed(kept.status_message)
    marks = _write_marks(store, backend, t)
    assert store.insert_spans([dataclasses.replace(span)]) == []
    assert _write_marks(store, backend, t) == marks and store.trace(t) == [kept]
    changed = dataclasses.replace(span, attributes={"input.value": "another question"}, status="ok")
    assert store.insert_spans([changed]) == []
    (now,) = store.trace(t)
    assert now.status == "ok" and now.attributes["input.value"] != kept.attributes["input.value"]
    assert Keyring.parse(K1).open_span(now).attributes["input.value"] == "another question"
    got = store.trace_summary(t)
    assert got is not None and (got.spans, got.failed_spans) == (1, 0)


def _write_marks(store: Store, backend: Backend, trace_id: str) -> Any:
    """What shows a write to a trace's spans or row: SQLite's count of rows changed on the
    store's connection, PostgreSQL's row versions (xmin); on ClickHouse, where every send is
    a row version of its own, what is read."""
    if backend.kind == "sqlite":
        return store.db.total_changes  # type: ignore[attr-defined]
    if backend.kind == "postgres":
        return backend.sql(
            "SELECT xmin::text FROM spans WHERE trace_id = ? UNION ALL"
            " SELECT xmin::text FROM traces WHERE trace_id = ?",
            (trace_id, trace_id),
        )
    return store.trace(trace_id), store.trace_summary(trace_id)
