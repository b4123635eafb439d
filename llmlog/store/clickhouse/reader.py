"""ClickHouse's reader: what read-only SQL a person writes (the console, `/sql.json`, `llmlog
query`) runs as, never the writer's connection with a setting added to the statement.

On a server, a user of its own per store: `readonly = 2` fixed (CONST: no writes, no DDL; it
may set its own time and size limits, within the bounds fixed here), SELECT granted on the
public tables only, so accounts, tokens, settings and the audit log are refused by the
server's access control, and so are the table functions that reach outside (file, url,
remote, s3, executable: each needs a grant it does not have). The store creates it when the
user it connects as may (access management), keeps its password in `settings`, and else
refuses such SQL, saying what an administrator runs (or takes LLMLOG_READER_DB).

Embedded (chdb) there are no users: every session is `default`. The strongest construction
there is a session of its own started with `readonly = 1` and its limits, which no statement
can change (not even in a SETTINGS clause), and which refuses every table function that
reaches outside the engine (file, url, remote, s3, executable, sqlite, Python, …). The private
tables are then not in the engine at all (`clickhouse.embedded`): nothing a query names can
reach them.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from llmlog.store.clickhouse.engine import READ_SETTINGS, Engine, EngineError, ServerEngine

READER_ENV = "LLMLOG_READER_DB"
LOGIN_SETTING = "reader_login"  # {"user": …, "password": …}, in `settings`, which the reader cannot read
# What the reader may read: the calls and what is computed from them.
PUBLIC_TABLES = (
    "calls", "call_data", "daily", "daily_parts", "people_daily", "people_parts", "spans", "span_events",
    "llmlog_schema",
)  # fmt: skip
# The most one query may take of the engine's memory (in this process, when embedded).
QUERY_MEMORY_BYTES = 2**30
LONGEST_S = 300  # the longest time limit a reader's query may ask for


def limits(timeout_s: float, max_bytes: int) -> dict[str, Any]:
    """A reader's query: its time, memory and result size, the result refused (not cut) past it."""
    return {
        "max_execution_time": max(1, min(LONGEST_S, round(timeout_s))),
        "max_memory_usage": QUERY_MEMORY_BYTES,
        "max_result_bytes": max_bytes,
        "result_overflow_mode": "throw",
    }


def embedded_settings(timeout_s: float, max_bytes: int) -> dict[str, Any]:
    """An embedded reader session's settings, fixed from its start; readonly last. Blocks of
    a thousand rows: the result arrives block by block (`EmbeddedEngine.stream`), each held in
    this process until taken (its max_result_bytes counts what was read, not what is sent)."""
    return {**READ_SETTINGS, **limits(timeout_s, max_bytes), "max_block_size": 1024, "readonly": 1}


def reader_name(database: str) -> str:
    """The store's reader user: one per database (user names are the whole server's)."""
    return "llmlog_reader_" + hashlib.sha256(database.encode()).hexdigest()[:16]


def _quote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def statements(database: str, user: str, password: str | None, cluster: str | None = None) -> list[str]:
    """Creating the reader on a server: the user (by the hash of its password, so the
    password itself is in no log), its fixed settings and its grants."""
    on = f" ON CLUSTER {cluster}" if cluster else ""
    if password is None:
        auth = "IDENTIFIED WITH sha256_password BY 'choose-one'"
    else:
        salt = secrets.token_hex(16)
        digest = hashlib.sha256((password + salt).encode()).hexdigest()
        auth = f"IDENTIFIED WITH sha256_hash BY '{digest}' SALT '{salt}'"
    most = limits(LONGEST_S, 2**30)
    fixed = (
        f"readonly = 2 CONST, max_execution_time = 10 MAX {most['max_execution_time']},"
        f" max_memory_usage = {QUERY_MEMORY_BYTES} MAX {QUERY_MEMORY_BYTES},"
        f" max_result_bytes = {most['max_result_bytes']} MAX {most['max_result_bytes']}"
    )
    tables = [*PUBLIC_TABLES, *(f"{t}_local" for t in PUBLIC_TABLES if cluster)]
    return [
        f"CREATE USER IF NOT EXISTS {_quote(user)}{on} {auth} SETTINGS {fixed}",
        *(f"GRANT{on} SELECT ON {_quote(database)}.{_quote(t)} TO {_quote(user)}" for t in tables),
    ]


def create_reader(engine: Engine, cluster: str | None) -> dict[str, str] | None:
    """Create the store's reader on a server, if the connected user may; its login."""
    _, rows = engine.rows("SELECT currentDatabase()")
    database = str(rows[0][0])
    user, password = reader_name(database), secrets.token_urlsafe(24)
    on = f" ON CLUSTER {cluster}" if cluster else ""
    try:
        # Made anew: a user of this name from before (this database dropped and made again)
        # would keep its old password and grants.
        engine.command(f"DROP USER IF EXISTS {_quote(user)}{on}")
        for sql in statements(database, user, password, cluster):
            engine.command(sql)
    except Exception:  # access management refused (the server's client raises its own errors)
        return None
    return {"user": user, "password": password}


def missing(database: str) -> str:
    """Why read-only SQL refuses on a server store without a reader, and how to give it one."""
    user = reader_name(database)
    return (
        "read-only SQL runs as a user that can read the calls and nothing else, and this store has"
        " none: the user it connects as may not create users. An administrator runs: "
        + "; ".join(statements(database, user, None))
        + f"; then sets {READER_ENV}=clickhouse://{user}:PASSWORD@HOST:8123/{database}"
        " (or passes --reader-db); or gives the store's user access management and runs `llmlog migrate`."
    )


def url_as(url: str, login: dict[str, str]) -> str:
    """The store's server URL with the reader's user and password."""
    parts = urlsplit(url)
    netloc = (
        f"{quote(login['user'], safe='')}:{quote(login['password'], safe='')}@{parts.hostname or 'localhost'}"
    )
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def server_reader(url: str) -> Engine:
    try:
        return ServerEngine(url)
    except Exception as exc:
        raise EngineError(f"cannot connect as the reader for read-only SQL: {exc}") from None
