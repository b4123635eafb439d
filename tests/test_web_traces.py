"""The trace pages over real HTTP (a uvicorn server in a thread, each store kind): one trace
as a waterfall and its JSON, the call page's link to its trace. Traces made by real code: a
wrapped real SDK inside `llmlog.span`, and an instrumented program's OTLP export."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser

import pytest

from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, Span
from llmlog.demo.fake_provider import FakeProvider
from tests.backends import Backend
from tests.test_otlp import TOKEN, run_program
from tests.traced import traced_agent
from tests.webui import HOSTILE, T0, Running, assert_inert, make_call


@dataclass
class Row:
    """One row of the waterfall: its cells' text, the link in its first cell, its classes."""

    cells: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    depth: int = 0
    name: str = ""
    href: str | None = None
    bar: dict[str, str] = field(default_factory=dict)


class _Waterfall(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.inside = False
        self.cell: list[str] | None = None
        self.name: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "table":
            self.inside = "waterfall" in (named.get("class") or "")
        elif self.inside and tag == "tr" and "data-step-item" in named:
            self.rows.append(Row(classes=(named.get("class") or "").split()))
        elif self.inside and self.rows and tag == "td":
            self.cell = []
            classes = named.get("class") or ""
            if classes.startswith("depth-"):
                self.rows[-1].depth = int(classes.split("-")[1])
        elif self.inside and self.rows and "name" in (named.get("class") or "").split():
            self.name = []
            self.rows[-1].href = named.get("href")
        elif self.inside and self.rows and tag == "rect":
            self.rows[-1].bar = {k: v or "" for k, v in attrs}

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.name is not None:
            self.name.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("a", "span") and self.name is not None and self.rows:
            self.rows[-1].name = "".join(self.name)
            self.name = None
        if tag == "td" and self.cell is not None and self.rows:
            self.rows[-1].cells.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.inside = False


def waterfall(html: str) -> list[Row]:
    parser = _Waterfall()
    parser.feed(html)
    return parser.rows


@pytest.fixture
def site(backend: Backend) -> Iterator[Running]:
    """The UI over each store kind, taking OTLP (with its token), with no calls yet."""
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


def calls_of(site: Running, trace_id: str) -> list[Call]:
    return sorted(site.store.recent(CallFilter(trace_id=trace_id), limit=100), key=lambda c: c.timestamp)


def test_a_traced_request_as_a_waterfall(site: Running, backend: Backend, fake: FakeProvider) -> None:
    trace_id = traced_agent(backend.url, fake, fail=True)
    plan, answer = calls_of(site, trace_id)
    r = site.get(f"/traces/{trace_id}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    rows = waterfall(r.text)
    # The tree: the spans nested, each call under the span it was made in, by start.
    assert [(row.name, row.depth) for row in rows] == [
        ("agent run", 0),
        ("retrieve", 1),
        ("claude-sonnet-4-6", 1),
        ("tool lookup_order", 1),
        ("claude-sonnet-4-6", 1),
    ]
    # Each call a node with model, tokens and cost, linking to its page.
    first, tool, second = rows[2], rows[3], rows[4]
    assert first.href == f"/calls/{plan.id}" and second.href == f"/calls/{answer.id}"
    assert first.cells[1] == "claude-sonnet-4-6"
    assert first.cells[2] == f"{plan.input_tokens:,} / {plan.output_tokens:,}" and first.cells[3].startswith(
        "$"
    )
    # Failures marked: the span that raised (with its message, for a debugger), the refused call.
    assert (
        "failed" in tool.classes and "error" in tool.cells[0] and "LookupError: order 7 not found" in r.text
    )
    assert "failed" in second.classes and "overloaded_error" in second.cells[0]
    assert "failed" not in first.classes
    # Every node a bar on the time axis: the root spans it all, each other starts later.
    assert float(rows[0].bar["x"]) == 0 and float(rows[0].bar["width"]) == 100
    lefts = [float(row.bar["x"]) for row in rows]
    assert lefts == sorted(lefts) and all(0 <= x <= 100 for x in lefts)
    assert all(row.cells[5].endswith("ms") for row in rows)  # each with its duration
    # The header: the trace's figures.
    assert "Trace agent run" in r.text
    figures = dict(
        (k.strip(), v.strip())
        for k, v in (d.split("</dt><dd>") for d in _between(r.text, "<div><dt>", "</dd></div>"))
    )
    assert figures["spans"] == "3" and figures["calls"] == "2"
    assert figures["tokens in / out"] == f"{plan.input_tokens:,} / {plan.output_tokens:,}"
    # Its JSON twin: the same tree, with each node's figures.
    api = site.get(f"/api/traces/{trace_id}").json()
    assert (api["trace_id"], api["name"], api["spans"], api["calls"], api["errors"], api["failed_spans"]) == (
        trace_id,
        "agent run",
        3,
        2,
        1,
        1,
    )
    assert [(n["kind"], n["name"], n["depth"]) for n in api["nodes"]] == [
        ("span", "agent run", 0),
        ("span", "retrieve", 1),
        ("call", "claude-sonnet-4-6", 1),
        ("span", "tool lookup_order", 1),
        ("call", "claude-sonnet-4-6", 1),
    ]
    node = api["nodes"][2]
    assert node["call"]["id"] == plan.id and node["call"]["input_tokens"] == plan.input_tokens
    assert node["parent_id"] == api["nodes"][0]["span_id"] and node["duration_ms"] == pytest.approx(
        plan.latency_ms
    )
    assert api["nodes"][4]["call"]["error"] == "overloaded_error" and api["nodes"][4]["status"] == "error"
    assert api["nodes"][3]["status_message"] == "LookupError: order 7 not found"
    assert api["nodes"][1]["attributes"] == {"k": 3} and not api["truncated"]
    # The call's page links to its trace, and says where in it the call is.
    page = site.get(f"/calls/{plan.id}").text
    assert f'href="/traces/{trace_id}"' in page
    assert "agent run › <b>claude-sonnet-4-6</b> (this call)" in page and "3 spans, 2 calls over" in page


def _between(text: str, start: str, end: str) -> list[str]:
    out = []
    for part in text.split(start)[1:]:
        out.append(part.split(end)[0])
    return out


def test_an_otlp_trace_shows_as_a_traced_request_does(
    site: Running, backend: Backend, fake: FakeProvider
) -> None:
    """The same agent, traced by OpenInference's instrumentation of the real SDK and exported
    over OTLP, and traced with llmlog.span around the wrapped SDK: the same tree."""
    exported, _ = run_program(site, fake)
    traced = traced_agent(backend.url, fake)
    trees = {}
    for name, trace_id in (("otlp", exported), ("span", traced)):
        r = site.get(f"/traces/{trace_id}")
        assert r.status_code == 200
        rows = waterfall(r.text)
        calls = {c.id: c for c in calls_of(site, trace_id)}
        # The nodes that stand for a call: each linking to it, with its model, tokens and cost.
        shown = [row for row in rows if row.cells[1]]
        assert {row.href for row in shown} == {f"/calls/{i}" for i in calls}, name
        for row in shown:
            c = calls[(row.href or "").removeprefix("/calls/")]
            assert row.cells[1:4] == [
                c.model,
                f"{c.input_tokens:,} / {c.output_tokens:,}",
                f"${c.cost_usd:,.4f}",
            ]
        trees[name] = (
            [(row.name, row.depth) for row in rows if not row.href],
            [(row.depth, row.cells[1]) for row in shown],
        )
        # The call's page links to its trace.
        assert f'href="/traces/{trace_id}"' in site.get(f"/calls/{next(iter(calls))}").text
    assert (
        trees["otlp"]
        == trees["span"]
        == (
            [("agent run", 0), ("retrieve", 1), ("tool lookup_order", 1)],
            [(1, "claude-sonnet-4-6"), (1, "claude-sonnet-4-6")],
        )
    )
    # OpenInference's span and the SDK's own inside it are one call: its figures are shown once.
    otlp_rows = waterfall(site.get(f"/traces/{exported}").text)
    repeated = [row for row in otlp_rows if "same call as above" in row.cells[0]]
    assert len(repeated) == 2 and all(row.depth == 2 and not row.cells[1] for row in repeated)


def _span(
    trace: str, sid: str, parent: str | None, name: str, start: float, took: float, **kw: object
) -> Span:
    begin = T0 + timedelta(seconds=start)
    return Span(trace, sid, parent, name, "internal", begin, begin + timedelta(seconds=took), **kw)  # type: ignore[arg-type]


def test_spans_whose_parent_never_arrived_show_at_the_top(site: Running) -> None:
    trace = uuid.uuid4().hex
    lost = make_call(10, trace_id=trace, parent_id="9" * 16, timestamp=T0 + timedelta(seconds=2))
    site.store.insert([lost])
    site.store.insert_spans(
        [
            _span(trace, "a" * 16, None, "root", 0, 3),
            _span(trace, "b" * 16, "a" * 16, "child", 1, 1),
            _span(trace, "c" * 16, "8" * 16, "stray", 0.5, 1),  # its parent never came
            _span(trace, "d" * 16, "e" * 16, "circle one", 1.5, 0.2),  # parents of each other
            _span(trace, "e" * 16, "d" * 16, "circle two", 1.6, 0.1),
            dataclasses.replace(_span(trace, "f" * 16, "a" * 16, "unfinished", 2.5, 0), end=None),
        ]
    )
    r = site.get(f"/traces/{trace}")
    rows = waterfall(r.text)
    assert [(row.name, row.depth, "orphan" in row.classes) for row in rows] == [
        ("root", 0, False),
        ("child", 1, False),
        ("unfinished", 1, False),
        ("stray", 0, True),
        (lost.model, 0, True),
        ("circle one", 0, True),  # a circle: from its earliest span, after the rest
        ("circle two", 1, False),
    ]
    assert "no parent" in rows[3].cells[0] and "unfinished" in rows[2].cells[5]
    assert "3 of its spans or calls name a parent span that never arrived" in r.text


def test_hostile_names_and_attributes_are_text(site: Running) -> None:
    trace = uuid.uuid4().hex
    call = make_call(20, trace_id=trace, model=HOSTILE, error={"type": HOSTILE, "message": HOSTILE})
    site.store.insert([call])
    site.store.insert_spans(
        [
            _span(trace, "a" * 16, None, HOSTILE, 0, 2, attributes={HOSTILE: HOSTILE}, service=HOSTILE),
            _span(trace, "b" * 16, "a" * 16, HOSTILE, 0.5, 1, call_id=call.id, status="error",
                  status_message=HOSTILE, events=[{"name": HOSTILE, "attributes": {"x": HOSTILE}}]),
        ]
    )  # fmt: skip
    for path in (f"/traces/{trace}", f"/calls/{call.id}"):
        html = site.get(path).text
        assert_inert(html, path)
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html, path  # there, as text
    api = site.get(f"/api/traces/{trace}")
    assert api.headers["content-type"] == "application/json" and api.json()["nodes"][0]["name"] == HOSTILE
    # An id is only ever a parameter: hostile ones are no trace, never an error.
    for bad in ("x' OR '1'='1", "a%00b", "%00", "%ff%fe", "..%2F..%2Fetc%2Fpasswd", "x" * 5000, HOSTILE):
        for prefix in ("/traces/", "/api/traces/"):
            r = site.get(prefix + bad)
            assert r.status_code == 404, (prefix, bad, r.status_code)
            if prefix.startswith("/api/"):
                assert r.json() == {"error": "no such trace"}
            else:
                assert_inert(r.text, bad)


def test_a_trace_of_ten_thousand_spans_is_drawn_in_part_and_says_so(site: Running) -> None:
    trace = uuid.uuid4().hex
    # A chain 10,000 spans deep: each under the one before.
    spans = [
        _span(trace, f"{i + 1:016x}", f"{i:016x}" if i else None, f"step {i}", i * 0.001, 10 - i * 0.001)
        for i in range(10_000)
    ]
    site.store.insert_spans(spans)
    r = site.get(f"/traces/{trace}")
    assert r.status_code == 200
    rows = waterfall(r.text)
    assert len(rows) == 1000 and [row.name for row in rows[:3]] == ["step 0", "step 1", "step 2"]
    assert max(row.depth for row in rows) == 12  # indentation stops; the tree goes on
    assert "This trace has 10,000 spans and calls: the first 1,000" in r.text
    assert len(r.content) < 1_000_000, len(r.content)
    api = site.get(f"/api/traces/{trace}").json()
    assert (api["spans"], api["nodes_total"], len(api["nodes"]), api["truncated"]) == (
        10_000,
        10_000,
        1000,
        True,
    )
    assert api["nodes"][-1]["depth"] == 999


def test_unknown_traces_are_a_404(site: Running) -> None:
    assert site.get(f"/traces/{'0' * 32}").status_code == 404
    r = site.get(f"/api/traces/{'0' * 32}")
    assert r.status_code == 404 and r.json() == {"error": "no such trace"}
    assert "no such trace" in site.get("/traces/nope").text


def test_a_trace_of_calls_alone(site: Running) -> None:
    """Calls given a trace id by `llmlog.context(trace_id=…)`, with no span kept: the trace
    is its calls, at the top, in time order."""
    calls = [make_call(30 + i, trace_id="req-42/a b", timestamp=T0 + timedelta(seconds=i)) for i in range(3)]
    site.store.insert(calls)
    r = site.get("/traces/req-42/a b")
    assert r.status_code == 200
    rows = waterfall(r.text)
    assert [row.href for row in rows] == [f"/calls/{c.id}" for c in calls]
    assert all(row.depth == 0 and "orphan" not in row.classes for row in rows)
    assert 'href="/traces/req-42%2Fa%20b"' in site.get(f"/calls/{calls[0].id}").text


# ---------------------------------------------------------------- the list


def _fleet(site: Running, n: int = 60) -> list[str]:
    """`n` traces a minute apart: trace k a root span named `job {k % 3}` lasting k × 100 ms,
    holding one call (feature, user and session by k, cost k × 0.001 USD; every tenth
    failed). Their ids, oldest first."""
    ids = [f"{k + 1:032x}" for k in range(n)]
    spans, calls = [], []
    for k, trace in enumerate(ids):
        spans.append(_span(trace, "a" * 16, None, f"job {k % 3}", k * 60, k * 0.1))
        calls.append(
            make_call(
                1000 + k,
                trace_id=trace,
                parent_id="a" * 16,
                timestamp=T0 + timedelta(seconds=k * 60),
                latency_ms=k * 50.0,
                feature=f"feature-{k % 2}",
                user_id=f"user-{k % 4}",
                session_id=f"session-{k % 5}",
                cost_usd=k * 0.001,
                error={"type": "api_error"} if k % 10 == 9 else None,
            )
        )
    site.store.insert(calls)
    site.store.insert_spans(spans)
    return ids


def listed(html: str) -> list[str]:
    return re.findall(r'<a href="/traces/([^"]+)" title=', html)


class _Cells(HTMLParser):
    """The text of each cell of each body row of the table of class `traces`."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.inside = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.inside = "traces" in (dict(attrs).get("class") or "")
        elif self.inside and tag == "tr" and "data-step-item" in dict(attrs):
            self.rows.append([])
        elif self.inside and self.rows and tag == "td":
            self.cell = []

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.inside = False


def cells(html: str) -> list[list[str]]:
    parser = _Cells()
    parser.feed(html)
    return parser.rows


def test_recent_traces_newest_first_with_older_pages(site: Running) -> None:
    ids = _fleet(site)
    r = site.get("/traces")
    assert r.status_code == 200
    assert listed(r.text) == ids[::-1][:50]
    assert '<a href="/traces">Traces</a>' in r.text  # in the navigation
    older = re.search(r'<a class="older" href="([^"]+)">', r.text)
    assert older is not None
    page2 = site.get(older.group(1).replace("&amp;", "&"))
    assert listed(page2.text) == ids[::-1][50:]
    assert 'class="older"' not in page2.text
    # A row: started, name, feature, user, duration, spans, calls, tokens, cost, errors.
    call = make_call(1059)
    assert cells(r.text)[0] == [
        "2026-03-01 12:59:00",
        "job 2",
        "feature-1",
        "user-3",
        "5,900 ms",
        "1",
        "1",
        f"{call.input_tokens:,} / {call.output_tokens:,}",
        "$0.0590",
        "1 call, 0 spans",
    ]
    # Its JSON twin, with the same filters.
    api = site.get("/api/traces").json()["traces"]
    assert [t["trace_id"] for t in api] == ids[::-1][:50]
    top = api[0]
    assert (top["name"], top["spans"], top["calls"], top["errors"], top["feature"]) == (
        "job 2",
        1,
        1,
        1,
        "feature-1",
    )
    assert top["duration_ms"] == pytest.approx(5900) and top["cost_usd"] == pytest.approx(0.059)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"name": "job 1"}, lambda k: k % 3 == 1),
        ({"feature": "feature-0"}, lambda k: k % 2 == 0),
        ({"user": "user-3"}, lambda k: k % 4 == 3),
        ({"session": "session-2"}, lambda k: k % 5 == 2),
        ({"status": "error"}, lambda k: k % 10 == 9),
        ({"min_ms": "5000"}, lambda k: k * 100 >= 5000),
        ({"min_cost": "0.05"}, lambda k: k * 0.001 >= 0.05 - 1e-12),
        ({"since": (T0 + timedelta(minutes=40)).isoformat()}, lambda k: k >= 40),
        (
            {"name": "job 0", "status": "error", "min_ms": "2000"},
            lambda k: k % 3 == 0 and k % 10 == 9 and k >= 20,
        ),
    ],
)
def test_traces_filters(site: Running, params: dict[str, str], expected: Callable[[int], bool]) -> None:
    ids = _fleet(site)
    want = [ids[k] for k in reversed(range(60)) if expected(k)][:50]
    assert listed(site.get("/traces", params=params).text) == want
    assert [t["trace_id"] for t in site.get("/api/traces", params=params).json()["traces"]] == want


def test_traces_list_refuses_bad_filters_and_escapes_names(site: Running) -> None:
    for params in ({"min_ms": "soon"}, {"min_cost": "-1"}, {"status": "ok"}, {"since": "last week"}):
        page, api = site.get("/traces", params=params), site.get("/api/traces", params=params)
        assert page.status_code == 400 and "text/html" in page.headers["content-type"], params
        assert api.status_code == 400 and api.json()["error"].startswith(next(iter(params))), params
    trace = uuid.uuid4().hex
    site.store.insert([make_call(70, trace_id=trace, feature=HOSTILE, user_id=HOSTILE)])
    site.store.insert_spans([_span(trace, "a" * 16, None, HOSTILE, 0, 1, service=HOSTILE)])
    for params in ({}, {"name": HOSTILE}, {"user": HOSTILE}):
        r = site.get("/traces", params=params)
        assert listed(r.text) == [trace], params
        assert_inert(r.text, str(params))
    assert listed(site.get("/traces", params={"name": "x' OR '1'='1"}).text) == []
    assert "No traces match" in site.get("/traces", params={"feature": "none"}).text
