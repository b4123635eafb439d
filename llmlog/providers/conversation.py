"""A call's messages and response as a conversation: turns of typed parts, for any renderer.

The three APIs shape messages differently (Anthropic content blocks, OpenAI chat messages
with `tool_calls`, Responses items); the CLI and the web UI both show them as turns whose
parts are text, tool calls, tool results and image placeholders. Parts hold plain text: a
renderer escapes it for its medium.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmlog.core.record import Call


@dataclass
class Part:
    kind: str  # "text", "tool_call", "tool_result", "image", "note" or "other" (raw JSON)
    text: str
    name: str | None = None  # a tool call's tool
    ref: str | None = None  # the tool call id a call or result carries


@dataclass
class Turn:
    role: str
    parts: list[Part] = field(default_factory=list)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def block_part(block: Any) -> Part:
    """One content block, as what it is."""
    if isinstance(block, str):
        return Part("text", block)
    if not isinstance(block, dict):
        return Part("other", _json(block))
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text"):
        return Part("text", str(block.get("text", "")))
    if kind in ("tool_use", "server_tool_use", "function_call"):
        args = block.get("input", block.get("arguments"))
        ref = block.get("id") or block.get("call_id")
        return Part("tool_call", _json(args), name=str(block.get("name")), ref=ref)
    if kind in ("tool_result", "function_call_output"):
        content = block.get("content", block.get("output"))
        return Part("tool_result", _json(content), ref=block.get("tool_use_id") or block.get("call_id"))
    if kind in ("image", "image_url", "input_image"):
        source = block.get("source") or block.get("image_url") or {}
        data = (source.get("data") or source.get("url") or "") if isinstance(source, dict) else ""
        return Part("image", f"[image, {len(str(data)):,} chars]")
    return Part("other", _json(block))


def message_turn(msg: Any) -> Turn:
    if not isinstance(msg, dict):
        return Turn("?", [Part("other", _json(msg))])
    turn = Turn(str(msg.get("role") or msg.get("type") or "?"))
    content = msg.get("content")
    if isinstance(content, list):
        turn.parts.extend(block_part(b) for b in content)
    elif content is not None:
        turn.parts.append(Part("text", str(content)))
    if msg.get("type") in ("function_call", "function_call_output"):
        turn.parts.append(block_part(msg))
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        args, name = _json(fn.get("arguments")), str(fn.get("name"))
        turn.parts.append(Part("tool_call", args, name=name, ref=tc.get("id")))
    if turn.role == "tool":
        ref = msg.get("tool_call_id")
        turn.parts.insert(0, Part("note", f"(result of {ref})", ref=ref))
    return turn


def response_messages(call: Call) -> list[Any]:
    if isinstance(call.response, str):  # sealed (regulated mode), read without its key
        return [call.response]
    r = call.response or {}
    if "choices" in r:
        return [c.get("message") for c in r.get("choices") or []]
    if "output" in r:
        return list(r.get("output") or [])
    if "content" in r:
        return [{"role": r.get("role", "assistant"), "content": r.get("content")}]
    return []


def conversation(call: Call) -> list[Turn]:
    return [message_turn(m) for m in call.messages or []]


def response_turns(call: Call) -> list[Turn]:
    return [message_turn(m) for m in response_messages(call)]


def gist(turns: list[Turn], width: int = 160) -> str:
    """Turns as one short line of plain text, for lists: text as is, a tool call as
    `→ name(…)`, a result as `← …`."""
    pieces: list[str] = []
    for turn in turns:
        for p in turn.parts:
            if p.kind == "tool_call":
                pieces.append(f"→ {p.name}({p.text})")
            elif p.kind == "tool_result":
                pieces.append(f"← {p.text}")
            elif p.kind != "note":
                pieces.append(p.text)
    line = " ".join(" ".join(pieces).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def last_user_turn(call: Call) -> list[Turn]:
    """What the caller said last: the final message when it is the user's (or a tool
    result), for a line in a list of turns."""
    turns = conversation(call)
    return turns[-1:] if turns and turns[-1].role != "assistant" else []
