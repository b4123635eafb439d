"""Traces on a big store: a store of N calls, about a third of them in traces of 2–6 calls
with 2–5 spans each, stored through the store's own `insert` and `insert_spans` in batches
(so the triggers that keep `traces` do their work, as in use); then the reads the traces
pages make, timed: the newest 50 traces unfiltered and filtered, one trace's figures and its
calls; and the pages themselves, `/traces` and a typical trace's, as `bench.pages` times
every page.

    python -m bench.traces --db /tmp/traces.db --calls 1000000     # build (if empty) and time
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.pages import bench_pages, trace_pages
from bench.timing import timed
from llmlog.core.filters import CallFilter, TraceFilter
from llmlog.core.record import Call, Span
from llmlog.store import Store, open_store

FEATURES = ("support-bot", "summarize", "search", "triage", "translate", "agent")
NAMES = ("agent run", "answer", "ingest", "plan")
DAYS = 60
BATCH = 500

Row = Callable[..., None]


def workload(n: int, seed: int = 7, end: datetime | None = None) -> Iterator[tuple[list[Call], list[Span]]]:
    """`n` calls over the `DAYS` days before `end`, oldest first, in batches of `BATCH`, with
    the spans of the traces whose calls the batch holds. About a third of the calls are in
    traces (2–6 calls, 2–5 spans: a root and its children, a few failed)."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    step = timedelta(days=DAYS) / n
    at = end - timedelta(days=DAYS)
    calls: list[Call] = []
    spans: list[Span] = []
    left, trace, root = 0, None, None
    for i in range(n):
        at += step
        if left == 0 and rng.random() < 1 / 9:  # a trace starts (1 call in 9, ~4 calls each)
            left = rng.randint(2, 6)
            trace, root = uuid.UUID(int=rng.getrandbits(128)).hex, f"{rng.getrandbits(64):016x}"
            started = at - timedelta(milliseconds=rng.randint(1, 200))
            width = timedelta(seconds=rng.uniform(1, 40))
            spans.append(Span(trace, root, None, rng.choice(NAMES), "server", started, started + width,
                              service="app"))  # fmt: skip
            for _ in range(rng.randint(1, 4)):
                begin = started + width * rng.uniform(0, 0.8)
                name = rng.choice(("retrieve", "tool", "format"))
                status = "error" if rng.random() < 0.03 else "ok"
                end = begin + width * rng.uniform(0, 0.2)
                spans.append(
                    Span(trace, f"{rng.getrandbits(64):016x}", root, name, "internal", begin, end, status)
                )
        feature = rng.choice(FEATURES)
        calls.append(
            Call(
                timestamp=at, provider="openai", model=rng.choice(("gpt-4.1", "gpt-4.1-mini")),
                feature=feature,
                user_id=f"user-{rng.randint(1, 2000)}", session_id=f"session-{i // 8}",
                messages=[{"role": "user", "content": f"question {i} about {feature}"}],
                response={"id": f"r{i}", "object": "chat.completion", "choices": [{
                    "index": 0, "message": {"role": "assistant", "content": f"answer {i}"},
                    "finish_reason": "stop"}]},
                input_tokens=rng.randint(50, 4000), output_tokens=rng.randint(5, 800),
                cost_usd=round(rng.uniform(0.0001, 0.05), 6), latency_ms=rng.uniform(200, 9000),
                error={"type": "rate_limit_error"} if rng.random() < 0.02 else None,
                trace_id=trace if left else None, parent_id=root if left else None,
            )
        )  # fmt: skip
        left = max(0, left - 1)
        if len(calls) == BATCH:
            yield calls, spans
            calls, spans = [], []
    if calls or spans:
        yield calls, spans


def fill(store: Store, n: int, seed: int = 7) -> tuple[float, int, int]:
    """Store the workload: seconds taken, calls, spans."""
    t = time.perf_counter()
    calls = spans = 0
    for batch, batch_spans in workload(n, seed):
        calls += store.insert(batch)
        store.insert_spans(batch_spans)
        spans += len(batch_spans)
    return time.perf_counter() - t, calls, spans


def settle(store: Store) -> None:
    """After the fill, what the engine does by itself before anyone reads a store this big, as
    `bench.run` does for its grown stores: statistics for the planner (SQLite's ANALYZE;
    PostgreSQL's VACUUM ANALYZE, as autovacuum would have, which a server may have off), the
    parts merged (ClickHouse)."""
    kind = store.dialect.name
    if kind == "sqlite":
        store.db.execute("ANALYZE")  # type: ignore[attr-defined]
    elif kind == "postgres":
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    else:
        for table in ("call_data", "spans"):
            store.engine.command(f"OPTIMIZE TABLE {table} FINAL")  # type: ignore[attr-defined]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def bench_reads(kind: str, store: Store, repeats: int, row: Row, label: str) -> None:
    """The reads of the traces pages, each timed (median of `repeats` after one)."""
    newest = store.list_traces(TraceFilter(), 200)
    if not newest:
        row(f"{kind}: list_traces, {label} calls", "no traces")
        return
    sample = newest[len(newest) // 2]
    costs = sorted(t.cost_usd for t in newest)
    reads: dict[str, Callable[[], Any]] = {
        "no filter": lambda: store.list_traces(TraceFilter(), 50),
        f"feature={sample.feature}": lambda: store.list_traces(TraceFilter(feature=sample.feature), 50),
        "errors": lambda: store.list_traces(TraceFilter(errors=True), 50),
        f"min_cost {costs[-10]:.3f}": lambda: store.list_traces(TraceFilter(min_cost_usd=costs[-10]), 50),
        "user": lambda: store.list_traces(TraceFilter(user_id=sample.user_id), 50),
        "second page (until)": lambda: store.list_traces(TraceFilter(until=newest[49].started), 50),
    }
    for what, read in reads.items():
        t = timed(read, repeats)
        row(f"{kind}: list_traces 50, {what}, {label} calls", ms(t), "≤ 200 ms", t <= 0.2)
    rng = random.Random(3)
    t = timed(lambda: store.trace_summary(rng.choice(newest).trace_id), repeats * 4)
    row(f"{kind}: trace_summary, {label} calls", ms(t), "≤ 20 ms", t <= 0.02)
    t = timed(
        lambda: store.recent(CallFilter(trace_id=rng.choice(newest).trace_id), 100, brief=True), repeats * 4
    )
    row(f"{kind}: a trace's calls (recent, trace filter), {label} calls", ms(t), "≤ 50 ms", t <= 0.05)


def bench_traces(kind: str, url: str, n: int, repeats: int, row: Row) -> None:
    """A store of `n` calls with traces, filled through the store, then its reads and its
    pages timed."""
    with open_store(url) as store:
        took, calls, spans = fill(store, n)
        settle(store)
        label = _label(calls)
        row(
            f"{kind}: storing {label} calls (a third in traces) and {spans:,} spans",
            f"{calls / took:,.0f} calls/s",
        )
        bench_reads(kind, store, repeats, row, label)
    # As every page is timed (`bench.pages`): a server in a thread, the app's own time.
    bench_pages(kind, url, max(3, repeats // 5), row, label, trace_pages)


def _label(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 100_000 else f"{n:,}"


def _print_row(figure: str, value: str, goal: str = "", met: bool | None = None) -> None:
    mark = "" if met is None else ("  ok" if met else "  MISSED")
    print(f"  {figure:<70} {value:<14} {goal}{mark}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.traces", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="store to fill (if it holds no calls) and read")
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    with open_store(args.db) as store:
        if not store.list_traces(TraceFilter(), 1):
            took, calls, spans = fill(store, args.calls)
            settle(store)
            print(f"stored {calls:,} calls and {spans:,} spans in {took:.0f} s ({calls / took:,.0f} calls/s)")
        n = store.count(CallFilter())
        kind = store.dialect.name
        bench_reads(kind, store, args.repeats, _print_row, _label(n))
    bench_pages(kind, args.db, max(3, args.repeats // 5), _print_row, _label(n), trace_pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
