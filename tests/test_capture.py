"""Every column, for sync, async, streamed, tool-using and failing calls of both real SDKs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import anthropic
import httpx2
import openai
import pytest

import llmlog
from llmlog.demo.fake_provider import FakeProvider
from tests.conftest import Recorder

SYSTEM = "You are a careful support agent. " * 40
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
]
OPENAI_TOOLS = [
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


def a_client(fake: FakeProvider, **kw: object) -> anthropic.Anthropic:
    return llmlog.wrap(
        anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=0, **kw)
    )


def o_client(fake: FakeProvider, **kw: object) -> openai.OpenAI:
    return llmlog.wrap(openai.OpenAI(api_key="sk-test", base_url=fake.openai_base_url, max_retries=0, **kw))


def assert_recent(ts: datetime) -> None:
    assert ts.tzinfo is not None
    assert datetime.now(UTC) - timedelta(seconds=30) < ts <= datetime.now(UTC)


# ---------------------------------------------------------------- Anthropic


def test_anthropic_sync_every_column(recorder: Recorder, fake: FakeProvider) -> None:
    client = a_client(fake)
    with llmlog.context(
        session_id="s1",
        user_id="u1",
        feature="support",
        prompt_template_version="support@v2",
        metadata={"tier": "gold"},
        tags=["beta"],
        trace_id="t1",
        parent_id="p1",
    ):
        msg = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=400,
            stop_sequences=["END"],
            system=SYSTEM,
            messages=[{"role": "user", "content": "Where is my order?"}],
            extra_headers={"x-fake-latency-ms": "30"},
        )
    assert isinstance(msg, anthropic.types.Message)  # the SDK's own type, untouched
    c = recorder.one()
    uuid.UUID(c.id)
    assert (c.session_id, c.user_id, c.feature, c.prompt_template_version) == (
        "s1",
        "u1",
        "support",
        "support@v2",
    )
    assert (c.trace_id, c.parent_id, c.tags) == ("t1", "p1", ["beta"])
    assert c.metadata is not None and c.metadata["tier"] == "gold"
    assert c.metadata["llmlog"]["request_id"] == msg._request_id
    assert_recent(c.timestamp)
    assert (c.provider, c.model) == ("anthropic", msg.model)
    assert c.system_prompt == SYSTEM
    assert c.messages == [{"role": "user", "content": "Where is my order?"}]
    assert c.tools is None
    assert c.params == {"max_tokens": 400, "model": "claude-sonnet-4-6", "stop_sequences": ["END"]}
    assert anthropic.types.Message.model_validate(c.response) == msg
    assert c.tool_calls is None
    assert c.stop_reason == {"end_turn": "stop", "max_tokens": "length"}[msg.stop_reason]
    u = msg.usage
    assert c.input_tokens == u.input_tokens + (u.cache_read_input_tokens or 0) + (
        u.cache_creation_input_tokens or 0
    )
    assert (c.output_tokens, c.cache_read_tokens, c.cache_creation_tokens) == (u.output_tokens, 0, 0)
    # claude-sonnet-4-6: $3 / MTok in, $15 / MTok out.
    assert c.cost_usd == pytest.approx(c.input_tokens * 3e-6 + c.output_tokens * 15e-6)
    assert c.rate_card and c.rate_card.startswith("genai-prices ")
    assert c.latency_ms is not None and c.latency_ms >= 30
    assert c.first_token_ms == c.latency_ms  # not streamed: first token is the whole answer
    assert c.error is None


def test_anthropic_stream_helper_reassembles(recorder: Recorder, fake: FakeProvider) -> None:
    client = a_client(fake)
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=500,
        messages=[{"role": "user", "content": "Tell me a story"}],
        extra_headers={"x-fake-first-token-ms": "60", "x-fake-chunk-ms": "2"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    c = recorder.one()
    assert c.params is not None and c.params["stream"] is True
    assert c.response is not None
    assert c.response["content"] == [b.model_dump(mode="json", exclude_none=True) for b in final.content]
    assert c.response["content"][0]["text"] == text
    assert c.output_tokens == final.usage.output_tokens  # from message_delta, overlaying message_start
    assert c.input_tokens == final.usage.input_tokens
    assert c.first_token_ms is not None and c.latency_ms is not None
    assert 60 <= c.first_token_ms < c.latency_ms
    assert c.metadata is None or "incomplete" not in c.metadata.get("llmlog", {})


def test_anthropic_raw_stream_and_tool_use(recorder: Recorder, fake: FakeProvider) -> None:
    client = a_client(fake)
    events = list(
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=300,
            tools=TOOLS,
            messages=[{"role": "user", "content": "Find order 42"}],
            stream=True,
        )
    )
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    c = recorder.one()
    assert c.tools == TOOLS
    assert c.stop_reason == "tool_calls"
    assert c.tool_calls is not None and len(c.tool_calls) == 1
    call = c.tool_calls[0]
    assert call["name"] == "lookup_order" and isinstance(call["input"], dict) and "order_id" in call["input"]
    starts = [
        e.content_block
        for e in events
        if e.type == "content_block_start" and e.content_block.type == "tool_use"
    ]
    assert call["id"] == starts[0].id


def test_anthropic_cache_tokens_and_cost(recorder: Recorder, fake: FakeProvider) -> None:
    client = a_client(fake)
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    for _ in range(2):
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            system=system,
            messages=[{"role": "user", "content": "hi"}],
        )
    first, second = recorder.calls()
    assert first.system_prompt == SYSTEM
    assert first.params is not None and first.params["system"] == system  # blocks kept for an exact re-send
    assert first.cache_creation_tokens and first.cache_creation_tokens > 0 and first.cache_read_tokens == 0
    assert second.cache_read_tokens == first.cache_creation_tokens and second.cache_creation_tokens == 0
    assert first.input_tokens == second.input_tokens  # ours counts all input, cached or not
    # claude-sonnet-4-6: input $3, output $15, cache read $0.30, 1-hour cache write $6 per MTok.
    uncached = first.input_tokens - first.cache_creation_tokens
    assert first.cost_usd == pytest.approx(
        (uncached * 3 + first.cache_creation_tokens * 6 + first.output_tokens * 15) / 1e6
    )
    assert second.cost_usd == pytest.approx(
        (uncached * 3 + second.cache_read_tokens * 0.3 + second.output_tokens * 15) / 1e6
    )


async def test_anthropic_async(recorder: Recorder, fake: FakeProvider) -> None:
    client = llmlog.wrap(
        anthropic.AsyncAnthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=0)
    )
    with llmlog.context(feature="async-feature"):
        msg = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hello"}]
        )
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hello again"}]
        ) as stream:
            final = await stream.get_final_message()
    assert isinstance(msg, anthropic.types.Message)
    a, b = recorder.calls()
    assert a.feature == b.feature == "async-feature"
    assert anthropic.types.Message.model_validate(a.response) == msg
    assert b.response is not None and b.response["content"][0]["text"] == final.content[0].text
    assert b.output_tokens == final.usage.output_tokens and b.cost_usd is not None


def test_with_raw_response_and_non_model_calls(recorder: Recorder, fake: FakeProvider) -> None:
    client = a_client(fake)
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    )
    assert raw.http_response.status_code == 200
    parsed = raw.parse()
    count = client.messages.count_tokens(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}]
    )
    assert count.input_tokens > 0
    c = recorder.one()  # count_tokens is not a model call
    assert anthropic.types.Message.model_validate(c.response) == parsed


# ---------------------------------------------------------------- OpenAI


def test_openai_chat_every_column(recorder: Recorder, fake: FakeProvider) -> None:
    client = o_client(fake)
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Find order 7"}]
    with llmlog.context(feature="orders", user_id="u9"):
        resp = client.chat.completions.create(
            model="gpt-4.1", messages=messages, tools=OPENAI_TOOLS, temperature=0, seed=3
        )
    assert isinstance(resp, openai.types.chat.ChatCompletion)
    c = recorder.one()
    assert (c.provider, c.model, c.feature, c.user_id) == ("openai", resp.model, "orders", "u9")
    assert c.system_prompt == "Be terse."
    assert c.messages == messages
    assert c.tools == OPENAI_TOOLS
    assert c.params == {"model": "gpt-4.1", "temperature": 0, "seed": 3}
    assert c.response == resp.model_dump(mode="json", exclude_unset=True) or c.response["id"] == resp.id
    tc = resp.choices[0].message.tool_calls[0]
    assert c.tool_calls == [{"id": tc.id, "name": "lookup_order", "input": json.loads(tc.function.arguments)}]
    assert c.stop_reason == "tool_calls"
    assert resp.usage is not None
    assert (c.input_tokens, c.output_tokens) == (resp.usage.prompt_tokens, resp.usage.completion_tokens)
    assert (c.cache_read_tokens, c.cache_creation_tokens) == (0, 0)
    # gpt-4.1: $2 / MTok in, $8 / MTok out.
    assert c.cost_usd == pytest.approx((c.input_tokens * 2 + c.output_tokens * 8) / 1e6)
    assert c.prompt_template_version == llmlog.core.prompts.text_hash("Be terse.")


def test_openai_cached_input_cost(recorder: Recorder, fake: FakeProvider) -> None:
    client = o_client(fake)
    messages = [{"role": "system", "content": SYSTEM * 6}, {"role": "user", "content": "hi"}]
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    _, second = recorder.calls()
    assert second.cache_read_tokens and second.cache_read_tokens % 128 == 0
    # gpt-4o: input $2.50, cached input $1.25, output $10 per MTok.
    expected = (
        (second.input_tokens - second.cache_read_tokens) * 2.5
        + second.cache_read_tokens * 1.25
        + second.output_tokens * 10
    ) / 1e6
    assert second.cost_usd == pytest.approx(expected)


def test_openai_chat_stream_usage_only_when_asked(recorder: Recorder, fake: FakeProvider) -> None:
    client = o_client(fake)
    body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "stream please"}]}
    text = "".join(
        ch.choices[0].delta.content or ""
        for ch in client.chat.completions.create(stream=True, **body)
        if ch.choices
    )
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **body))
    without, with_usage = recorder.calls()
    # We never add include_usage ourselves: the caller's request is sent as written.
    assert "stream_options" not in fake.requests[0].body
    assert without.response is not None
    assert without.response["choices"][0]["message"]["content"] == text
    assert (without.input_tokens, without.output_tokens, without.cost_usd) == (None, None, None)
    usage = chunks[-1].usage
    assert usage is not None and with_usage.input_tokens == usage.prompt_tokens
    assert with_usage.output_tokens == usage.completion_tokens and with_usage.cost_usd is not None
    assert with_usage.first_token_ms is not None and with_usage.first_token_ms <= with_usage.latency_ms


def test_openai_chat_stream_tool_call_arguments(recorder: Recorder, fake: FakeProvider) -> None:
    client = o_client(fake)
    list(
        client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "order 5"}],
            tools=OPENAI_TOOLS,
            stream=True,
        )
    )
    c = recorder.one()
    assert c.tool_calls is not None and c.tool_calls[0]["name"] == "lookup_order"
    assert isinstance(c.tool_calls[0]["input"], dict)  # argument pieces reassembled into JSON
    assert c.stop_reason == "tool_calls"


def test_openai_responses(recorder: Recorder, fake: FakeProvider) -> None:
    client = o_client(fake)
    resp = client.responses.create(model="gpt-5-mini", instructions="Answer briefly.", input="What is WAL?")
    with client.responses.stream(model="gpt-5-mini", input=[{"role": "user", "content": "and again"}]) as s:
        for _ in s:
            pass
        final = s.get_final_response()
    fn = client.responses.create(
        model="gpt-5-mini",
        input="look up order 3",
        tools=[{"type": "function", **OPENAI_TOOLS[0]["function"]}],
    )
    a, b, f = recorder.calls()
    assert a.system_prompt == "Answer briefly."
    assert a.messages == [{"role": "user", "content": "What is WAL?"}]
    assert a.response is not None and a.response["id"] == resp.id and a.stop_reason == "stop"
    assert resp.usage is not None and (a.input_tokens, a.output_tokens) == (
        resp.usage.input_tokens,
        resp.usage.output_tokens,
    )
    assert a.cost_usd is not None
    assert b.response is not None and b.response["id"] == final.id
    assert b.output_tokens == final.usage.output_tokens and b.first_token_ms is not None
    call = next(o for o in fn.output if o.type == "function_call")
    assert f.tool_calls == [{"id": call.call_id, "name": "lookup_order", "input": json.loads(call.arguments)}]
    assert f.stop_reason == "tool_calls"


async def test_openai_async(recorder: Recorder, fake: FakeProvider) -> None:
    client = llmlog.wrap(openai.AsyncOpenAI(api_key="sk-test", base_url=fake.openai_base_url, max_retries=0))
    resp = await client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "a"}])
    stream = await client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "b"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass
    a, b = recorder.calls()
    assert a.response is not None and a.response["id"] == resp.id
    assert b.output_tokens is not None and b.params is not None and b.params["stream"] is True


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("kind", "a_exc", "o_exc", "etype", "status"),
    [
        ("429", anthropic.RateLimitError, openai.RateLimitError, "rate_limit", 429),
        ("500", anthropic.InternalServerError, openai.InternalServerError, None, 500),
        ("529", anthropic.APIStatusError, openai.APIStatusError, None, None),
        ("timeout", anthropic.APITimeoutError, openai.APITimeoutError, "timeout", None),
        ("drop", anthropic.APIConnectionError, openai.APIConnectionError, "connection_error", None),
    ],
)
def test_failures_recorded_and_raised_unchanged(
    recorder: Recorder,
    fake: FakeProvider,
    kind: str,
    a_exc: type,
    o_exc: type,
    etype: str | None,
    status: int | None,
) -> None:
    a = a_client(fake, timeout=0.5)
    o = o_client(fake, timeout=0.5)
    with pytest.raises(a_exc):
        a.messages.create(
            model="claude-haiku-4-5",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-fail": kind},
        )
    with pytest.raises(o_exc):
        o.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "x"}], extra_headers={"x-fake-fail": kind}
        )
    for c in recorder.calls():
        assert c.error is not None
        if etype:
            assert c.error["type"].startswith(etype)
        if status:
            assert c.error["status"] == status
        if kind == "529":
            assert c.error["status"] in (529, 503)
        assert c.latency_ms is not None and c.latency_ms > 0
        assert (
            c.response is None and c.input_tokens is None and c.cost_usd is None and c.first_token_ms is None
        )
        assert c.messages == [{"role": "user", "content": "x"}]
    if kind == "timeout":
        assert all(c.latency_ms >= 500 for c in recorder.calls())


def test_retries_are_recorded_per_attempt(recorder: Recorder, fake: FakeProvider) -> None:
    client = llmlog.wrap(
        anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=2)
    )
    fake.fail_next("429")
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    failed, ok = recorder.calls()
    assert failed.error is not None and failed.error["status"] == 429
    assert ok.error is None and ok.metadata is not None and ok.metadata["llmlog"]["retry"] == 1


def test_stream_dropped_midway_is_an_error(recorder: Recorder, fake: FakeProvider) -> None:
    def consume(client: anthropic.Anthropic) -> type[BaseException]:
        try:
            for _ in client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=300,
                messages=[{"role": "user", "content": "long"}],
                stream=True,
                extra_headers={"x-fake-fail": "drop-midstream"},
            ):
                pass
        except Exception as exc:
            return type(exc)
        raise AssertionError("the stream did not fail")

    plain = anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=0)
    # The caller sees exactly what the unwrapped SDK raises.
    assert consume(a_client(fake)) is consume(plain)
    c = recorder.one()
    assert c.error is not None and c.error["type"] == "connection_error" and c.error["status"] == 200
    assert c.response is not None  # what arrived before the drop is kept


def test_abandoned_stream_recorded_as_incomplete(recorder: Recorder, fake: FakeProvider) -> None:
    client = o_client(fake)
    stream = client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "a long answer please"}],
        stream=True,
        extra_headers={"x-fake-chunk-ms": "5"},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    c = recorder.one()
    assert c.metadata is not None and c.metadata["llmlog"]["incomplete"] is True
    assert c.error is None
    assert c.response is not None and c.response["choices"][0]["message"]["content"]


# ---------------------------------------------------------------- wrapping


def test_wrap_keeps_mounts_and_is_idempotent(recorder: Recorder, fake: FakeProvider) -> None:
    # A user's own httpx2 client with per-URL transports (how proxies are configured) keeps them.
    mounted = httpx2.HTTPTransport(retries=0)
    http = httpx2.Client(mounts={"http://127.0.0.1": mounted})
    client = anthropic.Anthropic(
        api_key="sk-test", base_url=fake.anthropic_base_url, http_client=http, max_retries=0
    )
    assert llmlog.wrap(llmlog.wrap(client)) is client
    transport = next(iter(http._mounts.values()))
    assert isinstance(transport, llmlog.capture.wrap.RecordingTransport) and transport.inner is mounted
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert len(recorder.calls()) == 1  # wrapped twice, recorded once


def test_wrap_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match=r"anthropic\.Anthropic"):
        llmlog.wrap(object())


def test_user_id_hashed_with_secret(db_path: str, fake: FakeProvider) -> None:
    llmlog.configure(db=db_path, user_id_secret="s3cret")
    try:
        client = a_client(fake)
        with llmlog.context(user_id="alice@example.com"):
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        c = Recorder(db_path).one()
        import hashlib
        import hmac

        assert c.user_id == hmac.new(b"s3cret", b"alice@example.com", hashlib.sha256).hexdigest()
        with open(db_path, "rb") as f:
            assert b"alice@example.com" not in f.read()
    finally:
        llmlog.configure(db=db_path)


def test_stream_dropped_without_close_is_still_recorded(recorder: Recorder, fake: FakeProvider) -> None:
    import gc

    client = o_client(fake)
    stream = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "never finished"}], stream=True
    )
    next(iter(stream))
    del stream
    gc.collect()
    c = recorder.one()
    assert c.metadata is not None and c.metadata["llmlog"]["incomplete"] is True
