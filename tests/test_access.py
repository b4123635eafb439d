"""Accounts, roles, sessions, CSRF and scoped tokens: each role against each page and API
route of a real server on each store kind; sign-in and out; tokens; the console kept from
the private tables; the CLI that manages accounts and tokens."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import Span
from llmlog.operations import accounts
from llmlog.store import ReadOnlyError, Store, open_store
from llmlog.web.auth import AccessMiddleware, local_path
from tests.backends import Backend, stored_bytes
from tests.webui import Running, make_call

PASSWORD = "correct horse battery"
SECRET_TEXT = "PROMPT-TEXT-no-viewer-sees"


# ---------------------------------------------------------------- units


def test_passwords_are_slow_hashes_that_check() -> None:
    stored = accounts.hash_password(PASSWORD)
    assert stored.startswith("scrypt$32768$8$1$") and PASSWORD not in stored
    assert accounts.hash_password(PASSWORD) != stored  # salted
    assert accounts.verify_password(PASSWORD, stored)
    for wrong in ("correct horse battery ", "Correct horse battery", "", "correct horse batter"):
        assert not accounts.verify_password(wrong, stored)
    assert not accounts.verify_password(PASSWORD, stored[:-4] + "AAAA")
    assert not accounts.verify_password(PASSWORD, "plain")
    with pytest.raises(ValueError, match="8 characters"):
        accounts.hash_password("short")


def check_web_sessions(store: Store, private: bool = True) -> None:
    """What every store does with sessions: keeps them by hash until they expire or end,
    ends an account's when it is removed or changed, and keeps them from read-only SQL."""
    store.add_account("alice", "debugger", accounts.hash_password(PASSWORD))
    cookie, digest = accounts.new_session()
    assert digest == accounts.session_hash(cookie) and len(cookie) >= 43  # 256 random bits
    store.add_web_session(digest, "alice", int(time.time()) + 60)
    assert store.web_session(digest) == "alice"
    assert store.web_session(accounts.session_hash(cookie + "x")) is None
    store.end_web_session(digest)  # signed out
    assert store.web_session(digest) is None
    _, expired = accounts.new_session()
    store.add_web_session(expired, "alice", int(time.time()) - 1)
    assert store.web_session(expired) is None
    for change in (
        lambda: store.set_account("alice", role="viewer"),
        lambda: store.set_account("alice", password_hash=accounts.hash_password("another password")),
        lambda: store.remove_account("alice"),
    ):
        _, digest = accounts.new_session()
        store.add_web_session(digest, "alice", int(time.time()) + 60)
        change()
        assert store.web_session(digest) is None
    if private:
        with pytest.raises(ReadOnlyError):
            store.query("SELECT * FROM web_sessions")


def test_sessions_are_kept_hashed_in_the_store_and_end(backend: Backend) -> None:
    with open_store(backend.url) as store:
        check_web_sessions(store)


def test_after_sign_in_only_local_paths() -> None:
    assert local_path("/calls?x=1") == "/calls?x=1"
    for bad in (None, "", "https://evil.example/", "//evil.example/x", "/\\evil.example", "calls"):
        assert local_path(bad) == "/"


def test_the_collector_routes_are_not_behind_the_sign_in() -> None:
    """/v1/… takes tokens of its own: the middleware hands it the server's own `receive`, so
    a body of megabytes is read as it comes, not chunk by chunk through a task group."""
    given: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        given.append(receive)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/traces", "headers": [], "query_string": b""}
    asyncio.run(AccessMiddleware(app, web=None, token="ui-s3cret")(scope, receive, send))
    assert given == [receive]
    assert sent[0]["status"] == 204


def test_tokens_are_scoped_and_kept_hashed(tmp_path: Path) -> None:
    token, digest = accounts.new_token("ingest")
    assert token.startswith("llmlog_ingest_") and digest == accounts.token_hash(token)
    with pytest.raises(ValueError, match="scope"):
        accounts.new_token("write")
    with open_store(str(tmp_path / "c.db")) as store:
        store.add_token("svc", "ingest", digest)
        with pytest.raises(ValueError, match="already"):
            store.add_token("svc", "read", accounts.token_hash("x"))
        found = store.token(digest)
        assert found is not None and (found.name, found.scope) == ("svc", "ingest")
        assert token.encode() not in stored_bytes(tmp_path / "c.db")


# ---------------------------------------------------------------- a server with accounts


class Client:
    """One browser's worth of cookies against a server: sign in, get, submit forms."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.http = httpx.Client(base_url=running.base, timeout=10)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.http.cookies

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def submit(self, path: str, data: dict[str, str]) -> httpx.Response:
        if "llmlog_csrf" not in self.http.cookies:
            self.get("/login")
        form = {**data, "csrf": self.http.cookies["llmlog_csrf"]}
        return self.http.post(path, data=form, headers={"Origin": self.running.base})

    def sign_in(self, name: str, password: str = PASSWORD) -> httpx.Response:
        return self.submit("/login?next=/sessions", {"name": name, "password": password})


TRACE = "7" * 32


@pytest.fixture
def server(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        running.store.insert(
            [
                make_call(
                    i,
                    system_prompt=f"{SECRET_TEXT} {i}",
                    # What was said and answered: the calls list's previews, the session's turns.
                    messages=[{"role": "user", "content": f"{SECRET_TEXT} said {i}"}],
                    response={
                        "role": "assistant",
                        "content": [{"type": "text", "text": f"{SECRET_TEXT} {i}"}],
                    },
                    trace_id=TRACE if i in (3, 4) else None,
                )
                for i in range(30)
            ]
        )
        # A trace whose spans carry text (an attribute, an event, a status message): figures
        # and names to a viewer, the text to a debugger.
        t0 = make_call(3).timestamp
        running.store.insert_spans(
            [
                Span(TRACE, "1" * 16, None, "agent run", "internal", t0, t0 + timedelta(seconds=2),
                     attributes={"input": SECRET_TEXT},
                     events=[{"name": "note", "attributes": {"x": SECRET_TEXT}}]),
                Span(TRACE, "2" * 16, "1" * 16, "chat", "client", t0, t0 + timedelta(seconds=1),
                     status="error", status_message=SECRET_TEXT, call_id=CALL),
            ]
        )  # fmt: skip
        for name, role in (("vera", "viewer"), ("dan", "debugger"), ("ada", "admin")):
            accounts.add_user(running.store, name, role, PASSWORD)
        yield running


CALL = make_call(3).id
SESSION = make_call(3).session_id
USER = make_call(3).user_id
# (path, least role): every page and API route of the UI.
ROUTES = [
    ("/", "debugger"),
    (f"/calls/{CALL}", "debugger"),
    ("/sample", "debugger"),
    ("/api/calls", "debugger"),
    (f"/api/calls/{CALL}", "debugger"),
    ("/api/sample", "debugger"),
    (f"/calls/{CALL}/replay", "debugger"),
    ("/search?q=question", "debugger"),
    ("/api/search?q=question", "debugger"),
    (f"/calls/{CALL}/similar", "debugger"),
    (f"/api/calls/{CALL}/similar", "debugger"),
    ("/sql?q=SELECT+1", "debugger"),
    ("/sql.json?q=SELECT+system_prompt+FROM+calls", "debugger"),
    ("/sql.csv?q=SELECT+system_prompt+FROM+calls", "debugger"),
    (f"/sessions/{SESSION}", "debugger"),
    (f"/api/sessions/{SESSION}", "debugger"),
    (f"/users/{USER}", "debugger"),
    ("/sessions", "viewer"),
    ("/users", "viewer"),
    ("/traces", "viewer"),
    ("/api/traces?status=error", "viewer"),
    (f"/traces/{TRACE}", "viewer"),
    (f"/api/traces/{TRACE}", "viewer"),
    ("/api/sessions", "viewer"),
    ("/api/users", "viewer"),
    ("/dashboard?days=366", "viewer"),
    ("/api/dashboard?days=366", "viewer"),
    ("/findings", "viewer"),
    ("/api/findings", "viewer"),
    ("/reports", "viewer"),
    ("/reports/errors?days=366", "viewer"),
    ("/reports/compare?feature=summarize&old=v1&new=v2", "viewer"),
    ("/api/reports/cost?days=366", "viewer"),
    ("/experiments", "viewer"),
    ("/api/experiments", "viewer"),
    ("/alerts", "viewer"),
    ("/api/alerts", "viewer"),
    ("/admin", "admin"),
]


def test_each_role_against_each_route(server: Running) -> None:
    clients = {}
    for name in ("vera", "dan", "ada"):
        c = Client(server)
        r = c.sign_in(name)
        assert r.status_code == 303 and r.headers["location"] == "/sessions", r.text
        clients[accounts.ROLES[["vera", "dan", "ada"].index(name)]] = c
    anonymous = Client(server)
    for path, least in ROUTES:
        api = path.startswith(("/api/", "/sql.json", "/sql.csv"))
        r = anonymous.get(path)
        if api:
            assert r.status_code == 401, path
        else:
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        for role, client in clients.items():
            r = client.get(path)
            allowed = accounts.rank(role) >= accounts.rank(least)
            if path == "/" and role == "viewer":
                assert r.status_code == 303 and r.headers["location"] == "/findings"
                continue
            if allowed:  # opened: the page itself answers (a replay form may say it cannot)
                assert r.status_code in (200, 400), (role, path, r.status_code)
            else:
                assert r.status_code == 403, (role, path, r.status_code)
            if not allowed and api:
                assert "error" in r.json()
            if role == "viewer":
                assert SECRET_TEXT not in r.text, path  # never a prompt's text
    # The text is a debugger's: the list's previews, a session's turns.
    for path in ("/", "/api/calls", f"/sessions/{SESSION}"):
        assert SECRET_TEXT in clients["debugger"].get(path).text, path
    # A viewer may not search the text (asking which sessions mention X, letter by letter),
    # nor read an error's message.
    for path in ("/sessions?q=PROMPT", "/api/users?meta=a%3Db", "/api/sessions?tag=x"):
        assert clients["viewer"].get(path).status_code == 403, path
        assert clients["debugger"].get(path).status_code == 200, path
    errors = clients["viewer"].get("/api/dashboard?days=366").json()["recent_errors"]["rows"]
    assert errors and all(set(e["error"]) == {"type", "status"} for e in errors)
    assert (
        "message"
        in clients["debugger"].get("/api/dashboard?days=366").json()["recent_errors"]["rows"][0]["error"]
    )
    # A trace: to a viewer its tree and figures, no call linked; to a debugger, its text too.
    seen = {role: clients[role].get(f"/api/traces/{TRACE}").json() for role in ("viewer", "debugger")}
    assert [n["name"] for n in seen["viewer"]["nodes"]] == ["agent run", "chat", make_call(4).model]
    assert seen["viewer"]["nodes"][1]["call"]["input_tokens"] == make_call(3).input_tokens
    assert (
        "attributes" not in seen["viewer"]["nodes"][0] and "status_message" not in seen["viewer"]["nodes"][1]
    )
    assert seen["debugger"]["nodes"][0]["attributes"] == {"input": SECRET_TEXT}
    assert seen["debugger"]["nodes"][1]["status_message"] == SECRET_TEXT
    assert 'href="/calls/' not in clients["viewer"].get(f"/traces/{TRACE}").text
    listed = clients["viewer"].get("/api/traces").json()["traces"]
    assert [(t["trace_id"], t["name"], t["calls"], t["failed_spans"]) for t in listed] == [
        (TRACE, "agent run", 2, 1)
    ]
    assert f'href="/traces/{TRACE}"' in clients["viewer"].get("/traces").text
    page = clients["debugger"].get(f"/traces/{TRACE}").text
    assert f'href="/calls/{CALL}"' in page and SECRET_TEXT in page
    # A viewer's pages offer no link to what it may not open.
    page = clients["viewer"].get("/dashboard?days=366").text
    assert 'href="/sql"' not in page and 'href="/sample"' not in page and 'href="/admin"' not in page
    assert 'href="/admin"' in clients["admin"].get("/sessions").text


def test_tokens_open_what_their_scope_says(server: Running) -> None:
    read, read_hash = accounts.new_token("read")
    ingest, ingest_hash = accounts.new_token("ingest")
    server.store.add_token("grafana", "read", read_hash)
    server.store.add_token("billing", "ingest", ingest_hash)
    time.sleep(2.1)  # the server reads the store's tokens every 2 s

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    r = server.get(f"/api/calls/{CALL}", headers=bearer(read))
    assert r.status_code == 200 and SECRET_TEXT in r.text  # a read token reads as a debugger
    assert server.get("/api/calls", headers=bearer(ingest)).status_code == 401
    assert server.get("/", headers=bearer(read)).status_code == 403  # the API only, not pages
    assert server.get("/sql.json?q=SELECT+1", headers=bearer(read)).status_code == 403  # nor the console
    assert server.get("/api/calls", headers=bearer("llmlog_read_guess")).status_code == 401
    record = json.dumps({"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1"})
    assert server.post("/v1/calls", content=record).status_code == 401  # ingest now needs a token
    assert server.post("/v1/calls", content=record, headers=bearer(read)).status_code == 401
    r = server.post("/v1/calls", content=record, headers=bearer(ingest))
    assert r.status_code == 200 and r.json()["stored"] == 1
    server.store.remove_token("grafana")
    assert server.get("/api/calls", headers=bearer(read)).status_code == 401


def test_sign_in_out_and_changes_to_an_account(server: Running) -> None:
    c = Client(server)
    assert c.sign_in("dan", "wrong password").status_code == 401
    assert c.sign_in("nobody").status_code == 401
    assert c.get("/api/calls").status_code == 401
    assert c.sign_in("dan").status_code == 303
    assert c.get("/api/calls").status_code == 200
    # A changed role ends the account's sessions (at once: no cache to wait for); signed in
    # again, it has the new role. A removed account's session ends too.
    server.store.set_account("dan", role="viewer")
    assert c.get("/api/calls").status_code == 401
    assert c.sign_in("dan").status_code == 303
    time.sleep(2.1)  # the role the server knows is read every 2 s
    assert c.get("/api/calls").status_code == 403
    assert c.get("/api/sessions").status_code == 200
    server.store.remove_account("dan")
    assert c.get("/api/sessions").status_code == 401
    # With the last account gone, the UI stays closed (not open to all): sign-in is required.
    for name in ("vera", "ada"):
        server.store.remove_account(name)
    time.sleep(2.1)
    assert Client(server).get("/api/sessions").status_code == 401
    accounts.add_user(server.store, "ada", "admin", PASSWORD)
    # Sign out: a POST, with the form's token.
    d = Client(server)
    d.sign_in("ada")
    bare = httpx.post(server.base + "/logout", cookies=d.cookies, headers={"Origin": server.base})
    assert bare.status_code == 403  # no CSRF token: refused, still signed in
    assert d.get("/admin").status_code == 200
    out = d.submit("/logout", {})
    assert out.status_code == 303
    assert d.get("/admin").status_code == 303  # back to the sign-in page


def test_signing_out_ends_the_session_a_copied_cookie_too(server: Running) -> None:
    c = Client(server)
    assert c.sign_in("ada").status_code == 303
    copied = c.cookies["llmlog_session"]  # as someone who read it off the wire or the disk
    assert httpx.get(server.base + "/admin", cookies={"llmlog_session": copied}).status_code == 200
    assert c.submit("/logout", {}).status_code == 303
    page = httpx.get(server.base + "/admin", cookies={"llmlog_session": copied})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    api = httpx.get(server.base + "/api/calls", cookies={"llmlog_session": copied})
    assert api.status_code == 401
    # The admin removing an account, or changing its password, ends its sessions as well.
    d = Client(server)
    assert d.sign_in("dan").status_code == 303
    assert c.sign_in("ada").status_code == 303
    assert c.submit("/admin/remove-user", {"name": "dan"}).status_code == 303
    assert d.get("/api/calls").status_code == 401
    with open_store(server.store.url) as store:  # `llmlog users passwd`, from another process
        assert c.get("/admin").status_code == 200
        store.set_account("ada", password_hash=accounts.hash_password("a new password"))
    assert c.get("/admin").status_code == 303


def test_every_post_needs_the_form_token(server: Running) -> None:
    c = Client(server)
    c.sign_in("ada")
    csrf = c.cookies["llmlog_csrf"]
    add = {"name": "eve", "role": "admin", "password": PASSWORD}
    for data, headers in (
        (add, {"Origin": server.base}),  # no token
        ({**add, "csrf": csrf}, {}),  # saying nothing of where it comes from
        ({**add, "csrf": "guess"}, {"Origin": server.base}),  # a wrong one
        ({**add, "csrf": csrf}, {"Origin": "http://evil.example"}),  # from another site
    ):
        r = httpx.post(server.base + "/admin/add-user", data=data, headers=headers, cookies=c.cookies)
        assert r.status_code == 403, (data, headers)
    assert server.store.account("eve") is None
    # Signing in is a form like the others.
    r = httpx.post(
        server.base + "/login", data={"name": "ada", "password": PASSWORD}, headers={"Origin": server.base}
    )
    assert r.status_code == 403


def test_the_admin_page_manages_accounts_tokens_and_retention(server: Running) -> None:
    c = Client(server)
    c.sign_in("ada")
    assert (
        c.submit("/admin/add-user", {"name": "eve", "role": "viewer", "password": PASSWORD}).status_code
        == 303
    )
    account = server.store.account("eve")
    assert account is not None and account.role == "viewer"
    r = c.submit("/admin/add-user", {"name": "eve", "role": "viewer", "password": PASSWORD})
    assert r.status_code == 400 and "already" in r.text
    assert c.submit("/admin/add-user", {"name": "x", "role": "root", "password": PASSWORD}).status_code == 400
    r = c.submit("/admin/add-token", {"name": "ci", "scope": "ingest"})
    assert r.status_code == 200 and "llmlog_ingest_" in r.text
    token = r.text.split('id="new-token">')[1].split("<")[0]
    found = server.store.token(accounts.token_hash(token))
    assert found is not None and found.name == "ci"
    assert c.submit("/admin/remove-token", {"name": "ci"}).status_code == 303
    assert server.store.token(accounts.token_hash(token)) is None
    from llmlog.store import retention_policy

    # The wait of log events for their span, set with the CLI, is kept by the page.
    retention_policy.set_policy(server.store, retention_policy.Policy(events_minutes=15))
    assert c.submit("/admin/retention", {"days": "45", "features": "support-bot=7"}).status_code == 303
    assert retention_policy.policy(server.store) == retention_policy.Policy(
        45, {"support-bot": 7}, events_minutes=15
    )
    assert c.submit("/admin/retention", {"days": "0", "features": ""}).status_code == 400
    r = c.submit("/admin/remove-user", {"name": "ada"})
    assert r.status_code == 400 and "your own" in r.text
    assert c.submit("/admin/remove-user", {"name": "eve"}).status_code == 303
    assert server.store.account("eve") is None


def test_the_console_cannot_read_the_private_tables(server: Running) -> None:
    c = Client(server)
    c.sign_in("dan")
    for table in ("accounts", "api_tokens", "settings", "audit", "web_sessions"):
        r = c.get(f"/sql.json?q=SELECT+*+FROM+{table}")
        assert r.status_code == 400, (table, r.text)
        assert "scrypt" not in r.text
        with pytest.raises(ReadOnlyError):
            server.store.query(f"SELECT * FROM {table}")
    assert c.get("/sql.json?q=SELECT+count(*)+FROM+calls").status_code == 200
    assert c.get("/sql.json?q=SELECT+count(*)+FROM+SETTINGS").status_code == 400  # whatever the case
    if server.store.dialect.name == "sqlite":
        # Nor what the file's pages say of them (how many sessions, how long the audit log),
        # nor a table it does not know: what it may read is listed, as on PostgreSQL.
        for sql in (
            "SELECT name, ncell, payload FROM dbstat WHERE name = 'web_sessions'",
            "SELECT count(*) FROM sqlite_stmt",
            "SELECT count(*) FROM dbstat",
            "SELECT count(*) FROM main.web_sessions",
            "SELECT count(*) FROM call_text_idx",
        ):
            r = c.get("/sql.json", params={"q": sql})
            assert r.status_code == 400, sql
        for sql in (
            "SELECT * FROM calls, json_each(calls.messages) LIMIT 1",
            "SELECT name FROM pragma_table_info('calls')",
            "SELECT name FROM sqlite_master",
            "SELECT * FROM daily, people_daily, daily_seen, spans, span_events, content LIMIT 1",
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3)"
            " SELECT count(*) FROM n",
            "WITH t AS (SELECT id FROM calls) SELECT count(*) FROM t",
        ):
            r = c.get("/sql.json", params={"q": sql})
            assert r.status_code == 200, (sql, r.text)
    if server.store.dialect.name == "postgres":
        # Whatever switches roles, runs SQL of its own or hides a name still reads as the
        # reader, which cannot read the private tables.
        for sql in (
            "SELECT set_config('role', 'none', true), (SELECT count(*) FROM settings)",
            "SELECT query_to_xml('select * from settings', true, false, '')",
            'SELECT * FROM U&"\\0073ettings"',
        ):
            r = c.get("/sql.json", params={"q": sql})
            assert r.status_code == 400, sql


def test_reading_through_the_ui_names_the_account_in_the_audit_log(backend: Backend) -> None:
    from llmlog.core.encryption import Keyring

    ring = Keyring.parse("k1:" + "A" * 43 + "=")
    with Running(backend) as running:
        running.store.keyring = ring
        running.store.insert([make_call(i, system_prompt=f"{SECRET_TEXT} {i}") for i in range(3)])
        accounts.add_user(running.store, "dan", "debugger", PASSWORD)
    # The server's store opens with the key, as `llmlog serve` opens it with LLMLOG_KEY set.
    with Running(backend, keyring=ring) as running:
        c = Client(running)
        c.sign_in("dan")
        page = c.get(f"/calls/{make_call(1).id}")
        assert page.status_code == 200 and f"{SECRET_TEXT} 1" in page.text
        entries = running.store.audit_log()
        assert any(e.who == "dan (web, session)" and e.call_ids == [make_call(1).id] for e in entries)


def test_cli_users_and_tokens(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    runner = CliRunner()

    def llmlog(*args: str, stdin: str | None = None) -> Any:
        return runner.invoke(cli, ["--db", db, *args], input=stdin, catch_exceptions=False)

    assert (
        llmlog(
            "accounts", "add", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
        ).exit_code
        == 0
    )
    r = llmlog("accounts", "add", "bob", "--role", "viewer", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0 and "Added bob (viewer)" in r.output
    assert (
        llmlog("accounts", "add", "carl", "--role", "god", "--password-stdin", stdin="x" * 9).exit_code == 2
    )
    r = llmlog("users", "add", "alice", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    assert r.exit_code == 1 and "already" in r.output
    assert (
        llmlog("accounts", "add", "dora", "--role", "viewer", "--password-stdin", stdin="short").exit_code
        == 1
    )
    listed = llmlog("accounts", "list").output
    assert "alice" in listed and "admin" in listed and "bob" in listed and "scrypt" not in listed
    with open_store(db) as store:
        assert accounts.login(store, "alice", PASSWORD) == "admin"
        assert accounts.login(store, "alice", PASSWORD + "!") is None
    assert llmlog("accounts", "remove", "bob").exit_code == 0
    assert llmlog("accounts", "remove", "bob").exit_code == 1
    # `llmlog users`, the group's old name, still works for scripts, and says it was renamed.
    old = llmlog("users", "list")
    assert old.exit_code == 0 and "alice" in old.output and "llmlog accounts" in old.output
    assert "users" not in llmlog("--help").output.split("Commands:")[1]
    token = llmlog("tokens", "add", "svc", "--scope", "ingest").output.strip()
    assert token.startswith("llmlog_ingest_")
    assert "svc" in llmlog("tokens", "list").output and token not in llmlog("tokens", "list").output
    assert llmlog("tokens", "remove", "svc").exit_code == 0
    with open_store(db) as store:
        assert store.tokens() == [] and [a.name for a in store.accounts()] == ["alice"]
        assert store.count(CallFilter()) == 0


def test_every_route_says_who_may_open_it(tmp_path: Path) -> None:
    """Each page and API route declares its role where it is made (`auth.Page`); the access
    check and the navigation read that. A route added without one, or a path no route
    serves, is a debugger's: nothing opens to a viewer, or to anyone, by being forgotten."""
    from starlette.routing import Mount

    from llmlog.capture.proxy import PATHS as PROXY_PATHS
    from llmlog.web.app import create_app
    from llmlog.web.auth import Page, required_role

    app = create_app(lambda: open_store(str(tmp_path / "roles.db")))
    routes = app.routes
    for route in routes:
        path = getattr(route, "path", "")
        if isinstance(route, Page):
            assert route.role is None or route.role in accounts.ROLES, path
        else:  # the collector's and the proxy's routes have tokens of their own; the files none
            assert path.startswith(("/v1/", *PROXY_PATHS)) or (
                isinstance(route, Mount) and path == "/static"
            ), path
    expected = {
        ("/login", "GET"): None,
        ("/static/style.css", "GET"): None,
        ("/findings", "GET"): "viewer",
        ("/api/findings", "GET"): "viewer",
        ("/dashboard", "GET"): "viewer",
        ("/sessions", "GET"): "viewer",
        ("/sessions/s-1", "GET"): "debugger",
        ("/traces", "GET"): "viewer",
        ("/api/traces", "GET"): "viewer",
        ("/traces/abc", "GET"): "viewer",
        ("/api/traces/abc", "GET"): "viewer",
        ("/api/users", "GET"): "viewer",
        ("/reports/errors", "GET"): "viewer",
        ("/api/reports/cost", "GET"): "viewer",
        ("/experiments", "GET"): "viewer",
        ("/experiments/exp-0a1b2c3d", "GET"): "viewer",
        ("/api/experiments/exp-0a1b2c3d", "GET"): "viewer",
        ("/logout", "POST"): "viewer",
        ("/", "GET"): "debugger",
        ("/calls/abc", "GET"): "debugger",
        ("/sql.csv", "GET"): "debugger",
        ("/admin", "GET"): "admin",
        ("/admin/add-user", "POST"): "admin",
        ("/no/such/page", "GET"): "debugger",
    }
    assert {key: required_role(routes, *key) for key in expected} == expected
