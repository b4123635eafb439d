"""The fake provider, driven by the real `anthropic` and `openai` SDKs over loopback HTTP (no mocks)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llmlog.demo.fake_provider import FakeProvider

MODEL_A = "claude-test-1"
MODEL_O = "gpt-test-1"
USER = [{"role": "user", "content": "What is a flight recorder for?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "lat": {"type": "number"},
        },
        "required": ["city"],
    },
}
CLOCK = {"name": "get_time", "description": "Time.", "input_schema": {"type": "object", "properties": {}}}
FUNCTION = {"type": "function", "function": {"name": WEATHER["name"], "parameters": WEATHER["input_schema"]}}
RESP_FUNCTION = {
    "type": "function",
    "name": WEATHER["name"],
    "parameters": WEATHER["input_schema"],
    "strict": False,
}
LONG_SYSTEM = "You are a meticulous assistant that answers questions about aviation safety. " * 60


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def ant(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="test", base_url=fake.anthropic_base_url, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test", base_url=fake.openai_base_url, max_retries=0) as client:
        yield client


def raw_post(
    fake: FakeProvider, path: str, body: bytes | str, method: str = "POST"
) -> tuple[int, dict, bytes]:
    """A request below the SDKs, to see the wire format itself."""
    host, port = fake.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path, body, {"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def dumps(blocks: list[Any]) -> list[dict]:
    # Streamed snapshots are Parsed* subclasses, so compare by value, not by pydantic type.
    return [b.model_dump() for b in blocks]


# -- Anthropic ---------------------------------------------------------------------------------------


def test_anthropic_text_non_stream(fake: FakeProvider, ant: anthropic.Anthropic) -> None:
    raw = ant.messages.with_raw_response.create(model=MODEL_A, max_tokens=1000, messages=USER)
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_") and message.model == MODEL_A and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"] and len(message.content[0].text) > 10
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    usage = message.usage
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None and usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.output_tokens == (len(message.content[0].text) + 3) // 4
    counted = ant.messages.count_tokens(model=MODEL_A, messages=USER)
    assert usage.input_tokens == counted.input_tokens >= 1
    # Deterministic for the same request; another seed gives another answer.
    again = ant.messages.create(model=MODEL_A, max_tokens=1000, messages=USER)
    assert again.content[0].text == message.content[0].text and again.id != message.id
    with FakeProvider(seed=7) as other:
        client = anthropic.Anthropic(api_key="test", base_url=other.anthropic_base_url, max_retries=0)
        with client:
            assert (
                client.messages.create(model=MODEL_A, max_tokens=1000, messages=USER).content
                != message.content
            )


def test_answer_lengths_vary(ant: anthropic.Anthropic) -> None:
    lengths = {
        ant.messages.create(
            model=MODEL_A, max_tokens=4000, messages=[{"role": "user", "content": f"q{i}"}]
        ).usage.output_tokens
        for i in range(30)
    }
    assert min(lengths) >= 10 and max(lengths) <= 210 and len(lengths) > 10


def test_anthropic_stream_helper_matches_non_stream(ant: anthropic.Anthropic) -> None:
    plain = ant.messages.create(model=MODEL_A, max_tokens=1000, messages=USER)
    with ant.messages.stream(model=MODEL_A, max_tokens=1000, messages=USER) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 1 and "".join(texts) == plain.content[0].text
    assert dumps(final.content) == dumps(plain.content)
    assert final.usage == plain.usage and final.stop_reason == plain.stop_reason == "end_turn"


def test_anthropic_raw_stream_events(fake: FakeProvider, ant: anthropic.Anthropic) -> None:
    events = list(ant.messages.create(model=MODEL_A, max_tokens=1000, messages=USER, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"] and kinds[-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert set(kinds[2:-3]) == {"content_block_delta"} and len(kinds) > 6
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.content == [] and start.message.stop_reason is None
    assert start.message.usage.output_tokens == 1 and start.message.usage.input_tokens >= 1
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens > 1
    # On the wire there is exactly one ping (the SDK skips it), right after the first block starts.
    body = json.dumps({"model": MODEL_A, "max_tokens": 100, "messages": USER, "stream": True})
    status, headers, raw = raw_post(fake, "/v1/messages", body)
    names = [line.split(": ", 1)[1] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert names[:3] == ["message_start", "content_block_start", "ping"] and names.count("ping") == 1


def test_anthropic_max_tokens_truncates(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(model=MODEL_A, max_tokens=5, messages=USER)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 5
    assert len(message.content[0].text) <= 20
    with ant.messages.stream(model=MODEL_A, max_tokens=5, messages=USER) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and dumps(final.content) == dumps(message.content)


def test_anthropic_tool_use_round_trip(ant: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    first = ant.messages.create(model=MODEL_A, max_tokens=1000, tools=[WEATHER, CLOCK], messages=ask)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] in (["tool_use"], ["text", "tool_use"])
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert set(call.input) == {"city", "days", "metric", "unit", "lat"}
    assert isinstance(call.input["city"], str) and isinstance(call.input["days"], int)
    assert isinstance(call.input["metric"], bool) and isinstance(call.input["lat"], float)
    assert call.input["unit"] in ("celsius", "fahrenheit")
    with ant.messages.stream(model=MODEL_A, max_tokens=1000, tools=[WEATHER, CLOCK], messages=ask) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[-1].input == call.input and streamed.usage == first.usage

    result = {"type": "tool_result", "tool_use_id": call.id, "content": "12 degrees and rain"}
    history = [*ask, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = ant.messages.create(model=MODEL_A, max_tokens=1000, tools=[WEATHER, CLOCK], messages=history)
    assert second.stop_reason == "end_turn" and [b.type for b in second.content] == ["text"]

    forced = ant.messages.create(
        model=MODEL_A,
        max_tokens=1000,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "tool", "name": "get_time"},
        messages=ask,
    )
    assert [(b.type, getattr(b, "name", None)) for b in forced.content] == [("tool_use", "get_time")]
    off = ant.messages.create(
        model=MODEL_A, max_tokens=1000, tools=[WEATHER], tool_choice={"type": "none"}, messages=ask
    )
    assert off.stop_reason == "end_turn"


def test_anthropic_prompt_caching(ant: anthropic.Anthropic) -> None:
    system: Any = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    counted = ant.messages.count_tokens(model=MODEL_A, system=system, messages=USER).input_tokens
    first = ant.messages.create(model=MODEL_A, max_tokens=100, system=system, messages=USER).usage
    second = ant.messages.create(model=MODEL_A, max_tokens=100, system=system, messages=USER).usage
    assert first.cache_creation_input_tokens and first.cache_creation_input_tokens > 1000
    assert first.cache_read_input_tokens == 0 and first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    for usage in (first, second):  # input_tokens is only the uncached remainder, as on the real API
        cached = (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        assert usage.input_tokens + cached == counted and 0 < usage.input_tokens < 50
    # Another model has its own cache; a 1h marker is reported as 1h.
    system[0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    other = ant.messages.create(model="claude-other", max_tokens=100, system=system, messages=USER).usage
    assert other.cache_creation is not None and other.cache_creation.ephemeral_1h_input_tokens > 1000
    assert other.cache_read_input_tokens == 0

    # Next turn: the marker moves to the newest message, and the earlier prefix is read back.
    turn1 = [
        {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]}
    ]
    base = ant.messages.create(model=MODEL_A, max_tokens=100, system=LONG_SYSTEM, messages=turn1).usage
    turn2 = [
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "text", "text": "c", "cache_control": {"type": "ephemeral"}}]},
    ]
    later = ant.messages.create(model=MODEL_A, max_tokens=100, system=LONG_SYSTEM, messages=turn2).usage
    assert later.cache_read_input_tokens == base.cache_creation_input_tokens
    assert later.cache_creation_input_tokens and later.cache_creation_input_tokens < 20


def test_anthropic_count_tokens(fake: FakeProvider, ant: anthropic.Anthropic) -> None:
    short = ant.messages.count_tokens(model=MODEL_A, messages=USER).input_tokens
    longer = ant.messages.count_tokens(model=MODEL_A, system=LONG_SYSTEM, messages=USER).input_tokens
    assert 1 <= short < longer
    assert [(r.method, r.path) for r in fake.requests] == [("POST", "/v1/messages/count_tokens")] * 2


# -- OpenAI Chat Completions -------------------------------------------------------------------------


def test_chat_non_stream(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model=MODEL_O, messages=USER)
    choice, usage = completion.choices[0], completion.usage
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL_O
    assert choice.finish_reason == "stop" and choice.message.content and not choice.message.tool_calls
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 0
    limited = oai.chat.completions.create(model=MODEL_O, messages=USER, max_completion_tokens=4)
    assert (
        limited.choices[0].finish_reason == "length"
        and limited.usage
        and limited.usage.completion_tokens == 4
    )


def test_chat_stream_usage_only_when_asked(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model=MODEL_O, messages=USER)
    chunks = list(oai.chat.completions.create(model=MODEL_O, messages=USER, stream=True))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content

    chunks = list(
        oai.chat.completions.create(
            model=MODEL_O, messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])
    with oai.chat.completions.stream(
        model=MODEL_O, messages=USER, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == plain.choices[0].message.content and final.usage == plain.usage


def test_chat_tool_calls(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model=MODEL_O, messages=USER, tools=[FUNCTION])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == set(WEATHER["input_schema"]["properties"])

    chunks = list(oai.chat.completions.create(model=MODEL_O, messages=USER, tools=[FUNCTION], stream=True))
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    pieces = [d.function.arguments or "" for d in deltas if d.function]
    assert len([p for p in pieces if p]) > 1 and json.loads("".join(pieces)) == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with oai.chat.completions.stream(model=MODEL_O, messages=USER, tools=[FUNCTION]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == arguments

    history: Any = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "12 degrees"},
    ]
    answer = oai.chat.completions.create(model=MODEL_O, messages=history, tools=[FUNCTION])
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    off = oai.chat.completions.create(model=MODEL_O, messages=USER, tools=[FUNCTION], tool_choice="none")
    assert off.choices[0].finish_reason == "stop"


def test_chat_automatic_prompt_caching(oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "system", "content": LONG_SYSTEM}, *USER]
    first = oai.chat.completions.create(model=MODEL_O, messages=messages).usage
    second = oai.chat.completions.create(model=MODEL_O, messages=messages).usage
    assert first and second and first.prompt_tokens >= 1024
    assert first.prompt_tokens_details and first.prompt_tokens_details.cached_tokens == 0
    cached = second.prompt_tokens_details and second.prompt_tokens_details.cached_tokens
    assert cached and cached % 128 == 0 and 1024 <= cached <= second.prompt_tokens == first.prompt_tokens
    # Same leading prefix, different last message: the shared prefix is still cached.
    follow = [*messages, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and then?"}]
    third = oai.chat.completions.create(model=MODEL_O, messages=follow).usage
    assert third and third.prompt_tokens_details and third.prompt_tokens_details.cached_tokens == cached
    # Short prompts are never cached.
    for _ in range(2):
        short = oai.chat.completions.create(model=MODEL_O, messages=USER).usage
        assert short and short.prompt_tokens_details and short.prompt_tokens_details.cached_tokens == 0


# -- OpenAI Responses --------------------------------------------------------------------------------


def test_responses_non_stream_and_stream(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model=MODEL_O, instructions="Be brief.", input="What is a recorder?")
    assert (
        response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    )
    assert response.output_text and response.output[0].type == "message"
    usage = response.usage
    assert usage and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0

    with oai.responses.stream(model=MODEL_O, instructions="Be brief.", input="What is a recorder?") as stream:
        final = stream.get_final_response()
    assert final.output_text == response.output_text and final.usage == usage

    events = list(
        oai.responses.create(
            model=MODEL_O, instructions="Be brief.", input="What is a recorder?", stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == response.output_text


def test_responses_function_call_and_truncation(oai: openai.OpenAI) -> None:
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}]
    response = oai.responses.create(model=MODEL_O, input=items, tools=[RESP_FUNCTION])
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    assert set(json.loads(call.arguments)) == set(WEATHER["input_schema"]["properties"])
    assert response.output_text == ""
    with oai.responses.stream(model=MODEL_O, input=items, tools=[RESP_FUNCTION]) as stream:
        final = stream.get_final_response()
    streamed = final.output[0]
    assert streamed.type == "function_call" and streamed.arguments == call.arguments

    history = [
        *items,
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "12 degrees"},
    ]
    answer = oai.responses.create(model=MODEL_O, input=history, tools=[RESP_FUNCTION])
    assert answer.output[0].type == "message" and answer.output_text

    short = oai.responses.create(model=MODEL_O, input="Tell me more.", max_output_tokens=16)
    assert short.status == "incomplete" and short.incomplete_details
    assert (
        short.incomplete_details.reason == "max_output_tokens"
        and short.usage
        and short.usage.output_tokens == 16
    )
    events = list(
        oai.responses.create(model=MODEL_O, input="Tell me more.", max_output_tokens=16, stream=True)
    )
    assert events[-1].type == "response.incomplete"


def test_responses_cached_tokens(oai: openai.OpenAI) -> None:
    usages = [
        oai.responses.create(model=MODEL_O, instructions=LONG_SYSTEM, input="hi").usage for _ in range(2)
    ]
    assert usages[0] and usages[1] and usages[0].input_tokens_details.cached_tokens == 0
    cached = usages[1].input_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0 and cached <= usages[1].input_tokens


# -- Failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "a_error", "o_error", "a_status", "o_status"),
    [
        ("429", anthropic.RateLimitError, openai.RateLimitError, 429, 429),
        ("500", anthropic.InternalServerError, openai.InternalServerError, 500, 500),
        ("529", anthropic.OverloadedError, openai.InternalServerError, 529, 503),
    ],
)
def test_status_failures(
    ant: anthropic.Anthropic,
    oai: openai.OpenAI,
    kind: str,
    a_error: type[anthropic.APIStatusError],
    o_error: type[openai.APIStatusError],
    a_status: int,
    o_status: int,
) -> None:
    headers = {"x-fake-fail": kind}
    with pytest.raises(a_error) as a_info:
        ant.messages.create(model=MODEL_A, max_tokens=10, messages=USER, extra_headers=headers)
    assert a_info.value.status_code == a_status and a_info.value.request_id
    assert a_info.value.type in ("rate_limit_error", "api_error", "overloaded_error")
    with pytest.raises(a_error):
        list(
            ant.messages.create(
                model=MODEL_A, max_tokens=10, messages=USER, stream=True, extra_headers=headers
            )
        )
    with pytest.raises(o_error) as o_info:
        oai.chat.completions.create(model=MODEL_O, messages=USER, extra_headers=headers)
    assert o_info.value.status_code == o_status
    with pytest.raises(o_error):
        oai.responses.create(model=MODEL_O, input="hi", stream=True, extra_headers=headers)
    if kind == "429":
        assert a_info.value.response.headers["retry-after"] == "0"


def test_timeout_and_drop(fake: FakeProvider) -> None:
    short_a = anthropic.Anthropic(api_key="t", base_url=fake.anthropic_base_url, max_retries=0, timeout=0.3)
    short_o = openai.OpenAI(api_key="t", base_url=fake.openai_base_url, max_retries=0, timeout=0.3)
    with short_a, short_o:
        started = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):
            short_a.messages.create(
                model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-fail": "timeout"}
            )
        with pytest.raises(openai.APITimeoutError):
            short_o.chat.completions.create(
                model=MODEL_O, messages=USER, stream=True, extra_headers={"x-fake-fail": "timeout"}
            )
        assert time.monotonic() - started < 5
        with pytest.raises(anthropic.APIConnectionError) as info:
            short_a.messages.create(
                model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-fail": "drop"}
            )
        assert not isinstance(info.value, anthropic.APITimeoutError)
        with pytest.raises(openai.APIConnectionError):
            short_o.responses.create(model=MODEL_O, input="hi", extra_headers={"x-fake-fail": "drop"})
        # The connection pool recovers: the next call succeeds.
        assert short_a.messages.create(model=MODEL_A, max_tokens=10, messages=USER).content


def test_drop_midstream(ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    headers = {"x-fake-fail": "drop-midstream"}
    received: list[Any] = []
    # The Anthropic SDK lets the transport error escape its stream unwrapped; OpenAI wraps it.
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        for event in ant.messages.create(
            model=MODEL_A, max_tokens=100, messages=USER, stream=True, extra_headers=headers
        ):
            received.append(event)
    assert received and received[0].type == "message_start"
    received.clear()
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model=MODEL_O, messages=USER, stream=True, extra_headers=headers
        ):
            received.append(chunk)
    assert received
    with pytest.raises(openai.APIConnectionError):
        list(oai.responses.create(model=MODEL_O, input="hi", stream=True, extra_headers=headers))
    with pytest.raises(anthropic.APIConnectionError):  # non-stream: half a body, then EOF
        ant.messages.create(model=MODEL_A, max_tokens=10, messages=USER, extra_headers=headers)


def test_fail_next_queue(fake: FakeProvider, ant: anthropic.Anthropic) -> None:
    fake.fail_next("529", times=2)
    ant.messages.count_tokens(model=MODEL_A, messages=USER)  # not a generation: does not consume the queue
    with pytest.raises(anthropic.OverloadedError):
        ant.messages.create(model=MODEL_A, max_tokens=10, messages=USER)
    retrying = ant.with_options(max_retries=2)
    fake.fail_next("429")
    assert retrying.messages.create(model=MODEL_A, max_tokens=10, messages=USER).content
    assert [r.path for r in fake.requests].count("/v1/messages") == 4  # 529, 529 (retried), 429, success
    with pytest.raises(ValueError):
        fake.fail_next("teapot")
    fake.fail_next("500")
    fake.reset()
    assert (
        ant.messages.create(model=MODEL_A, max_tokens=10, messages=USER).content and len(fake.requests) == 1
    )


# -- Latency, introspection, errors, lifecycle -------------------------------------------------------


def test_latency_knobs(fake: FakeProvider, ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    started = time.monotonic()
    ant.messages.create(
        model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-latency-ms": "150"}
    )
    assert time.monotonic() - started >= 0.15

    headers = {"x-fake-first-token-ms": "150", "x-fake-chunk-ms": "10"}
    started = time.monotonic()
    stream = oai.chat.completions.create(model=MODEL_O, messages=USER, stream=True, extra_headers=headers)
    first_content = None
    count = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_content = first_content or time.monotonic()
            count += 1
    assert first_content is not None and first_content - started >= 0.15
    # The server sleeps before the first content chunk and between chunks; measured from the
    # request (not from the first chunk, whose arrival the client may see late) that is a floor.
    assert time.monotonic() - started >= 0.15 + (count - 1) * 0.01

    fake.latency_ms = 100  # the constructor knobs are live attributes
    try:
        started = time.monotonic()
        oai.responses.create(model=MODEL_O, input="hi")
        assert time.monotonic() - started >= 0.1
    finally:
        fake.latency_ms = 0
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(
            model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-latency-ms": "soon"}
        )


def test_requests_are_recorded(fake: FakeProvider, ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    ant.messages.create(model=MODEL_A, max_tokens=10, messages=USER, metadata={"user_id": "u1"})
    oai.chat.completions.create(model=MODEL_O, messages=USER, extra_headers={"X-Custom-Thing": "yes"})
    (a_method, a_path, a_headers, a_body), (o_method, o_path, o_headers, o_body) = fake.requests
    assert (a_method, a_path, o_method, o_path) == ("POST", "/v1/messages", "POST", "/v1/chat/completions")
    assert a_body == {"model": MODEL_A, "max_tokens": 10, "messages": USER, "metadata": {"user_id": "u1"}}
    assert o_body == {"model": MODEL_O, "messages": USER}
    assert "anthropic-version" in a_headers and o_headers["x-custom-thing"] == "yes"
    assert all(k == k.lower() for k in a_headers)


def test_errors_in_provider_shape(fake: FakeProvider, ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    status, headers, body = raw_post(fake, "/v1/messages", "{not json")
    error = json.loads(body)
    assert status == 400 and headers["request-id"] and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    status, _, body = raw_post(fake, "/v1/chat/completions", "[1, 2]")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, headers, body = raw_post(fake, "/v2/unknown", "{}")
    assert status == 404 and headers["request-id"] and "error" in json.loads(body)
    assert raw_post(fake, "/v1/messages", "", method="GET")[0] == 405
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(model=MODEL_A, max_tokens=10, messages=[])
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="e", input="hi")
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL_O, messages=USER, extra_headers={"x-fake-fail": "sometimes"})
    assert len(fake.requests) == 7  # every request is recorded, malformed or not


def chunked_post(fake: FakeProvider, path: str, body: dict[str, Any], headers: dict[str, str]) -> list[bytes]:
    """The HTTP chunks of a streamed answer, as they are framed on the wire."""
    host, port = fake.url.removeprefix("http://").rsplit(":", 1)
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(payload)}\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(head.encode() + payload)
        raw = b"".join(iter(lambda: conn.recv(65536), b""))
    rest = raw.split(b"\r\n\r\n", 1)[1]
    chunks = []
    while True:
        size, rest = rest.split(b"\r\n", 1)
        if not int(size, 16):
            return chunks
        chunks.append(rest[: int(size, 16)])
        assert rest[int(size, 16) : int(size, 16) + 2] == b"\r\n"
        rest = rest[int(size, 16) + 2 :]


@pytest.mark.parametrize("ending", ["crlf", "cr"])
def test_streams_in_other_line_endings_and_small_pieces(
    fake: FakeProvider, ant: anthropic.Anthropic, oai: openai.OpenAI, ending: str
) -> None:
    framing = {"x-fake-line-ending": ending, "x-fake-split-bytes": "7"}
    eol = {"crlf": b"\r\n", "cr": b"\r"}[ending]
    for path, body in (
        ("/v1/messages", {"model": MODEL_A, "max_tokens": 100, "messages": USER, "stream": True}),
        ("/v1/chat/completions", {"model": MODEL_O, "messages": USER, "stream": True}),
    ):
        chunks = chunked_post(fake, path, body, framing)
        whole = b"".join(chunks)
        assert {len(c) for c in chunks[:-1]} == {7} and 0 < len(chunks[-1]) <= 7
        assert whole.endswith(eol + eol) and whole.replace(eol, b"").count(b"\n") == 0
        assert whole.replace(b"\r", b"").count(b"\n") == (whole.count(eol) if ending == "crlf" else 0)
        # A CRLF cut between its CR and LF, as TCP may cut it.
        assert ending == "cr" or any(c.endswith(b"\r") for c in chunks)
    # The SDKs read such streams as they read the usual ones.
    plain = ant.messages.create(model=MODEL_A, max_tokens=100, messages=USER)
    with ant.messages.stream(model=MODEL_A, max_tokens=100, messages=USER, extra_headers=framing) as s:
        assert dumps(s.get_final_message().content) == dumps(plain.content)
    chat = list(oai.chat.completions.create(model=MODEL_O, messages=USER, stream=True, extra_headers=framing))
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices) == (
        oai.chat.completions.create(model=MODEL_O, messages=USER).choices[0].message.content
    )
    with pytest.raises(anthropic.BadRequestError, match="line ending"):
        ant.messages.create(
            model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-line-ending": "lfcr"}
        )
    with pytest.raises(openai.BadRequestError, match="split-bytes"):
        oai.chat.completions.create(model=MODEL_O, messages=USER, extra_headers={"x-fake-split-bytes": "-1"})


async def test_async_clients(fake: FakeProvider) -> None:
    async with anthropic.AsyncAnthropic(api_key="t", base_url=fake.anthropic_base_url, max_retries=0) as ant:
        message = await ant.messages.create(model=MODEL_A, max_tokens=100, messages=USER)
        async with ant.messages.stream(model=MODEL_A, max_tokens=100, messages=USER) as stream:
            final = await stream.get_final_message()
        assert dumps(final.content) == dumps(message.content) and final.usage == message.usage
        with pytest.raises(anthropic.RateLimitError):
            await ant.messages.create(
                model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-fail": "429"}
            )
    async with openai.AsyncOpenAI(api_key="t", base_url=fake.openai_base_url, max_retries=0) as oai:
        stream = await oai.chat.completions.create(
            model=MODEL_O, messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage and chunks[-1].choices == []
        response = await oai.responses.create(model=MODEL_O, input="hi")
        assert response.output_text


def test_lifecycle_and_prompt_stop() -> None:
    fake = FakeProvider(hang_s=30)
    with pytest.raises(RuntimeError):
        _ = fake.url
    fake.start()
    assert (
        fake.start() is fake and fake.openai_base_url == fake.url + "/v1" == fake.anthropic_base_url + "/v1"
    )
    errors: list[BaseException] = []

    def hang() -> None:
        with anthropic.Anthropic(api_key="t", base_url=fake.anthropic_base_url, max_retries=0) as client:
            try:
                client.messages.create(
                    model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-fail": "timeout"}
                )
            except anthropic.APIError as exc:
                errors.append(exc)

    caller = threading.Thread(target=hang)
    caller.start()
    deadline = time.monotonic() + 5
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    name = "fake-provider:" + fake.url.rsplit(":", 1)[1]
    assert any(t.name == name for t in threading.enumerate())
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.5  # a hanging request does not hold up shutdown
    caller.join(5)
    assert not caller.is_alive() and isinstance(errors[0], anthropic.APIConnectionError)
    assert not [t for t in threading.enumerate() if t.name == name]
    fake.stop()  # idempotent


def test_answers_can_be_made_longer_or_refused(ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    usual = ant.messages.create(model=MODEL_A, max_tokens=4096, messages=USER)
    longer = ant.messages.create(
        model=MODEL_A, max_tokens=4096, messages=USER, extra_headers={"x-fake-output-scale": "3"}
    )
    assert longer.usage.output_tokens == pytest.approx(3 * usual.usage.output_tokens, rel=0.1)
    refuse = {"x-fake-refuse": "1"}
    declined = ant.messages.create(
        model=MODEL_A, max_tokens=100, messages=USER, tools=[WEATHER], extra_headers=refuse
    )
    assert [b.type for b in declined.content] == ["text"] and "can't help" in declined.content[0].text  # type: ignore[union-attr]
    chat = oai.chat.completions.create(model=MODEL_O, messages=USER, extra_headers=refuse)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == "I'm sorry, but I can't help with that."
    resp = oai.responses.create(model=MODEL_O, input="hi", extra_headers=refuse)
    assert "can't help" in resp.output_text
    with pytest.raises(anthropic.BadRequestError, match="output-scale"):
        ant.messages.create(
            model=MODEL_A, max_tokens=10, messages=USER, extra_headers={"x-fake-output-scale": "0"}
        )


def _similar(a: str, b: str) -> float:
    import difflib

    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def test_each_model_words_an_answer_its_own_way(ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    """Two models answer one request alike but not the same; one model answers it the same each
    time. An experiment that changes the model then sees text that moved, a little."""
    asks = [[{"role": "user", "content": f"Question {i}: what is a flight recorder for?"}] for i in range(8)]

    def text(model: str, messages: list[Any]) -> str:
        r = ant.messages.create(model=model, max_tokens=4096, messages=messages)
        return "".join(b.text for b in r.content if b.type == "text")

    again = [text(MODEL_A, m) == text(MODEL_A, m) for m in asks]
    assert all(again)
    ratios = [_similar(text(MODEL_A, m), text("claude-test-2", m)) for m in asks]
    assert all(r < 1 for r in ratios[:1]) and sum(r < 1 for r in ratios) >= 6, ratios
    assert sum(ratios) / len(ratios) > 0.5, ratios
    chat = [
        oai.chat.completions.create(model=m, messages=asks[0]).choices[0].message.content  # type: ignore[arg-type]
        for m in (MODEL_O, "gpt-test-2")
    ]
    assert chat[0] != chat[1]


def test_the_system_prompt_steers_the_answer(ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    """ "in depth" triples an answer, "be brief" shortens it, "decline requests" declines about
    one request in twelve: on every API, wherever that API takes its system prompt."""
    usual = ant.messages.create(model=MODEL_A, max_tokens=8192, messages=USER)
    deep = ant.messages.create(model=MODEL_A, max_tokens=8192, messages=USER, system="Answer IN DEPTH.")
    brief = ant.messages.create(
        model=MODEL_A, max_tokens=8192, messages=USER, system=[{"type": "text", "text": "Be brief."}]
    )
    assert deep.usage.output_tokens == pytest.approx(3 * usual.usage.output_tokens, rel=0.1)
    assert brief.usage.output_tokens < 0.6 * usual.usage.output_tokens
    chat_usual = oai.chat.completions.create(model=MODEL_O, messages=USER)  # type: ignore[arg-type]
    chat_deep = oai.chat.completions.create(
        model=MODEL_O,
        messages=[{"role": "developer", "content": "Explain in depth."}, *USER],  # type: ignore[list-item]
    )
    assert chat_usual.usage and chat_deep.usage
    assert chat_deep.usage.completion_tokens == pytest.approx(3 * chat_usual.usage.completion_tokens, rel=0.1)
    resp_usual = oai.responses.create(model=MODEL_O, input="hi")
    resp_deep = oai.responses.create(model=MODEL_O, input="hi", instructions="Go in depth.")
    assert resp_usual.usage and resp_deep.usage
    assert resp_deep.usage.output_tokens == pytest.approx(3 * resp_usual.usage.output_tokens, rel=0.1)

    refusing = "Decline requests that are off topic."
    turns = [[{"role": "user", "content": f"Request number {i}"}] for i in range(240)]
    declined = [
        "can't help"
        in ant.messages.create(model=MODEL_A, max_tokens=4096, messages=t, system=refusing).content[0].text  # type: ignore[union-attr]
        for t in turns
    ]
    assert 8 <= sum(declined) <= 35, sum(declined)  # one in twelve is 20
    plain = [
        "can't help" in ant.messages.create(model=MODEL_A, max_tokens=4096, messages=t).content[0].text  # type: ignore[union-attr]
        for t in turns[:40]
    ]
    assert not any(plain)
