"""Read-only SQL on PostgreSQL runs as a login of its own that can read the calls and nothing
else, whatever the SQL says: a function that runs SQL built at run time (`ts_stat`,
`ts_rewrite`) and switches the role back to the session user finds the reader there, not the
store's owner. Tried through the store, `/sql`, `/sql.json` and `llmlog query`, with a
superuser owner and with an owner holding only CREATEROLE; and an owner that can make no role
gets a refusal that says what an administrator runs, then works once given the reader's URL."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.store import ReadOnlyError, Store, open_store
from llmlog.store.postgres import schema as pg
from tests.backends import PostgresBackend, admin, drop_schema, with_schema
from tests.webui import T0, Running

# Written where only the owner may read them; each is one word as `to_tsvector('simple')` sees it.
SECRET = "zq7sessionsecret"
PASSWORD_HASH = "zq7passwordhash"
TOKEN_HASH = bytes.fromhex("7a71377a71377a71")
AUDITOR = "zq7auditor"
MARKERS = (SECRET, PASSWORD_HASH, TOKEN_HASH.hex(), AUDITOR)

# Switches the role back to the session user from inside SQL run at run time; the function's
# name is built as the query runs, so no word in the text names it.
SWITCH = "ts_stat('SELECT to_tsvector(' || 'set_' || 'config' || '(''role'', session_user, true))')"


def _after_switch(inner: str) -> str:
    """A statement that switches, then runs `inner` (SQL text) as whoever the session now is."""
    return (
        f"SELECT (SELECT count(*) FROM {SWITCH}),"
        f" (SELECT string_agg(word, ' ') FROM ts_stat('{inner.replace(chr(39), chr(39) * 2)}'))"
    )


ESCALATIONS = [
    _after_switch("SELECT to_tsvector('simple', key || ' ' || value::text) FROM settings"),
    _after_switch("SELECT to_tsvector('simple', name || ' ' || password) FROM accounts"),
    _after_switch("SELECT to_tsvector('simple', name || ' ' || encode(hash, 'hex')) FROM api_tokens"),
    _after_switch("SELECT to_tsvector('simple', who) FROM audit"),
    _after_switch("SELECT to_tsvector('simple', pg_read_file('PG_VERSION'))"),
    # The same through a CTE the planner must run first.
    f"WITH a AS MATERIALIZED (SELECT * FROM {SWITCH}) SELECT b.word FROM a,"
    " LATERAL ts_stat('SELECT to_tsvector(''simple'', key || '' '' || value::text) FROM settings') AS b",
    # ts_rewrite runs its second argument as SQL too.
    "SELECT ts_rewrite('a'::tsquery, 'SELECT plainto_tsquery(''simple'', ''a''),"
    " plainto_tsquery(''simple'', set_' || 'config(''role'', session_user, true))'),"
    " (SELECT string_agg(word, ' ') FROM"
    " ts_stat('SELECT to_tsvector(''simple'', key || '' '' || value::text) FROM settings'))",
]
DIRECT = [
    "SELECT * FROM accounts",
    "SELECT * FROM api_tokens",
    "SELECT * FROM settings",
    "SELECT * FROM audit",
    "SELECT pg_read_file('PG_VERSION')",
    "TABLE settings",
]


def as_user(url: str, user: str, password: str) -> str:
    """The server URL logged in as another user."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _role_and_schema(server: str, attributes: str) -> tuple[str, str, str]:
    """A login with `attributes` owning a new schema: (role, schema, the store URL)."""
    role, schema = f"owner_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:12]}"
    admin(server, f"CREATE ROLE {role} LOGIN PASSWORD 'pw' {attributes}")
    admin(server, f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
    return role, schema, with_schema(as_user(server, role, "pw"), schema)


def _drop(server: str, role: str, schema: str) -> None:
    drop_schema(server, schema)
    admin(server, f"DROP OWNED BY {role}")
    admin(server, f"DROP ROLE {role}")


@pytest.fixture(params=["superuser", "createrole"])
def owner(request: pytest.FixtureRequest, postgres_server: str) -> Iterator[tuple[str, str]]:
    """(store URL, owner's name): the server's superuser, or a login with CREATEROLE only."""
    if request.param == "superuser":
        url = request.getfixturevalue("pg_url")
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT current_user").fetchone()
        assert row is not None
        yield url, str(row[0])
        return
    role, schema, url = _role_and_schema(postgres_server, "CREATEROLE")
    yield url, role
    _drop(postgres_server, role, schema)


def _with_secrets(store: Store, accounts: bool = True) -> None:
    store.insert([Call(timestamp=T0, model="m", feature="f")])
    store.set_setting("session_secret", SECRET)
    store.audit(AUDITOR, "read", ["x"])
    if accounts:  # the web UI would ask everyone to sign in
        store.add_account("ada", "admin", PASSWORD_HASH)
        store.add_token("ci", "read", TOKEN_HASH)


def _leaks(text: str) -> list[str]:
    return [m for m in MARKERS if m in text]


@pytest.mark.parametrize("sql", ESCALATIONS)
def test_a_role_switch_at_run_time_finds_the_reader(owner: tuple[str, str], sql: str) -> None:
    url, _ = owner
    with open_store(url) as store:
        _with_secrets(store)
        with pytest.raises(ReadOnlyError) as refused:
            store.query(sql)
        assert not _leaks(str(refused.value))
        # And the store is as it was for everything else.
        assert store.query("SELECT count(*) FROM calls").rows == [(1,)]


def test_the_session_is_the_reader_after_a_switch(owner: tuple[str, str]) -> None:
    url, owner_name = owner
    with open_store(url) as store:
        sql = (
            f"WITH a AS MATERIALIZED (SELECT * FROM {SWITCH})"
            " SELECT (SELECT count(*) FROM a), current_user, session_user"
        )
        ((_, current, session),) = store.query(sql).rows
        assert owner_name not in (current, session)
        assert current == session and current.startswith("llmlog_reader_")


@pytest.mark.parametrize("sql", DIRECT)
def test_private_tables_and_server_files_are_unreadable(owner: tuple[str, str], sql: str) -> None:
    with open_store(owner[0]) as store:
        _with_secrets(store)
        with pytest.raises(ReadOnlyError, match=r"permission denied|not readable"):
            store.query(sql)


def test_no_role_to_become(owner: tuple[str, str]) -> None:
    url, owner_name = owner
    with open_store(url) as store:
        for sql in (
            f"SELECT set_config('role', '{owner_name}', false)",
            f"SELECT set_config('role', '{owner_name}', true)",
            f"SELECT set_config('session_authorization', '{owner_name}', true)",
            f"SET ROLE {owner_name}",
        ):
            with pytest.raises(ReadOnlyError):
                store.query(sql)
        # The reader is a member of no role, and none of the powerful ones.
        memberships = "SELECT count(*) FROM pg_auth_members WHERE member = session_user::regrole"
        assert store.query(memberships).rows == [(0,)]


def test_the_console_and_its_downloads_keep_the_secrets(owner: tuple[str, str]) -> None:
    backend = PostgresBackend(owner[0])
    with Running(backend) as ui:
        _with_secrets(ui.store, accounts=False)
        for sql in [ESCALATIONS[0], ESCALATIONS[3], ESCALATIONS[5], "SELECT * FROM settings"]:
            page = ui.get("/sql", params={"q": sql})
            assert page.status_code == 400 and not _leaks(page.text), page.text
            for download in ("/sql.json", "/sql.csv"):
                d = ui.get(download, params={"q": sql})
                assert d.status_code == 400 and not _leaks(d.text), d.text
        ok = ui.get("/sql.json", params={"q": "SELECT count(*) AS n FROM calls"})
        assert ok.status_code == 200 and json.loads(ok.text) == [{"n": 1}]


def test_llmlog_query_keeps_the_secrets(owner: tuple[str, str]) -> None:
    url = owner[0]
    with open_store(url) as store:
        _with_secrets(store)
    for sql in [ESCALATIONS[0], ESCALATIONS[1], ESCALATIONS[2], "SELECT * FROM api_tokens"]:
        result = CliRunner().invoke(cli, ["--db", url, "query", "--format", "json", sql])
        assert result.exit_code != 0 and not _leaks(result.output + result.stderr), result.output


# ---------------------------------------------------------------- an owner that makes no role


@pytest.fixture
def plain_owner(postgres_server: str) -> Iterator[str]:
    role, schema, url = _role_and_schema(postgres_server, "NOCREATEROLE")
    yield url
    _drop(postgres_server, role, schema)


def _admin_makes_the_reader(server: str, message: str, store_url: str) -> str:
    """Run the SQL the refusal names, as an administrator; the reader's URL."""
    statements = re.search(r"An administrator runs: (.*?;) then sets", message)
    assert statements, message
    admin(server, statements.group(1).replace("'choose-one'", "'reader-pw'"))
    role = re.search(r'CREATE ROLE "?(\w+)"? LOGIN', statements.group(1))
    assert role
    return as_user(store_url, role.group(1), "reader-pw")


def test_without_a_reader_read_only_sql_refuses_and_says_how(plain_owner: str, postgres_server: str) -> None:
    with open_store(plain_owner) as store:
        _with_secrets(store, accounts=False)
        with pytest.raises(ReadOnlyError) as refused:
            store.query("SELECT count(*) FROM calls")
        message = str(refused.value)
        assert "CREATE ROLE" in message and "LLMLOG_READER_DB" in message and "llmlog migrate" in message
        assert store.reader_setup() == message
        # llmlog's own reading (the dashboard, reports) goes on as the owner.
        assert store.internal_query("SELECT count(*) FROM calls").rows == [(1,)]
    said = CliRunner().invoke(cli, ["--db", plain_owner, "migrate"])
    assert said.exit_code == 0 and "CREATE ROLE" in said.stderr
    refused_cli = CliRunner().invoke(cli, ["--db", plain_owner, "query", "SELECT 1"])
    assert refused_cli.exit_code != 0 and "LLMLOG_READER_DB" in refused_cli.output
    with Running(PostgresBackend(plain_owner)) as ui:
        r = ui.get("/sql.json", params={"q": "SELECT 1"})
        assert r.status_code == 400 and "LLMLOG_READER_DB" in r.json()["error"]

    reader_url = _admin_makes_the_reader(postgres_server, message, plain_owner)
    with open_store(plain_owner, reader_url) as store:
        assert store.reader_setup() is None
        assert store.query("SELECT count(*) FROM calls").rows == [(1,)]
        for sql in [*DIRECT, ESCALATIONS[0], ESCALATIONS[1]]:
            with pytest.raises(ReadOnlyError):
                store.query(sql)
    env = {"LLMLOG_READER_DB": reader_url}
    count = "SELECT count(*) AS n FROM calls"
    ok = CliRunner().invoke(cli, ["--db", plain_owner, "query", "--format", "json", count], env=env)
    assert ok.exit_code == 0 and json.loads(ok.output) == [{"n": 1}], ok.output
    with Running(PostgresBackend(plain_owner), reader_url=reader_url) as ui:
        r = ui.get("/sql.json", params={"q": "SELECT count(*) AS n FROM calls"})
        assert r.status_code == 200 and r.json() == [{"n": 1}]
        r = ui.get("/sql.json", params={"q": ESCALATIONS[0]})
        assert r.status_code == 400 and not _leaks(r.text)


def test_a_reader_url_that_can_read_private_tables_is_refused(plain_owner: str) -> None:
    """Given the owner's own login as the reader (a mistake), read-only SQL refuses rather
    than run as someone who can read the secrets."""
    with open_store(plain_owner, plain_owner) as store:
        _with_secrets(store)
        with pytest.raises(ReadOnlyError, match="can read private tables"):
            store.query("SELECT count(*) FROM calls")


def test_a_store_from_before_gets_its_reader_on_open(pg_url: str) -> None:
    """A store made before the reader login (migration 9, the shared SET ROLE reader granted
    its tables) gets the login on its next open, and the shared role loses its grants."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pg.migrate(conn, 9)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (pg.LEGACY_READER,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {pg.LEGACY_READER} NOLOGIN")
        conn.execute(f"GRANT SELECT ON calls, call_data TO {pg.LEGACY_READER}")
    with open_store(pg_url) as store:
        assert (store.schema_found, store.schema_version) == (9, len(pg.MIGRATIONS))
        assert store.reader_setup() is None
        assert store.query("SELECT count(*) FROM calls").rows == [(0,)]
    with psycopg.connect(pg_url) as conn:
        granted = "SELECT has_table_privilege(%s, 'calls', 'SELECT')"
        assert conn.execute(granted, (pg.LEGACY_READER,)).fetchone() == (False,)
