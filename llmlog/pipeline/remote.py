"""Remote mode: the writer ships calls to a collector (`llmlog serve`) instead of a database.

With `LLMLOG_URL` set, each batch the writer builds goes first to an on-disk spool — a
directory of segment files, one NDJSON batch each, named so that they sort in the order they
were written — and a shipper thread sends the segments to the collector's `POST /v1/calls`,
oldest first, one at a time, deleting each only once the collector has answered that it is
stored. So:

- the app never waits on the network: the writer's only work is a local file write;
- while the collector is down or slow, batches wait in the spool (bounded by bytes) and go
  out in order once it is back, across restarts of the app as of the collector: a new
  process with the same spool ships what an earlier one left;
- a segment whose answer was lost is sent again, and the collector stores each id once, so
  every call is stored exactly once;
- what cannot be kept (the spool is full) is counted as dropped and logged, never silent.

Several processes may share one spool directory: each writes its own segments, and whichever
holds the directory's lock ships them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import itertools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx

from llmlog.core.logs import recording_log
from llmlog.core.record import Call, Span
from llmlog.pipeline.intake import record_line
from llmlog.store.regulated import Refused

log = recording_log()  # never raises: a handler of the app's cannot stop recording

SEGMENT_MAX_BYTES = 8 * 2**20  # a batch is split into segments of at most this much JSON
SUFFIX = ".ndjson"
# Spans' segments end so too (their names sort among the calls'), and are sent elsewhere.
SPANS_SUFFIX = ".spans.ndjson"


class SpoolFull(Exception):
    """The spool holds its limit; the batch offered was not kept."""


class Spool:
    """A bounded directory of segments, each one batch of records as NDJSON."""

    def __init__(self, path: str | Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._sweep()
        self._bytes = self._measure()

    def _sweep(self, age_s: float = 600.0) -> None:
        """Remove half-written segments a crashed process left (a live writer renames its
        own within milliseconds). Their calls were never counted as kept."""
        cutoff = time.time() - age_s
        for tmp in self.path.glob("*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()

    def _measure(self) -> int:
        total = 0
        for seg in self.path.glob("*" + SUFFIX):
            with contextlib.suppress(FileNotFoundError):  # shipped meanwhile by another process
                total += seg.stat().st_size
        return total

    def segments(self) -> list[Path]:
        """The waiting segments, oldest first."""
        return sorted(self.path.glob("*" + SUFFIX))

    def waiting(self) -> int:
        """How many records wait to be shipped."""
        records = 0
        for seg in self.segments():
            with contextlib.suppress(FileNotFoundError):
                records += seg.read_bytes().count(b"\n")
        return records

    def append(self, calls: Sequence[Call]) -> None:
        """Keep a batch, as one segment or more; SpoolFull when it does not fit (then none of
        it is kept)."""
        self._append([record_line(c.to_dict()) for c in calls], SUFFIX)

    def append_spans(self, spans: Sequence[Span]) -> None:
        """Keep a batch of the app's spans, in segments of their own (`POST /v1/spans`),
        in the order written among the calls' ones."""
        self._append([record_line(s.to_dict()) for s in spans], SPANS_SUFFIX)

    def _append(self, lines: list[bytes], suffix: str) -> None:
        size = sum(len(line) for line in lines)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                self._bytes = self._measure()  # segments shipped since, here or elsewhere
                if self._bytes + size > self.max_bytes:
                    raise SpoolFull(f"spool {self.path} holds {self._bytes:,} of {self.max_bytes:,} bytes")
            segment: list[bytes] = []
            written = 0
            for line in lines:
                if segment and written + len(line) > SEGMENT_MAX_BYTES:
                    self._write(segment, suffix)
                    segment, written = [], 0
                segment.append(line)
                written += len(line)
            if segment:
                self._write(segment, suffix)
            self._bytes += size

    def _write(self, lines: list[bytes], suffix: str) -> None:
        # Named by time, then process and sequence: sorting the names is the order written.
        # Written aside and renamed, so a shipper never reads half a segment.
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):08d}"
        tmp = self.path / (name + ".tmp")
        tmp.write_bytes(b"".join(lines))
        tmp.rename(self.path / (name + suffix))

    def remove(self, segment: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            size = segment.stat().st_size
            segment.unlink()
            with self._lock:
                self._bytes = max(0, self._bytes - size)


class Shipper:
    """Sends the spool's segments to the collector, oldest first, on a thread of its own."""

    def __init__(self, spool: Spool, url: str, token: str | None, timeout_s: float = 10.0) -> None:
        self.spool = spool
        self.url = url
        self.endpoint = url.rstrip("/") + "/v1/calls"
        self.spans_endpoint = url.rstrip("/") + "/v1/spans"
        headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock_file: int | None = None
        self.shipped = 0  # records the collector took (stored, or already stored)
        self.rejected = 0  # records the collector refused as bad: they never will be stored
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="llmlog-shipper", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning(message)

    def _hold_lock(self) -> bool:
        """Whether this process ships the directory (one process at a time does)."""
        if self._lock_file is not None:
            return True
        fd = os.open(self.spool.path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_file = fd
        return True

    def ship_one(self) -> bool | None:
        """Send the oldest segment. True: it left the spool; False: it could not be
        delivered now (try later); None: nothing to send."""
        segments = self.spool.segments()
        if not segments:
            return None
        segment = segments[0]
        try:
            body = segment.read_bytes()
        except FileNotFoundError:
            return True  # shipped by a process that held the lock before us
        endpoint = self.spans_endpoint if segment.name.endswith(SPANS_SUFFIX) else self.endpoint
        try:
            r = self._client.post(endpoint, content=gzip.compress(body, compresslevel=1))
        except httpx.HTTPError as exc:
            self._warn(f"llmlog: collector {endpoint} unreachable ({exc!r}); calls wait in the spool")
            return False
        if r.status_code == 404 and endpoint == self.spans_endpoint:
            # A collector older than spans: it never will take them, and the calls behind
            # must not wait on them.
            records = body.count(b"\n")
            log.error(
                "llmlog: the collector %s takes no spans (upgrade it): %d span(s) lost", self.url, records
            )
            self.rejected += records
            self.spool.remove(segment)
            return True
        if r.status_code in (200, 400, 413):
            # Taken; or refused as data, which sending it again cannot change.
            records = body.count(b"\n")
            answer = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            reasons = [bad.get("reason") for bad in answer.get("rejected") or []]
            refused = len(reasons) if r.status_code == 200 else records
            for reason in reasons[:5]:
                log.error("llmlog: the collector refused a call: %s", reason)
            self.rejected += refused
            self.shipped += records - refused
            self.spool.remove(segment)
            return True
        self._warn(f"llmlog: collector {endpoint} answered {r.status_code}; calls wait in the spool")
        return False

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            if not self._hold_lock():
                self._stop.wait(1.0)
                continue
            try:
                done = self.ship_one()
            except Exception:
                log.exception("llmlog: shipping to the collector failed")
                done = False
            if done is True:
                delay = 0.1
                continue
            if done is None:  # nothing waits: sleep until a batch comes (or look again soon)
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            # Backing off, but not far: a connection refused costs little, and a collector
            # that is back should get its calls within a couple of seconds.
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)

    def drain(self, timeout: float) -> bool:
        """Wait until the spool is empty; False when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        while self.spool.segments():
            if time.monotonic() > deadline:
                return False
            self.wake()
            time.sleep(0.05)
        return True

    def close(self, timeout: float) -> None:
        """Ship what waits for up to `timeout` s, then stop (a second more at most for a
        send under way): what is left waits in the spool for the next process."""
        deadline = time.monotonic() + timeout
        self.drain(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(max(deadline - time.monotonic(), 1.0))
        self._client.close()
        if self._lock_file is not None:
            os.close(self._lock_file)  # releases the lock for the next process
            self._lock_file = None


class RemoteSink:
    """What the writer stores into in remote mode: `insert` keeps a batch in the spool."""

    # What a call that cannot be written as JSON raises (the writer's `Intake` refuses those
    # before they reach a batch; this is the backstop): that call is refused, the others kept.
    # A disk that is full or gone (OSError) is the spool being unavailable: retried.
    data_errors: tuple[type[BaseException], ...] = (ValueError, TypeError, RecursionError)

    def __init__(
        self, url: str, token: str | None, spool_dir: str, spool_max_bytes: int, close_timeout_s: float
    ) -> None:
        self.url = url
        self.spool = Spool(spool_dir, spool_max_bytes)
        self.shipper = Shipper(self.spool, url, token)
        self.close_timeout_s = close_timeout_s

    def insert(self, calls: Sequence[Call]) -> int:
        self.spool.append(calls)
        self.shipper.wake()
        return len(calls)

    def insert_spans(self, spans: Sequence[Span]) -> list[Refused]:
        self.spool.append_spans(spans)
        self.shipper.wake()
        return []

    def close(self, timeout: float | None = None) -> None:
        """Ship what waits for up to `timeout` s (the exit timeout by default)."""
        self.shipper.close(self.close_timeout_s if timeout is None else timeout)
        records = self.spool.waiting()
        if records:
            log.warning(
                "llmlog: %d call(s) wait in the spool %s for the collector %s; they are sent when"
                " llmlog next runs with this spool",
                records,
                self.spool.path,
                self.url,
            )
