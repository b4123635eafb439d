"""Hostile and unlucky OTLP input: what must never merge two calls, lose a record or fail
the request."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc

import pytest

from llmlog.capture.genai import span_content
from llmlog.core.filters import CallFilter
from tests.backends import Backend
from tests.otel_programs import TOKEN
from tests.test_otlp import _attrs, _otlp_json, post
from tests.webui import Running

JSON = "application/json"
NOW = time.time_ns()
HOUR_NS = 3600 * 10**9


def _openai_span(
    trace: str, span: str, start: int, question: str, tokens: int, rid: str
) -> dict[str, object]:
    return {
        "traceId": trace, "spanId": span, "name": "chat", "kind": 3,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 400_000_000),
        "attributes": _attrs(gen_ai__operation__name="chat", gen_ai__provider__name="openai",
                             gen_ai__request__model="llama3.2", gen_ai__response__model="llama3.2",
                             gen_ai__response__id=rid, gen_ai__usage__input_tokens=tokens,
                             gen_ai__usage__output_tokens=7,
                             gen_ai__input__messages=json.dumps(
                                 [{"role": "user", "parts": [{"type": "text", "content": question}]}])),
    }  # fmt: skip


def test_two_calls_an_hour_apart_with_the_same_response_id_are_two_calls(backend: Backend) -> None:
    """Ollama's OpenAI-compatible API names its completions `chatcmpl-` and a number below
    999: two different calls of one app soon share a response id."""
    with Running(backend, ingest_token=TOKEN) as c:
        first = _openai_span("a" * 32, "a" * 16, NOW - HOUR_NS, "first question", 11, "chatcmpl-123")
        second = _openai_span("b" * 32, "b" * 16, NOW, "second question", 22, "chatcmpl-123")
        # Apart, the second exported twice; then two more in one request.
        for span in (first, second, second):
            assert post(c, "/v1/traces", json.dumps(_otlp_json([span])).encode(), JSON).status_code == 200
        third = _openai_span("c" * 32, "c" * 16, NOW - 2 * HOUR_NS, "third question", 33, "chatcmpl-7")
        fourth = _openai_span("d" * 32, "d" * 16, NOW - HOUR_NS, "fourth question", 44, "chatcmpl-7")
        assert (
            post(c, "/v1/traces", json.dumps(_otlp_json([third, fourth])).encode(), JSON).status_code == 200
        )
        calls = list(c.store.iter_calls(CallFilter()))
    assert sorted(call.input_tokens or 0 for call in calls) == [11, 22, 33, 44]
    for call in calls:  # each with its own question
        said = json.dumps(call.messages)
        assert sum(q in said for q in ("first", "second", "third", "fourth")) == 1, said


def test_two_calls_a_day_apart_with_the_same_response_id_are_two_calls(backend: Backend) -> None:
    """Further apart than the window in which a later span looks for its call's earlier one:
    the second is a call of its own, not an insert the store ignores; sent again, it is
    still one call."""
    with Running(backend, ingest_token=TOKEN) as c:
        first = _openai_span("a" * 32, "a" * 16, NOW - 24 * HOUR_NS, "first question", 11, "chatcmpl-5")
        second = _openai_span("b" * 32, "b" * 16, NOW, "second question", 22, "chatcmpl-5")
        for span in (first, second, second):
            assert post(c, "/v1/traces", json.dumps(_otlp_json([span])).encode(), JSON).status_code == 200
        calls = list(c.store.iter_calls(CallFilter()))
        spans = backend.sql("SELECT span_id, call_id FROM spans ORDER BY span_id")
    assert sorted(call.input_tokens or 0 for call in calls) == [11, 22]
    by_tokens = {call.input_tokens: call.id for call in calls}
    assert [tuple(row) for row in spans] == [("a" * 16, by_tokens[11]), ("b" * 16, by_tokens[22])]


def _llm_span(n: int, **attrs: str) -> dict[str, object]:
    return {
        "traceId": f"{n:032x}", "spanId": f"{n:016x}", "name": "llm", "kind": 1,
        "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 100_000_000),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in
                       {"openinference.span.kind": "LLM", "llm.provider": "openai",
                        "llm.model_name": "gpt-4.1-mini", **attrs}.items()],
    }  # fmt: skip


def test_a_flattened_key_sent_as_a_value_and_as_a_prefix_fails_no_request(backend: Backend) -> None:
    """`…message` with a value and `…message.role` too (or a value where an object goes):
    the span is read as well as it can be, and the good spans beside it are kept, not the
    whole request answered 503 for the exporter to send again and again."""
    odd = [
        {"llm.input_messages.0.message": "x", "llm.input_messages.0.message.role": "user"},
        {"llm.input_messages.0.message.role": "user", "llm.input_messages.0.message": "x"},
        {"llm.input_messages.0.message": "x", "llm.input_messages.1.message.contents": "abc"},
        {"llm.input_messages.0.message.tool_calls.0": "q", "llm.output_messages.0.message.contents.0": "z"},
        {"llm.tools.0.tool": "t", "llm.tools.1.tool": "u", "llm.tools.1.tool.json_schema": "{}"},
        {"gen_ai.prompt.0.content": "y", "gen_ai.prompt.0.content.z": "w"},
    ]
    with Running(backend, ingest_token=TOKEN) as c:
        for n, attrs in enumerate(odd, start=1):
            good = _llm_span(100 + n, **{"llm.input_messages.0.message.role": "user",
                                         "llm.input_messages.0.message.content": f"good {n}"})  # fmt: skip
            body = json.dumps(_otlp_json([good, _llm_span(n, **attrs)])).encode()
            assert post(c, "/v1/traces", body, JSON).status_code == 200, attrs
        said = [json.dumps(call.messages) for call in c.store.iter_calls(CallFilter())]
    assert sum("good" in m for m in said) == len(odd), said


def test_what_is_remembered_of_span_keys_stays_bounded_in_bytes() -> None:
    """The keys and paths remembered for the spans that keep sending them, and the messages
    shared by them, are bounded in entries: long keys made up by a client (a body may be
    64 MB) must not be kept, or tens of thousands of them hold gigabytes."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(100):
            pad = f"{n:06d}" + "a" * 100_000
            span_content(
                {
                    "openinference.span.kind": "LLM",
                    "llm.provider": "openai",
                    f"llm.input_messages.0.message.{pad}": "x",  # a long path inside a message
                    f"custom.attribute.{pad}": "y",  # a long key of any kind
                }
            )
            del pad
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 2 * 2**20, f"{kept / 2**20:.1f} MB kept of 20 MB of keys sent"


def test_content_of_an_odd_shape_fails_no_request(backend: Backend) -> None:
    """GenAI messages whose parts, message or tool calls are not what the conventions say:
    the call is kept with what can be read, and nothing fails the request. A log event kept
    while its span had not come must not fail every later request that brings the span."""
    trace = "e" * 32
    odd_span = _chat(trace, "e" * 16, gen_ai__input__messages='[{"role": "user", "parts": 5}]',
                     gen_ai__output__messages='[{"role": "assistant", "parts": 5}]')  # fmt: skip
    events = [
        {"traceId": trace, "spanId": "e" * 16, "eventName": "gen_ai.choice",
         "body": {"kvlistValue": {"values": [{"key": "message", "value": {"intValue": "5"}}]}}},
        {"traceId": trace, "spanId": "e" * 16, "eventName": "gen_ai.choice",
         "body": {"kvlistValue": {"values": [{"key": "tool_calls", "value": {"stringValue": "x"}}]}}},
    ]  # fmt: skip
    with Running(backend, ingest_token=TOKEN) as c:
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": events}]}]}).encode()
        assert post(c, "/v1/logs", body, JSON).status_code == 200  # waiting for their span
        good = _chat("f" * 32, "f" * 16, gen_ai__input__messages='[{"role": "user", "parts": []}]')
        body = json.dumps(_otlp_json([odd_span, good])).encode()
        assert post(c, "/v1/traces", body, JSON).status_code == 200
        # The same events again, their span stored now: they join it.
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": events}]}]}).encode()
        assert post(c, "/v1/logs", body, JSON).status_code == 200
        calls = {call.trace_id for call in c.store.iter_calls(CallFilter())}
    assert calls == {trace, "f" * 32}


def _chat(trace: str, span: str, **attrs: object) -> dict[str, object]:
    return {
        "traceId": trace, "spanId": span, "name": "chat", "kind": 3,
        "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 100_000_000),
        "attributes": _attrs(gen_ai__operation__name="chat", gen_ai__provider__name="openai",
                             gen_ai__request__model="gpt-4.1-mini", gen_ai__usage__input_tokens=3,
                             gen_ai__usage__output_tokens=2, **attrs),
    }  # fmt: skip


def test_a_span_whose_call_cannot_be_read_is_refused_alone(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever reading a span's call trips on next (here, our own reader made to fail on one
    span), that span is refused by position with the reason, and the others of the request are
    kept: a 503 would have the exporter send the same batch again for ever."""
    from llmlog.pipeline import otlp as otlp_ingest

    read = otlp_ingest.span_content

    def failing(attributes: dict[str, object]) -> object:
        if attributes.get("app.poison"):
            raise TypeError("an attribute of a shape no reader expected")
        return read(attributes)

    monkeypatch.setattr(otlp_ingest, "span_content", failing)
    poisoned = _chat("2" * 32, "2" * 16, app__poison=True)
    spans = [_chat("1" * 32, "1" * 16), poisoned, _chat("3" * 32, "3" * 16)]
    with Running(backend, ingest_token=TOKEN) as c:
        r = post(c, "/v1/traces", json.dumps(_otlp_json(spans)).encode(), JSON)
        assert r.status_code == 200, r.text
        partial = r.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "1", partial
        assert "#1:" in partial["errorMessage"] and "could not be read" in partial["errorMessage"]
        calls = {call.trace_id for call in c.store.iter_calls(CallFilter())}
        kept = {s.trace_id for t in ("1" * 32, "2" * 32, "3" * 32) for s in c.store.trace(t)}
    assert calls == kept == {"1" * 32, "3" * 32}
