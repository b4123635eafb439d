"""The web app: pages rendered on the server (Jinja2, autoescaped) and the JSON behind them.

Everything logged is untrusted: templates escape every value (autoescape, no `|safe` on
logged text), filters reach the store only as bound parameters, and a filter names a
column only through the fixed list the store allows.

Each group of pages is a module of handlers and a `routes()` function that lists them, each
with the role that opens it: `findings` (what is wrong now, the first screen), `calls` (the
list, one call, the sample, the JSON API), `search` (words, and calls like one), `people`
(sessions and users), `traces` (the recent traces, one as a waterfall), `replay`,
`dashboard`, `drift` (drift over time), `reports`, `experiments` (each experiment's
comparison), `alerts`, `sql`, `admin` (signing in and out, the admin page); and the
collector's, `ingest`. A handler finds what every page is given
in the app's state (`state.web_of`), the collector its own (`ingest.collector_of`).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmlog.capture import proxy
from llmlog.capture.proxy import Upstreams
from llmlog.core.config import Settings
from llmlog.operations import accounts
from llmlog.operations.replay import Providers
from llmlog.pipeline.writer import Writer
from llmlog.store import Store
from llmlog.web import auth, guard
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.state import Web, environment
from llmlog.web.throttle import SignIns

HERE = Path(__file__).parent
log = logging.getLogger(__name__)


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


class IngestGate:
    """Who may send calls to the collector's routes: LLMLOG_INGEST_TOKEN, or a token of
    scope ingest from the store (`llmlog tokens add NAME --scope ingest`). With neither,
    anyone who can reach the server (on loopback by default)."""

    def __init__(self, web: Web, token: str | None) -> None:
        self.web, self.token = web, token
        self._known: tuple[float, bool] = (0.0, False)  # (when read, any ingest token in the store)

    def required(self) -> bool:
        when, known = self._known
        if time.monotonic() - when > 2.0:
            with self.web.writing() as store:
                known = store.setting("ingest_tokens_required") is True
            self._known = (time.monotonic(), known)
        return bool(self.token) or known

    def __call__(self, given: str) -> bool:
        try:
            return not self.required() or self.vouches(given)
        except Exception:  # the store failing: no token of its own can be checked, so none opens
            log.warning("llmlog: cannot check an ingest token: the store failed", exc_info=True)
            return False

    def vouches(self, given: str) -> bool:
        """Whether `given` is a token this server knows (not merely that none is needed)."""
        if self.token and hmac.compare_digest(given.encode(), self.token.encode()):
            return True
        if not given:
            return False
        try:
            with self.web.writing() as store:
                found = store.token(accounts.token_hash(given))
        except Exception:  # the store failing: no token of its own can be checked, so none opens
            log.warning("llmlog: cannot check an ingest token: the store failed", exc_info=True)
            return False
        return found is not None and found.scope == "ingest"


def create_app(
    open_store: Callable[[], Store],
    token: str | None = None,
    providers: Providers | None = None,
    ingest_token: str | None = None,
    upstreams: Upstreams | None = None,
    allowed_hosts: Sequence[str] = guard.LOOPBACK_NAMES,
    processes: int = 1,
) -> Starlette:
    """The app over one store. `open_store` is called once, here; pages read on the same
    store opened again (`Store.reopened`), so as never to hold up the collector. `providers` says where
    replays go (by default, wherever the SDKs' environment variables point). `token` guards
    the UI and its API; `ingest_token` the collector's routes (`/v1/` and the provider proxy),
    and nothing else. `upstreams`: where the proxy forwards (by default the providers).
    `allowed_hosts`: the names it answers to (`guard.allowed_hosts`; by default loopback's).
    `processes`: how many processes serve this app at once (`llmlog serve --workers`), each
    with its own: the sign-in budgets are shared out among them (`SignIns`)."""
    from llmlog.web import (
        admin,
        alerts,
        calls,
        dashboard,
        drift,
        experiments,
        findings,
        ingest,
        people,
        replay,
        reports,
        search,
        sql,
        traces,
    )

    web = Web(
        open_store(), threading.Lock(), environment(), providers or Providers(), SignIns(processes=processes)
    )
    gate = IngestGate(web, ingest_token)
    # The proxy's calls go through a writer of their own into this store, as an SDK's would:
    # parsed, priced and stored off the request's path. Never to a collector: this is one.
    writer = Writer(Settings(db=web.store.url, url=None))
    forwarder = proxy.Proxy(writer.submit, upstreams, gate)
    # The ways in first: a request is matched against the routes in order, and they take
    # nearly every request a busy server gets (after the pages, ~60 routes were tried each).
    routes: list[BaseRoute] = [*forwarder.routes(), *ingest.routes()]
    # (drift's /api/reports/drift-by-day before the reports' /api/reports/{name}, which would take it)
    pages = (findings, calls, search, people, traces, replay, dashboard, drift, reports, experiments,
             alerts, sql, admin)  # fmt: skip
    for module in pages:
        routes.extend(module.routes())
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    web.pages = routes
    web.env.globals["opens"] = web.opens
    middleware = [
        Middleware(guard.SecurityHeaders),  # first: on every answer, a refused host's too
        Middleware(guard.AllowedHosts, hosts=allowed_hosts),
        Middleware(ServerTiming),
        Middleware(auth.AccessMiddleware, web=web, token=token),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await forwarder.aclose()
        writer.close()
        web.close()

    def refused(request: Request, exc: Exception) -> Response:
        """The one place a route's refusal (`answer.Refusal`) becomes an answer: JSON on the
        JSON API, the error page elsewhere."""
        assert isinstance(exc, Refusal)
        if auth.wants_json(request.url.path):
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return web.error(exc.message, exc.status)

    async def server_error(request: Request, exc: Exception) -> Response:
        # Answered outside the middleware (Starlette's outermost layer): its headers are set here.
        return PlainTextResponse("Internal Server Error", 500, headers=guard.server_error_headers())

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={Refusal: refused, 500: server_error},
    )
    app.state.web = web  # what the pages' handlers are given (`state.web_of`)
    app.state.collector = ingest.Collector.made(web, gate)  # the collector's (`ingest.collector_of`)
    return app
