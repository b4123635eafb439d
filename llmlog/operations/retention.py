"""Two tiers: every column of every call for a window of days (hot), and after that only the
`daily` and `people_daily` rollups (cold), which the database keeps up to date as calls
arrive, so nothing needs computing when a day goes cold: its calls, the content only they
used and their spans are deleted, and the space goes back to the file system.

Log events received over OTLP wait in the store for the span whose content they carry;
once it has come and is a call, they are in the call and deleted. Those still waiting after
`events_minutes` (an hour unless set: a span is exported within seconds of its events) are
deleted by every run, and by the collector as it receives (`retention_policy.expire_events`), for their
span is not coming or is not a model call.

The window is the store's own setting (`llmlog retention set`), so every process using the
store applies the same; a feature can have a shorter (or longer) window of its own. A run
deletes one UTC day at a time, each in its own transaction, oldest first: interrupted, it
has lost nothing and the next run carries on from where it stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from llmlog.core.logs import recording_log
from llmlog.store import Store
from llmlog.store.retention_policy import Policy, expire_events, policy

log = recording_log(__name__)  # never raises: a handler of the app's cannot stop it


@dataclass
class Day:
    """One UTC day's calls to delete: of these features (None: calls without one)."""

    day: date
    features: list[str | None]
    calls: int


def plan(store: Store, p: Policy, today: date) -> list[Day]:
    """The days (oldest first) holding calls older than their feature's window."""
    latest = max([p.cutoff(None, today), *(p.cutoff(f, today) for f in p.features)])
    days: dict[date, Day] = {}
    for day, feature, calls in store.old_calls(latest):
        if day < p.cutoff(feature, today):
            d = days.setdefault(day, Day(day, [], 0))
            d.features.append(feature)
            d.calls += calls
    return sorted(days.values(), key=lambda d: d.day)


@dataclass
class Report:
    days: list[Day]
    dry_run: bool
    calls: int = 0
    spans: int = 0  # spans and span events
    events: int = 0  # log events that waited for their span past `events_minutes`
    contents: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def run(
    store: Store,
    p: Policy | None = None,
    *,
    today: date | None = None,
    dry_run: bool = False,
    on_day: Callable[[Day], None] | None = None,
) -> Report:
    """Delete what has gone past its window: each day's calls in a transaction of its own,
    then the spans older than the store's window, then the content no call uses any more;
    then give the space back. Running it again deletes nothing more."""
    p = p or policy(store)
    today = today or datetime.now(UTC).date()
    report = Report(plan(store, p, today), dry_run, bytes_before=store.size_bytes())
    if dry_run:
        report.calls = sum(d.calls for d in report.days)
        report.bytes_after = report.bytes_before
        return report
    for day in report.days:
        gone = store.purge(day.day, day.features)
        report.calls += gone.calls
        report.spans += gone.spans
        if on_day is not None:
            on_day(day)
    cutoff = p.cutoff(None, today)
    report.spans += store.purge_traces(datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC))
    report.events = expire_events(store, p)
    # Always, not only when this run deleted calls: a run stopped before here left content
    # that no call uses, and the next run finds no calls to delete.
    report.contents = store.collect_content()
    if report.calls or report.spans or report.contents or report.events:
        store.reclaim()
    report.bytes_after = store.size_bytes()
    log.info("retention: %d calls of %d days deleted", report.calls, len(report.days))
    return report


class Daily:
    """Runs retention in a thread of its own, on a store of its own: `first_s` after start,
    then every `every_s`. A failed run is logged and tried again at the next time."""

    def __init__(
        self, open_store: Callable[[], Store], every_s: float = 86_400.0, first_s: float = 60.0
    ) -> None:
        self._open, self.every_s, self.first_s = open_store, every_s, first_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llmlog-retention", daemon=True)
        self.runs: list[Report] = []

    def start(self) -> Daily:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        wait = self.first_s
        while not self._stop.wait(wait):
            wait = self.every_s
            try:
                store = self._open()
                try:
                    self.runs.append(run(store))
                finally:
                    store.close()
            except Exception:
                log.exception("retention run failed; trying again in %g s", self.every_s)
