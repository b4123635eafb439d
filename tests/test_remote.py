"""Remote mode: the SDK ships calls to a real `llmlog serve` (a process of its own) through an
on-disk spool, and loses or repeats none when the collector or its database goes away."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

import llmlog
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.remote import Spool, SpoolFull
from llmlog.pipeline.writer import Writer
from llmlog.store import open_store
from tests.conftest import temp_postgres
from tests.webui import T0, free_port

TOKEN = "remote-s3cret"
LLMLOG = str(Path(sys.executable).parent / "llmlog")  # the command, as installed beside pytest


class Collector:
    """`llmlog serve` in a process of its own, on a fixed port, so it can be killed and
    started again at the same address."""

    def __init__(self, db: str, port: int | None = None) -> None:
        self.db = db
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Collector:
        env = {**os.environ, "LLMLOG_INGEST_TOKEN": TOKEN}
        env.pop("LLMLOG_URL", None)
        self.proc = subprocess.Popen(
            [LLMLOG, "--db", self.db, "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "collector did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(str(tmp_path / "collected.db")).start()
    yield c
    c.stop()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[None]:
    yield
    llmlog.configure(db=str(tmp_path / "unused.db"))  # stops the remote writer


def stored_ids(db: str) -> list[str]:
    """Every stored call id in the order the collector stored them (with repeats, if any)."""
    with open_store(db) as store:
        return [row[0] for row in store.query("SELECT id FROM call_data ORDER BY rowid", limit=10**6).rows]


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def client(fake: FakeProvider) -> anthropic.Anthropic:
    sdk = anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=0)
    return llmlog.wrap(sdk)


def spool_holds_calls(path: Path) -> None:
    """While the collector (or its store) is down, what the app records waits on disk."""
    llmlog.flush(10)
    assert Spool(path, 2**30).waiting() > 0


def make_calls(c: anthropic.Anthropic, n: int, start: int, on: dict[int, object]) -> None:
    """n real SDK calls; at call i, on[i]() happens (a collector killed, restarted…)."""
    for i in range(start, start + n):
        if i in on:
            on[i]()  # type: ignore[operator]
        with llmlog.context(feature="remote", metadata={"i": i}):
            reply = c.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": f"call {i}"}]
            )
        assert reply.content  # the app's call worked, whatever the collector was doing


def collected_in_order(db: str, n: int) -> None:
    """Exactly n calls, each once, stored in the order they were made."""
    with open_store(db) as store:
        order = [
            int(r[0])
            for r in store.query(
                "SELECT json_extract(metadata, '$.i') FROM call_data ORDER BY rowid", limit=10**6
            ).rows
        ]
    assert sorted(order) == list(range(n)), f"{len(order)} stored, {len(set(order))} distinct"
    assert order == list(range(n))


def test_calls_reach_the_collector_through_the_spool(
    collector: Collector, fake: FakeProvider, tmp_path: Path, remote: None
) -> None:
    llmlog.configure(url=collector.url, token=TOKEN, spool=str(tmp_path / "spool"))
    make_calls(client(fake), 30, 0, {})
    assert llmlog.flush(10)
    wait_for(lambda: len(stored_ids(collector.db)) == 30)
    collected_in_order(collector.db, 30)
    with open_store(collector.db) as store:
        c = store.recent(CallFilter(feature="remote"), limit=1)[0]
    assert c.model and c.cost_usd and c.messages  # the whole record, priced
    wait_for(lambda: llmlog.stats().shipped == 30)
    assert not list((tmp_path / "spool").glob("*.ndjson"))


def test_collector_killed_mid_load_loses_and_repeats_nothing(
    collector: Collector, fake: FakeProvider, tmp_path: Path, remote: None
) -> None:
    llmlog.configure(url=collector.url, token=TOKEN, spool=str(tmp_path / "spool"))
    n = 150
    spool = tmp_path / "spool"
    make_calls(
        client(fake), n, 0, {40: collector.kill, 99: lambda: spool_holds_calls(spool), 100: collector.start}
    )
    assert llmlog.flush(10)
    wait_for(lambda: len(stored_ids(collector.db)) >= n)
    time.sleep(0.5)  # anything sent twice would show by now
    collected_in_order(collector.db, n)
    s = llmlog.stats()
    assert s.dropped == 0 and s.failed == 0 and s.recorded == n


def test_database_behind_the_collector_stopped_mid_load(
    fake: FakeProvider, tmp_path: Path, remote: None
) -> None:
    server = temp_postgres()
    collector = Collector(server.url).start()
    try:
        llmlog.configure(url=collector.url, token=TOKEN, spool=str(tmp_path / "spool"))
        n = 120
        spool = tmp_path / "spool"
        make_calls(
            client(fake), n, 0, {30: server.stop, 79: lambda: spool_holds_calls(spool), 80: server.start}
        )
        assert llmlog.flush(10)

        def count() -> int:
            with open_store(server.url) as store:
                return store.count(CallFilter(feature="remote"))

        wait_for(lambda: count() >= n)
        time.sleep(0.5)
        with open_store(server.url) as store:
            rows = store.query(
                "SELECT (metadata->>'i')::int FROM call_data ORDER BY timestamp", limit=10**6
            ).rows
        assert [r[0] for r in rows] == list(range(n))
        assert llmlog.stats().dropped == 0
    finally:
        collector.stop()
        server.destroy()


def test_the_spool_outlives_the_app(collector: Collector, tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    down = Settings(url=f"http://127.0.0.1:{free_port()}", token=TOKEN, spool=spool, exit_timeout_s=0.5)
    first = Writer(down)
    calls = [Call(timestamp=T0, model="m", feature="left-over", metadata={"i": i}) for i in range(40)]
    for c in calls:
        first.submit(c)
    first.close()  # the collector never answered: the calls stay on disk
    s = first.stats()
    assert s.recorded == 40 and s.dropped == 0 and s.shipped == 0
    assert Spool(spool, 2**30).waiting() == 40
    # The app starts again, pointed at a collector that is up: what waited goes first.
    second = Writer(Settings(url=collector.url, token=TOKEN, spool=spool))
    second.submit(Call(timestamp=T0, model="m", feature="left-over", metadata={"i": 40}))
    second.flush(10)
    wait_for(lambda: second.stats().shipped == 41)
    second.close()
    collected_in_order(collector.db, 41)


def test_close_with_the_collector_down_ends_within_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The collector down at exit: shipping gets what is left of the close's timeout, not
    the whole timeout again, so the writer has ended (the spool let go for the next) when
    `close` returns, and has said how many calls wait in the spool."""
    spool = str(tmp_path / "spool")
    writer = Writer(
        Settings(url=f"http://127.0.0.1:{free_port()}", token=TOKEN, spool=spool, exit_timeout_s=2)
    )
    for i in range(20):
        writer.submit(Call(timestamp=T0, model="m", feature="left-over", metadata={"i": i}))
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        writer.close()
    assert writer._thread is not None and not writer._thread.is_alive()
    assert any("20 call(s) wait in the spool" in r.getMessage() for r in caplog.records)
    assert writer.stats().recorded == 20 and Spool(spool, 2**30).waiting() == 20


def test_a_full_spool_drops_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        url=f"http://127.0.0.1:{free_port()}", spool=str(tmp_path / "spool"), spool_max_bytes=20_000,
        batch_size=10, exit_timeout_s=0.2,
    )  # fmt: skip
    writer = Writer(settings)
    with caplog.at_level(logging.WARNING, logger="llmlog"):
        for i in range(200):
            writer.submit(Call(timestamp=T0, model="m", system_prompt="x" * 200, metadata={"i": i}))
        writer.flush(10)
    s = writer.stats()
    writer.close()
    assert s.dropped > 0 and s.recorded + s.dropped == 200
    assert Spool(settings.spool, 2**30).waiting() == s.recorded
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_spool_segments_sort_in_the_order_written_and_respect_the_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=10_000)
    for i in range(5):
        spool.append([Call(timestamp=T0, model=f"m{i}")])
    texts = [seg.read_text() for seg in spool.segments()]
    assert [t.count("\n") for t in texts] == [1] * 5
    assert [f'"m{i}"' in t for i, t in enumerate(texts)] == [True] * 5
    with pytest.raises(SpoolFull):
        spool.append([Call(timestamp=T0, system_prompt="x" * 20_000)])
    assert spool.waiting() == 5  # a batch that does not fit is not kept in part
    spool.remove(spool.segments()[0])
    assert spool.waiting() == 4


def test_half_written_segments_of_a_crash_are_swept(tmp_path: Path) -> None:
    spool_dir = tmp_path / "s"
    spool_dir.mkdir()
    old, fresh = spool_dir / "1-1-00000001.tmp", spool_dir / "2-1-00000002.tmp"
    old.write_bytes(b'{"half')
    fresh.write_bytes(b'{"being written')
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    spool = Spool(spool_dir, 10_000)
    assert not old.exists() and fresh.exists() and spool.waiting() == 0
