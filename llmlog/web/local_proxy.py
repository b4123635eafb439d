"""The provider proxy alone (`llmlog.capture.proxy`'s routes), on a free loopback port, with
the guards every server of llmlog has: what `llmlog wrap` runs a program behind."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from llmlog.capture.context import CallContext
from llmlog.capture.exchange import Exchange
from llmlog.capture.proxy import Proxy, Upstreams
from llmlog.web.guard import LOOPBACK_NAMES, AllowedHosts, SecurityHeaders


class LocalProxy:
    """The proxy alone, on a free loopback port, for as long as a `with` lasts: what
    `llmlog wrap` runs a program behind. Calls are recorded by `submit`."""

    def __init__(
        self, submit: Callable[[Exchange], object], upstreams: Upstreams, base_context: CallContext
    ) -> None:
        import socket

        import uvicorn
        from starlette.applications import Starlette
        from starlette.middleware import Middleware

        # Routes forward to the upstream's origin; the path (OpenAI's /v1) comes from the
        # client's base URL, which `child_base_urls` keeps.
        origins = Upstreams(
            anthropic=_origin(upstreams.anthropic),
            openai=_origin(upstreams.openai),
            timeout_s=upstreams.timeout_s,
        )
        # Loopback names only: no web page reaches it by a name of its own (DNS rebinding).
        guarded = [Middleware(SecurityHeaders), Middleware(AllowedHosts, hosts=LOOPBACK_NAMES)]
        forwarder = Proxy(submit, origins, base_context=base_context)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await forwarder.aclose()

        app = Starlette(routes=forwarder.routes(), middleware=guarded, lifespan=lifespan)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="llmlog-proxy", daemon=True
        )

    def __enter__(self) -> LocalProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
