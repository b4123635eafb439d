"""A span that became a call keeps only what the call does not hold: the prompts, messages,
tool definitions and parameters the instrumentations put in its attributes (and content
events) are stored once, in the call; the span keeps ids, names, figures and the few
structural attributes the trace view and matching read. Pages still show the content."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from llmlog.capture.kept import is_call_attribute, is_content_attribute
from llmlog.core.config import Settings
from llmlog.core.encryption import Keyring, new_key
from llmlog.core.filters import CallFilter
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.intake import Intake
from tests.backends import Backend
from tests.otel_programs import TOKEN, run_program
from tests.webui import Running

SYSTEM = "You are the zanzibar planner."
ASKED = "plan the quixotic refund"
TOOL_DESCRIPTION = "Look up an order by its xylograph number."


@pytest.fixture
def collector(backend: Backend) -> Iterator[Running]:
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)  # PostgreSQL's jsonb: data


def _held(backend: Backend) -> list[tuple[str, str, str | None, str, str]]:
    """The spans as the database holds them: name, call id, attributes and events as text."""
    return [
        (str(name), str(span_id), call_id, _text(attributes), _text(events))
        for name, span_id, call_id, attributes, events in backend.sql(
            "SELECT name, span_id, call_id, attributes, events FROM spans"
        )
    ]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_openinference_call_spans_keep_no_second_copy_of_the_content(
    backend: Backend, collector: Running, fake: FakeProvider, sdk: str
) -> None:
    setup = (
        "from openinference.instrumentation.openai import OpenAIInstrumentor\n"
        "OpenAIInstrumentor().instrument(tracer_provider=tp)"
        if sdk == "openai"
        else "from openinference.instrumentation.anthropic import AnthropicInstrumentor\n"
        "AnthropicInstrumentor().instrument(tracer_provider=tp)"
    )
    if sdk == "openai":
        tool = {"type": "function", "function": {"name": "lookup_order", "description": TOOL_DESCRIPTION,
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}  # fmt: skip
        body = f"""
with tracer.start_as_current_span("agent run") as root:
    openai_client.chat.completions.create(model="gpt-4.1-mini", temperature=0.3, tools=[{tool!r}],
        messages=[{{"role": "system", "content": {SYSTEM!r}}}, {{"role": "user", "content": {ASKED!r}}}])
    print(format(root.get_span_context().trace_id, "032x"))
"""
    else:
        tool = {"name": "lookup_order", "description": TOOL_DESCRIPTION,
                "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}}}  # fmt: skip
        body = f"""
with tracer.start_as_current_span("agent run") as root:
    anthropic_client.messages.create(model="claude-sonnet-4-6", max_tokens=60,
        system={SYSTEM!r}, tools=[{tool!r}], messages=[{{"role": "user", "content": {ASKED!r}}}])
    print(format(root.get_span_context().trace_id, "032x"))
"""
    (trace_id,) = run_program(collector, fake, setup, body, batch=True)
    calls = [c for c in collector.store.recent(CallFilter(), 10) if c.trace_id == trace_id]
    assert calls, "no call"
    call = calls[0]
    # The call holds the content.
    assert call.system_prompt == SYSTEM
    assert ASKED in json.dumps(call.messages) and TOOL_DESCRIPTION in json.dumps(call.tools)
    assert (
        call.response
        and call.params
        and call.params.get("temperature" if sdk == "openai" else "max_tokens")
        == (0.3 if sdk == "openai" else 60)
    )
    held = _held(backend)
    mine = [h for h in held if h[2] == call.id]
    assert mine, held
    for name, _, _, attributes, events in mine:
        # No second copy of the prompt, the messages, the tools or the answer...
        for text in (SYSTEM, ASKED, TOOL_DESCRIPTION, "xylograph", "zanzibar", "quixotic"):
            assert text not in attributes and text not in events, (name, attributes)
        kept = json.loads(attributes)
        assert not [k for k in kept if is_content_attribute(k)], kept
        assert "input.value" not in kept and "output.value" not in kept
        assert not [
            k for k in kept if k.startswith(("llm.input_messages.", "llm.output_messages.", "llm.tools."))
        ]
        # ...nor of what the call's other columns hold (model, usage, finish reason, user…).
        assert not [k for k in kept if is_call_attribute(k)], kept
    # What says what the span is stays.
    oi = next(json.loads(h[3]) for h in mine if json.loads(h[3]).get("openinference.span.kind") == "LLM")
    assert (oi.get("llm.provider") or oi["llm.system"]) == call.provider
    assert call.model and call.input_tokens and call.output_tokens
    # A span that is not a call keeps what it has.
    root = next(h for h in held if h[0] == "agent run")
    assert root[2] is None
    # The pages show the content, from the call; the trace, from the spans.
    page = collector.get(f"/calls/{call.id}").text
    assert (
        SYSTEM in page and ASKED in page and f'href="/traces/{call.trace_id}"' in page and "agent run" in page
    )


NOW = 1_767_000_000_000_000_000
TRACE = "5b8efff798038103d269b633813fc60c"


def _attrs(values: dict[str, object]) -> list[dict[str, object]]:
    def value(v: object) -> dict[str, object]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(x) for x in v]}}
        return {"stringValue": str(v)}

    return [{"key": k, "value": value(v)} for k, v in values.items()]


def test_semconv_and_traceloop_content_attributes_and_events_are_not_kept_twice(
    backend: Backend, collector: Running
) -> None:
    """The GenAI conventions' names (current and deprecated, Traceloop's too) and content
    span events: gone from the call's span, kept by the call; another span's untouched."""
    said = "the zanzibar question"
    answered = "the quixotic answer"
    semconv = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1",
        "gen_ai.request.temperature": 1,
        "gen_ai.response.id": "chatcmpl-77",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "http.response.status_code": 200,
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be zanzibar-terse."}]),
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": said}]}]),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answered}], "finish_reason": "stop"}]
        ),
        "gen_ai.tool.definitions": json.dumps([{"name": "xylograph_lookup", "type": "function"}]),
        "traceloop.entity.input": said,
    }
    traceloop = {
        "gen_ai.system": "Anthropic",
        "gen_ai.request.model": "claude-sonnet-4-6",
        "llm.request.type": "chat",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": said,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": answered,
        "llm.request.functions.0.name": "xylograph_lookup",
    }
    spans = [
        {"traceId": TRACE, "spanId": "00000000000000a1", "name": "workflow", "startTimeUnixNano": str(NOW),
         "endTimeUnixNano": str(NOW + 9000), "attributes": _attrs({"traceloop.entity.input": said})},
        {"traceId": TRACE, "spanId": "00000000000000a2", "parentSpanId": "00000000000000a1", "name": "chat",
         "startTimeUnixNano": str(NOW + 10), "endTimeUnixNano": str(NOW + 5000),
         "attributes": _attrs(semconv),
         "events": [
             {"name": "gen_ai.choice", "timeUnixNano": str(NOW + 4000),
              "attributes": _attrs({"gen_ai.completion": answered})},
             {"name": "gen_ai.content.prompt", "timeUnixNano": str(NOW + 20),
              "attributes": _attrs({"gen_ai.prompt": said})},
             {"name": "first token", "timeUnixNano": str(NOW + 100), "attributes": []},
         ]},
        {"traceId": TRACE, "spanId": "00000000000000a3", "parentSpanId": "00000000000000a1",
         "name": "anthropic.chat", "startTimeUnixNano": str(NOW + 6000), "endTimeUnixNano": str(NOW + 8000),
         "attributes": _attrs(traceloop)},
    ]  # fmt: skip
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    r = httpx.post(
        f"{collector.base}/v1/traces",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 200, r.text
    calls = {c.model: c for c in collector.store.recent(CallFilter(), 10) if c.trace_id == TRACE}
    assert set(calls) == {"gpt-4.1", "claude-sonnet-4-6"}
    chat = calls["gpt-4.1"]
    assert said in json.dumps(chat.messages) and answered in json.dumps(chat.response)
    assert said in json.dumps(calls["claude-sonnet-4-6"].messages)
    held = {h[1]: h for h in _held(backend)}
    for span_id in ("00000000000000a2", "00000000000000a3"):
        _, _, call_id, attributes, events = held[span_id]
        assert call_id is not None
        for text in (said, answered, "zanzibar", "xylograph"):
            assert text not in attributes and text not in events, (span_id, attributes, events)
    kept = json.loads(held["00000000000000a2"][3])
    assert kept["gen_ai.response.id"] == "chatcmpl-77" and kept["http.response.status_code"] == 200
    assert kept["gen_ai.operation.name"] == "chat" and kept["gen_ai.provider.name"] == "openai"
    # The model, usage and parameters are the call's: not kept twice.
    assert not [k for k in kept if k.startswith(("gen_ai.request.", "gen_ai.usage."))], kept
    assert (chat.model, chat.input_tokens, (chat.params or {}).get("temperature")) == ("gpt-4.1", 12, 1)
    assert [e["name"] for e in json.loads(held["00000000000000a2"][4])] == ["first token"]
    # The workflow span is no call: its input stays, as sent.
    assert json.loads(held["00000000000000a1"][3]) == {"traceloop.entity.input": said}
    page = collector.get(f"/calls/{chat.id}").text
    assert said in page and answered in page and "workflow" in page


def test_what_a_call_span_keeps_is_still_redacted_and_sealed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripping comes before the pipeline, not instead of it: the attributes a call's span
    keeps are redacted with the calls' rules and sealed in regulated mode as before."""
    key = new_key()
    monkeypatch.setenv("LLMLOG_KEY", key)
    monkeypatch.setenv("LLMLOG_REDACT", "email")
    said = "write to zanzibar@example.com"
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1",
        "gen_ai.usage.input_tokens": 12,
        "app.note": said,  # not content the call holds: kept, redacted and sealed
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": said}]}]),
    }
    span = {"traceId": TRACE, "spanId": "00000000000000b1", "name": "chat", "startTimeUnixNano": str(NOW),
            "endTimeUnixNano": str(NOW + 5000), "attributes": _attrs(attributes)}  # fmt: skip
    with Running(backend, keyring=Keyring.parse(key), ingest_token=TOKEN) as c:
        r = httpx.post(
            f"{c.base}/v1/traces",
            content=json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 200, r.text
        c.store.keyring = Keyring.parse(key)
        (call,) = [x for x in c.store.recent(CallFilter(), 10) if x.trace_id == TRACE]
        (kept,) = c.store.trace(TRACE)
    assert "write to [EMAIL]" in json.dumps(call.messages) and "zanzibar" not in json.dumps(call.messages)
    (held,) = _held(backend)
    assert "zanzibar" not in held[3] and "gen_ai.input.messages" not in held[3]
    stored = json.loads(held[3])
    assert stored["app.note"].startswith("llmlog-enc:v1:") and stored["gen_ai.provider.name"] == "openai"
    assert "gen_ai.request.model" not in stored and call.model == "gpt-4.1"
    assert Intake(Settings()).open_span(kept).attributes["app.note"] == "write to [EMAIL]"
