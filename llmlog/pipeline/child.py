"""A writer process (`llmlog.pipeline.processes`): `python -m llmlog.pipeline.child IN OUT`.

It reads from the file descriptor IN the app's settings, then batches of items, each
handed to a writer of its own as the app's writer would keep it; it writes to OUT what it
has finished with and its writer's counts as they change, and its log records. At the end
of IN (the app closed it, or the app is gone) it stores what it holds, within the settings'
exit timeout, says so last, and ends.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from llmlog.core.config import Settings
from llmlog.core.prompts import REGISTRY
from llmlog.pipeline.processes import unpickled_apart, whole_process_gc
from llmlog.pipeline.writer import Writer


class _Reports:
    """What goes to the app, one frame at a time, from the reading and the writer's threads."""

    def __init__(self, out: Connection) -> None:
        self._out = out
        self._lock = threading.Lock()

    def say(self, *message: Any) -> None:
        frame = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        # The app gone: what is stored is stored.
        with self._lock, contextlib.suppress(OSError):
            self._out.send_bytes(frame)


class _ToApp(logging.Handler):
    """This process's `llmlog` log records, written by the app's own logging."""

    def __init__(self, reports: _Reports) -> None:
        super().__init__(logging.INFO)
        self._reports = reports

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._reports.say("log", record.levelno, self.format(record))
        except Exception:
            self.handleError(record)


# How long the writer's thread may hold the interpreter while the reading one waits (Python's
# default: 5 ms). The reading thread takes it back for each piece of a batch it reads: by
# the default, the app's writer waited on a full pipe and this process's writer on calls.
SWITCH_S = 0.0005


def main(into: Connection, out: Connection) -> None:
    sys.setswitchinterval(SWITCH_S)
    reports = _Reports(out)
    logger = logging.getLogger("llmlog")
    logger.addHandler(_ToApp(reports))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _, fields, versions, heartbeat_s = pickle.loads(into.recv_bytes())
    REGISTRY.learn(versions)
    # Blocking, not dropping, when its queue is full: the pipe then fills and the app's
    # writer waits on it, and the app's queue is the one that drops (counted there).
    writer = Writer(Settings(**{**fields, "on_full": "block"}), one_thread=True)
    whole_process_gc()
    reports.say("ready")
    taken = 0  # items handed to the writer
    reading = True
    told: tuple[int, dict[str, Any]] | None = None
    said = time.monotonic()

    def report(kind: str = "report") -> None:
        nonlocal told, said
        # Taken is counted after `submit`: read first, it never counts an item as finished
        # that the writer has not yet counted as pending. What is pending and what is counted
        # are read at one moment: a call counted recorded is counted finished too.
        was = taken
        pending, stats = writer.settled()
        done = max(was - pending, told[0] if told else 0)
        counts = vars(stats)
        now = time.monotonic()
        # Unchanged, said again now and then: the app stops a process silent too long.
        if kind == "final" or (done, counts) != told or now - said >= heartbeat_s:
            told, said = (done, counts), now
            reports.say(kind, done, counts)

    def reporting() -> None:
        while reading:
            writer.progress(min(0.5, heartbeat_s))
            report()

    reporter = threading.Thread(target=reporting, name="llmlog-child-reports", daemon=True)
    reporter.start()
    while True:
        try:
            message = pickle.loads(into.recv_bytes())
        except (EOFError, OSError):
            break
        if message[0] == "prompts":
            REGISTRY.learn(message[1])
            continue
        if message[0] == "nudge":
            writer.nudge()
            continue
        # The app sends only what can be rebuilt here; should an item still not be (an
        # exception whose arguments do not round-trip, a class of llmlog's own changed under a
        # running app), it alone is counted and lost, not the batch it came in.
        try:
            items = into.recv_bytes()  # the head said where each ends
        except (EOFError, OSError):
            break
        for item, error in unpickled_apart(items, message[1]):
            if error is None:
                writer.submit(item)
            else:
                logger.error("llmlog: a call could not be read in a writer process (%r); it is lost", error)
                writer.failed("could not be read by a writer process")
            taken += 1
    reading = False
    writer.close()
    report("final")  # not waiting for the reporter, which may sleep half a second more


if __name__ == "__main__":
    main(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
