"""OpenAI's Responses API (`POST /responses`): what its requests, responses and streams say
of a call."""

from __future__ import annotations

from typing import Any

from llmlog.core.record import Call
from llmlog.providers.api import API, Decode, EventStream, Parsed, json_events, openai_usage, tool_input


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


RESPONSES = API(
    name="responses", provider="openai", path="/responses", sdk_path="/responses",
    split=split, read_stream=read_stream, read=read,
)  # fmt: skip
