"""Ids an app gives that are not text (a number, bytes, a UUID object, an object of its
own): every call and span is still recorded, in the trace and under the user it names, and
the writer never stops, whichever store and however many connections it writes through."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anthropic
import psycopg
import pytest

import llmlog
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.intake import hash_user_id
from llmlog.pipeline.writer import SHARED_FROM, Writer
from llmlog.store import open_store
from tests.backends import Backend
from tests.test_faults import nested
from tests.test_remote import TOKEN as REMOTE_TOKEN
from tests.test_remote import Collector, wait_for

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SECRET = "hash-s3cret"


@pytest.fixture
def sdk(tmp_path: Path, fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    """A wrapped client against the fake provider; llmlog left recording elsewhere after."""
    yield llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))
    llmlog.configure(db=str(tmp_path / "after.db"))


def ask(client: anthropic.Anthropic, text: str = "hi") -> None:
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": text}]
    )


def store_one(tmp_path: Path, call: Call) -> Call:
    """`call` through a writer into a SQLite store of its own, recorded and not refused: as
    it was stored."""
    db = str(tmp_path / "calls.db")
    writer = Writer(Settings(db=db, url=None))
    try:
        assert writer.submit(call)
        assert writer.flush(10)
        stats = writer.stats()
        assert (stats.recorded, stats.failed) == (1, 0), stats
    finally:
        writer.close(1)
    with open_store(db) as store:
        stored = store.get(call.id)
    assert stored is not None
    return stored


class Named(str):
    """A str subclass of an app's whose own `__str__` fails (a lazy or proxied name)."""

    def __str__(self) -> str:
        raise RuntimeError("not now")


def test_a_session_id_whose_text_fails_does_not_stop_the_writer_sharing_a_batch(pg_url: str) -> None:
    """On PostgreSQL a batch of 100 calls or more is shared out between two connections by
    session. A session id that is a subclass of str whose `__str__` raises is kept as its
    value and stored; sharing it out must not end the writer's thread, after which nothing
    the app records is ever stored again (`flush` never returns true)."""
    writer = Writer(Settings(db=pg_url, url=None, flush_interval_s=1.0))
    try:
        assert writer.submit(Call(id="first", timestamp=T0, model="m"))  # the first connection made
        assert writer.flush(15), writer.stats()
        assert writer.submit(Call(id="named", timestamp=T0, model="m", session_id=Named("tenant-7")))
        for i in range(SHARED_FROM):  # one batch, shared out
            assert writer.submit(Call(id=f"call-{i}", timestamp=T0, model="m", session_id=f"s-{i % 7}"))
        assert writer.flush(15), writer.stats()
        for i in range(5):  # and the writer goes on
            assert writer.submit(Call(id=f"after-{i}", timestamp=T0, model="m"))
        assert writer.flush(15), writer.stats()
        stats = writer.stats()
        assert (stats.recorded, stats.failed, stats.dropped) == (SHARED_FROM + 7, 0, 0)
    finally:
        writer.close(1)


def test_a_role_allowed_one_connection_still_has_every_call_stored(pg_url: str) -> None:
    """A role with CONNECTION LIMIT 1 (a managed database's per-app limit, a pooler's pool of
    one) recorded every call through one connection. Under load the writer opens a second
    for a share of the sessions; when the server refuses it, those sessions' calls must not
    wait for ever as if the store were down while the first connection stores the rest:
    here 120 of 200 calls were lost at exit."""
    role = f"one_{uuid.uuid4().hex[:10]}"
    admin_url = pg_url.split("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        conn.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    parts = urlsplit(admin_url)
    where = parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}")
    url = f"{urlunsplit(where)}?options=-csearch_path%3D{role}"
    try:
        open_store(url).close()
        writer = Writer(Settings(db=url, url=None, flush_interval_s=1.0))
        try:
            # Two rounds of one batch each: the first stored by the first connection (which
            # the role's one is then), the second shared out.
            for i in range(4 * SHARED_FROM):
                assert writer.submit(Call(id=f"call-{i}", timestamp=T0, model="m", session_id=f"s-{i % 10}"))
                if i == 2 * SHARED_FROM - 1:
                    assert writer.flush(15), writer.stats()
            assert writer.flush(15), writer.stats()
            assert writer.stats().recorded == 4 * SHARED_FROM
        finally:
            writer.close(1)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {role} CASCADE")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("user_id", [42, 2**70, 3.5, True], ids=["int", "huge", "float", "bool"])
def test_a_user_id_given_as_a_number_is_hashed_not_lost(
    tmp_path: Path, sdk: anthropic.Anthropic, user_id: Any
) -> None:
    """An app that names its users by their database key (`user_id=user.pk`, an int) and
    sets `user_id_secret` has each call stored with the user id hashed, as it would be
    given as text. It was lost instead ('could not be built': 'int' object has no attribute
    'encode'), though without the secret it is stored."""
    db = str(tmp_path / "calls.db")
    llmlog.configure(db=db, user_id_secret=SECRET)
    with llmlog.context(user_id=user_id):
        ask(sdk)
    assert llmlog.flush(10)
    stats = llmlog.stats()
    assert (stats.recorded, stats.failed) == (1, 0), stats
    with open_store(db) as store:
        (stored,) = store.iter_calls(CallFilter())
        assert stored.user_id == hash_user_id(str(user_id), SECRET)


def test_a_span_user_id_given_as_a_number_is_hashed(tmp_path: Path, sdk: anthropic.Anthropic) -> None:
    """With `user_id_secret` set, a span's `user.id` (an OTLP intValue, or an app's
    `llmlog.span(..., **{"user.id": 42})`) is kept hashed, as the user id of a call is:
    it was kept in clear, so the span showed the user its call hides."""
    db = str(tmp_path / "calls.db")
    llmlog.configure(db=db, user_id_secret=SECRET)
    with llmlog.span("answer", **{"user.id": 42}):
        pass
    assert llmlog.flush(10)
    with open_store(db) as store:
        (span,) = store.iter_spans()
        assert span.attributes.get("user.id") == hash_user_id("42", SECRET)


@pytest.mark.parametrize("trace_id", [uuid.UUID(int=7), b"trace-7", 7], ids=["uuid", "bytes", "int"])
def test_a_call_and_its_span_in_a_trace_the_app_names_without_text(
    tmp_path: Path, sdk: anthropic.Anthropic, trace_id: Any
) -> None:
    """`llmlog.context(trace_id=...)` given a UUID object (or bytes) and a span inside it:
    the call's trace id is kept as text, and so must the span's be, so that the call is in
    its span's trace. With a UUID, SQLite refused the span as a fault of its own and the
    writer retried it for ever as if the store were down (nothing recorded after it); with
    bytes, the span was kept under a BLOB id and the call under "b'trace-7'": two traces."""
    db = str(tmp_path / "calls.db")
    llmlog.configure(db=db, flush_interval_s=0.2)
    with llmlog.context(trace_id=trace_id), llmlog.span("step"):
        ask(sdk)
    assert llmlog.flush(10), llmlog.stats()
    stats = llmlog.stats()
    assert (stats.recorded, stats.spans, stats.store_errors) == (1, 1, 0), stats
    with open_store(db) as store:
        (stored,) = store.iter_calls(CallFilter())
        (span,) = store.iter_spans()
        assert span.trace_id == stored.trace_id and stored.parent_id == span.span_id
        summary = store.trace_summary(stored.trace_id)
        assert summary is not None and (summary.spans, summary.calls) == (1, 1)


def test_a_session_id_past_64_bits_is_stored_as_text_in_sqlite(tmp_path: Path) -> None:
    """An app whose session ids are 128-bit numbers (`uuid4().int`) has its calls stored,
    the id as its digits, as PostgreSQL stores them; SQLite cannot bind an integer past 64
    bits, and the call was refused by the store and lost."""
    stored = store_one(tmp_path, Call(id="big", timestamp=T0, model="m", session_id=2**100))  # type: ignore[arg-type]
    assert stored.session_id == str(2**100)


@pytest.mark.parametrize("session_id", [7, 3.5, True], ids=["int", "float", "bool"])
def test_a_session_id_given_as_a_number_reaches_the_collector(
    tmp_path: Path, fake: FakeProvider, session_id: Any
) -> None:
    """An app recording to a collector (LLMLOG_URL) with `llmlog.context(session_id=7)` has
    its call stored there, as it is stored in a local store ('7'), and as a session id given
    as a list is: the number was shipped as a number, and the collector refused the call
    ('session_id: expected a string, got int')."""
    collector = Collector(str(tmp_path / "collected.db")).start()
    try:
        llmlog.configure(url=collector.url, token=REMOTE_TOKEN, spool=str(tmp_path / "spool"))
        sdk = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))
        with llmlog.context(session_id=session_id):
            ask(sdk)
        assert llmlog.flush(10)
        wait_for(lambda: llmlog.stats().shipped + llmlog.stats().refused == 1)
        assert (llmlog.stats().shipped, llmlog.stats().refused) == (1, 0), llmlog.stats()
        with open_store(collector.db) as store:
            (stored,) = store.iter_calls(CallFilter())
            assert stored.session_id == str(session_id)
    finally:
        llmlog.configure(db=str(tmp_path / "after.db"))
        collector.stop()


def test_a_system_prompt_that_is_not_text_is_stored_as_its_text(tmp_path: Path) -> None:
    """A call built by hand whose system prompt is a list of strings is stored with its
    text, as any text column holding something else is (`as_text`): the prompt version was
    looked up from it first ('list' object has no attribute 'encode'), and the call was lost
    as 'could not be built'."""
    stored = store_one(tmp_path, Call(id="listed", timestamp=T0, model="m", system_prompt=["Be", "brief."]))  # type: ignore[arg-type]
    assert stored.system_prompt == str(["Be", "brief."])


class Opaque:
    """An id of an app's own that has no text: its `__str__` fails."""

    def __str__(self) -> str:
        raise RuntimeError("not now")


def test_a_call_whose_id_has_no_text_is_refused_by_name_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A call the app made itself with an id that has no text is refused alone, and the log
    says which: the message naming it must not fail as the id's own text did (a logging
    error on stderr instead of the line that says a call was lost)."""
    writer = Writer(Settings(db=str(tmp_path / "calls.db"), url=None))
    try:
        with caplog.at_level(logging.ERROR, logger="llmlog"):
            assert writer.submit(Call(id=Opaque(), timestamp=T0, model="m"))  # type: ignore[arg-type]
            assert writer.submit(Call(id="kept", timestamp=T0, model="m"))
            assert writer.flush(10)
        stats = writer.stats()
        assert (stats.recorded, stats.failed) == (1, 1), stats
    finally:
        writer.close(1)
    said = [record.getMessage() for record in caplog.records]
    assert any("<Opaque>" in line and "cannot be stored" in line for line in said), said


def test_a_refused_call_whose_id_holds_a_lone_surrogate_is_named_in_the_apps_log_file(
    backend: Backend, tmp_path: Path
) -> None:
    """An id is text Python can hold and a log file cannot: a lone surrogate (text read from
    bad UTF-16). A call refused with such an id is named in the app's own log, a file handler
    writing UTF-8 as `logging.FileHandler` does by default, not replaced by a logging error
    on stderr: the line that says a call was lost is the one that must get through."""
    log_file = tmp_path / "app.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    logger = logging.getLogger("llmlog")
    logger.addHandler(handler)
    # This file alone: the test runner's own capture holds the raw text no more than the file could.
    propagate, logger.propagate = logger.propagate, False
    writer = Writer(Settings(db=backend.url, url=None))
    try:
        assert writer.submit(Call(id="turn-\ud800", timestamp=T0, model="m", metadata=nested(1000)))
        assert writer.submit(Call(id="kept", timestamp=T0, model="m"))
        assert writer.flush(10)
        stats = writer.stats()
        assert (stats.recorded, stats.failed, stats.reasons) == (1, 1, {"too deep": 1}), stats
    finally:
        writer.close(1)
        logger.removeHandler(handler)
        logger.propagate = propagate
        handler.close()
    said = log_file.read_text(encoding="utf-8")
    assert "turn-" in said and "cannot be stored" in said, said
