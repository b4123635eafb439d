"""`llmlog serve --workers N`: N processes on one listening socket, each the whole app (the
UI, the collector, the OTLP receiver, the provider proxy) over the same store.

The parent binds the socket and listens on it before saying where it is, runs what must
happen once (the daily retention, the fake provider), and leaves the workers to uvicorn's
own supervisor (`uvicorn.supervisors.Multiprocess`): a worker that dies is replaced, and a
SIGTERM or Ctrl-C to the parent stops each worker as one server stops (the requests under
way answered, the proxy's writer flushed) before the parent ends. Workers are spawned, not
forked: each builds the app by calling `app` below, from what the parent decided (`Served`),
handed down in the environment (LLMLOG_SERVE_WORKER): never on a command line, which any
user of the machine can read.

What each worker holds for itself, and why that stays right with N of them:
- its store connections (the collector's, the proxy writer's, and up to `READERS` readers
  lent to pages, two connections each on PostgreSQL): N times as many in all, which a
  PostgreSQL server's max_connections must allow;
- the proxy's writer: each worker's flushes when the worker stops;
- the sign-in throttle: each process counts its own, with 1/N of each budget (`SignIns`);
- what is cached from the store: read again within seconds (accounts, roles, whether ingest
  tokens are needed) or checked against it before use (the dashboard's days, content ids):
  the same answers in every process, each warming its own (the dashboard's up to N times
  the memory);
- the collector's sweep of the log events that waited too long for their span: once a
  minute per process, each deleting the same rows;
- the garbage collector's settings (`whole_process_gc`), set in each.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from llmlog.capture.proxy import Upstreams
from llmlog.core.config import Settings
from llmlog.operations.replay import Providers
from llmlog.pipeline.processes import whole_process_gc
from llmlog.store import Store, open_store, redact_url
from llmlog.web import guard
from llmlog.web.app import create_app

ENV = "LLMLOG_SERVE_WORKER"
APP = f"{__name__}:app"  # what uvicorn imports in each worker
log = logging.getLogger("llmlog")


@dataclass(frozen=True)
class Served:
    """What `llmlog serve` decided, from which each process builds the same app."""

    db: str
    reader_db: str | None = None
    token: str | None = None
    ingest_token: str | None = None
    allowed_hosts: tuple[str, ...] = guard.LOOPBACK_NAMES
    # The fake provider the parent runs (--fake-provider): its URL, then the base URLs the
    # Anthropic and OpenAI SDKs take.
    fake: tuple[str, str, str] | None = None
    processes: int = 1
    parent: int = 0  # the process supervising the workers: they stop when it is gone

    def app(self, store: Store) -> Starlette:
        providers: Providers | None = None
        upstreams: Upstreams | None = None
        if self.fake is not None:
            url, anthropic, openai = self.fake
            providers = Providers.fake(anthropic, openai)
            upstreams = Upstreams(anthropic=url, openai=url)
        return create_app(
            lambda: store,
            token=self.token,
            providers=providers,
            ingest_token=self.ingest_token,
            upstreams=upstreams,
            allowed_hosts=self.allowed_hosts,
            processes=self.processes,
        )

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def loads(cls, text: str) -> Served:
        given: dict[str, Any] = json.loads(text)
        given["allowed_hosts"] = tuple(given["allowed_hosts"])
        if given.get("fake") is not None:
            given["fake"] = tuple(given["fake"])
        return cls(**given)


def app() -> Starlette:
    """The app of one worker (the factory uvicorn calls in each): the store opened as the
    parent opened it, with the keys and settings of the same environment."""
    served = Served.loads(os.environ[ENV])
    try:
        settings = Settings(db=served.db, reader_db=served.reader_db)
        store = open_store(settings.db, settings.reader_db)
    except Exception as exc:  # the parent opened it a moment ago: a server gone down, say
        # One line, and the exit code that tells the supervisor not to start it again.
        log.error("llmlog serve: a worker cannot open the store %s: %s", redact_url(served.db), exc)
        sys.exit(STARTUP_FAILURE)
    store.keyring = settings.keyring
    store.reader = f"{getpass.getuser()} (llmlog serve)"
    built = served.app(store)
    _stop_with(served.parent)
    whole_process_gc()
    return built


def _stop_with(parent: int) -> None:
    """Stop this worker as SIGTERM does (its calls flushed) once `parent` is gone: killed
    outright, it cannot stop its workers, which would hold the port and the store forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="llmlog-parent-watch", daemon=True).start()


class Supervisor(Multiprocess):
    """uvicorn's supervisor with the number of workers fixed at what the sign-in budgets were
    shared out among (SIGTTIN and SIGTTOU would add or remove one)."""

    def handle_ttin(self) -> None:
        log.warning("llmlog serve: the number of workers is fixed (--workers); SIGTTIN ignored")

    def handle_ttou(self) -> None:
        log.warning("llmlog serve: the number of workers is fixed (--workers); SIGTTOU ignored")

    def failed(self) -> bool:
        """Whether a worker could not start (the supervisor then stopped them all)."""
        return any(p.exitcode == STARTUP_FAILURE for p in self.processes)
