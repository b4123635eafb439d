"""The web app: pages rendered on the server (Jinja2, autoescaped) and the JSON behind them.

Everything logged is untrusted: templates escape every value (autoescape, no `|safe` on
logged text), filters reach the store only as bound parameters, and a filter names a
column only through the fixed list the store allows.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from llmlog.conversation import conversation, response_turns
from llmlog.record import Call
from llmlog.store import CallFilter, ReadOnlyError, Store, parse_when

HERE = Path(__file__).parent
PAGE = 100
# Query parameter → CallFilter field, for the filters that are one column equal to a value.
EQUALS = {
    "feature": "feature",
    "model": "model",
    "user": "user_id",
    "session": "session_id",
    "version": "prompt_template_version",
    "provider": "provider",
}
FACETS = [(name, EQUALS[name]) for name in ("feature", "model", "user", "version")]


class BadFilter(ValueError):
    pass


def call_filter(params: dict[str, str]) -> CallFilter:
    f = CallFilter()
    for name, field in EQUALS.items():
        if params.get(name):
            setattr(f, field, params[name])
    status = params.get("status", "")
    if status not in ("", "error", "ok"):
        raise BadFilter(f"status must be 'error' or 'ok', not {status!r}")
    f.errors = {"error": True, "ok": False}.get(status)
    for name in ("since", "until"):
        if params.get(name):
            try:
                setattr(f, name, parse_when(params[name]))
            except ValueError as exc:
                raise BadFilter(f"{name}: {exc}") from None
    return f


def _summary(c: Call) -> dict[str, Any]:
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


class TokenMiddleware(BaseHTTPMiddleware):
    """A shared token, as `?token=`, a `Bearer` header or the cookie the first visit sets."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = (
            request.query_params.get("token")
            or request.cookies.get("llmlog_token")
            or request.headers.get("authorization", "").removeprefix("Bearer ")
        )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return Response("a token is required: open the page with ?token=…", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie("llmlog_token", self.token, httponly=True, samesite="strict")
        return response


def create_app(open_store: Callable[[], Store], token: str | None = None) -> Starlette:
    """The app over one store. `open_store` is called once; the store is used under a lock
    (a SQLite connection is not to be shared by threads at once)."""
    store = open_store()
    lock = threading.Lock()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["ms"] = lambda v: "" if v is None else f"{v:,.0f} ms"
    env.filters["usd"] = lambda v: "" if v is None else f"${v:,.4f}"
    env.filters["num"] = lambda v: "" if v is None else f"{v:,}"
    env.filters["pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=2)
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if isinstance(t, datetime) else t

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def listing(request: Request) -> tuple[list[Call], dict[str, list[tuple[Any, int]]]]:
        params = dict(request.query_params)
        f = call_filter(params)
        with lock:
            calls = store.recent(f, limit=PAGE)
            facets: dict[str, list[tuple[Any, int]]] = {}
            for name, column in [*FACETS, ("status", "error")]:
                try:
                    facets[name] = store.facets(f, column)
                except ReadOnlyError:  # too slow on this store: the page goes without it
                    facets[name] = []
        return calls, facets

    def calls_page(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if v and k != "token"}
        try:
            calls, facets = listing(request)
        except BadFilter as exc:
            return render("error.html", 400, message=str(exc))

        def link(**change: str | None) -> str:
            merged = {**params, **change}
            return "/?" + urlencode({k: v for k, v in merged.items() if v})

        older = link(until=calls[-1].timestamp.isoformat()) if len(calls) == PAGE else None
        return render("calls.html", calls=calls, facets=facets, params=params, link=link, older=older)

    def call_page(request: Request) -> Response:
        with lock:
            try:
                call = store.get(request.path_params["call_id"])
            except LookupError as exc:
                return render("error.html", 400, message=str(exc))
        if call is None:
            return render("error.html", 404, message="no such call")
        return render(
            "call.html",
            call=call,
            turns=conversation(call),
            response=response_turns(call),
            raw=json.dumps(call.to_dict(), ensure_ascii=False, indent=2),
        )

    def api_calls(request: Request) -> Response:
        try:
            calls, facets = listing(request)
        except BadFilter as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"calls": [_summary(c) for c in calls], "facets": facets})

    def api_call(request: Request) -> Response:
        with lock:
            try:
                call = store.get(request.path_params["call_id"])
            except LookupError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        if call is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        return JSONResponse(call.to_dict())

    routes = [
        Route("/", calls_page),
        Route("/calls/{call_id}", call_page),
        Route("/api/calls", api_calls),
        Route("/api/calls/{call_id}", api_call),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TokenMiddleware, token=token)] if token else []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
