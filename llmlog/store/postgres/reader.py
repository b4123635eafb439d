"""PostgreSQL's reader: the login that read-only SQL a person writes (the console, `/sql.json`,
`llmlog query`) runs as, on a connection of its own.

Running such SQL on the owner's connection under `SET ROLE` cannot be made safe: the session
user stays the owner, and any function that runs SQL built at run time (`ts_stat`,
`ts_rewrite`, …) can `set_config('role', session_user, true)` back to it. So the reader is a
separate LOGIN role: not a superuser, no CREATEROLE, BYPASSRLS or REPLICATION, a member of no
role (so there is no one it can become), with USAGE on the store's schema and SELECT on the
public relations only (`PUBLIC_RELATIONS`: an allow-list, so a table added later is private
until granted). Accounts, tokens, settings (the session secret, the reader's own password)
and the audit log are out of its reach whatever the SQL says.

The store makes the role itself when the user it connects as may (superuser or CREATEROLE),
as a migration and again on open until it exists, and keeps its password in `settings`.
Elsewhere an administrator makes it (`admin_sql` says how) and gives its URL as
LLMLOG_READER_DB; without either, read-only SQL refuses and says so.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Generator, Sequence
from typing import Any, cast

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg.types.string import TextLoader

from llmlog.store.base import plain
from llmlog.store.readonly import ReadOnlyError, timed_out, too_large

READER_ENV = "LLMLOG_READER_DB"
LOGIN_SETTING = "reader_login"  # {"user": …, "password": …} in `settings`, which the reader cannot read
# What the reader may read: the calls and what is computed from them.
PUBLIC_RELATIONS = (
    "calls", "call_data", "content", "daily", "people_daily", "daily_seen", "spans", "span_events",
    "traces", "llmlog_schema",
)  # fmt: skip
# What it must not, checked on each reader connection (an administrator's login included).
PRIVATE_TABLES = (
    "accounts",
    "api_tokens",
    "settings",
    "audit",
    "web_sessions",
    "experiments",
    "alerts",
    "alert_events",
    "alert_lease",
)
# Predefined roles that read or run anything on the server whatever the grants say.
_POWERFUL = (
    "pg_read_server_files", "pg_write_server_files", "pg_execute_server_program", "pg_read_all_data",
    "pg_write_all_data",
)  # fmt: skip

_READING = re.compile(r"^\s*(\(|select\b|with\b|values\b|table\b)", re.IGNORECASE)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def reader_name(cur: psycopg.Cursor[Any]) -> str:
    """The store's reader role: one per database and schema (role names are the whole
    server's; two stores on one server each have their own)."""
    row = cur.execute(
        "SELECT 'llmlog_reader_' || left(md5(current_database() || '/' || current_schema()), 16)"
    ).fetchone()
    assert row is not None
    return str(row[0])


def _scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677), so that
    CREATE ROLE carries no password a statement log could show."""
    salt, iterations = secrets.token_bytes(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def _grants(schema: str, role: str, relations: tuple[str, ...] = PUBLIC_RELATIONS) -> list[pgsql.Composed]:
    names = pgsql.SQL(", ").join(pgsql.Identifier(schema, r) for r in relations)
    return [
        pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(pgsql.Identifier(schema), pgsql.Identifier(role)),
        pgsql.SQL("GRANT SELECT ON {} TO {}").format(names, pgsql.Identifier(role)),
    ]


def admin_sql(schema: str, role: str) -> str:
    """What an administrator runs to make the reader where the store cannot."""
    create = pgsql.SQL(
        "CREATE ROLE {} LOGIN PASSWORD 'choose-one' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
        " NOREPLICATION NOBYPASSRLS"
    ).format(pgsql.Identifier(role))
    return "; ".join(s.as_string() for s in [create, *_grants(schema, role)]) + ";"


def create_reader(cur: psycopg.Cursor[Any]) -> bool:
    """In a transaction holding the schema lock: make this store's reader if none is recorded
    and the connected user may make roles. Whether a reader is recorded now."""
    if cur.execute("SELECT 1 FROM settings WHERE key = %s", (LOGIN_SETTING,)).fetchone():
        return True
    may = cur.execute(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not may or not may[0]:
        return False
    role, password = reader_name(cur), secrets.token_urlsafe(24)
    schema = cur.execute("SELECT current_schema()").fetchone()
    assert schema is not None and schema[0] is not None
    try:
        with cur.connection.transaction():
            found = cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            cur.execute(
                pgsql.SQL(
                    "{} ROLE {} WITH LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
                    " NOREPLICATION NOBYPASSRLS"
                ).format(
                    pgsql.SQL("ALTER" if found else "CREATE"),
                    pgsql.Identifier(role),
                    pgsql.Literal(_scram_verifier(password)),
                )
            )
            # A role of this name made before (a store dropped and made again) is a member of
            # nothing once this is done: there is no one it can become.
            granted = cur.execute(
                "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = %s::regrole", (role,)
            ).fetchall()
            for (other,) in granted:
                cur.execute(pgsql.SQL("REVOKE {} FROM {}").format(pgsql.SQL(other), pgsql.Identifier(role)))
            cur.execute(
                pgsql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                    pgsql.Identifier(role)
                )
            )
            cur.execute(
                "INSERT INTO settings VALUES (%s, jsonb_build_object('user', %s::text, 'password', %s::text))"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (LOGIN_SETTING, role, password),
            )
            grant_reading(cur)
    except psycopg.errors.InsufficientPrivilege:
        return False  # e.g. a role of that name that is a superuser: not ours to change
    return True


def grant_reading(cur: psycopg.Cursor[Any]) -> None:
    """Let the store's reader (if it made one) read the public relations that exist now. A
    migration that adds a public relation lists it in PUBLIC_RELATIONS and calls this."""
    row = cur.execute("SELECT value ->> 'user' FROM settings WHERE key = %s", (LOGIN_SETTING,)).fetchone()
    schema = cur.execute("SELECT current_schema()").fetchone()
    if not row or not schema or schema[0] is None:
        return
    existing = cur.execute(
        "SELECT array_agg(relname::text ORDER BY relname) FROM pg_class"
        " WHERE relnamespace = current_schema()::regnamespace AND relname = ANY(%s)",
        (list(PUBLIC_RELATIONS),),
    ).fetchone()
    if existing and existing[0]:
        for grant in _grants(schema[0], row[0], tuple(existing[0])):
            cur.execute(grant)


def missing(schema: str, role: str) -> str:
    """Why read-only SQL refuses on a store without a reader, and how to give it one."""
    return (
        "read-only SQL runs as a login that can read the calls and nothing else, and this store has"
        " none: the user it connects as may not create roles. An administrator runs: "
        f"{admin_sql(schema, role)} then sets {READER_ENV}=postgresql://{role}:PASSWORD@HOST/DB"
        " (or passes --reader-db) where llmlog runs; or gives the store's user CREATEROLE and runs"
        " `llmlog migrate`."
    )


def connect(conninfo: str, schema: str, timeout_s: float) -> psycopg.Connection[Any]:
    """A connection as the reader, checked: it must be unable to read the private tables
    and to become anyone who can, else it is refused (a mistaken LLMLOG_READER_DB too)."""
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=max(2, int(timeout_s)))
    except psycopg.Error as exc:
        raise ReadOnlyError(
            f"cannot log in as the reader for read-only SQL ({str(exc).strip()}); let it log in"
            f" (pg_hba.conf) or give its URL as {READER_ENV}"
        ) from None
    try:
        conn.execute(pgsql.SQL("SET search_path = {}").format(pgsql.Identifier(schema)))
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET default_transaction_read_only = on")
        danger = conn.execute(
            "SELECT r.rolname FROM pg_roles AS r"
            " WHERE pg_has_role(session_user, r.oid, 'MEMBER') AND (r.rolsuper OR r.rolcreaterole"
            " OR r.rolbypassrls OR r.rolreplication OR r.rolname = ANY(%s) OR EXISTS ("
            "  SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            "  WHERE n.nspname = %s AND c.relname = ANY(%s)"
            "  AND has_any_column_privilege(r.oid, c.oid, 'SELECT')))"
            " ORDER BY r.rolname = session_user DESC LIMIT 1",
            (list(_POWERFUL), schema, list(PRIVATE_TABLES)),
        ).fetchone()
        who = conn.execute("SELECT session_user").fetchone()
    except psycopg.Error as exc:
        conn.close()
        raise ReadOnlyError(f"the reader for read-only SQL cannot be used ({exc})") from None
    if danger:
        conn.close()
        user = who[0] if who else "?"
        via = "" if danger[0] == user else f" (through role {danger[0]})"
        raise ReadOnlyError(
            f"the reader login {user} can read private tables or act for others{via}: read-only SQL"
            f" needs a login with SELECT on {', '.join(PUBLIC_RELATIONS)} only, a member of no role"
        )
    return conn


def conninfo_as(url: str, login: dict[str, str]) -> str:
    """The store's URL (host, port, database, options, TLS) with the reader's user and password."""
    return make_conninfo(url, user=login["user"], password=login["password"])


def rows(
    conn: psycopg.Connection[Any], sql: str, params: Any, timeout_s: float, max_bytes: int | None
) -> Generator[Sequence[Any], None, None]:
    """Run one reading query in a READ ONLY transaction that is rolled back whatever it did,
    once PostgreSQL has taken it as a query: its column names, then its rows one at a time as
    they arrive (single-row mode), none held here (`QueryRows`). Closed early, the rest of the
    query is cancelled, not read."""
    if not _READING.match(_COMMENTS.sub(" ", sql)):
        # A clearer word than the parser's; refusing is not left to it (the cursor is).
        raise ReadOnlyError("only reading queries are allowed (SELECT, WITH … SELECT, VALUES, TABLE)")
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            # The server's part of the time limit; the reading of the rows is `QueryRows`'s.
            conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            # DECLARE takes only a query (no statement, no data-modifying WITH): PostgreSQL
            # itself says the SQL is one. It plans the query, runs none of it.
            with conn.cursor(name="llmlog_query") as declared:
                declared.execute(sql, list(params) or None)
                columns = [d.name for d in declared.description or ()]
            yield columns
            with conn.cursor() as cur:
                # JSON as its text, as SQLite gives it: the caller prints it or parses it.
                cur.adapters.register_loader("jsonb", TextLoader)
                cur.adapters.register_loader("json", TextLoader)
                # Then it runs, its rows arriving one at a time (single-row mode; a FETCH from
                # the cursor would first gather its whole result on the server).
                # A generator (typed as an Iterator), so it can be closed.
                stream = cast("Generator[Any, None, None]", cur.stream(sql, list(params) or None))
                try:
                    for row in stream:
                        yield tuple(plain(v) for v in row)
                finally:
                    stream.close()  # the rest cancelled, not read
    except psycopg.errors.QueryCanceled:
        raise ReadOnlyError(timed_out(timeout_s)) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ReadOnlyError(f"not readable here ({exc.diag.message_primary})") from None
    except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.FeatureNotSupported) as exc:
        raise ReadOnlyError(f"only reading queries are allowed ({exc.diag.message_primary})") from None
    except psycopg.errors.ProgramLimitExceeded as exc:
        raise ReadOnlyError(too_large(max_bytes) if max_bytes else str(exc)) from None
    except psycopg.Error as exc:
        if conn.closed or conn.broken:
            raise
        raise ReadOnlyError(exc.diag.message_primary or str(exc)) from None
    finally:
        # Session advisory locks outlive the rollback; one taken by a query could block
        # this store's migrations and partition creation in other processes.
        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock_all()")
