"""OpenAI calls through the published OpenTelemetry instrumentations, into `llmlog serve`
over OTLP, row for row as `llmlog.wrap` records the same requests: OpenInference, the
OpenTelemetry openai-v2 instrumentation (content on spans, or in log events), Traceloop
OpenLLMetry (attributes, or events). Each program makes a plain, a streamed, a
tool-calling and a failing Chat completion against the fake provider."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

import llmlog
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.providers.conversation import conversation, response_turns
from tests.backends import Backend
from tests.conftest import Recorder
from tests.otel_programs import TOKEN, run_program
from tests.webui import Running

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]

# The requests, each made by the instrumented program and through wrap.
REQUESTS: list[dict[str, Any]] = [
    {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi there"}],
        "max_tokens": 50,
    },
    {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "stream please"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    {"model": "gpt-4.1", "messages": [{"role": "user", "content": "where is order 9?"}], "tools": TOOLS},
    {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "fail"}],
        "extra_headers": {"x-fake-fail": "429"},
    },
    # The next turn: the tool's result sent back.
    {
        "model": "gpt-4.1",
        "messages": [
            {"role": "user", "content": "where is order 9?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id":"9"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "shipped on Monday"},
        ],
        "tools": TOOLS,
    },
]
PLAIN, STREAMED, TOOL, FAILING, RESULT = range(5)

BODY = f"""\
for request in {REQUESTS!r}:
    try:
        answer = openai_client.chat.completions.create(**request)
        if request.get("stream"):
            for _ in answer:
                pass
    except openai.RateLimitError:
        pass
"""

SETUPS = {
    "openinference": """\
        from openinference.instrumentation.openai import OpenAIInstrumentor
        OpenAIInstrumentor().instrument(tracer_provider=tp)
        """,
    "otel-v2-span": """\
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        OpenAIInstrumentor().instrument(tracer_provider=tp, logger_provider=lp)
        """,
    "traceloop-attributes": """\
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        OpenAIInstrumentor().instrument(tracer_provider=tp)
        """,
    "traceloop-events": """\
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        OpenAIInstrumentor(use_legacy_attributes=False).instrument(tracer_provider=tp, logger_provider=lp)
        """,
}
SETUPS["otel-v2-events"] = SETUPS["otel-v2-span"]
V2 = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}
ENV = {
    "otel-v2-span": {**V2, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"},
    "otel-v2-events": {**V2, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY"},
}

# What an instrumentation does not send, by (call, column): stored as NULL, not guessed.
ALL = (PLAIN, STREAMED, TOOL, FAILING, RESULT)
GAPS: dict[str, set[tuple[int, str]]] = {
    "openinference": set(),
    # Neither says when a streamed call's first token came, nor whether a call was streamed.
    # … and neither sends tool definitions.
    "otel-v2-span": {(i, "first_token_ms") for i in ALL} | {(TOOL, "tools"), (RESULT, "tools")},
    "otel-v2-events": {(i, "first_token_ms") for i in ALL} | {(TOOL, "tools"), (RESULT, "tools")},
    "traceloop-attributes": set(),
    # A streamed answer's gen_ai.choice event is emitted outside its span: it joins no call.
    "traceloop-events": {(STREAMED, "response"), (TOOL, "tools"), (RESULT, "tools")},
}
# What an instrumentation says only in part: the row holds that part, as wrap has it.
PARTIAL: dict[str, set[tuple[int, str]]] = {
    "traceloop-events": {(RESULT, "messages")},  # a tool message's event has no tool_call_id
}

# Columns that are the same, exactly, as wrap's for the same request.
EXACT = (
    "provider",
    "model",
    "system_prompt",
    "messages",
    "tools",
    "tool_calls",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
)

_IDS = re.compile(r"\b(chatcmpl|call|req|resp|msg|fc)[-_][0-9a-zA-Z]+")


def masked(value: Any) -> Any:
    """Ids and creation times, which differ between two runs of the same request, masked."""
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items() if k not in ("created", "created_at", "completed_at")}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str):
        return _IDS.sub(r"\1-*", value)
    return value


def differences(part: Any, whole: Any, path: str = "") -> list[str]:
    """Where `part` is not `whole` in what it says: a dict's keys it has, a list item by
    item, anything else equal."""
    if isinstance(part, dict) and isinstance(whole, dict):
        return [
            d
            for k, v in part.items()
            for d in (
                differences(v, whole[k], f"{path}.{k}") if k in whole else [f"{path}.{k}: not in wrap's"]
            )
        ]
    if isinstance(part, list) and isinstance(whole, list) and len(part) == len(whole):
        return [
            d
            for i, (p, w) in enumerate(zip(part, whole, strict=True))
            for d in differences(p, w, f"{path}[{i}]")
        ]
    return [] if part == whole else [f"{path}: {part!r} != {whole!r}"]


def wrapped_rows(recorder: Recorder, fake: FakeProvider) -> list[Call]:
    client = llmlog.wrap(openai.OpenAI(api_key="sk-test", base_url=fake.openai_base_url, max_retries=0))
    for request in REQUESTS:
        try:
            answer = client.chat.completions.create(**request)
            if request.get("stream"):
                for _ in answer:
                    pass
        except openai.RateLimitError:
            pass
    return sorted(recorder.calls(), key=lambda c: c.timestamp)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """wrap's store: a file of its own, beside the collector's."""
    return str(tmp_path / "wrapped.db")


@pytest.fixture
def collector(backend: Backend) -> Iterator[Running]:
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


@pytest.mark.parametrize(
    ("mode", "backend"),
    [
        ("openinference", "sqlite"),
        ("otel-v2-span", "sqlite"),
        ("otel-v2-events", "postgres"),
        ("traceloop-attributes", "sqlite"),
        ("traceloop-events", "sqlite"),
    ],
    indirect=["backend"],
)
def test_openai_instrumentations_give_wraps_rows(
    mode: str, collector: Running, fake: FakeProvider, recorder: Recorder
) -> None:
    run_program(collector, fake, SETUPS[mode], BODY, env=ENV.get(mode))
    rows = sorted(collector.store.iter_calls(CallFilter()), key=lambda c: c.timestamp)
    wrapped = wrapped_rows(recorder, fake)
    assert len(wrapped) == len(REQUESTS)
    assert len(rows) == len(REQUESTS), [(c.model, c.messages) for c in rows]  # one row per call
    gaps = GAPS[mode]
    problems = []
    for i, (row, wrap) in enumerate(zip(rows, wrapped, strict=True)):
        for column in EXACT:
            if (i, column) in gaps:
                assert getattr(row, column) is None, (i, column)
            elif (i, column) in PARTIAL.get(mode, set()):
                said = differences(masked(getattr(row, column)), masked(getattr(wrap, column)))
                problems += [f"call {i} {column}{d}" for d in said]
            elif masked(getattr(row, column)) != masked(getattr(wrap, column)):
                problems.append(
                    f"call {i} {column}: {getattr(row, column)!r} != wrap's {getattr(wrap, column)!r}"
                )
        # The request's parameters and the response, as far as the instrumentation says them.
        problems += [f"call {i} params{d}" for d in differences(row.params, wrap.params)]
        if (i, "response") in gaps:
            assert row.response is None
        else:
            assert (row.response is None) == (wrap.response is None), i
            problems += [
                f"call {i} response{d}" for d in differences(masked(row.response), masked(wrap.response))
            ]
        if (i, "first_token_ms") in gaps:
            assert row.first_token_ms is None, i
        elif i == STREAMED:
            assert row.first_token_ms is not None and 0 < row.first_token_ms <= (row.latency_ms or 0)
        elif i != FAILING:  # not streamed: the first token came with the whole answer
            assert row.first_token_ms == row.latency_ms, i
    assert not problems, "\n".join(problems)
    # The failing call: wrap's status and message; the type is the SDK's exception's (wrap
    # reads the API's error code from the body, which no instrumentation sends).
    error, wrap_error = rows[FAILING].error, wrapped[FAILING].error
    assert wrap_error is not None and error == {**wrap_error, "type": "RateLimitError"}
    assert rows[FAILING].model == "gpt-4.1" and rows[FAILING].cost_usd in (None, 0)
    # What the tool call asked for, as wrap has it: arguments as the API sent them.
    assert rows[TOOL].response is not None
    message = rows[TOOL].response["choices"][0]["message"]
    assert masked(message["tool_calls"]) == masked(
        wrapped[TOOL].response["choices"][0]["message"]["tool_calls"]
    )


# The Responses API, as OpenInference instruments it: the request and the response as sent
# (its `input.value` and `output.value`), read as wrap reads them, not Chat's shape.
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "lookup_order",
        "description": "Find an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
]
RESPONSES: list[dict[str, Any]] = [
    {"model": "gpt-5-mini", "instructions": "Be terse.", "input": "hi there"},
    {"model": "gpt-5-mini", "input": [{"role": "user", "content": "stream please"}], "stream": True},
    {
        "model": "gpt-5-mini",
        "input": [{"role": "user", "content": "where is order 9?"}],
        "tools": RESPONSES_TOOLS,
    },
    {
        "model": "gpt-5-mini",
        "input": [
            {"role": "user", "content": "where is order 9?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "lookup_order",
                "arguments": '{"order_id":"9"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "shipped on Monday"},
        ],
        "tools": RESPONSES_TOOLS,
    },
]
RESPONSES_BODY = f"""\
for request in {RESPONSES!r}:
    answer = openai_client.responses.create(**request)
    if request.get("stream"):
        for _ in answer:
            pass
"""


def unset_dropped(value: Any) -> Any:
    """A response without its null fields: the instrumentation sends the SDK's object, which
    writes every field it knows, null when the API did not send it."""
    if isinstance(value, dict):
        return {k: unset_dropped(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [unset_dropped(v) for v in value]
    return value


def test_openinference_responses_api_gives_wraps_rows(
    collector: Running, fake: FakeProvider, recorder: Recorder
) -> None:
    run_program(collector, fake, SETUPS["openinference"], RESPONSES_BODY)
    rows = sorted(collector.store.iter_calls(CallFilter()), key=lambda c: c.timestamp)
    client = llmlog.wrap(openai.OpenAI(api_key="sk-test", base_url=fake.openai_base_url, max_retries=0))
    for request in RESPONSES:
        answer = client.responses.create(**request)
        if request.get("stream"):
            for _ in answer:
                pass
    wrapped = sorted(recorder.calls(), key=lambda c: c.timestamp)
    assert len(rows) == len(wrapped) == len(RESPONSES)
    problems = []
    for i, (row, wrap) in enumerate(zip(rows, wrapped, strict=True)):
        for column in (*EXACT, "params"):
            if masked(getattr(row, column)) != masked(getattr(wrap, column)):
                problems.append(
                    f"call {i} {column}: {getattr(row, column)!r} != wrap's {getattr(wrap, column)!r}"
                )
        assert row.response is not None and row.response.get("object") == "response", i
        problems += [
            f"call {i} response{d}"
            for d in differences(masked(unset_dropped(row.response)), masked(unset_dropped(wrap.response)))
        ]
    assert not problems, "\n".join(problems)
    assert [r.stop_reason for r in rows] == ["stop", "stop", "tool_calls", "stop"]


# ---------------------------------------------------------------- the conventions' forms, by hand

TRACE = "6c9efff798038103d269b633813fc60d"
NOW = time.time_ns() // 1000 * 1000  # whole microseconds, as datetimes hold them
MS = 1_000_000


def _value(v: Any) -> dict[str, Any]:
    if v is None:
        return {}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": _value(x)} for k, x in v.items()]}}
    return {"stringValue": str(v)}


def _kv(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items()]


def _span(
    span_id: str,
    attrs: dict[str, Any],
    *,
    ms: int = 400,
    parent: str | None = None,
    status: dict[str, Any] | None = None,
    events: list[tuple[int, str, dict[str, Any]]] = (),
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": f"chat {span_id[:4]}",
        "kind": 3,
        "startTimeUnixNano": str(NOW),
        "endTimeUnixNano": str(NOW + ms * MS),
        "attributes": _kv(attrs),
        "events": [
            {"name": n, "timeUnixNano": str(NOW + at * MS), "attributes": _kv(a)} for at, n, a in events
        ],
    }
    if parent:
        span["parentSpanId"] = parent
    if status:
        span["status"] = status
    return span


def _send(c: Running, path: str, body: dict[str, Any]) -> None:
    r = httpx.post(
        c.base + path,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert r.status_code == 200 and "partialSuccess" not in r.json(), r.text


def _spans(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}]}


def _by_span(c: Running) -> dict[str, Call]:
    return {(call.metadata or {})["otel"]["span_id"]: call for call in c.store.iter_calls(CallFilter())}


ANTHROPIC_429 = (
    "Error code: 429 - {'type': 'error', 'error': {'type': 'rate_limit_error', 'message': 'Slow down.'}}"
)
OPENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4.1",
}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_semantic_convention_spans_give_wraps_columns(collector: Running) -> None:
    said = [
        {"role": "system", "parts": [{"type": "text", "content": "Be terse."}]},
        {"role": "user", "parts": [{"type": "text", "content": "where is order 9?"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_1", "name": "lookup_order", "arguments": {"order_id": "9"}}
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "shipped"}]},
    ]
    answer = [
        {
            "role": "assistant",
            "finish_reason": "tool_call",
            "parts": [
                {"type": "tool_call", "id": "call_2", "name": "lookup_order", "arguments": {"order_id": "10"}}
            ],
        }
    ]
    tools = [
        {
            "type": "function",
            "name": "lookup_order",
            "description": "Find an order.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        }
    ]
    _send(
        collector,
        "/v1/traces",
        _spans(
            # A streamed call that says when its first chunk came, its finish reason only in its
            # output messages (in the conventions' words), its tools flattened.
            _span(
                "a000000000000001",
                {
                    **OPENAI,
                    "gen_ai.response.time_to_first_chunk": 0.125,
                    "gen_ai.input.messages": json.dumps(said),
                    "gen_ai.output.messages": json.dumps(answer),
                    "gen_ai.tool.definitions": json.dumps(tools),
                    "gen_ai.request.stop_sequences": ["END"],
                    "gen_ai.request.max_tokens": 30,
                },
            ),
            # Anthropic's stop reason only in its own attribute; a call known not to be streamed.
            _span(
                "a000000000000002",
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-6",
                    "gen_ai.request.stream": False,
                    "anthropic.message.stop_reason": "end_turn",
                    "gen_ai.input.messages": json.dumps(said[:2]),
                },
                ms=250,
            ),
            # Failures: the status from http.response.status_code, the message from the exception.
            _span(
                "a000000000000003",
                {**OPENAI, "http.response.status_code": 503, "error.type": "InternalServerError"},
                status={"code": 2},
                events=[
                    (
                        5,
                        "exception",
                        {
                            "exception.type": "openai.InternalServerError",
                            "exception.message": "upstream down",
                        },
                    )
                ],
            ),
            # … from an HTTP-like error.type, the message from the status.
            _span(
                "a000000000000004",
                {**OPENAI, "error.type": "429"},
                status={"code": 2, "message": "slow down"},
            ),
            # Per-chunk events: the first is the first token.
            _span(
                "a000000000000005",
                {**OPENAI, "gen_ai.is_streaming": True},
                events=[
                    (50, "gen_ai.content.completion.chunk", {}),
                    (30, "gen_ai.content.completion.chunk", {}),
                ],
            ),
            # The Anthropic SDK prints the API's error body in its message.
            _span(
                "a000000000000008",
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-6",
                    "error.type": "RateLimitError",
                },
                status={"code": 2},
                events=[
                    (
                        2,
                        "exception",
                        {
                            "exception.type": "anthropic.RateLimitError",
                            "exception.message": ANTHROPIC_429,
                        },
                    )
                ],
            ),
            # An SDK's span inside a wrapper's, one call: the wrapper saw the exception.
            _span(
                "a000000000000006",
                {**OPENAI},
                status={"code": 2},
                events=[
                    (
                        3,
                        "exception",
                        {
                            "exception.type": "openai.APIConnectionError",
                            "exception.message": "Connection error.",
                        },
                    )
                ],
            ),
            _span(
                "a000000000000007",
                {**OPENAI, "error.type": "APIConnectionError"},
                parent="a000000000000006",
                status={"code": 2},
            ),
        ),
    )
    calls = _by_span(collector)
    assert len(calls) == 7  # the wrapper and its SDK span are one call
    streamed = calls["a000000000000001"]
    assert streamed.first_token_ms == 125 and streamed.stop_reason == "tool_calls"
    # As sent to the Chat API: system message among the messages, tool calls and results.
    assert streamed.system_prompt == "Be terse."
    assert streamed.messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "where is order 9?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id":"9"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
    ]
    assert streamed.tools == [
        {"type": "function", "function": {k: tools[0][k] for k in ("name", "description", "parameters")}}
    ]
    assert streamed.params == {"model": "gpt-4.1", "stop": ["END"], "max_tokens": 30}
    assert streamed.tool_calls == [{"id": "call_2", "name": "lookup_order", "input": {"order_id": "10"}}]
    assert streamed.response == {
        "object": "chat.completion",
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "lookup_order", "arguments": '{"order_id":"10"}'},
                        }
                    ],
                },
            }
        ],
    }
    # The conversation view reads them.
    turns = conversation(streamed)
    assert [t.role for t in turns] == ["system", "user", "assistant", "tool"]
    assert [(p.kind, p.name, p.ref) for p in turns[2].parts] == [("tool_call", "lookup_order", "call_1")]
    assert [p.text for p in turns[3].parts] == ["(result of call_1)", "shipped"]
    assert [(p.kind, p.name) for t in response_turns(streamed) for p in t.parts] == [
        ("tool_call", "lookup_order")
    ]

    anthropic = calls["a000000000000002"]
    assert anthropic.stop_reason == "stop" and anthropic.first_token_ms == anthropic.latency_ms == 250
    # Anthropic's shape: the system prompt apart, content blocks.
    assert anthropic.system_prompt == "Be terse."
    assert anthropic.messages == [
        {"role": "user", "content": [{"type": "text", "text": "where is order 9?"}]}
    ]

    assert calls["a000000000000003"].error == {
        "type": "InternalServerError",
        "status": 503,
        "message": "upstream down",
    }
    assert calls["a000000000000004"].error == {"type": "http_429", "status": 429, "message": "slow down"}
    assert calls["a000000000000008"].error == {
        "type": "rate_limit_error",
        "status": 429,
        "message": "Slow down.",
    }
    assert calls["a000000000000005"].first_token_ms == 30
    assert calls["a000000000000007"].error == {
        "type": "APIConnectionError",
        "status": None,
        "message": "Connection error.",
    }


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_log_events_give_openai_messages_and_tool_calls_beside_the_choice(collector: Running) -> None:
    span_id = "b000000000000001"

    def event(name: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "traceId": TRACE,
            "spanId": span_id,
            "eventName": name,
            "timeUnixNano": str(NOW),
            "attributes": _kv({"gen_ai.provider.name": "openai"}),
            "body": _value(body),
        }

    call_1 = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id":"9"}'},
    }
    call_2 = {
        "id": "call_2",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id":"10"}'},
    }
    records = [
        event("gen_ai.system.message", {"content": "Be terse."}),
        event("gen_ai.user.message", {"content": "where is order 9?"}),
        event("gen_ai.assistant.message", {"content": None, "tool_calls": [call_1]}),
        event("gen_ai.tool.message", {"content": "shipped", "id": "call_1"}),
        # Traceloop's form: the tool calls beside the message, not in it.
        event(
            "gen_ai.choice",
            {"index": 0, "message": {"content": None}, "finish_reason": "tool_calls", "tool_calls": [call_2]},
        ),
    ]
    _send(collector, "/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})
    _send(collector, "/v1/traces", _spans(_span(span_id, {**OPENAI, "gen_ai.is_streaming": False}, ms=80)))
    (call,) = _by_span(collector).values()
    assert call.tool_calls == [{"id": "call_2", "name": "lookup_order", "input": {"order_id": "10"}}]
    assert call.stop_reason == "tool_calls" and call.first_token_ms == call.latency_ms == 80
    assert call.messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "where is order 9?"},
        {"role": "assistant", "content": None, "tool_calls": [call_1]},
        {"role": "tool", "content": "shipped", "tool_call_id": "call_1"},
    ]
    assert call.response == {
        "object": "chat.completion",
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call_2]},
                "finish_reason": "tool_calls",
            }
        ],
    }
    assert [p.kind for t in response_turns(call) for p in t.parts] == ["tool_call"]


def test_an_error_message_nested_past_what_json_reads_is_text() -> None:
    """An exception message that looks like an API error body but nests thousands deep is
    kept as the message, not a failure of the span that carries it."""
    from datetime import UTC, datetime

    from llmlog.capture.outcome import span_error
    from llmlog.core.record import Span

    deep = "Error code: 500 - " + '{"error":' * 2000  # within the 20,000 characters read
    span = Span(
        trace_id="a" * 32, span_id="b" * 16, parent_id=None, name="chat", kind="client",
        start=datetime.now(UTC), end=None, status="error", status_message=deep,
        attributes={"gen_ai.operation.name": "chat", "error.type": "InternalServerError"},
    )  # fmt: skip
    error = span_error(span)
    assert error is not None and error["status"] == 500 and error["type"] == "InternalServerError"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_feature_named_in_metadata_is_the_calls_feature(collector: Running) -> None:
    """OpenInference's `metadata` (`using_attributes(metadata=…)`) naming the product feature
    gives the call its `feature`, the column wrap's context fills; the rest stays metadata."""
    meta = {"llm.system": "openai", "openinference.span.kind": "LLM", "llm.model_name": "gpt-4.1"}
    _send(collector, "/v1/traces", _spans(
        _span("a" * 16, {**meta, "metadata": json.dumps({"feature": "checkout", "tier": "pro"})}),
        _span("b" * 16, {**meta, "metadata": json.dumps({"feature": 7, "tier": "free"})}),
    ))  # fmt: skip
    calls = _by_span(collector)
    named, odd = calls["a" * 16], calls["b" * 16]
    assert named.feature == "checkout" and named.metadata is not None
    assert "feature" not in named.metadata and named.metadata["tier"] == "pro"
    # Not a name: kept as it came, in the metadata.
    assert odd.feature is None and odd.metadata is not None and odd.metadata["feature"] == 7
    assert collector.store.count(CallFilter(feature="checkout")) == 1
