"""Reading never stalls writing: while the SQL console runs the slowest query it allows, the
collector still stores batches and pages still answer at once, over real HTTP, on each store
whose readers have connections of their own (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx2 as httpx

from tests.backends import Backend
from tests.webui import Running

TOKEN = "ingest-s3cret"
# Runs until the console's 5 s time limit stops it: the slowest query the console lets run.
FOREVER = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
# Generous for a loaded 2-core machine; a writer held behind the console waits seconds.
PROMPT_S = 1.0


def batch(start: int) -> str:
    return json.dumps(
        [
            {
                "id": str(uuid.UUID(int=start + i + 1)),
                "timestamp": "2026-11-30T12:00:00Z",
                "model": "claude-sonnet-4-5",
                "feature": "beside-the-console",
                "messages": [{"role": "user", "content": f"question {start + i}"}],
            }
            for i in range(5)
        ]
    )


def test_the_slowest_console_query_holds_up_neither_the_collector_nor_pages(backend: Backend) -> None:
    with Running(backend, ingest_token=TOKEN) as c:
        console: dict[str, float | int] = {}

        def slow() -> None:
            started = time.perf_counter()
            r = httpx.get(c.base + "/sql", params={"q": FOREVER}, timeout=30)
            console.update(status=r.status_code, took=time.perf_counter() - started)

        reading = threading.Thread(target=slow)
        reading.start()
        time.sleep(0.5)  # the query under way
        took: list[tuple[str, float]] = []
        for n in range(6):
            started = time.perf_counter()
            r = httpx.post(
                c.base + "/v1/calls",
                content=batch(n * 5),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                timeout=30,
            )
            assert r.status_code == 200 and r.json()["stored"] == 5, r.text
            took.append(("POST /v1/calls", time.perf_counter() - started))
            started = time.perf_counter()
            assert httpx.get(c.base + "/api/calls", timeout=30).status_code == 200
            took.append(("GET /api/calls", time.perf_counter() - started))
        slowest = max(took, key=lambda t: t[1])
        assert slowest[1] < PROMPT_S, f"{slowest[0]} took {slowest[1]:.2f} s beside the console's query"
        # All of it happened while the console's query ran: it is still running.
        assert reading.is_alive(), "the console's query ended before the writes: nothing was shown"
        reading.join(30)
        assert console["status"] == 400 and console["took"] >= 4.0, console
