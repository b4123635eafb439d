"""OpenAI's Chat Completions API (`POST /chat/completions`): what its requests, responses
and streams say of a call."""

from __future__ import annotations

from typing import Any

from llmlog.core.record import Call
from llmlog.providers.api import (
    API,
    Decode,
    EventStream,
    Parsed,
    decode_all,
    openai_usage,
    text_of,
    tool_input,
)

# Its finish reasons as stored: the deprecated `function_call` is a tool call too.
STOP = {"function_call": "tool_calls"}


def split(body: dict[str, Any], call: Call) -> None:
    messages = body.pop("messages", None)
    if isinstance(messages, list):
        system_parts = [
            text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
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


CHAT = API(
    name="chat", provider="openai", path="/chat/completions", sdk_path="/chat/completions",
    split=split, read_stream=read_stream, read=read,
)  # fmt: skip
