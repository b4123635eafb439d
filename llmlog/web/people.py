"""Pages: sessions (the costliest of a period, and one conversation turn by turn with running
totals) and users (calls, cost, errors and sessions per user, and one user's sessions)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.store import ReadOnlyError
from llmlog.store.base import SessionSummary, UserSummary
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.calls import BadFilter, call_filter, every_value, linker, preview, summary
from llmlog.web.state import web_of

PERIODS = ("1h", "24h", "7d", "30d", "90d")
DEFAULT_PERIOD = "7d"
MAX_TURNS = 2000
TURN_PREVIEW = 160  # characters of what each turn said and answered (the cells wrap)


@dataclass
class Turn:
    """One call of a session, with the session's totals up to and including it."""

    call: Call
    said: str
    answered: str
    tokens: int
    cost: float


def session_turns(calls: list[Call]) -> list[Turn]:
    turns: list[Turn] = []
    tokens, cost = 0, 0.0
    for c in calls:
        tokens += (c.input_tokens or 0) + (c.output_tokens or 0)
        cost += c.cost_usd or 0.0
        turns.append(Turn(c, *preview(c, TURN_PREVIEW), tokens, cost))
    return turns


def _period_filter(request: Request) -> CallFilter:
    """The page's filters, over the last DEFAULT_PERIOD unless `since` says otherwise."""
    params = every_value(request.query_params)
    params.setdefault("since", [DEFAULT_PERIOD])
    return call_filter(params)


def _json(rows: list[SessionSummary] | list[UserSummary]) -> list[dict[str, Any]]:
    return [{**asdict(r), "first": r.first.isoformat(), "last": r.last.isoformat()} for r in rows]


def grouped(request: Request, what: str) -> tuple[list[Any], str | None]:
    web = web_of(request)
    f = _period_filter(request)
    with web.reading() as store:
        try:
            rows = store.sessions(f) if what == "sessions" else store.users(f)
        except ReadOnlyError as exc:  # too slow: say so, and how to narrow it
            return [], f"{exc}; choose a shorter period or add a filter"
    return rows, None


def list_page(what: str) -> Any:
    def page(request: Request) -> Response:
        web = web_of(request)
        try:
            rows, problem = grouped(request, what)
        except BadFilter as exc:
            raise Refusal(str(exc)) from None
        return web.render(
            f"{what}.html",
            rows=rows,
            problem=problem,
            params=request.query_params,
            since=request.query_params.get("since") or DEFAULT_PERIOD,
            periods=PERIODS,
            link=linker(request, f"/{what}"),
        )

    return page


def list_api(what: str) -> Any:
    def api(request: Request) -> Response:
        try:
            rows, problem = grouped(request, what)
        except BadFilter as exc:
            raise Refusal(str(exc), 400) from None
        if problem:
            raise Refusal(problem, 503)
        return JSONResponse({what: _json(rows)})

    return api


def one_session(request: Request) -> tuple[str, list[Turn], bool]:
    web = web_of(request)
    session_id = request.path_params["session_id"]
    with web.reading() as store:
        calls = store.recent(CallFilter(session_id=session_id), limit=MAX_TURNS + 1, brief=True)
    calls.reverse()
    truncated = len(calls) > MAX_TURNS
    return session_id, session_turns(calls[-MAX_TURNS:]), truncated


def session_page(request: Request) -> Response:
    web = web_of(request)
    session_id, turns, truncated = one_session(request)
    if not turns:
        raise Refusal("no calls in this session", 404)
    return web.render("session.html", session_id=session_id, turns=turns, truncated=truncated)


def session_api(request: Request) -> Response:
    session_id, turns, truncated = one_session(request)
    if not turns:
        raise Refusal("no calls in this session", 404)
    return JSONResponse(
        {
            "session_id": session_id,
            "truncated": truncated,
            "calls": [
                {**summary(t.call), "running_tokens": t.tokens, "running_cost_usd": t.cost} for t in turns
            ],
        }
    )


def user_page(request: Request) -> Response:
    web = web_of(request)
    user_id = request.path_params["user_id"]
    try:
        f = _period_filter(request)
    except BadFilter as exc:
        raise Refusal(str(exc)) from None
    f.user_id = user_id
    with web.reading() as store:
        try:
            totals = store.users(f, limit=1)
            sessions, problem = store.sessions(f), None
        except ReadOnlyError as exc:
            totals, sessions, problem = [], [], f"{exc}; choose a shorter period"
        errors = store.recent(CallFilter(user_id=user_id, since=f.since, errors=True), limit=10, brief=True)
    return web.render(
        "user.html",
        user_id=user_id,
        totals=totals[0] if totals else None,
        sessions=sessions,
        errors=errors,
        problem=problem,
        since=request.query_params.get("since") or DEFAULT_PERIOD,
        periods=PERIODS,
        link=linker(request, request.url.path),
    )


def routes() -> list[BaseRoute]:
    return [
        Page("/sessions", list_page("sessions"), role="viewer"),
        Page("/sessions/{session_id:path}", session_page, role="debugger"),
        Page("/users", list_page("users"), role="viewer"),
        Page("/users/{user_id:path}", user_page, role="debugger"),
        Page("/api/sessions", list_api("sessions"), role="viewer"),
        Page("/api/sessions/{session_id:path}", session_api, role="debugger"),
        Page("/api/users", list_api("users"), role="viewer"),
    ]
