"""`llmlog trace` on real stores (a SQLite file, a PostgreSQL schema): a request traced with
`llmlog.span` around the wrapped real SDK, drawn as a tree in the terminal."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, Span
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import open_store
from tests.backends import admin, new_schema
from tests.test_cli import run
from tests.traced import traced_agent


@dataclass
class Traced:
    db: str
    trace_id: str
    plan: Call
    answer: Call


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def traced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeProvider
) -> Iterator[Traced]:
    """A store of each kind holding one failing traced request (tests/traced.py)."""
    server = schema = None
    if request.param == "sqlite":
        db = str(tmp_path_factory.mktemp("traced") / "traced.db")
    else:
        server = request.getfixturevalue("postgres_server")
        schema, db = new_schema(server)
    try:
        trace_id = traced_agent(db, fake, fail=True)
        with open_store(db) as store:
            calls = store.recent(CallFilter(trace_id=trace_id), limit=10)
        plan, answer = sorted(calls, key=lambda c: c.timestamp)
        yield Traced(db, trace_id, plan, answer)
    finally:
        if server:
            admin(server, f"DROP SCHEMA {schema} CASCADE")


def lines_of(output: str) -> list[str]:
    return [line.rstrip() for line in output.splitlines() if line.strip()]


def test_trace_prints_the_tree(traced: Traced) -> None:
    result = run(traced.db, "trace", traced.trace_id)
    assert result.exit_code == 0, result.output
    header, figures, columns, *rows = lines_of(result.stdout)
    assert header.startswith("Trace agent run") and traced.trace_id in header
    assert " · 3 spans · 2 calls · " in figures and "1 failed call, 1 failed span" in figures
    assert columns.split()[:2] == ["span", "/"]
    # Names indented by depth, in tree order.
    names = [re.match(r"( *)(\S+(?: \S+)?)", row) for row in rows]
    assert [(len(m.group(1)), m.group(2)) for m in names if m] == [
        (0, "agent run"),
        (2, "retrieve"),
        (2, "claude-sonnet-4-6 (call)"),
        (2, "tool lookup_order"),
        (2, "claude-sonnet-4-6 (call)"),
    ]
    plan, tool, answer = rows[2], rows[3], rows[4]
    # A call: its id's start (what `show` takes), model, tokens and cost.
    assert traced.plan.id[:8] in plan and f"{traced.plan.input_tokens} / {traced.plan.output_tokens}" in plan
    assert re.search(r"\$0\.\d+", plan)
    # Failures marked: the span's exception, the refused call's error.
    assert "✗ error: LookupError: order 7 not found" in tool and "✗ overloaded_error" in answer
    # Each a bar on the time axis: the root's fills it, the others start later and are shorter.
    bars = [re.search(r"█+", row) for row in rows]
    assert all(bars)
    spans = [(m.start(), m.end()) for m in bars if m]
    assert spans[0][1] - spans[0][0] == max(e - s for s, e in spans)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    assert all(re.search(r"\d+ms", row) for row in rows)  # offsets and durations


def test_trace_json_is_the_pages_json(traced: Traced) -> None:
    result = run(traced.db, "trace", traced.trace_id, "--json")
    assert result.exit_code == 0, result.output
    tree = json.loads(result.stdout)
    assert (tree["trace_id"], tree["name"], tree["spans"], tree["calls"], tree["errors"]) == (
        traced.trace_id,
        "agent run",
        3,
        2,
        1,
    )
    assert [n["name"] for n in tree["nodes"]] == [
        "agent run",
        "retrieve",
        "claude-sonnet-4-6",
        "tool lookup_order",
        "claude-sonnet-4-6",
    ]
    assert tree["nodes"][2]["call"]["id"] == traced.plan.id
    assert tree["nodes"][3]["status_message"] == "LookupError: order 7 not found"  # the text too


def test_trace_takes_the_start_of_an_id(traced: Traced) -> None:
    result = run(traced.db, "trace", traced.trace_id[:8])
    assert result.exit_code == 0 and traced.trace_id in result.stdout
    missing = run(traced.db, "trace", "0" * 32)
    assert missing.exit_code == 1 and "no trace with id '" + "0" * 32 + "'" in missing.stderr
    assert run(traced.db, "trace", "x' OR '1'='1").exit_code == 1
    short = run(traced.db, "trace", traced.trace_id[:3])  # too short to be taken as a start
    assert short.exit_code == 1 and "no trace with id" in short.stderr


def test_an_ambiguous_start_and_a_long_trace(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    twins = ["abcd" + uuid.uuid4().hex[4:] for _ in range(2)]
    chain = "f" * 32
    with open_store(db) as store:
        store.insert_spans([Span(t, "1" * 16, None, "root", "internal", t0, t0) for t in twins])
        store.insert_spans(
            [
                Span(chain, f"{i + 1:016x}", f"{i:016x}" if i else None, f"step {i}", "internal", t0,
                     t0 + timedelta(seconds=1))
                for i in range(50)
            ]
        )  # fmt: skip
    result = run(db, "trace", "abcd")
    assert result.exit_code == 1 and "ambiguous" in result.stderr
    result = run(db, "trace", chain, "--limit", "20")
    assert result.exit_code == 0
    rows = lines_of(result.stdout)[3:]
    assert len(rows) == 21 and rows[-1] == "… 30 more spans and calls: --limit 50 prints them all"
    assert rows[-2].startswith(" " * 32 + "[19] step 19")  # indentation stops; the depth is said


def test_span_names_are_printed_as_text(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    trace = "e" * 32
    with open_store(db) as store:
        store.insert_spans(
            [
                Span(trace, "1" * 16, None, "[bold red]x[/] \x1b[31mred", "internal", t0, t0,
                     status="error", status_message="[blink]boom[/blink]\x1b]0;title\x07")
            ]
        )  # fmt: skip
    result = run(db, "trace", trace)
    assert result.exit_code == 0
    assert "[bold red]x[/] \\x1b[31mred" in result.stdout and "[blink]boom[/blink]" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


# ---------------------------------------------------------------- the list


def _fleet(db: str) -> list[str]:
    """Six traces ten minutes apart, newest now: trace k a root span named `job {k % 2}`
    lasting k seconds, holding one call of user `u{k % 3}` costing k cents (trace 3 failed)."""
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [f"{k + 1:032x}" for k in range(6)]
    with open_store(db) as store:
        for k, trace in enumerate(ids):
            start = now - timedelta(minutes=10 * (5 - k))
            store.insert_spans(
                [Span(trace, "a" * 16, None, f"job {k % 2}", "internal", start, start + timedelta(seconds=k))]
            )
            store.insert(
                [
                    Call(
                        trace_id=trace,
                        parent_id="a" * 16,
                        timestamp=start,
                        model="claude-haiku-4-5",
                        user_id=f"u{k % 3}",
                        input_tokens=100 * k,
                        output_tokens=10,
                        cost_usd=0.01 * k,
                        error={"type": "api_error"} if k == 3 else None,
                    )
                ]
            )
    return ids


def listed(output: str) -> list[str]:
    """The ids of a `traces` table's rows (the header line dropped)."""
    return [line.split()[0] for line in lines_of(output)[1:]]


def test_traces_lists_recent_traces_with_their_figures(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    ids = _fleet(db)
    result = run(db, "traces")
    assert result.exit_code == 0, result.output
    header, *rows = lines_of(result.stdout)
    assert header.split() == [
        "id",
        "started",
        "(UTC)",
        "name",
        "duration",
        "spans",
        "calls",
        "in",
        "/",
        "out",
        "cost",
        "errors",
    ]
    assert listed(result.stdout) == ids[::-1]
    failed = re.split(r"\s{2,}", rows[2].strip())
    assert failed[0] == ids[3] and failed[2:] == [
        "job 1",
        "3.00s",
        "1",
        "1",
        "300 / 10",
        "$0.0300",
        "1 failed call",
    ]
    as_json = json.loads(run(db, "traces", "--json").stdout)
    assert [t["trace_id"] for t in as_json] == ids[::-1]
    assert (as_json[0]["name"], as_json[0]["duration_ms"], as_json[0]["cost_usd"]) == ("job 1", 5000.0, 0.05)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--name", "job 0"], [4, 2, 0]),
        (["--user", "u1"], [4, 1]),
        (["--errors"], [3]),
        (["--min-ms", "3000"], [5, 4, 3]),
        (["--min-cost", "0.035"], [5, 4]),
        (["--since", "25m"], [5, 4, 3]),
        (["--until", "25m"], [2, 1, 0]),
        (["--limit", "2"], [5, 4]),
        (["--name", "job 1", "--min-ms", "2000", "--errors"], [3]),
    ],
)
def test_traces_filters(tmp_path: Path, args: list[str], expected: list[int]) -> None:
    db = str(tmp_path / "t.db")
    ids = _fleet(db)
    result = run(db, "traces", *args)
    assert result.exit_code == 0, result.output
    assert listed(result.stdout) == [ids[k] for k in expected]


def test_traces_says_what_is_wrong(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    _fleet(db)
    bad = run(db, "traces", "--min-ms", "soon")
    assert bad.exit_code == 2 and "Invalid value for '--min-ms': 'soon' is not a number" in bad.stderr
    assert run(db, "traces", "--min-cost", "-1").exit_code == 2
    assert "neither a duration" in run(db, "traces", "--since", "yesterday-ish").stderr
    none = run(db, "traces", "--name", "nope")
    assert none.exit_code == 0 and none.stdout == "" and "No traces match" in none.stderr
    assert json.loads(run(db, "traces", "--name", "nope", "--json").stdout) == []
