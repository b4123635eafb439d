"""Several processes receiving OTLP into one store (`llmlog serve` workers, servers behind a
load balancer on PostgreSQL): each request's ingest reads the store, then writes, under a
lock among the processes (`Store.ingest_lock`, taken by `Web.ingesting`), so the spans of one
call sent to two of them at once still make one call, with the content of both. In real
processes (forked from a clean one), through the code the server runs for a request (`receive_spans`,
`receive_events`), on SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import psycopg
import pytest

from llmlog.capture import otlp as otlp_in
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.pricing import Pricer
from llmlog.store import open_store
from llmlog.store.clickhouse.store import ClickHouseStore
from llmlog.store.filelock import FileLock
from llmlog.web.ingest import receive_events, receive_spans
from llmlog.web.state import Web, environment
from tests.backends import Backend

JSON = "application/json"
NOW = time.time_ns()
# Processes of their own, as server workers are, forked from a server process that imported
# this module once (not from pytest's, whose threads and connections a fork would copy).
SPAWN = multiprocessing.get_context("forkserver")
SPAWN.set_forkserver_preload([__name__])


# Not `tests.test_otlp`'s helpers: importing that module takes seconds (it imports the SDKs),
# and the process the receivers are forked from imports this one.
def _attrs(**values: str | int) -> list[dict[str, object]]:
    return [
        {
            "key": k.replace("__", "."),
            "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v},
        }
        for k, v in values.items()
    ]


def _trace(r: int) -> str:
    return f"{r + 1:032x}"


def _wrapper(r: int) -> dict[str, object]:
    """A framework's LLM span (OpenInference) of call `r`: the content, no response id."""
    start = NOW + r * 10**9
    return {
        "traceId": _trace(r), "spanId": f"{r + 1:015x}a", "name": "llm", "kind": 1,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 500_000_000),
        "attributes": _attrs(openinference__span__kind="LLM", llm__provider="openai", llm__system="openai",
                             llm__model_name="gpt-4.1-mini",
                             llm__input_messages__0__message__role="user",
                             llm__input_messages__0__message__content=f"question {r}",
                             llm__output_messages__0__message__role="assistant",
                             llm__output_messages__0__message__content=f"answer {r}"),
    }  # fmt: skip


def _sdk(r: int) -> dict[str, object]:
    """The SDK's own span of call `r`, under the wrapper: its response id and usage."""
    start = NOW + r * 10**9 + 10_000_000
    return {
        "traceId": _trace(r), "spanId": f"{r + 1:015x}b", "parentSpanId": f"{r + 1:015x}a",
        "name": "chat", "kind": 3,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 480_000_000),
        "attributes": _attrs(gen_ai__operation__name="chat", gen_ai__provider__name="openai",
                             gen_ai__request__model="gpt-4.1-mini", gen_ai__response__model="gpt-4.1-mini",
                             gen_ai__response__id=f"chatcmpl-{r}", gen_ai__usage__input_tokens=11,
                             gen_ai__usage__output_tokens=7),
    }  # fmt: skip


def _events(r: int) -> dict[str, object]:
    """The log events carrying call `r`'s question, for the SDK span (content in events only)."""
    return {
        "resourceLogs": [{"scopeLogs": [{"logRecords": [{
            "traceId": _trace(r), "spanId": f"{r + 1:015x}b", "eventName": "gen_ai.user.message",
            "body": {"kvlistValue": {"values": [
                {"key": "content", "value": {"stringValue": f"question {r}"}}]}},
        }]}]}]
    }  # fmt: skip


def _traces(*spans: dict[str, object]) -> tuple[str, bytes]:
    return "traces", json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}).encode()


def _logs(r: int) -> tuple[str, bytes]:
    return "logs", json.dumps(_events(r)).encode()


def _receiver(url: str) -> tuple[Web, Intake]:
    """What `llmlog serve` has for the requests: its store, under its lock; its intake."""
    settings = Settings()
    return Web(open_store(url), threading.Lock(), environment()), Intake(settings, Pricer(settings.prices))


def _receive(web: Web, intake: Intake, decoded: tuple[str, list[Any]]) -> None:
    kind, items = decoded
    refused = receive_spans(web, intake, items) if kind == "traces" else receive_events(web, intake, items)
    assert not refused, refused


def _decode(kind: str, body: bytes) -> tuple[str, list[Any]]:
    """As the server decodes a request, before it takes any lock."""
    items, rejected = (otlp_in.decode_spans if kind == "traces" else otlp_in.decode_logs)(body, JSON)
    assert not rejected, rejected
    return kind, items


# ---------------------------------------------------------------- the processes


def _waiting_receiver(url: str, request: tuple[str, bytes], ready: Event, finished: Any) -> None:
    web, intake = _receiver(url)
    decoded = _decode(*request)
    ready.set()
    _receive(web, intake, decoded)
    finished.value = time.time()
    web.close()


# How long the racing receivers take between reading the store and writing it: longer than a
# quick machine would, so that two ingests not kept apart both read before either writes,
# every time rather than now and then.
BEFORE_WRITING_S = 0.01


def _slow_to_write(method: Callable[..., Any]) -> Callable[..., Any]:
    def later(*args: Any, **kwargs: Any) -> Any:
        time.sleep(BEFORE_WRITING_S)
        return method(*args, **kwargs)

    return later


def _racing_receiver(url: str, requests: list[tuple[str, bytes]], barrier: Barrier) -> None:
    web, intake = _receiver(url)
    # The first write of a request's ingest: a call, or events kept for a span not come yet.
    web.store.insert = _slow_to_write(web.store.insert)  # type: ignore[method-assign]
    web.store.insert_span_events = _slow_to_write(web.store.insert_span_events)  # type: ignore[method-assign]
    for request in requests:
        decoded = _decode(*request)
        barrier.wait(timeout=60)  # the other process's request for the same call, at once
        _receive(web, intake, decoded)
    web.close()


def _run(*processes: Any) -> None:
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
        assert p.exitcode == 0, p.exitcode


def _count(backend: Backend, table: str) -> int:
    return int(backend.sql(f"SELECT count(*) FROM {table}")[0][0])


def _waited_for(backend: Backend) -> bool:
    """Whether a process waits for the store's ingest lock: a waiter on the lock file, as
    the kernel lists them (SQLite); an advisory lock of that key not granted (PostgreSQL)."""
    if backend.kind == "sqlite":
        inode = os.stat(backend.url + "-ingest.lock").st_ino
        return any(
            "->" in line and f":{inode} " in line for line in Path("/proc/locks").read_text().splitlines()
        )
    rows = backend.sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND objid = (hashtext(current_schema() || '.llmlog.ingest')::bigint & 4294967295)::oid"
    )
    return int(rows[0][0]) > 0


def _until_waited_for(backend: Backend, done: Callable[[], bool]) -> None:
    """Until the ingest that `done` says the end of waits for the lock; failing if it ends
    first, having not."""
    deadline = time.monotonic() + 60
    while not _waited_for(backend):
        assert not done(), "stored without waiting for the lock"
        assert time.monotonic() < deadline, "the ingest neither waited for the lock nor ended"
        time.sleep(0.005)


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("request_", [_traces(_sdk(0)), _logs(0)], ids=["traces", "logs"])
def test_an_ingest_waits_while_another_process_holds_the_lock(
    backend: Backend, request_: tuple[str, bytes]
) -> None:
    table = "call_data" if request_[0] == "traces" else "span_events"
    ready, finished = SPAWN.Event(), SPAWN.Value("d", 0.0)
    store = backend.open()
    try:
        receiver = SPAWN.Process(target=_waiting_receiver, args=(backend.url, request_, ready, finished))
        with store.ingest_lock():
            receiver.start()
            assert ready.wait(60)
            _until_waited_for(backend, lambda: finished.value != 0.0)
            assert finished.value == 0.0 and _count(backend, table) == 0
            released = time.time()
        receiver.join(120)
        assert receiver.exitcode == 0, receiver.exitcode
        assert finished.value >= released and _count(backend, table) == 1
        # Let go of: this process takes it again at once.
        with store.ingest_lock():
            pass
    finally:
        store.close()


ROUNDS = 20  # calls: half of them as two spans, half as a span and its events


def test_one_call_sent_to_two_processes_at_once_is_stored_once_with_both_parts(backend: Backend) -> None:
    """Each round, a call in two requests, one to each process at once: for half the calls
    the wrapper span and the SDK's span (either process getting either); for the other half
    the SDK's span (no content) and the log events with the content. Each call is one row,
    with its question, and no event is left waiting."""
    backend.open().close()  # made and migrated before the processes race to
    barrier = SPAWN.Barrier(2)
    half = ROUNDS // 2
    first = [_traces(_wrapper(r)) if r % 2 else _traces(_sdk(r)) for r in range(half)]
    second = [_traces(_sdk(r)) if r % 2 else _traces(_wrapper(r)) for r in range(half)]
    first += [_traces(_sdk(r)) for r in range(half, ROUNDS)]
    second += [_logs(r) for r in range(half, ROUNDS)]
    _run(
        SPAWN.Process(target=_racing_receiver, args=(backend.url, first, barrier)),
        SPAWN.Process(target=_racing_receiver, args=(backend.url, second, barrier)),
    )
    with backend.open() as store:
        calls = list(store.iter_calls(CallFilter()))
    by_trace: dict[str | None, list[Any]] = {}
    for call in calls:
        by_trace.setdefault(call.trace_id, []).append(call)
    twice = sorted(trace or "" for trace, held in by_trace.items() if len(held) > 1)
    rounds = {call.id: int(call.trace_id or "0", 16) - 1 for call in calls}  # as `_trace` names them
    lacking = sorted(rounds[c.id] for c in calls if f"question {rounds[c.id]}" not in json.dumps(c.messages))
    waiting = _count(backend, "span_events")
    assert (len(calls), len(twice), lacking, waiting) == (ROUNDS, 0, [], 0), (
        f"{len(calls)} calls for {ROUNDS}, {len(twice)} stored twice;"
        f" without their question: {lacking}; {waiting} events left waiting"
    )


# ---------------------------------------------------------------- the locks themselves


def test_the_sqlite_lock_file_is_beside_the_store_and_no_more_open(tmp_path: Path) -> None:
    for mode in (0o600, 0o640):
        db = tmp_path / f"calls-{mode:o}.db"
        with open_store(str(db)) as store:
            db.chmod(mode)
            with store.ingest_lock():
                pass
        lock = Path(str(db) + "-ingest.lock")
        assert stat.S_IMODE(lock.stat().st_mode) == mode
    with open_store(":memory:") as store, store.ingest_lock():  # nothing beside it to take
        pass


def test_the_postgres_lock_is_let_go_when_the_ingest_fails(pg_url: str) -> None:
    with open_store(pg_url) as store, psycopg.connect(pg_url, autocommit=True) as other:

        def free() -> bool:
            row = other.execute(
                "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.llmlog.ingest'))"
            ).fetchone()
            assert row is not None
            if row[0]:
                other.execute("SELECT pg_advisory_unlock(hashtext(current_schema() || '.llmlog.ingest'))")
            return bool(row[0])

        with pytest.raises(RuntimeError), store.ingest_lock():
            assert not free()
            raise RuntimeError("the ingest failed")
        assert free()
        # Its connection lost mid-ingest: the session, and the lock, end with it; the next
        # ingest takes it on a new connection.
        with pytest.raises(psycopg.OperationalError), store.ingest_lock():
            pid = store.conn.info.backend_pid
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
            store.conn.execute("SELECT 1")
        assert free()
        with store.ingest_lock():
            assert not free()
        assert free()


def test_the_server_takes_the_lock_for_otlp_and_not_to_check_a_token(backend: Backend) -> None:
    """Through `llmlog serve`'s routes: while another process holds the lock, a request with
    a wrong token is still refused at once (the check takes no lock of the store's), and a
    span request waits until the lock is let go of, then is stored."""
    import httpx2 as httpx

    from tests.webui import Running

    token = "ingest-token"
    request_ = _traces(_sdk(0))[1]
    with Running(backend, ingest_token=token) as running, backend.open() as other:

        def post(bearer: str) -> httpx.Response:
            headers = {"Content-Type": JSON, "Authorization": f"Bearer {bearer}"}
            return httpx.post(running.base + "/v1/traces", content=request_, headers=headers, timeout=30)

        answered: list[tuple[float, int]] = []

        def send() -> None:
            status = post(token).status_code
            answered.append((time.time(), status))

        sender = threading.Thread(target=send)
        with other.ingest_lock():
            assert post("not-the-token").status_code == 401
            sender.start()
            _until_waited_for(backend, lambda: bool(answered))
            assert not answered and _count(backend, "call_data") == 0
            released = time.time()
        sender.join(30)
        assert answered and answered[0][0] >= released and answered[0][1] == 200
        assert _count(backend, "call_data") == 1


def _taken(path: str) -> bool:
    """Whether another holds the flock on `path` (tried from a descriptor of our own)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_clickhouse_servers_lock_is_one_file_per_store_in_the_temp_dir() -> None:
    """Named by the URL without its password (two servers given different passwords for the
    same store share it), for this user, and not in the name."""
    stores = []
    for password in ("first-secret", "second-secret"):
        store = ClickHouseStore.__new__(ClickHouseStore)  # no server here to open it on
        store._url, store._ingesting = f"clickhouse://llm:{password}@ch.internal:8123/llmlog", None
        stores.append(store)
    with stores[0].ingest_lock():
        held = stores[0]._ingesting
        assert held is not None
        assert Path(held.path).parent == Path(tempfile.gettempdir()) and "secret" not in held.path
        assert _taken(held.path)
    assert not _taken(held.path)
    with stores[1].ingest_lock():
        assert stores[1]._ingesting is not None and stores[1]._ingesting.path == held.path
        assert _taken(held.path) and stat.S_IMODE(os.stat(held.path).st_mode) == 0o600
    for store in stores:
        assert store._ingesting is not None
        store._ingesting.close()
    os.unlink(held.path)


def test_a_lock_file_someone_else_made_or_a_link_is_not_used(tmp_path: Path) -> None:
    link = tmp_path / "link.lock"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError), FileLock(str(link), owned=True).held():
        pass
    assert not (tmp_path / "elsewhere").exists()
    if os.geteuid() == 0:  # only root can make a file of another user's
        theirs = tmp_path / "theirs.lock"
        theirs.touch(0o666)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(PermissionError), FileLock(str(theirs), owned=True).held():
            pass


def test_a_lock_file_opened_before_a_fork_is_not_shared_with_the_child(tmp_path: Path) -> None:
    """A server that forks its workers after opening the store: each worker's lock is its
    own, not the parent's open file (with which a flock would be shared)."""
    lock = FileLock(str(tmp_path / "calls.db-ingest.lock"))
    with lock.held():
        pid = os.fork()
        if pid == 0:  # the child: the lock is the parent's, so not to be had here
            try:
                fcntl.flock(lock._open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lock.close()
