"""The latest evaluation of the findings (`llmlog.analysis.findings`), kept for the pages that
show it: `/findings` and the line the calls list gives them.

An evaluation reads weeks of calls (seconds on a store of a million), so no page runs one:
pages take the latest, and a stale one (older than `every_s`) is evaluated again in a thread
of its own, one at a time, while pages go on showing the one before. Only the first page
asked, with none at all yet, waits for it, and only a little (`wait_s`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from llmlog.analysis.findings import Evaluation, evaluation
from llmlog.store import Store

log = logging.getLogger(__name__)

# "At most every few minutes": how old the latest may be before the next is started.
EVERY_S = 300.0


class Latest:
    def __init__(self, every_s: float = EVERY_S) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._latest: Evaluation | None = None
        self._tried = -float("inf")  # when the last evaluation ended (monotonic), or failed
        self._put = -float("inf")  # when one made elsewhere was put
        self._running: threading.Thread | None = None
        self.failed: str | None = None  # why the last evaluation failed, when it did

    def peek(self) -> Evaluation | None:
        """The latest, whatever its age; starts nothing (the calls list's line)."""
        with self._lock:
            return self._latest

    @property
    def running(self) -> bool:
        with self._lock:
            return self._running is not None

    def get(
        self, reading: Callable[[], AbstractContextManager[Store]], wait_s: float = 0.0
    ) -> Evaluation | None:
        """The latest; when it is stale (or there is none) and none is running, one is
        started on a store from `reading`. With none at all yet, waits up to `wait_s` for
        it. A failed evaluation is tried again only once `every_s` has passed."""
        with self._lock:
            if self._running is None and time.monotonic() - self._tried > self.every_s:
                self._running = threading.Thread(
                    target=self._run, args=(reading,), name="llmlog-findings", daemon=True
                )
                self._running.start()
            if self._latest is None and wait_s > 0:
                self._changed.wait_for(lambda: self._running is None, timeout=wait_s)
            return self._latest

    def put(self, found: Evaluation) -> None:
        """An evaluation made elsewhere (a scheduled one), as the latest."""
        with self._lock:
            self._latest, self._tried, self.failed = found, time.monotonic(), None
            self._put = self._tried

    def _run(self, reading: Callable[[], AbstractContextManager[Store]]) -> None:
        started = time.monotonic()
        found: Evaluation | None = None
        failure: str | None = None
        try:
            with reading() as store:
                found = evaluation(store)
        except Exception as exc:  # the store gone, say: said on the page, tried again later
            log.warning("llmlog: the findings could not be evaluated", exc_info=True)
            failure = str(exc) or type(exc).__name__
        with self._lock:
            if found is not None and self._put < started:  # one put since is newer: it stays
                self._latest = found
            self.failed, self._tried, self._running = failure, time.monotonic(), None
            self._changed.notify_all()

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait a little for an evaluation under way, so that it is not left reading a store
        that is being closed."""
        with self._lock:
            running = self._running
        if running is not None:
            running.join(timeout_s)
