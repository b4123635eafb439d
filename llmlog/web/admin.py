"""Pages of who may use the web UI: signing in and out, and the admin page (accounts, API
tokens, the retention policy). Who may open what is `llmlog.web.auth`'s."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from llmlog.operations import accounts
from llmlog.store import retention_policy
from llmlog.web.auth import CURRENT, SESSION_COOKIE, Page, landing
from llmlog.web.state import Web, web_of
from llmlog.web.throttle import Busy


async def form_fields(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


async def login(request: Request) -> Response:
    web = web_of(request)
    target = landing(request.query_params.get("next"))
    if request.method == "GET":
        return web.render("login.html", next=target, problem=None)
    fields = await form_fields(request)
    name, password = fields.get("name", ""), fields.get("password", "")
    client = request.client.host if request.client else ""
    wait = web.signins.start(name, client)
    if wait is not None:
        problem = f"Too many sign-ins for this account or from this address: try again in {wait:.0f} s."
        return web.render(
            "login.html", 429, next=target, problem=problem, headers={"Retry-After": f"{wait:.0f}"}
        )

    def check() -> str | None:
        # The slow hash is checked outside the store's lock: sign-ins do not hold up pages.
        with web.reading() as store:
            account = store.account(name)
        return accounts.check_login(account, password)

    try:
        async with web.signins.hashing_turn():
            role = await run_in_threadpool(check)
    except Busy:
        web.signins.give_back(name, client)  # never checked: it does not count
        problem = "The server is busy checking other sign-ins: try again in a few seconds."
        return web.render("login.html", 503, next=target, problem=problem, headers={"Retry-After": "2"})
    if role is None:
        return web.render("login.html", 401, next=target, problem="Wrong name or password.")
    web.signins.give_back(name, client)
    cookie, digest = accounts.new_session()

    def begin() -> None:
        with web.reading() as store:
            store.add_web_session(digest, name, int(time.time()) + accounts.SESSION_S)

    await run_in_threadpool(begin)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=accounts.SESSION_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    web = web_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)

    def end() -> None:
        with web.reading() as store:  # ended in the store: a copy of the cookie opens nothing
            store.end_web_session(accounts.session_hash(cookie or ""))

    if cookie:
        await run_in_threadpool(end)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def admin_page(
    web: Web, problem: str | None = None, new_token: str | None = None, status: int = 200
) -> Response:
    with web.reading() as store:
        users, tokens = store.accounts(), store.tokens()
        policy = retention_policy.policy(store)
        sealed = store.sealing_policy()  # read now: another process may have rotated since
        keys = store.keyring.ids if store.keyring else []
    return web.render(
        "admin.html",
        status,
        users=users,
        tokens=tokens,
        roles=accounts.ROLES,
        scopes=accounts.SCOPES,
        policy=policy,
        features=", ".join(f"{f}={d}" for f, d in sorted(policy.features.items())),
        sealed_only=sealed.required,
        sensitive=sorted(sealed.sensitive),
        keys=keys,
        problem=problem,
        new_token=new_token,
    )


async def admin(request: Request) -> Response:
    web = web_of(request)
    if request.method == "GET":
        return await run_in_threadpool(admin_page, web)
    fields = await form_fields(request)
    action = request.path_params.get("action", "")

    def act() -> Response:
        new_token = None
        try:
            with web.reading() as store:
                if action == "add-user":
                    accounts.add_user(
                        store, fields.get("name", ""), fields.get("role", ""), fields.get("password", "")
                    )
                elif action == "remove-user":
                    me = CURRENT.get()
                    if me is not None and me.name == fields.get("name"):
                        raise ValueError("you cannot remove your own account")
                    store.remove_account(fields.get("name", ""))
                elif action == "add-token":
                    token, digest = accounts.new_token(fields.get("scope", ""))
                    store.add_token(
                        fields.get("name", "").strip() or "token", fields.get("scope", ""), digest
                    )
                    new_token = token
                elif action == "remove-token":
                    store.remove_token(fields.get("name", ""))
                elif action == "retention":
                    features = {}
                    for item in fields.get("features", "").split(","):
                        if item.strip():
                            name, _, days = item.partition("=")
                            features[name.strip()] = int(days)
                    # The wait of log events for their span is set with the CLI: kept as is.
                    wait = retention_policy.policy(store).events_minutes
                    retention_policy.set_policy(
                        store, retention_policy.Policy(int(fields.get("days", "")), features, wait)
                    )
                else:
                    return web.error("no such action", 404)
        except ValueError as exc:
            return admin_page(web, problem=str(exc), status=400)
        if new_token:
            return admin_page(web, new_token=new_token)
        return RedirectResponse("/admin", status_code=303)

    return await run_in_threadpool(act)


def routes() -> list[BaseRoute]:
    return [
        Page("/login", login, role=None, methods=["GET", "POST"]),
        Page("/logout", logout, role="viewer", methods=["POST"]),
        Page("/admin", admin, role="admin", methods=["GET"]),
        Page("/admin/{action}", admin, role="admin", methods=["POST"]),
    ]
