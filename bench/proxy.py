"""The provider proxy: Anthropic calls straight to the fake provider and through a real
`llmlog serve`'s `/anthropic` proxy, interleaved, for the latency it adds (and the delay it
adds to a stream's first token); then the rate it forwards and records under load (wrk, 16
connections), beside the fake provider's own rate, and whether every call answered was
stored.

The fake provider runs in a process of its own, as a real provider would; the server in
another, with `--workers` 1 or more. Each request carries a 10 KB prompt.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from bench.otlp import _proc, serve

PROMPT = ("Summarize the following notes for the weekly report. " * 200)[:10_000]
BODY = json.dumps(
    {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}
).encode()
STREAM = json.dumps({**json.loads(BODY), "stream": True}).encode()
HEADERS = {"content-type": "application/json", "x-api-key": "k", "anthropic-version": "2023-06-01"}


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    u = urlsplit(url)
    return http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60), u.path.rstrip("/")


def _call(conn: http.client.HTTPConnection, path: str) -> float:
    """Seconds from sending a request to the last byte of its answer."""
    t = time.perf_counter()
    conn.request("POST", path + "/v1/messages", BODY, HEADERS)
    answer = conn.getresponse()
    answer.read()
    took = time.perf_counter() - t
    if answer.status != 200:
        raise RuntimeError(f"{answer.status} from {path or 'the fake provider'}")
    return took


def _first_token(conn: http.client.HTTPConnection, path: str) -> float:
    """Seconds from sending a streamed request to its first content event."""
    t = time.perf_counter()
    conn.request("POST", path + "/v1/messages", STREAM, HEADERS)
    answer = conn.getresponse()
    took = None
    while line := answer.readline():
        if took is None and line.startswith(b"event: content_block_delta"):
            took = time.perf_counter() - t
    if answer.status != 200 or took is None:
        raise RuntimeError(f"{answer.status} from {path or 'the fake provider'}: no content event")
    return took


def interleaved(
    direct: str, proxied: str, n: int, measure: Callable[..., float]
) -> tuple[list[float], list[float]]:
    """`n` calls each way, alternating which goes first, each on its own kept-alive connection."""
    a, a_path = _connection(direct)
    b, b_path = _connection(proxied)
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(n):
        order = ((0, a, a_path), (1, b, b_path)) if i % 2 else ((1, b, b_path), (0, a, a_path))
        for which, conn, path in order:
            times[which].append(measure(conn, path))
    a.close()
    b.close()
    return times


_LUA = """wrk.method = "POST"
wrk.body = io.open("{body}", "rb"):read("*a")
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "k"
wrk.headers["anthropic-version"] = "2023-06-01"
"""


def load(url: str, seconds: int = 10, connections: int = 16) -> tuple[float, int, int]:
    """wrk against `url`'s /v1/messages: requests per second, requests answered, and how many
    of them were not 2xx."""
    with tempfile.TemporaryDirectory() as tmp:
        body, script = Path(tmp) / "body.json", Path(tmp) / "post.lua"
        body.write_bytes(BODY)
        script.write_text(_LUA.format(body=body))
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url + "/v1/messages"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    answered = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, answered, int(bad.group(1)) if bad else 0


def _stored(db: str) -> int:
    from llmlog.core.filters import CallFilter
    from llmlog.store import open_store

    with open_store(db) as store:
        return store.count(CallFilter())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_proxy(
    tmp: Path,
    fake_url: str,
    row: Callable[..., None],
    notes: list[str],
    calls: int = 1000,
    seconds: int = 10,
    workers: tuple[int, ...] = (1, 2, 4),
) -> None:
    print("provider proxy (llmlog serve /anthropic, the fake provider in its own process)", flush=True)
    env = {"LLMLOG_ANTHROPIC_UPSTREAM": fake_url}
    db = str(tmp / "proxy.db")
    proc, port = serve(db, env=env)
    proxied_url = f"http://127.0.0.1:{port}/anthropic"
    try:
        direct, proxied = interleaved(fake_url, proxied_url, calls, _call)
        first_direct, first_proxied = interleaved(fake_url, proxied_url, calls // 5, _first_token)
    finally:
        proc.terminate()
        proc.wait(30)
    for q, goal in ((0.5, 1.0), (0.99, None)):
        added = (pct(proxied, q) - pct(direct, q)) * 1000
        row(
            f"proxy: added latency per call, p{round(q * 100)}",
            f"{added:.2f} ms ({pct(direct, q) * 1000:.2f} → {pct(proxied, q) * 1000:.2f} ms)",
            f"≤ {goal:g} ms" if goal else "",
            added <= goal if goal else None,
        )
    added = (pct(first_proxied, 0.5) - pct(first_direct, 0.5)) * 1000
    row(
        "proxy: first-token delay added to a stream (median)",
        f"{added:.2f} ms ({pct(first_direct, 0.5) * 1000:.2f} → {pct(first_proxied, 0.5) * 1000:.2f} ms)",
        "≤ 1 ms",
        added <= 1.0,
    )
    if shutil.which("wrk") is None:
        notes.append("Proxy under load: not measured (wrk is not installed: `apt-get install wrk`).")
        return
    alone, _, _ = load(fake_url, seconds)
    for n in workers:
        db = str(tmp / f"proxy-{n}w.db")
        proc, port = serve(db, workers=n, env=env)
        try:
            cpu0, _ = _proc(proc.pid)
            rate, answered, bad = load(f"http://127.0.0.1:{port}/anthropic", seconds)
            cpu, hwm = _proc(proc.pid)
            cpu -= cpu0
        finally:
            proc.terminate()  # the server flushes what it recorded as it stops
            proc.wait(60)
        stored = _stored(db)
        # wrk counts the answers it read; a request in flight when it stopped may be
        # answered (and stored) after.
        lost = max(0, answered - bad - stored)
        row(
            f"proxy under load, `serve --workers {n}` (wrk, 16 connections, {seconds} s)",
            f"{rate:,.0f} req/s (the fake provider alone: {alone:,.0f}); server CPU"
            f" {cpu / max(answered, 1) * 1000:.2f} ms/call, peak memory of one process"
            f" {hwm / 2**20:,.0f} MiB; {lost} of {answered - bad:,} not stored",
            "≥ 1,000/s, none lost",
            rate >= 1000 and lost == 0 and bad == 0,
        )


def main() -> None:
    import argparse

    from bench.run import provider_process

    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    notes: list[str] = []

    def show(figure: str, value: str, goal: str = "", met: bool | None = None) -> None:
        print(f"  {figure:<62} {value:<50} {goal}{'' if met is None else ('  ok' if met else '  MISSED')}")

    with tempfile.TemporaryDirectory() as tmp, provider_process(7) as fake:
        bench_proxy(Path(tmp), fake.url, show, notes, args.calls, args.seconds, tuple(args.workers))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
