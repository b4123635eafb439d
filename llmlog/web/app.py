"""The web app: pages rendered on the server (Jinja2, autoescaped) and the JSON behind them.

Everything logged is untrusted: templates escape every value (autoescape, no `|safe` on
logged text), filters reach the store only as bound parameters, and a filter names a
column only through the fixed list the store allows.

Each group of pages is a module with a `routes(web)` function: `calls` (the list, one call,
the sample, the JSON API), `search` (words, and calls like one), `people` (sessions and
users), `replay`, `dashboard`, `investigations` (the reports), `sql`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmlog.capture import proxy
from llmlog.capture.proxy import Upstreams
from llmlog.core.config import Settings
from llmlog.operations import access
from llmlog.operations.replay import Providers
from llmlog.pipeline.writer import Writer
from llmlog.store import Store
from llmlog.web import auth, guard
from llmlog.web.throttle import SignIns

HERE = Path(__file__).parent
READERS = 8  # stores lent to pages at once (`Web.reading`)
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


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["ms"] = lambda v: "" if v is None else f"{v:,.0f} ms"
    env.filters["usd"] = lambda v: "" if v is None else f"${v:,.4f}"
    env.filters["num"] = lambda v: "" if v is None else f"{v:,}"
    env.filters["pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=2)
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if isinstance(t, datetime) else t
    # Who is signed in (for the links a role has) and the token every POST form carries.
    env.globals["identity"] = auth.CURRENT.get
    env.globals["csrf_token"] = auth.CSRF.get
    env.globals["may"] = may
    return env


def may(role: str) -> bool:
    """Whether whoever asks has `role` or more (everyone, on a server without accounts)."""
    identity = auth.CURRENT.get()
    return access.rank(identity.role if identity else "admin") >= access.rank(role)


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
                found = store.token(access.token_hash(given))
        except Exception:  # the store failing: no token of its own can be checked, so none opens
            log.warning("llmlog: cannot check an ingest token: the store failed", exc_info=True)
            return False
        return found is not None and found.scope == "ingest"


@dataclass
class Web:
    """What every page needs: the store and the templates; and where replays are sent.

    `store` is the collector's: its writes go through it, under `lock` (a connection is not
    to be shared by threads at once). Pages, the SQL console among them, read on stores of
    their own (`reading`), each on its own connection, lent to one request at a time, as
    Datasette does: a slow query holds its own connection and nobody else's. Where the
    store cannot be opened twice in one process (the embedded ClickHouse engine, SQLite in
    memory), pages share `store` and its lock with the collector, as one connection must."""

    store: Store
    lock: threading.Lock
    env: Environment
    providers: Providers = field(default_factory=Providers)
    signins: SignIns = field(default_factory=SignIns)  # how fast passwords may be tried
    _idle: list[Store] = field(default_factory=list)  # readers no request holds now
    _opened: list[Store] = field(default_factory=list)  # every reader, to close at the end
    _pool: threading.Lock = field(default_factory=threading.Lock)
    _shared: bool = False  # the store cannot be opened again: pages use `store`, under `lock`
    # Readers lent at once: each is a connection (two on PostgreSQL, with the console's),
    # and a server has a few hundred at most; a request past these waits for one.
    _lendable: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(READERS))

    @contextlib.contextmanager
    def reading(self) -> Iterator[Store]:
        with self._lendable:
            store = self._borrow()
            if store is None:
                with self.writing() as shared:
                    shared.reader = auth.reader()  # whose reading the audit log records
                    yield shared
                return
            try:
                store.reader = auth.reader()
                yield store
            finally:
                with self._pool:
                    self._idle.append(store)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Store]:
        """The collector's store: its writes, and the tokens it checks, never wait on a page."""
        with self.lock:
            yield self.store

    @contextlib.contextmanager
    def ingesting(self) -> Iterator[Store]:
        """`writing`, and the store's lock among processes (`Store.ingest_lock`), for the
        whole of one OTLP request's ingest, which reads the store and then writes: servers
        sharing the store (several workers, several hosts on one PostgreSQL) see each other's
        spans of one call in turn, never both before either is stored. This process's lock
        first: its threads queue here, and hold the other processes up one at a time."""
        with self.writing() as store, store.ingest_lock():
            yield store

    def _borrow(self) -> Store | None:
        with self._pool:
            if self._shared:
                return None
            if self._idle:
                return self._idle.pop()
        # Opened outside the pool's lock: a connection to a server may take a while.
        store = self.store.reopened()
        with self._pool:
            if store is None:
                self._shared = True
            else:
                self._opened.append(store)
        return store

    def close(self) -> None:
        with self._pool:
            opened, self._opened, self._idle = self._opened, [], []
        for store in opened:
            store.close()
        self.store.close()

    def render(
        self, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> HTMLResponse:
        page = self.env.get_template(name).render(**context)
        return HTMLResponse(page, status_code=status, headers=headers)

    def error(self, message: str, status: int = 400) -> HTMLResponse:
        return self.render("error.html", status, message=message)


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
    from llmlog.web import calls, dashboard, ingest, investigations, people, replay, search, sql

    web = Web(
        open_store(), threading.Lock(), _environment(), providers or Providers(), SignIns(processes=processes)
    )
    routes: list[BaseRoute] = []
    for module in (calls, search, people, replay, dashboard, investigations, sql, auth):
        routes.extend(module.routes(web))
    gate = IngestGate(web, ingest_token)
    routes.extend(ingest.routes(web, gate))
    # The proxy's calls go through a writer of their own into this store, as an SDK's would:
    # parsed, priced and stored off the request's path. Never to a collector: this is one.
    writer = Writer(Settings(db=web.store.url, url=None))
    routes.extend(proxy.routes(writer.submit, upstreams, gate))
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    middleware = [
        Middleware(guard.SecurityHeaders),  # first: on every answer, a refused host's too
        Middleware(guard.AllowedHosts, hosts=allowed_hosts),
        Middleware(ServerTiming),
        Middleware(auth.AccessMiddleware, web=web, token=token),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        writer.close()
        web.close()

    async def server_error(request: Request, exc: Exception) -> Response:
        # Answered outside the middleware (Starlette's outermost layer): its headers are set here.
        return PlainTextResponse("Internal Server Error", 500, headers=guard.server_error_headers())

    return Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={500: server_error}
    )
