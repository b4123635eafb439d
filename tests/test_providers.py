"""The provider APIs, one module each behind one registry (`llmlog.providers`): each is found
by its provider and path, reads its own request and response shapes into the columns every
API's calls share, is told a stored call was made to it, puts its request back together,
reads its stored shapes as turns and refusals, and puts a call in its shapes from what a
span said of it. (Streams and whole exchanges through the
real SDKs: test_capture, test_sse, test_parse; replay: test_replay.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from llmlog import providers
from llmlog.core.encryption import Keyring
from llmlog.core.record import Call
from llmlog.providers import APIS, api_at, api_named, api_of, read_response, split_request
from llmlog.providers.api import Part, Turn
from llmlog.providers.conversation import gist, last_user_turn, response_turns


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


def test_a_gist_is_one_short_line_of_whatever_was_said() -> None:
    said = [
        Turn("user", [Part("text", "  first\n\n line\t"), Part("tool_result", "ok"), Part("note", "(x)")])
    ]
    assert gist(said) == "first line ← ok"
    assert gist([Turn("assistant", [Part("tool_call", '{"id": 7}', name="lookup")])]) == '→ lookup({"id": 7})'
    # Cut at the width, however long the text, a word longer than the line too.
    line = gist([Turn("user", [Part("text", "word " * 1_000_000 + "end")])], 20)
    assert line == "word word word word…" and len(line) == 20
    assert gist([Turn("user", [Part("text", " " * 100_000 + "x" * 100_000)])], 10) == "x" * 9 + "…"
    assert gist([Turn("user", [Part("text", "a" * 30), Part("text", "b")])], 32) == "a" * 30 + " b"
    # Regulated mode, read without the key: sealed text is said to be sealed, not shown as
    # its cipher text.
    ring = Keyring.parse("k1:" + "A" * 43 + "=")
    call = ring.seal_call(
        Call(
            id="c",
            timestamp=datetime(2026, 3, 1, tzinfo=UTC),
            messages=[{"role": "user", "content": "the secret"}],
            response={"role": "assistant", "content": [{"type": "text", "text": "the answer"}]},
        )
    )
    assert gist(last_user_turn(call)) == "(sealed)" and gist(response_turns(call)) == "(sealed)"
    opened = ring.open_call(call)
    assert (gist(last_user_turn(opened)), gist(response_turns(opened))) == ("the secret", "the answer")


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


@dataclass
class Said:
    """What a span said beside a call's content (`providers.api.Said`), as given."""

    requested: Any = None
    streamed: bool = False
    id: Any = None
    model: Any = None
    service_tier: Any = None
    fingerprint: Any = None


def _no_memo(values: list[Any], make: Any) -> list[Any]:
    return [make(v) for v in values]


_18C = {"type": "text", "text": "18C"}
# A conversation in the GenAI conventions' turns (content blocks, as Messages has them).
_TURNS: list[Any] = [
    {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
    {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "P"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": [_18C]}]},
]  # fmt: skip
_OUTPUT: list[dict[str, Any]] = [
    {"role": "assistant", "content": [_18C, {"type": "tool_use", "id": "c2", "name": "w", "input": {}}]},
    {"role": "assistant", "content": "and sunny"},
]  # fmt: skip


def test_chat_makes_its_request_of_the_conventions_turns() -> None:
    chat = APIS["chat"]
    assert chat.request_from is not None
    tools = [{"type": "function", "name": "w", "parameters": {}, "extra": 1}, {"type": "web_search"}]
    params = {"temperature": 0.2, "stop_sequences": ["x"], "choice.count": 2, "model": "asked"}
    messages, system, shaped_tools, shaped_params = chat.request_from(
        _TURNS, None, tools, params, Said(requested="gpt-4o", streamed=True), _no_memo
    )
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city":"P"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
    ]  # fmt: skip
    assert system == "be brief"  # read from the system messages, as `split` reads it
    assert shaped_tools == [
        {"type": "function", "function": {"name": "w", "parameters": {}}},
        {"type": "web_search"},
    ]
    # Its names for the conventions' parameters; the model said apart first, the one among
    # the parameters kept; a stream said so.
    assert shaped_params == {"model": "asked", "temperature": 0.2, "stop": ["x"], "n": 2, "stream": True}
    assert next(iter(shaped_params)) == "model"

    # A system prompt said apart is put first; none and no messages is none.
    messages, system, _, shaped_params = chat.request_from(
        [{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": "f"}}]}],
        "sys",
        None,
        {},
        Said(),
        _no_memo,
    )
    assert system == "sys" and shaped_params == {}
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ]  # fmt: skip
    assert chat.request_from(None, None, None, {}, Said(), _no_memo) == (None, None, None, {})
    assert chat.request_from(None, "s", [], {}, Said(), _no_memo)[:3] == (
        [{"role": "system", "content": "s"}],
        "s",
        [],
    )


def test_chat_shapes_each_turn_and_tool_list_through_the_memo() -> None:
    seen: list[Any] = []

    def memo(values: list[Any], make: Any) -> list[Any]:
        seen.extend(values)
        return [make(v) for v in values]

    tools = [{"type": "function", "name": "w"}]
    chat = APIS["chat"]
    assert chat.request_from is not None
    chat.request_from(_TURNS, None, tools, {}, Said(), memo)
    assert [id(v) for v in seen] == [id(m) for m in _TURNS] + [id(tools)]


def test_messages_keeps_the_system_prompt_apart_from_its_messages() -> None:
    messages = APIS["messages"]
    assert messages.request_from is not None
    tools = [{"name": "w", "input_schema": {}}]
    params = {"stop_sequences": ["x"]}
    said = Said(requested="claude", streamed=True)
    made = messages.request_from(_TURNS, "be brief", tools, params, said, _no_memo)
    assert made == (_TURNS[1:], "be brief", tools, params)  # nothing renamed, no model added
    turns = [{"role": "developer", "content": "d"}, *_TURNS]
    assert messages.request_from(turns, None, None, {}, said, _no_memo)[0] == _TURNS[1:]
    unled = _TURNS[1:]  # no system message leads: the turns as they came
    assert messages.request_from(unled, None, None, {}, said, _no_memo)[0] is unled
    assert messages.request_from([], None, None, {}, said, _no_memo)[0] == []
    # The conventions do not tell a Responses call from a Chat call: none is made in its shape.
    assert APIS["responses"].request_from is None


def test_each_api_makes_its_answer_of_the_output_blocks() -> None:
    said = Said(id="r1", model="m1", service_tier="default", fingerprint="fp")
    chat = APIS["chat"].answer_from(None, _OUTPUT, "tool_calls", said)
    assert chat == {
        "id": "r1",
        "object": "chat.completion",
        "model": "m1",
        "choices": [
            {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "18C",
             "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}},
            {"index": 1, "finish_reason": None, "message": {"role": "assistant", "content": "and sunny"}},
        ],
        "service_tier": "default",
        "system_fingerprint": "fp",
    }  # fmt: skip
    assert APIS["chat"].answer_from(None, _OUTPUT[1:], None, Said()) == {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "finish_reason": None, "message": {"role": "assistant", "content": "and sunny"}}
        ],
    }
    assert APIS["messages"].answer_from(None, _OUTPUT, "tool_calls", said) == {
        "role": "assistant",
        "content": [*_OUTPUT[0]["content"], {"type": "text", "text": "and sunny"}],
    }
    assert APIS["responses"].answer_from(None, _OUTPUT, "tool_calls", said) == {
        "object": "response",
        "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "18C"}]},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "and sunny"}],
            },
        ],
    }
    for api in APIS.values():  # nothing to make it of
        assert api.answer_from(None, None, "stop", said) is None
        assert api.answer_from(None, [], "stop", said) is None


def test_each_api_takes_the_answer_a_span_carried_whole() -> None:
    said = Said(id="other")
    for name, body in [
        ("messages", {"type": "message", "content": []}),
        ("responses", {"object": "response", "output": []}),
        ("chat", {"object": "chat.completion", "choices": []}),
    ]:
        assert APIS[name].answer_from(body, _OUTPUT, "stop", said) == body
    # A stream the instrumentation put together is a completion, as wrap stores it; the
    # body it came in is left as it was.
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": []}
    assert APIS["chat"].answer_from(chunk, None, None, said) == {**chunk, "object": "chat.completion"}
    assert chunk["object"] == "chat.completion.chunk"


def test_each_api_knows_its_bodies_as_a_record_carried_them() -> None:
    """What a span carried as sent: the API a request is for (by what only its requests
    hold), whether a response is that API's, and whether it is whole or a stream's parts."""
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    responses = {"model": "gpt-4o", "input": "hi", "instructions": "be brief"}
    messages = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert providers.api_taking("openai", chat) is providers.APIS["chat"]
    assert providers.api_taking("openai", responses) is providers.APIS["responses"]
    assert providers.api_taking("anthropic", messages) is providers.APIS["messages"]
    assert providers.api_taking("anthropic", responses) is None
    assert providers.api_taking("openai", {"model": "m"}) is None
    assert providers.api_taking("someone-else", chat) is None
    answers = {
        "chat": {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1}},
        "responses": {"id": "r1", "object": "response", "output": []},
        "messages": {"id": "m1", "type": "message", "content": [], "usage": {"input_tokens": 1}},
    }
    for name, body in answers.items():
        api = providers.APIS[name]
        assert [other for other, b in answers.items() if api.sent(b)] == [name]
        assert api.whole(body)
        # Put together from a stream by an instrumentation: no id (and for two, no usage).
        assert not api.whole({k: v for k, v in body.items() if k != "id"})
    assert not providers.APIS["chat"].whole({"id": "c1", "choices": []})
    assert providers.APIS["responses"].whole({"id": "r1", "object": "response"})  # usage may come apart


def test_stop_reasons_in_any_apis_words_read_in_the_words_they_share() -> None:
    assert providers.shared_stop("end_turn") == "stop"
    assert providers.shared_stop("tool_use") == "tool_calls"
    assert providers.shared_stop("function_call") == "tool_calls"
    assert providers.shared_stop("refusal") == "content_filter"
    assert providers.shared_stop("stop") is None  # already in the shared words
    assert providers.shared_stop("something new") is None


def test_a_request_a_span_carried_is_read_as_its_apis_whoever_serves_it() -> None:
    """Azure's OpenAI service (the conventions' `azure.ai.openai`) serves OpenAI's APIs: a
    Responses request it carried is read as one, as a Chat request is."""
    from llmlog.capture.sent import sent_request

    def carried(body: dict[str, Any]) -> dict[str, Any]:
        return {"input.mime_type": "application/json", "input.value": json.dumps(body)}

    responses = {"model": "gpt-4o", "input": "hi"}
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    for provider in ("openai", "azure.ai.openai"):
        assert sent_request(carried(responses), provider) == ("responses", responses)
        assert sent_request(carried(chat), provider) == ("chat", chat)
    assert sent_request(carried(responses), "anthropic") is None
