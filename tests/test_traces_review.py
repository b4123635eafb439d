"""Traces under hostile or unusual input: ids no page can name, huge names, NUL in a filter,
OTLP ids and times as exporters send them, named traces in remote mode, absurd latencies."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import llmlog
from llmlog.core.filters import TraceFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import Store, open_store
from tests.backends import Backend, PostgresBackend, SQLiteBackend
from tests.test_cli import run
from tests.test_otlp import TOKEN
from tests.test_remote import TOKEN as REMOTE_TOKEN
from tests.test_remote import Collector
from tests.webui import Running

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def any_backend(every_engine: Backend) -> Backend:
    return every_engine


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def test_a_call_with_a_long_latency_is_stored_on_every_engine(store: Store) -> None:
    """A finite, non-negative latency passes the record's checks and is stored on SQLite and
    ClickHouse; on PostgreSQL the traces trigger's `timestamp + latency * interval` overflows
    and the call is refused, with the trigger's SQL as the reason."""
    trace = uuid.uuid4().hex
    calls = [
        Call(timestamp=T0, trace_id=trace, model="m", latency_ms=10.0),
        Call(timestamp=T0 + timedelta(seconds=1), trace_id=trace, model="m", latency_ms=1e16),
    ]
    assert store.insert(calls) == 2
    summary = store.trace_summary(trace)
    assert summary is not None and summary.calls == 2


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    backend: Backend = (
        SQLiteBackend(tmp_path / "calls.db")
        if request.param == "sqlite"
        else PostgresBackend(request.getfixturevalue("pg_url"))
    )
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


def _post_call(site: Running, trace_id: str, second: int = 0) -> None:
    r = site.post(
        "/v1/calls",
        json={"timestamp": (T0 + timedelta(seconds=second)).isoformat(), "trace_id": trace_id, "model": "m"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text


@pytest.mark.parametrize("trace_id", ["x" * 300, "req-\x1b[31m-red", ".."])
def test_a_trace_id_no_page_can_name_is_refused_with_its_call(site: Running, trace_id: str) -> None:
    """A trace id too long, with a control character, or a dot segment names no page and
    prints as something else: the call is refused, alone, saying why, and never listed."""
    r = site.post(
        "/v1/calls",
        json=[{"timestamp": T0.isoformat(), "trace_id": trace_id, "model": "m"},
              {"timestamp": T0.isoformat(), "model": "kept"}],
        headers={"Authorization": f"Bearer {TOKEN}"},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert "trace_id" in r.text
    assert site.get("/api/traces").json()["traces"] == []


@pytest.mark.parametrize("trace_id", ["../../logout", "../calls", "req-42/a b"])
def test_a_trace_link_stays_on_its_trace(site: Running, trace_id: str) -> None:
    """A trace id with dot segments, sent through POST /v1/calls, makes the list's link
    (`href="/traces/{{ id | urlencode }}"`, which leaves '/' and '.' as they are) resolve to
    another page of the app: '..' opens the dashboard, '../../logout' the logout route."""
    _post_call(site, trace_id)
    page = site.get("/traces").text
    [href] = re.findall(r'<a href="(/traces/[^"]+)" title=', page)
    r = site.get(href, follow_redirects=True)
    assert r.url.path.startswith("/traces/"), r.url  # httpx resolves dot segments as a browser does
    assert r.status_code == 200


def test_trace_header_prints_no_terminal_control(tmp_path: Path) -> None:
    """`llmlog trace ID` prints the trace id in its header as it is stored (`_header`:
    `title.append(f"  {t.trace_id}")`, not through `printable`): an id with an escape,
    which calls take from anyone who can POST /v1/calls, reaches the terminal."""
    db = str(tmp_path / "t.db")
    trace = "req-\x1b]0;owned\x07\x1b[2J"
    with open_store(db) as s:
        s.insert([Call(timestamp=T0, trace_id=trace, model="m")])
    result = run(db, "trace", trace)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


def test_a_nul_in_a_filter_is_a_400_not_a_500(any_backend: Backend) -> None:
    """PostgreSQL refuses a NUL in a text parameter: `?name=%00` (or user, feature, session)
    on /traces and /api/traces is a 500 there (the calls list's `?feature=%00` too)."""
    with Running(any_backend) as site:
        for params in ({"name": "\x00"}, {"user": "a\x00b"}):
            for path in ("/traces", "/api/traces"):
                assert site.get(path, params=params).status_code in (200, 400), (path, params)


@pytest.mark.parametrize("trace_id", ["../../logout", "req-\x1b[31m-red", "x" * 5000])
def test_otlp_json_ids_are_hex_as_post_v1_spans_demands(tmp_path: Path, trace_id: str) -> None:
    """OTLP/JSON ids are hex (the OTLP spec; POST /v1/spans checks ^[0-9a-f]{32}$), but
    `capture.otlp._id` takes any string a JSON export gives as traceId or spanId: ids with
    path segments, terminal escapes or thousands of characters reach the traces list, its
    links and `llmlog trace`."""
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "00f067aa0ba902b7",
                                "name": "root",
                                "startTimeUnixNano": "1772366400000000000",
                                "endTimeUnixNano": "1772366401000000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as site:
        site.post("/v1/traces", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        stored = [t["trace_id"] for t in site.get("/api/traces").json()["traces"]]
        assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in stored), stored


def test_huge_span_names_do_not_make_huge_pages(tmp_path: Path) -> None:
    """A span's name and service are kept whole whatever their length (POST /v1/spans, OTLP)
    and drawn whole: 20 traces whose root is named with a megabyte make /traces a 40 MB page
    (and /api/traces as much), and 1,000 spans named with 50,000 characters a 50 MB trace page.
    Only attributes and events are cut (`web.traces.TEXT_SHOWN`)."""
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as site:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        roots = [
            {"trace_id": f"{k:032x}", "span_id": "a" * 16, "name": "N" * 1_000_000,
             "start": "2026-03-01T12:00:00Z", "service": "S" * 1_000_000}
            for k in range(1, 21)
        ]  # fmt: skip
        assert site.post("/v1/spans", json=roots, headers=headers).status_code == 200
        trace = "f" * 32
        wide = [
            {"trace_id": trace, "span_id": f"{i:016x}", "parent_id": None if i == 0 else "0" * 16,
             "name": "x" * 50_000, "start": "2026-03-01T12:00:00Z"}
            for i in range(1000)
        ]  # fmt: skip
        assert site.post("/v1/spans", json=wide, headers=headers).status_code == 200
        assert len(site.get("/traces").content) < 5 * 2**20
        assert len(site.get(f"/traces/{trace}").content) < 5 * 2**20


def test_an_otlp_span_ending_before_it_starts_gives_no_negative_duration(tmp_path: Path) -> None:
    """POST /v1/spans refuses a span whose end is before its start (`Span.from_dict`), and an
    OTLP model-call span so made is refused (its call's latency is negative); but any other
    OTLP span is kept as sent: its trace lists with a duration of -1000 ms, on the list, the
    page and `llmlog trace`, and its bar has a negative width."""
    trace = "ab" * 16
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": "00f067aa0ba902b7",
                                "name": "root",
                                "startTimeUnixNano": "1772366401000000000",
                                "endTimeUnixNano": "1772366400000000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as site:
        site.post("/v1/traces", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        for t in site.get("/api/traces").json()["traces"]:
            assert t["duration_ms"] is None or t["duration_ms"] >= 0, t
        r = site.get(f"/api/traces/{trace}")
        if r.status_code == 200:
            assert all(n["duration_ms"] is None or n["duration_ms"] >= 0 for n in r.json()["nodes"])


def test_an_all_zero_parent_span_id_is_a_root(tmp_path: Path) -> None:
    """An all-zero span id is OpenTelemetry's invalid id: a parent so named is no parent (some
    exporters and converters, Zipkin's and Jaeger's among them, write it for a root). It is
    kept as a parent id (`capture.otlp._span`/`_pb_span`): the trace has no name on the list,
    and its root is drawn as a span whose parent never arrived."""
    trace = "cd" * 16
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": "00f067aa0ba902b7",
                                "parentSpanId": "0000000000000000",
                                "name": "checkout",
                                "startTimeUnixNano": "1772366400000000000",
                                "endTimeUnixNano": "1772366401000000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as site:
        site.post("/v1/traces", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        [listed] = site.get("/api/traces").json()["traces"]
        assert listed["name"] == "checkout"
        assert site.get(f"/api/traces/{trace}").json()["orphans"] == 0


def test_a_span_in_a_named_trace_reaches_the_collector(fake: FakeProvider, tmp_path: Path) -> None:
    """`llmlog.context(trace_id="req-42")` names a trace (a supported use: the trace page's
    own tests open `/traces/req-42/a b`); `llmlog.span` inside it takes that id. Written
    to a store directly, the span is kept; in remote mode POST /v1/spans demands 32 hex
    digits and refuses it: the same code keeps its spans locally and loses them remotely."""
    collector = Collector(str(tmp_path / "collected.db")).start()
    try:
        llmlog.configure(url=collector.url, token=REMOTE_TOKEN, spool=str(tmp_path / "spool"))
        with llmlog.context(trace_id="req-42"), llmlog.span("handle request"):
            pass
        assert llmlog.flush(10)
        llmlog.configure(db=str(tmp_path / "unused.db"))  # stops the remote writer, flushing
        with open_store(collector.db) as store:
            assert [s.name for s in store.trace("req-42")] == ["handle request"]
    finally:
        llmlog.configure(db=str(tmp_path / "unused.db"))
        collector.stop()


def test_a_trace_listed_after_retention_opens(tmp_path: Path) -> None:
    """Retention deletes a day's calls and spans; the trace's row stays (the cold tier) and
    /traces lists it, linking to /traces/{id}: the page shows the kept figures and says why
    there is no tree, and so do its JSON and `llmlog trace`."""
    with Running(SQLiteBackend(tmp_path / "calls.db")) as site:
        trace = uuid.uuid4().hex
        old = T0 - timedelta(days=400)
        site.store.insert([Call(timestamp=old, trace_id=trace, model="m", feature="old", cost_usd=0.5)])
        assert site.store.purge(old.date(), ["old"]).calls == 1
        [href] = re.findall(r'<a href="(/traces/[^"]+)" title=', site.get("/traces").text)
        page = site.get(href)
        assert page.status_code == 200 and "retention deleted them" in page.text and "$0.5000" in page.text
        data = site.get(href.replace("/traces/", "/api/traces/")).json()
        assert data["gone"] is True and data["nodes"] == [] and data["calls"] == 1
    result = run(str(tmp_path / "calls.db"), "trace", trace)
    assert result.exit_code == 0 and "retention" in result.stdout, result.output


def test_older_pages_do_not_lose_traces_that_started_at_the_same_time(store: Store) -> None:
    """Traces that started at one instant (calls imported with second precision, a batch
    job starting many at once) are each on one page: "older" goes on after the last one
    shown in the list's order (its start, then its id), as the page's link asks."""
    ids = [f"{k:032x}" for k in range(1, 6)]
    assert store.insert([Call(timestamp=T0, trace_id=t, model="m") for t in ids]) == 5
    seen: list[str] = []
    page = store.list_traces(TraceFilter(), 2)
    while page:
        seen += [t.trace_id for t in page]
        page = store.list_traces(TraceFilter(until=page[-1].started, before=page[-1].trace_id), 2)
    assert seen == sorted(ids, reverse=True)


def test_the_older_link_pages_through_traces_that_started_at_the_same_time(tmp_path: Path) -> None:
    with Running(SQLiteBackend(tmp_path / "calls.db")) as site:
        ids = [f"{k:032x}" for k in range(1, 53)]
        site.store.insert([Call(timestamp=T0, trace_id=t, model="m") for t in ids])
        first = site.get("/traces").text
        [older] = re.findall(r'<a[^>]+href="([^"]*before=[^"]*)"', first)
        second = site.get(older.replace("&amp;", "&")).text
        listed = re.findall(r'title="([0-9a-f]{32})"', first) + re.findall(r'title="([0-9a-f]{32})"', second)
        assert sorted(listed) == ids
