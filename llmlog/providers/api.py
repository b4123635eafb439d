"""What every provider API module gives (`llmlog.providers`): how its requests and responses
read into a call's columns, how its stream is put back into the response it stands for, how
its stored calls are told from another API's of the same provider and sent again, and how
its shapes read as a conversation, and how a call is put in its shapes from what another
record said of it (OTLP spans). And what they share to do it: a stream's events, decoded;
tool arguments sent as JSON text; a conversation's turns and their parts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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


@dataclass
class Part:
    """A piece of a conversation's turn, in plain text: a renderer escapes it for its medium."""

    kind: str  # "text", "tool_call", "tool_result", "image", "note" or "other" (raw JSON)
    text: str
    name: str | None = None  # a tool call's tool
    ref: str | None = None  # the tool call id a call or result carries


@dataclass
class Turn:
    role: str
    parts: list[Part] = field(default_factory=list)


@dataclass(frozen=True)
class Signs:
    """What tells a stored call of one API from a call of another API of the same provider
    (OpenAI has two), which its provider alone does not (`llmlog.providers.api_of`)."""

    # Its response's shape.
    answers: Callable[[dict[str, Any]], bool]
    # Request parameters no other API of its provider takes.
    params: frozenset[str]
    # A function tool (`"type": "function"`) in its shape.
    tool: Callable[[dict[str, Any]], bool]
    # A message or input item only it sends.
    message: Callable[[dict[str, Any]], bool]
    # Kinds of content parts only it uses.
    parts: frozenset[str]
    # Whether the call's system prompt can only have been sent apart from its messages, as
    # it sends one (Responses' `instructions`).
    system: Callable[[Call], bool] = lambda call: False
    # It takes every request of plain role/content messages: a call nothing tells apart was
    # made to it, and the other APIs' signs are looked for first.
    takes_any: bool = False


class Said(Protocol):
    """What a record of a call said of it beside its content (a span's attributes, read by
    capture under each convention's names), None where nothing said it: asked for only where
    an API's shape needs it, as most do not."""

    @property
    def requested(self) -> Any:
        """The model asked for."""

    @property
    def streamed(self) -> bool:
        """Whether the response was streamed."""

    @property
    def id(self) -> Any:
        """The response's id."""

    @property
    def model(self) -> Any:
        """The model that answered (or, unsaid, the one asked for)."""

    @property
    def service_tier(self) -> Any: ...

    @property
    def fingerprint(self) -> Any:
        """The system fingerprint of the answer (OpenAI's)."""


# Each of `values` made into `make(value)`, remembered by the value's identity: what capture
# gives an API's shaping so that the calls of a conversation, which re-send the same message
# objects, shape each once (`llmlog.capture.shapes`).
Memo = Callable[[list[Any], Callable[[Any], Any]], list[Any]]
# A request's messages, system prompt, tools and params, as a call's columns hold them.
Request = tuple[list[Any] | None, str | None, list[Any] | None, dict[str, Any]]
RequestFrom = Callable[[list[Any] | None, str | None, list[Any] | None, dict[str, Any], Said, Memo], Request]
AnswerFrom = Callable[
    [dict[str, Any] | None, list[dict[str, Any]] | None, str | None, Said], dict[str, Any] | None
]


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
    # A stored call's request body again (replay), `split` undone: its messages and system
    # prompt put back into `body` (the call's params, its model and tools already there),
    # the system prompt's text replaced by `system_prompt` unless that is None ("" sends none).
    rejoin: Callable[[Call, dict[str, Any], str | None], None]
    # Whether a request to it needs messages (a Responses request may continue a stored
    # response instead).
    needs_messages: bool
    # Reading stored calls as turns (`llmlog.providers.conversation`), shape by shape: a
    # stored call's API is not always known (OTLP brings any provider's calls, in whichever
    # of these shapes the instrumentation used), so each API reads what is in its shape and
    # leaves the rest to the others.
    # Its response's messages (None: the response is not in its shape).
    answer: Callable[[dict[str, Any]], list[Any] | None]
    # A content block of a kind of its own, as a part (None: not one of its kinds).
    part: Callable[[dict[str, Any]], Part | None]
    # Kinds of its input items that are a content block themselves, read by `part` after
    # the item's content (Responses' tool calls and their outputs).
    items: tuple[str, ...]
    # What a message in its shape carries beside its content, added to the message's turn.
    turn: Callable[[dict[str, Any], Turn], None]
    # Whether a message (or input item) is the model's own turn, in its shape.
    by_model: Callable[[dict[str, Any]], bool]
    # The words of a content block of its answers, for the refusal rules: ("text", words)
    # or ("refusal", words); None for a block of another kind.
    words: Callable[[dict[str, Any]], tuple[str, str] | None]
    # A refusal a message of its answers carries beside its content (Chat's `refusal`).
    refusal: Callable[[dict[str, Any]], str | None]
    # A call in its shapes from what a record said of it where its request and response did
    # not come as sent (OTLP spans in the GenAI conventions: turns of content blocks, as
    # Messages has them, a system prompt said apart, tool definitions, parameters under the
    # conventions' names).
    # Its response (`answer_from(body, output, reason, said)`): `body`, the response the record
    # carried whole, in its shape; else one made of `output` (the answer's turns), `reason`
    # (the stop reason as stored) and what was `said`; None when there is nothing to make it of.
    answer_from: AnswerFrom
    # Its request (`request_from(messages, system_prompt, tools, params, said, memo)`) as a
    # call's columns hold it, the turns shaped through `memo`. None: no record is put in
    # its shape unless it came as sent (the conventions do not tell Responses' calls from
    # Chat's).
    request_from: RequestFrom | None
    # Bodies as a record carried them as sent (OpenInference's `input.value` and
    # `output.value`): whether a request body is one of its requests; whether a response
    # body is its answer in the non-streamed shape; and whether that answer is whole (its id
    # and usage with it), not a stream's parts an instrumentation put together.
    takes: Callable[[dict[str, Any]], bool]
    sent: Callable[[dict[str, Any]], bool]
    whole: Callable[[dict[str, Any]], bool]
    # Its own stop reasons in the words every API's calls share (what it maps as it reads).
    stop: Mapping[str, str]
    # Told from another API of its provider by these; None: its provider's only API.
    signs: Signs | None = None


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


def arguments(value: Any) -> Any:
    """Tool call arguments as OpenAI's APIs send them: JSON text (compact, as OpenAI writes it)."""
    if value is None or isinstance(value, str):
        return value if value is not None else "{}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def blocks_text(content: Any) -> str | None:
    """The text blocks of a list of content blocks, joined by lines; None for what is no list."""
    if not isinstance(content, list):
        return None
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def output_blocks(message: dict[str, Any]) -> list[Any]:
    """An answer's turn as content blocks: its blocks, or its text as one."""
    body = message.get("content")
    return body if isinstance(body, list) else ([{"type": "text", "text": str(body)}] if body else [])


def as_json(value: Any) -> str:
    """A value as a conversation part shows it: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def content_turn(message: dict[str, Any], turn: Turn) -> None:
    """Nothing beside the content: for an API whose messages carry all they say in it."""


def no_refusal(message: dict[str, Any]) -> str | None:
    return None


def text_words(block: dict[str, Any]) -> tuple[str, str]:
    return "text", str(block.get("text") or "")


def refusal_words(block: dict[str, Any]) -> tuple[str, str]:
    return "refusal", str(block.get("refusal") or "")


def assistant(message: dict[str, Any]) -> bool:
    return message.get("role") == "assistant"


# The blocks more than one API has, read alike whichever API's they are. A tool call's
# arguments are `input` (Anthropic) or `arguments` (Responses), its id `id` or `call_id`; a
# tool result's content `content` or `output`; an image's data a `source` or an `image_url`.


def text_part(block: dict[str, Any]) -> Part:
    return Part("text", str(block.get("text", "")))


def tool_call_part(block: dict[str, Any]) -> Part:
    args = block.get("input", block.get("arguments"))
    return Part(
        "tool_call", as_json(args), name=str(block.get("name")), ref=block.get("id") or block.get("call_id")
    )


def tool_result_part(block: dict[str, Any]) -> Part:
    content = block.get("content", block.get("output"))
    return Part("tool_result", as_json(content), ref=block.get("tool_use_id") or block.get("call_id"))


def image_part(block: dict[str, Any]) -> Part:
    source = block.get("source") or block.get("image_url") or {}
    data = (source.get("data") or source.get("url") or "") if isinstance(source, dict) else ""
    return Part("image", f"[image, {len(str(data)):,} chars]")
