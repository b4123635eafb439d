"""`llmlog.wrap(client)`: record every model call an SDK client makes, at the HTTP layer.

Both SDKs send through an `httpx2` client. We wrap that client's transports (the default one
and any proxy mounts, so the user's proxy settings keep working) with a transport that times
the exchange and tees the response body as the SDK reads it. The SDK itself is untouched, so
return types, streams, `with_raw_response` and exceptions are exactly the SDK's own, and a
stream stays incremental: we only append each chunk to a list as it passes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2

from llmlog.capture import context as _context
from llmlog.capture.exchange import Exchange
from llmlog.capture.spans import joined
from llmlog.core.logs import recording_log
from llmlog.providers import api_at

log = recording_log()  # never raises: a handler of the app's cannot stop recording

C = TypeVar("C")
Sink = Callable[[Exchange], object]


def classify(provider: str, method: str, url: str) -> str | None:
    """Which API a request is a model call to, or None for anything else (listing, counting…)."""
    if method != "POST":
        return None
    # Any provider but Anthropic is read as speaking OpenAI's APIs, as the services that
    # copy them do.
    api = api_at(provider if provider == "anthropic" else "openai", urlsplit(url).path)
    return api.name if api is not None else None


def _start(provider: str, request: httpx2.Request, sink: Sink) -> Exchange | None:
    try:
        return _exchange(provider, request, sink)
    except Exception:  # recording must never stand in the way of the call itself
        log.exception("llmlog: could not start recording a call; it is sent unrecorded")
        return None


def _exchange(provider: str, request: httpx2.Request, sink: Sink) -> Exchange | None:
    url = str(request.url)
    api = classify(provider, request.method, url)
    if api is None:
        return None
    try:
        retry = int(request.headers.get("x-stainless-retry-count", "0"))
    except ValueError:
        retry = 0
    return Exchange(
        provider=provider,
        api=api,
        url=url,
        request_body=request.content,
        # In the app's OpenTelemetry trace when no llmlog span is open: the call is its child.
        context=joined(_context.current()),
        started_at=time.time(),
        t0=time.perf_counter(),
        retry_count=retry,
        _sink=sink,
    )


def note_response(ex: Exchange, status: int, headers: Mapping[str, str]) -> None:
    """The status and the response headers a record keeps (none that could carry a secret).
    `headers` looks names up regardless of case, as every HTTP client's do."""
    ex.status = status
    ex.response_headers = {
        k: headers[k]
        for k in ("content-type", "content-encoding", "request-id", "x-request-id")
        if k in headers
    }


class _TeeStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, ex: Exchange) -> None:
        self._inner = inner
        self._ex = ex

    def __iter__(self) -> Iterator[bytes]:
        ex = self._ex
        try:
            for chunk in self._inner:
                ex.add_chunk(chunk)
                yield chunk
        except GeneratorExit:
            ex.finish(incomplete=True)
            raise
        except BaseException as exc:
            ex.finish(failure=exc)
            raise
        ex.finish()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            # Closed before the end: the caller abandoned the stream.
            self._ex.finish(incomplete=True)


class _AsyncTeeStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, ex: Exchange) -> None:
        self._inner = inner
        self._ex = ex

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ex = self._ex
        try:
            async for chunk in self._inner:
                ex.add_chunk(chunk)
                yield chunk
        except GeneratorExit:
            ex.finish(incomplete=True)
            raise
        except BaseException as exc:
            ex.finish(failure=exc)
            raise
        ex.finish()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._ex.finish(incomplete=True)


class RecordingTransport(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport, provider: str, sink: Sink) -> None:
        self.inner = inner
        self.provider = provider
        self.sink = sink

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        ex = _start(self.provider, request, self.sink)
        if ex is None:
            return self.inner.handle_request(request)
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            ex.finish(failure=exc)
            raise
        note_response(ex, response.status_code, response.headers)
        response.stream = _TeeStream(response.stream, ex)  # type: ignore[arg-type]
        return response

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> RecordingTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.inner.__exit__(*args)


class AsyncRecordingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, provider: str, sink: Sink) -> None:
        self.inner = inner
        self.provider = provider
        self.sink = sink

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        ex = _start(self.provider, request, self.sink)
        if ex is None:
            return await self.inner.handle_async_request(request)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            ex.finish(failure=exc)
            raise
        note_response(ex, response.status_code, response.headers)
        response.stream = _AsyncTeeStream(response.stream, ex)  # type: ignore[arg-type]
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> AsyncRecordingTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.inner.__aexit__(*args)


def _provider_of(client: object) -> str:
    module = type(client).__module__.split(".")[0]
    if module in ("anthropic", "openai"):
        return module
    raise TypeError(
        "llmlog.wrap() takes an anthropic.Anthropic, anthropic.AsyncAnthropic, openai.OpenAI or "
        f"openai.AsyncOpenAI client, not {type(client).__module__}.{type(client).__qualname__}"
    )


def instrument(client: C, sink: Sink) -> C:
    """Wrap the transports of `client`'s HTTP client in place; wrapping twice is a no-op."""
    provider = _provider_of(client)
    http = getattr(client, "_client", None)
    if not isinstance(http, httpx2.Client | httpx2.AsyncClient):
        raise TypeError(f"{type(client).__qualname__} has no httpx2 client to record from")
    # `_transport` and `_mounts` are where httpx2 keeps the transports it built from the
    # user's settings (including proxies from arguments or the environment).
    if isinstance(http, httpx2.AsyncClient):

        def wrap_one(t: Any) -> Any:
            if t is None or isinstance(t, AsyncRecordingTransport):
                return t
            return AsyncRecordingTransport(t, provider, sink)
    else:

        def wrap_one(t: Any) -> Any:
            if t is None or isinstance(t, RecordingTransport):
                return t
            return RecordingTransport(t, provider, sink)

    http._transport = wrap_one(http._transport)
    http._mounts = {pattern: wrap_one(t) for pattern, t in http._mounts.items()}
    return client
