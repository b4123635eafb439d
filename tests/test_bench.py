"""The benchmark harness still runs (tiny sizes; no timing is asserted: benchmarks are not tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_writes_the_report(tmp_path: Path, postgres_server: str) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(
        "# Benchmarks\n\nProse above the figures stays.\n\n"
        "<!-- bench:start -->old figures<!-- bench:end -->\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), "--postgres", postgres_server],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LLMLOG_DB": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert report.startswith("# Benchmarks\n\nProse above the figures stays.")
    for figure in (
        "added latency per call, sync, p50",
        "added latency per call, async, p99",
        "first-token delay",
        "ingest into SQLite",
        "ingest into PostgreSQL",
        "stored bytes per call, SQLite vs JSONL",
        "writer memory",
        "OTLP ingest into llmlog serve on SQLite (OpenInference spans)",
        "OTLP ingest: server CPU per call",
        "OTLP ingest: server peak memory",
        "stored bytes per call, OTLP vs the SDK path, same calls",
        "stored bytes per call, OTLP vs the spans sent, as OTLP/JSON lines",
        "stored bytes per call, OTLP vs the calls' JSONL",
        "SQLite: collector ingest p99, console idle vs running its slowest query",
        "PostgreSQL: collector ingest p99, console idle vs running its slowest query",
        "SQLite: recent 100 calls, filter on error",
        "PostgreSQL: one call's full detail",
        "30-day cost per day per model",
        "ingest into ClickHouse (embedded)",
        "stored bytes per call, ClickHouse vs JSONL",
        "ClickHouse: page dashboard, 30 days",
        "SQLite: list_traces 50, no filter",
        "PostgreSQL: list_traces 50, errors",
        "ClickHouse: trace_summary",
    ):
        assert figure in report, figure
    # The previous figures are replaced, not added to.
    assert "old figures" not in report and report.count("<!-- bench:start -->") == 1
