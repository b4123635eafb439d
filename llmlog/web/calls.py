"""Pages: the calls list (filters, facets, paging), one call whole, and the JSON API."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import traces
from llmlog.core.filters import EQUALS, BadFilter, CallFilter, parse_filter, parse_when
from llmlog.core.record import Call
from llmlog.providers.conversation import (
    conversation,
    gist,
    last_user_turn,
    response_turns,
    said_and_answered,
)
from llmlog.store import Store
from llmlog.store.base import Facet
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.state import web_of

PAGE = 100
# Characters of each line of a call's preview in the list (what was said, what was answered):
# the cell shows what fits, its title the rest; the call's page has it whole.
PREVIEW = 100
SAMPLE, MAX_SAMPLE = 20, 200
FACET_S = 0.3
FACETS = [*((name, EQUALS[name]) for name in ("feature", "model", "user", "version")), ("status", "error")]


def call_filter(params: QueryParams | dict[str, str] | dict[str, list[str]]) -> CallFilter:
    """The filter a page's query string asks for: the names of `llmlog.core.filters` (the CLI's
    filter options read by the same parser)."""
    return parse_filter(params)


def every_value(params: QueryParams, *leave_out: str) -> dict[str, list[str]]:
    """A query string's parameters, each with all its values (`dict(params)` keeps one, and
    `meta` may come several times), but those left out."""
    return {k: params.getlist(k) for k in params if k not in leave_out}


def linker(request: Request, path: str = "/") -> Callable[..., str]:
    """`link(name=value, …)`: this page's URL with those parameters changed (None or ""
    drops one), so every view is a link."""
    items = [(k, v) for k, v in request.query_params.multi_items() if v and k != "token"]

    def link(**change: str | None) -> str:
        kept = [(k, v) for k, v in items if k not in change]
        query = urlencode(kept + [(k, v) for k, v in change.items() if v])
        return f"{path}?{query}" if query else path

    return link


def summary(c: Call) -> dict[str, Any]:
    """A call as one line of a list, in JSON."""
    return {
        "id": c.id,
        "timestamp": c.timestamp.isoformat(),
        "user_id": c.user_id,
        "session_id": c.session_id,
        "feature": c.feature,
        "model": c.model,
        "prompt_template_version": c.prompt_template_version,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "latency_ms": c.latency_ms,
        "cost_usd": c.cost_usd,
        "error": (c.error or {}).get("type") if c.error else None,
    }


def preview(c: Call, width: int = PREVIEW) -> tuple[str, str]:
    """What the caller said last and what the model answered, one short line each (as a
    session's page lists its turns). Read from a brief call (`Store.recent(brief=True)`),
    which holds these and no more; sealed text read without the key shows as `(sealed)`."""
    return said_and_answered(c, width)


def previewed(c: Call) -> dict[str, Any]:
    """A call as one line of the list, in JSON, with its preview."""
    said, answered = preview(c)
    return {**summary(c), "said": said, "answered": answered}


def _facets(store: Store, f: CallFilter) -> dict[str, Facet]:
    """Counts per value for each facet, by the page's names. Those the rollup cannot answer
    are counted over the latest matching calls, within FACET_S: the page says which."""
    counted = store.facets(f, [column for _, column in FACETS], timeout_s=FACET_S)
    return {name: counted[column] for name, column in FACETS}


def neighbours(store: Store, call: Call, later: int = 3) -> tuple[Call | None, list[Call]]:
    """The call before this one in its session, and up to `later` calls after it."""
    if not call.session_id:
        return None, []
    before = store.recent(CallFilter(session_id=call.session_id, until=call.timestamp), limit=1, brief=True)
    after: list[Call] = []
    since = call.timestamp + timedelta(microseconds=1)
    for c in store.iter_calls(CallFilter(session_id=call.session_id, since=since), batch=later):
        after.append(c)
        if len(after) == later:
            break
    return (before[0] if before else None), after


@dataclass
class ToolStep:
    name: str | None
    ref: str | None
    input: str
    result: str | None  # None: no later call of the session carried it
    result_in: str | None  # the id of the call that carried it


def tool_trace(call: Call, later: list[Call]) -> list[ToolStep]:
    """Each tool call the response made, with its result where a later call of the session
    sent it back to the model (matched by the tool call's id)."""
    steps = [
        ToolStep(p.name, p.ref, p.text, None, None)
        for turn in response_turns(call)
        for p in turn.parts
        if p.kind == "tool_call"
    ]
    waiting = {s.ref: s for s in steps if s.ref}
    for c in later:
        for turn in conversation(c):
            for p in turn.parts:
                step = waiting.pop(p.ref, None) if p.kind in ("tool_result", "note") and p.ref else None
                if step is None:
                    continue
                if p.kind == "note":  # OpenAI chat: the tool message's text is its other parts
                    p = next((q for q in turn.parts if q.kind != "note"), p)
                step.result, step.result_in = p.text, c.id
        if not waiting:
            break
    return steps


def listing(request: Request) -> tuple[list[Call], dict[str, Facet]]:
    web = web_of(request)
    f = call_filter(request.query_params)
    with web.reading() as store:
        return store.recent(f, limit=PAGE, brief=True), _facets(store, f)


def calls_page(request: Request) -> Response:
    web = web_of(request)
    try:
        calls, facets = listing(request)
    except BadFilter as exc:
        raise Refusal(str(exc)) from None
    link = linker(request)
    older = link(until=calls[-1].timestamp.isoformat()) if len(calls) == PAGE else None
    # The unfiltered list names the findings there are now, as last evaluated (none is
    # evaluated for it: the list stays as fast as it is).
    found = web.findings.peek() if call_filter(request.query_params) == CallFilter() else None
    return web.render(
        "calls.html",
        findings_now=len(found.findings) if found else 0,
        rows=[(c, *preview(c)) for c in calls],
        facets=facets,
        params=request.query_params,
        link=link,
        older=older,
        metas=[m for m in request.query_params.getlist("meta") if m],
    )


def call_page(request: Request) -> Response:
    web = web_of(request)
    with web.reading() as store:
        try:
            call = store.get(request.path_params["call_id"])
        except LookupError as exc:
            raise Refusal(str(exc)) from None
        if call is None:
            raise Refusal("no such call", 404)
        before, after = neighbours(store, call)
        # The trace it is part of, summed up: the waterfall is the trace's own page.
        in_trace = traces.call_in_trace(store, call)
    return web.render(
        "call.html",
        call=call,
        turns=conversation(call),
        response=response_turns(call),
        raw=json.dumps(call.to_dict(), ensure_ascii=False, indent=2),
        cost=web.pricer.breakdown(call),
        previous=before,
        next=after[0] if after else None,
        trace=tool_trace(call, after),
        in_trace=in_trace,
    )


def pull_sample(request: Request) -> tuple[list[Call], str, int]:
    """The calls a sample link names (`id=…`), or `n` random ones from the last `window`
    among those the filters select."""
    web = web_of(request)
    params = request.query_params
    window = params.get("window") or "1h"
    try:
        n = max(1, min(int(params.get("n") or SAMPLE), MAX_SAMPLE))
    except ValueError:
        raise BadFilter(f"n must be a number up to {MAX_SAMPLE}") from None
    f = call_filter(params)
    f.ids = [i for i in params.getlist("id") if i]
    if not f.ids:
        try:
            f.since = parse_when(window)
        except ValueError as exc:
            raise BadFilter(f"window: {exc}") from None
    with web.reading() as store:
        calls = store.sample(f, n, brief=True)
    return calls, window, n


def sample_page(request: Request) -> Response:
    web = web_of(request)
    try:
        calls, window, n = pull_sample(request)
    except BadFilter as exc:
        raise Refusal(str(exc)) from None
    items = [(c, gist(last_user_turn(c), 400), gist(response_turns(c), 600)) for c in calls]
    return web.render(
        "sample.html",
        items=items,
        window=window,
        n=n,
        params=request.query_params,
        permalink="/sample?" + urlencode([("id", c.id) for c in calls]),
        named=bool(request.query_params.getlist("id")),
    )


def api_sample(request: Request) -> Response:
    try:
        calls, window, n = pull_sample(request)
    except BadFilter as exc:
        raise Refusal(str(exc), 400) from None
    return JSONResponse({"window": window, "n": n, "calls": [summary(c) for c in calls]})


def api_calls(request: Request) -> Response:
    try:
        calls, facets = listing(request)
    except BadFilter as exc:
        raise Refusal(str(exc), 400) from None
    return JSONResponse(
        {"calls": [previewed(c) for c in calls], "facets": {k: asdict(v) for k, v in facets.items()}}
    )


def api_call(request: Request) -> Response:
    web = web_of(request)
    with web.reading() as store:
        try:
            call = store.get(request.path_params["call_id"])
        except LookupError as exc:
            raise Refusal(str(exc), 400) from None
    if call is None:
        raise Refusal("no such call", 404)
    return JSONResponse(call.to_dict())


def routes() -> list[BaseRoute]:
    return [
        Page("/", calls_page, role="debugger"),
        Page("/calls/{call_id}", call_page, role="debugger"),
        Page("/sample", sample_page, role="debugger"),
        Page("/api/sample", api_sample, role="debugger"),
        Page("/api/calls", api_calls, role="debugger"),
        Page("/api/calls/{call_id}", api_call, role="debugger"),
    ]
