"""Turn what the HTTP layer saw (`Exchange`) into a `Call`: request, response, usage, timing.

Runs on the writer's thread. Each API's bodies and streams are read by its module in
`llmlog.providers` (a stream reassembled into the non-streamed shape); here are what every
API shares: decoding (once), the SSE events, errors, timing, the call's notes. A body we
cannot parse still yields a row: the call happened, and losing it would be worse than a gap.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict, deque
from collections.abc import Iterator
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
from llmlog.providers import api_named, read_response, split_request
from llmlog.providers.api import Decode, strict

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

    A conversation's next turn sends its message list again as it was, then the new
    messages. Splitting it and copying out each part (to look it up) was a third of decoding
    a turn, so a list is remembered as split (`_lists`, named by the conversation the caller
    says the body is of and the list's first `NAME` bytes) and one that begins with a
    remembered list is split only past it: its earlier parts are that list's own bytes
    objects, which Python has hashed already. The lists remembered take at most a quarter of
    the bound, counted with the cache's entries.

    A request's parameters (what it sends beside its messages: model, limits, a system
    prompt in blocks) are mostly the same bytes call after call, but they come as a new dict,
    which the stores would serialize and hash each time to name. `shared` hands out the dict
    made the first time the same fields came as the same bytes, so that they are named by
    identity as the rest is. A decoder is used by one thread at a time.
    """

    SMALL = 64  # bytes: a part this small costs less to decode than to look up
    SPLIT = 4096  # bytes: a composite this large is split into parts
    NAME = 256  # bytes: how a remembered list is found, by its first bytes

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = cache_bytes("decoded") if max_bytes is None else max_bytes
        # A part's JSON → its value; and (`shared`) fields' names and JSON → the dict of them.
        self._cache: OrderedDict[bytes | tuple[Any, ...], Any] = OrderedDict()
        # What each entry takes (`footprint`), as counted in `_bytes`.
        self._sizes: dict[bytes | tuple[Any, ...], int] = {}
        self._bytes = 0
        # (conversation, a list's first bytes) → (its JSON up to its closing bracket, its
        # parts, what they take).
        self._lists: OrderedDict[tuple[str | None, bytes], tuple[bytes, list[bytes], int]] = OrderedDict()
        self._list_bytes = 0
        # A list's first bytes → the name of the latest list remembered that began so.
        self._latest: dict[bytes, tuple[str | None, bytes]] = {}
        self._conversation: str | None = None  # what the body being decoded is of
        # The object `decode` gave last, when it was split: its keys, each field's JSON and
        # value, and what the fields split in turn were made of (by their index).
        self._fields: tuple[list[str], list[bytes], list[Any], dict[int, Any]] | None = None
        self._inner: Any = None  # what the composite `_split` made last was made of

    def decode(self, body: bytes | str, conversation: str | None = None) -> Any:
        """The JSON value of `body`, as `parse_json` gives it (None when it is not JSON).
        `conversation`: what the body is of (a session's id), so that the lists of two that
        begin alike (a system message that many share) are remembered apart."""
        self._fields = self._inner = None
        if len(body) < self.SPLIT:
            return parse_json(body)
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        self._conversation = conversation
        try:
            return self._part(body, depth=2)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            self._fields = None
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
        value = strict(raw)
        self._keep(raw, value, getsizeof(raw) + json_footprint(raw) + _ENTRY)
        return value

    def _keep(self, key: bytes | tuple[Any, ...], value: Any, size: int) -> None:
        """`value` in the cache under `key`, counted as `size`; not kept if it would push
        everything else out, and then itself."""
        if size > self.max_bytes - self._list_bytes:
            return
        self._cache[key] = value
        self._sizes[key] = size
        self._bytes += size
        self._trim()

    def _trim(self) -> None:
        """The oldest entries out, until the cache is within what the lists leave it."""
        while self._bytes > self.max_bytes - self._list_bytes:
            old, _ = self._cache.popitem(last=False)
            self._bytes -= self._sizes.pop(old)

    def _split(self, raw: bytes, is_object: bool, depth: int) -> Any:
        """A composite assembled afresh (it is this call's own) from shared parts."""
        keys: list[str] = []
        if is_object:
            fields = _OBJECT.decode(raw)
            keys = list(fields)
            parts = list(map(bytes, fields.values()))
        elif depth == 1:
            parts = self._list_parts(raw)
        else:
            parts = list(map(bytes, _ARRAY.decode(raw)))
        # A long conversation is dozens of parts, nearly all seen before: the common path
        # (look each up, mark it used) runs as C loops (map), and Python sees only the rest.
        cache = self._cache
        if depth > 1:
            # A part that will be split in turn (the message list, a system prompt in blocks)
            # is not looked up: a composite that large is cached only as an item of a list
            # split below (one long message), and hashing its bytes for the look-up costs
            # as much again as hashing the parts it is split into, which are looked up.
            split, get = self.SPLIT, cache.get
            values: list[Any] = [
                None if len(part) >= split and part[:1] in _COMPOSITE else get(part) for part in parts
            ]
        else:
            values = list(map(cache.get, parts))
        rest = list(compress(range(len(parts)), map(is_, values, repeat(None))))
        if len(rest) < len(parts):  # a cached value is never None, nor empty (SMALL)
            deque(map(cache.move_to_end, compress(parts, values)), 0)
        small = [i for i in rest if len(parts[i]) < self.SMALL]
        if small:  # one decoder call for all the small parts
            decoded = strict(b"[" + b",".join(parts[i] for i in small) + b"]")
            for i, value in zip(small, decoded, strict=True):
                values[i] = value
        split_into: dict[int, Any] = {}
        for i in rest:
            part = parts[i]
            if len(part) >= self.SMALL:
                values[i] = self._part(part, depth - 1)
                if self._inner is not None:
                    split_into[i], self._inner = self._inner, None
        if depth == 1:  # what it was made of, for `shared`
            self._inner = (tuple(keys), tuple(parts)) if is_object else tuple(parts)
        if not is_object:
            return values
        if depth == 2:
            self._fields = (keys, parts, values, split_into)
        return dict(zip(keys, values, strict=True))

    def shared(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` (some fields of the object `decode` gave last, each the value it gave),
        or the dict handed out before for the same fields in the same order whose JSON was
        the same bytes. Like every value it hands out, nobody may change it in place."""
        if self._fields is None or not fields:
            return fields
        keys, parts, values, split_into = self._fields
        key: list[Any] = []
        at: list[int] = []
        for name, value in fields.items():
            i = keys.index(name) if name in keys else -1
            if i < 0 or values[i] is not value:  # not as decoded: this call's own
                return fields
            # A field split in turn is named by its parts, whose hashes Python keeps (they
            # were looked up): hashing its whole JSON would cost as much again.
            key += (name, split_into.get(i, parts[i]))
            at.append(i)
        named = tuple(key)
        hit = self._cache.get(named)
        if hit is not None:
            self._cache.move_to_end(named)
            return hit
        # What it holds beyond the cache's own entries: the JSON, and at most as much again
        # decoded from the fields that were split (a system prompt in blocks is a new list).
        size = getsizeof(named) + sum(getsizeof(parts[i]) + json_footprint(parts[i]) for i in at) + _ENTRY
        self._keep(named, fields, size)
        return fields

    def release(self) -> None:
        """Let go of what the last body was made of (kept for `shared`): a body the cache
        did not keep is not held by the decoder once its value is let go."""
        self._fields = self._inner = None

    def _list_parts(self, raw: bytes) -> list[bytes]:
        """The raw JSON of each item of the list `raw`: those of a remembered list that `raw`
        begins with as they were, the rest split now; `raw` remembered in its place. The
        list remembered is this conversation's, else the latest of any that began alike
        (turns every conversation begins with: examples, a greeting)."""
        start = raw[: self.NAME]
        name = (self._conversation, start)
        known = self._lists.pop(name, None)
        if known is not None:
            self._list_bytes -= known[2]
            if self._latest.get(start) == name:
                del self._latest[start]
        elif (other := self._latest.get(start)) is not None:
            known = self._lists.get(other)
        parts = None
        if known is not None:
            head, earlier, _ = known
            if raw.startswith(head):
                rest = raw[len(head) :].lstrip()
                if rest[:1] == b"]":  # the same list again (a retry)
                    parts = earlier
                elif rest[:1] == b",":
                    parts = earlier + list(map(bytes, _ARRAY.decode(b"[" + rest[1:])))
        if parts is None:
            parts = list(map(bytes, _ARRAY.decode(raw)))
        # Up to the closing bracket: what a longer list of the same parts begins with. Its
        # parts are about as many bytes again, each with a bytes object's and a slot's 41;
        # its name beside them.
        head = raw.rstrip()[:-1]
        size = 2 * getsizeof(head) + 41 * len(parts) + sum(map(getsizeof, name)) + _LIST_ENTRY
        if size <= self.max_bytes // 4:
            self._lists[name] = (head, parts, size)
            self._latest[start] = name
            self._list_bytes += size
            while self._list_bytes > self.max_bytes // 4:
                old, (_, _, held) = self._lists.popitem(last=False)
                self._list_bytes -= held
                if self._latest.get(old[1]) == old:
                    del self._latest[old[1]]
            self._trim()
        return parts


# What a remembered list adds beyond its JSON, its parts and its name: its slots in `_lists`
# and `_latest`, their tuples and its size's integer.
_LIST_ENTRY = 320

# How a part that is a composite starts (msgspec's raw parts carry no leading whitespace).
_COMPOSITE = (b"{", b"[")

# What an entry adds to the cache's two tables beyond its key and value: their slots and the
# size's integer.
_ENTRY = 200


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
        return iter(self._parser.feed_all(list(decoded_chunks(self._ex))))

    @property
    def truncated(self) -> bool:
        return self._parser.truncated


def sse_events(ex: Exchange) -> Events:
    """The server-sent events of a streamed response (see `Events`)."""
    return Events(ex)


def _cut_input(value: Any) -> bool:
    """A tool input that is JSON text that did not parse: an object cut off (max_tokens)."""
    return isinstance(value, str) and value.lstrip()[:1] in ("{", "[")


# ---------------------------------------------------------------- requests


# ---------------------------------------------------------------- responses


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
    # A session's calls are what re-send a conversation's earlier turns.
    within = ctx.session_id
    req = (
        decoder.decode(ex.request_body, within if isinstance(within, str) else None)
        if decoder is not None
        else parse_json(ex.request_body)
    )
    if isinstance(req, dict):
        split_request(ex.api, req, call)
        if decoder is not None and call.params is not None:
            call.params = decoder.shared(call.params)
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
                events = Events(ex)
                response, stream_error, first, finished = api_named(ex.api).read_stream(events, decode)
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
    if decoder is not None:
        decoder.release()
    if call.prompt_template_version is None and call.system_prompt:
        call.prompt_template_version = REGISTRY.version_of(call.system_prompt)
    return call
