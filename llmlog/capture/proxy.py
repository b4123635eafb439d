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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from llmlog.capture.context import CallContext
from llmlog.capture.exchange import Exchange
from llmlog.capture.wrap import classify, note_response
from llmlog.core.config import upstream

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
        except ValueError as exc:
            raise BadContext(f"llmlog-metadata: not JSON ({exc})") from None
        if not isinstance(metadata, dict):
            raise BadContext("llmlog-metadata: must be a JSON object")
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


def _failure_answer(provider: str, exc: httpx2.HTTPError) -> Response:
    timeout = isinstance(exc, httpx2.TimeoutException)
    kind = "upstream_timeout" if timeout else "upstream_unreachable"
    message = f"llmlog proxy: {provider} {'timed out' if timeout else 'could not be reached'}: {exc}"
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


def routes(
    submit: Callable[[Exchange], object],
    upstreams: Upstreams | None = None,
    token: Gate = None,
    base_context: CallContext | None = None,
) -> list[BaseRoute]:
    """The proxy's routes. `submit` takes each finished exchange (a writer's `submit`);
    `token`, when set, must come in the `llmlog-token` header (see `allows`); `base_context`
    is under every call's own (`llmlog wrap --feature …`)."""
    upstreams = upstreams or Upstreams()
    client = httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=10.0, read=upstreams.timeout_s, write=60.0, pool=30.0),
        follow_redirects=False,
    )

    async def forward(request: Request, provider: str) -> Response:
        try:
            extra = _decode_context(request.path_params["ctx"]) if "ctx" in request.path_params else {}
            ctx = context_from({**extra, **request.headers}, base_context)
        except BadContext as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        # The token comes as a header, or in the path's context segment from a caller that
        # can set only a base URL (`llmlog wrap --server`).
        given = request.headers.get(TOKEN_HEADER) or extra.get(TOKEN_HEADER) or ""
        if not allows(token, given):
            return JSONResponse({"error": f"the {TOKEN_HEADER} header is required"}, status_code=401)
        upstream = upstreams.anthropic if provider == "anthropic" else upstreams.openai
        target = upstream.rstrip("/") + "/" + request.path_params["path"]
        if request.url.query:
            target += "?" + request.url.query
        api = classify(provider, request.method, target)
        if api is not None and not sent_by_a_program(request.headers) and not vouches(token, given):
            return refused_type(f"the {TOKEN_HEADER} header")  # a call would be recorded
        body = await request.body()
        headers = [
            (k, v)
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
                started_at=time.time(), t0=time.perf_counter(), retry_count=retry, _sink=submit,
            )  # fmt: skip
        outgoing = client.build_request(request.method, target, headers=headers, content=body)
        try:
            answer = await client.send(outgoing, stream=True)
        except httpx2.HTTPError as exc:
            if ex is not None:
                ex.finish(failure=exc)
            return _failure_answer(provider, exc)
        if ex is not None:
            note_response(ex, answer)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    if ex is not None:
                        ex.add_chunk(chunk)
                    yield chunk
            except (GeneratorExit, asyncio.CancelledError):  # the client went away
                if ex is not None:
                    ex.finish(incomplete=True)
                raise
            except BaseException as exc:
                if ex is not None:
                    ex.finish(failure=exc)
                raise
            finally:
                await answer.aclose()
            if ex is not None:
                ex.finish()

        # Never a provider's CORS headers: they would let pages of other sites call (and
        # record calls) through this proxy from a browser.
        kept = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in answer.headers.raw
            if k.decode("latin-1").lower() not in HOP_BY_HOP
            and not k.decode("latin-1").lower().startswith("access-control-")
        }
        return StreamingResponse(relay(), status_code=answer.status_code, headers=kept)

    def endpoint(provider: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            return await forward(request, provider)

        return handle

    return [
        route
        for provider in PROVIDERS
        for route in (
            Route(f"/{provider}/{{path:path}}", endpoint(provider), methods=METHODS),
            Route(f"/c/{{ctx:str}}/{provider}/{{path:path}}", endpoint(provider), methods=METHODS),
        )
    ]


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
