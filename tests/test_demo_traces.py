"""The demo's agents as traced requests (`llmlog.demo.traffic`): after a small `llmlog demo`,
each agent call sits in a whole tree of spans — a root span per request, retrieval, tools
and formatting beside the model calls — and so does every copy the history made of it, under
ids of its own and shifted as its calls are. On each store kind, through the CLI."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, Span
from tests.backends import Backend

ROOTS = {
    "support-bot": "support-bot.reply",
    "research-agent": "research-agent.run",
    "sql-assistant": "sql-assistant.answer",
}
# A span starts on the wall clock and ends by the monotonic one, as a call's latency is timed;
# a child's times are within its parent's up to the clocks' granularity.
GRANULARITY = timedelta(milliseconds=1)


def _history(call: Call) -> bool:
    return "history" in (call.tags or [])


def _within(parent: Span, start: datetime, end: datetime | None) -> bool:
    assert parent.end is not None and end is not None
    return parent.start - GRANULARITY <= start <= end <= parent.end + GRANULARITY


def _shape(spans: list[Span], calls: list[Call]) -> tuple[tuple[str, timedelta, timedelta | None], ...]:
    """A trace as times relative to its root's start: the same for a copy as for its original."""
    (root,) = [s for s in spans if s.parent_id is None]
    steps = [(s.name, s.start - root.start, s.end and s.end - s.start) for s in spans]
    steps += [("call", c.timestamp - root.start, timedelta(milliseconds=c.latency_ms or 0)) for c in calls]
    return tuple(sorted(steps, key=repr))


def test_the_demos_agent_requests_are_whole_trees_history_copies_too(backend: Backend) -> None:
    result = CliRunner().invoke(
        cli, ["--db", backend.url, "demo", "--calls", "150", "--history", "3"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    with backend.open() as store:
        calls = list(store.iter_calls(CallFilter()))
        agents = [c for c in calls if c.feature in ROOTS]
        assert {c.feature for c in agents} == set(ROOTS) and any(map(_history, agents))
        # The single-call features are left untraced, as an app would leave them.
        assert all(c.trace_id is None for c in calls if c.feature not in ROOTS)
        assert all(c.trace_id and c.parent_id for c in agents)
        spans = store.traces(sorted({c.trace_id for c in agents if c.trace_id}))
        summaries = {s.trace_id: store.trace_summary(s.trace_id) for s in spans if s.parent_id is None}

    by_trace: dict[str, dict[str, Span]] = defaultdict(dict)
    for s in spans:
        by_trace[s.trace_id][s.span_id] = s
    calls_of: dict[str, list[Call]] = defaultdict(list)
    for c in agents:
        assert c.trace_id is not None and c.parent_id is not None
        calls_of[c.trace_id].append(c)
        parent = by_trace[c.trace_id].get(c.parent_id)
        assert parent is not None, f"call {c.id}: no parent span {c.parent_id} in trace {c.trace_id}"
        assert _within(parent, c.timestamp, c.timestamp + timedelta(milliseconds=c.latency_ms or 0)), c.id
    assert set(by_trace) == set(calls_of)

    shapes: dict[bool, set[tuple[object, ...]]] = {True: set(), False: set()}
    span_ids: dict[bool, set[str]] = {True: set(), False: set()}
    for trace_id, kept in by_trace.items():
        roots = [s for s in kept.values() if s.parent_id is None]
        assert len(roots) == 1, f"trace {trace_id}: roots {[s.name for s in roots]}"
        features = {c.feature for c in calls_of[trace_id]}
        assert features == {next(f for f, name in ROOTS.items() if name == roots[0].name)}
        for s in kept.values():
            if s.parent_id is not None:
                parent = kept.get(s.parent_id)
                assert parent is not None, f"span {s.name} of trace {trace_id}: no parent {s.parent_id}"
                assert _within(parent, s.start, s.end), f"{s.name} outside {parent.name} in {trace_id}"
        # The trace pages' figures (`Store.trace_summary`) count the whole tree, copies too.
        summary = summaries[trace_id]
        assert summary is not None and summary.name == roots[0].name
        assert (summary.spans, summary.calls) == (len(kept), len(calls_of[trace_id]))
        assert summary.feature in features and summary.started <= roots[0].start
        copied = {_history(c) for c in calls_of[trace_id]}
        assert len(copied) == 1  # a trace is all copy or all original
        copy = copied.pop()
        shapes[copy].add(_shape(list(kept.values()), calls_of[trace_id]))
        span_ids[copy] |= set(kept)
    # Each copy is one of the demo's own requests, every step moved by the same amount, under
    # ids of its own.
    assert shapes[True] and shapes[True] <= shapes[False]
    assert not span_ids[True] & span_ids[False]

    names = {s.name for s in spans}
    assert {"retrieve-context", "format-answer", "lookup_order", "run_sql", "web_search"} <= names
    retrieved = [s for s in spans if s.name == "retrieve-context"]
    assert all({"index", "k", "hits"} <= set(s.attributes) for s in retrieved)
    # Some steps fail: a tool raising inside its span, and requests whose model call failed.
    tools = [s for s in spans if s.name in ("lookup_order", "run_sql", "web_search")]
    failed = [s for s in tools if s.status == "error"]
    assert failed and all(s.events[-1]["name"] == "exception" for s in failed)
    assert any(s.name in ROOTS.values() and s.status == "error" for s in spans)
    assert any(c.error for c in agents)
