"""A fake LLM provider on loopback, so the real `anthropic` and `openai` SDKs can be driven offline.

`FakeProvider` is a small HTTP/1.1 server, built only on the standard library, that implements enough of
the Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`) and of OpenAI's Chat Completions
(`/v1/chat/completions`) and Responses (`/v1/responses`) APIs for the SDKs' own parsers and stream
accumulators to accept its answers, streamed (SSE over chunked transfer encoding) or not.

Why not an ASGI app: failure injection needs the raw socket (closing it before any response, or half-way
through a chunked body), and the server has to start in milliseconds inside a test fixture.

Documented approximations (this is a fake, not a model):
- Text is a few seeded pseudo-sentences chosen by a hash of (seed, text of the last message); each
  model words about one sentence in seven its own way (a hash of the model too), so two models'
  answers to one request mostly agree and one model's never vary.
- The system prompt (Anthropic `system`, Chat system and developer messages, Responses
  `instructions`) steers the answer where it says so, case aside: "in depth" makes text answers three
  times as long, "be brief" 0.4 times; "decline requests" declines one request in twelve (chosen
  by a hash of its last message) with the refusal text. So a prompt change shows in what comes back.
- Tokens are ceil(len / 4) of each prompt block's compact JSON (cache markers removed) and of each output
  text or tool call's `name + arguments`; a prompt counts at least 1.
- Anthropic caching: the prefix up to the last `cache_control` marker (a top-level `cache_control` marks
  the last block) is cached. Prefixes are keyed by a rolling hash of model + blocks (tools, system, message
  content blocks, in that order). A request reads the longest previously written prefix that ends at a
  block boundary at most 20 blocks before one of its markers, and writes the rest up to its last marker,
  each marker's `ttl` ("5m" by default, or "1h") taking the tokens since the previous marker. No minimum.
- OpenAI caching is automatic over blocks: tools then messages (Chat), or instructions, tools, then input
  items (Responses). `cached_tokens` is the longest prefix shared with an earlier prompt to the same model,
  rounded down to a multiple of 128, and 0 below 1024 tokens (the real API never caches shorter prefixes).
- Cache state is an LRU of 4096 prefix keys per API family.

Request headers it understands (all optional, each overriding the server-wide setting for one request):
- `x-fake-fail: 429|500|529|timeout|drop|drop-midstream` (or any other 4xx/5xx code); see FakeProvider.
- `x-fake-latency-ms`: total time of a non-streamed generation (count_tokens is never delayed).
- `x-fake-first-token-ms`, `x-fake-chunk-ms`: delay before the first content event of a stream, and
  between later content events (lifecycle events such as message_start go out at once).
- `x-fake-line-ending: lf|crlf|cr`: how stream lines end (servers built on sse-starlette send CRLF);
  `x-fake-split-bytes: N`: cut a stream's body into pieces of N bytes, each its own HTTP chunk (so its
  own network read), wherever they fall: inside a line, between the CR and LF of a line end.
- `x-fake-output-scale`: text answers this many times their usual length (a prompt that makes a
  model verbose); `x-fake-refuse: 1`: the model declines ("I'm sorry, but I can't help with that.");
  `x-fake-refuse: MODEL` (Anthropic): requests for that model are refused as the safety classifiers
  refuse, before any output (no content) with stop reason `refusal`, which the SDK's refusal-fallback
  middleware retries on another model; other models answer.

An Anthropic tool call forced by `tool_choice` (`any` or `tool`) that does not fit `max_tokens` is cut
off (stop reason `max_tokens`): streamed, its input JSON never closes; not streamed, the input holds
the members that were whole. (Not forced, a call that does not fit becomes a cut-off text answer.)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import json
import math
import random
import re
import select
import socket
import socketserver
import ssl
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import Any, NamedTuple, cast

Json = dict[str, Any]
Event = tuple[Json, bool]  # an SSE payload, and whether it carries generated content (for the delay knobs)
Tool = tuple[str, Any]  # (name, JSON schema of its input)

FAIL_KINDS = ("429", "500", "529", "timeout", "drop", "drop-midstream")
_GENERATION = frozenset({"/v1/messages", "/v1/chat/completions", "/v1/responses"})
_ROUTES = _GENERATION | {"/v1/messages/count_tokens"}
_MAX_BODY = 32 * 1024 * 1024
_CACHE_KEYS = 4096
_LOOKBACK = 20  # blocks before a marker at which Anthropic looks for an earlier cache entry
_OPENAI_MIN_CACHED, _OPENAI_CACHE_STEP = 1024, 128
_PIECE_RE = re.compile(r"\s*\S+|\s+")  # lossless split into words, each with its leading whitespace
_LEXICON = (  # a sentence reads better than a 70-item list literal
    "the flight recorder keeps every call in one row while the model answers with care and the cache "
    "remembers a long prompt prefix so latency stays low under steady load a careful engineer reads each "
    "trace to find where tokens went and why a stream stopped early bright signals from the harbor guide "
    "quiet ships through the evening fog toward a warm lantern near the old copper bridge"
)
_WORDS = _LEXICON.split()
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# Response fields echoed from the request, with the API's defaults when the request leaves them out.
_RESPONSE_ECHO: Json = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


class RecordedRequest(NamedTuple):
    """One request as received: path without query, headers lower-cased, body parsed (None if not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest())


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _strip_markers(obj: Any) -> Any:
    # Markers say where to cache, not what: prompts that differ only in marker placement share prefixes.
    if isinstance(obj, dict):
        return {k: _strip_markers(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [_strip_markers(v) for v in obj]
    return obj


def _ttl(block: Any) -> str | None:
    marker = block.get("cache_control") if isinstance(block, dict) else None
    return (marker.get("ttl") or "5m") if isinstance(marker, dict) else None


def _text(content: Any) -> str:
    """The text of message content of any shape: a string, content parts, tool results."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(part) for part in content)
    if isinstance(content, dict):
        return next((_text(content[k]) for k in ("text", "content", "output") if k in content), "")
    return ""


def _word_pieces(text: str, per: int = 3) -> list[str]:
    words = _PIECE_RE.findall(text)
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


def _char_pieces(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _ev(kind: str, content: bool = False, **fields: Any) -> Event:
    return {"type": kind, **fields}, content


def _fill(schema: Any, name: str, rng: random.Random, depth: int = 0) -> Any:
    """A deterministic value that fits a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return f"{name}-{rng.choice(_WORDS)}"
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") if depth < 4 else None
        return {k: _fill(v, k, rng, depth + 1) for k, v in (props or {}).items()}
    if kind == "array":
        return [_fill(schema.get("items"), name, rng, depth + 1)] if depth < 4 else []
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return None if kind == "null" else f"{name}-{rng.choice(_WORDS)}"


class _Prompt:
    """A prompt as blocks in the provider's cache-prefix order, with running token totals and a rolling
    hash at every block boundary, so that a prefix lookup is a dict probe rather than a re-hash.

    Anthropic message blocks come as [role, block] pairs so the role is part of the prefix."""

    def __init__(self, model: str, blocks: list[Any], last_ttl: str | None = None) -> None:
        self.cum: list[int] = []
        self.keys: list[bytes] = []
        self.markers: list[tuple[int, str]] = []
        digest, total = hashlib.blake2b(model.encode(), digest_size=16).digest(), 0
        for index, block in enumerate(blocks):
            text = json.dumps(
                _strip_markers(block), separators=(",", ":"), sort_keys=True, ensure_ascii=False
            )
            total += _tokens(text)
            digest = hashlib.blake2b(digest + text.encode(), digest_size=16).digest()
            self.cum.append(total)
            self.keys.append(digest)
            ttl = _ttl(block[-1] if isinstance(block, list) and block else block)
            if ttl or (last_ttl and index == len(blocks) - 1):
                self.markers.append((index, ttl or last_ttl or "5m"))
        self.total = max(1, total)


class _PrefixCache:
    """A bounded, thread-safe set of prefix keys with LRU eviction."""

    def __init__(self, size: int = _CACHE_KEYS) -> None:
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def longest(self, prompt: _Prompt, positions: list[int], store: list[int]) -> int:
        """The first of `positions` (given in descending order) whose prefix is cached, or -1; then caches
        the prefixes at `store`. One lock for both, so concurrent identical requests see one writer."""
        with self._lock:
            hit = next((p for p in positions if prompt.keys[p] in self._keys), -1)
            for key in [prompt.keys[p] for p in ([hit] if hit >= 0 else []) + store]:
                self._keys[key] = None
                self._keys.move_to_end(key)
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
        return hit

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


class _Gen(NamedTuple):
    text: str | None  # the answer, or a short lead-in before a tool call
    tool: tuple[str, Json] | None  # (name, input)
    truncated: bool
    tokens: int  # output tokens


def _error_body(flavour: str, status: int, message: str, request_id: str) -> Json:
    if flavour == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    kind = "requests" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    code = "rate_limit_exceeded" if status == 429 else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _validate(path: str, body: Json) -> str | None:
    """Why the real API would refuse this request with a 400, or None."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if path != "/v1/responses" and not (isinstance(body.get("messages"), list) and body["messages"]):
        return "messages: a non-empty list is required"
    if path == "/v1/messages" and "max_tokens" not in body:
        return "max_tokens: Field required"
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"{key}: must be an integer >= 1"
    return None


def _ms(headers: dict[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    value = default if raw is None else float(raw)  # a ValueError becomes a 400
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative number of milliseconds")
    return value / 1000


REFUSAL = "I'm sorry, but I can't help with that."
# The seed `llmlog demo` gives the fake by default: a fake started later with it (`llmlog serve
# --fake-provider`, `llmlog experiment run --fake-provider`) answers the demo's requests as it did.
DEMO_SEED = 7
REWORDED = 0.15  # of an answer's sentences, worded by each model its own way
DECLINED = 12  # one request in this many is declined where the system prompt says to


class _Shape(NamedTuple):
    """How a request asks the answer to come out (headers, else the usual)."""

    scale: float = 1.0  # x-fake-output-scale
    refuse: bool = False  # x-fake-refuse: 1
    refuse_model: str | None = None  # x-fake-refuse: a model name
    model: str = ""  # the model asked for: its wording of the answer (`_answer`)
    declines: bool = False  # the system prompt tells it to decline some requests


def _shape(headers: dict[str, str]) -> _Shape:
    scale = float(headers.get("x-fake-output-scale", "1"))  # a ValueError becomes a 400
    if not (math.isfinite(scale) and 0 < scale <= 100):
        raise ValueError("x-fake-output-scale must be a number above 0, at most 100")
    refuse = headers.get("x-fake-refuse")
    return _Shape(scale, refuse == "1", refuse if refuse not in (None, "", "1") else None)


def _instructions(messages: list[Any]) -> str:
    """The text of the system and developer messages (OpenAI's way of giving a system prompt)."""
    given = [m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")]
    return " ".join(_text(m.get("content")) for m in given)


def _steer(shape: _Shape, model: Any, system: str) -> _Shape:
    """The answer as the system prompt asks for it and as `model` words it (the module's
    docstring lists what is understood)."""
    lowered = system.lower()
    scale = shape.scale * (3.0 if "in depth" in lowered else 0.4 if "be brief" in lowered else 1.0)
    return shape._replace(scale=scale, model=str(model), declines="decline requests" in lowered)


_LINE_ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def _line_ending(name: str | bytes) -> bytes:
    if isinstance(name, bytes) and name in _LINE_ENDINGS.values():
        return name
    if isinstance(name, str) and name.lower() in _LINE_ENDINGS:
        return _LINE_ENDINGS[name.lower()]
    raise ValueError(f"line ending must be one of {', '.join(_LINE_ENDINGS)}, not {name!r}")


def _split_bytes(value: int | str) -> int:
    size = int(value)  # a ValueError becomes a 400
    if not 0 <= size <= 1 << 20:
        raise ValueError("x-fake-split-bytes must be a number of bytes from 0 (whole events) to 1048576")
    return size


def _is_fail_kind(kind: str) -> bool:
    return kind in FAIL_KINDS or (kind.isdigit() and 400 <= int(kind) <= 599)


class FakeProvider:
    """A local fake of the Anthropic and OpenAI HTTP APIs; see the module docstring.

    Failures (`x-fake-fail`, or queued with `fail_next`): 429 (with retry-after: 0), 500 and 529 answer
    in the provider's error shape (529 is 503 on OpenAI paths); `timeout` holds the request unanswered for
    up to `hang_s` or until the client hangs up; `drop` closes the socket with no response;
    `drop-midstream` sends the headers and a few events (or half a JSON body), then closes the socket.

    The knobs (`latency_ms`, `first_token_ms`, `chunk_ms`, `hang_s`, `seed`, and for streams `line_ending`
    and `split_bytes`) are plain attributes read on every request, so they may be changed while the server
    runs.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        first_token_ms: float = 0,
        chunk_ms: float = 0,
        hang_s: float = 30.0,
        seed: int = 0,
        line_ending: str = "lf",
        split_bytes: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.seed, self.hang_s = host, port, seed, hang_s
        # A server-side TLS context answers on https, as a real provider does (tests give it a
        # certificate of their own making).
        self.tls = tls
        self.line_ending, self.split_bytes = _line_ending(line_ending), _split_bytes(split_bytes)
        self.latency_ms, self.first_token_ms, self.chunk_ms = latency_ms, first_token_ms, chunk_ms
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._fails: deque[str] = deque()
        self._caches = {"anthropic": _PrefixCache(), "openai": _PrefixCache()}
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeProvider:
        """Bind and serve in a daemon thread; returns self. A no-op when already started."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server((self.host, self.port), self)
            if self.tls is not None:
                # The handshake on the connection's own thread, not in the accept loop.
                self._server.socket = self.tls.wrap_socket(
                    self._server.socket, server_side=True, do_handshake_on_connect=False
                )
            # A short poll interval bounds how long stop() waits for the accept loop to notice.
            kwargs = {"poll_interval": 0.05}
            name = f"fake-provider:{self._server.server_address[1]}"
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs=kwargs, name=name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: interrupt hanging and delayed requests, close every connection, join threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns.items())
        for conn, _ in conns:  # wakes handler threads blocked reading the next keep-alive request
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 2.0
        for thread in [t for _, t in conns] + ([self._thread] if self._thread else []):
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        port = self._server.server_address[1] if self._server is not None else self.port
        if not port:
            raise RuntimeError("FakeProvider is not started and has no fixed port")
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url  # the Anthropic SDK appends /v1/messages itself

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Make the next `times` generation requests fail with `kind` (FAIL_KINDS or any 4xx/5xx), FIFO."""
        if not _is_fail_kind(kind := str(kind)):
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {FAIL_KINDS} or a 4xx/5xx code")
        with self._lock:
            self._fails.extend([kind] * times)

    def reset(self) -> None:
        """Forget recorded requests, queued failures and cache state."""
        with self._lock:
            self.requests.clear()  # in place: callers may hold a reference to the list
            self._fails.clear()
        for cache in self._caches.values():
            cache.clear()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)

    # -- request handling --------------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        path = h.path.split("?", 1)[0]
        flavour = "anthropic" if path.startswith("/v1/messages") else "openai"
        headers = {k.lower(): v for k, v in h.headers.items()}

        def error(status: int, message: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
            h.send_json(status, _error_body(flavour, status, message, h.request_id), extra)

        if "chunked" in headers.get("transfer-encoding", "").lower():
            h.close_connection = True  # an unread chunked body would be misread as the next request
            return error(411, "A content-length header is required.")
        length = (
            int(headers.get("content-length", "0")) if headers.get("content-length", "0").isdigit() else -1
        )
        if not 0 <= length <= _MAX_BODY:
            h.close_connection = True  # same: refuse without reading a body we will not parse
            return error(413, f"Request body must be at most {_MAX_BODY} bytes.")
        raw = h.rfile.read(length) if length else b""
        if len(raw) < length:
            h.close_connection = True  # the client hung up half-way through its body
            return None
        started = time.monotonic()
        body: Any = None
        problem = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:  # includes UnicodeDecodeError
            problem = f"Request body is not valid JSON: {exc}"
        with self._lock:
            self.requests.append(RecordedRequest(h.command, path, headers, body))
        if path not in _ROUTES:
            return error(404, f"Not found: {h.command} {path}")
        if h.command != "POST":
            return error(405, f"Method not allowed: {h.command} {path}")
        if problem is None and not isinstance(body, dict):
            problem = "Request body must be a JSON object."
        if problem is not None:
            return error(400, problem)

        fail = headers.get("x-fake-fail")
        if fail is None and path in _GENERATION:
            with self._lock:
                fail = self._fails.popleft() if self._fails else None
        try:
            if fail is not None and not _is_fail_kind(fail):
                raise ValueError(f"x-fake-fail: unknown failure kind {fail!r}")
            latency = _ms(headers, "x-fake-latency-ms", self.latency_ms)
            first = _ms(headers, "x-fake-first-token-ms", self.first_token_ms)
            chunk = _ms(headers, "x-fake-chunk-ms", self.chunk_ms)
            shape = _shape(headers)
            framing = (
                _line_ending(headers.get("x-fake-line-ending", self.line_ending)),
                _split_bytes(headers.get("x-fake-split-bytes", self.split_bytes)),
            )
        except ValueError as exc:
            return error(400, str(exc))
        if fail == "timeout":
            return self._hang(h)
        if fail == "drop":
            h.close_connection = True  # close with no response at all
            return None
        if fail is not None and fail.isdigit():
            status = 503 if fail == "529" and flavour == "openai" else int(fail)
            # retry-after-ms makes SDK retries near-instant; retry-after: 0 alone means "use your backoff".
            extra = (("retry-after-ms", "1"),) + ((("retry-after", "0"),) if status == 429 else ())
            return error(status, f"Injected failure ({fail}) from the fake provider.", extra)
        if (problem := _validate(path, body)) is not None:
            return error(400, problem)

        stream = body.get("stream") is True and path != "/v1/messages/count_tokens"
        build = {"/v1/messages": self._anthropic, "/v1/chat/completions": self._chat}.get(
            path, self._responses
        )
        try:
            if path == "/v1/messages/count_tokens":
                return h.send_json(200, {"input_tokens": self._anthropic_prompt(body).total})
            answer = build(body, stream, shape)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            # A shape this fake cannot read; the real API would have refused it too.
            return error(400, f"Malformed request: {exc!r}")
        # The builders answer a stream with its list of events, anything else with one body.
        if stream:
            events = cast(list[Event], answer)
            return self._stream(h, events, path, first, chunk, fail == "drop-midstream", framing)
        if self._stopping.wait(max(0.0, latency - (time.monotonic() - started))):
            h.close_connection = True
            return None
        if fail == "drop-midstream":  # the headers promise the whole body; half arrives, then EOF
            payload = _dumps(answer).encode()
            h.close_connection = True
            head = h.head(200, (("content-type", "application/json"), ("content-length", str(len(payload)))))
            h.wfile.write(head + payload[: len(payload) // 2])
            return None
        return h.send_json(200, cast(Json, answer))

    def _hang(self, h: _Handler) -> None:
        """Hold the request unanswered until `hang_s` passes, the client goes away, or the server stops."""
        h.close_connection = True
        deadline = time.monotonic() + self.hang_s
        # poll, not select: a long-running process (a test session) has descriptors past
        # select's 1024, and select refuses them.
        poller = select.poll()
        poller.register(h.connection, select.POLLIN)
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                readable = poller.poll(min(50, left * 1000))
                if readable and not h.connection.recv(1, socket.MSG_PEEK):
                    return  # EOF: the client timed out and closed
            except OSError:
                return
            if readable:  # pipelined bytes, not EOF: keep holding without spinning
                self._stopping.wait(min(0.05, left))

    def _stream(
        self,
        h: _Handler,
        events: list[Event],
        path: str,
        first: float,
        chunk: float,
        drop: bool,
        framing: tuple[bytes, int] = (b"\n", 0),
    ) -> None:
        """Send events as SSE (chat: bare `data:` lines; others: named events), pacing content events.

        `framing` is (line ending, piece size): with a piece size the body goes out in pieces of that
        many bytes, cut across lines and events; what is held back is sent before any pause."""
        ending, size = framing
        held = bytearray()

        def send(text: str) -> None:
            data = text.encode() if ending == b"\n" else text.encode().replace(b"\n", ending)
            if not size:
                return h.send_chunk(data)
            held.extend(data)
            while len(held) >= size:
                h.send_chunk(bytes(held[:size]))
                del held[:size]

        def flush() -> None:
            if held:
                h.send_chunk(bytes(held))
                held.clear()

        h.start_stream()
        sent = 0
        for index, (data, content) in enumerate(events):
            if content:
                if (delay := chunk if sent else first) > 0:
                    flush()
                    if self._stopping.wait(delay):
                        h.close_connection = True
                        return
                sent += 1
            if path == "/v1/responses":
                data["sequence_number"] = index
            if path == "/v1/chat/completions":
                send(f"data: {_dumps(data)}\n\n")
            else:
                send(f"event: {data['type']}\ndata: {_dumps(data)}\n\n")
            if drop and (sent >= 2 or index >= 4 or index >= len(events) - 2):
                flush()
                h.close_connection = True  # no terminating chunk: the client sees a truncated stream
                return
        if path == "/v1/chat/completions":
            send("data: [DONE]\n\n")
        flush()
        h.end_stream()

    # -- generation --------------------------------------------------------------------------------------

    def _answer(self, key: str, scale: float, model: str = "") -> str:
        rng = random.Random(_digest(self.seed, "text", key))
        # Each model words some sentences its own way: two models' answers to one request
        # share most of their sentences, and one model answers one request the same each time.
        voice = random.Random(_digest(self.seed, "voice", model, key))
        target, sentences, size = round(rng.randint(10, 200) * 4 * scale), [], 0
        while size < target:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 12))]
            if voice.random() < REWORDED:
                words = [voice.choice(_WORDS) for _ in words]
            sentence = " ".join(words).capitalize() + "."
            sentences.append(sentence)
            size += len(sentence) + 1
        return " ".join(sentences)

    def _generate(
        self,
        key: str,
        mode: str,
        tools: list[Tool],
        wanted: Any,
        limit: Any,
        lead: bool,
        shape: _Shape,
        forced: bool = False,
    ) -> _Gen:
        """The answer to a turn: a tool call when tools are offered to a user turn, text otherwise;
        a refusal when asked for one. A tool call the request forces (`forced`) that does not
        fit `limit` is cut off: truncated, with its tool."""
        declined = shape.declines and _digest(self.seed, "decline", key) % DECLINED == 0
        if shape.refuse or declined:
            return _Gen(REFUSAL, None, False, _tokens(REFUSAL))
        if tools and mode == "user":
            name, schema = next((t for t in tools if t[0] == wanted), tools[0])
            rng = random.Random(_digest(self.seed, "tool", name, key))
            args = _fill(schema, name, rng)
            text = f"I'll use the {name} tool for this." if lead and rng.random() < 0.5 else None
            tokens = _tokens(name + _dumps(args)) + (_tokens(text) if text else 0)
            if limit is None or tokens <= limit:
                return _Gen(text, (name, args), False, tokens)
            if forced:
                return _Gen(None, (name, args), True, limit)
            # Too little room for the call: fall through to a (truncated) plain answer.
        text = self._answer(key, shape.scale, shape.model)
        if limit is not None and _tokens(text) > limit:
            return _Gen(text[: limit * 4], None, True, limit)
        return _Gen(text, None, False, _tokens(text))

    def _anthropic_prompt(self, body: Json) -> _Prompt:
        system = body.get("system") or []
        blocks = [*(body.get("tools") or []), *(system if isinstance(system, list) else [system])]
        for m in body["messages"]:
            blocks += (
                [[m["role"], b] for b in m["content"]]
                if isinstance(m["content"], list)
                else [[m["role"], m["content"]]]
            )
        top = body.get("cache_control")  # automatic caching: a marker on the last cacheable block
        return _Prompt(body["model"], blocks, (top.get("ttl") or "5m") if isinstance(top, dict) else None)

    def _anthropic(self, body: Json, stream: bool, shape: _Shape) -> Json | list[Event]:
        # The safety classifiers' refusal of one model: stop reason `refusal`, other models answer.
        classified = shape.refuse_model is not None and body["model"] == shape.refuse_model
        if classified:
            shape = shape._replace(refuse=True)
        shape = _steer(shape, body["model"], _text(body.get("system")))
        prompt = self._anthropic_prompt(body)
        read, write_5m, write_1h = self._anthropic_caching(prompt)
        last = body["messages"][-1]
        content = last["content"]
        results = isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
        mode = "tool_result" if results else "user" if last["role"] == "user" else "other"
        tools = [(t["name"], t["input_schema"]) for t in body.get("tools") or [] if "input_schema" in t]
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "none":
            tools = []
        # With tool_choice any/tool the API prefills the tool call, so there is never a lead-in text.
        lead = choice.get("type") in (None, "auto")
        forced = choice.get("type") in ("any", "tool")
        limit = body["max_tokens"]
        gen = self._generate(_text(content), mode, tools, choice.get("name"), limit, lead, shape, forced)
        # A classifier's refusal comes before any output: no content.
        blocks: list[Json] = [{"type": "text", "text": gen.text}] if gen.text and not classified else []
        cut: str | None = None  # the start of a tool call's input that max_tokens cut off
        if gen.tool is not None:
            tool_input = gen.tool[1]
            if gen.truncated:
                whole = _dumps(tool_input)
                cut = whole[: max(1, min(limit * 4 - len(gen.tool[0]), len(whole) - 1))]
                # Not streamed, the input is what of it was whole: the members that fit.
                tool_input = {}
                for k, v in gen.tool[1].items() if isinstance(gen.tool[1], dict) else ():
                    if len(_dumps({**tool_input, k: v})) > len(cut):
                        break
                    tool_input[k] = v
            blocks.append(
                {"type": "tool_use", "id": _new_id("toolu_"), "name": gen.tool[0], "input": tool_input}
            )
        stop = "max_tokens" if gen.truncated else "tool_use" if gen.tool else "end_turn"
        stop = "refusal" if classified else stop
        written = write_5m + write_1h
        usage = {
            "input_tokens": prompt.total - read - written,  # the real API reports only the uncached rest
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": gen.tokens,
            "service_tier": "standard",
        }
        message = {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not stream:
            return message
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events = [_ev("message_start", message=start)]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                opening: Json = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in _word_pieces(block["text"])]
            else:
                opening = {**block, "input": {}}
                pieces = _char_pieces(cut if cut is not None else _dumps(block["input"]))
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            events.append(_ev("content_block_start", index=index, content_block=opening))
            if index == 0:  # the real API pings once, after the first block starts
                events.append(_ev("ping"))
            events += [_ev("content_block_delta", True, index=index, delta=d) for d in deltas]
            events.append(_ev("content_block_stop", index=index))
        # Usage on message_delta is cumulative; the SDK overwrites its snapshot with whatever is present.
        final = {k: v for k, v in usage.items() if k not in ("cache_creation", "service_tier")}
        events.append(_ev("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage=final))
        events.append(_ev("message_stop"))
        return events

    def _anthropic_caching(self, prompt: _Prompt) -> tuple[int, int, int]:
        """(cache read, 5m writes, 1h writes) in tokens; see the module docstring."""
        if not prompt.markers:
            return 0, 0, 0
        positions = {p for index, _ in prompt.markers for p in range(max(0, index - _LOOKBACK), index + 1)}
        stores = [index for index, _ in prompt.markers]
        hit = self._caches["anthropic"].longest(prompt, sorted(positions, reverse=True), stores)
        read = previous = prompt.cum[hit] if hit >= 0 else 0
        written = {"5m": 0, "1h": 0}
        for index, ttl in prompt.markers:
            if index > hit:
                written["1h" if ttl == "1h" else "5m"] += prompt.cum[index] - previous
                previous = prompt.cum[index]
        return read, written["5m"], written["1h"]

    def _openai_cached(self, prompt: _Prompt) -> int:
        """Cached prompt tokens under OpenAI's automatic prefix caching; see the module docstring."""
        if prompt.total < _OPENAI_MIN_CACHED:
            return 0
        # Only boundaries past the minimum can ever be hits; storing just those keeps the LRU useful.
        stores = [i for i, n in enumerate(prompt.cum) if n >= _OPENAI_MIN_CACHED]
        hit = self._caches["openai"].longest(prompt, stores[::-1], stores)
        shared = prompt.cum[hit] if hit >= 0 else 0
        return shared // _OPENAI_CACHE_STEP * _OPENAI_CACHE_STEP if shared >= _OPENAI_MIN_CACHED else 0

    def _chat(self, body: Json, stream: bool, shape: _Shape) -> Json | list[Event]:
        model, messages, functions = body["model"], body["messages"], body.get("tools") or []
        shape = _steer(shape, model, _instructions(messages))
        prompt = _Prompt(model, [*functions, *messages])
        cached = self._openai_cached(prompt)
        last, choice = messages[-1], body.get("tool_choice")
        mode = "tool_result" if last["role"] == "tool" else "user" if last["role"] == "user" else "other"
        specs = [t["function"] for t in functions if t.get("type") == "function"]
        tools = [] if choice == "none" else [(f["name"], f.get("parameters")) for f in specs]
        wanted = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        gen = self._generate(_text(last.get("content")), mode, tools, wanted, limit, False, shape)
        call: Json | None = None
        if gen.tool is not None:
            function = {"name": gen.tool[0], "arguments": _dumps(gen.tool[1])}
            call = {"id": _new_id("call_"), "type": "function", "function": function}
        finish = "tool_calls" if call else "length" if gen.truncated else "stop"
        usage = {
            "prompt_tokens": prompt.total,  # includes the cached tokens, as on the real API
            "completion_tokens": gen.tokens,
            "total_tokens": prompt.total + gen.tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        base = {
            "id": _new_id("chatcmpl-"),
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if not stream:
            message: Json = {"role": "assistant", "content": gen.text, "refusal": None, "annotations": []}
            message |= {"tool_calls": [call]} if call else {}
            choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
            return {**base, "object": "chat.completion", "choices": choices, "usage": usage}
        with_usage = (body.get("stream_options") or {}).get("include_usage") is True
        # Like the real API: with include_usage every chunk has "usage": null until a last, choice-less
        # chunk carries the totals; without it no chunk has a usage field at all.
        base |= {"object": "chat.completion.chunk", **({"usage": None} if with_usage else {})}

        def chunk(delta: Json, finish_reason: str | None = None, content: bool = True) -> Event:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice]}, content

        if call:
            head = {"index": 0, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            events = [chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})]
            pieces = _char_pieces(call["function"]["arguments"])
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces]
        else:
            events = [chunk({"role": "assistant", "content": "", "refusal": None}, content=False)]
            events += [chunk({"content": p}) for p in _word_pieces(gen.text or "")]
        events.append(chunk({}, finish, False))
        if with_usage:
            events.append(({**base, "choices": [], "usage": usage}, False))
        return events

    def _responses(self, body: Json, stream: bool, shape: _Shape) -> Json | list[Event]:
        model, given, functions = body["model"], body.get("input"), body.get("tools") or []
        if not isinstance(given, list):  # a bare string is one user message
            given = [] if given is None else [{"role": "user", "content": given}]
        items, instructions = given, body.get("instructions")
        shape = _steer(shape, model, f"{_text(instructions)} {_instructions(items)}")
        prompt = _Prompt(model, ([instructions] if instructions else []) + [*functions, *items])
        cached = self._openai_cached(prompt)
        last, choice = items[-1] if items else {}, body.get("tool_choice")
        results = last.get("type") == "function_call_output"
        mode = "tool_result" if results else "user" if last.get("role") == "user" else "other"
        tools = [(t["name"], t.get("parameters")) for t in functions if t.get("type") == "function"]
        tools = [] if choice == "none" else tools
        wanted = choice.get("name") if isinstance(choice, dict) else None
        key = _text(last.get("output") if results else last.get("content"))
        gen = self._generate(key, mode, tools, wanted, body.get("max_output_tokens"), False, shape)
        item: Json
        if gen.tool is not None:
            item = {"id": _new_id("fc_"), "type": "function_call", "status": "completed", "name": gen.tool[0]}
            item.update(arguments=_dumps(gen.tool[1]), call_id=_new_id("call_"))
        else:
            part: Json = {"type": "output_text", "annotations": [], "logprobs": [], "text": gen.text or ""}
            item = {"id": _new_id("msg_"), "type": "message", "role": "assistant", "content": [part]}
            item["status"] = "incomplete" if gen.truncated else "completed"
        created = int(time.time())
        base = {
            "id": _new_id("resp_"),
            "object": "response",
            "created_at": created,
            "status": "in_progress",  # as in response.created; the final object overrides
            "background": False,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "model": model,
            "output": [],
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "tool_choice": choice or "auto",
            "tools": functions,
            "usage": None,
            **{k: body.get(k, default) for k, default in _RESPONSE_ECHO.items()},
        }
        usage = {
            "input_tokens": prompt.total,  # includes the cached tokens, as on the real API
            # This SDK's InputTokensDetails requires cache_write_tokens; automatic caching writes for free.
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": gen.tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt.total + gen.tokens,
        }
        final = {**base, "output": [item], "usage": usage}
        if gen.truncated:
            final |= {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
        else:
            final |= {"status": "completed", "completed_at": created}
        if not stream:
            return final
        ids: Json = {"item_id": item["id"], "output_index": 0}
        events = [_ev("response.created", response=base), _ev("response.in_progress", response=base)]
        if item["type"] == "function_call":
            added = {**item, "status": "in_progress", "arguments": ""}
            events.append(_ev("response.output_item.added", output_index=0, item=added))
            pieces = _char_pieces(item["arguments"])
            events += [_ev("response.function_call_arguments.delta", True, **ids, delta=p) for p in pieces]
            events.append(_ev("response.function_call_arguments.done", **ids, arguments=item["arguments"]))
        else:
            ids["content_index"], part = 0, item["content"][0]
            added = {**item, "status": "in_progress", "content": []}
            events.append(_ev("response.output_item.added", output_index=0, item=added))
            events.append(_ev("response.content_part.added", **ids, part={**part, "text": ""}))
            pieces = _word_pieces(part["text"])
            events += [_ev("response.output_text.delta", True, **ids, delta=p, logprobs=[]) for p in pieces]
            events.append(_ev("response.output_text.done", **ids, text=part["text"], logprobs=[]))
            events.append(_ev("response.content_part.done", **ids, part=part))
        events.append(_ev("response.output_item.done", output_index=0, item=item))
        # A truncated response ends with response.incomplete, never response.completed, as on the real API.
        events.append(_ev(f"response.{final['status']}", response=final))
        return events


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the handler threads itself, with a deadline
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of new connections (a proxy's workers
    # each opening their own pools) past it is dropped or reset by the kernel, which the
    # proxy then reports as the provider not reached. A real provider takes such a burst.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], fake: FakeProvider) -> None:
        self.fake = fake
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall start-up.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError) or self.fake._stopping.is_set():
            return  # clients hanging up, and sockets closed by stop(), are normal here
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked transfer encoding for streams
    server: _Server
    request_id = ""

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, Nagle holds each small SSE write back until the previous one is ACKed.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stderr logging per request would dominate benchmark time and clutter test output

    def do_POST(self) -> None:
        self.request_id = _new_id("req_")
        try:
            self.server.fake._handle(self)
        except OSError:  # the client went away mid-answer, or stop() closed the socket
            self.close_connection = True

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def head(self, status: int, headers: tuple[tuple[str, str], ...]) -> bytes:
        reason = self.responses.get(status, ("Overloaded" if status == 529 else "Error",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", f"request-id: {self.request_id}"]
        lines += [f"x-request-id: {self.request_id}", *(f"{k}: {v}" for k, v in headers)]
        if self.close_connection:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_json(self, status: int, obj: Json, headers: tuple[tuple[str, str], ...] = ()) -> None:
        payload = _dumps(obj).encode()
        fields = (("content-type", "application/json"), ("content-length", str(len(payload))), *headers)
        self.wfile.write(self.head(status, fields) + payload)  # one write: one segment for small replies

    def start_stream(self) -> None:
        content_type = ("content-type", "text/event-stream; charset=utf-8")
        self.wfile.write(
            self.head(200, (content_type, ("cache-control", "no-cache"), ("transfer-encoding", "chunked")))
        )

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until Ctrl-C: `python -m llmlog.demo.fake_provider --port 8787`."""
    parser = argparse.ArgumentParser(
        prog="python -m llmlog.demo.fake_provider", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    for knob in ("latency-ms", "first-token-ms", "chunk-ms"):
        parser.add_argument(f"--{knob}", type=float, default=0)
    parser.add_argument("--hang-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--line-ending", choices=sorted(_LINE_ENDINGS), default="lf")
    parser.add_argument("--split-bytes", type=int, default=0)
    args = vars(parser.parse_args(argv))
    fake = FakeProvider(**args).start()
    print(f"Fake provider on {fake.url} (Ctrl-C to stop)", flush=True)
    print(
        f"  ANTHROPIC_BASE_URL={fake.anthropic_base_url}\n  OPENAI_BASE_URL={fake.openai_base_url}",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
