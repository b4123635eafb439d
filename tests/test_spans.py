"""Spans the app makes (`llmlog.span`, `llmlog.trace`): nested through the context, the
wrapped calls inside them their children, kept by the writer as calls are; the app's own
OpenTelemetry trace joined. Real SDKs against the fake provider, a real SQLite store, the
real OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import httpx
import orjson
import pytest

import llmlog
from llmlog.core.filters import CallFilter
from llmlog.core.record import Span
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import open_store
from tests.conftest import Recorder


def _client(fake: FakeProvider) -> anthropic.Anthropic:
    return llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))


def _ask(client: anthropic.Anthropic, text: str) -> None:
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": text}]
    )


def _spans(recorder: Recorder, trace_id: str) -> dict[str, Span]:
    assert llmlog.flush(timeout=10)
    with open_store(recorder.db) as store:
        return {s.name: s for s in store.trace(trace_id)}


def _all_spans(recorder: Recorder, trace_id: str) -> list[Span]:
    assert llmlog.flush(timeout=10)
    with open_store(recorder.db) as store:
        return store.trace(trace_id)


def test_spans_nest_and_the_calls_inside_are_their_children(recorder: Recorder, fake: FakeProvider) -> None:
    client = _client(fake)

    @llmlog.trace
    def format_answer(text: str) -> str:
        return text.upper()

    with llmlog.span("request", route="/ask") as request:
        with llmlog.span("retrieve-context", k=5) as retrieve:
            retrieve.set(found=3)
            retrieve.event("cache-miss", key="q1")
        _ask(client, "first")
        with llmlog.span("tool") as tool:
            tool.ok()
        _ask(client, "second")
        assert format_answer("done") == "DONE"
    assert llmlog.current().trace_id is None  # the block's context is gone with it

    spans = _spans(recorder, request.trace_id)
    assert set(spans) == {"request", "retrieve-context", "tool", "format_answer"}
    root = spans["request"]
    assert root.parent_id is None and root.attributes == {"route": "/ask"}
    for name in ("retrieve-context", "tool", "format_answer"):
        assert spans[name].parent_id == root.span_id, name
        assert spans[name].trace_id == root.trace_id
    assert spans["retrieve-context"].attributes == {"k": 5, "found": 3}
    assert [e["name"] for e in spans["retrieve-context"].events] == ["cache-miss"]
    assert spans["tool"].status == "ok" and root.status == "unset"
    assert root.end is not None and root.start <= spans["tool"].start <= spans["tool"].end <= root.end
    calls = recorder.calls()
    assert len(calls) == 2
    assert {(c.trace_id, c.parent_id) for c in calls} == {(root.trace_id, root.span_id)}


def test_an_exception_leaving_a_span_marks_it_and_goes_on_unchanged(recorder: Recorder) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom, match="no index"), llmlog.span("retrieve") as s:
        raise Boom("no index")
    (kept,) = _spans(recorder, s.trace_id).values()
    assert kept.status == "error" and kept.status_message == "Boom: no index"
    assert kept.events[-1]["name"] == "exception"
    assert kept.events[-1]["attributes"]["exception.message"] == "no index"


def test_threads_follow_a_span_only_when_asked(recorder: Recorder, fake: FakeProvider) -> None:
    client = _client(fake)
    with llmlog.span("request") as s:
        asked = threading.Thread(target=llmlog.propagate(_ask), args=(client, "asked"))
        alone = threading.Thread(target=_ask, args=(client, "alone"))
        asked.start()
        alone.start()
        asked.join()
        alone.join()
    by_text = {c.messages[0]["content"]: c for c in recorder.calls() if c.messages}
    assert (by_text["asked"].trace_id, by_text["asked"].parent_id) == (s.trace_id, s.span_id)
    assert by_text["alone"].trace_id is None


def test_generators_are_timed_whole_and_lend_their_context_only_while_they_run(
    recorder: Recorder, fake: FakeProvider
) -> None:
    client = _client(fake)

    @llmlog.trace(name="stream-answer")
    def chunks() -> Iterator[str]:
        _ask(client, "inside")
        yield "a"
        yield "b"

    with llmlog.span("request") as request:
        got = []
        for chunk in chunks():
            got.append(chunk)
            _ask(client, f"between {chunk}")  # the consumer's, not the generator's
    assert got == ["a", "b"]
    spans = _spans(recorder, request.trace_id)
    stream = spans["stream-answer"]
    assert stream.parent_id == request.span_id and stream.status == "unset"
    parents = {c.messages[0]["content"]: c.parent_id for c in recorder.calls() if c.messages}
    assert parents == {"inside": stream.span_id, "between a": request.span_id, "between b": request.span_id}


async def test_coroutines_tasks_and_async_generators(recorder: Recorder, fake: FakeProvider) -> None:
    client = llmlog.wrap(
        anthropic.AsyncAnthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
    )

    @llmlog.trace
    async def ask(text: str) -> None:
        await client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": text}]
        )

    @llmlog.trace
    async def numbers() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0)
        yield 2

    with llmlog.span("request") as request:
        await asyncio.gather(ask("one"), ask("two"))
        assert [n async for n in numbers()] == [1, 2]
    kept = await asyncio.to_thread(_all_spans, recorder, request.trace_id)
    asks = [s for s in kept if s.name.endswith("ask")]
    assert len(asks) == 2 and all(s.parent_id == request.span_id for s in asks)
    assert any(s.name.endswith("numbers") and s.parent_id == request.span_id for s in kept)
    calls = await asyncio.to_thread(recorder.calls)
    assert sorted(c.parent_id or "" for c in calls) == sorted(s.span_id for s in asks)


def test_the_apps_opentelemetry_trace_is_joined(recorder: Recorder, fake: FakeProvider) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("app")
    client = _client(fake)
    with tracer.start_as_current_span("http-request") as outer:
        context = outer.get_span_context()
        trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        _ask(client, "in the app's span")
        with llmlog.span("retrieve") as s:
            _ask(client, "in ours")
    assert (s.trace_id, s.parent_id) == (trace_id, span_id)
    parents = {c.messages[0]["content"]: (c.trace_id, c.parent_id) for c in recorder.calls() if c.messages}
    assert parents == {"in the app's span": (trace_id, span_id), "in ours": (trace_id, s.span_id)}


def test_span_attributes_are_redacted_as_a_calls_text_is(db_path: str) -> None:
    llmlog.configure(db=db_path, redact=["email"])
    try:
        with llmlog.span("lookup", who="ann@example.com") as s:
            s.event("found", email="bob@example.com")
        assert llmlog.flush(timeout=10)
        with open_store(db_path) as store:
            (kept,) = store.trace(s.trace_id)
        assert "example.com" not in repr(kept.attributes) + repr(kept.events)
        assert llmlog.stats().spans == 1
    finally:
        llmlog.configure(db=db_path)


def test_remote_mode_ships_spans_through_the_spool_to_the_collector(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """Spans go the way calls go in remote mode: the spool, then `POST /v1/spans`; the
    collector keeps them (redacted by its rules) beside the calls made inside them, and a
    span that cannot be read is refused alone, with its reason."""
    from tests.test_remote import TOKEN, Collector, wait_for

    collector = Collector(str(tmp_path / "collected.db")).start()
    try:
        llmlog.configure(url=collector.url, token=TOKEN, spool=str(tmp_path / "spool"))
        client = _client(fake)
        with llmlog.span("request", route="/ask") as s:
            _ask(client, "inside")
        assert llmlog.flush(timeout=10)

        def kept() -> list[Span]:
            with open_store(collector.db) as store:
                return store.trace(s.trace_id)

        wait_for(lambda: kept() and llmlog.stats().shipped == 2)
        (span,) = kept()
        assert (span.name, span.parent_id, span.attributes) == ("request", None, {"route": "/ask"})
        with open_store(collector.db) as store:
            (call,) = store.iter_calls(CallFilter())
        assert (call.trace_id, call.parent_id) == (s.trace_id, s.span_id)

        good = Span(s.trace_id, "0" * 16, s.span_id, "tool", "internal", span.start, span.end).to_dict()
        body = b"\n".join([orjson.dumps(good), b'{"trace_id": "nope"}', b"not json"])
        answer = httpx.post(
            collector.url + "/v1/spans", content=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert answer["received"] == 3 and answer["stored"] == 1
        assert [r["index"] for r in answer["rejected"]] == [1, 2]
        assert "span_id" in answer["rejected"][0]["reason"]
        assert {x.name for x in kept()} == {"request", "tool"}

        # Spans come as spans: one that names a model is not made a call; nesting past what
        # a store writes, or a call id that is no UUID, is refused alone.
        deep = json.loads("[" * 400 + "]" * 400)  # orjson does not write it; json does
        named = {**good, "span_id": "1" * 16, "attributes": {"gen_ai.request.model": "gpt-4o"}}
        lines = [named, {**good, "span_id": "2" * 16, "attributes": {"d": deep}},
                 {**good, "span_id": "3" * 16, "call_id": "'; drop table spans"}]  # fmt: skip
        answer = httpx.post(
            collector.url + "/v1/spans",
            content="\n".join(json.dumps(x) for x in lines).encode(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        assert [r["index"] for r in answer["rejected"]] == [1, 2], answer
        with open_store(collector.db) as store:
            assert len(list(store.iter_calls(CallFilter()))) == 1
            assert [x.call_id for x in store.trace(s.trace_id) if x.span_id == "1" * 16] == [None]
    finally:
        llmlog.configure(db=str(tmp_path / "unused.db"))
        collector.stop()


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_what_the_app_hands_a_span_never_breaks_it(recorder: Recorder) -> None:
    """Objects that cannot be printed, values nested past any sense, a message that is not
    text, an exception that cannot say itself: the app goes on, its exception unchanged,
    and the span is kept with what could be read."""
    looped: list[object] = []
    looped.append(looped)

    class Mute(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    with pytest.raises(Mute), llmlog.span(_Unprintable(), odd=_Unprintable(), loop=looped) as s:  # type: ignore[arg-type]
        s.set(**{"x": {_Unprintable(): 1}})
        s.event(_Unprintable(), v=_Unprintable())  # type: ignore[arg-type]
        s.fail({"not": "text"})  # type: ignore[arg-type]
        raise Mute()
    (kept,) = _all_spans(recorder, s.trace_id)
    assert kept.name == "<_Unprintable>" and kept.attributes["odd"] == "<_Unprintable>"
    assert kept.status == "error" and kept.status_message == "Mute: <Mute>"
    with llmlog.span("after", message=1) as t:
        t.fail({"a": 1})  # type: ignore[arg-type]
    (after,) = _all_spans(recorder, t.trace_id)  # the writer is not stuck on it
    assert after.status_message == "{'a': 1}"


def test_a_generator_keeps_what_it_set_across_its_yields(recorder: Recorder, fake: FakeProvider) -> None:
    client = _client(fake)

    @llmlog.trace
    def steps() -> Iterator[int]:
        with llmlog.context(feature="support"), llmlog.span("inner") as inner:
            yield 1
            _ask(client, "after the yield")
            yield inner.span_id  # type: ignore[misc]

    with llmlog.span("request") as request:
        inner_id = list(steps())[1]
    (call,) = recorder.calls()
    assert call.feature == "support" and call.parent_id == inner_id
    assert {s.name for s in _all_spans(recorder, request.trace_id)} == {"request", "steps", "inner"}


def test_a_span_left_in_another_context_than_it_was_entered_in_is_kept(recorder: Recorder) -> None:
    import contextvars

    def body() -> Iterator[int]:
        with llmlog.span("streamed") as s:
            yield 1
        ids.append(s.trace_id)

    ids: list[str] = []
    it = body()
    contextvars.copy_context().run(next, it)
    with pytest.raises(StopIteration):
        contextvars.copy_context().run(next, it)  # as a server steps a response's generator
    assert [s.name for s in _all_spans(recorder, ids[0])] == ["streamed"]


def test_remote_mode_counts_spans_the_full_spool_cannot_take(tmp_path: Path) -> None:
    llmlog.configure(url="http://127.0.0.1:9", spool=str(tmp_path / "spool"), spool_max_bytes=2000)
    try:
        for i in range(20):
            with llmlog.span("step", padding="x" * 300, i=i):
                pass
        assert llmlog.flush(timeout=10)  # not held up retrying what cannot fit
        assert llmlog.stats().dropped > 0
    finally:
        llmlog.configure(db=str(tmp_path / "unused.db"))


def test_methods_are_traced_whichever_way_the_decorators_stack(recorder: Recorder) -> None:
    class Agent:
        @llmlog.trace
        @staticmethod
        def plan(goal: str) -> str:
            return goal

        @llmlog.trace(name="recall")
        @classmethod
        def memory(cls, key: str) -> str:
            return f"{cls.__name__}:{key}"

        @staticmethod
        @llmlog.trace
        def below(x: int) -> int:
            return x

    with llmlog.span("request") as request:
        assert Agent.plan("ship") == "ship" and Agent().plan("it") == "it"
        assert Agent.memory("k") == "Agent:k" and Agent.below(2) == 2
    names = sorted(s.name for s in _all_spans(recorder, request.trace_id))
    assert names == ["below", "plan", "plan", "recall", "request"]


async def test_a_cancelled_span_is_stopped_not_failed(recorder: Recorder) -> None:
    started = asyncio.Event()

    async def waits() -> None:
        with llmlog.span("waits"):
            started.set()
            await asyncio.sleep(60)

    with llmlog.span("request") as request:
        task = asyncio.create_task(waits())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    spans = {s.name: s for s in await asyncio.to_thread(_all_spans, recorder, request.trace_id)}
    # A client gone or a timeout above: the work stopped; it is not counted as an error.
    assert spans["waits"].status == "unset" and spans["waits"].status_message is None
    assert spans["waits"].events[-1]["name"] == "cancelled"
    assert spans["waits"].events[-1]["attributes"]["exception.type"] == "CancelledError"


def test_a_generator_closed_early_cleans_up_inside_its_span(recorder: Recorder, fake: FakeProvider) -> None:
    client = _client(fake)

    @llmlog.trace
    def rows() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            _ask(client, "cleanup")  # e.g. a last call made as the stream is closed

    @llmlog.trace
    async def arows() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            _ask(client, "async cleanup")

    async def first_of_async() -> None:
        it = arows()
        assert await it.__anext__() == 1
        await it.aclose()

    with llmlog.span("request") as request:
        it = rows()
        assert next(it) == 1
        it.close()
        asyncio.run(first_of_async())
    spans = {s.name: s for s in _all_spans(recorder, request.trace_id)}
    parents = {c.messages[0]["content"]: c.parent_id for c in recorder.calls() if c.messages}
    assert parents == {"cleanup": spans["rows"].span_id, "async cleanup": spans["arows"].span_id}


def test_a_traced_generator_function_is_still_one() -> None:
    # Frameworks tell a generator dependency (FastAPI's `yield`) or a streaming body by
    # this: tracing one must not turn it into a plain function. The price: a call with the
    # wrong arguments raises at the first step, not at the call, as with any wrapper that
    # is itself a generator function.
    import inspect

    @llmlog.trace
    def gen(n: int) -> Iterator[int]:
        yield n

    @llmlog.trace
    async def agen(n: int) -> AsyncIterator[int]:
        yield n

    assert inspect.isgeneratorfunction(gen) and inspect.isasyncgenfunction(agen)


def test_a_span_that_ends_before_it_starts_is_refused() -> None:
    from llmlog.core.record import RecordError

    good = {"trace_id": "a" * 32, "span_id": "b" * 16, "name": "x", "start": "2026-01-01T00:00:01Z"}
    assert Span.from_dict({**good, "end": "2026-01-01T00:00:01Z"}).duration_ms == 0
    with pytest.raises(RecordError, match="end: before start"):
        Span.from_dict({**good, "end": "2026-01-01T00:00:00Z"})
