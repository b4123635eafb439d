"""The benchmark harness still runs (tiny sizes; no timing is asserted: benchmarks are not tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("SQLite", "PostgreSQL", "ClickHouse")


# As long as the harness's run is given (its subprocess's timeout): the smoke run starts servers
# and stores of every engine, which on a loaded machine takes past the suite's 120 s.
@pytest.mark.timeout(300)
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
        "ingest into SQLite beside a busy app thread (writer in the app)",
        "ingest into PostgreSQL beside a busy app thread (writer in the app)",
        "ingest into PostgreSQL through the writer, one connection (as before)",
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
        "an empty span's added time (llmlog.span)",
        *(f"long answers: stored bytes per call, {kind} vs JSONL" for kind in KINDS),
        "long answers, PostgreSQL: recent 100, free text",
        *(
            f"{kind}: page {page}"
            for kind in KINDS
            for page in ("traces, newest 50", "one trace of median size")
        ),
    ):
        assert figure in report, figure
    # The previous figures are replaced, not added to.
    assert "old figures" not in report and report.count("<!-- bench:start -->") == 1


@pytest.mark.timeout(300)
def test_bench_of_some_parts_updates_their_rows_and_keeps_the_others(
    tmp_path: Path, postgres_server: str
) -> None:
    out = tmp_path / "BENCHMARKS.md"
    before = [
        "| figure | measured | goal | |",
        "|---|---|---|---|",
        "| ingest into SQLite through the writer | 844 calls/s | ≥ 5,000/s | **missed** |",
        "| an empty span's added time (llmlog.span) | old | ≤ 20 µs | met |",
        "| ClickHouse: page dashboard, 30 days, 1.0M calls | 131.5 ms | ≤ 200 ms | met |",
    ]
    out.write_text(
        "# Benchmarks\n\nProse.\n\n<!-- bench:start -->\nMeasured 2026-12-06 on a machine.\n\n"
        + "\n".join(before)
        + "\n\n- A note of the full run.\n<!-- bench:end -->\nProse after.\n"
    )
    for parts in (["span"], ["span", "traces"]):  # the second's span row replaces the first's
        proc = subprocess.run(
            [sys.executable, "-m", "bench.run", "--smoke", "--only", *parts, "--out", str(out),
             "--postgres", postgres_server],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "LLMLOG_DB": ""},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert report.startswith("# Benchmarks\n\nProse.\n")
    assert report.endswith("<!-- bench:end -->\nProse after.\n")
    lines = report.split("\n")
    rows = [line for line in lines if line.startswith("| ")]
    # The span's row in its place, measured again; the traces' rows, new, after it (the row
    # measured before them); the others as they were.
    assert rows[:2] == before[:1] + before[2:3] and rows[-1] == before[4]
    assert rows[2].startswith("| an empty span's added time (llmlog.span) | ") and "| old |" not in report
    for kind in KINDS:
        for page in ("list_traces 50, no filter", "page traces, newest 50", "page one trace of median size"):
            assert sum(row.startswith(f"| {kind}: {page}") for row in rows[3:-1]) == 1, (kind, page)
    assert "- A note of the full run." in lines and "Measured 2026-12-06 on a machine." in lines
    for parts in ("span", "span traces"):  # a note of each run, saying when and where
        said = f"- The rows of `python -m bench.run --only {parts}`: measured "
        notes = [line for line in lines if line.startswith(said)]
        assert len(notes) == 1 and "empty spans stored by the writer" in notes[0], parts
