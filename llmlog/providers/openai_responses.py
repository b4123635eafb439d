"""OpenAI's Responses API (`POST /responses`): what its requests, responses and streams say
of a call, what tells its stored calls from the Chat API's, its request again from a stored
call, its input and output items as a conversation's turns, and its answer made of what a
span said of it."""

from __future__ import annotations

from typing import Any

from llmlog.core.record import Call
from llmlog.providers.api import (
    API,
    Decode,
    EventStream,
    Parsed,
    Part,
    Said,
    Signs,
    arguments,
    content_turn,
    image_part,
    json_events,
    no_refusal,
    openai_usage,
    output_blocks,
    refusal_words,
    text_part,
    text_words,
    tool_call_part,
    tool_input,
    tool_result_part,
)

# Request parameters the Chat API does not take.
PARAMS = frozenset(
    {"instructions", "input", "max_output_tokens", "previous_response_id", "text", "truncation",
     "include", "reasoning", "background", "conversation", "prompt", "max_tool_calls"}
)  # fmt: skip


def split(body: dict[str, Any], call: Call) -> None:
    messages = body.pop("input", None)
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    instructions = body.pop("instructions", None)
    call.system_prompt = instructions if isinstance(instructions, str) else None
    call.messages = messages if isinstance(messages, list) else None


_RESPONSE_DELTAS = (
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.refusal.delta",
)
_RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


def read_stream(events: EventStream, decode: Decode) -> Parsed:
    seen = list(events)
    # A finished stream's last event carries the whole response: when the events are named,
    # only that one needs decoding, and the first delta's name gives the first-token time.
    if seen and all(name for _, name, _ in seen) and not any(name == "error" for _, name, _ in seen):
        ending = [(t, data) for t, name, data in seen if name in _RESPONSE_ENDS]
        if ending:
            final = decode(ending[-1][1])
            if isinstance(final, dict) and isinstance(final.get("response"), dict):
                first = next((t for t, name, _ in seen if name in _RESPONSE_DELTAS), None)
                return final["response"], None, first, True
    return _from_every_event(seen, decode, events)


def _from_every_event(seen: list[tuple[float, str, bytes]], decode: Decode, events: EventStream) -> Parsed:
    """Every event decoded: a stream cut short is rebuilt from what it had sent."""
    snapshot: dict[str, Any] | None = None
    done_items: dict[int, Any] = {}
    partial_text: dict[int, str] = {}
    final: dict[str, Any] | None = None
    first: float | None = None
    error = None
    for t, kind, ev in json_events(seen, decode, events):
        if kind in _RESPONSE_DELTAS:
            first = t if first is None else first
            if kind == "response.output_text.delta":
                i = ev.get("output_index", 0)
                partial_text[i] = partial_text.get(i, "") + ev.get("delta", "")
        elif kind == "response.output_item.done":
            done_items[ev.get("output_index", len(done_items))] = ev.get("item")
        elif kind in _RESPONSE_ENDS:
            final = ev.get("response")
        elif kind in ("response.created", "response.in_progress"):
            snapshot = ev.get("response")
        elif kind == "error":
            error = ev
    if final is None and snapshot is not None:
        # Cut short: rebuild what the caller saw from the finished items and partial text.
        final = dict(snapshot)
        output = dict(done_items)
        for i, text in partial_text.items():
            output.setdefault(
                i,
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]},
            )
        final["output"] = [output[i] for i in sorted(output)]
        return final, error, first, False
    return final, error, first, final is not None


def read(response: dict[str, Any], call: Call) -> None:
    tools = _tool_calls(response)
    status = response.get("status")
    if status == "completed":
        call.stop_reason = "tool_calls" if tools else "stop"
    elif status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        call.stop_reason = "length" if reason == "max_output_tokens" else reason
    elif status == "failed":
        call.stop_reason = "error"
    call.tool_calls = tools or None
    openai_usage(response, call, "input_tokens", "output_tokens")


def _tool_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": item.get("call_id"), "name": item.get("name"), "input": tool_input(item.get("arguments"))}
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "function_call"
    ]


def rejoin(call: Call, body: dict[str, Any], system_prompt: str | None) -> None:
    if call.messages is not None:
        # A copy of the list, never of the messages: they may be shared with other calls.
        body["input"] = list(call.messages)
    text = call.system_prompt if system_prompt is None else system_prompt
    if text:
        body["instructions"] = text


def answers(response: dict[str, Any]) -> bool:
    return "output" in response or response.get("object") == "response"


def answer(response: dict[str, Any]) -> list[Any] | None:
    return list(response.get("output") or []) if "output" in response else None


def part(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind in ("input_text", "output_text"):
        return text_part(block)
    if kind == "function_call":
        return tool_call_part(block)
    if kind == "function_call_output":
        return tool_result_part(block)
    if kind == "input_image":
        return image_part(block)
    return None


def by_model(item: dict[str, Any]) -> bool:
    return item.get("role") == "assistant" or item.get("type") in ("function_call", "reasoning")


def words(block: dict[str, Any]) -> tuple[str, str] | None:
    kind = block.get("type")
    return text_words(block) if kind == "output_text" else refusal_words(block) if kind == "refusal" else None


def sent_apart(call: Call) -> bool:
    """A system prompt, and no system message among the messages: it was `instructions`."""
    messages = [m for m in call.messages or [] if isinstance(m, dict)]
    return call.system_prompt is not None and not any(
        m.get("role") in ("system", "developer") for m in messages
    )


def answer_from(
    body: dict[str, Any] | None, output: list[dict[str, Any]] | None, reason: str | None, said: Said
) -> dict[str, Any] | None:
    """The response the span carried, or one made of what it said of the answer: its text
    as a message item, its tool calls as function calls."""
    if body is not None:
        return body
    if not output:
        return None
    items: list[dict[str, Any]] = []
    for m in output:
        blocks = output_blocks(m)
        texts = [
            {"type": "output_text", "text": b.get("text", "")} for b in blocks if b.get("type") == "text"
        ]
        if texts:
            items.append({"type": "message", "role": "assistant", "content": texts})
        items += [
            {"type": "function_call", "call_id": b.get("id"), "name": b.get("name"),
             "arguments": arguments(b.get("input"))}
            for b in blocks
            if b.get("type") == "tool_use"
        ]  # fmt: skip
    return {"object": "response", "output": items}


SIGNS = Signs(
    answers=answers,
    params=PARAMS,
    tool=lambda tool: "function" not in tool,  # {"type": "function", "name": …}
    message=lambda m: "type" in m,  # its items say what they are
    parts=frozenset({"input_text", "input_image", "input_file", "output_text"}),
    system=sent_apart,
)


def takes(body: dict[str, Any]) -> bool:
    """What only its requests hold: `input` or `instructions`, and no `messages`."""
    return ("input" in body or "instructions" in body) and "messages" not in body


def sent(body: dict[str, Any]) -> bool:
    return body.get("object") == "response"


def whole(body: dict[str, Any]) -> bool:
    """Its usage may come apart from the response (`response.completed`): the id is enough."""
    return bool(body.get("id"))


RESPONSES = API(
    name="responses", provider="openai", path="/responses", sdk_path="/responses",
    split=split, read_stream=read_stream, read=read, rejoin=rejoin, needs_messages=False,
    answer=answer, part=part, items=("function_call", "function_call_output"), turn=content_turn,
    by_model=by_model, words=words, refusal=no_refusal, answer_from=answer_from, request_from=None,
    signs=SIGNS,
    takes=takes, sent=sent, whole=whole, stop={},
)  # fmt: skip
