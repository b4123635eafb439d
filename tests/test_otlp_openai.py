"""OpenAI calls through the published OpenTelemetry instrumentations, into `llmlog serve`
over OTLP, row for row as `llmlog.wrap` records the same requests: OpenInference, the
OpenTelemetry openai-v2 instrumentation (content on spans, or in log events), Traceloop
OpenLLMetry (attributes, or events). Each program makes a plain, a streamed, a
tool-calling and a failing Chat completion against the fake provider."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import llmlog
from llmlog.fake_provider import FakeProvider
from llmlog.record import Call
from llmlog.store import CallFilter
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

# The four requests, each made by the instrumented program and through wrap.
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
]
PLAIN, STREAMED, TOOL, FAILING = range(4)

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
ALL = (PLAIN, STREAMED, TOOL, FAILING)
GAPS: dict[str, set[tuple[int, str]]] = {
    "openinference": set(),
    # Neither says when a streamed call's first token came, nor whether a call was streamed.
    "otel-v2-span": {(i, "first_token_ms") for i in ALL} | {(TOOL, "tools")},
    "otel-v2-events": {(i, "first_token_ms") for i in ALL} | {(TOOL, "tools")},
    "traceloop-attributes": set(),
    # A streamed answer's gen_ai.choice event is emitted outside its span: it joins no call.
    "traceloop-events": {(STREAMED, "response"), (TOOL, "tools")},
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

_IDS = re.compile(r"\b(chatcmpl|call|req)[-_][0-9a-zA-Z]+")


def masked(value: Any) -> Any:
    """Ids and creation times, which differ between two runs of the same request, masked."""
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items() if k != "created"}
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
    assert len(wrapped) == 4
    assert len(rows) == 4, [(c.model, c.messages) for c in rows]  # one row per call
    gaps = GAPS[mode]
    problems = []
    for i, (row, wrap) in enumerate(zip(rows, wrapped, strict=True)):
        for column in EXACT:
            if (i, column) in gaps:
                assert getattr(row, column) is None, (i, column)
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
