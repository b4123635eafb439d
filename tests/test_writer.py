"""The host app never breaks: store failures, a full queue, and exit without an explicit flush."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

import llmlog
from llmlog.core.filters import CallFilter
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import open_store


def _client(fake: FakeProvider) -> anthropic.Anthropic:
    return llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))


def _call(client: anthropic.Anthropic) -> anthropic.types.Message:
    return client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )


def test_store_down_then_back(tmp_path: Path, fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the store's directory should be")
    db = str(blocker / "calls.db")
    llmlog.configure(db=db)
    client = _client(fake)
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        for _ in range(3):
            assert isinstance(_call(client), anthropic.types.Message)  # calls succeed while the store is down
        assert not llmlog.flush(timeout=0.5)
        stats = llmlog.stats()
        assert stats.store_errors >= 1 and stats.recorded == 0 and stats.dropped == 0
    assert any("failed" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)
    blocker.unlink()  # the store comes back: the waiting records are delivered
    assert llmlog.flush(timeout=15)
    assert llmlog.stats().recorded == 3
    with open_store(db) as store:
        assert store.count(CallFilter()) == 3
    llmlog.configure(db=str(tmp_path / "other.db"))


def test_queue_overflow_drops_with_count_and_warning(
    tmp_path: Path, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("")
    llmlog.configure(db=str(blocker / "calls.db"), queue_size=2, batch_size=1, exit_timeout_s=0.5)
    client = _client(fake)
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        for _ in range(8):
            _call(client)
        stats = llmlog.stats()
        # The writer holds three batches while retrying (one being stored, one waiting for the
        # store thread, one built); the queue holds 2; the rest are dropped, counted.
        assert stats.dropped >= 3
        assert any("queue full" in r.getMessage() for r in caplog.records)
        started = time.monotonic()
        llmlog.configure(db=str(tmp_path / "other.db"))  # closing gives up after exit_timeout_s
        assert time.monotonic() - started < 5
    assert any("lost" in r.getMessage() for r in caplog.records)


def test_queue_is_bounded_by_bytes_too(
    tmp_path: Path, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Big conversations fill memory long before the record count does: bytes bound it too."""
    blocker = tmp_path / "data"
    blocker.write_text("")
    llmlog.configure(db=str(blocker / "calls.db"), queue_max_bytes=20_000, batch_size=1, exit_timeout_s=0.5)
    client = _client(fake)
    big = "x" * 5_000
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        for _ in range(12):
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": big}]
            )
        stats = llmlog.stats()
        # About 20 kB fit (three of these calls) plus the three batches the writer holds; the
        # rest are counted.
        assert 12 - 7 <= stats.dropped <= 12 - 3, stats
        assert any("queue full" in r.getMessage() and "MiB" in r.getMessage() for r in caplog.records)
    llmlog.configure(db=str(tmp_path / "other.db"))


def test_exit_hook_flushes_a_short_script(tmp_path: Path, fake: FakeProvider) -> None:
    db = tmp_path / "script.db"
    script = textwrap.dedent(
        f"""
        import anthropic, llmlog
        client = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url={fake.anthropic_base_url!r}))
        for i in range(25):
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=[{{"role": "user", "content": str(i)}}]
            )
        # no flush: the exit hook must store everything
        """
    )
    env = {**os.environ, "LLMLOG_DB": str(db)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    with open_store(str(db)) as store:
        assert store.count(CallFilter()) == 25


def test_block_mode_loses_nothing(db_path: str, fake: FakeProvider) -> None:
    llmlog.configure(db=db_path, queue_size=1, on_full="block", batch_size=1)
    client = _client(fake)
    for _ in range(10):
        _call(client)
    assert llmlog.flush(timeout=10)
    assert llmlog.stats().dropped == 0
    with open_store(db_path) as store:
        assert store.count(CallFilter()) == 10
    llmlog.configure(db=db_path)


def test_flush_builds_the_batch_being_gathered_now(db_path: str, fake: FakeProvider) -> None:
    """A flush does not wait for the batch to fill or for the flush interval: the writer
    builds what it has gathered, and `stats` counts nothing queued after."""
    llmlog.configure(db=db_path, flush_interval_s=300)
    client = _client(fake)
    for _ in range(3):
        _call(client)
    assert llmlog.flush(timeout=20)
    stats = llmlog.stats()
    assert (stats.recorded, stats.queued) == (3, 0)
    _call(client)
    assert llmlog.flush(timeout=20) and llmlog.flush(timeout=20)  # once more: nothing to gather
    stats = llmlog.stats()
    assert (stats.recorded, stats.queued) == (4, 0)
    llmlog.configure(db=db_path)


def test_a_flush_behind_a_waiting_mark_is_not_kept_for_the_interval(db_path: str) -> None:
    """A flush whose own mark is not queued, one being queued already (the writer busy
    storing), has what was queued behind that mark built with it, not after the interval."""
    import threading

    from llmlog.core.config import Settings
    from llmlog.pipeline.writer import Writer
    from llmlog.store import Store
    from tests.test_faults import call

    gate = threading.Event()

    def gated(url: str) -> Store:
        store = open_store(url)
        insert = store.insert

        def held(calls):  # type: ignore[no-untyped-def]
            gate.wait(20)
            return insert(calls)

        store.insert = held  # type: ignore[method-assign]
        return store

    settings = Settings(db=db_path, url=None, flush_interval_s=300, batch_size=100)
    writer = Writer(settings, store_factory=gated, one_thread=True)
    try:
        writer.submit(call(0))
        assert not writer.flush(timeout=0.5)  # built, and held in the store
        assert not writer.flush(timeout=0)  # a mark queued while the writer stores
        writer.submit(call(1))  # behind the mark
        done: list[bool] = []
        flusher = threading.Thread(target=lambda: done.append(writer.flush(timeout=10)))
        flusher.start()
        time.sleep(0.2)
        gate.set()
        flusher.join()
        assert done == [True]
        assert writer.stats().recorded == 2
    finally:
        gate.set()
        writer.close(5)


def test_close_wakes_the_writer_waiting_to_retry(tmp_path: Path) -> None:
    """The store down at close: the writer's thread, waiting before its next retry (the
    waits double up to 5 s), is woken to give up, so it has ended when `close` returns."""
    from llmlog.core.config import Settings
    from llmlog.pipeline.writer import Writer
    from tests.test_faults import call

    blocker = tmp_path / "data"
    blocker.write_text("")  # a file where the store's directory should be: it cannot open
    writer = Writer(Settings(db=str(blocker / "calls.db")))
    assert writer.submit(call(0))
    time.sleep(3.5)  # 0.05 s, doubled at each retry: the wait is now past 3 s
    writer.close(0.3)
    assert writer._thread is not None and not writer._thread.is_alive()
    assert (writer.stats().dropped, writer.stats().recorded) == (1, 0)


def test_close_waits_a_second_past_its_timeout_not_the_timeout_again(db_path: str) -> None:
    """A store that hangs (not down: its insert never returns): `close` gives the writer's
    thread a second past its timeout, not as long again."""
    import threading

    from llmlog.core.config import Settings
    from llmlog.pipeline.writer import Writer
    from llmlog.store import Store
    from tests.test_faults import call

    gate = threading.Event()

    def hung(url: str) -> Store:
        store = open_store(url)
        store.insert = lambda calls: gate.wait(30)  # type: ignore[assignment,method-assign,return-value]
        return store

    writer = Writer(Settings(db=db_path), store_factory=hung)
    try:
        assert writer.submit(call(0))
        started = time.monotonic()
        writer.close(3)
        assert time.monotonic() - started < 5.5  # 3 s and 1; it took 6 s (3 and 3 more)
        assert writer.stats().dropped == 1
    finally:
        gate.set()


def test_an_unstorable_call_does_not_block_the_rest(db_path: str, fake: FakeProvider) -> None:
    from datetime import UTC, datetime

    llmlog.configure(db=db_path)
    client = _client(fake)
    loop: dict[str, object] = {}
    loop["self"] = loop  # cannot be serialized at all
    with llmlog.context(metadata={"loop": loop}):
        _call(client)
    with llmlog.context(metadata={"when": datetime(2026, 1, 2, tzinfo=UTC)}):  # not JSON, kept as text
        _call(client)
    _call(client)
    assert llmlog.flush(timeout=10)
    stats = llmlog.stats()
    assert (stats.recorded, stats.failed, stats.dropped) == (2, 1, 0)
    with open_store(db_path) as store:
        calls = list(store.iter_calls(CallFilter()))
    assert len(calls) == 2 and calls[0].metadata is not None
    assert calls[0].metadata["when"] == "2026-01-02T00:00:00+00:00"
    llmlog.configure(db=db_path)


def test_calls_given_up_at_close_are_counted_once(tmp_path: Path, fake: FakeProvider) -> None:
    """The store down at close: what the writer still held is counted dropped by `close`,
    once, even when its thread, asleep between retries past the close, gives up on them later."""
    blocker = tmp_path / "data"
    blocker.write_text("")
    llmlog.configure(db=str(blocker / "calls.db"), exit_timeout_s=0.3)
    client = _client(fake)
    for _ in range(3):
        _call(client)
    writer = llmlog._writer
    assert writer is not None
    time.sleep(4)  # the retries' waits grow past the close's own
    llmlog.configure(db=str(tmp_path / "other.db"))
    thread = writer._thread
    assert thread is not None
    thread.join(10)
    stats = writer.stats()
    assert (stats.dropped, stats.recorded) == (3, 0)
    assert writer.outstanding() == 0


def test_call_ids_are_random_uuids_apart_in_a_forked_child() -> None:
    # Ids come from a pool of random bytes (a read of the kernel's each, which lets go of the
    # interpreter lock, made the writer wait behind a busy app thread for each call); a
    # child forked with the pool half used must not make the ids its parent makes next.
    from llmlog.core.record import new_call_id

    first = [new_call_id() for _ in range(300)]
    assert len(set(first)) == 300 and {uuid.UUID(i).version for i in first} == {4}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(new_call_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_call_id() for _ in range(50)]
    assert len(child) == 50 and not set(child) & set(parent)


def _python(script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by an interpreter of its own, from the checkout (one with no other thread
    whose locks a forked child could need)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_call_ids_differ_in_a_child_forked_without_the_at_fork_hooks() -> None:
    # A process forked by fork(2) itself (uWSGI's workers, without py-call-osafterfork or
    # py-call-uwsgi-fork-hooks) runs no os.register_at_fork hook: were it to keep the pool, it
    # would make its parent's next ids, which the store would drop as already stored.
    script = textwrap.dedent(
        """
        import ctypes, os
        from llmlog.core.record import Call
        Call()  # the pool holds bytes, as a master's that made a call before forking
        read, write = os.pipe()
        pid = ctypes.CDLL(None).fork()
        if pid == 0:
            os.close(read)
            os.write(write, " ".join(Call().id for _ in range(20)).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = pipe.read().split()
        os.waitpid(pid, 0)
        parent = [Call().id for _ in range(20)]
        print(len(child), len(set(child) & set(parent)))
        """
    )
    out = _python(script)
    assert out.stdout.split() == ["20", "0"], out.stdout


def test_ids_after_a_fork_without_hooks_while_the_pool_is_locked() -> None:
    # uWSGI forks with fork(2), running no os.register_at_fork hook: the pool's lock, held by
    # one of the parent's threads at the fork, would be held for good in the child. Forked
    # from an interpreter of its own, with no other thread whose locks the child could need.
    script = textwrap.dedent(
        """
        import ctypes, os, signal
        from llmlog.core import record
        ids = record.new_call_id
        ids()
        ids._lock.acquire()  # another thread of the parent's, in the middle of an id
        pid = ctypes.PyDLL(None).fork()  # the interpreter lock kept across fork(2)
        if pid == 0:  # the child: the hooks did not run
            signal.alarm(3)  # the child is killed if it hangs
            record.new_call_id()
            os._exit(0)
        ids._lock.release()
        _, status = os.waitpid(pid, 0)
        print("hung" if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
        """
    )
    out = _python(script)
    assert out.stdout.split() == ["0"], "the child hung on the parent's lock"


class Failed(BaseException):
    """What a test runner raises to fail a test (pytest's outcomes are BaseExceptions)."""


class Raising(logging.Handler):
    """An app's log handler that fails on every line (a sink of its own that is down; a test
    runner's that fails the test), without the `handleError` that Python's own fall back on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.lines = 0
        self.error = error

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        raise self.error


@pytest.fixture(
    params=[OSError("the app's log sink is down"), Failed("logged: a line")], ids=["OSError", "Failed"]
)
def raising_log(request: pytest.FixtureRequest) -> Iterator[Raising]:
    handler = Raising(request.param)
    logger = logging.getLogger("llmlog")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_a_log_handler_that_raises_does_not_stop_recording(
    tmp_path: Path, fake: FakeProvider, raising_log: Raising
) -> None:
    """What the writer logs (the store down and retried, a call that cannot be stored) goes
    to the app's handlers. One that raises used to end the writer's threads at the first
    line: nothing after it was stored, and `flush` never returned true."""
    blocker = tmp_path / "data"
    blocker.write_text("a file where the store's directory should be")
    db = str(blocker / "calls.db")
    llmlog.configure(db=db)
    client = _client(fake)
    loop: dict[str, object] = {}
    loop["self"] = loop  # cannot be serialized: the call is refused alone, and that is logged
    with llmlog.context(metadata={"loop": loop}):
        _call(client)
    for _ in range(3):
        _call(client)
    assert not llmlog.flush(timeout=0.5)  # the store is down: retried, and that is logged
    blocker.unlink()
    assert llmlog.flush(timeout=15)
    stats = llmlog.stats()
    assert (stats.recorded, stats.failed, stats.dropped) == (3, 1, 0), stats
    assert raising_log.lines >= 2  # the lines were offered to the handler, and lost there
    with open_store(db) as store:
        assert store.count(CallFilter()) == 3
    llmlog.configure(db=str(tmp_path / "other.db"))


# What ends a program or a test (KeyboardInterrupt, a test runner's failure) is the app's to
# see on its own thread: only an Exception stays out of its calls.
@pytest.mark.parametrize(
    "raising_log", [OSError("the app's log sink is down")], indirect=True, ids=["OSError"]
)
def test_a_log_handler_that_raises_does_not_reach_the_apps_calls(
    tmp_path: Path, fake: FakeProvider, raising_log: Raising
) -> None:
    """A full queue is logged on the app's own thread, in the SDK call that found it full:
    a handler that raises there used to raise out of the SDK call."""
    blocker = tmp_path / "data"
    blocker.write_text("")
    llmlog.configure(db=str(blocker / "calls.db"), queue_size=2, batch_size=1, exit_timeout_s=0.5)
    client = _client(fake)
    for _ in range(8):
        assert isinstance(_call(client), anthropic.types.Message)
    assert llmlog.stats().dropped >= 3
    assert raising_log.lines >= 1
    llmlog.configure(db=str(tmp_path / "other.db"))
