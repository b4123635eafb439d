"""Whether reading stalls writing: the collector's `POST /v1/calls` latency with the SQL
console idle, then while the console runs the slowest query it allows (one that runs until
the console's time limit stops it), side by side, against `llmlog serve` in a thread.

Before pages had connections of their own, one store connection under one lock served every
page and the collector's writes: a batch arriving during a 5 s console query waited for it."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx2 as httpx
import uvicorn

from llmlog.analysis.dashboard import CONSOLE_TIMEOUT_S
from llmlog.store import open_store
from llmlog.web import create_app

GOAL_S = 0.1  # a batch's answer beside the console's slowest query
BATCH = 10  # records per POST, as a collector client sends them


def slowest_query(count_to: int | None) -> str:
    """A query that counts for ever (stopped by the console's limit), or to `count_to`."""
    bound = "" if count_to is None else f" WHERE x < {int(count_to)}"
    return f"WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n{bound}) SELECT COUNT(*) FROM n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(url: str) -> Iterator[str]:
    app = create_app(lambda: open_store(url))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _batch() -> bytes:
    return json.dumps(
        [
            {
                "id": str(uuid.uuid4()),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "feature": "bench-console",
                "input_tokens": 1200,
                "output_tokens": 80,
                "messages": [{"role": "user", "content": f"question {uuid.uuid4()}"}],
            }
            for _ in range(BATCH)
        ]
    ).encode()


def _posts(client: httpx.Client, n: int, until: Callable[[], bool] = lambda: False) -> list[float]:
    """Seconds each of up to `n` POSTs took to be answered (stored), stopping when `until()`."""
    took: list[float] = []
    for _ in range(n):
        if until():
            break
        started = time.perf_counter()
        r = client.post("/v1/calls", content=_batch(), headers={"Content-Type": "application/json"})
        took.append(time.perf_counter() - started)
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/calls answered {r.status_code}: {r.text[:200]}")
    return took


def bench_console_stall(
    kind: str, url: str, posts: int, count_to: int | None, row: Callable[..., None], pct: Callable[..., float]
) -> None:
    """The collector's p99 with the console idle and while it runs its slowest query."""
    query = slowest_query(count_to)
    with _serving(url) as base, httpx.Client(base_url=base, timeout=60) as client:
        _posts(client, 5)  # warm: the first answers open connections
        idle = _posts(client, posts)
        done = threading.Event()
        answered: list[int] = []

        def console() -> None:
            with httpx.Client(base_url=base, timeout=60) as reader:
                answered.append(reader.get("/sql", params={"q": query}).status_code)
            done.set()

        reading = threading.Thread(target=console, daemon=True)
        reading.start()
        time.sleep(0.2)  # the query under way
        busy = _posts(client, posts, until=done.is_set)
        reading.join(CONSOLE_TIMEOUT_S * 4)
    if not busy:
        row(f"{kind}: collector ingest p99, console idle vs running its slowest query", "not measured")
        return
    idle_p99, busy_p99 = pct(idle, 0.99), pct(busy, 0.99)
    row(
        f"{kind}: collector ingest p99, console idle vs running its slowest query",
        f"{idle_p99 * 1000:.1f} vs {busy_p99 * 1000:.1f} ms ({len(busy)} batches of {BATCH})",
        f"≤ {GOAL_S * 1000:.0f} ms beside the console",
        busy_p99 <= GOAL_S,
    )
