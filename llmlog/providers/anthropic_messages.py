"""Anthropic's Messages API (`POST /v1/messages`): what its requests, responses and streams
say of a call, its request again from a stored call, its content blocks as parts of a
conversation's turns, and a call in its shapes from what a span said of it."""

from __future__ import annotations

from typing import Any

from llmlog.core.record import Call
from llmlog.providers.api import (
    API,
    Decode,
    EventStream,
    Memo,
    Parsed,
    Part,
    Request,
    Said,
    assistant,
    content_turn,
    image_part,
    json_events,
    no_refusal,
    output_blocks,
    text_of,
    text_part,
    text_words,
    tool_call_part,
    tool_input,
    tool_result_part,
)

# Its stop reasons as stored, in the words every API's calls share.
STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "pause",
}


def split(body: dict[str, Any], call: Call) -> None:
    messages = body.pop("messages", None)
    system = body.get("system")
    if isinstance(system, str):
        call.system_prompt = body.pop("system")
    elif isinstance(system, list):
        # Block form (cache_control, citations): keep the blocks for an exact re-send.
        call.system_prompt = text_of(system)
    call.messages = messages if isinstance(messages, list) else None


def read_stream(events: EventStream, decode: Decode) -> Parsed:
    message: dict[str, Any] | None = None
    finished = False
    blocks: dict[int, dict[str, Any]] = {}
    partial_json: dict[int, str] = {}
    first: float | None = None
    error = None
    for t, kind, ev in json_events(events, decode, events):
        if kind == "message_start" and isinstance(ev.get("message"), dict):
            message = dict(ev["message"])
            message["usage"] = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            blocks[ev.get("index", len(blocks))] = dict(ev.get("content_block") or {})
        elif kind == "content_block_delta":
            first = t if first is None else first
            i = ev.get("index", 0)
            block = blocks.setdefault(i, {"type": "text", "text": ""})
            delta = ev.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif dtype == "input_json_delta":
                partial_json[i] = partial_json.get(i, "") + delta.get("partial_json", "")
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif dtype == "signature_delta":
                block["signature"] = delta.get("signature")
            elif dtype == "citations_delta":
                block.setdefault("citations", []).append(delta.get("citation"))
        elif kind == "content_block_stop":
            i = ev.get("index", 0)
            if i in partial_json and i in blocks:
                blocks[i]["input"] = tool_input(partial_json.pop(i))
        elif kind == "message_delta" and message is not None:
            for key, value in (ev.get("delta") or {}).items():
                message[key] = value
            for key, value in (ev.get("usage") or {}).items():
                # The final usage overlays message_start's (cumulative counts).
                if value is not None:
                    message["usage"][key] = value
        elif kind == "message_stop":
            finished = True
        elif kind == "error":
            error = ev.get("error") or ev
    for i, buf in partial_json.items():  # stream cut inside a tool_use block
        if i in blocks:
            blocks[i]["input"] = tool_input(buf)
    if message is not None:
        message["content"] = [blocks[i] for i in sorted(blocks)]
    return message, error, first, finished


def read(response: dict[str, Any], call: Call) -> None:
    tools = _tool_calls(response)
    reason = response.get("stop_reason")
    call.stop_reason = STOP.get(reason, reason) if reason else None
    call.tool_calls = tools or None
    _usage(response, call)


def _tool_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": block.get("id"), "name": block.get("name"), "input": block.get("input")}
        for block in response.get("content") or []
        if isinstance(block, dict) and block.get("type") in ("tool_use", "server_tool_use")
    ]


def _usage(response: dict[str, Any], call: Call) -> None:
    used = response.get("usage")
    if not isinstance(used, dict):
        return
    uncached = used.get("input_tokens")
    write = used.get("cache_creation_input_tokens") or 0
    read = used.get("cache_read_input_tokens") or 0
    if isinstance(uncached, int):
        # Anthropic reports only the uncached part as input_tokens; ours counts all input.
        call.input_tokens = uncached + write + read
        call.cache_read_tokens = read
        call.cache_creation_tokens = write
    out = used.get("output_tokens")
    if isinstance(out, int):
        call.output_tokens = out


def rejoin(call: Call, body: dict[str, Any], system_prompt: str | None) -> None:
    # A copy of the list, never of the messages: they may be shared with other calls.
    body["messages"] = list(call.messages) if call.messages is not None else None
    if system_prompt is None:
        if "system" not in body and call.system_prompt is not None:
            body["system"] = call.system_prompt  # the string form; blocks stay in params
    else:
        logged = body.pop("system", None)
        if system_prompt:
            body["system"] = _edited_system(system_prompt, logged)


def _edited_system(text: str, logged: Any) -> Any:
    """An edited system prompt; in block form when the logged one was, keeping the cache
    marker of its last block, so caching behaves as it did."""
    if not isinstance(logged, list) or not logged:
        return text
    block: dict[str, Any] = {"type": "text", "text": text}
    last = logged[-1]
    if isinstance(last, dict) and "cache_control" in last:
        block["cache_control"] = last["cache_control"]
    return [block]


def answer(response: dict[str, Any]) -> list[Any] | None:
    if "content" not in response:
        return None
    return [{"role": response.get("role", "assistant"), "content": response.get("content")}]


def part(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return text_part(block)
    if kind in ("tool_use", "server_tool_use"):
        return tool_call_part(block)
    if kind == "tool_result":
        return tool_result_part(block)
    if kind == "image":
        return image_part(block)
    return None


def words(block: dict[str, Any]) -> tuple[str, str] | None:
    return text_words(block) if block.get("type") == "text" else None


def answer_from(
    body: dict[str, Any] | None, output: list[dict[str, Any]] | None, reason: str | None, said: Said
) -> dict[str, Any] | None:
    """The response the span carried, or one of the output's content blocks (its stop reason,
    id and usage are in their columns)."""
    if body is not None:
        return body
    if not output:
        return None
    return {"role": "assistant", "content": [b for m in output for b in output_blocks(m)]}


def request_from(
    messages: list[Any] | None,
    system_prompt: str | None,
    tools: list[Any] | None,
    params: dict[str, Any],
    said: Said,
    memo: Memo,
) -> Request:
    """The turns are in its shape already; but it takes the system prompt apart from the
    messages, so the system (or developer) messages they lead with are not among them."""
    if messages and (leading := _leading_system(messages)):
        messages = messages[leading:]
    return messages, system_prompt, tools, params


def _leading_system(messages: list[Any]) -> int:
    n = 0
    while (
        n < len(messages)
        and isinstance(messages[n], dict)
        and messages[n].get("role") in ("system", "developer")
    ):
        n += 1
    return n


def takes(body: dict[str, Any]) -> bool:
    return isinstance(body.get("messages"), list)


def sent(body: dict[str, Any]) -> bool:
    return body.get("type") == "message"


def whole(body: dict[str, Any]) -> bool:
    return bool(body.get("id")) and isinstance(body.get("usage"), dict)


MESSAGES = API(
    name="messages", provider="anthropic", path="/messages", sdk_path="/v1/messages",
    split=split, read_stream=read_stream, read=read, rejoin=rejoin, needs_messages=True,
    answer=answer, part=part, items=(), turn=content_turn, by_model=assistant,
    words=words, refusal=no_refusal, answer_from=answer_from, request_from=request_from,
    takes=takes, sent=sent, whole=whole, stop=STOP,
)  # fmt: skip
