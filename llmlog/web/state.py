"""What every page of the web UI is given: the store (the collector's, and readers lent to
pages), the templates, where replays go and the sign-in budget (`Web`); and what a template
may ask (`may`). The app (`llmlog.web.app`) makes one and hands it to each page's routes."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute

from llmlog.analysis.dashboard import DayPart
from llmlog.analysis.days import DayCache
from llmlog.analysis.drift import DayRates
from llmlog.analysis.latest import Latest
from llmlog.core.config import Settings
from llmlog.operations import accounts
from llmlog.operations.replay import Providers
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store
from llmlog.web import auth
from llmlog.web.headlines import Headlines
from llmlog.web.throttle import SignIns
from llmlog.web.verdicts import Verdicts

HERE = Path(__file__).parent
READERS = 8  # stores lent to pages at once (`Web.reading`)


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["ms"] = lambda v: "" if v is None else f"{v:,.0f} ms"
    env.filters["usd"] = lambda v: "" if v is None else f"${v:,.4f}"
    # One path segment, '/' included: a trace id an app named itself ("req-42/a") stays its
    # own page's name.
    env.filters["segment"] = lambda v: quote(str(v), safe="")
    # A name as a line of a page shows it: names are kept whole, and a span's may be a megabyte.
    env.filters["short"] = lambda v: v if not isinstance(v, str) or len(v) <= 200 else v[:200] + "…"
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
    return accounts.rank(identity.role if identity else "admin") >= accounts.rank(role)


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
    # The app's routes, each page with the role that opens it (`auth.Page`): what the access
    # check and the templates' links (`opens`) read.
    pages: list[BaseRoute] = field(default_factory=list)
    # What a call's page prices its cost with: LLMLOG_PRICES, as at ingest.
    pricer: Pricer = field(default_factory=lambda: Pricer(Settings().prices))
    # The dashboard's figures of whole past days, read once (`analysis.dashboard.DayCache`).
    day_cache: DayCache[DayPart] = field(default_factory=DayCache)
    day_cache_lock: threading.Lock = field(default_factory=threading.Lock)
    # Drift over time's rates of whole past days, read once (`analysis.drift`), as the dashboard's.
    drift_cache: DayCache[DayRates] = field(default_factory=DayCache)
    drift_cache_lock: threading.Lock = field(default_factory=threading.Lock)
    drift_reader: threading.Thread | None = None  # reading on the days a view left (`web.drift`)
    closed: bool = False  # (the drift reader then stops at its next day)
    # The latest findings, evaluated off the requests' path at most every few minutes
    # (`analysis.latest`): the findings page and the calls list's line read them.
    findings: Latest = field(default_factory=Latest)
    # The Reports page's headline of each report, computed off the request's path and kept
    # a few minutes (`web.headlines`).
    headlines: Headlines = field(default_factory=Headlines)
    # What each ended experiment's comparison found, kept a few minutes for the list of
    # experiments (`web.verdicts`).
    verdicts: Verdicts = field(default_factory=Verdicts)
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
        self.closed = True
        self.findings.close()  # an evaluation under way reads a store about to be closed
        self.headlines.close()  # and so may the reports' headlines
        if self.drift_reader is not None:  # and the drift reader, the day it is reading
            self.drift_reader.join(5.0)
        with self._pool:
            opened, self._opened, self._idle = self._opened, [], []
        for store in opened:
            store.close()
        self.store.close()

    def opens(self, path: str) -> bool:
        """Whether whoever asks may open `path` (for the links a page draws)."""
        role = auth.required_role(self.pages, path)
        return role is None or may(role)

    def render(
        self, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> HTMLResponse:
        page = self.env.get_template(name).render(**context)
        return HTMLResponse(page, status_code=status, headers=headers)

    def error(self, message: str, status: int = 400) -> HTMLResponse:
        return self.render("error.html", status, message=message)


def web_of(request: Request) -> Web:
    """The `Web` of the app a request reached (`create_app` keeps it in the app's state)."""
    return cast(Web, request.app.state.web)
