"""The web app: pages rendered on the server (Jinja2, autoescaped) and the JSON behind them.

Everything logged is untrusted: templates escape every value (autoescape, no `|safe` on
logged text), filters reach the store only as bound parameters, and a filter names a
column only through the fixed list the store allows.

Each group of pages is a module with a `routes(web)` function: `calls` (the list, one call,
the sample, the JSON API), `people` (sessions and users), `replay`, `dashboard`, `sql`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmlog.capture import proxy
from llmlog.capture.proxy import PATHS as PROXY_PATHS
from llmlog.capture.proxy import Upstreams
from llmlog.config import Settings
from llmlog.replay import Providers
from llmlog.store import Store
from llmlog.writer import Writer

HERE = Path(__file__).parent


class TokenMiddleware(BaseHTTPMiddleware):
    """A shared token, as `?token=`, a `Bearer` header or the cookie the first visit sets."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith(("/v1/", *PROXY_PATHS)):  # the collector's: tokens of their own
            return await call_next(request)
        given = (
            request.query_params.get("token")
            or request.cookies.get("llmlog_token")
            or request.headers.get("authorization", "").removeprefix("Bearer ")
        )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return Response("a token is required: open the page with ?token=…", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie("llmlog_token", self.token, httponly=True, samesite="strict")
        return response


class ServerTiming:
    """Adds `Server-Timing: app;dur=…` (ms until the response starts): the app's own time,
    as browsers' developer tools and the benchmarks read it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", took)]}
            await send(message)

        await self.app(scope, receive, timed)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["ms"] = lambda v: "" if v is None else f"{v:,.0f} ms"
    env.filters["usd"] = lambda v: "" if v is None else f"${v:,.4f}"
    env.filters["num"] = lambda v: "" if v is None else f"{v:,}"
    env.filters["pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=2)
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if isinstance(t, datetime) else t
    return env


@dataclass
class Web:
    """What every page needs: the store (used under `lock`: a SQLite connection is not to be
    shared by threads at once) and the templates; and where replays are sent."""

    store: Store
    lock: threading.Lock
    env: Environment
    providers: Providers = field(default_factory=Providers)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Store]:
        with self.lock:
            yield self.store

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)

    def error(self, message: str, status: int = 400) -> HTMLResponse:
        return self.render("error.html", status, message=message)


def create_app(
    open_store: Callable[[], Store],
    token: str | None = None,
    providers: Providers | None = None,
    ingest_token: str | None = None,
    upstreams: Upstreams | None = None,
) -> Starlette:
    """The app over one store. `open_store` is called once, here. `providers` says where
    replays go (by default, wherever the SDKs' environment variables point). `token` guards
    the UI and its API; `ingest_token` the collector's routes (`/v1/` and the provider proxy),
    and nothing else. `upstreams`: where the proxy forwards (by default the providers)."""
    from llmlog.web import calls, dashboard, ingest, people, replay, sql

    web = Web(open_store(), threading.Lock(), _environment(), providers or Providers())
    routes: list[BaseRoute] = []
    for module in (calls, people, replay, dashboard, sql):
        routes.extend(module.routes(web))
    routes.extend(ingest.routes(web, ingest_token))
    # The proxy's calls go through a writer of their own into this store, as an SDK's would:
    # parsed, priced and stored off the request's path. Never to a collector: this is one.
    writer = Writer(Settings(db=web.store.url, url=None))
    routes.extend(proxy.routes(writer.submit, upstreams, ingest_token))
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    middleware = [Middleware(ServerTiming)]
    if token:
        middleware.append(Middleware(TokenMiddleware, token=token))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        writer.close()
        web.store.close()

    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
