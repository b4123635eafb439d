"""How fast, and how many at once, passwords are tried on `POST /login`.

Each password check is an scrypt hash (32 MiB, tens of ms: `llmlog.operations.accounts`), which is what
makes a stolen hash slow to crack, and what makes sign-ins a way to exhaust the server: 60
wrong ones at once once took it to 1.5 GB. So:
- per account, and per client address, at most `limit` sign-ins in `window_s` are tried
  (each counts as it starts, so a burst cannot all slip in before the first fails; a right
  password gives its turn back); past that, 429 with Retry-After, before any hashing;
- at most `hashing` checks run at once (one per core); a sign-in waits up to `wait_s` for its
  turn, with at most `queue` waiting, else 503 with Retry-After: memory stays bounded.

Counted in this process only (a restart forgets); a client is its address as the server sees
it (behind a reverse proxy on the same machine, uvicorn takes it from X-Forwarded-For). With
`llmlog serve --workers N`, each of the N processes counts its own and takes a share of each
budget (`processes`): 1/N of the sign-ins and of the hashing turns, so that the server as a
whole allows no more than one process did. The price: tries that all land on one process
are refused after its share (the kernel spreads connections over the processes, unevenly);
and past `limit` processes each still allows one. A
lock-out of one account by someone hammering it lasts `window_s` at most, and is the price of
not letting anyone try its password faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

MAX_KEYS = 10_000  # accounts and clients remembered at once: memory stays bounded


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Busy(Exception):
    """Too many sign-ins being checked: try again shortly."""


class SignIns:
    def __init__(
        self,
        limit: int = 10,
        window_s: float = 300.0,
        hashing: int | None = None,
        wait_s: float = 5.0,
        queue: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        processes: int = 1,
    ) -> None:
        # Each of `processes` serving at once counts alone: each takes its share of a budget,
        # so the server's total stays what one process allowed (see the module's doc).
        self.limit = max(1, limit // processes)
        self.window_s, self.wait_s = window_s, wait_s
        self.hashing = max(1, (hashing or cores()) // processes)
        self.queue = queue if queue is not None else 4 * self.hashing
        self.clock = clock
        self._tried: dict[tuple[str, str], deque[float]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0

    def _keys(self, account: str, client: str) -> list[tuple[str, str]]:
        return [("account", account[:200]), ("client", client)]

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._tried.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def start(self, account: str, client: str) -> float | None:
        """Count a sign-in as started; or, when the account or the client has had its `limit`
        in the window, the seconds until it may try again (and nothing is counted)."""
        now = self.clock()
        keys = self._keys(account, client)
        waits = [
            times[0] + self.window_s - now
            for times in (self._recent(k, now) for k in keys)
            if len(times) >= self.limit
        ]
        if waits:
            return max(1.0, math.ceil(max(waits)))
        self._forget_old(now)
        for key in keys:
            self._tried.setdefault(key, deque()).append(now)
        return None

    def give_back(self, account: str, client: str) -> None:
        """The sign-in succeeded, or was never checked: its turn does not count."""
        for key in self._keys(account, client):
            times = self._tried.get(key)
            if times:
                times.pop()

    def _forget_old(self, now: float) -> None:
        if len(self._tried) < MAX_KEYS:
            return
        for key in list(self._tried):
            if not self._recent(key, now):
                del self._tried[key]
        while len(self._tried) >= MAX_KEYS:  # all recent: the oldest-seen go first
            del self._tried[next(iter(self._tried))]

    @contextlib.asynccontextmanager
    async def hashing_turn(self) -> AsyncIterator[None]:
        """One of the `hashing` turns to check a password; Busy when none comes in time."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.hashing)
        if self._waiting >= self.queue and self._slots.locked():
            raise Busy
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError:
            raise Busy from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
