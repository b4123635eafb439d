"""Server time of each web page on a big store: `llmlog serve` in a thread, real HTTP GETs.

The figure is the app's own time (the `Server-Timing` header it sends), the median of a few
requests after one that warms the caches, as a UI in use would be."""

from __future__ import annotations

import html
import re
import socket
import statistics
import threading
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

import httpx2 as httpx
import uvicorn

from llmlog.core.filters import CallFilter, TraceFilter
from llmlog.store import open_store
from llmlog.web import create_app

GOAL_S = 0.2
# The SQL console runs the user's own query: its time is the query's (here a scan of every
# call), bounded by the console's limit, not a page's goal.
SQL_PAGE = "SQL: calls and cost by model, every call"
_ALERT = re.compile(r'role="alert">([^<]*)<')
_TIMING = re.compile(r"app;dur=([0-9.]+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pages(url: str) -> list[tuple[str, str]]:
    """(name, path) of every page, with values taken from the store."""
    with open_store(url) as store:
        # The newest call with a session and a user: the same pages every run.
        call = next(c for c in store.recent(CallFilter(), 200, brief=True) if c.session_id and c.user_id)
    word = "refund"  # one of the workload's words (llmlog.demo.workload.WORDS)
    by_model = "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model"
    return [
        ("calls, no filter (facets over every call)", "/"),
        ("calls, filter on feature", "/?" + urlencode({"feature": call.feature})),
        ("calls, filter on user, last 7 days", "/?" + urlencode({"user": call.user_id, "since": "7d"})),
        ("calls, free text, last 24 hours", "/?" + urlencode({"q": word, "since": "24h"})),
        ("calls, free text, no time filter", "/?" + urlencode({"q": word})),
        ("one call", f"/calls/{call.id}"),
        ("one session", f"/sessions/{quote(call.session_id or '')}"),
        ("costliest sessions, 7 days", "/sessions"),
        ("costliest sessions, 24 hours", "/sessions?since=24h"),
        ("users, 7 days", "/users"),
        ("one user, 7 days", f"/users/{quote(call.user_id or '')}"),
        ("random sample, last hour", "/sample"),
        ("random sample, last 7 days", "/sample?window=7d"),
        ("dashboard, 30 days", "/dashboard"),
        (SQL_PAGE, "/sql?" + urlencode({"q": by_model})),
    ]


def trace_pages(url: str) -> list[tuple[str, str]]:
    """(name, path) of the traces pages: the list, and one trace as typical as the store has:
    of the newest 200, the one whose spans and calls together are the median."""
    with open_store(url) as store:
        newest = store.list_traces(TraceFilter(), 200)
    if not newest:
        return [("traces, newest 50", "/traces")]
    typical = sorted(newest, key=lambda t: (t.spans + t.calls, t.trace_id))[len(newest) // 2]
    return [
        ("traces, newest 50", "/traces"),
        ("one trace of median size", f"/traces/{quote(typical.trace_id)}"),
    ]


def bench_pages(
    kind: str,
    url: str,
    repeats: int,
    row: Callable[..., None],
    label: str,
    which: Callable[[str], list[tuple[str, str]]] = pages,
) -> None:
    """Each page `which` names on the store at `url`, timed (`Server-Timing`)."""
    app = create_app(lambda: open_store(url))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for name, path in which(url):
                times = []
                for _ in range(repeats + 1):
                    r = client.get(path)
                    m = _TIMING.search(r.headers.get("server-timing", ""))
                    if r.status_code != 200 or m is None:
                        said = _ALERT.search(r.text)  # what a refused page says (the console's error)
                        value = f"HTTP {r.status_code}" + (
                            f": {html.unescape(said.group(1))[:160]}" if said else ""
                        )
                        row(f"{kind}: page {name}, {label} calls", value, "≤ 200 ms", False)
                        break
                    times.append(float(m.group(1)) / 1000)
                else:
                    t = statistics.median(times[1:])
                    figure, value = f"{kind}: page {name}, {label} calls", f"{t * 1000:.1f} ms"
                    if name == SQL_PAGE:
                        row(figure, value, "(the query's own time; 5 s limit)", None)
                    else:
                        row(figure, value, "≤ 200 ms", t <= GOAL_S)
    finally:
        server.should_exit = True
        thread.join(10)
