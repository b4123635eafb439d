"""The writer's processes (`writer_processes`) against what an app may hand them: every call
stored once or refused alone, nothing lost that the writer in the app would have stored."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import anthropic
import pytest

import llmlog
from llmlog.core.filters import CallFilter
from llmlog.core.prompts import Prompt
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import open_store
from tests.test_writer_processes import a_fork_alive, closing_took


def _client(fake: FakeProvider) -> anthropic.Anthropic:
    return llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))


def _ask(client: anthropic.Anthropic, text: str) -> None:
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": text}]
    )


def test_a_prompt_version_in_a_span_or_metadata_loses_nothing(db_path: str, fake: FakeProvider) -> None:
    """`llmlog.prompt(...)` gives a `Prompt`, a str subclass of llmlog's own, which an app may
    well keep in a span's attributes or a call's metadata. It is sent to a writer process
    (its module is llmlog's) but cannot be rebuilt there (`Prompt.__new__` needs its name
    and version): the whole batch was counted failed, the plain call sent beside it too.
    Without processes all three calls and the span are stored."""
    llmlog.configure(db=db_path, writer_processes=1, flush_interval_s=0.5)
    client = _client(fake)
    system = Prompt("Be brief.", "support-bot", "v1")
    with llmlog.span("answer", prompt=system):
        _ask(client, "in the span")
    with llmlog.context(metadata={"prompt": system}):
        _ask(client, "with the prompt in its metadata")
    _ask(client, "plain")
    assert llmlog.flush(timeout=20)
    stats = llmlog.stats()
    assert (stats.recorded, stats.spans, stats.failed, stats.dropped) == (3, 1, 0, 0), stats
    llmlog.configure(db=db_path)


class _Refusal(Exception):
    """Pickles, but does not unpickle: its arguments are not what `__init__` takes."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")


def test_an_item_a_process_cannot_read_is_refused_alone(
    db_path: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should an item reach a process that cannot rebuild it, it alone is refused: the
    process read a batch as one object, and counted every call of the batch failed, the
    calls sent with it (any session's) lost for one bad item."""
    from llmlog.pipeline import processes

    monkeypatch.setattr(processes, "_SENDABLE", processes._SENDABLE | {"tests"})
    llmlog.configure(db=db_path, writer_processes=1, flush_interval_s=0.5)
    client = _client(fake)
    with llmlog.context(metadata={"e": _Refusal(7, "no")}):
        _ask(client, "unreadable")
    for i in range(3):
        with llmlog.context(session_id=f"s{i}"):
            _ask(client, f"beside it {i}")
    assert llmlog.flush(timeout=20)
    stats = llmlog.stats()
    assert (stats.recorded, stats.failed, stats.dropped) == (3, 1, 0), stats
    llmlog.configure(db=db_path)


def test_a_fork_while_a_process_starts_does_not_hold_it(db_path: str, fake: FakeProvider) -> None:
    """A fork of the app (a worker it starts) made while a writer process is starting, the
    app's first call on another thread: the fork's copy of the pipe into the process is not
    closed (only those of processes already started are), so closing the writer waited its
    whole exit timeout for the process to end, then killed it."""
    llmlog.configure(db=db_path, writer_processes=1, exit_timeout_s=5)
    client = _client(fake)
    first = threading.Thread(target=_ask, args=(client, "first"))
    first.start()
    deadline = time.monotonic() + 15
    while True:  # the writer's thread starting its process
        writer = llmlog._writer
        processes = None if writer is None else writer._processes
        if processes is not None and processes._starting:
            break
        assert time.monotonic() < deadline, "the process was never seen starting"
        time.sleep(0.001)
    with a_fork_alive():
        first.join()
        assert llmlog.flush(timeout=20)
        (process,) = [p for p in processes._slots if p is not None]
        took = closing_took(db_path)
    assert process.proc.returncode == 0, "it ended, not killed"
    assert took < 3


def test_a_relative_store_stays_where_it_was_after_the_app_changes_directory(
    tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db="calls.db"`, the app changing its working directory after its first calls (a
    daemon's `chdir("/")`, a job's own folder): a writer process started again after one
    died opens the store afresh from the new directory, as does the writer in the app for
    the calls it writes meanwhile, and the calls after go to another database. Without
    processes they all go to the store the first call opened."""
    from llmlog.pipeline import processes

    monkeypatch.setattr(processes, "RESTART_S", 0.05)  # started again without a second's wait
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    monkeypatch.chdir(first)
    llmlog.configure(db="calls.db", writer_processes=1)
    client = _client(fake)
    _ask(client, "before")
    assert llmlog.flush(timeout=20)
    writer = llmlog._writer
    assert writer is not None and writer._processes is not None
    (process,) = [p for p in writer._processes._slots if p is not None]
    monkeypatch.chdir(later)
    os.kill(process.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not process.ended:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for text in ("while it is started again", "after"):
        time.sleep(0.2)
        _ask(client, text)
        assert llmlog.flush(timeout=20)
    llmlog.configure(db=str(tmp_path / "other.db"))
    assert not (later / "calls.db").exists()
    with open_store(str(first / "calls.db")) as store:
        assert store.count(CallFilter()) == 3


class _FailsTheTest(logging.Handler):
    """A test suite's handler that fails the test on any error logged: `pytest.fail` raises
    an exception that is not an `Exception` (pytest's outcomes derive from BaseException)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        pytest.fail(f"logged: {record.getMessage()}")


def test_a_handler_that_fails_the_test_does_not_stop_the_processes_reports(
    db_path: str, fake: FakeProvider
) -> None:
    """A refused call is logged in its writer process, and the line written by the app's
    logging on the thread that reads the process's reports. The recording path's log keeps
    only an `Exception` from its handlers: a test runner's handler that fails the test
    ended that thread, after which nothing the process stored was heard of and `flush`
    never returned true."""
    handler = _FailsTheTest()
    logger = logging.getLogger("llmlog")
    logger.addHandler(handler)
    try:
        llmlog.configure(db=db_path, writer_processes=1, exit_timeout_s=2)
        client = _client(fake)
        loop: dict[str, object] = {}
        loop["self"] = loop  # cannot be serialized: refused in the process, and logged
        with llmlog.context(metadata={"loop": loop}):
            _ask(client, "refused")
        for i in range(3):
            _ask(client, f"stored {i}")
        assert llmlog.flush(timeout=5), llmlog.stats()
        stats = llmlog.stats()
        assert (stats.recorded, stats.failed, stats.dropped) == (3, 1, 0), stats
        assert handler.lines >= 1
    finally:
        logger.removeHandler(handler)
        llmlog.configure(db=db_path)


def test_a_module_of_the_apps_folder_does_not_keep_a_process_from_starting(
    tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's working directory holds a file named as a module llmlog imports (a script of
    the app's, `orjson.py`). Started with `-m`, a process put that directory first on its path,
    imported the app's file instead and never started: its calls were written in the app."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "orjson.py").write_text("raise ImportError('the app's own orjson.py')\n")
    llmlog.configure(db=str(tmp_path / "calls.db"), writer_processes=1)
    _ask(_client(fake), "through the process")
    assert llmlog.flush(timeout=20)
    writer = llmlog._writer
    assert writer is not None and writer._processes is not None
    assert [p for p in writer._processes._slots if p is not None and not p.ended], "no process started"
    assert llmlog.stats().recorded == 1
    llmlog.configure(db=str(tmp_path / "other.db"))
