"""Pages: full-text search over the calls (`Store.search`), and the calls like one call
(`Store.similar`, the semantic extra), with the calls page's filters; and their JSON.

A snippet comes as pieces of text, each with whether it matched; the template escapes every
piece and marks the matches, so nothing logged is ever read as markup.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.providers.conversation import gist, last_user_turn, response_turns
from llmlog.store import vectors
from llmlog.store.search import Hit
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.calls import BadFilter, call_filter, every_value, summary
from llmlog.web.state import web_of

RESULTS, MAX_RESULTS = 50, 500


def _limit(params: Any) -> int:
    text = params.get("n") or str(RESULTS)
    try:
        n = int(text)
    except ValueError:
        raise BadFilter(f"n must be a whole number, not {text!r}") from None
    if not 1 <= n <= MAX_RESULTS:
        raise BadFilter(f"n must be between 1 and {MAX_RESULTS}")
    return n


def find(request: Request) -> tuple[str, list[Hit]]:
    web = web_of(request)
    params = request.query_params
    words = params.get("q", "").strip()
    f = call_filter(every_value(params, "q"))  # q is the words searched for, here
    n = _limit(params)
    if not words:
        return "", []
    with web.reading() as store:
        return words, store.search(words, f, n)


def search_page(request: Request) -> Response:
    web = web_of(request)
    try:
        words, hits = find(request)
    except BadFilter as exc:
        raise Refusal(str(exc)) from None
    return web.render("search.html", words=words, hits=hits, params=request.query_params)


def api_search(request: Request) -> Response:
    try:
        words, hits = find(request)
    except BadFilter as exc:
        raise Refusal(str(exc), 400) from None
    found = [
        {**summary(h.call), "score": h.score, "snippet": [{"text": t, "match": m} for t, m in h.snippet]}
        for h in hits
    ]
    return JSONResponse({"q": words, "calls": found})


def like(request: Request) -> tuple[str, list[tuple[Any, float]]]:
    web = web_of(request)
    params = request.query_params
    f = call_filter(params)
    n = _limit({"n": params.get("n") or "20"})
    with web.reading() as store:
        call = store.get(request.path_params["call_id"])
        if call is None:
            raise LookupError("no such call")
        return call.id, store.similar(call.id, f, n)


def similar_page(request: Request) -> Response:
    web = web_of(request)
    try:
        call_id, found = like(request)
    except BadFilter as exc:
        raise Refusal(str(exc)) from None
    except LookupError as exc:
        raise Refusal(str(exc), 404 if str(exc) == "no such call" else 400) from None
    except vectors.Unavailable as exc:
        raise Refusal(
            f"Calls like this one are not set up here: {exc}, then llmlog similar --enable."
        ) from None
    items = [(c, score, gist(last_user_turn(c), 300), gist(response_turns(c), 300)) for c, score in found]
    return web.render("similar.html", call_id=call_id, items=items, params=request.query_params)


def api_similar(request: Request) -> Response:
    try:
        call_id, found = like(request)
    except (BadFilter, vectors.Unavailable) as exc:
        raise Refusal(str(exc), 400) from None
    except LookupError as exc:
        raise Refusal(str(exc), 404 if str(exc) == "no such call" else 400) from None
    return JSONResponse({"id": call_id, "calls": [{**summary(c), "score": s} for c, s in found]})


def routes() -> list[BaseRoute]:
    return [
        Page("/search", search_page, role="debugger"),
        Page("/api/search", api_search, role="debugger"),
        Page("/calls/{call_id}/similar", similar_page, role="debugger"),
        Page("/api/calls/{call_id}/similar", api_similar, role="debugger"),
    ]
