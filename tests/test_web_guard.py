"""What keeps other sites from driving `llmlog serve`, over real HTTP on each store kind: the
Host names it answers to (DNS rebinding), the content types its writing routes take without a
token, the CSRF proof on every unsafe method of every route (open server too), the headers on
every answer, and sign-ins throttled with password hashing bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmlog.capture.context import CallContext
from llmlog.capture.proxy import Upstreams
from llmlog.core.filters import CallFilter
from llmlog.core.record import Span
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations import accounts
from llmlog.web import guard
from llmlog.web.local_proxy import LocalProxy
from llmlog.web.throttle import Busy, SignIns, cores
from tests.backends import Backend, SQLiteBackend
from tests.webui import Running, free_port, make_call, tags

PASSWORD = "correct horse battery"
RECORD = {"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1", "input_tokens": 12}
# What a page of another site can make a browser send without asking first.
SIMPLE_TYPES = [
    None,  # no body type at all
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]


@pytest.fixture
def open_server(backend: Backend) -> Iterator[Running]:
    """A server as `llmlog serve` starts by default: on loopback, no accounts, no tokens. Its
    proxy forwards to a port nothing listens on: nothing leaves the machine."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    with Running(backend, upstreams=Upstreams(anthropic=nowhere, openai=nowhere)) as running:
        running.store.insert([make_call(i) for i in range(12)])
        yield running


def raw(
    running: Running,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    client: httpx.Client | None = None,
) -> httpx.Response:
    """A request exactly as given (httpx would otherwise set Host and a content type itself)."""
    with contextlib.ExitStack() as stack:
        http = client or stack.enter_context(httpx.Client(base_url=running.base, timeout=30))
        request = http.build_request(method, path, content=body)
        request.headers.pop("content-type", None)
        request.headers.update(headers)
        return http.send(request)


# ---------------------------------------------------------------- hosts (DNS rebinding)


def test_only_the_names_it_is_served_as(open_server: Running) -> None:
    s = open_server
    port = s.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "LOCALHOST"):
        assert raw(s, "GET", "/", {"Host": host}).status_code == 200, host
    before = s.store.count(CallFilter())
    # A page of evil.example whose name now resolves to 127.0.0.1: its requests name it.
    for host in (f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example", "localhost.", ""):
        r = raw(s, "GET", "/api/calls", {"Host": host})
        assert r.status_code == 400, host
        assert "--allowed-host" in r.text and "LLMLOG_ALLOWED_HOSTS" in r.text and "question" not in r.text
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    r = raw(
        s, "POST", "/v1/calls", {**rebound, "Content-Type": "application/json"}, json.dumps(RECORD).encode()
    )
    assert r.status_code == 400
    jar = httpx.get(s.base + "/login").cookies  # a form token, as the page would have read it
    form = f"csrf={jar['llmlog_csrf']}&model=x".encode()
    headers = {
        **rebound,
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"llmlog_csrf={jar['llmlog_csrf']}",
    }
    assert raw(s, "POST", f"/calls/{make_call(3).id}/replay", headers, form).status_code == 400
    assert s.store.count(CallFilter()) == before


def test_names_added_with_allowed_host(backend: Backend) -> None:
    with Running(backend, allowed_hosts=["llmlog.example.com", "*.corp.example"]) as s:
        for host in ("llmlog.example.com", "llmlog.example.com:443", "a.corp.example", "localhost"):
            assert raw(s, "GET", "/", {"Host": host}).status_code == 200, host
        for host in ("example.com", "corp.example.evil", "evil.example"):
            assert raw(s, "GET", "/", {"Host": host}).status_code == 400, host


def test_the_names_follow_how_it_is_served() -> None:
    assert guard.allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert guard.allowed_hosts("::1") == ["[::1]", "localhost", "127.0.0.1"]
    assert guard.allowed_hosts("192.0.2.7", ["Llmlog.Example.com:8443", "::1", "*.corp.example"]) == [
        "192.0.2.7", "llmlog.example.com", "[::1]", "*.corp.example",
    ]  # fmt: skip
    everywhere = guard.allowed_hosts("0.0.0.0")
    assert {"localhost", "127.0.0.1", socket.gethostname().lower()} <= set(everywhere)
    assert not any("evil" in h or h == "*" for h in everywhere)
    for bad in ("http://x.example/", "a b", "x.*.example", "*x.example", ""):
        with pytest.raises(ValueError):
            guard.allowed_hosts("127.0.0.1", [bad])


def serve(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from llmlog.cli import cli; cli()", "--db", str(db), "serve", *args]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)


def test_serve_answers_to_its_names_and_the_ones_given(tmp_path: Path) -> None:
    port = free_port()
    server = serve(
        tmp_path / "x.db", "--port", str(port), "--no-retention", "--allowed-host", "llmlog.example.com",
        env={"LLMLOG_ALLOWED_HOSTS": "from-env.example, other.example"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "llmlog serve did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for host in ("llmlog.example.com", "from-env.example", "other.example", f"localhost:{port}"):
                assert client.get("/", headers={"Host": host}).status_code == 200, host
            assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    finally:
        server.terminate()
        server.wait(10)
    assert "llmlog.example.com" in (server.stderr.read() if server.stderr else "")


def test_serve_refuses_a_bad_allowed_host(tmp_path: Path) -> None:
    server = serve(tmp_path / "x.db", "--port", str(free_port()), "--allowed-host", "http://x.example/")
    try:
        assert server.wait(30) == 2
    finally:
        server.kill()
    assert "allowed host" in (server.stderr.read() if server.stderr else "")


def test_the_proxy_of_llmlog_wrap_answers_to_loopback_names_only() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    upstreams = Upstreams(anthropic=nowhere, openai=nowhere)
    with (
        LocalProxy(lambda exchange: None, upstreams, CallContext()) as p,
        httpx.Client(base_url=p.url) as http,
    ):
        assert http.get("/anthropic/v1/models", headers={"Host": "evil.example"}).status_code == 400
        answer = http.get("/anthropic/v1/models", headers={"Host": "localhost"})
        assert answer.status_code == 502  # let by, to an upstream that is not there
        assert answer.headers["content-security-policy"] == guard.CSP


# ---------------------------------------------------------------- writes only from programs


def test_the_collector_takes_no_body_a_page_could_send(open_server: Running) -> None:
    s = open_server
    before = s.store.count(CallFilter())
    body = json.dumps(RECORD).encode()
    for path in ("/v1/calls", "/v1/traces", "/v1/logs"):
        for kind in SIMPLE_TYPES:
            r = raw(s, "POST", path, {"Content-Type": kind} if kind else {}, body)
            assert r.status_code == 415, (path, kind, r.status_code)
            assert "application/json" in r.json()["error"]
    assert s.store.count(CallFilter()) == before
    # What programs send is taken as before: JSON, NDJSON (the SDK's remote mode), protobuf.
    for i, kind in enumerate(("application/json", "application/x-ndjson", "Application/JSON; charset=utf-8")):
        record = json.dumps({**RECORD, "input_tokens": i}).encode()  # its id: from its content
        r = raw(s, "POST", "/v1/calls", {"Content-Type": kind}, record)
        assert r.status_code == 200 and r.json()["stored"] == 1, kind
    r = raw(s, "POST", "/v1/traces", {"Content-Type": "application/x-protobuf"}, b"")
    assert r.status_code == 200
    assert s.store.count(CallFilter()) == before + 3


def test_a_token_vouches_for_any_body(backend: Backend) -> None:
    with Running(backend, ingest_token="ingest-secret") as s:
        body = json.dumps(RECORD).encode()
        assert raw(s, "POST", "/v1/calls", {"Content-Type": "text/plain"}, body).status_code == 401
        r = raw(s, "POST", "/v1/calls", {"Authorization": "Bearer ingest-secret"}, body)  # curl --data-binary
        assert r.status_code == 200 and r.json()["stored"] == 1


def test_the_proxy_records_no_call_a_page_could_send(tmp_path: Path, fake: FakeProvider) -> None:
    fake.reset()
    upstreams = Upstreams(anthropic=fake.url, openai=fake.url)
    body = json.dumps(
        {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    )
    with Running(SQLiteBackend(tmp_path / "p.db"), upstreams=upstreams) as s:
        for path in ("/anthropic/v1/messages", "/openai/v1/chat/completions", "/openai/v1/responses"):
            for kind in SIMPLE_TYPES:
                r = raw(s, "POST", path, {"Content-Type": kind} if kind else {}, body.encode())
                assert r.status_code == 415, (path, kind)
        r = raw(
            s,
            "POST",
            "/anthropic/v1/messages",
            {"Content-Type": "application/json", "x-api-key": "k"},
            body.encode(),
        )
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while s.store.count(CallFilter()) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        assert s.store.count(CallFilter()) == 1  # the JSON one only
        # What is not a model call passes as before, whatever its type (a file upload, a list).
        assert raw(s, "GET", "/openai/v1/models", {}).status_code != 415


class CorsUpstream:
    """A provider that says yes to every page (as some do, for calls from browsers)."""

    def __init__(self) -> None:
        async def anything(request: Request) -> JSONResponse:
            return JSONResponse(
                {"ok": True},
                headers={
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Headers": "*",
                    "Access-Control-Allow-Methods": "POST",
                    "Content-Security-Policy": "default-src *",
                },
            )

        app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "OPTIONS"])])
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_the_proxy_relays_no_cors_permission(tmp_path: Path) -> None:
    with (
        CorsUpstream() as upstream,
        Running(
            SQLiteBackend(tmp_path / "p.db"), upstreams=Upstreams(anthropic=upstream, openai=upstream)
        ) as s,
    ):
        preflight = {
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        r = raw(s, "OPTIONS", "/anthropic/v1/messages", preflight)
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], dict(r.headers)
        assert r.headers["content-security-policy"] == guard.CSP  # ours, not the provider's


# ---------------------------------------------------------------- CSRF on every unsafe method


def test_every_unsafe_method_of_every_route_needs_the_form_token(open_server: Running) -> None:
    """On a server with no accounts and no token (open to loopback): no request another site
    can make changes anything. Walks every route the app has, with every unsafe method."""
    s = open_server
    call = make_call(3)
    values = {"call_id": call.id, "replay_id": call.id, "action": "add-token", "name": "errors",
              "session_id": "sess_0", "user_id": "user_0", "path": "v1/messages", "ctx": "e30"}  # fmt: skip
    before = (s.store.count(CallFilter()), s.store.tokens(), s.store.setting("retention"))
    checked = 0
    http = httpx.Client(base_url=s.base, timeout=30)
    for route in s.app.routes:
        path = getattr(route, "path", None)
        if path is None or path.startswith("/static"):
            continue
        url = path.replace("{", "").replace("}", "")
        for name, value in values.items():
            url = url.replace(f"{name}:path", value).replace(f"{name}:str", value).replace(name, value)
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for headers in (
                {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
                {"Content-Type": "text/plain"},  # saying nothing of where it comes from
            ):
                r = raw(s, method, url, headers, b"name=eve&role=admin&password=correct+horse&days=1", http)
                writes = url in ("/v1/calls", "/v1/traces", "/v1/logs") or url.endswith(
                    ("/anthropic/v1/messages", "/completions", "/responses")
                )
                if writes and method == "POST":
                    assert r.status_code == 415, (method, url, r.status_code)
                elif not url.startswith(("/v1/", "/anthropic/", "/openai/", "/c/")):
                    assert r.status_code == 403, (method, url, r.status_code)
                checked += 1
    assert checked > 100
    time.sleep(0.3)  # anything the proxy's writer was handed would be stored by now
    assert (s.store.count(CallFilter()), s.store.tokens(), s.store.setting("retention")) == before
    assert s.store.accounts() == []


# ---------------------------------------------------------------- headers


def test_every_answer_carries_the_security_headers(
    open_server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = open_server
    call = make_call(3)
    answers = {
        "page": s.get("/"),
        "call": s.get(f"/calls/{call.id}"),
        "dashboard": s.get("/dashboard"),
        "json": s.get("/api/calls"),
        "script": s.get("/static/app.js"),
        "style": s.get("/static/style.css"),
        "missing": s.get("/no/such/page"),
        "missing file": s.get("/static/nope.js"),
        "openapi": s.get("/v1/openapi.json"),
        "refused type": s.post("/v1/calls", content=b"{}"),
        "refused form": s.post("/admin/add-user", data={"name": "x"}),
        "refused host": raw(s, "GET", "/", {"Host": "evil.example"}),
        "csv": s.get("/sql.csv", params={"q": "SELECT 1"}),
    }
    store_class = type(s.store)
    monkeypatch.setattr(store_class, "recent", lambda *a, **k: 1 / 0)  # a fault inside the app
    answers["server error"] = s.get("/api/calls")
    assert answers["server error"].status_code == 500
    for what, r in answers.items():
        for name, value in guard.SECURITY_HEADERS:
            assert r.headers.get(name) == value, (what, name, r.headers.get(name))
        assert len(r.headers.get_list("content-security-policy")) == 1, what
    csp = dict(d.strip().split(" ", 1) for d in guard.CSP.split(";"))
    assert (
        csp["script-src"] == "'self'" and csp["style-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    )
    assert "unsafe" not in guard.CSP and csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"


def test_pages_carry_no_inline_script_or_style(open_server: Running) -> None:
    """What the policy would block: no <style>, no style="", no script but our file."""
    s = open_server
    trace = "ab" * 16
    call = make_call(500, trace_id=trace)  # with a trace: its waterfall's bars
    s.store.insert([call])
    s.store.insert_spans([Span(trace, "c" * 16, None, "chat", "client", call.timestamp,
                               call.timestamp + timedelta(seconds=1), call_id=call.id)])  # fmt: skip
    assert "timeline" in s.get(f"/traces/{trace}").text
    for path in ("/", f"/calls/{call.id}", "/sample", "/sessions", "/sessions/sess_0", "/users",
                 "/users/user_0", "/traces", f"/traces/{trace}", "/dashboard", "/reports", "/reports/errors",
                 "/reports/cost", "/search?q=question", f"/calls/{call.id}/replay", "/sql?q=SELECT+1",
                 "/experiments", "/login"):  # fmt: skip
        html = s.get(path).text
        assert "<style" not in html, path
        for tag, attrs in tags(html):
            named = dict(attrs)
            assert "style" not in named, (path, tag, attrs)
            if tag == "script":
                assert (named.get("src") or "").startswith("/static/"), (path, attrs)


# ---------------------------------------------------------------- sign-in


@pytest.fixture
def with_accounts(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        for name, role in (("dan", "debugger"), ("ada", "admin")):
            accounts.add_user(running.store, name, role, PASSWORD)
        yield running


def client_at(running: Running, address: str) -> httpx.Client:
    """A client connecting from `address` (any of 127.0.0.0/8 is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    client = httpx.Client(base_url=running.base, timeout=60, transport=transport)
    client.get("/login")  # the form token
    return client


def sign_in(client: httpx.Client, running: Running, name: str, password: str) -> httpx.Response:
    form = {"name": name, "password": password, "csrf": client.cookies["llmlog_csrf"]}
    return client.post("/login", data=form, headers={"Origin": running.base})


class Hashes:
    """Counts the password checks running at once, around the real check."""

    def __init__(self, real: Any) -> None:
        self.real, self.now, self.peak, self.total = real, 0, 0, 0
        self.lock = threading.Lock()

    def __call__(self, password: str, stored: str) -> bool:
        with self.lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
        try:
            return bool(self.real(password, stored))
        finally:
            with self.lock:
                self.now -= 1


def test_sign_ins_are_throttled_and_hashing_is_bounded(
    with_accounts: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = with_accounts
    hashes = Hashes(accounts.verify_password)
    monkeypatch.setattr(accounts, "verify_password", hashes)
    attacker = client_at(s, "127.0.0.1")
    with ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(lambda i: sign_in(attacker, s, "dan", f"guess number {i}"), range(60)))
    codes = [r.status_code for r in answers]
    assert codes.count(429) + codes.count(503) >= 45, codes
    assert set(codes) <= {401, 429, 503}, codes
    assert all(r.headers.get("retry-after", "").isdigit() for r in answers if r.status_code in (429, 503))
    assert hashes.peak <= cores(), (hashes.peak, cores())
    assert hashes.total <= 15  # refused ones never reach the hash
    # Neither the account nor the client may go on guessing, the right password included...
    assert sign_in(attacker, s, "dan", PASSWORD).status_code == 429
    assert sign_in(client_at(s, "127.0.0.2"), s, "dan", PASSWORD).status_code == 429
    assert sign_in(attacker, s, "ada", PASSWORD).status_code == 429
    # ...but another account from another client signs in: no one else is locked out.
    other = client_at(s, "127.0.0.3")
    assert sign_in(other, s, "ada", PASSWORD).status_code == 303
    assert other.get("/admin").status_code == 200


def test_a_right_password_gives_its_turn_back(with_accounts: Running) -> None:
    c = client_at(with_accounts, "127.0.0.4")
    for _ in range(15):  # more than the limit, all right: none counts
        assert sign_in(c, with_accounts, "ada", PASSWORD).status_code == 303
    assert sign_in(c, with_accounts, "ada", "wrong one").status_code == 401


def test_the_throttle_forgets_after_its_window_and_bounds_who_waits() -> None:
    now = [1000.0]
    signins = SignIns(limit=3, window_s=60, hashing=1, wait_s=0.2, queue=1, clock=lambda: now[0])
    for _ in range(3):
        assert signins.start("dan", "10.0.0.1") is None
    assert signins.start("dan", "10.0.0.2") == 60  # the account's limit, from anywhere
    assert signins.start("ada", "10.0.0.1") == 60  # the client's limit, for any account
    assert signins.start("ada", "10.0.0.2") is None
    now[0] += 30
    assert signins.start("dan", "10.0.0.3") == 30
    now[0] += 31
    assert signins.start("dan", "10.0.0.1") is None  # the window has passed

    async def crowd() -> list[str]:
        """One check running, one waiting for its turn: a third is refused at once; the one
        waiting gives up after `wait_s`."""
        held = asyncio.Event()
        release = asyncio.Event()

        async def check(hold: bool) -> str:
            try:
                async with signins.hashing_turn():
                    if hold:
                        held.set()
                        await release.wait()
                    return "checked"
            except Busy:
                return "busy"

        first = asyncio.create_task(check(True))
        await held.wait()
        second = asyncio.create_task(check(False))
        await asyncio.sleep(0)  # now waiting
        third = await check(False)
        second_result = await second
        release.set()
        return [await first, second_result, third, await check(False)]

    assert asyncio.run(crowd()) == ["checked", "busy", "busy", "checked"]
