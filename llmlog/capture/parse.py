"""Turn what the HTTP layer saw (`Exchange`) into a `Call`: request, response, usage, timing.

Runs on the writer's thread. Understands Anthropic Messages and OpenAI Chat Completions and
Responses, streamed (SSE, reassembled into the non-streamed shape) or not. A body we cannot
parse still yields a row: the call happened, and losing it would be worse than a gap.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import is_
from sys import getsizeof
from typing import Any

import msgspec

from llmlog.capture.exchange import Exchange
from llmlog.capture.sse import SSEParser
from llmlog.core.config import cache_bytes
from llmlog.core.footprint import json_footprint
from llmlog.core.prompts import REGISTRY
from llmlog.core.record import Call, parse_json

ANTHROPIC_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "pause",
}
# OpenAI Chat's finish reasons as stored: the deprecated `function_call` is a tool call too.
OPENAI_STOP = {"function_call": "tool_calls"}


# ---------------------------------------------------------------- bodies and SSE

_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


class Decoder:
    """JSON bodies decoded once: what an earlier call already sent is not decoded again.

    A conversation re-sends its system prompt, its tool list and every earlier message on
    each turn, so most of a request body is JSON the writer decoded a moment ago; decoding it
    into Python objects is most of the cost of recording a call. msgspec splits a large body
    into the raw JSON of each part without building objects; each large part is looked up by
    its bytes and only new ones are decoded. Parts are split two levels deep: a request's
    fields and the items of its message list; a streamed event's `response` and its fields
    (the Responses API echoes instructions and tools in every response).

    The values handed out are shared by every call that sent the same bytes: nothing
    downstream may change them in place (the stores also recognize them by identity). The
    cache is bounded by what its entries take in memory, the bytes and the objects decoded
    from them (`json_footprint`, a few times the JSON), least recently used first out.
    """

    SMALL = 64  # bytes: a part this small costs less to decode than to look up
    SPLIT = 4096  # bytes: a composite this large is split into parts

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = cache_bytes("decoded") if max_bytes is None else max_bytes
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self._sizes: dict[bytes, int] = {}  # what each entry takes (`footprint`), as counted in
        self._bytes = 0

    def decode(self, body: bytes | str) -> Any:
        """The JSON value of `body`, as `parse_json` gives it (None when it is not JSON)."""
        if len(body) < self.SPLIT:
            return parse_json(body)
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        try:
            return self._part(body, depth=2)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            # Not strict JSON (NaN, a lone surrogate escape, bad UTF-8), or nested deeper than
            # msgspec reads: the lenient parser decides, on the whole body.
            return parse_json(body)

    def _part(self, raw: bytes, depth: int) -> Any:
        if depth > 0 and len(raw) >= self.SPLIT:
            start = raw.lstrip()[:1]
            if start in (b"{", b"["):
                return self._split(raw, start == b"{", depth)
        hit = self._cache.get(raw)
        if hit is not None:
            self._cache.move_to_end(raw)
            return hit
        return self._new(raw)

    def _new(self, raw: bytes) -> Any:
        value = _strict(raw)
        room = self.max_bytes
        size = getsizeof(raw) + json_footprint(raw) + _ENTRY
        if size > room:  # kept, it would push everything else out, and then itself
            return value
        self._cache[raw] = value
        self._sizes[raw] = size
        self._bytes += size
        while self._bytes > room:
            old, _ = self._cache.popitem(last=False)
            self._bytes -= self._sizes.pop(old)
        return value

    def _split(self, raw: bytes, is_object: bool, depth: int) -> Any:
        """A composite assembled afresh (it is this call's own) from shared parts."""
        keys: list[str] = []
        if is_object:
            fields = _OBJECT.decode(raw)
            keys = list(fields)
            parts = list(map(bytes, fields.values()))
        else:
            parts = list(map(bytes, _ARRAY.decode(raw)))
        # A long conversation is dozens of parts, nearly all seen before: the common path
        # (look each up, mark it used) runs as C loops (map), and Python sees only the rest.
        cache = self._cache
        values: list[Any] = list(map(cache.get, parts))
        rest = list(compress(range(len(parts)), map(is_, values, repeat(None))))
        if len(rest) < len(parts):  # a cached value is never None, nor empty (SMALL)
            deque(map(cache.move_to_end, compress(parts, values)), 0)
        small = [i for i in rest if len(parts[i]) < self.SMALL]
        if small:  # one decoder call for all the small parts
            decoded = _strict(b"[" + b",".join(parts[i] for i in small) + b"]")
            for i, value in zip(small, decoded, strict=True):
                values[i] = value
        for i in rest:
            part = parts[i]
            if len(part) >= self.SMALL:
                values[i] = self._part(part, depth - 1)
        return dict(zip(keys, values, strict=True)) if is_object else values


# What an entry adds to the cache's two tables beyond its key and value: their slots and the
# size's integer.
_ENTRY = 200


def _strict(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:  # e.g. an integer past 64 bits
        raise msgspec.DecodeError(str(exc)) from None


def _decoder(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)
    if encoding == "deflate":
        return zlib.decompressobj()
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]  # only sent if the SDK can decode it

        return brotli.Decompressor()
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()
    raise ValueError(f"unsupported content-encoding {encoding!r}")


def decoded_chunks(ex: Exchange) -> Iterator[tuple[float, bytes]]:
    """The response body as the SDK saw it after decoding, chunk by chunk with arrival times."""
    dec = _decoder(ex.response_headers.get("content-encoding", ""))
    for t, chunk in ex.chunks:
        if dec is None:
            yield t, chunk
        else:
            out = dec.process(chunk) if hasattr(dec, "process") else dec.decompress(chunk)
            if out:
                yield t, out


def body_bytes(ex: Exchange) -> bytes:
    return b"".join(c for _, c in decoded_chunks(ex))


class Events:
    """(arrival ms, event name, data) for each complete server-sent event of a response.

    An event's time is that of the chunk that completed it. Once iterated to the end, it says
    whether anything was lost: `truncated` (the body ended inside an event) and `unreadable`
    (events whose data the API parser could not read, counted by it).
    """

    __slots__ = ("_ex", "_parser", "unreadable")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._parser = SSEParser()
        self.unreadable = 0

    def __iter__(self) -> Iterator[tuple[float, str, bytes]]:
        parser = self._parser
        for t, chunk in decoded_chunks(self._ex):
            for name, data in parser.feed(chunk):
                yield t, name, data
        parser.close()

    @property
    def truncated(self) -> bool:
        return self._parser.truncated


def sse_events(ex: Exchange) -> Events:
    """The server-sent events of a streamed response (see `Events`)."""
    return Events(ex)


def _text_of(content: Any) -> str:
    """Plain text of a message content: a string, or the text parts of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _cut_input(value: Any) -> bool:
    """A tool input that is JSON text that did not parse: an object cut off (max_tokens)."""
    return isinstance(value, str) and value.lstrip()[:1] in ("{", "[")


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, str):
        parsed = parse_json(arguments) if arguments else {}
        return parsed if parsed is not None else arguments
    return arguments


# ---------------------------------------------------------------- requests


def split_request(api: str, req: dict[str, Any], call: Call) -> None:
    """Set a call's model, system prompt, messages, tools and params from its request body
    (`api`: "messages", "chat" or "responses"), as every way in that has the body reads it."""
    body = dict(req)
    call.model = body.get("model") if isinstance(body.get("model"), str) else None
    tools = body.pop("tools", None)
    call.tools = tools if isinstance(tools, list) else None
    if api == "messages":
        messages = body.pop("messages", None)
        system = body.get("system")
        if isinstance(system, str):
            call.system_prompt = body.pop("system")
        elif isinstance(system, list):
            # Block form (cache_control, citations): keep the blocks for an exact re-send.
            call.system_prompt = _text_of(system)
    elif api == "chat":
        messages = body.pop("messages", None)
        if isinstance(messages, list):
            system_parts = [
                _text_of(m.get("content"))
                for m in messages
                if isinstance(m, dict) and m.get("role") in ("system", "developer")
            ]
            call.system_prompt = "\n\n".join(system_parts) if system_parts else None
    else:  # responses
        messages = body.pop("input", None)
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        instructions = body.pop("instructions", None)
        call.system_prompt = instructions if isinstance(instructions, str) else None
    call.messages = messages if isinstance(messages, list) else None
    call.params = body


# ---------------------------------------------------------------- responses


Decode = Callable[[bytes | str], Any]


def _json_events(
    seen: Iterable[tuple[float, str, bytes]], decode: Decode, events: Events
) -> Iterator[tuple[float, str, dict[str, Any]]]:
    """(time, type, payload) for each event whose data is a JSON object; others are counted
    in `events.unreadable`: what they carried is lost, so the call is not whole."""
    seen = list(seen)
    for (t, name, _), ev in zip(seen, _decode_all([data for _, _, data in seen], decode), strict=True):
        if isinstance(ev, dict):
            yield t, ev.get("type", name), ev
        else:
            events.unreadable += 1


def _decode_all(datas: list[bytes], decode: Decode) -> list[Any]:
    """Each event's data decoded: in one decoder call when they are all JSON, as usual."""
    try:
        values = _strict(b"[" + b",".join(datas) + b"]")
        if isinstance(values, list) and len(values) == len(datas):
            return values
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    # One is not JSON ("[DONE]", a keep-alive), or holds more than one value: one by one.
    return [decode(data) for data in datas]


Parsed = tuple[dict[str, Any] | None, Any, float | None, bool]  # response, error, first token ms, finished


def _anthropic_stream(events: Events, decode: Decode) -> Parsed:
    message: dict[str, Any] | None = None
    finished = False
    blocks: dict[int, dict[str, Any]] = {}
    partial_json: dict[int, str] = {}
    first: float | None = None
    error = None
    for t, kind, ev in _json_events(events, decode, events):
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
                blocks[i]["input"] = _tool_input(partial_json.pop(i))
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
            blocks[i]["input"] = _tool_input(buf)
    if message is not None:
        message["content"] = [blocks[i] for i in sorted(blocks)]
    return message, error, first, finished


def _chat_stream(events: Events, decode: Decode) -> Parsed:
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
    decoded = _decode_all([data for _, _, data in seen], decode)
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


_RESPONSE_DELTAS = (
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.refusal.delta",
)
_RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


def _responses_stream(events: Events, decode: Decode) -> Parsed:
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
    return _responses_events(seen, decode, events)


def _responses_events(seen: list[tuple[float, str, bytes]], decode: Decode, events: Events) -> Parsed:
    """Every event decoded: a stream cut short is rebuilt from what it had sent."""
    snapshot: dict[str, Any] | None = None
    done_items: dict[int, Any] = {}
    partial_text: dict[int, str] = {}
    final: dict[str, Any] | None = None
    first: float | None = None
    error = None
    for t, kind, ev in _json_events(seen, decode, events):
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


def _usage_columns(api: str, response: dict[str, Any], call: Call) -> None:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return
    if api == "messages":
        uncached = usage.get("input_tokens")
        write = usage.get("cache_creation_input_tokens") or 0
        read = usage.get("cache_read_input_tokens") or 0
        if isinstance(uncached, int):
            # Anthropic reports only the uncached part as input_tokens; ours counts all input.
            call.input_tokens = uncached + write + read
            call.cache_read_tokens = read
            call.cache_creation_tokens = write
    else:
        total_in = usage.get("prompt_tokens" if api == "chat" else "input_tokens")
        details = usage.get("prompt_tokens_details" if api == "chat" else "input_tokens_details") or {}
        if isinstance(total_in, int):
            call.input_tokens = total_in
            call.cache_read_tokens = details.get("cached_tokens") or 0
            # OpenAI caches automatically and bills no cache writes.
            call.cache_creation_tokens = 0
    out = usage.get("completion_tokens" if api == "chat" else "output_tokens")
    if isinstance(out, int):
        call.output_tokens = out


def read_response(api: str, response: dict[str, Any], call: Call) -> None:
    """Set a call's model, tool calls, stop reason and usage from its response body (the
    non-streamed shape), as every way in that has the body reads it."""
    if isinstance(response.get("model"), str) and response["model"]:
        call.model = response["model"]
    tool_calls: list[dict[str, Any]] = []
    if api == "messages":
        for block in response.get("content") or []:
            if isinstance(block, dict) and block.get("type") in ("tool_use", "server_tool_use"):
                tool_calls.append(
                    {"id": block.get("id"), "name": block.get("name"), "input": block.get("input")}
                )
        reason = response.get("stop_reason")
        call.stop_reason = ANTHROPIC_STOP.get(reason, reason) if reason else None
    elif api == "chat":
        choices = response.get("choices") or []
        for choice in choices:
            for tc in (choice.get("message") or {}).get("tool_calls") or []:
                fn = tc.get("function") or {}
                tool_calls.append(
                    {"id": tc.get("id"), "name": fn.get("name"), "input": _tool_input(fn.get("arguments"))}
                )
        if choices and choices[0].get("finish_reason"):
            reason = choices[0]["finish_reason"]
            call.stop_reason = OPENAI_STOP.get(reason, reason)
    else:
        for item in response.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "function_call":
                tool_calls.append(
                    {
                        "id": item.get("call_id"),
                        "name": item.get("name"),
                        "input": _tool_input(item.get("arguments")),
                    }
                )
        status = response.get("status")
        if status == "completed":
            call.stop_reason = "tool_calls" if tool_calls else "stop"
        elif status == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            call.stop_reason = "length" if reason == "max_output_tokens" else reason
        elif status == "failed":
            call.stop_reason = "error"
    call.tool_calls = tool_calls or None
    _usage_columns(api, response, call)


def _http_error(ex: Exchange) -> dict[str, Any]:
    body = body_bytes(ex)
    parsed = parse_json(body) if body else None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        # OpenAI's `code` (rate_limit_exceeded, context_length_exceeded) says more than its `type`.
        code = err.get("code")
        etype = (code if isinstance(code, str) and code else None) or err.get("type") or f"http_{ex.status}"
        message = err.get("message") or ""
    else:
        etype, message = f"http_{ex.status}", body[:2000].decode("utf-8", "replace")
    return {"type": etype, "status": ex.status, "message": message}


def to_call(ex: Exchange, decoder: Decoder | None = None) -> Call:
    """Build the call record (without price or user hashing: later stages add those).

    The writer passes its `Decoder`, so that what earlier calls sent is not decoded again."""
    decode: Decode = decoder.decode if decoder is not None else parse_json
    ctx = ex.context
    call = Call(
        timestamp=datetime.fromtimestamp(ex.started_at, UTC),
        provider=ex.provider,
        session_id=ctx.session_id,
        user_id=ctx.user_id,
        feature=ctx.feature,
        prompt_template_version=ctx.prompt_template_version,
        trace_id=ctx.trace_id,
        parent_id=ctx.parent_id,
        tags=list(ctx.tags) or None,
        latency_ms=round(ex.ended_ms, 3) if ex.ended_ms is not None else None,
    )
    notes: dict[str, Any] = {}
    req = decode(ex.request_body)
    if isinstance(req, dict):
        split_request(ex.api, req, call)
    else:
        notes["unparsed_request"] = ex.request_body[:2000].decode("utf-8", "replace")

    streamed = "text/event-stream" in ex.response_headers.get("content-type", "")
    if ex.failure is not None and ex.status is None:
        kind, exc_name, message = ex.failure
        call.error = {"type": kind, "status": None, "message": message, "exception": exc_name}
    elif ex.status is not None and ex.status >= 400:
        call.error = _http_error(ex)
    elif ex.status is not None:
        try:
            if streamed:
                parse = {"messages": _anthropic_stream, "chat": _chat_stream}.get(ex.api, _responses_stream)
                events = Events(ex)
                response, stream_error, first, finished = parse(events, decode)
                if finished:
                    # The SDK may close the response right after the last event; that is
                    # not an abandoned stream.
                    ex.incomplete = False
                if events.truncated or events.unreadable:
                    # An event was lost (cut off, or data we cannot read): whatever was
                    # rebuilt from the others may be missing text, arguments or usage.
                    ex.incomplete = True
                if stream_error is not None:
                    err = stream_error if isinstance(stream_error, dict) else {"message": str(stream_error)}
                    call.error = {
                        "type": err.get("type") or err.get("code") or "stream_error",
                        "status": ex.status,
                        "message": err.get("message", ""),
                    }
            else:
                response, first = decode(body_bytes(ex)), None
        except (ValueError, ImportError) as exc:
            response, first = None, None
            notes["unparsed_response"] = str(exc)
        if isinstance(response, dict):
            call.response = response
            read_response(ex.api, response, call)
            call.first_token_ms = (
                round(first, 3) if first is not None else (None if streamed else call.latency_ms)
            )
        elif not ex.incomplete and ex.failure is None:
            notes["unparsed_response"] = body_bytes(ex)[:2000].decode("utf-8", "replace")
        if ex.failure is not None:
            kind, exc_name, message = ex.failure
            if kind != "cancelled":
                call.error = {"type": kind, "status": ex.status, "message": message, "exception": exc_name}
            else:
                ex.incomplete = True
    if ex.incomplete:
        notes["incomplete"] = True
    cut = sum(1 for t in call.tool_calls or [] if _cut_input(t.get("input")))
    if cut:  # a tool call's input cut off (max_tokens): kept as the text that came
        notes["cut_tool_inputs"] = cut
    if ex.retry_count:
        notes["retry"] = ex.retry_count
    request_id = ex.response_headers.get("request-id") or ex.response_headers.get("x-request-id")
    if request_id:
        notes["request_id"] = request_id
    metadata = dict(ctx.metadata)
    if notes:
        metadata["llmlog"] = notes
    call.metadata = metadata or None
    if call.prompt_template_version is None and call.system_prompt:
        call.prompt_template_version = REGISTRY.version_of(call.system_prompt)
    return call
