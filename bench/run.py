"""`make bench`: what llmlog costs the host app, how fast it ingests, how small it stores,
how quickly it answers. Prints a table and writes BENCHMARKS.md.

Every figure is taken in one run, side by side where it is a comparison (wrapped and plain
calls interleaved), and reported as medians or percentiles; these machines are shared, so
read ratios and orders of magnitude, not the last digit.

    python -m bench.run                 # the full run (a few minutes)
    python -m bench.run --smoke         # seconds: keeps the harness from rotting (CI)
    python -m bench.run --only traces   # some parts (span, traces, storage, sustained, ingest): rows
                                        # updated, the others kept
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
import psycopg

import llmlog
from bench.console import bench_console_stall
from bench.otlp import bench_otlp, bench_otlp_postgres, recorded
from bench.pages import bench_pages
from bench.proxy import bench_proxy
from bench.report import Row, machine, update_report, write_report
from bench.storage import EnglishProvider, bench_storage, response_bytes
from bench.storage import steps as long_answer_steps
from bench.sustained import bench_sustained
from bench.timing import timed
from bench.traces import bench_traces
from llmlog.capture.exchange import Exchange
from llmlog.capture.wrap import instrument
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import COLUMNS, Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.demo.workload import Step, arun, generate, run
from llmlog.operations import retention
from llmlog.pipeline.writer import Writer
from llmlog.store import Store, engine_of, open_store, retention_policy
from llmlog.store.sqlite import connect as sqlite_connect

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Sizes:
    overhead_calls: int = 1000  # calls each way (plain and wrapped) per round, sync; as many async
    overhead_rounds: int = 3  # the figure is the median of the rounds'
    stream_calls: int = 400
    capture_steps: int = 5000  # distinct workload calls captured once, then replayed
    ingest_calls: int = 20_000
    big_store: int = 1_000_000
    query_repeats: int = 25
    memory_seconds: float = 8.0
    console_posts: int = 300  # collector batches per side, idle console and busy
    console_count_to: int | None = None  # None: the console's query runs to its time limit
    otlp_calls: int = 10_000  # workload calls sent as OpenInference spans to `llmlog serve`
    serve_workers: tuple[int, ...] = (2, 4)  # `serve --workers` taking the same spans
    proxy_calls: int = 1000  # calls each way, straight and through the proxy
    proxy_seconds: int = 10  # of load (wrk) on the proxy, and on the fake provider alone
    proxy_workers: tuple[int, ...] = (1, 2, 4)
    sustained_rounds: int = 3  # times the OTLP recording's calls go to /v1/calls after it
    spans: int = 20_000  # empty spans per round (`llmlog.span`), against as many empty blocks
    trace_calls: int = 1_000_000  # calls of the store the traces' reads are timed on (a third in traces)
    long_calls: int = 10_000  # calls of the long-answer workload, on each engine (`--only storage`)


SMOKE = Sizes(
    spans=200,
    trace_calls=900,
    overhead_calls=30,
    overhead_rounds=1,
    stream_calls=10,
    capture_steps=60,
    ingest_calls=120,
    big_store=600,
    query_repeats=3,
    memory_seconds=0.5,
    console_posts=20,
    console_count_to=200_000,
    otlp_calls=40,
    serve_workers=(2,),
    proxy_calls=20,
    proxy_seconds=1,
    proxy_workers=(1,),
    sustained_rounds=1,
    long_calls=40,
)


ROWS: list[Row] = []
NOTES: list[str] = []


def row(figure: str, value: str, goal: str = "", met: bool | None = None) -> None:
    ROWS.append(Row(figure, value, goal, met))
    mark = "" if met is None else ("  ok" if met else "  MISSED")
    print(f"  {figure:<58} {value:<34} {goal}{mark}", flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


# ---------------------------------------------------------------- capture overhead


@dataclass
class ProviderProcess:
    url: str

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"


Provider = FakeProvider | ProviderProcess


@contextlib.contextmanager
def provider_process(seed: int) -> Iterator[ProviderProcess]:
    """The fake provider in a process of its own, as a real provider is: its work neither
    shares the interpreter lock with the SDK and the writer being timed, nor adds to their
    noise."""
    cmd = [sys.executable, "-m", "llmlog.demo.fake_provider", "--port", "0", "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Fake provider on http://127.0.0.1:PORT (Ctrl-C to stop)"
        if not line.startswith("Fake provider on "):
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        yield ProviderProcess(line.split()[3])
    finally:
        proc.terminate()
        proc.wait(10)


def _clients(fake: Provider) -> tuple[anthropic.Anthropic, openai.OpenAI]:
    return (
        anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0),
        openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0),
    )


def _aclients(fake: Provider) -> tuple[anthropic.AsyncAnthropic, openai.AsyncOpenAI]:
    return (
        anthropic.AsyncAnthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0),
        openai.AsyncOpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0),
    )


Timings = tuple[list[float], list[float]]  # (plain, wrapped), call i of each the same request


def _overhead_rows(kind: str, rounds: list[Timings]) -> None:
    """p50 and p99 added, each the median over rounds; and the heaviest calls, paired.

    A p99 of a thousand calls is about their tenth slowest: one GIL switch (5 ms) or a
    scheduler hiccup on either side moves it by milliseconds, so one round's difference
    says little, and the rounds' median says more. The paired figure compares each of the
    heaviest 2% of calls with its own plain twin."""
    for q, name, goal_ms in ((0.5, "p50", 0.2), (0.99, "p99", 1.0)):
        diffs = sorted(pct(w, q) - pct(p, q) for p, w in rounds)
        added = statistics.median(diffs)
        plain = statistics.median(pct(p, q) for p, _ in rounds)
        spread = f"; rounds {ms(diffs[0])} to {ms(diffs[-1])}" if len(diffs) > 1 else ""
        row(
            f"added latency per call, {kind}, {name}",
            f"{ms(added)} (on {ms(plain)}{spread})",
            f"≤ {goal_ms} ms",
            added * 1000 <= goal_ms,
        )
    pairs = sorted(((p, w) for ps, ws in rounds for p, w in zip(ps, ws, strict=True)), key=lambda x: x[0])
    heavy = pairs[-max(1, len(pairs) // 50) :]
    paired = sorted(w - p for p, w in pairs)
    heavy_added = statistics.median(w - p for p, w in heavy)
    NOTES.append(
        f"Added latency, {kind}: on the heaviest 2% of calls ({len(heavy)}, plain from"
        f" {ms(heavy[0][0])}), each against its plain twin: median {ms(heavy_added)}."
        f" Each call against its twin, over all calls: p1 {ms(pct(paired, 0.01))},"
        f" p50 {ms(pct(paired, 0.5))}, p99 {ms(pct(paired, 0.99))}."
    )


def bench_overhead(fake: Provider, steps: list[Step], sizes: Sizes, db: str) -> None:
    print("capture overhead (wrapped vs plain SDK, interleaved)", flush=True)
    llmlog.configure(db=db)
    calls = [s for s in steps if not s.fails][: sizes.overhead_calls]
    pa, po = _clients(fake)
    wa, wo = _clients(fake)
    llmlog.wrap(wa), llmlog.wrap(wo)
    for s in calls[:20]:  # warm connections and code paths
        run(s, pa, po), run(s, wa, wo)

    def sync_round() -> Timings:
        plain: list[float] = []
        wrapped: list[float] = []
        for i, s in enumerate(calls):
            order = [(pa, po, plain), (wa, wo, wrapped)]
            for a, o, out in order if i % 2 else order[::-1]:
                with llmlog.context(**s.context):
                    t = time.perf_counter()
                    run(s, a, o)
                    out.append(time.perf_counter() - t)
        llmlog.flush()
        return plain, wrapped

    _overhead_rows("sync", [sync_round() for _ in range(sizes.overhead_rounds)])

    async def go() -> list[Timings]:
        pa, po = _aclients(fake)
        wa, wo = _aclients(fake)
        llmlog.wrap(wa), llmlog.wrap(wo)
        for s in calls[:20]:
            await arun(s, pa, po)
            await arun(s, wa, wo)
        rounds = []
        for _ in range(sizes.overhead_rounds):
            plain: list[float] = []
            wrapped: list[float] = []
            for i, s in enumerate(calls):
                order = [(pa, po, plain), (wa, wo, wrapped)]
                for a, o, out in order if i % 2 else order[::-1]:
                    with llmlog.context(**s.context):
                        t = time.perf_counter()
                        await arun(s, a, o)
                        out.append(time.perf_counter() - t)
            llmlog.flush()
            rounds.append((plain, wrapped))
        return rounds

    _overhead_rows("async", asyncio.run(go()))
    bench_first_token(fake, sizes)


def _first_event(client: anthropic.Anthropic, body: dict[str, Any]) -> float:
    t = time.perf_counter()
    with client.messages.stream(**body) as s:
        for _ in s:
            first = time.perf_counter() - t
            break
        s.close()
    return first


def bench_first_token(fake: Provider, sizes: Sizes) -> None:
    plain, _ = _clients(fake)
    wrapped, _ = _clients(fake)
    llmlog.wrap(wrapped)
    body = dict(
        model="claude-sonnet-4-6",
        max_tokens=400,
        messages=[{"role": "user", "content": "Write a long answer."}],
        extra_headers={"x-fake-first-token-ms": "5", "x-fake-chunk-ms": "1"},
    )
    p: list[float] = []
    w: list[float] = []
    for i in range(sizes.stream_calls):
        order = [(plain, p), (wrapped, w)]
        for client, out in order if i % 2 else order[::-1]:
            out.append(_first_event(client, body))
    llmlog.flush()
    added = statistics.median(w) - statistics.median(p)
    row(
        "first-token delay added to a stream (median)",
        f"{ms(added)} ({ms(statistics.median(p))} → {ms(statistics.median(w))})",
        "≤ 1 ms",
        added * 1000 <= 1.0,
    )


# ---------------------------------------------------------------- ingest, storage, memory


def capture(fake: FakeProvider, steps: list[Step]) -> list[Exchange]:
    """The exchanges the wrapped SDKs hand the writer, recorded once to be replayed."""
    out: list[Exchange] = []
    a, o = _clients(fake)
    instrument(a, out.append), instrument(o, out.append)
    for s in steps:
        run(s, a, o)
    return out


def _contexts(steps: list[Step], exchanges: list[Exchange]) -> None:
    # Capturing outside llmlog.context leaves the exchanges without one; give each its step's.
    from llmlog.capture.context import CallContext

    for s, ex in zip(steps, exchanges, strict=False):
        ex.context = CallContext(**{k: v for k, v in s.context.items()})


def ingest(url: str, exchanges: list[Exchange], n: int, key: str | None = None, processes: int = 0) -> float:
    return ingest_figures(url, exchanges, n, key, processes)[0]


def ingest_figures(
    url: str, exchanges: list[Exchange], n: int, key: str | None = None, processes: int = 0
) -> tuple[float, float]:
    """Calls per second through the writer (parse, price, batch insert), as from the SDK;
    with `key`, in regulated mode (the text sealed); with `processes`, the writer's work in
    that many processes of its own (`LLMLOG_WRITER_PROCESSES`).

    Each pass over the captured calls is a new writer, as a restarted app would be: its
    caches start empty, so a replay is not faster for having seen the same bodies before."""
    elapsed = cpu = 0.0
    done = 0
    while done < n:
        writer = Writer(Settings(db=url, on_full="block", key=key, writer_processes=processes))
        writer.start()  # its processes' start (~0.4 s each, side by side) is not per call
        t, c = time.perf_counter(), time.process_time()
        count = min(len(exchanges), n - done)
        for ex in exchanges[:count]:
            writer.submit(ex)
        writer.flush()
        elapsed += time.perf_counter() - t
        cpu += time.process_time() - c  # this process's own: the app's, its writer's processes not
        stats = writer.stats()
        writer.close()
        assert stats.recorded == count and stats.dropped == 0, stats
        done += count
    return n / elapsed, cpu / n


# The writer's rate goals, by engine.
INGEST_GOALS = {"SQLite": 5000, "PostgreSQL": 3000}


def ingest_rows(
    kind: str,
    url: str,
    apart_url: str,
    busy_url: str,
    exchanges: list[Exchange],
    n: int,
    one_url: str | None = None,
) -> float:
    """The writer's rate into a store of `kind` (at `url`), in the app and in 2 writer
    processes (into `apart_url`, as empty as `url` was), and the app's CPU a call in each;
    then in the app beside a busy thread (into `busy_url`, one pass). With `one_url`, for an
    engine a writer stores into through several connections at once (`WRITERS`), the rate in
    the app through one, as before it did (into `one_url`). The rate in the app."""
    goal = INGEST_GOALS[kind]
    rate, app_cpu = ingest_figures(url, exchanges, n)
    row(f"ingest into {kind} through the writer", f"{rate:,.0f} calls/s", f"≥ {goal:,}/s", rate >= goal)
    if one_url is not None:
        engine = engine_of(one_url)
        writers, engine.WRITERS = engine.WRITERS, 1
        try:
            one = ingest_figures(one_url, exchanges, n)[0]
        finally:
            engine.WRITERS = writers
        row(
            f"ingest into {kind} through the writer, one connection (as before)",
            f"{one:,.0f} calls/s ({writers}: {rate / one:.2f}×)",
        )
    apart, apart_cpu = ingest_figures(apart_url, exchanges, n, processes=2)
    row(
        f"ingest into {kind}, 2 writer processes",
        f"{apart:,.0f} calls/s ({apart / rate:.2f}×)",
        f"≥ {goal:,}/s",
        apart >= goal,
    )
    row(
        f"the app's CPU a call, {kind}: writer in the app → 2 processes",
        f"{app_cpu * 1e6:,.0f} → {apart_cpu * 1e6:,.0f} µs",
    )
    busy = busy_ingest(busy_url, exchanges, min(n, len(exchanges)))
    row(
        f"ingest into {kind} beside a busy app thread (writer in the app)",
        f"{busy:,.0f} calls/s ({busy / rate:.2f}× of the above)",
    )
    return rate


def busy_ingest(url: str, exchanges: list[Exchange], n: int) -> float:
    """The writer in the app while another of the app's threads computes without a pause: each
    time the writer lets go of the interpreter lock (a database's round trip, zstd, a read of
    the kernel's), taking it back waits behind that thread up to the switch interval (5 ms)."""
    open_store(url).close()  # made before (its migrations are not per call)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(100))

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        return ingest_figures(url, exchanges, n)[0]
    finally:
        stop.set()
        thread.join()


def bench_ingest_part(tmp: Path, pg: str | None, sizes: Sizes, seed: int = 7) -> None:
    """The writer's rates alone (`--only ingest`): the workload's calls captured once, then
    through the writer in the app and in 2 writer processes, into each engine it can share."""
    steps = generate(sizes.capture_steps, seed=seed)
    with FakeProvider(latency_ms=0, first_token_ms=0, chunk_ms=0, seed=seed) as fake:
        exchanges = capture(fake, steps)
    _contexts(steps, exchanges)
    print(f"ingest ({sizes.ingest_calls:,} calls)", flush=True)
    ingest_rows(
        "SQLite",
        str(tmp / "ingest.db"),
        str(tmp / "processes.db"),
        str(tmp / "busy.db"),
        exchanges,
        sizes.ingest_calls,
    )
    if pg:
        schemas = zip(schema_url(pg), schema_url(pg), schema_url(pg), schema_url(pg), strict=True)
        for url, apart, busy, one in schemas:
            ingest_rows("PostgreSQL", url, apart, busy, exchanges, sizes.ingest_calls, one)


# A fixed key for the regulated-mode figures (a benchmark's, never a real one).
BENCH_KEY = "bench:" + "QkVOQ0hCRU5DSEJFTkNIQkVOQ0hCRU5DSEJFTkNIQkU="


def bench_retention(kind: str, url: str) -> None:
    """A retention run over the grown store (60 days of calls) keeping 30 days: the deletes,
    the content no kept call uses, and the space given back; last, as it empties the store."""
    with open_store(url) as store:
        total = store.count(CallFilter())
        t = time.perf_counter()
        report = retention.run(store, retention_policy.Policy(days=30))
        took = time.perf_counter() - t
    row(
        f"{kind}: retention run, 30 of 60 days kept",
        f"{report.calls:,} of {total:,} calls in {took:.0f} s ({report.calls / max(took, 1e-9):,.0f}/s)",
    )
    mib = 2**20
    row(
        f"{kind}: store size before → after the run",
        f"{report.bytes_before / mib:,.0f} → {report.bytes_after / mib:,.0f} MiB",
    )


def sqlite_bytes(path: str) -> int:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


def postgres_bytes(url: str) -> int:
    with psycopg.connect(url) as conn:
        row_ = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
        ).fetchone()
    return int(row_[0] or 0) if row_ else 0


def jsonl_bytes(store: Store) -> int:
    return sum(len(c.to_json().encode()) + 1 for c in store.iter_calls(CallFilter()))


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_memory(exchanges: list[Exchange], sizes: Sizes, db: str) -> None:
    """A producer faster than the writer, for a while: the queue fills and stays full."""

    def fresh(ex: Exchange) -> Exchange:
        # Each call's bodies are its own bytes in a real app; do not let replays share them.
        copy = Exchange(**{f: getattr(ex, f) for f in ex.__dataclass_fields__ if f != "_sink"})
        copy.request_body = bytes(bytearray(ex.request_body))
        copy.chunks = [(t, bytes(bytearray(c))) for t, c in ex.chunks]
        return copy

    settings = Settings(db=db, on_full="drop")
    writer = Writer(settings)
    base = peak = _rss()
    stop = time.monotonic() + sizes.memory_seconds
    i = 0
    while time.monotonic() < stop:
        writer.submit(fresh(exchanges[i % len(exchanges)]))
        i += 1
        if i % 100 == 0:
            peak = max(peak, _rss())
            time.sleep(0)  # an app does other things between calls; let the writer run
    stats = writer.stats()
    writer.close(timeout=60)
    row(
        "writer memory under sustained load (peak RSS growth)",
        f"{(peak - base) / 2**20:.0f} MiB",
        f"bounded (queue: {settings.queue_max_bytes / 2**20:g} MiB of bodies)",
        None,
    )
    NOTES.append(
        f"Memory: {i:,} calls offered in {sizes.memory_seconds:g} s as fast as one thread can;"
        f" {stats.recorded:,} stored meanwhile, {stats.dropped:,} dropped and counted while the queue"
        " was full."
    )


def bench_span(sizes: Sizes, db: str) -> None:
    """What an empty `llmlog.span` block adds to the app's thread, against an empty block
    (`contextlib.nullcontext`), interleaved; the median of 5 rounds. The writer stores the
    spans meanwhile, as it would in the app, and competes for the interpreter as it would."""
    llmlog.configure(db=db, queue_size=sizes.spans * 11)
    added = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(sizes.spans):
            with contextlib.nullcontext():
                pass
        plain = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(sizes.spans):
            with llmlog.span("step"):
                pass
        added.append((time.perf_counter() - start - plain) / sizes.spans)
    llmlog.flush(120)
    value = statistics.median(added) * 1e6
    row("an empty span's added time (llmlog.span)", f"{value:.1f} µs", "≤ 20 µs", value <= 20)
    NOTES.append(f"Spans: {llmlog.stats().spans:,} empty spans stored by the writer while they were timed.")


# ---------------------------------------------------------------- a store of 1M calls


def grow_sqlite(path: str, target: int) -> None:
    """Copy the stored calls, with new ids, session ids and earlier times, until there are
    `target`: the same mix and content sharing as ingested, spread over 60 days."""
    # llmlog's own connection: the search index's triggers read compressed text through it.
    db = sqlite_connect(path)
    base = db.execute("SELECT count(*) FROM call_data").fetchone()[0]
    copies = max(0, -(-target // base) - 1)
    columns = [r[1] for r in db.execute("PRAGMA table_info(call_data)") if r[1] not in ("rowid", "id")]
    rest = [c for c in columns if c != "timestamp"]
    for k in range(1, copies + 1):
        # Each copy of a conversation is another conversation: a session id of its own.
        values = ", ".join(f"session_id || '~{k}'" if c == "session_id" else c for c in rest)
        shift = f"-{k * 60 * 86400 // max(copies, 1)} seconds"
        db.execute("BEGIN")
        db.execute(
            f"INSERT INTO call_data (id, timestamp, {', '.join(rest)})"
            " SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||"
            " substr(hex(randomblob(2)), 2) || '-8' || substr(hex(randomblob(2)), 2) || '-' ||"
            " hex(randomblob(6))),"
            f" strftime('%Y-%m-%dT%H:%M:%f', timestamp, '{shift}') || substr(timestamp, 24),"
            f" {values} FROM call_data WHERE rowid <= ? LIMIT ?",
            (base, min(base, target - base * k)),
        )
        db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()


def grow_postgres(url: str, store: Store, target: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        base = conn.execute("SELECT count(*) FROM call_data").fetchone()[0]  # type: ignore[index]
        copies = max(0, -(-target // base) - 1)
        now = datetime.now(UTC)
        months = [Call(timestamp=now - timedelta(days=d)) for d in range(0, 62, 5)]
        store._ensure_partitions(months)  # type: ignore[attr-defined]
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = 'call_data' ORDER BY ordinal_position"
            )
        ]
        rest = [c for c in columns if c not in ("id", "timestamp")]
        conn.execute("CREATE TEMP TABLE base AS SELECT * FROM call_data")
        for k in range(1, copies + 1):
            seconds = k * 60 * 86400 // max(copies, 1)
            values = ", ".join(f"session_id || '~{k}'" if c == "session_id" else c for c in rest)
            conn.execute(
                f"INSERT INTO call_data (id, timestamp, {', '.join(rest)})"
                f" SELECT gen_random_uuid()::text, timestamp - make_interval(secs => %s), {values}"
                " FROM base LIMIT %s",
                (seconds, min(base, target - base * k)),
            )
        # As autovacuum would have by the time anyone reads a store this size: freshly copied
        # rows have no visibility map or hint bits yet, and the first reads pay to set them.
        conn.execute("VACUUM ANALYZE")


def grow_clickhouse(store: Store, target: int) -> None:
    """As `grow_sqlite`: copies with new ids and session ids, spread over 60 days; then
    merged, as the engine's background merges would have by then."""
    base = store.count(CallFilter())
    copies = max(0, -(-target // base) - 1)
    columns = [c for c in COLUMNS if c not in ("id", "timestamp")]
    engine = store.engine  # type: ignore[attr-defined]
    # The ingested calls, set aside once: each copy reads them, not the growing table.
    engine.command("CREATE TABLE grow_base ENGINE = MergeTree ORDER BY tuple() AS SELECT * FROM call_data")
    for k in range(1, copies + 1):
        values = ", ".join(f"concat(session_id, '~{k}')" if c == "session_id" else c for c in columns)
        seconds = k * 60 * 86400 // max(copies, 1)
        engine.command(
            f"INSERT INTO call_data (id, timestamp, {', '.join(columns)})"
            f" SELECT toString(generateUUIDv4()), timestamp - toIntervalSecond({seconds}), {values}"
            f" FROM grow_base LIMIT {min(base, target - base * k)}"
        )
    engine.command("DROP TABLE grow_base")
    for table in ("call_data", "daily_parts", "people_parts"):
        engine.command(f"OPTIMIZE TABLE {table} FINAL")


def bench_queries(kind: str, url: str, sizes: Sizes) -> None:
    with open_store(url) as store:
        n = store.count(CallFilter())
        # The newest call with a user: the same one every run (the workload is seeded), so
        # runs compare; a random one made these figures swing with its feature's conversations.
        sample = next(c for c in store.recent(CallFilter(), 200, brief=True) if c.user_id)
        label = f"{n / 1e6:.1f}M" if n >= 100_000 else f"{n:,}"
        filters = {
            "feature": CallFilter(feature=sample.feature),
            "model": CallFilter(model=sample.model),
            "user": CallFilter(user_id=sample.user_id),
            "error": CallFilter(errors=True),
        }
        for name, f in filters.items():
            # As a list reads them (the UI's calls page, `llmlog calls`): the row and the last
            # message, not each conversation whole.
            t = timed(lambda f=f: store.recent(f, 100, brief=True), sizes.query_repeats)
            row(f"{kind}: recent 100 calls, filter on {name}, {label} calls", ms(t), "≤ 50 ms", t <= 0.05)
        rng = random.Random(1)
        ids = [c.id for c in store.recent(CallFilter(), 200, brief=True)]
        t = timed(lambda: store.get(rng.choice(ids)), sizes.query_repeats * 4)
        row(f"{kind}: one call's full detail, {label} calls", ms(t), "≤ 20 ms", t <= 0.02)
        since = datetime.now(UTC) - timedelta(days=30)
        t = timed(lambda: store.cost_by_day(since), sizes.query_repeats)
        row(f"{kind}: 30-day cost per day per model, {label} calls", ms(t), "≤ 100 ms", t <= 0.1)
        # Full-text search, ranked: a word no call holds (the index lookup alone), a phrase
        # some calls hold, and a word most calls hold (every match is ranked).
        searches = (("no match", "xylophone"), ("a phrase", '"password login"'), ("a common word", "latency"))
        for what, words in searches:
            hits = store.search(words, CallFilter(), 20)
            t = timed(lambda words=words: store.search(words, CallFilter(), 20), sizes.query_repeats)
            row(f"{kind}: search, {what} ({len(hits)} shown), {label} calls", ms(t), "≤ 200 ms", t <= 0.2)
    bench_pages(kind, url, max(3, sizes.query_repeats // 5), row, label)


# ---------------------------------------------------------------- report


def bench_clickhouse(path: str, exchanges: list[Exchange], jsonl: int, sizes: Sizes) -> None:
    """The ClickHouse store on the engine embedded (chdb): the same ingest, then the same
    queries and pages on a store grown to the same size. Its size is after merging, as the
    engine's background merges leave it."""
    url = f"chdb://{path}"
    rate = ingest(url, exchanges, sizes.ingest_calls)
    row("ingest into ClickHouse (embedded) through the writer", f"{rate:,.0f} calls/s")
    with open_store(url) as store:
        store.engine.command("OPTIMIZE TABLE call_data FINAL")  # type: ignore[attr-defined]
        stored = store.size_bytes()
        per_call = _per_call(stored, jsonl, sizes.ingest_calls)
        row("stored bytes per call, ClickHouse vs JSONL", per_call, "≤ 1/8", stored * 8 <= jsonl)
        t = time.perf_counter()
        grow_clickhouse(store, sizes.big_store)
        NOTES.append(
            f"ClickHouse store grown to {sizes.big_store:,} calls in {time.perf_counter() - t:.0f} s."
        )
    bench_queries("ClickHouse", url, sizes)


def _per_call(stored: int, jsonl: int, n: int) -> str:
    return f"{stored / n:,.0f} vs {jsonl / n:,.0f} B (1/{jsonl / stored:.1f})"


def postgres_url(arg: str | None) -> str | None:
    url = arg or os.environ.get("LLMLOG_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return url
    except psycopg.Error as exc:
        NOTES.append(f"PostgreSQL figures skipped: no server at {url} ({exc}).")
        return None


def schema_url(url: str) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def bench_traces_everywhere(tmp: Path, pg: str | None, sizes: Sizes) -> None:
    """The traces' store, reads and pages on each engine, each a store of its own."""
    print(f"traces on a store of {sizes.trace_calls:,} calls", flush=True)
    bench_traces("SQLite", str(tmp / "traces.db"), sizes.trace_calls, sizes.query_repeats, row)
    if pg:
        for traces_pg in schema_url(pg):
            bench_traces("PostgreSQL", traces_pg, sizes.trace_calls, sizes.query_repeats, row)
    bench_traces(
        "ClickHouse", f"chdb://{tmp / 'clickhouse'}-traces", sizes.trace_calls, sizes.query_repeats, row
    )


def bench_long_answers(tmp: Path, pg: str | None, sizes: Sizes, seed: int = 7) -> None:
    """Storage where answers are long (`bench.storage`): the same calls into each engine
    through the writer, bytes per call against their JSONL, and the reads that unpack them."""
    n = sizes.long_calls
    print(f"storage where answers are long ({n:,} calls)", flush=True)
    chosen = long_answer_steps(n, seed)
    with EnglishProvider(latency_ms=0, first_token_ms=0, chunk_ms=0, seed=seed) as fake:
        exchanges = capture(fake, chosen)
    _contexts(chosen, exchanges)
    repeats = sizes.query_repeats
    db = str(tmp / "long.db")
    ingest(db, exchanges, n)
    with open_store(db) as store:
        jsonl = jsonl_bytes(store)
        answers = response_bytes(store)
    row(
        "long answers: the workload", f"{answers:,.0f} B of response JSON a call, {jsonl / n:,.0f} B of JSONL"
    )
    bench_storage("SQLite", db, n, jsonl, sqlite_bytes(db), repeats, row)
    if pg:
        for url in schema_url(pg):
            ingest(url, exchanges, n)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")  # as autovacuum would have: the figures of a settled store
            bench_storage("PostgreSQL", url, n, jsonl, postgres_bytes(url), repeats, row)
    ch = f"chdb://{tmp / 'long-clickhouse'}"
    ingest(ch, exchanges, n)
    with open_store(ch) as store:
        store.engine.command("OPTIMIZE TABLE call_data FINAL")  # type: ignore[attr-defined]
        stored = store.size_bytes()
    bench_storage("ClickHouse", ch, n, jsonl, stored, repeats, row)


def bench_sustained_part(tmp: Path, pg: str | None, sizes: Sizes) -> None:
    """The sustained-ingest part alone: its own recording of the workload's spans first."""
    spans, sdk_db = recorded(tmp, sizes.otlp_calls, 7)
    with provider_process(7) as provider:
        bench_sustained(
            tmp, spans, sdk_db, provider.url, row, NOTES, sizes.sustained_rounds, sizes.proxy_seconds
        )


# The parts a run can be limited to (`--only`): those that need nothing the others make.
PARTS: dict[str, Callable[[Path, str | None, Sizes], None]] = {
    "span": lambda tmp, pg, sizes: bench_span(sizes, str(tmp / "spans.db")),
    "traces": bench_traces_everywhere,
    "storage": bench_long_answers,
    "sustained": bench_sustained_part,
    "ingest": bench_ingest_part,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness runs")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report to update")
    parser.add_argument(
        "--postgres", help=f"server to use (default LLMLOG_BENCH_POSTGRES_URL or {DEFAULT_POSTGRES})"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(PARTS),
        metavar="PART",
        help=f"run only these parts ({', '.join(PARTS)}) and update their rows, keeping the others",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    started = time.perf_counter()
    header = machine()
    print(header, flush=True)
    pg = postgres_url(args.postgres)
    pg_version = "not available"
    if pg:
        with psycopg.connect(pg) as conn:
            pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    if args.only:
        with tempfile.TemporaryDirectory(prefix="llmlog-bench-") as tmp:
            for part in args.only:
                PARTS[part](Path(tmp), pg, sizes)
        NOTES.append(f"They took {time.perf_counter() - started:.0f} s.")
        update_report(args.out, header, pg_version, ROWS, NOTES, args.only)
        print(f"written to {args.out}", flush=True)
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="llmlog-bench-") as tmp,
        FakeProvider(latency_ms=0, first_token_ms=0, chunk_ms=0, seed=args.seed) as fake,
    ):
        steps = generate(max(sizes.capture_steps, sizes.overhead_calls + 40), seed=args.seed)
        with provider_process(args.seed) as provider:
            bench_overhead(provider, steps, sizes, str(Path(tmp) / "overhead.db"))
        llmlog.configure(db=str(Path(tmp) / "unused.db"))

        print("ingest and storage", flush=True)
        captured = steps[: sizes.capture_steps]
        exchanges = capture(fake, captured)
        _contexts(captured, exchanges)
        sqlite_db = str(Path(tmp) / "ingest.db")
        rate = ingest_rows(
            "SQLite",
            sqlite_db,
            str(Path(tmp) / "processes.db"),
            str(Path(tmp) / "busy.db"),
            exchanges,
            sizes.ingest_calls,
        )
        with open_store(sqlite_db) as store:
            jsonl = jsonl_bytes(store)
        stored = sqlite_bytes(sqlite_db)
        row(
            "stored bytes per call, SQLite vs JSONL",
            _per_call(stored, jsonl, sizes.ingest_calls),
            "≤ 1/8",
            stored * 8 <= jsonl,
        )
        sealed_db = str(Path(tmp) / "sealed.db")
        sealed = ingest(sealed_db, exchanges, sizes.ingest_calls, key=BENCH_KEY)
        row(
            "ingest into SQLite, regulated mode (text sealed)",
            f"{sealed:,.0f} calls/s ({sealed / rate:.2f}×)",
        )
        row(
            "stored bytes per call, regulated vs clear",
            f"{sqlite_bytes(sealed_db) / sizes.ingest_calls:,.0f} vs {stored / sizes.ingest_calls:,.0f}",
        )
        bench_memory(exchanges, sizes, str(Path(tmp) / "memory.db"))
        bench_span(sizes, str(Path(tmp) / "spans.db"))
        spans, sdk_db = bench_otlp(
            Path(tmp), sizes.otlp_calls, args.seed, row, NOTES, sqlite_bytes, sizes.serve_workers
        )
        if pg:
            bench_otlp_postgres(spans, lambda: schema_url(pg), row, (1, *sizes.serve_workers))
        with provider_process(args.seed) as provider:
            bench_sustained(
                Path(tmp),
                spans,
                sdk_db,
                provider.url,
                row,
                NOTES,
                sizes.sustained_rounds,
                sizes.proxy_seconds,
            )
            bench_proxy(
                Path(tmp),
                provider.url,
                row,
                NOTES,
                sizes.proxy_calls,
                sizes.proxy_seconds,
                sizes.proxy_workers,
            )
        print("the collector beside the SQL console", flush=True)
        console_db = str(Path(tmp) / "console.db")
        bench_console_stall("SQLite", console_db, sizes.console_posts, sizes.console_count_to, row, pct)
        if pg:
            for console_pg in schema_url(pg):
                bench_console_stall(
                    "PostgreSQL", console_pg, sizes.console_posts, sizes.console_count_to, row, pct
                )
        schemas = schema_url(pg) if pg else None
        pg_db = next(schemas) if schemas else None
        try:
            if pg_db:
                more = zip(schema_url(pg), schema_url(pg), schema_url(pg), strict=True)
                for apart_pg, busy_pg, one_pg in more:
                    ingest_rows("PostgreSQL", pg_db, apart_pg, busy_pg, exchanges, sizes.ingest_calls, one_pg)
                stored = postgres_bytes(pg_db)
                row(
                    "stored bytes per call, PostgreSQL vs JSONL",
                    _per_call(stored, jsonl, sizes.ingest_calls),
                    "≤ 1/8",
                    stored * 8 <= jsonl,
                )

            print(f"queries on a store of {sizes.big_store:,} calls", flush=True)
            t = time.perf_counter()
            grow_sqlite(sqlite_db, sizes.big_store)
            took = time.perf_counter() - t
            NOTES.append(f"SQLite store grown to {sizes.big_store:,} calls in {took:.0f} s.")
            bench_queries("SQLite", sqlite_db, sizes)
            bench_retention("SQLite", sqlite_db)
            if pg_db:
                with open_store(pg_db) as store:
                    t = time.perf_counter()
                    grow_postgres(pg_db, store, sizes.big_store)
                NOTES.append(
                    f"PostgreSQL store grown to {sizes.big_store:,} calls in {time.perf_counter() - t:.0f} s."
                )
                bench_queries("PostgreSQL", pg_db, sizes)
                bench_retention("PostgreSQL", pg_db)
        finally:
            if schemas:
                schemas.close()
        bench_clickhouse(str(Path(tmp) / "clickhouse"), exchanges, jsonl, sizes)
        bench_traces_everywhere(Path(tmp), pg, sizes)
        bench_long_answers(Path(tmp), pg, sizes, args.seed)
    NOTES.append(f"The whole run took {time.perf_counter() - started:.0f} s.")
    write_report(args.out, header, pg_version, ROWS, NOTES)
    print(f"written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
