"""Who is asking, and may they: sessions and tokens, the role each route needs, CSRF. The
sign-in and admin pages are `llmlog.web.admin`'s.

Three ways to run `llmlog serve`:
- with accounts in the store (`llmlog accounts add`): every page needs a signed-in account
  (a session cookie) or, for the JSON API, a read token, and each role sees what it may
  (`llmlog.operations.accounts`); the shared token is not taken;
- without accounts, with LLMLOG_UI_TOKEN: the shared token opens everything, as before;
- without either (on loopback by default): open.

Every POST (every method but GET, HEAD and OPTIONS) outside the collector's routes must come
from a page of this site, open server or not: its Origin (or Referer) names this host, and its
form carries the token of the `llmlog_csrf` cookie. (The collector's routes take writes from
programs: `llmlog.web.ingest`.)

A session is a random cookie the store knows (`web_sessions`): signing out ends it there.
Sign-ins are throttled per account and per client, and few passwords are hashed at once
(`llmlog.web.throttle`).
"""

from __future__ import annotations

import contextvars
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Receive, Scope, Send

from llmlog.capture.proxy import PATHS as PROXY_PATHS
from llmlog.operations import accounts
from llmlog.web.answer import JSONResponse

SESSION_COOKIE = "llmlog_session"
CSRF_COOKIE = "llmlog_csrf"
MAX_FORM_BYTES = 1 << 20
# Methods that change nothing (no route answers them by changing anything); every other
# method needs the CSRF proof, whatever the route.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    via: str  # "session", "token" (read scope), "shared token", "open"


# The request's identity and CSRF token, for the templates and the audit log.
CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("llmlog_identity", default=None)
CSRF: contextvars.ContextVar[str] = contextvars.ContextVar("llmlog_csrf", default="")

# What a read token opens: the JSON API, by GET (not the console: its SQL is not audited).
TOKEN_ROUTES = ("/api/",)
# Filters that search the text of calls: for debuggers and up.
TEXT_FILTERS = ("q", "meta", "tag")


class Page(Route):
    """A route of the web UI or its JSON API, with the least role that opens it beside it
    (`accounts.ROLES`; None: anyone, signed in or not). What a viewer may open is figures,
    never the text of a call."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, role: str | None, methods: list[str] | None = None
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.role = role


def required_role(routes: Sequence[BaseRoute], path: str, method: str = "GET") -> str | None:
    """The least role the route `path` reaches needs (its `Page.role`; the static files need
    none). A path no page serves, or a route not declared a page, needs a debugger's: nothing
    is open to a viewer, or to anyone, without its route saying so."""
    scope: Scope = {"type": "http", "path": path, "root_path": "", "method": method}
    other: BaseRoute | None = None  # the path is a route's, not the method
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _role(route)
        if match is Match.PARTIAL and other is None:
            other = route
    return _role(other) if other is not None else "debugger"


def _role(route: BaseRoute) -> str | None:
    if isinstance(route, Page):
        return route.role
    if isinstance(route, Mount) and route.path == "/static":
        return None
    return "debugger"


def wants_json(path: str) -> bool:
    """Whether what `path` answers, an error included, is JSON (the API, the console's
    downloads) rather than a page."""
    return path.startswith((*TOKEN_ROUTES, "/sql.json", "/sql.csv"))


def same_origin(request: Request) -> bool:
    """Whether a POST comes from a page of this site: its Origin (else its Referer) names our
    host (an opaque "null" origin never does); with neither, its Sec-Fetch-Site says so.
    A POST that says nothing of where it comes from is refused."""
    host = request.headers.get("host", "").lower()
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is not None:
        return bool(host) and urlsplit(origin).netloc.lower() == host
    return request.headers.get("sec-fetch-site") in ("same-origin", "none")


# The first screen: where signing in leads when no other page was asked for, where the
# brand links, and where a viewer asking for the calls list (text) is sent.
FIRST_PAGE = "/findings"


def landing(target: str | None) -> str:
    """Where to go after signing in: the page asked for (a path of this site), else the first
    screen. The site's root is asked for by whoever opened the site itself, not the calls."""
    path = local_path(target)
    return FIRST_PAGE if path == "/" else path


def local_path(target: str | None) -> str:
    """Where to go after signing in: a path of this site only, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# The collector's routes and the proxy's: guarded by tokens of their own, not by this.
_OWN_TOKENS = ("/v1/", *PROXY_PATHS)


class AccessMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: Any, web: Any, token: str | None) -> None:
        super().__init__(app)
        self.web = web
        self.token = token
        self._mode: tuple[float, bool] = (0.0, False)  # (when read, accounts exist)
        self._roles: dict[str, tuple[float, str | None]] = {}  # account → (when read, role)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # What the router matches (never taken from the Host header).
        if scope["type"] == "http" and scope["path"].startswith(_OWN_TOKENS):
            # The collector's and the proxy's routes (tokens of their own) go straight to the
            # app: through BaseHTTPMiddleware, each read of a body and each chunk of a streamed
            # answer waits in a task group of its own, dozens of times for an OTLP export of a
            # few megabytes (~10% of the receiver's CPU), and each event of a proxied stream.
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _accounts_exist(self) -> bool:
        when, exist = self._mode
        if time.monotonic() - when > 2.0:
            with self.web.reading() as store:
                exist = bool(store.accounts()) or store.setting("accounts_required") is True
            self._mode = (time.monotonic(), exist)
        return exist

    def _role(self, name: str) -> str | None:
        when, role = self._roles.get(name, (0.0, None))
        if time.monotonic() - when > 2.0:  # a removed account or a changed role counts within 2 s
            with self.web.reading() as store:
                account = store.account(name)
            role = account.role if account else None
            self._roles[name] = (time.monotonic(), role)
        return role

    def _identity(self, request: Request) -> Identity | Response | None:
        if not self._accounts_exist():
            if not self.token:
                return Identity("local", "admin", "open")
            given = (
                request.query_params.get("token")
                or request.cookies.get("llmlog_token")
                or request.headers.get("authorization", "").removeprefix("Bearer ")
            )
            if hmac.compare_digest(given.encode(), self.token.encode()):
                return Identity("token", "admin", "shared token")
            return Response("a token is required: open the page with ?token=…", status_code=401)
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            with self.web.reading() as store:
                token = store.token(accounts.token_hash(bearer[7:].strip()))
            if token is None or token.scope != "read":
                return _json(401, "this token does not open the UI or its API")
            return Identity(token.name, "debugger", "token")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            with self.web.reading() as store:
                name = store.web_session(accounts.session_hash(cookie))
            role = self._role(name) if name else None
            if name and role:
                return Identity(name, role, "session")
        return None

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        found = await run_in_threadpool(self._identity, request)
        if isinstance(found, Response):
            return found
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        # Set first: the pages refusing a request show who is signed in, too.
        identity_token, csrf_token = CURRENT.set(found), CSRF.set(csrf)
        try:
            response = await self._answer(request, call_next, found, csrf)
        finally:
            CURRENT.reset(identity_token)
            CSRF.reset(csrf_token)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        if found is not None and found.via == "shared token" and request.query_params.get("token"):
            response.set_cookie("llmlog_token", self.token or "", httponly=True, samesite="strict")
        return response

    async def _answer(
        self, request: Request, call_next: RequestResponseEndpoint, found: Identity | None, csrf: str
    ) -> Response:
        """The route's answer, if `found` may have it; else why not."""
        path = request.scope["path"]
        need = required_role(self.web.pages, path, request.method)
        json_asked = wants_json(path)
        if found is None and need is not None:
            if json_asked:
                return _json(401, "sign in, or send a read token as `Authorization: Bearer …`")
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        if (
            found is not None
            and found.via == "token"
            and (request.method != "GET" or not path.startswith(TOKEN_ROUTES))
        ):
            return _json(403, "a read token opens the JSON API, by GET, and nothing else")
        if found is not None and found.role == "viewer" and path == "/":
            return RedirectResponse(FIRST_PAGE, status_code=303)
        if accounts.rank(found.role if found else None) < accounts.rank("debugger") and any(
            k in request.query_params for k in TEXT_FILTERS
        ):
            # "Which sessions mention X?", asked letter by letter, would spell out the text.
            message = "filters on text (q, meta, tag) need the debugger role"
            return _json(403, message) if json_asked else self.web.error(message, 403)
        if need is not None and accounts.rank(found.role if found else None) < accounts.rank(need):
            message = (
                f"your role ({found.role if found else 'none'}) does not open this page: it needs {need}"
            )
            return _json(403, message) if json_asked else self.web.error(message, 403)
        if request.method not in SAFE_METHODS:
            refused = await _check_post(request, csrf)
            if refused is not None:
                return refused
        return await call_next(request)


async def _check_post(request: Request, csrf: str) -> Response | None:
    """A POST's (or any other unsafe method's) proof that it comes from this site's own form
    (see the module's doc)."""
    if not same_origin(request):
        return Response("refused: a form must be sent from this site's own page", status_code=403)
    # No length and no chunks: no body (a DELETE, say). Chunks of unstated length: refused.
    length = request.headers.get("content-length", None if "transfer-encoding" in request.headers else "0")
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        return Response("the form is too large, or of no stated length", status_code=413)
    body = await request.body()  # kept by the request: the route reads it again
    fields = parse_qs(body.decode("utf-8", "replace"))
    given = (fields.get("csrf") or [""])[0] or request.headers.get("x-csrf-token", "")
    if CSRF_COOKIE not in request.cookies or not hmac.compare_digest(given.encode(), csrf.encode()):
        return Response("refused: the form's token is missing or stale; reload the page", status_code=403)
    return None


def _json(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def reader() -> str:
    """Who is reading, as the audit log names them."""
    identity = CURRENT.get()
    return f"{identity.name} (web, {identity.via})" if identity else "web"


# ---------------------------------------------------------------- pages
