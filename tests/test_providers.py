"""The provider APIs, one module each behind one registry (`llmlog.providers`): each is found
by its provider and path, and reads its own request and response shapes into the columns
every API's calls share. (Streams and whole exchanges through the real SDKs: test_capture,
test_sse, test_parse.)"""

from __future__ import annotations

import pytest

from llmlog.core.record import Call
from llmlog.providers import APIS, api_at, api_named, read_response, split_request


@pytest.mark.parametrize(
    ("provider", "path", "name"),
    [
        ("anthropic", "/v1/messages", "messages"),
        ("anthropic", "/proxy/v1/messages/", "messages"),
        ("openai", "/v1/chat/completions", "chat"),
        ("openai", "/v1/responses", "responses"),
        ("anthropic", "/v1/messages/count_tokens", None),
        ("anthropic", "/v1/chat/completions", None),
        ("openai", "/v1/messages", None),
        ("openai", "/v1/models", None),
    ],
)
def test_an_api_is_found_by_its_provider_and_path(provider: str, path: str, name: str | None) -> None:
    found = api_at(provider, path)
    assert (found.name if found else None) == name


def test_a_provider_other_than_anthropic_is_read_as_speaking_openais_apis() -> None:
    from llmlog.capture.wrap import classify

    assert classify("azure", "POST", "https://x.example/openai/chat/completions?api-version=1") == "chat"
    assert classify("azure", "POST", "https://x.example/v1/responses") == "responses"
    assert classify("azure", "POST", "https://x.example/v1/messages") is None
    assert classify("anthropic", "GET", "https://x.example/v1/messages") is None


def test_every_api_is_registered_once_under_its_name() -> None:
    assert set(APIS) == {"messages", "chat", "responses"}
    assert all(api.name == name for name, api in APIS.items())
    assert api_named("something else") is APIS["responses"]  # as OTLP's guessed names were read


def test_each_api_reads_its_request_into_the_shared_columns() -> None:
    anthropic, chat, responses = Call(), Call(), Call()
    split_request(
        "messages",
        {"model": "m", "system": "be brief", "messages": [{"role": "user"}], "top_k": 3},
        anthropic,
    )
    split_request(
        "chat",
        {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user"}], "n": 1},
        chat,
    )
    split_request(
        "responses", {"model": "m", "instructions": "be brief", "input": "hi", "store": False}, responses
    )
    for call in (anthropic, chat, responses):
        assert call.model == "m" and call.system_prompt == "be brief" and call.messages
    assert anthropic.params == {"model": "m", "top_k": 3}  # a system prompt as text has its column
    assert chat.params == {"model": "m", "n": 1}
    assert responses.messages == [{"role": "user", "content": "hi"}] and responses.params == {
        "model": "m",
        "store": False,
    }


def test_each_api_reads_its_response_into_the_shared_columns() -> None:
    anthropic, chat, responses = Call(), Call(), Call()
    read_response(
        "messages",
        {
            "model": "claude-x",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7},
        },
        anthropic,
    )
    read_response(
        "chat",
        {
            "choices": [
                {
                    "message": {
                        "tool_calls": [{"id": "t1", "function": {"name": "f", "arguments": '{"a": 1}'}}]
                    },
                    "finish_reason": "function_call",
                }
            ],
            "usage": {
                "prompt_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 5},
                "completion_tokens": 7,
            },
        },
        chat,
    )
    read_response(
        "responses",
        {
            "status": "completed",
            "output": [{"type": "function_call", "call_id": "t1", "name": "f", "arguments": '{"a": 1}'}],
            "usage": {"input_tokens": 15, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 7},
        },
        responses,
    )
    for call in (anthropic, chat, responses):
        assert call.tool_calls == [{"id": "t1", "name": "f", "input": {"a": 1}}]
        assert call.stop_reason == "tool_calls"
        assert (call.input_tokens, call.cache_read_tokens, call.output_tokens) == (15, 5, 7)
    assert anthropic.model == "claude-x" and anthropic.cache_creation_tokens == 0
