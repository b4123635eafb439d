"""Regulated mode holds for spans and span events (OTLP) as for calls: the store itself
seals or refuses what is written clear once `llmlog keys rotate` has run, whoever writes and
whenever they opened it; and rotation seals the spans and events stored clear before, or
under an old key, and deletes their old form, so that old keys can be retired without
losing a span. On SQLite, PostgreSQL and ClickHouse (embedded)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmlog.core.encryption import KeyProblem, Keyring, trace_key_ids
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, Span, SpanEvent
from llmlog.core.sealed import is_sealed
from llmlog.operations.sealing import rotate, set_sensitive_metadata
from llmlog.store import Store
from tests.backends import Backend, ClickHouseBackend, PostgresBackend, SQLiteBackend, stored_bytes
from tests.test_encryption import K1, K2
from tests.test_regulated import llmlog_process

NOW = datetime.now(UTC).replace(microsecond=0)
MARK = "SPAN-TEXT-marker"  # in every text of the spans and events written clear here


@pytest.fixture(params=["sqlite", "postgres", "clickhouse"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "calls.db")
    if request.param == "clickhouse":
        return ClickHouseBackend(tmp_path / "ch")
    return PostgresBackend(request.getfixturevalue("pg_url"))


def clear_span(span_id: str, trace_id: str = "t1", **changes: Any) -> Span:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=None,
        name="chat",
        kind="client",
        start=NOW - timedelta(seconds=1),
        end=NOW,
        status="error",
        status_message=f"{MARK} status {span_id}",
        attributes={
            "gen_ai.request.model": "claude-sonnet-4-6",  # stays clear
            "gen_ai.usage.input_tokens": 7,  # a figure: stays clear
            "app.note": f"{MARK} note {span_id}",
            "gen_ai.request.stop_sequences": [f"{MARK} stop"],
        },
        events=[{"name": "exception", "attributes": {"exception.type": "E", "exception.message": MARK}}],
    )
    for name, value in changes.items():
        setattr(span, name, value)
    return span


def figures_span(span_id: str, trace_id: str = "t1") -> Span:
    """A span without text: nothing to seal."""
    return Span(trace_id, span_id, None, "retrieve", "internal", NOW, NOW, attributes={"n": 3})


def clear_event(span_id: str = "s1", trace_id: str = "t1") -> SpanEvent:
    return SpanEvent(trace_id, span_id, "gen_ai.user.message", {"event.name": "x"}, {"content": MARK})


def figures_event(span_id: str = "s1", trace_id: str = "t1") -> SpanEvent:
    return SpanEvent(trace_id, span_id, "gen_ai.choice", {"event.name": "gen_ai.choice"}, None)


def held(backend: Backend) -> bytes:
    """What the store holds of spans and events, as bytes: the SQLite files (WAL too), or
    every row of the tables (each version of a ClickHouse span)."""
    if backend.kind == "sqlite":
        return stored_bytes(backend.url)
    if backend.kind == "postgres":
        rows = backend.sql(
            "SELECT string_agg(t, '|') FROM (SELECT row_to_json(s)::text AS t FROM spans AS s"
            " UNION ALL SELECT row_to_json(e)::text FROM span_events AS e) AS x"
        )
        return (rows[0][0] or "").encode()
    rows = backend.sql("SELECT * FROM spans") + backend.sql("SELECT * FROM span_events")
    return json.dumps(rows, default=str).encode()


def key_ids(store: Store) -> set[str]:
    """The keys that sealed the stored spans and events ("" for text stored clear)."""
    found: set[str] = set()
    for span in store.iter_spans():
        found |= trace_key_ids(span)
    for _, event in store.iter_span_events():
        found |= trace_key_ids(event)
    return found


def keys_rotate(backend: Backend, keys: str) -> str:
    """`llmlog keys rotate` with LLMLOG_KEY=`keys`: in a process of its own, but on the
    embedded ClickHouse (one process per directory) in this one, as the command does it."""
    if backend.kind != "clickhouse":
        done = llmlog_process(backend.url, "keys", "rotate", key=keys)
        if done.returncode != 0:
            raise KeyProblem(done.stderr)
        return done.stdout
    with backend.open() as store:
        out = rotate(store, Keyring.parse(keys), "admin", settle_s=0)
    return f"Sealed {out.spans} span(s) and {out.span_events} span event(s)"


def test_rotation_seals_spans_stored_clear_and_retires_an_old_key(backend: Backend) -> None:
    with backend.open() as store:  # before regulated mode: stored as they came
        store.insert_spans([clear_span("s1"), clear_span("s2"), figures_span("s3")])
        store.insert_spans([clear_span("s1", call_id="c1")])  # sent again, with its call
        store.insert_span_events([clear_event(), figures_event()])
        assert key_ids(store) == {""}
    assert MARK.encode() in held(backend)  # the search finds what is there

    said = keys_rotate(backend, K1)
    assert "Sealed 2 span(s) and 1 span event(s)" in said, said
    assert MARK.encode() not in held(backend)
    with backend.open() as store:
        assert key_ids(store) == {"k1"}
        k1_forms = [s.attributes["app.note"] for s in store.iter_spans() if s.span_id != "s3"]
        assert len(k1_forms) == 2 and all(is_sealed(v) for v in k1_forms)
        # What does not come from a user stays clear; the call a span became stays known.
        s1 = store.trace("t1")[0]
        assert (s1.span_id, s1.call_id, s1.name, s1.status) == ("s1", "c1", "chat", "error")
        assert s1.attributes["gen_ai.request.model"] == "claude-sonnet-4-6"
        assert s1.attributes["gen_ai.usage.input_tokens"] == 7
        opened = Keyring.parse(K1).open_span(s1)
        assert opened.attributes["app.note"] == f"{MARK} note s1" and opened.status_message.startswith(MARK)
        assert opened.attributes["gen_ai.request.stop_sequences"] == [f"{MARK} stop"]
        assert opened.events[0]["attributes"]["exception.message"] == MARK
        (event,) = [e for _, e in store.iter_span_events() if e.body is not None]
        assert Keyring.parse(K1).open_event(event).body == {"content": MARK}
        # A call whose metadata the store now names sensitive: a rotation would seal it.
        store.insert([Call(id="ward", timestamp=NOW, model="m", metadata={"ward": "B"})])
        set_sensitive_metadata(store, ["ward"])

    # A span sealed with a key the rotation lacks: stopped before any record changed.
    with pytest.raises(KeyProblem, match="k1"):
        keys_rotate(backend, K2)
    with backend.open() as store:
        assert key_ids(store) == {"k1"}
        ward = store.get("ward")
        assert ward is not None and ward.metadata == {"ward": "B"}

    said = keys_rotate(backend, f"{K2},{K1}")
    assert "Sealed 2 span(s) and 1 span event(s)" in said, said
    raw = held(backend)
    assert MARK.encode() not in raw
    assert not any(form.encode() in raw for form in k1_forms)  # the old key's forms are gone
    if backend.kind != "clickhouse":  # `llmlog keys status` says k1 seals nothing any more
        status = llmlog_process(backend.url, "keys", "status").stdout
        assert "k2" in status and "k1" not in status and "clear text)" not in status, status
    with backend.open() as store:
        assert key_ids(store) == {"k2"}
        k2 = Keyring.parse(K2)  # k1 retired: k2 alone opens every span and event
        for span in store.iter_spans():
            opened = k2.open_span(span)
            assert not any(is_sealed(v) for v in opened.attributes.values()), opened
            assert not is_sealed(opened.status_message)
        assert [k2.open_event(e).body for _, e in store.iter_span_events()].count({"content": MARK}) == 1
        # The same event sent again, sealed with the new key, is the one kept already.
        store.keyring = k2
        assert store.insert_span_events([clear_event()]) == []
        assert len(list(store.iter_span_events())) == 2
        assert len(store.trace("t1")) == 3
    assert "Sealed 0 span(s) and 0 span event(s)" in keys_rotate(backend, K2)  # nothing left to do


def test_a_sealed_only_store_seals_or_refuses_each_span_itself(backend: Backend) -> None:
    """A store opened before another rotated the store, without a key: each span or event
    with clear text is refused alone (the rest of its batch kept), an update of spans too;
    with a key, the store seals what it is given clear."""
    with backend.open() as early:
        early.insert_spans([figures_span("s0")])  # open, and taking clear text
        assert not early.sealed_only
        keys_rotate(backend, K1)
        refused = early.insert_spans([clear_span("s1"), figures_span("s2"), clear_span("s3")])
        assert [r.index for r in refused] == [0, 2]
        assert "span s1 of trace t1" in refused[0].reason and "no key is set here" in refused[0].reason
        assert "status message" in refused[0].reason and "attributes" in refused[0].reason
        assert early.sealed_only  # what it read in its own write
        refused = early.insert_span_events([figures_event(), clear_event()])
        assert [r.index for r in refused] == [1] and "body" in refused[0].reason
        assert [r.index for r in early.update_spans([clear_span("s0")])] == [0]
        assert sorted(s.span_id for s in early.iter_spans()) == ["s0", "s2"]
        assert len(list(early.iter_span_events())) == 1

        early.keyring = Keyring.parse(K1)  # as a process with LLMLOG_KEY: the store seals
        assert early.insert_spans([clear_span("s4")]) == []
        assert early.insert_span_events([clear_event("s4")]) == []
        early.keyring = None
        assert key_ids(early) == {"k1"}
    assert MARK.encode() not in held(backend)


@pytest.mark.parametrize("backend", ["clickhouse"], indirect=True)
def test_clickhouse_takes_back_spans_stored_clear_while_the_store_turned_sealed_only(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ClickHouse has no transaction: a write reads the settings before and after. When the
    sealed-only mark lands between the two (here: marked by the store's own method just
    after the first read), what it stored clear is deleted again and refused."""
    with backend.open() as store:
        real = store._settings_now
        reads: list[int] = []

        def marked_meanwhile() -> dict[str, Any]:
            settings = real()
            if not reads:
                store.require_sealed("k1")  # as another process's `keys rotate` would, just then
            reads.append(1)
            return settings

        monkeypatch.setattr(store, "_settings_now", marked_meanwhile)
        refused = store.insert_spans([clear_span("s1"), figures_span("s2")])
        assert [r.index for r in refused] == [0] and "deleted again" in refused[0].reason
        store.set_setting("encryption", None)  # again taking clear text: for the events' turn
        reads.clear()
        refused = store.insert_span_events([clear_event(), figures_event()])
        assert [r.index for r in refused] == [0] and "deleted again" in refused[0].reason
        assert [s.span_id for s in store.iter_spans()] == ["s2"]
        assert len(list(store.iter_span_events())) == 1
    assert MARK.encode() not in held(backend)


def test_a_span_of_a_refused_call_is_refused_with_it(backend: Backend) -> None:
    """OTLP ingestion in a sealed-only store without a key: the model call a span describes
    is refused (its messages are clear), and so is the span; a span without text is kept."""
    from llmlog.core.config import Settings
    from llmlog.pipeline.intake import Intake
    from llmlog.pipeline.otlp import ingest_spans

    chat = figures_span("s1")
    chat.attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                       "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": MARK}  # fmt: skip
    with backend.open() as store:
        store.insert_spans([figures_span("s0")])
        keys_rotate(backend, K1)
        intake = Intake(Settings(db=backend.url, key=None, key_file=None))
        added, refused = ingest_spans(store, [chat, figures_span("s2")], intake)
        assert added == 0 and [r.index for r in refused] == [0]
        assert "its call was not stored" in refused[0].reason
        assert sorted(s.span_id for s in store.iter_spans()) == ["s0", "s2"]
        assert store.count(CallFilter()) == 0
    assert MARK.encode() not in held(backend)


def test_spans_are_read_in_batches_while_they_change(backend: Backend) -> None:
    with backend.open() as store:
        store.insert_spans([figures_span(f"s{i:02d}", trace_id=f"t{i % 3}") for i in range(25)])
        seen = []
        for span in store.iter_spans(batch=4):
            seen.append(span.span_id)
            store.update_spans([span])  # a write between the batches
        assert sorted(seen) == [f"s{i:02d}" for i in range(25)]
        store.insert_span_events([figures_event(f"s{i:02d}") for i in range(5)])
        assert len({k for k, _ in store.iter_span_events(batch=2)}) == 5
