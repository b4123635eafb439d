"""A call's messages and response as a conversation: turns of typed parts, for any renderer.

The APIs shape messages differently (Anthropic content blocks, OpenAI chat messages with
`tool_calls`, Responses items), and a stored call's API is not always known: OTLP brings
any provider's calls in whichever of these shapes its instrumentation used (Anthropic's
blocks for another provider's model, say). So each response, message and block is read by
the API whose shape it is (`API.answer`, `API.turn`, `API.part`), whichever API the call
went to. The CLI and the web UI both show them as turns whose parts are text, tool calls,
tool results and image placeholders. Parts hold plain text: a renderer escapes it for its
medium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from llmlog.core.record import Call
from llmlog.core.sealed import well_sealed
from llmlog.providers import APIS
from llmlog.providers.api import Part, Turn, as_json

__all__ = [
    "Part", "Turn", "block_part", "by_model", "conversation", "gist", "last_user_turn", "message_turn",
    "response_messages", "response_turns", "said_and_answered",
]  # fmt: skip


def block_part(block: Any) -> Part:
    """One content block, as what it is."""
    if isinstance(block, str):
        return Part("text", block)
    if not isinstance(block, dict):
        return Part("other", as_json(block))
    for api in APIS.values():
        if (part := api.part(block)) is not None:
            return part
    return Part("other", as_json(block))


def message_turn(msg: Any) -> Turn:
    if not isinstance(msg, dict):
        return Turn("?", [Part("other", as_json(msg))])
    turn = Turn(str(msg.get("role") or msg.get("type") or "?"))
    content = msg.get("content")
    if isinstance(content, list):
        turn.parts.extend(block_part(b) for b in content)
    elif content is not None:
        turn.parts.append(Part("text", str(content)))
    if any(msg.get("type") in api.items for api in APIS.values()):
        turn.parts.append(block_part(msg))
    for api in APIS.values():
        api.turn(msg, turn)
    return turn


def by_model(message: Any) -> bool:
    """Whether a message (or input item) is the model's own turn, in any API's shape."""
    return isinstance(message, dict) and any(api.by_model(message) for api in APIS.values())


def response_messages(call: Call) -> list[Any]:
    if isinstance(call.response, str):  # sealed (regulated mode), read without its key
        return [call.response]
    r = call.response or {}
    for api in APIS.values():
        if (messages := api.answer(r)) is not None:
            return messages
    return []


def conversation(call: Call) -> list[Turn]:
    return [message_turn(m) for m in call.messages or []]


def response_turns(call: Call) -> list[Turn]:
    return [message_turn(m) for m in response_messages(call)]


def _gist_pieces(turns: list[Turn]) -> Iterator[str]:
    for turn in turns:
        for p in turn.parts:
            if well_sealed(p.text):  # regulated mode, read without the key: not its cipher text
                yield "(sealed)"
            elif p.kind == "tool_call":
                yield f"→ {p.name}({p.text})"
            elif p.kind == "tool_result":
                yield f"← {p.text}"
            elif p.kind != "note":
                yield p.text


def gist(turns: list[Turn], width: int = 160) -> str:
    """Turns as one short line of plain text, for lists: text as is, a tool call as
    `→ name(…)`, a result as `← …`, sealed text as `(sealed)`; whitespace runs as one space,
    and past `width` characters cut with `…`."""
    # A piece of up to a few lines is split whole; a longer one word by word, a word at most
    # past the width: the work stops soon after `width` characters, whatever the size of the
    # text (a list of a hundred calls may hold megabytes).
    short = 8 * (width + 1)
    word = re.compile(rf"\S{{1,{width + 1}}}")
    words: list[str] = []
    size = -1  # of the words joined by spaces
    for piece in _gist_pieces(turns):
        if len(piece) <= short:
            found = piece.split()
            words += found
            size += sum(map(len, found)) + len(found)
        else:
            for m in word.finditer(piece):
                words.append(m.group())
                size += len(words[-1]) + 1
                if size > width:
                    break
        if size > width:
            return " ".join(words)[: width - 1] + "…"
    return " ".join(words)


def last_user_turn(call: Call) -> list[Turn]:
    """What the caller said last: the final message when it is the user's (or a tool
    result), for a line in a list of turns."""
    turns = conversation(call)
    return turns[-1:] if turns and turns[-1].role != "assistant" else []


def said_and_answered(call: Call, width: int = 160) -> tuple[str, str]:
    """What the caller said last and what the model answered, a `gist` each: a call as a
    line of a list shows it (the calls list, a session's turns, `llmlog calls --preview`)."""
    return gist(last_user_turn(call), width), gist(response_turns(call), width)
