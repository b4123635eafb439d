"""One bad record never costs the others: a call nested a thousand levels deep (or one the
spool cannot write), a line of a batch nobody can read, a span with fields of the wrong type.
Each way in refuses that record alone, says which and why, and stores every other; retrying
for ever is only for a store that is down."""

from __future__ import annotations

import enum
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import pytest

from llmlog.capture.proxy import Upstreams
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.remote import RemoteSink
from llmlog.pipeline.writer import Writer
from llmlog.store import open_store
from tests.backends import Backend, ClickHouseBackend, SQLiteBackend
from tests.test_remote import TOKEN as REMOTE_TOKEN
from tests.test_remote import Collector, wait_for
from tests.webui import T0, Running

TOKEN = "faults-s3cret"
BODY = {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"a": value}
    return value


def call(i: int, **changes: Any) -> Call:
    fields: dict[str, Any] = {
        "id": str(uuid.UUID(int=i + 1)),
        "timestamp": T0,
        "model": "claude-sonnet-4-6",
        "feature": "faults",
        "messages": [{"role": "user", "content": f"call {i}"}],
        "metadata": {"i": i},
    }
    return Call(**{**fields, **changes})


def poisoned_run(writer: Writer, poison: Call) -> float:
    """20 calls, the poisoned one, 100 more; how long until all were handled."""
    for i in range(20):
        assert writer.submit(call(i))
    assert writer.submit(poison)
    for i in range(20, 120):
        assert writer.submit(call(i))
    started = time.monotonic()
    assert writer.flush(10), f"not flushed: {writer.stats()}"
    return time.monotonic() - started


def count(url: str) -> int:
    with open_store(url) as store:
        return store.count(CallFilter(feature="faults"))


def assert_isolated(writer: Writer, caplog: pytest.LogCaptureFixture, poison: Call, kind: str) -> None:
    stats = writer.stats()
    assert (stats.recorded, stats.failed, stats.dropped, stats.store_errors) == (120, 1, 0, 0)
    assert stats.reasons == {kind: 1}
    said = [r.getMessage() for r in caplog.records if poison.id in r.getMessage()]
    assert len(said) == 1 and "cannot be stored" in said[0], said


# ---------------------------------------------------------------- the writer, each store


def test_a_poisoned_call_is_refused_alone_on_sqlite_and_postgres(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer(Settings(db=backend.url, url=None))
    poison = call(1000, metadata=nested(1000))
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        assert poisoned_run(writer, poison) < 5
        assert_isolated(writer, caplog, poison, "too deep")
    writer.close()
    assert count(backend.url) == 120


def test_a_poisoned_call_is_refused_alone_on_clickhouse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = ClickHouseBackend(tmp_path / "ch").url
    writer = Writer(Settings(db=url, url=None))
    poison = call(1000, tools=[{"name": "t", "input_schema": nested(1000)}])
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        assert poisoned_run(writer, poison) < 10
        assert_isolated(writer, caplog, poison, "too deep")
    writer.close()
    assert count(url) == 120


@pytest.mark.parametrize("field", ["metadata", "tools", "messages"])
def test_every_json_field_is_checked(tmp_path: Path, field: str) -> None:
    deep = nested(1000)
    poison = call(1000, **{field: deep if field == "metadata" else [deep]})
    writer = Writer(Settings(db=str(tmp_path / "calls.db"), url=None))
    poisoned_run(writer, poison)
    stats = writer.stats()
    writer.close()
    assert (stats.recorded, stats.failed) == (120, 1)


def test_a_conversations_earlier_turns_are_checked_once_and_a_new_unfit_one_still_refused() -> None:
    """The check remembers the messages and tool lists it serialized (the same objects, re-sent
    by each turn of a conversation); what it has not seen is checked as ever."""
    from llmlog.pipeline.intake import _FIT, Unfit, check

    earlier = {"role": "user", "content": "what the first turn said " * 50}
    tools = [{"name": "t", "input_schema": {"type": "object"}}]
    check(call(0, messages=[earlier], tools=tools))
    assert _FIT.known(earlier) and _FIT.known(tools)
    check(call(1, messages=[earlier, {"role": "assistant", "content": "ok"}], tools=tools))
    for field, value in (("messages", [earlier, nested(300)]), ("tools", [*tools, nested(300)])):
        with pytest.raises(Unfit, match=f"{field}: nested too deeply"):
            check(call(2, **{"messages": [earlier], "tools": tools, field: value}))
    # What orjson refuses but the stores' fallback writes (a key that is not text) passes, unremembered.
    odd = {"role": "user", "content": {1: "one"}}
    check(call(3, messages=[earlier, odd], tools=tools))
    assert not _FIT.known(odd)


@pytest.mark.parametrize("kind", ["sqlite", "clickhouse"])
def test_a_store_refuses_a_deep_call_as_data_not_as_being_down(tmp_path: Path, kind: str) -> None:
    """The writer's backstop, for what reaches a store unchecked: what the store raises for
    a call nested too deeply to serialize is one of its data errors (that call is refused,
    the batch is stored one by one), not an outage retried for ever; nothing of the batch is
    half stored."""
    backend = SQLiteBackend(tmp_path / "s.db") if kind == "sqlite" else ClickHouseBackend(tmp_path / "ch")
    with backend.open() as store:
        with pytest.raises(store.data_errors):
            store.insert([call(0), call(1, metadata=nested(1000))])
        assert store.count(CallFilter()) == 0


def test_postgres_refuses_a_deep_call_as_data(pg_url: str) -> None:
    with open_store(pg_url) as store:
        with pytest.raises(store.data_errors):
            store.insert([call(0), call(1, metadata=nested(1000))])
        assert store.count(CallFilter()) == 0


def test_the_spool_refuses_what_it_cannot_write_as_data(tmp_path: Path) -> None:
    sink = RemoteSink("http://127.0.0.1:9", None, str(tmp_path / "spool"), 2**20, 0.1)
    try:
        with pytest.raises(sink.data_errors):
            sink.insert([call(0), call(1, metadata=nested(300))])
        assert sink.spool.waiting() == 0
        # What orjson does not write but the collector reads (a key that is not text, a lone
        # surrogate, a 70-bit integer) is spooled all the same.
        sink.insert([call(2, metadata={1: "\ud800", "big": 2**70})])
        assert sink.spool.waiting() == 1
    finally:
        sink.close()


# ---------------------------------------------------------------- remote mode


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(str(tmp_path / "collected.db")).start()
    yield c
    c.stop()


def test_remote_mode_refuses_a_call_the_spool_cannot_write(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """255 levels: stored locally through `json`, but never written to the spool by orjson;
    refused on the app's side, alone, and the other 120 reach the collector."""
    spool = str(tmp_path / "spool")
    writer = Writer(
        Settings(db=str(tmp_path / "unused.db"), url=collector.url, token=REMOTE_TOKEN, spool=spool)
    )
    poison = call(1000, metadata=nested(300))
    try:
        with caplog.at_level(logging.WARNING, logger="llmlog"):
            assert poisoned_run(writer, poison) < 5
            assert_isolated(writer, caplog, poison, "too deep")
        wait_for(lambda: writer.stats().shipped == 120, timeout=15)
    finally:
        writer.close(5)
    assert count(collector.db) == 120


# ---------------------------------------------------------------- the proxy of `llmlog serve`


def test_a_poisoned_request_through_the_proxy_does_not_stop_recording(
    tmp_path: Path, fake: FakeProvider
) -> None:
    fake.reset()
    backend = SQLiteBackend(tmp_path / "proxy.db")
    with Running(backend, upstreams=Upstreams(anthropic=fake.url, openai=fake.url)) as p:
        sdk = anthropic.Anthropic(api_key="sk-ant-x", base_url=p.base + "/anthropic", max_retries=0)

        def ask(i: int) -> None:
            sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=1, messages=[{"role": "user", "content": f"q{i}"}]
            )

        for i in range(20):
            ask(i)
        # Anyone who can reach the proxy can send this: a tool schema 600 levels deep.
        body = {**BODY, "messages": [{"role": "user", "content": "poison"}]}
        body["tools"] = [{"name": "t", "input_schema": nested(600)}]
        headers = {"Content-Type": "application/json", "x-api-key": "k"}
        httpx.post(p.base + "/anthropic/v1/messages", content=json.dumps(body), headers=headers, timeout=30)
        # Deeper than any JSON parser here reads (the fake provider behind fails on it too):
        # not JSON to the recorder, so the call is kept with what it is known by, its error.
        unreadable = json.dumps(BODY)[:-1] + ', "metadata": ' + '{"a":' * 3000 + "1" + "}" * 3000 + "}"
        httpx.post(p.base + "/anthropic/v1/messages", content=unreadable, headers=headers, timeout=30)
        for i in range(20, 120):
            ask(i)
        deadline = time.monotonic() + 10
        while p.store.count(CallFilter()) < 121:
            assert time.monotonic() < deadline, f"{p.store.count(CallFilter())} of 121 calls recorded"
            time.sleep(0.02)
        time.sleep(0.2)
        stored = list(p.store.iter_calls(CallFilter()))
        assert len(stored) == 121
        assert not any((m.get("content") == "poison") for c in stored for m in c.messages or [])
        assert len([c for c in stored if c.messages is None and c.error]) == 1


# ---------------------------------------------------------------- POST /v1/calls


def record(i: int, **more: object) -> dict[str, object]:
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "timestamp": f"2026-11-30T12:{i % 60:02d}:00Z",
        "model": "claude-sonnet-4-5",
        "feature": "faults",
        "messages": [{"role": "user", "content": f"question {i}"}],
        **more,
    }


@pytest.fixture
def collector_web(backend: Backend) -> Iterator[Running]:
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


def post_calls(c: Running, body: bytes, content_type: str = "application/x-ndjson") -> httpx.Response:
    return httpx.post(c.base + "/v1/calls", content=body, headers={**AUTH, "Content-Type": content_type})


def ndjson(lines: list[str]) -> bytes:
    return "\n".join(lines).encode()


def test_a_line_nested_too_deeply_is_rejected_alone(collector_web: Running) -> None:
    good = [json.dumps(record(i)) for i in range(121)]
    # Deeper than any parser here reads (written by hand: `json` cannot write it either).
    unreadable = json.dumps(record(20))[:-1] + ', "metadata": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    r = post_calls(collector_web, ndjson([*good[:20], unreadable, *good[21:]]))
    assert r.status_code == 200, r.text
    (bad,) = r.json()["rejected"]
    assert bad["index"] == 20 and "nested too deeply" in bad["reason"]
    assert r.json()["stored"] == 120
    # Readable, but deeper than the stores and the spool write: refused at intake.
    deep = json.dumps(record(500, metadata=nested(600)))
    r = post_calls(collector_web, ndjson([json.dumps(record(i)) for i in range(200, 220)] + [deep]))
    assert r.status_code == 200
    assert r.json()["stored"] == 20
    assert r.json()["rejected"] == [
        {"index": 20, "reason": "metadata: nested too deeply (at most about 250 levels)"}
    ]
    assert collector_web.store.count(CallFilter(feature="faults")) == 140


def test_a_json_array_with_a_nan_is_read_record_by_record(collector_web: Running) -> None:
    items = [json.dumps(record(i)) for i in range(30)]
    items[7] = json.dumps(record(7, metadata={"score": float("nan")}))  # NaN: not strict JSON
    items[12] = json.dumps(record(12, metadata=nested(600)))
    r = post_calls(collector_web, ("[" + ",".join(items) + "]").encode(), "application/json")
    assert r.status_code == 200, r.text
    rejected = {bad["index"] for bad in r.json()["rejected"]}
    assert 12 in rejected and rejected <= {7, 12}  # a NaN figure may be refused; nothing else is
    assert collector_web.store.count(CallFilter(feature="faults")) == 30 - len(rejected)


# ---------------------------------------------------------------- OTLP JSON

TRACE = "5b8efff798038103d269b633813fc60d"
NOW = time.time_ns()


def span(n: int, **fields: object) -> dict[str, object]:
    return {
        "traceId": TRACE,
        "spanId": f"{n:016x}",
        "name": f"span {n}",
        "startTimeUnixNano": str(NOW),
        "endTimeUnixNano": str(NOW + 1000),
        **fields,
    }


def otlp(c: Running, kind: str, data: object) -> httpx.Response:
    headers = {**AUTH, "Content-Type": "application/json"}
    return httpx.post(f"{c.base}/v1/{kind}", content=json.dumps(data).encode(), headers=headers)


def test_otlp_spans_of_the_wrong_shape_are_rejected_alone(collector_web: Running) -> None:
    spans = [
        span(1),
        span(2, status="broken"),
        span(3, kind=[1]),
        span(4, attributes=7),
        span(5, endTimeUnixNano=str(10**30)),
        span(6, status={"code": 2, "message": "bad"}, kind=3),
    ]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    r = otlp(collector_web, "traces", body)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "4"
    message = partial["errorMessage"]
    for index, said in ((1, "status"), (2, "kind"), (3, "attributes"), (4, "out of range")):
        assert f"#{index}: " in message and said in message.split(f"#{index}: ")[1].split(";")[0]
    assert sorted(s.name for s in collector_web.store.trace(TRACE)) == ["span 1", "span 6"]


def test_an_otlp_call_whose_content_is_too_deep_is_rejected_alone(collector_web: Running) -> None:
    """Content an instrumentation sends as JSON text is read into the call: nested 600
    levels deep, that call (and its span) is refused, not the request (no 503 to retry)."""

    def model_span(n: int, messages: str) -> dict[str, object]:
        attributes = [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.provider.name", "value": {"stringValue": "anthropic"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet-4-6"}},
            {"key": "gen_ai.input.messages", "value": {"stringValue": messages}},
        ]
        return span(n, attributes=attributes)

    ok = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])
    deep = json.dumps([{"role": "user", "parts": [nested(600)]}])
    # Deeper than `json` reads: kept as the text it is, as any attribute that is not JSON.
    unreadable = "[" * 2000 + "]" * 2000
    spans = [model_span(1, ok), model_span(2, deep), model_span(3, ok), model_span(4, unreadable)]
    r = otlp(collector_web, "traces", {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "#1: " in partial["errorMessage"]
    assert "nested too deeply" in partial["errorMessage"]
    assert sorted(s.name for s in collector_web.store.trace(TRACE)) == ["span 1", "span 3", "span 4"]


def test_otlp_log_records_of_the_wrong_shape_are_rejected_alone(collector_web: Running) -> None:
    records = [
        {"traceId": TRACE, "spanId": f"{1:016x}", "eventName": "gen_ai.user.message", "attributes": 7},
        {"traceId": TRACE, "spanId": f"{1:016x}", "eventName": "gen_ai.user.message",
         "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": "hi"}}]}}},
    ]  # fmt: skip
    r = otlp(collector_web, "logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "#0: attributes" in r.json()["partialSuccess"]["errorMessage"]


@pytest.mark.parametrize(
    "body",
    [
        {"resourceSpans": 5},
        {"resourceSpans": [{"scopeSpans": "x"}]},
        {"resourceSpans": [{"resource": {"attributes": 7}, "scopeSpans": []}]},
        {"resourceSpans": ["x"]},
    ],
)
def test_an_otlp_envelope_of_the_wrong_shape_is_a_400(collector_web: Running, body: object) -> None:
    r = otlp(collector_web, "traces", body)
    assert r.status_code in (200, 400), r.text


def test_copy_keeps_going_past_a_call_the_target_cannot_keep(tmp_path: Path) -> None:
    """A store written before records were checked can hold a call nested deeper than any
    way in now takes: `llmlog copy` names it and copies every other call, where it stopped
    with a traceback at that call's page."""
    from click.testing import CliRunner

    from llmlog.cli import cli

    source, target = tmp_path / "old.db", tmp_path / "new.db"
    with open_store(str(source)) as store:  # the store's own insert: no intake check
        calls = [Call(id=f"ok-{i}", timestamp=T0, model="m", metadata={"n": i}) for i in range(30)]
        calls.insert(10, Call(id="deep", timestamp=T0, model="m", metadata=nested(400)))
        assert store.insert(calls) == 31
    result = CliRunner().invoke(cli, ["copy", "--from", str(source), "--to", str(target)])
    assert result.exit_code == 1, result.output
    assert "Copied 30 call(s)" in result.output and "1 could not be kept" in result.output
    assert "deep: metadata: nested too deeply" in result.output
    with open_store(str(target)) as store:
        assert store.count(CallFilter()) == 30 and store.get("deep") is None


def test_a_session_id_sqlite_cannot_bind_is_not_retried_as_an_outage(tmp_path: Path) -> None:
    """A call whose session id is a list (an app's mistake) is stored with the list's text
    as its session id; SQLite, which binds only text and numbers, does not see it, and so
    does not refuse it as a fault of its own that the writer would retry for ever as if the
    store were down, holding up every call behind it."""
    url = str(tmp_path / "calls.db")
    writer = Writer(Settings(db=url, url=None))

    class Feature(str, enum.Enum):  # noqa: UP042 (as apps wrote it before StrEnum): kept as its value
        CHAT = "chat"

    try:
        assert writer.submit(call(0, session_id=["tenant-7", "chat-1"], feature=Feature.CHAT))
        for i in range(1, 6):
            assert writer.submit(call(i))
        assert writer.flush(10), writer.stats()
        stats = writer.stats()
        assert (stats.recorded, stats.failed, stats.store_errors) == (6, 0, 0)
    finally:
        writer.close(1)
    with open_store(url) as store:
        assert store.count(CallFilter()) == 6
        stored = store.get(call(0).id)
        assert stored is not None and stored.session_id == "['tenant-7', 'chat-1']"
        assert stored.feature == "chat"


def test_a_store_path_under_an_unknown_users_home_is_the_path_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLMLOG_DB under `~name` of a user this system does not know is the path as written
    (as `os.path.expanduser` leaves it), relative to the working directory: the writer
    records there, and its thread does not die reading the setting."""
    monkeypatch.chdir(tmp_path)
    writer = Writer(Settings(db="~no-such-user-of-llmlog/calls.db", url=None))
    try:
        assert writer.submit(call(0))
        assert writer.flush(10), writer.stats()
    finally:
        writer.close(1)
    assert count(str(tmp_path / "~no-such-user-of-llmlog" / "calls.db")) == 1
