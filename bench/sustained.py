"""One `llmlog serve` taking every way in, one after another, for as long as the bench
gives it: its peak memory after each, to show that it stops growing.

The server runs on a fresh SQLite store in a process of its own, its proxy pointed at the
fake provider (in another process). In order:
1. the OTLP recording (`bench.otlp`'s: the workload's calls as OpenInference spans), posted
   by four clients;
2. `rounds` times the same calls as records (`llmlog export`'s JSONL) to `/v1/calls`, 500 a
   request, four clients, each round with new ids, so that each is stored anew;
3. the proxy under wrk (16 connections) for `seconds`.
After each, the peak resident memory (VmHWM) of the server's largest process. What bounds it
is configuration (docs/configuration.md): the content caches (`LLMLOG_CACHE_MB`), the
requests decoded at once (`LLMLOG_INGEST_CONCURRENCY`) and the writer's queue (64 MiB of
bodies); none of them grows with how long the server runs.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from bench.otlp import _proc, post_all, read_batches, serve
from bench.proxy import load


def _records(sdk_db: str) -> list[dict[str, object]]:
    from llmlog.core.filters import CallFilter
    from llmlog.store import open_store

    with open_store(sdk_db) as store:
        return [orjson.loads(c.to_json()) for c in store.iter_calls(CallFilter())]


def _bodies(records: list[dict[str, object]], per: int) -> Iterator[bytes]:
    """NDJSON bodies of `per` records each, every record under a new id."""
    for i in range(0, len(records), per):
        lines = (orjson.dumps({**r, "id": uuid.uuid4().hex}) for r in records[i : i + per])
        yield b"\n".join(lines) + b"\n"


def bench_sustained(
    tmp: Path,
    spans: Path,
    sdk_db: str,
    fake_url: str,
    row: Callable[..., None],
    notes: list[str],
    rounds: int = 3,
    seconds: int = 10,
) -> None:
    from llmlog.core.filters import CallFilter
    from llmlog.store import open_store

    print("one server taking every way in, one after another (peak memory)", flush=True)
    records = _records(sdk_db)
    db = str(tmp / "sustained.db")
    proc, port = serve(db, env={"LLMLOG_ANTHROPIC_UPSTREAM": fake_url})
    peaks: list[int] = []
    try:
        post_all(port, read_batches(spans), 4)
        peaks.append(_proc(proc.pid)[1])
        for _ in range(rounds):
            post_all(port, _bodies(records, 500), 4, "/v1/calls", "application/x-ndjson")
            peaks.append(_proc(proc.pid)[1])
        if shutil.which("wrk"):
            load(f"http://127.0.0.1:{port}/anthropic", seconds)
            peaks.append(_proc(proc.pid)[1])
    finally:
        proc.terminate()
        proc.wait(60)
    with open_store(db) as store:
        stored = store.count(CallFilter())
    peak = max(peaks)
    row(
        "server peak memory (VmHWM) under sustained ingest: OTLP, then"
        f" {rounds}× the calls to `/v1/calls`, then the proxy under load",
        " → ".join(f"{p / 2**20:,.0f}" for p in peaks) + " MiB",
        "≤ 200 MiB",
        peak <= 200 * 2**20,
    )
    notes.append(
        f"Sustained ingest: one `llmlog serve` stored {stored:,} calls: {len(records):,} from spans,"
        f" {rounds} × {len(records):,} to `/v1/calls` (new ids each round)"
        + (f", then the proxy's for {seconds} s of wrk." if len(peaks) > rounds + 1 else ".")
    )


def main() -> None:
    import argparse
    import tempfile

    from bench.run import provider_process

    parser = argparse.ArgumentParser(prog="python -m bench.sustained", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "spans", type=Path, help="a recording: python -m bench.otlp record N SEED SPANS SDK_DB"
    )
    parser.add_argument("sdk_db", help="the SDK path's store of the same recording")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    notes: list[str] = []

    def show(figure: str, value: str, goal: str = "", met: bool | None = None) -> None:
        print(f"  {figure}\n    {value}  {goal}{'' if met is None else ('  ok' if met else '  MISSED')}")

    with tempfile.TemporaryDirectory() as tmp, provider_process(7) as fake:
        bench_sustained(Path(tmp), args.spans, args.sdk_db, fake.url, show, notes, args.rounds, args.seconds)
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
