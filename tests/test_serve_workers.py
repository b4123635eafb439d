"""`llmlog serve --workers N`: real processes on one port, over a SQLite file and PostgreSQL,
driven through the collector, the provider proxy (the real SDKs, the fake provider behind)
and the pages; then stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx2 as httpx
import openai
import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.operations import accounts
from llmlog.store import open_store
from llmlog.web.throttle import SignIns, cores
from llmlog.web.workers import ENV, STARTUP_FAILURE, Served
from llmlog.web.workers import app as worker_app
from tests.backends import Backend

WORKERS = 2
PASSWORD = "correct horse battery"


class Serving:
    """`llmlog serve --workers N --port 0` in a process of its own; the URL as it printed it."""

    def __init__(self, db: str, *args: str, workers: int = WORKERS) -> None:
        command = [sys.executable, "-c", "from llmlog.cli import cli; cli()", "--db", db, "serve"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMLOG_") or k == "LLMLOG_PROMPTS"}
        self.proc = subprocess.Popen(
            [*command, "--port", "0", "--no-retention", "--workers", str(workers), *args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal would give it
        )
        assert self.proc.stderr is not None
        said = []
        for line in self.proc.stderr:
            said.append(line)
            found = re.match(r"llmlog UI on (http://127\.0\.0\.1:\d+)/ ", line)
            if found:
                self.base = found.group(1)
                break
        else:
            raise AssertionError("".join(said))
        # Read on, so that what the server says never fills the pipe and stalls it.
        self.said = said
        threading.Thread(target=lambda: said.extend(self.proc.stderr or ()), daemon=True).start()

    def children(self) -> list[int]:
        pid = self.proc.pid
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def workers(self, expected: int = WORKERS) -> list[int]:
        """The worker processes, once `expected` are started (they are after the URL is
        printed): the children of `llmlog serve` running uvicorn's workers (not
        multiprocessing's resource tracker)."""
        deadline = time.monotonic() + 30
        while True:
            found = [c for c in self.children() if b"spawn_main" in _cmdline(c)]
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone already
        return b""


@pytest.fixture
def serving(backend: Backend) -> Iterator[tuple[Backend, Serving]]:
    running = Serving(backend.url, "--fake-provider")
    try:
        yield backend, running
    finally:
        running.stop()


def record(i: int) -> dict[str, object]:
    return {
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "timestamp": "2026-11-30T12:00:00Z",
        "model": "gpt-4.1",
        "feature": "collector",
        "input_tokens": i,
    }


def test_workers_share_the_port_and_store_each_call_once(serving: tuple[Backend, Serving]) -> None:
    backend, s = serving
    workers = s.workers()
    assert len(workers) == WORKERS, workers
    children = s.children()  # the workers, and multiprocessing's resource tracker
    context = {"llmlog-feature": "proxied"}
    claude = anthropic.Anthropic(
        api_key="sk-ant-x", base_url=s.base + "/anthropic", max_retries=0, default_headers=context
    )
    gpt = openai.OpenAI(
        api_key="sk-x", base_url=s.base + "/openai/v1", max_retries=0, default_headers=context
    )
    ask = [{"role": "user", "content": "hello"}]

    def post(batch: int) -> int:
        # A connection each: the workers take turns accepting them.
        body = "\n".join(json.dumps(record(batch * 10 + i)) for i in range(10))
        headers = {"Content-Type": "application/x-ndjson"}
        answer = httpx.post(s.base + "/v1/calls", content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["stored"])

    def proxied(i: int, slow: bool = False) -> str:
        # A slow one is still being answered when the server is told to stop.
        extra = {"x-fake-latency-ms": "3000"} if slow else None
        if i % 2:
            return claude.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=16,
                messages=ask,
                extra_headers=extra,  # type: ignore[arg-type]
            ).id
        return gpt.chat.completions.create(
            model="gpt-4.1",
            max_tokens=16,
            messages=ask,
            extra_headers=extra,  # type: ignore[arg-type]
        ).id

    with ThreadPoolExecutor(16) as pool:
        stored = pool.map(post, range(30))
        pages = pool.map(lambda p: httpx.get(s.base + p, timeout=60).status_code, ["/", "/dashboard"] * 10)
        assert sum(stored) == 300 and set(pages) == {200}, "".join(s.said)
        answered = list(pool.map(proxied, range(40)))
        slow = [pool.submit(proxied, i, True) for i in range(6)]
        time.sleep(1.0)  # taken by the workers, answered in two seconds
        # Stopped now, each worker answers what it has begun, then stores what it answered
        # (its writer's calls of the last moments too) before it ends.
        s.proc.send_signal(signal.SIGTERM)
        answered += [f.result() for f in slow]
    assert len(set(answered)) == 46
    assert s.stop() == 0
    assert not [pid for pid in workers if _cmdline(pid)]  # waited for by the parent
    # multiprocessing's resource tracker ends on seeing its parent gone.
    deadline = time.monotonic() + 10
    while left := [pid for pid in children if _cmdline(pid)]:
        assert time.monotonic() < deadline, [_cmdline(pid) for pid in left]
        time.sleep(0.05)
    with open_store(backend.url) as store:
        calls = list(store.iter_calls(CallFilter()))
    collected = sorted(c.id for c in calls if c.feature == "collector")
    assert collected == [record(i)["id"] for i in range(300)]  # each once
    assert len([c for c in calls if c.feature == "proxied"]) == 46
    assert len(calls) == 346


@pytest.mark.parametrize("how", ["ctrl-c", "parent killed"])
def test_the_workers_end_with_the_server(how: str, tmp_path: Path) -> None:
    """Ctrl-C reaches every process of the group: each worker stores what it proxied and
    ends, then the parent. A parent killed outright cannot stop its workers: they see it gone
    and stop as on SIGTERM, rather than hold the port and the store forever."""
    db = str(tmp_path / "calls.db")
    s = Serving(db, "--fake-provider")
    workers = s.workers()
    try:
        claude = anthropic.Anthropic(api_key="sk-ant-x", base_url=s.base + "/anthropic", max_retries=0)
        ask = [{"role": "user", "content": "hello"}]
        with ThreadPoolExecutor(4) as pool:
            ids = list(
                pool.map(
                    lambda _: (
                        claude.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=ask).id
                    ),  # type: ignore[arg-type]
                    range(8),
                )
            )
        if how == "ctrl-c":
            os.killpg(s.proc.pid, signal.SIGINT)
            assert s.proc.wait(30) == 0
        else:
            s.proc.kill()
            s.proc.wait(30)
        deadline = time.monotonic() + 15
        while left := [pid for pid in workers if _cmdline(pid)]:
            assert time.monotonic() < deadline, left
            time.sleep(0.05)
    finally:
        s.stop()
        for pid in workers:  # left behind only when this test fails
            if b"spawn_main" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
    with open_store(db) as store:
        assert len({c.id for c in store.iter_calls(CallFilter())}) == len(set(ids)) == 8


def test_sign_in_tries_allowed_in_all_stay_those_of_one_process(tmp_path: Path) -> None:
    """Each worker counts the tries it sees: with the whole budget each, N workers would let
    N times as many passwords be tried."""
    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        accounts.add_user(store, "dan", "debugger", PASSWORD)
    s = Serving(db)
    try:

        def guess(i: int) -> int:
            with httpx.Client(base_url=s.base, timeout=60) as client:  # a connection each
                client.get("/login")
                form = {"name": "dan", "password": f"guess {i}", "csrf": client.cookies["llmlog_csrf"]}
                return client.post("/login", data=form, headers={"Origin": s.base}).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(guess, range(30)))
    finally:
        s.stop()
    assert set(codes) <= {401, 429, 503}, codes
    checked = codes.count(401)
    assert 1 <= checked <= SignIns().limit, codes


def test_the_budgets_are_shared_out_among_the_processes() -> None:
    one, four = SignIns(), SignIns(processes=4)
    assert (one.limit, four.limit) == (10, 2)
    assert four.hashing == max(1, one.hashing // 4) and one.hashing == cores()
    assert four.queue == 4 * four.hashing
    assert SignIns(processes=20).limit == 1  # each process lets one try through, at least


@pytest.mark.parametrize(
    ("db", "said"),
    [
        (":memory:", "a SQLite database in memory lives in one process"),
        ("sqlite://", "a SQLite database in memory lives in one process"),
        ("chdb:///{tmp}/ch", "the embedded ClickHouse engine (chdb) opens its folder in one process only"),
    ],
)
def test_a_store_of_one_process_is_refused_more_workers(db: str, said: str, tmp_path: Path) -> None:
    db = db.format(tmp=tmp_path)
    result = CliRunner().invoke(cli, ["--db", db, "serve", "--port", "0", "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"Error: --workers 2: {said}: serve it with --workers 1, or keep the calls in a SQLite file or"
        " PostgreSQL\n"
    )
    assert not (tmp_path / "ch").exists()  # refused before the engine made anything


def test_a_worker_that_cannot_open_the_store_is_not_started_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store gone between the parent opening it and a worker: the worker says so in one
    line and exits as failing to start, which stops the supervisor (any other exit, and it
    would start the worker again, and again)."""
    served = Served("postgresql://nobody:s3cret@127.0.0.1:1/none", allowed_hosts=("localhost",), fake=None)
    assert Served.loads(served.dumps()) == served
    monkeypatch.setenv(ENV, served.dumps())
    with pytest.raises(SystemExit) as stopped:
        worker_app()
    assert stopped.value.code == STARTUP_FAILURE
    (said,) = [r.getMessage() for r in caplog.records if r.name == "llmlog"]
    assert said.startswith(
        "llmlog serve: a worker cannot open the store postgresql://nobody:***@127.0.0.1:1/none"
    )
    assert "s3cret" not in said
