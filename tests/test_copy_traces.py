"""`llmlog copy` copies traces whole: every span with the calls, so that the target's traces
have their trees and their figures (`Store.trace`, `Store.trace_summary`, `Store.list_traces`)
equal the source's, on every store; copying again, or after an interrupted copy, stores and
counts each span once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.filters import TraceFilter
from llmlog.core.record import Span
from llmlog.store import Store
from tests.backends import Backend, ClickHouseBackend, PostgresBackend, SQLiteBackend
from tests.test_traces_store import assert_same, fill, make_traces

PAIRS = [("sqlite", "sqlite"), ("sqlite", "postgres"), ("sqlite", "clickhouse"), ("clickhouse", "postgres")]


def _backend(kind: str, name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "sqlite":
        return SQLiteBackend(tmp_path / f"{name}.db")
    if kind == "clickhouse":
        return ClickHouseBackend(tmp_path / name)
    return PostgresBackend(request.getfixturevalue("pg_url"))


def _copy(source: Backend, target: Backend, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["copy", "--from", source.url, "--to", target.url, *extra])
    assert result.exit_code == 0, (result.stderr, repr(result.exception))
    return " ".join(result.stderr.split())  # the line as printed, whatever the terminal's width


def _traced() -> tuple[list, list[Span]]:
    """`make_traces`'s calls and spans, the spans with attributes, events and status messages
    (what a copy could lose or change)."""
    calls, spans = make_traces(24, seed=5)
    spans = [
        dataclasses.replace(
            s,
            attributes={"step": i, "query": f"find {i}", "nested": {"k": [1, "two"]}},
            events=[
                {"name": "exception", "time": s.start.isoformat(), "attributes": {"message": f"boom {i}"}}
            ]
            if i % 4 == 0
            else [],
            status_message="failed here" if s.status == "error" else None,
        )
        for i, s in enumerate(spans)
    ]
    return calls, spans


def _trace_ids(store: Store) -> list[str]:
    return [t.trace_id for t in store.list_traces(TraceFilter(), 10**6)]


def _spans_by_trace(store: Store, trace_ids: list[str]) -> dict[str, list[Span]]:
    return {t: store.trace(t) for t in trace_ids}


def _assert_same_traces(source: Backend, target: Backend) -> None:
    with source.open() as src, target.open() as dst:
        ids = _trace_ids(src)
        assert ids and _trace_ids(dst) == ids
        assert _spans_by_trace(dst, ids) == _spans_by_trace(src, ids)
        for t in ids:
            expected = src.trace_summary(t)
            assert expected is not None
            assert_same(dst.trace_summary(t), expected)
        for got, expected in zip(
            dst.list_traces(TraceFilter(), 10**6), src.list_traces(TraceFilter(), 10**6), strict=True
        ):
            assert_same(got, expected)


def _span_rows(backend: Backend) -> int:
    return backend.sql("SELECT count(*) FROM spans")[0][0]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_copy_brings_each_trace_whole(
    source_kind: str, target_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = _backend(source_kind, "source", request, tmp_path)
    target = _backend(target_kind, "target", request, tmp_path)
    calls, spans = _traced()
    with source.open() as src:
        fill(src, calls, spans)

    said = _copy(source, target, "--batch", "7")
    assert f"Copied {len(calls)} call(s) and {len(spans)} span(s)" in said, said
    assert "already there" not in said
    _assert_same_traces(source, target)

    # Again: nothing is stored twice, nothing counted twice.
    said = _copy(source, target)
    assert "Copied 0 call(s) and 0 span(s)" in said, said
    assert f"{len(calls)} call(s) and {len(spans)} span(s) already there" in said, said
    assert _span_rows(target) == len(spans)
    _assert_same_traces(source, target)


@pytest.mark.parametrize("target_kind", ["sqlite", "postgres", "clickhouse"])
def test_an_interrupted_copy_resumes_and_counts_each_span_once(
    target_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = SQLiteBackend(tmp_path / "source.db")
    target = _backend(target_kind, "target", request, tmp_path)
    calls, spans = _traced()
    with source.open() as src:
        fill(src, calls, spans)
    # Some of it is there already (not a prefix), as an interrupted copy leaves it.
    there = spans[3:17] + spans[40:45]
    with target.open() as dst:
        assert dst.insert_spans(there) == []
        dst.insert(calls[10:20])

    said = _copy(source, target, "--batch", "6")
    expected = f"Copied {len(calls) - 10} call(s) and {len(spans) - len(there)} span(s)"
    assert expected in said and f"10 call(s) and {len(there)} span(s) already there" in said, said
    assert _span_rows(target) == len(spans)
    _assert_same_traces(source, target)


def test_copy_keeps_a_span_the_target_cannot_hold_out_and_the_rest_in(tmp_path: Path, pg_url: str) -> None:
    """A root span whose name is too long for PostgreSQL's index of trace names (SQLite keeps
    it): that span is refused with its ids, the others are copied. A NUL in another span's
    name (which PostgreSQL cannot hold) is replaced, as in a call's text, and the span kept."""
    source, target = SQLiteBackend(tmp_path / "source.db"), PostgresBackend(pg_url)
    calls, spans = _traced()
    at = next(i for i, s in enumerate(spans) if s.parent_id is None)
    bad = spans[at] = dataclasses.replace(
        spans[at],
        name="".join(f"{i * 7919 % 100_003:x}" for i in range(3000)),  # ~15 kB, no repeats
    )
    nul = next(i for i, s in enumerate(spans) if s.parent_id is not None and s.trace_id != bad.trace_id)
    spans[nul] = dataclasses.replace(spans[nul], name="step\x00five")
    with source.open() as src:
        fill(src, calls, spans)
    result = CliRunner().invoke(cli, ["copy", "--from", source.url, "--to", target.url])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 1, said
    assert f"and {len(spans) - 1} span(s)" in said and "1 could not be kept" in said, said
    assert f"span {bad.span_id} of trace {bad.trace_id}:" in said
    assert _span_rows(target) == len(spans) - 1
    assert target.sql("SELECT count(*) FROM spans WHERE name = %s", ("step\ufffdfive",))[0][0] == 1
