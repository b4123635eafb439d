"""OTLP ingest: the workload's calls as the OpenInference instrumentations export them,
posted to a real `llmlog serve` on SQLite, beside the same calls through `llmlog.wrap`.

`record` runs in a process of its own (the instrumentations patch the SDKs for the whole
process): the workload's steps through the real anthropic and openai SDKs, instrumented by
`openinference-instrumentation-anthropic` and `-openai` and wrapped by `llmlog.wrap` too, so
one run gives both the spans (each batch the BatchSpanProcessor exports, encoded as the
OTLP/HTTP exporter encodes it, appended to a file) and the SDK path's store of the same
calls. `bench_otlp` then starts `llmlog serve` over a fresh SQLite store and posts those
batches to it from a few client threads, each waiting for its answer before the next, as
exporters do; it reads the server's CPU time and peak memory from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_LENGTH = struct.Struct("<I")


def read_batches(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while head := f.read(_LENGTH.size):
            yield f.read(_LENGTH.unpack(head)[0])


def record(steps_n: int, seed: int, out: Path, sdk_db: str) -> None:
    """Run the workload's first `steps_n` steps, instrumented and wrapped (see the module)."""
    import logging

    import anthropic
    import openai
    from openinference.instrumentation import using_attributes
    from openinference.instrumentation.anthropic import AnthropicInstrumentor
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import llmlog
    from llmlog.demo.fake_provider import FakeProvider
    from llmlog.demo.workload import generate, run

    class ToFile(SpanExporter):
        def __init__(self) -> None:
            self.file = out.open("wb")

        def export(self, spans):  # type: ignore[no-untyped-def]
            body = encode_spans(spans).SerializeToString()
            self.file.write(_LENGTH.pack(len(body)) + body)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self.file.close()

    # The SDK's default limit of 128 attributes a span drops the oldest of a long
    # conversation's flattened messages, as it would in any app left at the defaults; each
    # drop is logged.
    logging.getLogger("opentelemetry.attributes").setLevel(logging.ERROR)
    # The batch processor's defaults: up to 512 spans an export, every 5 s or when 512 wait;
    # a queue big enough that the workload's spans are never dropped.
    tp = TracerProvider(resource=Resource.create({"service.name": "workload"}))
    tp.add_span_processor(BatchSpanProcessor(ToFile(), max_queue_size=1 << 20))
    AnthropicInstrumentor().instrument(tracer_provider=tp)
    OpenAIInstrumentor().instrument(tracer_provider=tp)
    llmlog.configure(db=sdk_db)
    with FakeProvider(latency_ms=0, first_token_ms=0, chunk_ms=0, seed=seed) as fake:
        a = anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
        o = openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0)
        llmlog.wrap(a), llmlog.wrap(o)
        for step in generate(steps_n, seed=seed):
            c = step.context
            metadata = {"feature": c["feature"], **c.get("metadata", {})}
            with (
                llmlog.context(**c),
                using_attributes(
                    session_id=c.get("session_id") or "",
                    user_id=c.get("user_id") or "",
                    metadata=metadata,
                    tags=c.get("tags") or [],
                    prompt_template_version=c.get("prompt_template_version") or "",
                ),
            ):
                run(step, a, o)
    llmlog.flush()
    tp.shutdown()


def spans_jsonl_bytes(path: Path) -> int:
    """The recorded spans' size as OTLP/JSON lines, one export a line (what the Collector's
    file exporter writes, and what a team keeping its spans as JSONL keeps): protobuf's JSON
    form with the trace and span ids in hex, as OTLP/JSON has them."""
    import base64

    import orjson
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def hex_ids(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else hex_ids(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [hex_ids(v) for v in value]
        return value

    total = 0
    for body in read_batches(path):
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        total += len(orjson.dumps(hex_ids(json_format.MessageToDict(message)))) + 1
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """A process and its descendants (a server with workers is a parent and its children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):  # gone meanwhile
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def _proc(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) of a process and its descendants, and the peak resident
    memory (VmHWM, bytes) of the largest of them."""
    cpu, hwm = 0.0, 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                hwm = max(hwm, int(line.split()[1]) * 1024)
    return cpu, hwm


def serve(
    db: str, pythonpath: str | None = None, workers: int = 1, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    # This tree's llmlog, or the one named (an older worktree, for a figure before a change).
    code = pythonpath or str(ROOT)
    env = {**os.environ, "LLMLOG_INGEST_TOKEN": "", "LLMLOG_UI_TOKEN": "", "PYTHONPATH": code, **(env or {})}
    cmd = [
        sys.executable,
        "-c",
        "from llmlog.cli import cli; cli()",
        "--db",
        db,
        "serve",
        "--port",
        str(port),
        "--no-retention",
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v1/openapi.json")
            conn.getresponse().read()
            conn.close()
            if workers > 1:  # one worker answered; the others start alongside it
                time.sleep(3)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"llmlog serve did not start: {proc.stderr.read()!r}") from None  # type: ignore[union-attr]
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("llmlog serve did not start in 60 s")


def post_all(
    port: int,
    batches: Iterator[bytes],
    clients: int,
    path: str = "/v1/traces",
    content_type: str = "application/x-protobuf",
) -> float:
    """Post every batch to `path`, `clients` at a time (each waits for its answer, as an
    exporter does); the seconds from the first post to the last answer."""
    todo = batches
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                body = next(todo, None)
            if body is None:
                break
            conn.request("POST", path, body, {"Content-Type": content_type})
            answer = conn.getresponse()
            text = answer.read()
            if answer.status != 200:
                errors.append(f"{answer.status}: {text[:300]!r}")
        conn.close()

    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError(f"{len(errors)} batches not taken: {errors[0]}")
    return time.perf_counter() - t


def recorded(tmp: Path, steps_n: int, seed: int) -> tuple[Path, str]:
    spans, sdk_db = tmp / "otlp-spans.bin", str(tmp / "otlp-sdk.db")
    cmd = [sys.executable, "-m", "bench.otlp", "record", str(steps_n), str(seed), str(spans), sdk_db]
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "LLMLOG_DB": ""})
    return spans, sdk_db


def run_server(
    db: str, spans: Path, clients: int, pythonpath: str | None = None, workers: int = 1
) -> dict[str, float]:
    """Post the batches to a fresh server: wall seconds, server CPU seconds (its workers'
    too), and the peak memory of its largest process after the first half of the stream
    (`hwm_half`) and at the end (`hwm`)."""
    proc, port = serve(db, pythonpath, workers)
    batches = read_batches(spans)  # read as they are sent: the client holds a few at a time
    half = sum(1 for _ in read_batches(spans)) // 2
    try:
        cpu0, _ = _proc(proc.pid)
        took = post_all(port, itertools.islice(batches, half), clients)
        _, hwm_half = _proc(proc.pid)
        took += post_all(port, batches, clients)
        cpu1, hwm = _proc(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"seconds": took, "cpu": cpu1 - cpu0, "hwm": hwm, "hwm_half": hwm_half}


def bench_otlp(
    tmp: Path,
    steps_n: int,
    seed: int,
    row: Callable[..., None],
    notes: list[str],
    sqlite_bytes: Callable[[str], int],
    workers: tuple[int, ...] = (2, 4),
    clients: int = 4,
) -> tuple[Path, str]:
    """The figures; returns the recording (the spans' file) and the SDK path's store of the
    same calls, for the parts after this one."""
    from llmlog.core.filters import CallFilter
    from llmlog.store import open_store

    print("OTLP ingest (OpenInference spans into llmlog serve)", flush=True)
    t = time.perf_counter()
    spans, sdk_db = recorded(tmp, steps_n, seed)
    recording = time.perf_counter() - t
    with open_store(sdk_db) as store:
        calls = store.count(CallFilter())
        jsonl = sum(len(c.to_json().encode()) + 1 for c in store.iter_calls(CallFilter()))
    sdk = sqlite_bytes(sdk_db)
    db = str(tmp / "otlp.db")
    got = run_server(db, spans, clients)
    with open_store(db) as store:
        n = store.count(CallFilter())
    otlp = sqlite_bytes(db)
    rate = n / got["seconds"]
    row("OTLP ingest into llmlog serve on SQLite (OpenInference spans)", f"{rate:,.0f} calls/s",
        "≥ 2,000/s", rate >= 2000)  # fmt: skip
    row("OTLP ingest: server CPU per call", f"{got['cpu'] / n * 1000:.2f} ms")
    row(
        "OTLP ingest: server peak memory (VmHWM), half the stream → all of it",
        f"{got['hwm_half'] / 2**20:,.0f} → {got['hwm'] / 2**20:,.0f} MiB",
        "bounded",
    )
    per_call, sdk_per_call, jsonl_per_call = otlp / n, sdk / calls, jsonl / calls
    row(
        "stored bytes per call, OTLP vs the SDK path, same calls",
        f"{per_call:,.0f} vs {sdk_per_call:,.0f} B ({per_call / sdk_per_call:.2f}×)",
        "≤ 1.5×",
        per_call <= 1.5 * sdk_per_call,
    )
    spans_per_call = spans_jsonl_bytes(spans) / n
    row(
        "stored bytes per call, OTLP vs the spans sent, as OTLP/JSON lines",
        f"{per_call:,.0f} vs {spans_per_call:,.0f} B (1/{spans_per_call / per_call:.1f})",
        "≤ 1/8",
        per_call * 8 <= spans_per_call,
    )
    row(
        "stored bytes per call, OTLP vs the calls' JSONL (`llmlog export`)",
        f"{per_call:,.0f} vs {jsonl_per_call:,.0f} B (1/{jsonl_per_call / per_call:.1f};"
        f" the SDK path 1/{jsonl_per_call / sdk_per_call:.1f})",
    )
    # Several worker processes over the same store (`serve --workers`): each does all a
    # request needs, and one request's matching of spans to calls is taken at a time.
    for n_workers in workers:
        many = run_server(str(tmp / f"otlp-{n_workers}w.db"), spans, clients, workers=n_workers)
        row(
            f"OTLP ingest, `serve --workers {n_workers}` (CPU per call; peak memory of one process)",
            f"{n / many['seconds']:,.0f} calls/s ({many['cpu'] / n * 1000:.2f} ms;"
            f" {many['hwm'] / 2**20:,.0f} MiB)",
        )
    sizes = [len(b) for b in read_batches(spans)]
    size = sum(sizes)
    notes.append(
        f"OTLP: {steps_n:,} workload calls ({n:,} stored from spans, {calls:,} through `llmlog.wrap`)"
        f" recorded through the OpenInference instrumentations in {recording:.0f} s; {len(sizes)}"
        f" protobuf batches ({size / 2**20:,.0f} MiB, {size / max(n, 1) / 1024:,.1f} KiB a call) posted"
        f" by {clients} clients in {got['seconds']:.1f} s."
    )
    return spans, sdk_db


def bench_otlp_postgres(
    spans: Path, urls: Callable[[], Iterator[str]], row: Callable[..., None], workers: tuple[int, ...]
) -> None:
    """The same recording into `llmlog serve --workers N` on PostgreSQL, a fresh schema
    each (`urls`), N processes sharing the ingest lock the store gives them."""
    from llmlog.core.filters import CallFilter
    from llmlog.store import open_store

    for n_workers in workers:
        for url in urls():
            got = run_server(url, spans, 4, workers=n_workers)
            with open_store(url) as store:
                n = store.count(CallFilter())
            figure = f"OTLP ingest on PostgreSQL, `serve --workers {n_workers}`"
            cpu, hwm = got["cpu"] / n * 1000, got["hwm"] / 2**20
            row(
                f"{figure} (CPU per call; peak memory of one process)",
                f"{n / got['seconds']:,.0f} calls/s ({cpu:.2f} ms; {hwm:,.0f} MiB)",
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record the workload's spans and SDK store (used by bench.run)")
    rec.add_argument("steps", type=int)
    rec.add_argument("seed", type=int)
    rec.add_argument("out", type=Path)
    rec.add_argument("sdk_db")
    post = sub.add_parser("post", help="post recorded spans to a fresh llmlog serve; print its figures")
    post.add_argument("spans", type=Path)
    post.add_argument("db")
    post.add_argument("--clients", type=int, default=4)
    post.add_argument("--pythonpath", help="the llmlog the server runs (e.g. an older worktree)")
    post.add_argument("--workers", type=int, default=1, help="the server's worker processes")
    args = parser.parse_args()
    if args.command == "record":
        record(args.steps, args.seed, args.out, args.sdk_db)
    else:
        got = run_server(args.db, args.spans, args.clients, args.pythonpath, args.workers)
        from llmlog.core.filters import CallFilter
        from llmlog.store import open_store

        with open_store(args.db) as store:
            n = store.count(CallFilter())
        import sqlite3

        db = sqlite3.connect(args.db)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        size = os.path.getsize(args.db)
        print(
            f"{n} calls in {got['seconds']:.2f} s: {n / got['seconds']:,.0f} calls/s;"
            f" server CPU {got['cpu'] / n * 1000:.2f} ms/call;"
            f" VmHWM {got['hwm_half'] / 2**20:,.0f} → {got['hwm'] / 2**20:,.0f} MiB;"
            f" {size / n:,.0f} B/call"
        )


if __name__ == "__main__":
    main()
