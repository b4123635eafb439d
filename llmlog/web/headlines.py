"""The reports' headlines (`llmlog.analysis.headlines`) as the Reports page shows them: computed
off the request's path, one report after another on one reader, and kept a few minutes.

A report can take seconds on a big store (drift reads five weeks of kept calls), so a page
never runs them itself: it starts a refresh when what is kept has grown old, waits for it a
moment at most (`wait_s` from the refresh's start), and shows what is known by then. A
report that failed, or is not done yet, shows its name only; what a refresh finds after the
page has gone is kept for the next. One refresh runs at a time, whoever asks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from llmlog.analysis.headlines import HEADLINES
from llmlog.store import Store

log = logging.getLogger(__name__)

Reading = Callable[[], AbstractContextManager[Store]]
Source = Callable[[Store, datetime], str]


class Headlines:
    """Each report's headline, as last computed. `fresh_s`: how old one may grow before a page
    asks for it again; `keep_s`: how old one may be and still be shown meanwhile; `wait_s`:
    how long a page waits for those it has none of."""

    def __init__(
        self,
        sources: dict[str, Source] | None = None,
        fresh_s: float = 180.0,
        keep_s: float = 900.0,
        wait_s: float = 0.5,
    ) -> None:
        self.sources = dict(HEADLINES if sources is None else sources)
        self.fresh_s, self.keep_s, self.wait_s = fresh_s, keep_s, wait_s
        self._known: dict[str, tuple[float, str | None]] = {}  # name → (when, sentence or None: failed)
        self._refreshing: threading.Thread | None = None
        self._started = 0.0  # when the refresh under way began (monotonic)
        self._changed = threading.Condition()

    def current(self, reading: Reading) -> dict[str, str | None]:
        """Each report's headline, None where there is none to show (it failed, or is not
        computed yet): a refresh started if any has grown old, and one that is missing
        waited for until `wait_s` after that refresh began."""
        with self._changed:
            now = time.monotonic()
            if self._refreshing is None and any(self._age(n, now) > self.fresh_s for n in self.sources):
                self._started = now
                self._refreshing = threading.Thread(
                    target=self._refresh, args=(reading,), name="llmlog-headlines", daemon=True
                )
                self._refreshing.start()
            # From the refresh's start: the pages asking while a slow report runs on wait
            # once between them, not each in turn.
            deadline = self._started + self.wait_s
            while self._refreshing is not None and any(self._age(n, now) > self.keep_s for n in self.sources):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
                now = time.monotonic()
            return {
                name: self._known[name][1] if self._age(name, now) <= self.keep_s else None
                for name in self.sources
            }

    def _age(self, name: str, now: float) -> float:
        known = self._known.get(name)
        return now - known[0] if known else float("inf")

    def _refresh(self, reading: Reading) -> None:
        """Every headline, in turn, each kept as soon as it is known. A reader is borrowed
        for each: where pages share the collector's store (`Web.reading`), its writes wait
        for one report at a time, not for all of them. Never raises: this runs on a thread
        of its own, and a report that fails (its time limit, the store closing) is a
        headline not shown, until the next refresh."""
        try:
            for name, source in self.sources.items():
                sentence: str | None = None
                try:
                    with reading() as store:
                        sentence = source(store, datetime.now(UTC))
                except Exception as exc:
                    log.warning("llmlog: the %s report's headline: %s", name, exc)
                self._keep(name, sentence)
        finally:
            with self._changed:
                self._refreshing = None
                self._changed.notify_all()

    def _keep(self, name: str, sentence: str | None) -> None:
        with self._changed:
            self._known[name] = (time.monotonic(), sentence)
            self._changed.notify_all()

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait a little for a refresh under way, so that it is not left reading a store
        that is being closed (a report it cannot finish is a headline not shown)."""
        with self._changed:
            running = self._refreshing
        if running is not None:
            running.join(timeout_s)
