"""Pages: the recent traces, filtered (`/traces`), one trace as a waterfall (`/traces/{id}`),
and their JSON twins.

The tree is `llmlog.analysis.traces`'s (the call page and `llmlog trace` draw the same one).
A trace is figures and names, open to viewers; what a span may carry of an app's text (its
attributes, events and status message) is shown to debuggers only, and a call's page is
linked only for a role that opens it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import traces
from llmlog.analysis.traces import Node, Tree
from llmlog.core.filters import BadFilter, parse_trace_filter
from llmlog.core.record import TraceSummary, id_problem
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.calls import linker
from llmlog.web.state import may, web_of

PAGE = 50  # traces on one page of the list

# What of a span's text one row of the page shows (its JSON twin has it whole): a thousand
# rows of prompts quoted in attributes would make a page of megabytes.
TEXT_SHOWN = 1000


@dataclass
class Row:
    """A node as the page draws it: the node, and what of its text whoever asks may read."""

    node: Node
    status_message: str | None
    details: str | None  # attributes and events, as JSON (cut at TEXT_SHOWN)
    cut: int  # characters of `details` left out


def _cut(text: str | None) -> tuple[str | None, int]:
    if text is None or len(text) <= TEXT_SHOWN:
        return text, 0
    return text[:TEXT_SHOWN], len(text) - TEXT_SHOWN


def rows(tree: Tree, text: bool) -> list[Row]:
    out = []
    for n in tree.nodes:
        s = n.span
        if not text or s is None:
            out.append(Row(n, None, None, 0))
            continue
        shown: dict[str, object] = {}
        if s.attributes:
            shown["attributes"] = s.attributes
        if s.events:
            shown["events"] = s.events
        details, cut = _cut(json.dumps(shown, ensure_ascii=False, indent=2, default=str) if shown else None)
        message, _ = _cut(s.status_message)
        out.append(Row(n, message, details, cut))
    return out


def listing(request: Request) -> list[TraceSummary]:
    """The newest traces the query string's filters select (`parse_trace_filter`'s names);
    a 400 saying which filter and why for one it cannot read."""
    try:
        f = parse_trace_filter(request.query_params)
    except BadFilter as exc:
        raise Refusal(str(exc)) from None
    with web_of(request).reading() as store:
        return store.list_traces(f, limit=PAGE)


def traces_page(request: Request) -> Response:
    web = web_of(request)
    found = listing(request)
    link = linker(request, "/traces")
    # Older: the same filters, after the last one in the list's order (its start, then id).
    last = found[-1] if len(found) == PAGE else None
    older = link(until=last.started.isoformat(), before=last.trace_id) if last else None
    api = linker(request, "/api/traces")()
    return web.render("traces.html", rows=found, params=request.query_params, older=older, api=api)


def api_traces(request: Request) -> Response:
    return JSONResponse({"traces": [traces.summary_json(t) for t in listing(request)]})


def one_trace(request: Request) -> Tree:
    """The tree of the trace the path names; a 404 when no store holds it."""
    trace_id = request.path_params["trace_id"]
    if id_problem(trace_id):
        raise Refusal("no such trace", 404)
    with web_of(request).reading() as store:
        tree = traces.read(store, trace_id)
    if tree is None:
        raise Refusal("no such trace", 404)
    return tree


def trace_page(request: Request) -> Response:
    web = web_of(request)
    tree = one_trace(request)
    text = may("debugger")
    return web.render("trace.html", tree=tree, rows=rows(tree, text), text=text, cap=traces.MAX_NODES)


def api_trace(request: Request) -> Response:
    return JSONResponse(traces.tree_json(one_trace(request), text=may("debugger")))


def routes() -> list[BaseRoute]:
    return [
        Page("/traces", traces_page, role="viewer"),
        Page("/api/traces", api_traces, role="viewer"),
        Page("/traces/{trace_id:path}", trace_page, role="viewer"),
        Page("/api/traces/{trace_id:path}", api_trace, role="viewer"),
    ]
