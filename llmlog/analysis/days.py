"""Figures of whole UTC days read from the calls once and kept (`DayCache`) while the day's
`daily` sums stay the same, so that a view of a month reads again only the days that changed
(usually today): the dashboard's (`llmlog.analysis.dashboard`) and drift per day's
(`llmlog.analysis.drift`). The days missing are read newest first within a time limit
(`cached_days`)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date
from typing import Any, Generic, Protocol, TypeVar

from llmlog.store import ReadOnlyError, Store


class Sized(Protocol):
    @property
    def size(self) -> int: ...


P = TypeVar("P", bound=Sized)


class DayCache(Generic[P]):
    """Day parts kept while the day's `daily` figures stay the same (newly stored calls and
    repricing change them; calls deleted by hand do not, as they do not change `daily`).
    Least recently used days go first beyond `max_size` numbers (8 bytes each and up)."""

    def __init__(self, max_size: int = 8_000_000) -> None:
        self.max_size = max_size
        self.size = 0
        self._days: OrderedDict[str, tuple[tuple[Any, ...], P]] = OrderedDict()
        # Each get and put is whole, whatever threads share the cache (a view and what reads
        # on after it); who reads which day is the caller's to order.
        self._lock = threading.Lock()

    def get(self, day: str, fingerprint: tuple[Any, ...]) -> P | None:
        with self._lock:
            entry = self._days.get(day)
            if entry is None or entry[0] != fingerprint:
                return None
            self._days.move_to_end(day)
            return entry[1]

    def put(self, day: str, fingerprint: tuple[Any, ...], part: P) -> None:
        with self._lock:
            old = self._days.pop(day, None)
            if old is not None:
                self.size -= old[1].size
            self._days[day] = (fingerprint, part)
            self.size += part.size
            while self.size > self.max_size and len(self._days) > 1:
                _, (_, evicted) = self._days.popitem(last=False)
                self.size -= evicted.size


def cached_days(
    reading: Callable[[], AbstractContextManager[Store]],
    fingerprints: dict[str, tuple[Any, ...]],
    cache: DayCache[P],
    budget_s: float,
    read: Callable[[Store, date, float], P],
    raise_first: bool = True,
) -> tuple[list[tuple[str, P]], list[str]]:
    """The parts of the days in `fingerprints` (a day's `daily` figures, see
    `day_fingerprints`), from the cache where it still holds; the others are read by
    `read(store, day, time left)`, newest first, within `budget_s` in all. What is read is
    kept even when the budget runs out, so the next view carries on from there; a day whose
    read the budget stops is left unread too, but for the first one read, which raises
    (not one day fits) when `raise_first`. Returns the parts found, the cached ones first,
    and the days left unread."""
    deadline = time.monotonic() + budget_s
    parts: list[tuple[str, P]] = []
    missing: list[str] = []
    for day in sorted(fingerprints, reverse=True):
        part = cache.get(day, fingerprints[day])
        if part is None:
            missing.append(day)
        else:
            parts.append((day, part))
    for i, day in enumerate(missing):
        left = deadline - time.monotonic()
        if left <= 0.05:
            return parts, missing[i:]
        try:
            with reading() as store:
                part = read(store, date.fromisoformat(day), left)
        except ReadOnlyError:
            if i == 0 and raise_first:
                raise
            return parts, missing[i:]
        cache.put(day, fingerprints[day], part)
        parts.append((day, part))
    return parts, []
