"""The writer's work in processes of its own (`LLMLOG_WRITER_PROCESSES`): the real SDK's calls,
on real stores, each stored once; what a process cannot take written in the app; a process
that dies losing only what it held, counted and logged; its log records in the app's log."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import anthropic
import pytest

import llmlog
from llmlog.capture.context import CallContext
from llmlog.capture.exchange import Exchange
from llmlog.core.filters import CallFilter
from llmlog.core.prompts import REGISTRY
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.processes import pickled
from llmlog.pipeline.writer import Writer
from llmlog.store import open_store
from tests.backends import Backend
from tests.test_encryption import K1, raw_bytes


def _client(fake: FakeProvider) -> anthropic.Anthropic:
    return llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))


def _ask(client: anthropic.Anthropic, text: str, system: str = "Be brief.") -> None:
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, system=system, messages=[{"role": "user", "content": text}]
    )


def _writer() -> Writer:
    writer = llmlog._writer
    assert writer is not None
    return writer


def _pids() -> list[int]:
    processes = _writer()._processes
    assert processes is not None, "the writer has no processes"
    return [p.proc.pid for p in processes._slots if p is not None and not p.ended]


def test_calls_and_spans_stored_once_by_the_processes(backend: Backend, fake: FakeProvider) -> None:
    llmlog.configure(db=backend.url, writer_processes=2)
    client = _client(fake)
    for i in range(24):
        # Sessions, a trace of the app's, and calls with neither (sent in turn).
        if i % 3 == 2:
            _ask(client, f"alone {i}")
            continue
        with llmlog.context(session_id=f"s{i % 5}"), llmlog.span("step", n=i):
            _ask(client, f"turn {i}")
    assert llmlog.flush(timeout=30)
    pids = _pids()
    assert len(pids) == 2 and os.getpid() not in pids
    stats = llmlog.stats()
    assert (stats.recorded, stats.spans, stats.dropped, stats.failed) == (24, 16, 0, 0)
    with open_store(backend.url) as store:
        calls = list(store.iter_calls(CallFilter()))
        assert len(calls) == 24 == len({c.id for c in calls})
        assert sorted(c.messages[-1]["content"] for c in calls) == sorted(
            [f"turn {i}" for i in range(24) if i % 3 != 2] + [f"alone {i}" for i in range(24) if i % 3 == 2]
        )
        assert all(c.cost_usd and c.cost_usd > 0 for c in calls)  # priced there
        in_spans = [c for c in calls if c.parent_id]
        assert len(in_spans) == 16 and len(list(store.iter_spans())) == 16
    llmlog.configure(db=backend.url)
    assert not any(_alive(pid) for pid in pids), "the processes end with their writer"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_exchange_reaches_a_process_whole() -> None:
    """What a process is sent of an exchange is every field it has but where it was to be
    handed, in place."""
    context = CallContext(session_id="s", user_id="u", feature="f", metadata={"k": [1]}, tags=("t",))
    sent = Exchange(
        provider="anthropic", api="messages", url="http://h/v1/messages", request_body=b"{}",
        context=context, started_at=1.5, t0=2.5, retry_count=2, status=529,
        response_headers={"content-type": "text/event-stream"}, chunks=[(0.5, b"data: x\n\n")],
        ended_ms=9.0, failure=("timeout", "httpx.ReadTimeout", "slow"), incomplete=True, _sink=print,
    )  # fmt: skip
    got = pickle.loads(pickled(sent))
    for f in dataclasses.fields(Exchange):
        assert getattr(got, f.name) == (None if f.name == "_sink" else getattr(sent, f.name)), f.name


def test_what_does_not_pickle_is_written_here(db_path: str, fake: FakeProvider) -> None:
    llmlog.configure(db=db_path, writer_processes=1)
    client = _client(fake)
    with llmlog.context(metadata={"lock": threading.Lock()}):  # an object of the app's
        _ask(client, "with a lock")
    _ask(client, "plain")
    assert llmlog.flush(timeout=30)
    assert llmlog.stats().recorded == 2
    with open_store(db_path) as store:
        calls = {c.messages[-1]["content"]: c for c in store.iter_calls(CallFilter())}
    assert "lock" in calls["with a lock"].metadata["lock"]  # as text, as the writer keeps it
    llmlog.configure(db=db_path)


def test_sealed_and_versioned_in_the_processes(backend: Backend, fake: FakeProvider) -> None:
    """The key and the prompt versions the app knows (one learned after the processes
    started) reach the processes: no clear text stored, the version stamped."""
    llmlog.configure(db=backend.url, writer_processes=1, key=K1)
    client = _client(fake)
    _ask(client, "CLEAR-TEXT-marker one")
    assert llmlog.flush(timeout=30)
    REGISTRY.add("You answer in haiku.", "haiku-bot@v3")
    _ask(client, "CLEAR-TEXT-marker two", system="You answer in haiku.")
    assert llmlog.flush(timeout=30)
    assert llmlog.stats().recorded == 2
    assert b"CLEAR-TEXT-marker" not in raw_bytes(backend)
    with open_store(backend.url) as store:
        from llmlog.core.encryption import Keyring

        store.keyring = Keyring.from_environment(K1, None, [])
        versions = {
            c.messages[-1]["content"]: c.prompt_template_version for c in store.iter_calls(CallFilter())
        }
    assert versions["CLEAR-TEXT-marker two"] == "haiku-bot@v3"
    llmlog.configure(db=backend.url)


def test_a_process_that_dies_loses_only_what_it_held(
    tmp_path: Path, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """The store down, the process holds the calls, retrying; killed, those are counted lost
    and said, the process's own warnings having reached the app's log; the next calls go to a
    new process once the store is back."""
    blocker = tmp_path / "data"
    blocker.write_text("a file where the store's directory should be")
    db = str(blocker / "calls.db")
    llmlog.configure(db=db, writer_processes=1)
    client = _client(fake)
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        for i in range(3):
            _ask(client, f"held {i}")
        assert not llmlog.flush(timeout=2)
        assert any("retrying" in r.getMessage() for r in caplog.records)  # said in the process
        (pid,) = _pids()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while llmlog.stats().dropped < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert llmlog.stats().dropped == 3
        assert any(
            "writer process ended" in r.getMessage() and "3 unstored" in r.getMessage()
            for r in caplog.records
        )
        blocker.unlink()
        time.sleep(1.1)  # a process is started again at most once a second
        for i in range(2):
            _ask(client, f"after {i}")
        assert llmlog.flush(timeout=30)
    stats = llmlog.stats()
    assert (stats.recorded, stats.dropped) == (2, 3)
    assert _pids() != [pid]
    with open_store(db) as store:
        assert sorted(c.messages[-1]["content"] for c in store.iter_calls(CallFilter())) == [
            "after 0",
            "after 1",
        ]
    llmlog.configure(db=str(tmp_path / "other.db"))


def test_a_store_of_one_process_is_written_here(fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        llmlog.configure(db=":memory:", writer_processes=2)
        _ask(_client(fake), "in memory")
        assert llmlog.flush(timeout=30)
    assert llmlog.stats().recorded == 1
    assert _writer()._processes is None
    assert any(
        "no writer processes" in r.getMessage() and "in memory" in r.getMessage() for r in caplog.records
    )
    llmlog.configure(db=":memory:")


def test_flush_builds_what_the_processes_gather_now(db_path: str, fake: FakeProvider) -> None:
    """A flush has the processes build what they have gathered, not wait for a full batch
    or the flush interval: sent with the app's last items, or after them (the app's batch
    of 4 went 2 and 2, each process waiting for 4)."""
    llmlog.configure(db=db_path, writer_processes=2, flush_interval_s=300, batch_size=4)
    client = _client(fake)
    for i in range(4):
        with llmlog.context(session_id=f"s{i}"):
            _ask(client, f"turn {i}")
    assert llmlog.flush(timeout=20)
    assert [p.sent for p in _writer()._processes._slots if p] == [2, 2]  # type: ignore[union-attr]
    for i in range(3):
        _ask(client, f"then {i}")
    assert llmlog.flush(timeout=20)
    stats = llmlog.stats()
    assert (stats.recorded, stats.queued, stats.dropped) == (7, 0, 0)
    llmlog.configure(db=db_path)


def test_exit_stores_what_the_processes_hold(tmp_path: Path, fake: FakeProvider) -> None:
    db = tmp_path / "script.db"
    script = textwrap.dedent(
        f"""
        import anthropic, llmlog
        client = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url={fake.anthropic_base_url!r}))
        for i in range(40):
            with llmlog.context(session_id=f"s{{i % 7}}"):
                client.messages.create(
                    model="claude-haiku-4-5", max_tokens=5, messages=[{{"role": "user", "content": str(i)}}]
                )
        # no flush: the exit hook must store everything, through the processes
        """
    )
    env = {**os.environ, "LLMLOG_DB": str(db), "LLMLOG_WRITER_PROCESSES": "2"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    with open_store(str(db)) as store:
        assert store.count(CallFilter()) == 40


def test_a_bad_count_of_processes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlog.core.config import Settings

    monkeypatch.setenv("LLMLOG_WRITER_PROCESSES", "-1")
    with pytest.raises(ValueError, match="LLMLOG_WRITER_PROCESSES"):
        Settings()


def test_a_session_id_that_is_not_text_is_routed(db_path: str, fake: FakeProvider) -> None:
    """An id the app gives as a number is routed by its text; the writer's thread goes on."""
    llmlog.configure(db=db_path, writer_processes=2)
    client = _client(fake)
    with llmlog.context(session_id=42):  # type: ignore[arg-type]
        _ask(client, "numbered session")
    _ask(client, "plain")
    assert llmlog.flush(timeout=30)
    assert (llmlog.stats().recorded, llmlog.stats().dropped) == (2, 0)
    with open_store(db_path) as store:
        assert store.count(CallFilter()) == 2
    llmlog.configure(db=db_path)


class _Refusal(Exception):
    """Pickles, but does not unpickle: its arguments are not what `__init__` takes."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")


class _AppUser:
    """A class of the app's main module, which a writer process cannot import."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"AppUser({self.name})"


def test_objects_of_the_app_are_written_here(
    db_path: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metadata holding objects a process could not rebuild (a class of the app's `__main__`,
    an exception whose arguments do not round-trip) is written in the app, as without
    processes: neither it nor the calls sent beside it are lost."""
    monkeypatch.setattr(_AppUser, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "_AppUser", _AppUser, raising=False)
    llmlog.configure(db=db_path, writer_processes=1)
    client = _client(fake)
    _ask(client, "before")
    assert llmlog.flush(timeout=30)
    pids = _pids()
    for meta in ({"user": _AppUser("ann")}, {"error": _Refusal(7, "no")}):
        with llmlog.context(metadata=meta):
            _ask(client, f"with {next(iter(meta))}")
        _ask(client, "beside it")
        assert llmlog.flush(timeout=30)
    stats = llmlog.stats()
    assert (stats.recorded, stats.dropped, stats.failed) == (5, 0, 0)
    assert _pids() == pids, "the process went on"
    with open_store(db_path) as store:
        calls = {c.messages[-1]["content"]: c for c in store.iter_calls(CallFilter())}
    assert "AppUser(ann)" in calls["with user"].metadata["user"]
    assert "7: no" in calls["with error"].metadata["error"]
    llmlog.configure(db=db_path)


def test_a_batch_a_process_cannot_read_is_counted(
    db_path: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should a batch reach a process that cannot rebuild it, its calls are counted failed
    and said there; the process goes on and flush returns."""
    from llmlog.pipeline import processes

    monkeypatch.setattr(processes, "_SENDABLE", processes._SENDABLE | {"tests"})
    llmlog.configure(db=db_path, writer_processes=1)
    client = _client(fake)
    _ask(client, "before")
    assert llmlog.flush(timeout=30)
    pids = _pids()
    with caplog.at_level(logging.ERROR, logger="llmlog"), llmlog.context(metadata={"e": _Refusal(7, "no")}):
        _ask(client, "unreadable")
    assert llmlog.flush(timeout=30)
    _ask(client, "after")
    assert llmlog.flush(timeout=30)
    stats = llmlog.stats()
    assert (stats.recorded, stats.failed, stats.dropped) == (2, 1, 0)
    assert stats.reasons == {"could not be read by a writer process": 1}
    assert any("could not be read in a writer process" in r.getMessage() for r in caplog.records)
    assert _pids() == pids
    llmlog.configure(db=db_path)


@contextlib.contextmanager
def a_fork_alive() -> Iterator[None]:
    """A fork of the app (a worker it starts) that outlives the writer, for a `with`."""
    child = os.fork()
    if child == 0:
        time.sleep(15)
        os._exit(0)
    try:
        yield
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def closing_took(db_path: str) -> float:
    """Seconds that closing the writer (configuring another) took."""
    started = time.monotonic()
    llmlog.configure(db=db_path)
    return time.monotonic() - started


def test_a_fork_of_the_app_does_not_hold_the_processes(db_path: str, fake: FakeProvider) -> None:
    """A fork of the app (a worker it starts) does not keep the writer processes' input
    open: closing the writer ends them at once, not after its timeout by a kill."""
    llmlog.configure(db=db_path, writer_processes=1, exit_timeout_s=8)
    _ask(_client(fake), "before the fork")
    assert llmlog.flush(timeout=30)
    processes = _writer()._processes
    assert processes is not None
    (process,) = [p for p in processes._slots if p is not None]
    with a_fork_alive():
        took = closing_took(db_path)
    assert process.proc.returncode == 0, "it ended, not killed"
    assert took < 4
    with open_store(db_path) as store:
        assert store.count(CallFilter()) == 1


def test_a_process_that_never_starts_holds_up_no_exit(
    db_path: str, tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sys.executable` not a Python that starts (an app server's binary that goes on
    running): closing the writer stops it and what it started, within the exit timeout, and
    the calls that waited are written in the app."""
    hangs, pids = tmp_path / "hangs", tmp_path / "pids"
    hangs.write_text(f"#!/bin/sh\necho $$ > {pids}\nsleep 60 &\necho $! >> {pids}\nwait\n")
    hangs.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hangs))
    llmlog.configure(db=db_path, writer_processes=1, exit_timeout_s=2)
    _ask(_client(fake), "waiting")
    started = time.monotonic()
    llmlog.configure(db=db_path)
    took = time.monotonic() - started
    time.sleep(0.2)
    running = [int(pid) for pid in pids.read_text().split() if _alive_or_zombie(int(pid))]
    for pid in running:
        os.kill(pid, signal.SIGKILL)
    assert not running, "nothing it started is left running"
    assert took < 6
    with open_store(db_path) as store:
        assert store.count(CallFilter()) == 1


def test_a_stopped_process_holds_up_no_exit(db_path: str, fake: FakeProvider) -> None:
    """A process that stops reading (SIGSTOP) while the app's writer waits to send it a
    large request: closing the writer kills it within the exit timeout, not twice it, and
    what it held is counted lost."""
    llmlog.configure(db=db_path, writer_processes=1, exit_timeout_s=4)
    client = _client(fake)
    _ask(client, "stored")
    assert llmlog.flush(timeout=30)
    (pid,) = _pids()
    os.kill(pid, signal.SIGSTOP)
    for i in range(4):
        _ask(client, "x" * 300_000 + str(i))
    writer = _writer()
    started = time.monotonic()
    llmlog.configure(db=db_path)
    took = time.monotonic() - started
    stats = writer.stats()
    # Those it held are lost; those the writer was still sending, when it was stopped, are
    # written in the app (which comes first is the machine's to say).
    assert stats.recorded >= 1 and stats.dropped + stats.recorded == 5
    assert not _alive_or_zombie(pid)
    assert took < 7.5  # 4 s, then a second for the process; it was 4 + 4 + 1 s


def _alive_or_zombie(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_a_process_stuck_while_running_is_stopped_and_replaced(
    db_path: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A process that stops (SIGSTOP) while the app runs on: once it has said nothing for
    `SILENT_S` holding calls, it is stopped, what it held is counted lost and said, the
    app's writer no longer waits on it, and the calls after go to a new process. What the
    writer was still sending it (a batch larger than the pipe holds) it never had: written
    in the app, however late the writer hears of its end."""
    from llmlog.pipeline import processes

    monkeypatch.setattr(processes, "SILENT_S", 3.0)
    spawn = processes.Processes._spawn

    class Late:
        """Its pipe, the writer hearing of a failed send after the process's reader."""

        def __init__(self, out: Connection) -> None:
            self._out = out

        def send_bytes(self, frame: bytes) -> None:
            try:
                self._out.send_bytes(frame)
            except OSError:
                time.sleep(0.5)
                raise

        def close(self) -> None:
            self._out.close()

    def spawned(self: processes.Processes) -> processes._Process:
        process = spawn(self)
        process.out = Late(process.out)  # type: ignore[assignment]
        return process

    monkeypatch.setattr(processes.Processes, "_spawn", spawned)
    llmlog.configure(db=db_path, writer_processes=1)
    client = _client(fake)
    _ask(client, "stored")
    assert llmlog.flush(timeout=30)
    (pid,) = _pids()
    os.kill(pid, signal.SIGSTOP)
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        for i in range(2):
            _ask(client, f"held {i}")  # in its pipe, whole
        time.sleep(0.5)  # a batch of their own
        for i in range(2):
            # More than the pipe holds: the writer waits on it.
            _ask(client, "x" * processes.PIPE_BYTES + str(i))
        deadline = time.monotonic() + 20
        while llmlog.stats().dropped < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("said nothing" in r.getMessage() for r in caplog.records)
        time.sleep(1.1)  # a process is started again at most once a second
        _ask(client, "after")
        assert llmlog.flush(timeout=30)
    assert not _alive_or_zombie(pid)
    assert _pids() != [pid]
    stats = llmlog.stats()
    assert (stats.recorded, stats.dropped) == (4, 2)
    with open_store(db_path) as store:
        assert store.count(CallFilter()) == 4
    llmlog.configure(db=db_path)


def test_a_flush_does_not_hold_the_writer_on_a_process_that_does_not_read(
    db_path: str, fake: FakeProvider
) -> None:
    """A process that does not read (stopped here; its store hung, say), its pipe full: a
    flush does not have the app's writer wait to tell it to build what it holds, and the
    calls of other sessions still go to the other process and are stored."""
    llmlog.configure(db=db_path, writer_processes=2, exit_timeout_s=2)
    client = _client(fake)
    with llmlog.context(session_id="s0"):
        _ask(client, "first")
    assert llmlog.flush(timeout=30)
    processes = _writer()._processes
    assert processes is not None
    stuck = processes._slots[0]
    assert stuck is not None
    os.kill(stuck.proc.pid, signal.SIGSTOP)
    try:
        with llmlog.context(session_id="s0"):
            _ask(client, "held")  # sent to it: it holds a call
        assert not llmlog.flush(timeout=1)
        fd = stuck.out.fileno()
        os.set_blocking(fd, False)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except BlockingIOError:
            pass  # its pipe is full
        finally:
            os.set_blocking(fd, True)
        with llmlog.context(session_id="s1"):
            _ask(client, "other")  # to the other process
        assert not llmlog.flush(timeout=1)  # the stuck one still holds a call
        with llmlog.context(session_id="s1"):
            _ask(client, "again")
        deadline = time.monotonic() + 10
        while llmlog.stats().recorded < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert llmlog.stats().recorded == 3
    finally:
        os.kill(stuck.proc.pid, signal.SIGKILL)
    llmlog.configure(db=db_path)


def test_a_prompt_given_another_version_reaches_the_processes(db_path: str, fake: FakeProvider) -> None:
    llmlog.configure(db=db_path, writer_processes=1)
    client = _client(fake)
    REGISTRY.add("You answer in limericks.", "limerick-bot@v1")
    _ask(client, "first", system="You answer in limericks.")
    assert llmlog.flush(timeout=30)
    REGISTRY.add("You answer in limericks.", "limerick-bot@v2")  # as many versions as before
    _ask(client, "second", system="You answer in limericks.")
    assert llmlog.flush(timeout=30)
    with open_store(db_path) as store:
        versions = {
            c.messages[-1]["content"]: c.prompt_template_version for c in store.iter_calls(CallFilter())
        }
    assert versions == {"first": "limerick-bot@v1", "second": "limerick-bot@v2"}
    llmlog.configure(db=db_path)


def test_a_process_that_never_starts_is_tried_less_and_less_often(
    db_path: str, tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A try that fails holds the writer's thread up to `START_S`; the wait before the next
    (1 s, doubling) counts from its end, so that between tries the calls are written in the
    app. Counted from its start, the tries followed one another (START_S = 20 s: the writer
    waited on them for two minutes, the app's queue filling)."""
    from llmlog.pipeline import processes

    monkeypatch.setattr(processes, "START_S", 1.5)
    hangs, starts = tmp_path / "hangs", tmp_path / "starts"
    hangs.write_text(f"#!/bin/sh\ndate +%s.%N >> {starts}\nexec sleep 60\n")
    hangs.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hangs))
    llmlog.configure(db=db_path, writer_processes=1, exit_timeout_s=2)
    client = _client(fake)
    until = time.monotonic() + 9
    while time.monotonic() < until:
        _ask(client, "meanwhile")
        time.sleep(0.05)
    writer = _writer()
    llmlog.configure(db=db_path)
    tries = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    # Each try takes 1.5 s; after it, 1 s, then 2 s, then 4 s.
    assert len(gaps) >= 2
    for gap, wait in zip(gaps, (1.0, 2.0, 4.0), strict=False):
        assert gap >= 1.5 + wait - 0.2, gaps
    with open_store(db_path) as store:
        assert store.count(CallFilter()) == writer.stats().recorded > 0
    assert writer.stats().dropped == 0


def test_a_prompt_read_for_each_call_is_sent_to_the_processes_once(
    db_path: str, fake: FakeProvider, prompts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app reading the same prompt version for each call adds nothing new: the versions
    known are not sent again with every batch."""
    (prompts_dir / "same-bot").mkdir()
    (prompts_dir / "same-bot" / "v1.txt").write_text("You answer the same way each time.")
    known = REGISTRY.known
    told: list[int] = []

    def counted() -> tuple[int, dict[str, str]]:
        told.append(1)
        return known()

    monkeypatch.setattr(REGISTRY, "known", counted)
    llmlog.configure(db=db_path, writer_processes=1)
    client = _client(fake)
    for i in range(5):
        _ask(client, f"turn {i}", system=str(llmlog.prompt("same-bot")))
        assert llmlog.flush(timeout=30)
    assert len(told) <= 2, "at its start, and once after the first read"
    with open_store(db_path) as store:
        assert {c.prompt_template_version for c in store.iter_calls(CallFilter())} == {"same-bot@v1"}
    llmlog.configure(db=db_path)


def test_a_process_that_keeps_ending_young_is_started_less_and_less_often(
    db_path: str, fake: FakeProvider
) -> None:
    """One that ends soon after it started (a call that crashes it, say) waits twice as long
    each time before the next starts; the calls meanwhile are written in the app, none lost."""
    llmlog.configure(db=db_path, writer_processes=1)
    client = _client(fake)
    waits = []
    for round_ in range(2):
        _ask(client, f"before {round_}")
        assert llmlog.flush(timeout=30)
        (pid,) = _pids()
        os.kill(pid, signal.SIGKILL)
        processes = _writer()._processes
        assert processes is not None
        deadline = time.monotonic() + 10
        while not processes._slots[0].ended and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.02)
        _ask(client, f"while it waits {round_}")  # written in the app
        assert llmlog.flush(timeout=30)
        waits.append(processes._wait[0])
        time.sleep(waits[-1] + 0.2)
    assert waits == [2.0, 4.0]
    stats = llmlog.stats()
    assert (stats.recorded, stats.dropped) == (4, 0)
    llmlog.configure(db=db_path)


def test_processes_keep_their_memory_for_the_next_batch(
    db_path: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's malloc keeps the megabytes of one batch for the next (page faults were a
    sixth of its cost a call), unless the app's environment says otherwise."""
    monkeypatch.setenv("MALLOC_TOP_PAD_", "12345")
    llmlog.configure(db=db_path, writer_processes=1)
    _ask(_client(fake), "stored")
    assert llmlog.flush(timeout=30)
    (pid,) = _pids()
    environ = dict(
        line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in line
    )
    assert environ["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2**20)
    assert environ["MALLOC_TRIM_THRESHOLD_"] == str(64 * 2**20)
    assert environ["MALLOC_TOP_PAD_"] == "12345"
    llmlog.configure(db=db_path)
