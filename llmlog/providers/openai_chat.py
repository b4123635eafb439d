"""OpenAI's Chat Completions API (`POST /chat/completions`): what its requests, responses
and streams say of a call, what tells its stored calls from the Responses API's, its request
again from a stored call, and its messages as a conversation's turns."""

from __future__ import annotations

from typing import Any

from llmlog.core.record import Call
from llmlog.providers.api import (
    API,
    Decode,
    EventStream,
    Parsed,
    Part,
    Signs,
    Turn,
    as_json,
    assistant,
    decode_all,
    image_part,
    openai_usage,
    refusal_words,
    text_of,
    text_part,
    text_words,
    tool_input,
)

# Its finish reasons as stored: the deprecated `function_call` is a tool call too.
STOP = {"function_call": "tool_calls"}
# The roles of the messages its system prompt is read from (and written back into).
SYSTEM_ROLES = ("system", "developer")
# Request parameters the Responses API does not take.
PARAMS = frozenset(
    {"messages", "max_tokens", "max_completion_tokens", "n", "response_format", "logprobs", "stop",
     "presence_penalty", "frequency_penalty", "logit_bias", "seed", "functions", "function_call",
     "modalities", "audio", "prediction", "web_search_options", "reasoning_effort", "verbosity"}
)  # fmt: skip


def split(body: dict[str, Any], call: Call) -> None:
    messages = body.pop("messages", None)
    if isinstance(messages, list):
        system_parts = [
            text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") in SYSTEM_ROLES
        ]
        call.system_prompt = "\n\n".join(system_parts) if system_parts else None
    call.messages = messages if isinstance(messages, list) else None


def read_stream(events: EventStream, decode: Decode) -> Parsed:
    completion: dict[str, Any] | None = None
    finished = False
    choices: dict[int, dict[str, Any]] = {}
    first: float | None = None
    error = None
    seen = []
    for event in events:
        if finished:
            continue  # nothing follows [DONE]; read to the end all the same, to see it ended well
        if event[2].strip() == b"[DONE]":
            finished = True
        else:
            seen.append(event)
    decoded = decode_all([data for _, _, data in seen], decode)
    for (t, _name, _data), chunk in zip(seen, decoded, strict=True):
        if not isinstance(chunk, dict):
            events.unreadable += 1
            continue
        if "error" in chunk and "choices" not in chunk:
            error = chunk["error"]
            continue
        if completion is None:
            completion = {k: v for k, v in chunk.items() if k not in ("choices", "usage", "object")}
            completion["object"] = "chat.completion"
        if chunk.get("usage"):
            completion["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or []:
            i = choice.get("index", 0)
            slot = choices.setdefault(
                i,
                {"index": i, "message": {"role": "assistant", "content": None}, "finish_reason": None},
            )
            msg = slot["message"]
            delta = choice.get("delta") or {}
            if delta.get("role"):
                msg["role"] = delta["role"]
            for key in ("content", "refusal"):
                if delta.get(key):
                    first = t if first is None else first
                    msg[key] = (msg.get(key) or "") + delta[key]
            for tc in delta.get("tool_calls") or []:
                first = t if first is None else first
                calls = msg.setdefault("tool_calls", [])
                j = tc.get("index", len(calls))
                while len(calls) <= j:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                if tc.get("id"):
                    calls[j]["id"] = tc["id"]
                fn = tc.get("function") or {}
                calls[j]["function"]["name"] += fn.get("name") or ""
                calls[j]["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]
    if completion is not None:
        completion["choices"] = [choices[i] for i in sorted(choices)]
    return completion, error, first, finished


def read(response: dict[str, Any], call: Call) -> None:
    tools = _tool_calls(response)
    choices = response.get("choices") or []
    if choices and choices[0].get("finish_reason"):
        reason = choices[0]["finish_reason"]
        call.stop_reason = STOP.get(reason, reason)
    call.tool_calls = tools or None
    openai_usage(response, call, "prompt_tokens", "completion_tokens")


def _tool_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for choice in response.get("choices") or []:
        for tc in (choice.get("message") or {}).get("tool_calls") or []:
            fn = tc.get("function") or {}
            found.append(
                {"id": tc.get("id"), "name": fn.get("name"), "input": tool_input(fn.get("arguments"))}
            )
    return found


def rejoin(call: Call, body: dict[str, Any], system_prompt: str | None) -> None:
    # A copy of the list, never of the messages: they may be shared with other calls.
    messages = list(call.messages) if call.messages is not None else None
    if system_prompt is not None and messages is not None:
        messages = _with_system(messages, system_prompt)
    body["messages"] = messages


def _with_system(messages: list[Any], text: str) -> list[Any]:
    """The system/developer messages (the logged system prompt is their text, joined) replaced
    by one carrying `text`, where the first of them was and in its role."""
    found = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") in SYSTEM_ROLES]
    role = messages[found[0]]["role"] if found else "system"
    at = found[0] if found else 0
    kept = [m for i, m in enumerate(messages) if i not in found]
    if text:
        kept.insert(at, {"role": role, "content": text})
    return kept


def answers(response: dict[str, Any]) -> bool:
    return "choices" in response or str(response.get("object") or "").startswith("chat.completion")


def answer(response: dict[str, Any]) -> list[Any] | None:
    if "choices" not in response:
        return None
    return [c.get("message") for c in response.get("choices") or []]


def part(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return text_part(block)
    if kind == "image_url":
        return image_part(block)
    return None


def turn(message: dict[str, Any], turn: Turn) -> None:
    """Its tool calls (`tool_calls`, beside the content), and a tool message's call."""
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        args, name = as_json(fn.get("arguments")), str(fn.get("name"))
        turn.parts.append(Part("tool_call", args, name=name, ref=tc.get("id")))
    if turn.role == "tool":
        ref = message.get("tool_call_id")
        turn.parts.insert(0, Part("note", f"(result of {ref})", ref=ref))


def words(block: dict[str, Any]) -> tuple[str, str] | None:
    kind = block.get("type")
    # An assistant message's content parts may be a refusal, as its `refusal` may be.
    return text_words(block) if kind == "text" else refusal_words(block) if kind == "refusal" else None


def refusal(message: dict[str, Any]) -> str | None:
    said = message.get("refusal")
    return said if isinstance(said, str) else None


SIGNS = Signs(
    answers=answers,
    params=PARAMS,
    tool=lambda tool: "function" in tool,  # {"type": "function", "function": {"name": …}}
    message=lambda m: m.get("role") == "tool" or "tool_calls" in m,
    parts=frozenset({"text", "image_url"}),
    # It takes any request of role/content messages: where nothing tells, the call was its.
    takes_any=True,
)

CHAT = API(
    name="chat", provider="openai", path="/chat/completions", sdk_path="/chat/completions",
    split=split, read_stream=read_stream, read=read, rejoin=rejoin, needs_messages=True,
    answer=answer, part=part, items=(), turn=turn, by_model=assistant,
    words=words, refusal=refusal, signs=SIGNS,
)  # fmt: skip
