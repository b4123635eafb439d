"""The provider APIs, one module each behind one registry (`llmlog.providers`): each is found
by its provider and path, reads its own request and response shapes into the columns every
API's calls share, is told a stored call was made to it, puts its request back together,
and reads its stored shapes as turns and refusals. (Streams and whole exchanges through the
real SDKs: test_capture, test_sse, test_parse; replay: test_replay.)"""

from __future__ import annotations

from typing import Any

import pytest

from llmlog.core.record import Call
from llmlog.providers import APIS, api_at, api_named, api_of, read_response, split_request
from llmlog.providers.api import Part, Turn


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
    # Stored responses are read in this order (a response in two shapes is Chat's, then Responses').
    assert list(APIS) == ["chat", "responses", "messages"]
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


OPENAI = Call(provider="openai", params={"model": "m"}, messages=[{"role": "user", "content": "q"}])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (Call(provider="anthropic", response={"choices": []}), "messages"),  # its provider's only API
        (OPENAI, "chat"),  # plain messages fit both: Chat takes any such request
        (OPENAI.replace(response={"object": "chat.completion.chunk"}), "chat"),
        (OPENAI.replace(response={"output": []}), "responses"),
        (OPENAI.replace(response={"choices": [], "output": []}), "chat"),
        (OPENAI.replace(params={"model": "m", "max_output_tokens": 5}), "responses"),
        (OPENAI.replace(params={"model": "m", "max_completion_tokens": 5}), "chat"),
        (OPENAI.replace(params={"max_tokens": 5, "max_output_tokens": 5}), "responses"),
        (OPENAI.replace(tools=[{"type": "function", "function": {"name": "f"}}]), "chat"),
        (OPENAI.replace(tools=[{"type": "web_search"}, {"type": "function", "name": "f"}]), "responses"),
        (
            OPENAI.replace(messages=[{"type": "function_call_output", "call_id": "c", "output": "x"}]),
            "responses",
        ),
        (OPENAI.replace(messages=[{"role": "tool", "tool_call_id": "c", "content": "x"}]), "chat"),
        (
            OPENAI.replace(messages=[{"role": "user", "content": [{"type": "input_text", "text": "q"}]}]),
            "responses",
        ),
        (
            OPENAI.replace(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "chat",
        ),
        (OPENAI.replace(system_prompt="s"), "responses"),  # no system message: it was `instructions`
        (OPENAI.replace(system_prompt="s", messages=[{"role": "developer", "content": "s"}]), "chat"),
    ],
)
def test_a_stored_call_is_told_the_api_it_was_made_to(call: Call, name: str) -> None:
    found = api_of(call)
    assert found is not None and found.name == name


def test_a_stored_call_of_another_provider_has_no_api() -> None:
    assert api_of(Call(provider="azure")) is None and api_of(Call()) is None


def _rejoined(api: str, call: Call, system_prompt: str | None = None) -> dict[str, Any]:
    body = dict(call.params or {})
    APIS[api].rejoin(call, body, system_prompt)
    return body


def test_each_api_puts_a_stored_calls_request_back_together() -> None:
    asked = [{"role": "user", "content": "q"}]
    blocks = [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]
    anthropic = Call(params={"model": "m", "system": blocks}, system_prompt="s", messages=asked)
    assert _rejoined("messages", anthropic) == {"model": "m", "system": blocks, "messages": asked}
    assert _rejoined("messages", anthropic.replace(params={"model": "m"})) == {
        "model": "m", "messages": asked, "system": "s"
    }  # fmt: skip
    edited = [{"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}}]
    assert _rejoined("messages", anthropic, "t")["system"] == edited  # the cache marker kept
    assert "system" not in _rejoined("messages", anthropic, "")

    chat = Call(
        params={"model": "m"}, system_prompt="s", messages=[{"role": "developer", "content": "s"}, *asked]
    )
    assert _rejoined("chat", chat) == {"model": "m", "messages": chat.messages}
    assert _rejoined("chat", chat, "t")["messages"] == [{"role": "developer", "content": "t"}, *asked]
    assert _rejoined("chat", chat, "")["messages"] == asked

    responses = Call(params={"model": "m"}, system_prompt="s", messages=asked)
    assert _rejoined("responses", responses) == {"model": "m", "input": asked, "instructions": "s"}
    assert _rejoined("responses", responses, "t")["instructions"] == "t"
    assert _rejoined("responses", responses.replace(messages=None), "") == {"model": "m"}
    assert (
        not APIS["responses"].needs_messages
        and APIS["chat"].needs_messages
        and APIS["messages"].needs_messages
    )
    # The list is a copy; the messages are the call's own.
    body = _rejoined("chat", chat)
    assert body["messages"] is not chat.messages and body["messages"][0] is chat.messages[0]


def test_each_api_reads_its_own_shapes_as_parts_of_turns() -> None:
    messages, chat, responses = APIS["messages"], APIS["chat"], APIS["responses"]
    assert messages.answer({"role": "assistant", "content": "hi"}) == [{"role": "assistant", "content": "hi"}]
    assert chat.answer({"choices": [{"message": {"role": "assistant"}}]}) == [{"role": "assistant"}]
    assert responses.answer({"output": [{"type": "reasoning"}]}) == [{"type": "reasoning"}]
    for api in APIS.values():
        assert api.answer({"id": "x"}) is None
        assert api.part({"type": "thinking", "thinking": "t"}) is None  # no API's part: raw JSON

    call = Part("tool_call", '{"a": 1}', name="f", ref="t1")
    assert messages.part({"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}) == call
    assert (
        responses.part({"type": "function_call", "call_id": "t1", "name": "f", "arguments": '{"a": 1}'})
        == call
    )
    assert chat.part({"type": "tool_use"}) is None and messages.part({"type": "function_call"}) is None
    result = Part("tool_result", "done", ref="t1")
    assert messages.part({"type": "tool_result", "tool_use_id": "t1", "content": "done"}) == result
    assert responses.part({"type": "function_call_output", "call_id": "t1", "output": "done"}) == result
    assert chat.part({"type": "image_url", "image_url": {"url": "data:xyz"}}) == Part(
        "image", "[image, 8 chars]"
    )
    assert (
        responses.part({"type": "output_text", "text": "hi"})
        == Part("text", "hi")
        == chat.part({"type": "text", "text": "hi"})
    )
    assert responses.items == ("function_call", "function_call_output") and not chat.items

    turn = Turn("tool")
    chat.turn(
        {"role": "tool", "tool_call_id": "c1", "tool_calls": [{"id": "c2", "function": {"name": "g"}}]}, turn
    )
    assert turn.parts == [
        Part("note", "(result of c1)", ref="c1"),
        Part("tool_call", "null", name="g", ref="c2"),
    ]
    for api in (messages, responses):
        api.turn({"role": "tool", "tool_calls": [{}]}, turn := Turn("tool"))
        assert turn.parts == []

    assert all(api.by_model({"role": "assistant"}) for api in APIS.values())
    assert responses.by_model({"type": "reasoning"}) and not chat.by_model({"type": "reasoning"})
    assert not any(api.by_model({"role": "user"}) for api in APIS.values())


def test_each_api_gives_the_words_and_refusal_of_its_answers() -> None:
    messages, chat, responses = APIS["messages"], APIS["chat"], APIS["responses"]
    assert (
        messages.words({"type": "text", "text": "hi"})
        == ("text", "hi")
        == chat.words({"type": "text", "text": "hi"})
    )
    assert responses.words({"type": "output_text", "text": "hi"}) == ("text", "hi")
    assert (
        responses.words({"type": "refusal", "refusal": "no"})
        == ("refusal", "no")
        == chat.words({"type": "refusal", "refusal": "no"})
    )
    assert messages.words({"type": "refusal", "refusal": "no"}) is None
    assert responses.words({"type": "text", "text": "hi"}) is None  # Responses answers in output_text
    assert chat.refusal({"role": "assistant", "refusal": "no"}) == "no"
    assert chat.refusal({"role": "assistant", "refusal": None}) is None
    assert messages.refusal({"refusal": "no"}) is None and responses.refusal({"refusal": "no"}) is None
