"""The writer across processes: calls prepared and stored by processes of the writer's own.

With `LLMLOG_WRITER_PROCESSES=N` (N ≥ 1) the writer's thread in the app only passes on what
a call captured (an exchange: its bytes and a few figures) to N processes, each a whole
writer (`python -m llmlog.pipeline.child`: parse, check, redact, seal, price, store) on the
same store. The app's interpreter then spends next to nothing on recording (the writer's
Python shares the app's interpreter lock), and with cores to spare the calls are prepared
and stored side by side.

The processes are started with `subprocess`, not `multiprocessing`: its way of starting
on macOS and Windows (spawn) runs the app's main module again in the child. Each talks
over two pipes in `multiprocessing.connection`'s frames: batches of pickled items in;
out, what it has finished with (stored, refused or lost), its writer's counts, and its log
records, which the app's own logging writes. Calls of one session (else of one trace) go to
the same process, so what a conversation re-sends is decoded and named once, there: the
least busy when the session is new to it.

What a process cannot be sent (an item that does not pickle: an object of the app's in its
metadata) or what comes when none can run is written by the writer in the app's process,
as without them. A process that dies loses what it held unstored: counted as dropped and
logged; another is started for the calls after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from llmlog.capture.exchange import Exchange
from llmlog.core.config import Settings
from llmlog.core.logs import recording_log
from llmlog.core.prompts import REGISTRY
from llmlog.core.record import Call, Span
from llmlog.store import sqlite_path

log = recording_log()  # never raises: a handler of the app's cannot stop recording

# What a process is sent: a call as captured or built, or a span of the app's as recorded.
Sent = Exchange | Call | Span

# The cyclic garbage collector's first threshold in a process that is llmlog's whole (a
# writer process, `llmlog serve`); Python's default is 700.
GC_THRESHOLD = 100_000
# How long a new process has to say it is ready before the writer gives up on it.
START_S = 20.0
# Sessions (and traces) whose process is remembered; the oldest are forgotten first.
HOMES = 100_000
# A process that died is started again at most this often; the calls between are written
# here. After each start that fails, twice as long, up to `RESTART_MAX_S`.
RESTART_S = 1.0
RESTART_MAX_S = 300.0
# One that ends younger than this doubles the wait too; one that lived longer sets it back.
YOUNG_S = 60.0
# A process that holds calls and says nothing for this long is stopped, stuck: what it held
# is counted lost, and another starts. Each reports at least six times as often (told so
# when it starts, so the two move together).
SILENT_S = 30.0
# glibc's malloc in a process (`mallopt`'s M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD): blocks
# up to 32 MiB from the heap, which keeps up to 64 MiB free before it shrinks and grows by
# 16 MiB at a time.
_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20),
    "MALLOC_TOP_PAD_": str(16 * 2**20),
}
# The pipe to a process, as far as the system allows an unprivileged one (Linux's default
# most); 64 KiB otherwise.
PIPE_BYTES = 2**20


def unshared(url: str) -> str | None:
    """Why the store at `url` cannot be written by several processes; None if it can (a
    SQLite file, PostgreSQL, a ClickHouse server)."""
    if url.startswith("chdb://"):
        return "the embedded ClickHouse engine (chdb) opens its folder in one process only"
    if sqlite_path(url) == ":memory:":
        return "a SQLite database in memory lives in one process"
    return None


def whole_process_gc() -> None:
    """The garbage collector set for a process that is llmlog's whole (a writer process, a
    collector's): a batch of calls or a request of OTLP spans makes a few hundred thousand
    objects, nearly all freed by reference counting, and at Python's defaults the collector
    walked the young ones every 700 allocations (a tenth of the server's time on 10,000
    OpenInference calls). What startup made (modules, settings, the store) is frozen out of
    every collection. Never in the app's process: its collector is the app's to set."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, second, third)


def route(item: Sent) -> str | None:
    """What keeps calls together on one process: their session, else their trace (as text:
    the app may give an id that is not a string, a number, which its call keeps)."""
    if isinstance(item, Span):
        key: object = item.trace_id
    elif isinstance(item, Exchange):
        key = item.context.session_id or item.context.trace_id
    else:
        key = item.session_id or item.trace_id
    return None if key is None else str(key)


# The modules whose classes and functions an item sent to a process may hold (with llmlog's
# own): what the process can rebuild as the app had it. An object of any other (a class of
# the app's `__main__`, a model of the app's modules, an exception whose arguments do not
# round-trip) stays in the app and is written there: unpickled in the process, it would
# import the app's modules there, or fail and lose the batch it came in.
_SENDABLE = frozenset(
    {"builtins", "copyreg", "collections", "datetime", "decimal", "fractions", "uuid", "zoneinfo", "llmlog"}
)


class _Pickler(pickle.Pickler):
    """Refuses (`PicklingError`) what a process could not rebuild as it was (`_SENDABLE`)."""

    def reducer_override(self, obj: Any) -> Any:
        named = isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType)
        module = getattr(obj if named else type(obj), "__module__", None)
        if not isinstance(module, str) or module.partition(".")[0] not in _SENDABLE:
            raise pickle.PicklingError(f"{module}.{type(obj).__qualname__} is not sent to a writer process")
        return NotImplemented


def pickled(*objects: Any) -> bytes:
    """`objects` in one frame, each loaded in turn (`pickle.Unpickler.load`) by a process."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    for obj in objects:
        pickler.dump(obj)
    return buffer.getvalue()


class _Framer:
    """Batches as a process reads them (`unpickled_apart`): each item pickled on its own, no
    object shared with another, so that one the process cannot rebuild is refused alone, not
    with its batch. Into memory kept from one batch to the next: a new buffer of megabytes
    for each batch cost more in page faults than the pickling (the workload's calls: 26 µs
    a call pickled as one list, 16 µs each apart into this buffer). Used by one thread."""

    KEEP = 16 * 2**20  # bytes of frame kept between batches; a larger one is let go

    def __init__(self) -> None:
        self._item = io.BytesIO()
        self._pickler = _Pickler(self._item, protocol=pickle.HIGHEST_PROTOCOL)
        self._frame = bytearray()

    def frames(self, items: Sequence[Any]) -> tuple[bytes, memoryview]:
        """The head (where each item ends) and the items, each sent as a frame of its own.
        The items' view is to be released before the next call."""
        item, pickler, frame = self._item, self._pickler, self._frame
        ends: list[int] = []
        at = 0
        for obj in items:
            item.seek(0)
            item.truncate()
            try:
                pickler.dump(obj)
            finally:
                pickler.clear_memo()
            with item.getbuffer() as pickled_item:
                n = len(pickled_item)
                frame[at : at + n] = pickled_item
            at += n
            ends.append(at)
        return pickle.dumps(("items", ends), protocol=pickle.HIGHEST_PROTOCOL), memoryview(frame)[:at]

    def trim(self) -> None:
        """Let go of a frame past `KEEP` (a burst of large calls), once its view is released."""
        if len(self._frame) > self.KEEP:
            self._frame = bytearray()
        self._item.seek(0)
        self._item.truncate()  # the last item's pickle, however large


def unpickled_apart(frame: bytes, ends: Sequence[int]) -> Iterator[tuple[Any, Exception | None]]:
    """The items of a frame `_Framer` made, whose head gave `ends`: each item rebuilt, or
    None and what rebuilding it raised."""
    view = memoryview(frame)
    start = 0
    for end in ends:
        try:
            yield pickle.loads(view[start:end]), None
        except Exception as exc:
            yield None, exc
        start = end


# Every `Processes` not yet closed: a fork of the app closes its copies of their pipes.
_OPEN: weakref.WeakSet[Processes] = weakref.WeakSet()


def _after_fork() -> None:
    """In a fork of the app: its copies of the pipes to the writer processes closed. Held
    there, a process would never read the end of its input when the app closes its own, and
    the app's exit would wait for it its whole timeout, then kill it."""
    for processes in list(_OPEN):
        # Those still starting too: a fork made meanwhile held one's input open.
        for process in [*processes._slots, *processes._starting]:
            if process is not None:
                for connection in (process.out, process.into):
                    with contextlib.suppress(OSError):
                        connection.close()
        for fd in list(processes._spawning):
            with contextlib.suppress(OSError):
                os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process that did not say it was ready, and what it started (its session's):
    `sys.executable` need not be Python (an app server's binary that went on serving)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


@dataclass(eq=False)  # each is itself: kept in sets by identity
class _Process:
    """One writer process, as the app's writer sees it."""

    proc: subprocess.Popen[bytes]
    out: Connection  # to it
    into: Connection  # from it
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0  # items sent
    done: int = 0  # … of which it has finished with
    sending: int = 0  # … of which the writer's thread is still writing to its pipe
    counts: dict[str, Any] = field(default_factory=dict)  # its writer's `Stats`, as a dict
    ended: bool = False  # its reports are over: `sent - done` were counted lost, if any
    final: bool = False  # it said it was done, before its end
    versions: int = -1  # the generation of prompt versions it has been told of (`Registry`)
    reader: threading.Thread | None = None
    born: float = field(default_factory=time.monotonic)


class Processes:
    """The writer's processes: `send` items to them, `counts` of what they did, `close`.

    `finished(n)` is called as they finish with items (stored, refused or dropped, each
    counted in their own `counts`); `lost(n)` when one ends holding items it had not."""

    def __init__(
        self, settings: Settings, n: int, finished: Callable[[int], None], lost: Callable[[int], None]
    ) -> None:
        # What a process builds its own settings from: the fields, not the object (its
        # keyring holds keys as objects); its writer writes there itself.
        self._fields = {f.name: getattr(settings, f.name) for f in fields(settings) if f.init}
        self._fields["writer_processes"] = 0
        self._slots: list[_Process | None] = [None] * n
        self._started = [0.0] * n
        self._wait = [RESTART_S] * n  # before a slot's process is started again
        self._finished = finished
        self._lost = lost
        self._retired: list[dict[str, Any]] = []  # the counts of processes that ended
        self._counting = threading.Lock()
        self._homes: OrderedDict[str, int] = OrderedDict()  # session (else trace) → its process
        self._said: set[str] = set()
        self._closed = False  # `close` was called: none is started again
        self._starting: set[_Process] = set()  # started, not yet ready
        self._spawning: set[int] = set()  # the pipes of a process being started, before it is listed
        self._framer = _Framer()  # the sending thread's
        _OPEN.add(self)

    # ------------------------------------------------------------ sending

    def send(self, items: Sequence[Sent]) -> list[Sent]:
        """Send `items` to the processes; returns those left for this process to write."""
        groups: dict[int, list[Sent]] = {}
        # What each holds: a session new here goes to the least busy, and stays there.
        load = [0 if p is None else p.sent - p.done for p in self._slots]
        homes = self._homes
        for item in items:
            try:
                key = route(item)
            except Exception:  # an id whose `str` fails: goes where there is room
                key = None
            slot = homes.get(key) if key is not None else None
            if slot is None:
                slot = min(range(len(load)), key=load.__getitem__)
                if key is not None:
                    homes[key] = slot
                    if len(homes) > HOMES:
                        homes.popitem(last=False)
            elif key is not None:
                homes.move_to_end(key)
            load[slot] += 1
            groups.setdefault(slot, []).append(item)
        left: list[Sent] = []
        for slot, group in groups.items():
            try:
                left += self._send(slot, group)
            except Exception:  # never the writer's thread ended: what was not sent is written here
                log.exception("llmlog: calls could not be sent to a writer process; they are written here")
                left += group
        return left

    def _send(self, slot: int, items: list[Sent]) -> list[Sent]:
        process = self._process(slot)
        if process is None:
            return items
        try:
            # The head first: a process that cannot read an item still counts it.
            head, frame = self._framer.frames(items)
        except Exception:
            # One item holds an object that does not pickle: the others go, it stays here.
            fit, left = [], []
            for item in items:
                try:
                    pickled(item)
                    fit.append(item)
                except Exception:
                    left.append(item)
            if not left:  # not an item's fault: written here rather than tried again
                return items
            return left + (self._send(slot, fit) if fit else [])
        try:
            with frame:  # the framer's memory let go of, however this ends
                return self._deliver(process, items, head, frame)
        finally:
            self._framer.trim()

    def _deliver(self, process: _Process, items: list[Sent], head: bytes, frame: memoryview) -> list[Sent]:
        """Write a batch's frames to `process`; what could not be written, given back."""
        n = len(items)
        with process.lock:
            if process.ended:
                return items
            process.sent += n
            process.sending += n
        try:
            if REGISTRY.generation != process.versions:  # the app read a prompt version since
                process.versions, versions = REGISTRY.known()
                process.out.send_bytes(pickle.dumps(("prompts", versions)))
            process.out.send_bytes(head)
            process.out.send_bytes(frame)
        except Exception:  # OSError: it ended; TypeError: closed meanwhile (`close`)
            # Not all written: it never had them, though it ended meanwhile (its reader
            # leaves them out of what it held). Written here.
            with process.lock:
                process.sending -= n
                process.sent -= n
            return items
        with process.lock:
            process.sending -= n
            late = process.ended  # it ended as they were written: its reader left them out
        if late:
            log.error("llmlog: a writer process ended as %d call(s) were sent to it; they are lost", n)
            self._lost(n)
        return []

    def nudge(self) -> None:
        """Have each process build the batch it gathers now (`Writer.nudge`): the app's
        writer waits for what it holds (a flush). From the thread that sends."""
        frame = pickle.dumps(("nudge",))
        for process in self._slots:
            if process is not None and not process.ended and process.sent > process.done:
                with contextlib.suppress(Exception):  # it ended: its reader says so
                    # Only into a pipe with room: one that does not read (stopped, its store
                    # hung) would hold the writer's thread, and every process's calls with it,
                    # where nothing was left to send it. Not told, it builds after its interval.
                    room = select.poll()
                    room.register(process.out.fileno(), select.POLLOUT)
                    if room.poll(0):
                        process.out.send_bytes(frame)

    def start(self) -> None:
        """Start every process, side by side: each takes a moment to import and open the
        store. The store is brought up to date before (by the writer): never two at once."""
        now = time.monotonic()
        spawned = []
        for slot in range(len(self._slots)):
            self._started[slot] = now
            try:
                spawned.append((slot, self._spawn()))
            except Exception as exc:
                self._cannot(exc)
        for slot, process in spawned:
            try:
                self._slots[slot] = self._kept(self._ready(process))
            except Exception as exc:
                self._started[slot] = time.monotonic()  # the wait counts from the failure
                self._cannot(exc)

    def _process(self, slot: int) -> _Process | None:
        """The slot's process, started again if it ended (at most every `RESTART_S`, and
        less often after each start that failed). The wait counts from the end of the last
        try: one that hangs holds the writer's thread up to `START_S`, and from its start,
        tries would follow one another with no time between for the calls waiting."""
        process = self._slots[slot]
        if process is not None and not process.ended:
            return process
        if self._closed:
            return None
        now = time.monotonic()
        if process is not None:
            # It ended: the next waits from now, longer each time one ends young (calls of a
            # kind that crashes it, made again and again, would lose a batch a second).
            young = now - process.born < YOUNG_S
            self._wait[slot] = min(self._wait[slot] * 2, RESTART_MAX_S) if young else RESTART_S
            self._started[slot] = now
            self._slots[slot] = None
        if now - self._started[slot] < self._wait[slot]:
            return None
        self._started[slot] = now
        try:
            process = self._kept(self._ready(self._spawn()))
        except Exception as exc:
            self._started[slot] = time.monotonic()
            self._wait[slot] = min(self._wait[slot] * 2, RESTART_MAX_S)
            self._cannot(exc)
            return None
        self._slots[slot] = process
        return process

    def _kept(self, process: _Process) -> _Process | None:
        """`process`, unless `close` came while it started: then it ends with its input."""
        if not self._closed:
            return process
        with contextlib.suppress(OSError):
            process.out.close()
        return None

    def _cannot(self, exc: Exception) -> None:
        self._say(f"llmlog: a writer process could not start ({exc}); calls are written in the app's process")

    def _spawn(self) -> _Process:
        to_child, from_parent = os.pipe()
        try:
            to_parent, from_child = os.pipe()
        except OSError:  # out of descriptors: each try would leak two more
            os.close(to_child)
            os.close(from_parent)
            raise
        # A fork from now on closes its copies (`_after_fork`), before the process is listed too.
        spawning = (to_child, from_parent, to_parent, from_child)
        self._spawning.update(spawning)
        # A batch is megabytes (each call's request and response bodies). In a pipe of 64 KiB
        # the process reads it in a hundred pieces, taking the interpreter back from its
        # writer's thread for each, while the app's writer waits to send the next.
        with contextlib.suppress(OSError, AttributeError):  # Linux only; within its limit
            fcntl.fcntl(from_parent, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        env = dict(os.environ)
        # The child imports this llmlog, wherever the app found it: last, so that nothing
        # beside it there (a site-packages) comes before the standard library.
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), here) if p)
        env["LLMLOG_WRITER_PROCESSES"] = "0"
        # glibc's malloc: a batch's frame (megabytes) and what is read from it are carved
        # from the heap and its memory kept for the next, not mapped afresh from the system
        # and given back each time (page faults, a sixth of a call's cost). Settings of the
        # app's own environment are kept.
        for name, value in _MALLOC.items():
            env.setdefault(name, value)
        try:
            proc = subprocess.Popen(
                # -P: the app's working directory is not put first on its path, where a file of
                # the app's named as a module it imports (`orjson.py`) kept it from starting.
                [sys.executable, "-P", "-m", "llmlog.pipeline.child", str(to_child), str(from_child)],
                pass_fds=(to_child, from_child),
                env=env,
                stdin=subprocess.DEVNULL,
                # Not in the app's process group: Ctrl-C stops the app, whose exit then
                # flushes through this process; it stops when its pipe closes.
                start_new_session=True,
            )
        except BaseException:
            # Out of the set before closed: a number closed may be another file's next.
            self._spawning.difference_update(spawning)
            os.close(from_parent)
            os.close(to_parent)
            raise
        finally:
            self._spawning.difference_update((to_child, from_child))
            os.close(to_child)
            os.close(from_child)
        process = _Process(
            proc, Connection(from_parent, readable=False), Connection(to_parent, writable=False)
        )
        self._starting.add(process)  # from now on, a fork closes its copies of the pipes
        self._spawning.difference_update(spawning)
        return process

    def _ready(self, process: _Process) -> _Process:
        """`process` told its settings and ready, its reports read from now on."""
        out, into, proc = process.out, process.into, process.proc
        try:
            if self._closed:  # `close` came after it was started, before it was listed
                raise RuntimeError("the writer is closing")
            process.versions, versions = REGISTRY.known()
            out.send_bytes(pickle.dumps(("settings", self._fields, versions, SILENT_S / 6)))
            if not into.poll(START_S) or pickle.loads(into.recv_bytes())[0] != "ready":
                raise RuntimeError("it did not say it was ready")
        except Exception as exc:  # OSError, EOFError, RuntimeError; settings that do not pickle
            out.close()
            into.close()
            _kill(proc)
            proc.wait()
            raise RuntimeError(
                f"exit status {proc.returncode}" if isinstance(exc, EOFError) else str(exc)
            ) from None
        finally:
            self._starting.discard(process)
        process.reader = threading.Thread(
            target=self._read, args=(process,), name="llmlog-writer-reports", daemon=True
        )
        process.reader.start()
        return process

    # ------------------------------------------------------------ hearing back

    def _read(self, process: _Process) -> None:
        while True:
            try:
                if not process.into.poll(SILENT_S):
                    self._silent(process)
                    continue
                message = pickle.loads(process.into.recv_bytes())
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "log":
                log.log(message[1], "%s", message[2])
                continue
            done, counts = message[1], message[2]
            with process.lock:
                if process.final:
                    continue  # a report its reporting thread sent after its last word
                more = max(done - process.done, 0)
                process.done += more
                process.counts = counts
                process.final = kind == "final"
            if more:
                self._finished(more)
        with self._counting, process.lock:
            process.ended = True
            # What the writer's thread is still writing is its to count (`_send`).
            held = process.sent - process.done - process.sending
            self._retired.append(process.counts)
        process.into.close()
        process.proc.wait()
        if held:
            log.error(
                "llmlog: a writer process ended (exit status %s) holding %d unstored call(s); they are lost",
                process.proc.returncode,
                held,
            )
            self._lost(held)

    def _silent(self, process: _Process) -> None:
        """`process` said nothing for `SILENT_S`: stopped if it holds calls (stopped by a
        signal, or stuck), as it would never store them, and the app's writer, waiting to
        send it more, would wait for ever. Its end follows, as any process's."""
        with process.lock:
            held = process.sent - process.done
        if held:
            log.error(
                "llmlog: a writer process said nothing for %.0f s holding %d call(s); it is stopped",
                SILENT_S,
                held,
            )
            _kill(process.proc)

    def counts(self) -> list[dict[str, Any]]:
        """What each process did, ended or running: its writer's `Stats` fields."""
        with self._counting:  # a process's counts move to `_retired` as it ends: never both
            return [*self._retired, *(p.counts for p in self._slots if p is not None and not p.ended)]

    # ------------------------------------------------------------ stopping

    def close(self, timeout: float) -> None:
        """Tell each process there is no more; wait up to `timeout` s for them to store what
        they hold and end; stop those that have not (what they held is counted lost)."""
        deadline = time.monotonic() + timeout
        self._closed = True
        for starting in list(self._starting):  # not ready yet: it holds nothing
            _kill(starting.proc)
        running = [p for p in self._slots if p is not None]
        for process in running:
            with contextlib.suppress(OSError):
                process.out.close()
        for process in running:
            assert process.reader is not None
            process.reader.join(max(deadline - time.monotonic(), 0.1))
            if process.reader.is_alive():
                process.proc.kill()
                process.reader.join(5)
        self._slots = [None] * len(self._slots)
        _OPEN.discard(self)

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.error("%s", message)
