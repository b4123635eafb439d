"""The provider proxy: `/anthropic/...` and `/openai/...` forward to the providers and record
every model call, for callers we cannot wrap (another language, a command-line tool): they
point their SDK's base URL here and change nothing else.

    ANTHROPIC_BASE_URL=http://127.0.0.1:8765/anthropic
    OPENAI_BASE_URL=http://127.0.0.1:8765/openai/v1

What it promises:
- Streams pass through chunk by chunk as they arrive, never buffered: the first token reaches
  the client as soon as it would directly. The bytes are the provider's own (compressed or
  not); a copy of each chunk goes to the record, as `llmlog.wrap` does in-process.
- The client's API key is forwarded and never stored or logged: an exchange keeps no request
  header, and only a few harmless response headers.
- Context comes in request headers (`llmlog-session-id`, `llmlog-user-id`, `llmlog-feature`,
  `llmlog-prompt-version`, `llmlog-metadata` as a JSON object, `llmlog-tags` comma-separated),
  taken off before forwarding. Bad context is a 400 saying which header, and nothing is sent.
- Upstream errors reach the client as the provider sent them; a provider that cannot be
  reached or times out is a 502 or 504; each is recorded as the call's error.
- Every other path passes through unrecorded (model lists, token counting, files…).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx2
import yarl
from multidict import CIMultiDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from llmlog.capture.context import CallContext
from llmlog.capture.exchange import Exchange
from llmlog.capture.wrap import classify, note_response
from llmlog.core.config import upstream
from llmlog.core.record import too_deep

# Headers that belong to one hop of the connection, not to the request or response.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip
CONTEXT_PREFIX = "llmlog-"
TOKEN_HEADER = "llmlog-token"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
PROVIDERS = ("anthropic", "openai")
PATHS = ("/anthropic/", "/openai/", "/c/")  # the proxy's, which the UI's token lets by


@dataclass
class Upstreams:
    """Where each provider's requests go (tests and the demo point them at the fake provider)."""

    anthropic: str = field(default_factory=lambda: upstream("anthropic") or "https://api.anthropic.com")
    openai: str = field(default_factory=lambda: upstream("openai") or "https://api.openai.com")
    # Longest wait for the provider's next bytes: generous, as a long generation may pause
    # a minute or more; past it the client gets a 504.
    timeout_s: float = 600.0


class BadContext(ValueError):
    pass


def _tags(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def context_from(headers: Any, base: CallContext | None = None) -> CallContext:
    """The call context the `llmlog-*` request headers give, over `base`."""
    fields = {
        "session_id": headers.get("llmlog-session-id"),
        "user_id": headers.get("llmlog-user-id"),
        "feature": headers.get("llmlog-feature"),
        "prompt_template_version": headers.get("llmlog-prompt-version"),
    }
    metadata = None
    if headers.get("llmlog-metadata"):
        try:
            metadata = json.loads(headers["llmlog-metadata"])
        except RecursionError:
            raise BadContext("llmlog-metadata: nested too deeply") from None
        except ValueError as exc:
            raise BadContext(f"llmlog-metadata: not JSON ({exc})") from None
        if not isinstance(metadata, dict):
            raise BadContext("llmlog-metadata: must be a JSON object")
        # Refused now, before the request is sent: the call could not be stored after.
        if too_deep(metadata):
            raise BadContext("llmlog-metadata: nested too deeply (at most about 250 levels)")
    tags = _tags(headers.get("llmlog-tags") or "")
    return (base or CallContext()).merged(metadata=metadata, tags=tags, **fields)


def encode_context(values: dict[str, str]) -> str:
    """Context headers as one path segment, for callers that can set only a base URL
    (`llmlog wrap` against a running server): `/c/{segment}/anthropic/...`."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_context(segment: str) -> dict[str, str]:
    try:
        values = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:
        raise BadContext("the context segment of the path is not valid") from None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise BadContext("the context segment of the path is not valid")
    return {k.lower(): v for k, v in values.items() if k.lower().startswith(CONTEXT_PREFIX)}


def _failure_answer(provider: str, exc: BaseException) -> Response:
    timeout = isinstance(exc, TimeoutError)  # aiohttp's timeouts are asyncio's (the builtin)
    kind = "upstream_timeout" if timeout else "upstream_unreachable"
    said = str(exc) or type(exc).__name__
    message = f"llmlog proxy: {provider} {'timed out' if timeout else 'could not be reached'}: {said}"
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}}, status_code=504 if timeout else 502
    )


Gate = str | Callable[[str], bool] | None


def allows(gate: Gate, given: str) -> bool:
    """Whether a token given opens what `gate` guards: the one token, or what the callable
    says (a collector with tokens of its own), or anything when there is no gate."""
    if gate is None:
        return True
    if callable(gate):
        return gate(given)
    return hmac.compare_digest(given.encode(), gate.encode())


# What the routes that store calls (the collector's, the proxy's model calls) take without
# a token: the types programs send (JSON, NDJSON, protobuf). A page of any other site can make
# a browser POST text/plain, a form or nothing at all to this server without asking it
# first (a CORS "simple" request); these types it cannot (the browser asks first, and this
# server never says yes). So a write without a token comes from a program, not from a page.
# An allow-list, not a list of the simple types: a type this list does not know is refused.
PROGRAM_TYPES = frozenset(
    {
        "application/json", "application/x-ndjson", "application/ndjson", "application/jsonl",
        "application/x-jsonlines", "application/jsonlines", "application/x-protobuf", "application/protobuf",
    }
)  # fmt: skip


def sent_by_a_program(headers: Any) -> bool:
    """Whether a request's Content-Type is one no page of another site can send (see
    `PROGRAM_TYPES`; `application/…+json` too)."""
    media = (headers.get("content-type") or "").split(";")[0].strip().lower()
    return media in PROGRAM_TYPES or (media.startswith("application/") and media.endswith("+json"))


def vouches(gate: Gate, given: str) -> bool:
    """Whether `given` is a token `gate` checks and takes: an open gate (none, or one that
    requires no token yet) vouches for no one."""
    if gate is None or not given:
        return False
    if callable(gate):
        check = getattr(gate, "vouches", None)
        return bool(check(given)) if check is not None else gate(given)
    return hmac.compare_digest(given.encode(), gate.encode())


def refused_type(token_name: str) -> Response:
    return JSONResponse(
        {
            "error": "send calls as application/json, application/x-ndjson or application/x-protobuf"
            f" (or with a token: {token_name}); other content types are what any web page can make a"
            " browser send, so they are refused"
        },
        status_code=415,
    )


class Proxy:
    """The proxy's routes, and the connections to the providers they share.

    Forwarding is on aiohttp's client and written to ASGI's `send` as each chunk arrives:
    the proxy's own cost per call is what bounds the requests a process forwards, and
    aiohttp parses HTTP in C (llhttp) where httpx's stack is Python from the socket up
    (0.17 ms of CPU a request against 0.52 on this workload); a StreamingResponse would add
    a task group per request. `submit` takes each finished exchange (a writer's `submit`);
    `token`, when set, must come in the `llmlog-token` header (see `allows`); `base_context`
    is under every call's own (`llmlog wrap --feature …`). `aclose` at shutdown."""

    def __init__(
        self,
        submit: Callable[[Exchange], object],
        upstreams: Upstreams | None = None,
        token: Gate = None,
        base_context: CallContext | None = None,
    ) -> None:
        self.submit = submit
        self.upstreams = upstreams or Upstreams()
        self.token = token
        self.base_context = base_context
        # A session is bound to the event loop it was made on; tests (and `llmlog wrap`) run
        # the app on more than one loop in a process, so each loop gets its own.
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
            weakref.WeakKeyDictionary()
        )
        self._via: dict[tuple[str, str], str | None] = {}

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                # The trust the SDKs' own HTTP stack has (SSL_CERT_FILE, else the system's
                # certificates), so a provider the SDK reaches, the proxy reaches.
                connector=aiohttp.TCPConnector(ssl=httpx2.create_ssl_context()),
                # The provider's bytes as sent (compressed or not): the client decompresses.
                auto_decompress=False,
                # A long generation may pause a minute or more between bytes (`timeout_s`);
                # `connect` includes waiting for a free connection.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=40.0, sock_connect=10.0, sock_read=self.upstreams.timeout_s
                ),
                # The client's headers as it sent them: none of aiohttp's own added.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                # Redirects reach the client, as any other answer does.
                requote_redirect_url=False,
            )
            self._sessions[loop] = session
            self._via.clear()
        return session

    def _proxy_for(self, url: yarl.URL) -> str | None:
        """The HTTP proxy a request to `url` goes through: HTTPS_PROXY (or HTTP_PROXY) unless
        NO_PROXY names its host, as the SDKs honour them. Read once per host and session:
        aiohttp's own `trust_env` reads the environment (and ~/.netrc) in a thread for every
        request, which cost more than the forwarding itself."""
        key = (url.scheme, url.host or "")
        if key not in self._via:
            bypass = urllib.request.proxy_bypass(key[1]) if key[1] else True
            proxies = urllib.request.getproxies()
            self._via[key] = None if bypass else proxies.get(key[0]) or proxies.get("all")
        return self._via[key]

    async def aclose(self) -> None:
        """Close the current loop's connections to the providers."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def routes(self) -> list[BaseRoute]:
        return [
            route
            for provider in PROVIDERS
            for route in (
                Route(f"/{provider}/{{path:path}}", _Endpoint(self, provider), methods=METHODS),
                Route(f"/c/{{ctx:str}}/{provider}/{{path:path}}", _Endpoint(self, provider), methods=METHODS),
            )
        ]

    async def forward(self, scope: Scope, receive: Receive, send: Send, provider: str) -> None:
        request = Request(scope, receive)
        try:
            extra = _decode_context(request.path_params["ctx"]) if "ctx" in request.path_params else {}
            ctx = context_from({**extra, **request.headers}, self.base_context)
        except BadContext as exc:
            return await JSONResponse({"error": str(exc)}, status_code=400)(scope, receive, send)
        # The token comes as a header, or in the path's context segment from a caller that
        # can set only a base URL (`llmlog wrap --server`).
        given = request.headers.get(TOKEN_HEADER) or extra.get(TOKEN_HEADER) or ""
        if not allows(self.token, given):
            refusal = JSONResponse({"error": f"the {TOKEN_HEADER} header is required"}, status_code=401)
            return await refusal(scope, receive, send)
        upstream = self.upstreams.anthropic if provider == "anthropic" else self.upstreams.openai
        target = upstream.rstrip("/") + "/" + _path_as_sent(scope, request.path_params)
        if request.url.query:
            target += "?" + request.url.query
        api = classify(provider, request.method, target)
        if api is not None and not sent_by_a_program(request.headers) and not vouches(self.token, given):
            # a call would be recorded
            return await refused_type(f"the {TOKEN_HEADER} header")(scope, receive, send)
        body = await request.body()
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.decode("latin-1").lower() not in HOP_BY_HOP and not k.lower().startswith(b"llmlog-")
        ]
        ex = None
        if api is not None:
            try:
                retry = int(request.headers.get("x-stainless-retry-count", "0"))
            except ValueError:
                retry = 0
            ex = Exchange(
                provider=provider, api=api, url=target, request_body=body, context=ctx,
                started_at=time.time(), t0=time.perf_counter(), retry_count=retry, _sink=self.submit,
            )  # fmt: skip
        url = yarl.URL(target, encoded=True)
        try:
            session = self._session()
            answer = await session.request(
                request.method, url, headers=CIMultiDict(headers), allow_redirects=False,
                proxy=self._proxy_for(url),
                # A body only where the client sent one: no `Content-Length: 0` added to a GET.
                data=body if body or "content-length" in request.headers else None,
            )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as exc:
            if ex is not None:
                ex.finish(failure=exc)
            return await _failure_answer(provider, exc)(scope, receive, send)
        try:
            if ex is not None:
                note_response(ex, answer.status, answer.headers)
            await self._relay(answer, ex, receive, send)
        finally:
            answer.release()

    @staticmethod
    async def _relay(
        answer: aiohttp.ClientResponse, ex: Exchange | None, receive: Receive, send: Send
    ) -> None:
        """The provider's answer to the client chunk by chunk as it arrives, a copy of each to
        the exchange; the exchange closed as complete, failed, or cut short when the client
        goes away (told by `receive`, watched beside the stream)."""
        # Never a provider's CORS headers: they would let pages of other sites call (and
        # record calls) through this proxy from a browser.
        kept = [
            (name, value)
            for name, value in ((k.lower(), v) for k, v in answer.raw_headers)
            if name.decode("latin-1") not in HOP_BY_HOP and not name.startswith(b"access-control-")
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": kept})
        # The client going away (`receive` says http.disconnect) stops the relay at once, even
        # while the provider is silent (a long pause before the first token).
        task, relaying = asyncio.current_task(), [True]
        gone = asyncio.ensure_future(receive())
        gone.add_done_callback(
            lambda f: task.cancel() if relaying[0] and task and not f.cancelled() else None
        )
        try:
            async for chunk in answer.content.iter_any():
                if ex is not None:
                    ex.add_chunk(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            relaying[0] = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if ex is not None:
                ex.finish(incomplete=True)
            if relaying[0] and gone.done() and task is not None and task.uncancel() == 0:
                return  # the client left: nothing more to do, and nothing went wrong
            raise
        except BaseException as exc:
            if ex is not None:
                ex.finish(failure=exc)
            raise
        finally:
            relaying[0] = False
            gone.cancel()
        if ex is not None:
            ex.finish()


def _path_as_sent(scope: Scope, params: dict[str, Any]) -> str:
    """The path after the provider's segment as the client sent it, percent-encoding and
    all (`raw_path`): the decoded one would go out with spaces and raw UTF-8 in it."""
    raw = scope.get("raw_path")
    parts = raw.decode("latin-1").split("/", 4 if "ctx" in params else 2) if raw else []
    if len(parts) == (5 if "ctx" in params else 3):
        return str(parts[-1])
    return urllib.parse.quote(str(params["path"]), safe="/:@!$&'()*+,;=~")


class _Endpoint:
    """One provider's proxy route: an ASGI app of its own, not a request-response handler."""

    def __init__(self, proxy: Proxy, provider: str) -> None:
        self.proxy = proxy
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.proxy.forward(scope, receive, send, self.provider)


def child_base_urls(proxy: str, upstreams: Upstreams) -> dict[str, str]:
    """The SDK base URLs a program gets to go through the proxy at `proxy`: each keeps the
    path its upstream had (OpenAI's `/v1`), so the proxy forwards to the same place."""
    out = {}
    for provider, env, default_path in (
        ("anthropic", "ANTHROPIC_BASE_URL", ""),
        ("openai", "OPENAI_BASE_URL", "/v1"),
    ):
        path = urlsplit(getattr(upstreams, provider)).path.rstrip("/") or default_path
        out[env] = f"{proxy.rstrip('/')}/{provider}{path}"
    return out


def upstreams_from_environment() -> Upstreams:
    """Where a wrapped program's calls should go: LLMLOG_*_UPSTREAM, else the base URLs the
    program would have used (ANTHROPIC_BASE_URL, OPENAI_BASE_URL), else the providers."""
    anthropic = upstream("anthropic") or os.environ.get("ANTHROPIC_BASE_URL")
    openai = upstream("openai") or os.environ.get("OPENAI_BASE_URL")
    return Upstreams(
        anthropic=anthropic or "https://api.anthropic.com", openai=openai or "https://api.openai.com/v1"
    )
