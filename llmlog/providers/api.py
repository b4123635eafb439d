"""What every provider API module gives (`llmlog.providers`): how its requests and responses
read into a call's columns, and how its stream is put back into the response it stands for.
And what they share to do it: a stream's events, decoded; tool arguments sent as JSON text."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from llmlog.core.record import Call, parse_json

Decode = Callable[[bytes | str], Any]
# A stream put back together: the response, the error it ended with, the first token's time
# (ms), and whether it finished.
Parsed = tuple[dict[str, Any] | None, Any, float | None, bool]


class EventStream(Protocol):
    """The server-sent events of a response, (arrival ms, event name, data), and how many of
    them the API's reader could not read (what they carried is lost)."""

    unreadable: int

    def __iter__(self) -> Iterator[tuple[float, str, bytes]]: ...


@dataclass(frozen=True)
class API:
    """One provider API: its name in a call's records (`Exchange.api`), its provider, the path
    its model calls are POSTed to (what a request's path ends with), and how it reads."""

    name: str
    provider: str
    path: str
    # What its SDK POSTs to, relative to the SDK's base URL (Anthropic's base URL has no /v1,
    # OpenAI's has): where a replay sends a request again.
    sdk_path: str
    # The request's API-specific parts into the call: messages and system prompt, taken out
    # of `body` (what is left is the call's params).
    split: Callable[[dict[str, Any], Call], None]
    read_stream: Callable[[EventStream, Decode], Parsed]
    # The response's (non-streamed shape) API-specific parts into the call: its tool calls
    # (as our {id, name, input}), its stop reason in the words all APIs share, its usage.
    read: Callable[[dict[str, Any], Call], None]


def strict(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:  # e.g. an integer past 64 bits
        raise msgspec.DecodeError(str(exc)) from None


def json_events(
    seen: Iterable[tuple[float, str, bytes]], decode: Decode, events: EventStream
) -> Iterator[tuple[float, str, dict[str, Any]]]:
    """(time, type, payload) for each event whose data is a JSON object; others are counted
    in `events.unreadable`: what they carried is lost, so the call is not whole."""
    seen = list(seen)
    for (t, name, _), ev in zip(seen, decode_all([data for _, _, data in seen], decode), strict=True):
        if isinstance(ev, dict):
            yield t, ev.get("type", name), ev
        else:
            events.unreadable += 1


def decode_all(datas: list[bytes], decode: Decode) -> list[Any]:
    """Each event's data decoded: in one decoder call when they are all JSON, as usual."""
    try:
        values = strict(b"[" + b",".join(datas) + b"]")
        if isinstance(values, list) and len(values) == len(datas):
            return values
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    # One is not JSON ("[DONE]", a keep-alive), or holds more than one value: one by one.
    return [decode(data) for data in datas]


def text_of(content: Any) -> str:
    """Plain text of a message content: a string, or the text parts of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def tool_input(arguments: Any) -> Any:
    if isinstance(arguments, str):
        parsed = parse_json(arguments) if arguments else {}
        return parsed if parsed is not None else arguments
    return arguments


def openai_usage(response: dict[str, Any], call: Call, tokens_in: str, tokens_out: str) -> None:
    """Usage as OpenAI's APIs report it, each under its own names (`prompt_tokens` and
    `completion_tokens` in Chat, `input_tokens` and `output_tokens` in Responses): all input
    counted, the cached part of it in `<tokens_in>_details`."""
    used = response.get("usage")
    if not isinstance(used, dict):
        return
    total_in = used.get(tokens_in)
    details = used.get(f"{tokens_in}_details") or {}
    if isinstance(total_in, int):
        call.input_tokens = total_in
        call.cache_read_tokens = details.get("cached_tokens") or 0
        # OpenAI caches automatically and bills no cache writes.
        call.cache_creation_tokens = 0
    out = used.get(tokens_out)
    if isinstance(out, int):
        call.output_tokens = out
