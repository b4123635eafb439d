"""The background writer: the only thing between a finished call and the store.

The caller's thread does `submit()` — a non-blocking put on a bounded queue — and returns.
The queue is bounded twice: by records (`queue_size`) and by their bytes (`queue_max_bytes`),
since one 80-turn conversation can weigh as much as a thousand short calls.
A daemon thread drains the queue in batches, turns exchanges into priced records and
inserts each batch in one transaction. When the store fails, the batch is retried with
backoff while new records wait in the queue; when the queue is full, records are dropped
and counted (or the caller blocks, if configured). Nothing is lost silently: every drop is
counted in `stats()` and reported through `logging`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from llmlog.capture.exchange import Exchange
from llmlog.capture.parse import Decoder
from llmlog.capture.spans import ActiveSpan
from llmlog.core.config import Settings
from llmlog.core.logs import recording_log
from llmlog.core.prompts import REGISTRY
from llmlog.core.record import Call, Span
from llmlog.pipeline.intake import Intake, Item, Unfit, printable
from llmlog.pipeline.pricing import Pricer
from llmlog.pipeline.processes import Processes, Sent, route, unshared
from llmlog.pipeline.remote import RemoteSink, SpoolFull
from llmlog.store import Store, engine_of, open_store, redact_url, sqlite_path
from llmlog.store.regulated import Refused
from llmlog.store.traces import apart

log = recording_log()  # never raises: a handler of the app's cannot stop recording

# What `_until_stored` answers when the sink refuses records as data.
_DATA = object()

# What callers queue: a model call (as the SDK saw it, or built), or a span of the app's
# (as the app made it; recorded, from a writer process's parent).
Queued = Item | ActiveSpan | Span


def _sendable(items: list[Queued]) -> list[Sent]:
    """Items as a writer process takes them: a span of the app's recorded (here, on the
    writer's thread, off the app's path)."""
    return [item.record() if isinstance(item, ActiveSpan) else item for item in items]


def _size(item: Queued) -> int:
    if isinstance(item, Exchange):
        return len(item.request_body) + sum(len(chunk) for _, chunk in item.chunks)
    return 0  # a Call built by hand: small, and counted by the record bound


@dataclass
class Stats:
    recorded: int = 0  # calls stored (remote mode: kept in the spool, on their way)
    dropped: int = 0  # calls lost: queue or spool full, or the store stayed down past the exit deadline
    failed: int = 0  # calls that could not be turned into a row (each logged once with the reason)
    reasons: dict[str, int] = field(default_factory=dict)  # `failed` by kind of reason
    store_errors: int = 0  # failed insert attempts (each retried)
    queued: int = 0
    shipped: int = 0  # remote mode: calls the collector has taken
    refused: int = 0  # remote mode: calls the collector refused as bad (logged with the reason)
    spans: int = 0  # spans the app made (`llmlog.span`, `llmlog.trace`) stored

    def add(self, other: dict[str, Any]) -> None:
        """A writer process's counts (its `Stats` as a dict) added to these."""
        for name in ("recorded", "dropped", "failed", "store_errors", "spans"):
            setattr(self, name, getattr(self, name) + other.get(name, 0))
        for reason, n in other.get("reasons", {}).items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n


class Sink(Protocol):
    """Where the writer puts batches: a store, or in remote mode the spool (`RemoteSink`)."""

    data_errors: tuple[type[BaseException], ...]

    def insert(self, calls: Sequence[Call]) -> int: ...

    def insert_spans(self, spans: Sequence[Span]) -> list[Refused]: ...

    def close(self) -> None: ...


def keep_spans(sink: Sink, intake: Intake, spans: Sequence[Span]) -> list[Refused]:
    """Spans from outside the app's process into `sink` as its writer keeps the app's own:
    redacted and sealed (`Intake.span`), and kept as spans, never read as model calls (those
    come as calls); the spans refused, by position. For the collector's `POST /v1/spans` and
    `llmlog copy`. One the store cannot write (NUL in a name on PostgreSQL, say) does not
    stop the rest: on a data error the batch goes again span by span, so that only the bad
    ones are refused (`apart`)."""
    return apart(sink.insert_spans, [intake.span(s) for s in spans], sink.data_errors)


# A built batch for a store thread: its calls, its spans, and how many items of the queue it
# stands for (those that could not be built included, so that they are settled with it).
_Batch = tuple[list[Call], list[Span], int]


# Calls: a smaller batch (fewer than arrive in a flush interval at 500 calls/s) is stored whole
# by the first store thread, so that an app that records less holds one connection, not one
# for each thread; the first stores such a batch in a fraction of the interval.
SHARED_FROM = 100


def _hand_over(
    batches: list[queue.Queue[_Batch | None]], calls: list[Call], spans: list[Span], items: int
) -> None:
    """A built batch to the store threads, one queue each. The calls of a session (else of a
    trace) go to the same thread, in order: a conversation's content is then named by one
    store's cache, which knows it by the identity of the decoder's objects, not hashed again by
    each. The spans, and the items that could not be built, go with the first thread's share."""
    if len(batches) == 1 or len(calls) < SHARED_FROM:
        batches[0].put((calls, spans, items))
        return
    shares: list[list[Call]] = [[] for _ in batches]
    for call in calls:
        shares[_share(call, len(batches))].append(call)
    for at in range(len(batches) - 1, 0, -1):
        if shares[at]:
            batches[at].put((shares[at], [], len(shares[at])))
            items -= len(shares[at])
    if shares[0] or spans or items:  # nothing to wait behind the first thread for
        batches[0].put((shares[0], spans, items))


def anchored(settings: Settings) -> Settings:
    """`settings` with a relative SQLite path made absolute from the working directory now:
    a store opened again later (its connection lost, a writer process started again) is the
    same file, wherever the app has gone since (a daemon's `chdir("/")`). A directory is an
    error here: as a store it would fail every batch, and every call would be lost."""
    path = sqlite_path(settings.db)
    if path is None or path == ":memory:" or path.startswith("file:"):
        return settings
    if os.path.isdir(path):
        raise ValueError(f"db {settings.db!r} is a directory, not a SQLite file")
    if os.path.isabs(path):
        return settings
    return dataclasses.replace(settings, db=os.path.abspath(path))


class _Elsewhere(Exception):
    """Raised on a store thread other than the first whose connection failed: its batch is
    the first's to store."""


def _share(call: Call, n: int) -> int:
    """Which of `n` store threads stores `call`: by its session, else its trace, else itself."""
    try:
        return hash(route(call) or call.id) % n
    except Exception:  # an id of the app's whose str() or hash fails: the first, as a small batch
        return 0


class _Now:
    """Queued by `nudge`: the batch being gathered is built with what is queued before it."""


_NOW = _Now()


class Writer:
    def __init__(
        self, settings: Settings, store_factory: Callable[[str], Store] = open_store, one_thread: bool = False
    ) -> None:
        self.settings = anchored(settings)
        self._one_thread = one_thread  # batches stored on the thread that builds them (`_run`)
        self._store_factory = store_factory
        self._queue: queue.Queue[Queued | _Now | None] = queue.Queue(maxsize=settings.queue_size)
        self._nudged = False  # `_NOW` is in the queue
        self._hurry = False  # the last batch was nudged and full: the next takes what is queued
        self._stats = Stats()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # accepted and not yet stored or given up
        self._queued_bytes = 0  # request and response bytes of what waits in the queue
        self._room = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        # Set while closing: a failing store is no longer retried, and the writer's wait
        # before a retry ends.
        self._give_up = threading.Event()
        self._deadline: float | None = None  # `close`'s: what the writer's last steps may take
        # Where each store thread writes (`_run` makes one a thread), opened on first need.
        self._sinks: list[Sink | None] = [None]
        # Until when batches go whole to the first store thread: a store thread's connection
        # failed (a role's or a server's connection limit refused another; the store down).
        self._one_until = 0.0
        self._decoder = Decoder()  # the writer thread's own: what earlier calls sent is decoded once
        self._intake: Intake | None = None
        self._last_warning: dict[str, float] = {}
        self._processes: Processes | None = None  # `writer_processes`: where the work goes
        self._started = threading.Event()  # the thread is taking calls

    # ------------------------------------------------------------ caller side

    def start(self, timeout: float | None = None) -> bool:
        """Start the writer now, not at the first call, and wait (up to `timeout` s) until
        it can take calls: its processes started, when it has them. False on timeout."""
        with self._lock:
            self._start()
        return self._started.wait(timeout)

    def _start(self) -> None:
        # Called with the lock held.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmlog-writer", daemon=True)
            self._thread.start()

    def submit(self, item: Queued) -> bool:
        """Hand a finished call to the writer. Never raises; returns False if it was dropped."""
        try:
            size = _size(item)
            block = self.settings.on_full == "block"
            with self._lock:
                self._start()
                # An item bigger than the whole budget still goes in alone.
                while self._queued_bytes and self._queued_bytes + size > self.settings.queue_max_bytes:
                    if not block:
                        return self._dropped(f"{self.settings.queue_max_bytes / 2**20:g} MiB")
                    self._room.wait(0.5)
                self._pending += 1
                self._queued_bytes += size
            try:
                if block:
                    self._queue.put(item)
                else:
                    self._queue.put_nowait(item)
            except queue.Full:
                with self._lock:
                    self._pending -= 1
                    self._queued_bytes -= size
                    return self._dropped(f"{self.settings.queue_size} calls")
            return True
        except Exception:  # never let recording break the caller
            log.exception("llmlog: could not queue a call")
            return False

    def _dropped(self, limit: str) -> bool:
        # Called with the lock held.
        self._stats.dropped += 1
        dropped = self._stats.dropped
        self._warn("full", f"llmlog queue full ({limit}): {dropped} call(s) dropped so far")
        return False

    def nudge(self) -> None:
        """Have the batch being gathered built with what is queued now, not once the flush
        interval has passed: someone waits for it (`flush`). Never blocks."""
        with self._lock:
            if self._nudged or self._pending == 0:
                return
            self._nudged = True
        try:
            self._queue.put_nowait(_NOW)
        except queue.Full:  # then batches fill without waiting
            with self._lock:
                self._nudged = False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is stored; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.nudge()
        with self._idle:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Drain (for up to `timeout` s), then stop; whatever is still unstored is counted as dropped."""
        timeout = self.settings.exit_timeout_s if timeout is None else timeout
        self._deadline = deadline = time.monotonic() + timeout
        if not self.flush(timeout):
            self._give_up.set()
        thread = self._thread
        processes = self._processes
        if thread is not None and thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            # With processes, its thread may be waiting on one that does not read (stopped,
            # or still starting): the processes are closed within the deadline, which frees it.
            # Without, a second past the deadline: the thread's own last steps end by it (a
            # store's close, shipping the spool), and may take a moment to be done.
            left = deadline - time.monotonic()
            thread.join(timeout=max(left, 0.0) + 1.0 if processes is None else max(left, 1.0))
        if processes is not None:
            # What they hold unstored past the deadline (a store down) is counted lost.
            processes.close(max(deadline - time.monotonic(), 1.0))
            if thread is not None:
                thread.join(timeout=1.0)
        with self._lock:
            lost = self._pending  # includes what is still queued
            if lost:
                self._stats.dropped += lost
                self._pending = 0
        if lost:
            log.error("llmlog: %d call(s) could not be stored before exit and are lost", lost)

    def outstanding(self) -> int:
        """Calls and spans taken and not yet stored or given up."""
        with self._lock:
            return self._pending

    def progress(self, timeout: float) -> None:
        """Wait until a batch is stored or given up, or for `timeout` s."""
        with self._idle:
            self._idle.wait(timeout)

    def stats(self) -> Stats:
        return self.settled()[1]

    def settled(self) -> tuple[int, Stats]:
        """`outstanding()` and `stats()` read at one moment: a writer process's report of both
        never counts a call recorded that it does not count finished (killed right after, the
        app would count it lost as well)."""
        with self._lock:
            pending = self._pending
            s = Stats(**vars(self._stats))
            s.reasons = dict(s.reasons)
        if self._processes is not None:
            for counts in self._processes.counts():
                s.add(counts)
        s.queued = max(self._queue.qsize() - self._nudged, 0)
        sink = self._sinks[0]
        if isinstance(sink, RemoteSink):
            s.shipped, s.refused = sink.shipper.shipped, sink.shipper.rejected
        return pending, s

    def _open(self) -> Sink:
        s = self.settings
        if s.url:
            return RemoteSink(s.url, s.token, s.spool, s.spool_max_bytes, s.exit_timeout_s)
        store = self._store_factory(s.db)
        store.keyring = s.keyring
        if len(self._sinks) > 1:
            store.share_content_ids(len(self._sinks))
        return store

    # ------------------------------------------------------------ writer thread

    def _warn(self, kind: str, message: str) -> None:
        """Log a warning, at most once per 10 s per kind, so an outage does not flood the log."""
        now = time.monotonic()
        last = self._last_warning.get(kind)
        if last is None or now - last > 10:
            self._last_warning[kind] = now
            log.warning(message)

    def _prepare_span(self, span: ActiveSpan | Span) -> Span:
        """A span of the app's as it may be kept: redacted and sealed as a call's text is."""
        if self._intake is None:
            self._intake = Intake(self.settings, None, self._decoder, repair=True)
        return self._intake.span(span.record() if isinstance(span, ActiveSpan) else span)

    def _prepare(self, item: Item) -> Call:
        if self._intake is None:
            self._intake = Intake(self.settings, None, self._decoder, repair=True)
            # The app's prompts directory: a call whose system prompt is one of its versions
            # is stored with that version, however the text reached the SDK.
            REGISTRY.load(self.settings.prompts)
        # Built on first need: a bad price file only fails calls that need a price.
        if self._intake.pricer is None and (isinstance(item, Exchange) or item.cost_usd is None):
            self._intake.pricer = Pricer(self.settings.prices)
        return self._intake.call(item)

    def _start_processes(self) -> Processes | None:
        """The processes that do the writer's work, if the settings ask for them and can."""
        n, s = self.settings.writer_processes, self.settings
        if not n or self._store_factory is not open_store:
            return None
        why = "calls go to a collector (LLMLOG_URL)" if s.url else unshared(s.db)
        if why:
            log.warning(
                "llmlog: no writer processes (%d asked): %s; calls are written in this process", n, why
            )
            return None
        # Brought up to date here, not by N processes at once. Down for now: each process's
        # writer says so, and retries, when it stores.
        with contextlib.suppress(Exception):
            open_store(s.db).close()
        # Known before they start: `close` stops those still starting.
        self._processes = processes = Processes(s, n, self._finished_elsewhere, self._lost_elsewhere)
        processes.start()
        return processes

    def _finished_elsewhere(self, n: int) -> None:
        with self._idle:
            self._settle(n)

    def _lost_elsewhere(self, n: int) -> None:
        with self._idle:
            self._stats.dropped += n
            self._settle(n)

    def _settle(self, n: int) -> None:
        """`n` calls or spans finished with: stored, refused or dropped, each counted where it
        went. Called with the lock held. Those `close` already counted lost (it gave up
        waiting for them) are taken back out of that count: counted once, as what they were."""
        late = max(n - self._pending, 0)
        self._pending -= n - late
        self._stats.dropped -= late
        self._idle.notify_all()

    def _get(self, timeout: float | None = None) -> Queued | _Now | None:
        item = (
            self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        )
        if item is _NOW:
            with self._lock:
                self._nudged = False
        return item

    def _batch(self) -> tuple[list[Queued], bool, bool]:
        """Block for one item, then take what arrives within the flush interval; after a
        `nudge`, only what is queued already: (the items, whether the writer stops, whether
        it was nudged). What is queued behind the mark is taken too: a flush that came while
        the mark waited (the writer busy) queued none of its own, and waits for it."""
        first = self._get()
        if first is None:
            return [], True, False
        nudged = self._hurry or isinstance(first, _Now)
        items: list[Queued] = [] if isinstance(first, _Now) else [first]
        deadline = time.monotonic() + self.settings.flush_interval_s
        while len(items) < self.settings.batch_size:
            try:
                nxt = self._get(0 if nudged else deadline - time.monotonic())
            except queue.Empty:
                break
            if nxt is None:
                return items, True, False
            if isinstance(nxt, _Now):
                nudged = True
                continue
            items.append(nxt)
        # Full while nudged: what is queued behind is taken so too, in the next batch.
        self._hurry = nudged and len(items) >= self.settings.batch_size
        return items, False, nudged

    def _run(self) -> None:
        """Build records from what the callers queued; hand each batch to the store threads.

        Batches are stored on threads of their own, so that building the next batch
        (Python: parsing, pricing) overlaps storing the previous one (mostly the database's
        own work: SQLite's C code without the GIL, or PostgreSQL's server on another core).
        One batch waits for each at most. PostgreSQL takes two, each with a connection of its
        own and, under load, a share of the batch (`_hand_over`): with one, the server's work
        on a batch and the making of the next batch's rows took turns, and the app's building
        waited on both (the bench's passes: 1,378–1,415 calls/s with one, 1,699–1,841 with
        two, alternating).

        A writer process (`one_thread`) stores on this thread. Its storing is overlapped by
        the other processes' building; a thread of its own would take the interpreter from
        the storing one while it holds SQLite's write lock, which the others wait for (two
        processes: 2,040 → 2,330 calls/s with a store thread each, 2,870 without)."""
        n = 1 if self._one_thread else self._store_threads()
        self._sinks = [None] * n
        batches: list[queue.Queue[_Batch | None]] = [queue.Queue(maxsize=1) for _ in range(n)]
        store_threads = [
            threading.Thread(target=self._store_batches, args=(batches, at), name="llmlog-store", daemon=True)
            for at in range(n)
            if not self._one_thread
        ]
        for thread in store_threads:
            thread.start()
        self._processes = processes = self._start_processes()
        self._started.set()
        stop = False
        while not stop:
            items, stop, nudged = self._batch()
            with self._lock:
                self._queued_bytes -= sum(_size(item) for item in items)
                self._room.notify_all()
            if processes is not None:
                # What they could not be sent is written here.
                items = cast(list[Queued], processes.send(_sendable(items))) if items else []
                if nudged:  # after the items: what a process gathers is built now too
                    processes.nudge()
            if not items:
                continue
            calls: list[Call] = []
            spans: list[Span] = []
            for item in items:
                try:
                    if isinstance(item, ActiveSpan | Span):
                        spans.append(self._prepare_span(item))
                    else:
                        calls.append(self._prepare(item))
                except Unfit as exc:  # refused alone, before it could hold up a batch
                    log.error("llmlog: call %s cannot be stored (%s); it is lost", exc.call_id, exc)
                    self.failed(exc.kind)
                except Exception:
                    log.exception("llmlog: could not build a record from a call; it is lost")
                    self.failed("could not be built")
            if not store_threads:
                self._store_batch(calls, spans, len(items))
            else:
                # Shared once the first has its connection: a store that allows one (a role's
                # connection limit) gives it to the first.
                alone = self._sinks[0] is None or time.monotonic() < self._one_until
                _hand_over(batches[:1] if alone else batches, calls, spans, len(items))
        if not store_threads:
            self._close_store()
            return
        # The last first: what a thread cannot store it hands to the first, which is still taking.
        for q, thread in reversed(list(zip(batches, store_threads, strict=True))):
            q.put(None)
            thread.join()

    def _store_threads(self) -> int:
        """How many threads store the batches: as many as the store's engine writes through at
        once (`WRITERS`); one for a collector (LLMLOG_URL) or a store of the caller's making."""
        s = self.settings
        if s.url or self._store_factory is not open_store:
            return 1
        try:
            return int(engine_of(s.db).WRITERS)
        except Exception:  # no engine: opening the store says why, and is retried
            return 1

    def failed(self, kind: str, n: int = 1) -> None:
        """Count `n` calls that could not be made records, for `kind` of reason."""
        with self._lock:
            self._stats.failed += n
            self._stats.reasons[kind] = self._stats.reasons.get(kind, 0) + n

    def _store_batches(self, batches: list[queue.Queue[_Batch | None]], at: int) -> None:
        while True:
            try:
                batch = batches[at].get(timeout=1.0) if at else batches[at].get()
            except queue.Empty:
                if time.monotonic() < self._one_until and self._sinks[at] is not None:
                    # The first's connection failed: this one may be what it is refused for.
                    self._close_store(at)
                    self._sinks[at] = None
                continue
            if batch is None:
                break
            try:
                self._store_batch(*batch, at=at)
            except _Elsewhere:
                # Stored by the first, whole: a call this thread stored before its connection
                # was lost is stored once (the stores skip an id they hold) and counted there.
                batches[0].put(batch)
        self._close_store(at)

    def _store_batch(self, calls: list[Call], spans: list[Span], items: int, at: int = 0) -> None:
        """Store a batch (`items` taken from the queue, built as `calls` and `spans`) through
        the store thread `at`'s sink."""
        stored, bad = self._write(calls, at)
        kept, refused = self._write_spans(spans, at)
        lost = len(calls) - stored - bad + len(spans) - kept - refused
        if bad:
            self.failed("refused by the store", bad)
        if refused:
            self.failed("span refused by the store", refused)
        with self._idle:
            self._stats.recorded += stored
            self._stats.spans += kept
            if lost:  # the spool was full, or the store stayed down until exit
                self._stats.dropped += lost
                if self._give_up.is_set():
                    log.error("llmlog: store unavailable at exit: %d call(s) lost", lost)
            self._settle(items)

    def _close_store(self, at: int = 0) -> None:
        sink = self._sinks[at]
        if sink is None:
            return
        with contextlib.suppress(Exception):
            if isinstance(sink, RemoteSink) and self._deadline is not None:
                # Shipping the spool gets what is left of `close`'s time, not all of it again.
                sink.close(max(self._deadline - time.monotonic(), 0.0))
            else:
                sink.close()

    def _write_spans(self, spans: list[Span], at: int) -> tuple[int, int]:
        """Keep the app's spans as calls are kept (`_until_stored`); returns (kept, refused).
        One that can never be kept (regulated mode without a key, a value the store cannot
        write) is refused alone, and logged."""
        if not spans:
            return 0, 0
        done = self._until_stored(lambda sink: sink.insert_spans(spans), len(spans), "span", at)
        if done is _DATA:
            if len(spans) == 1:
                log.error("llmlog: span %s cannot be stored; it is lost", spans[0].span_id)
                return 0, 1
            each = [self._write_spans([s], at) for s in spans]
            return sum(k for k, _ in each), sum(r for _, r in each)
        if done is None:
            return 0, 0
        refusals = cast(list[Refused], done)
        for refusal in refusals[:5]:
            log.error("llmlog: a span cannot be stored: %s", refusal.reason)
        return len(spans) - len(refusals), len(refusals)

    def _write_each(self, calls: list[Call], at: int) -> tuple[int, int]:
        """Store calls one at a time; returns (stored, unstorable)."""
        stored = bad = 0
        for call in calls:
            store = self._sinks[at]
            try:
                if store is None:
                    raise ConnectionError("store closed")
                store.insert([call])
                stored += 1
            except Exception as exc:
                if store is not None and isinstance(exc, store.data_errors):
                    log.error("llmlog: call %s cannot be stored (%r); it is lost", printable(call.id), exc)
                    bad += 1
                else:
                    more, worse = self._write([call], at)  # the store itself failed: retry as usual
                    stored, bad = stored + more, bad + worse
        return stored, bad

    def _write(self, calls: list[Call], at: int) -> tuple[int, int]:
        """Insert with retries; returns (stored, unstorable). Giving up at exit stores none."""
        if not calls:
            return 0, 0
        done = self._until_stored(lambda sink: sink.insert(calls), len(calls), "call", at)
        if done is _DATA:
            # Something in this batch can never be stored: retrying the batch would block
            # every later call behind it. Store the rest one by one; count the rest.
            return self._write_each(calls, at)
        return (0, 0) if done is None else (len(calls), 0)

    def _until_stored(self, put: Callable[[Sink], Any], n: int, what: str, at: int) -> Any:
        """`put(sink)`'s answer, retried with backoff while the store is down; `_DATA` when
        the sink refuses the records as data (retrying cannot help); None when they are
        dropped: the spool is full, or the writer gives up at exit."""
        delay = 0.05
        while True:
            try:
                sink = self._sinks[at]
                if sink is None:
                    sink = self._sinks[at] = self._open()
                return put(sink)
            except SpoolFull as exc:
                # Not retried: the spool drains only as fast as the collector takes records,
                # and the batches behind this one would wait on it. Counted as dropped by
                # the caller, and said here.
                with self._lock:
                    dropped = self._stats.dropped + n
                self._warn("spool", f"llmlog: {exc}: {dropped} record(s) dropped so far")
                return None
            except Exception as exc:
                sink = self._sinks[at]
                if sink is not None and isinstance(exc, sink.data_errors):
                    return _DATA
                with self._lock:
                    self._stats.store_errors += 1
                give_up = self._give_up.is_set()
                where = redact_url(self.settings.db)
                self._warn(
                    "store", f"llmlog: store {where!r} failed ({exc!r}); retrying; {what}s wait in the queue"
                )
                if sink is not None:
                    with contextlib.suppress(Exception):
                        sink.close()
                    self._sinks[at] = None
                # A connection beside the first is a help the writer does without when the
                # store fails either (a role's or a server's connection limit; the store down):
                # batches go whole to the first for a minute, which retries as ever, and the
                # others let go of theirs.
                self._one_until = time.monotonic() + 60
                if at:
                    raise _Elsewhere from exc
                if give_up:
                    return None
                self._give_up.wait(delay)  # ended early by `close` giving up
                delay = min(delay * 2, 5.0)
