"""The stores the suite runs against, and a throwaway PostgreSQL server for when none is given.

PostgreSQL tests use the server named by LLMLOG_TEST_POSTGRES_URL if set; otherwise the suite
starts its own from the installed binaries (initdb, pg_ctl) in a temporary directory. Each
test gets a schema of its own on that server, so tests never see each other's tables.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import zstandard

from llmlog.store import Store, compression, open_store
from llmlog.store.sqlite import connect as sqlite_connect


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be reached or started here."""


def _bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    # Debian keeps the server binaries off PATH, one directory per major version.
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))[::-1]
    for d in candidates:
        if d and (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempPostgres:
    """A PostgreSQL server of our own: initdb into a temporary directory, then start/stop it
    (tests of the "store down" case stop and restart it). Durability is switched off: it is
    thrown away afterwards."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="llmlog-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            # The server refuses to run as root; run it as the postgres user.
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no postgres user") from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as, *args], capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            output = proc.stderr.strip() or proc.stdout.strip()
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {output}")

    def init(self) -> TempPostgres:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        return self.start()

    def start(self) -> TempPostgres:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.dir / "log"), "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(PostgresUnavailable):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def with_schema(url: str, schema: str) -> str:
    """The URL with its search_path set to one schema: where llmlog's tables go."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


def drop_schema(url: str, schema: str) -> None:
    """The schema and the reader login a store made for it (role names are the server's)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        row = conn.execute(
            "SELECT 'llmlog_reader_' || left(md5(current_database() || '/' || %s), 16)", (schema,)
        ).fetchone()
        assert row is not None
        conn.execute(f'DROP ROLE IF EXISTS "{row[0]}"')


def new_schema(url: str) -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin(url, f"CREATE SCHEMA {schema}")
    return schema, with_schema(url, schema)


class Backend:
    """One store under test: open it, and look at it with plain SQL from outside the store."""

    kind: str
    url: str

    def open(self) -> Store:
        return open_store(self.url)

    def sql(self, statement: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def migrated_before(self, sqlite_step: Any, postgres_step: Any) -> int:
        """The store made as the version before these migrations (SQLite's, PostgreSQL's) made
        it, for a test of what upgrading does to what that version stored: its version."""
        from llmlog.store.postgres import schema as pg
        from llmlog.store.sqlite.schema import MIGRATIONS, migrate

        if self.kind == "sqlite":
            before = MIGRATIONS.index(sqlite_step)
            db = sqlite_connect(self.url)
            assert migrate(db, target=before) == before
            db.close()
            return before
        if self.kind == "postgres":
            import psycopg

            before = pg.MIGRATIONS.index(postgres_step)
            with psycopg.connect(self.url, autocommit=True) as conn:
                assert pg.migrate(conn, target=before) == before
            return before
        raise ValueError(f"{self.kind} has no migrations of its own")


class SQLiteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.url = self.path

    def sql(self, statement: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        db = sqlite_connect(self.path)
        try:
            rows = db.execute(statement, params).fetchall()
            db.commit()
            return rows
        finally:
            db.close()


class PostgresBackend(Backend):
    kind = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url

    def sql(self, statement: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params or None)
            return cur.fetchall() if cur.description else []


class ClickHouseBackend(Backend):
    """ClickHouse, its engine embedded (chdb): looked at through a session of its own on the
    same directory (the engine allows one directory per process at a time)."""

    kind = "clickhouse"

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.url = f"chdb://{path}"

    def sql(self, statement: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        from llmlog.store.clickhouse.engine import EmbeddedEngine, bind

        engine = EmbeddedEngine(self.path)
        try:
            text = bind(statement.replace("?", "%s"), list(params))
            if re.fullmatch(r"\s*DELETE FROM (\w+)\s*", text):  # every row: ClickHouse's way
                text = re.sub(r"DELETE FROM", "TRUNCATE TABLE", text)
            if text.lstrip().upper().startswith(("SELECT", "WITH", "SHOW")):
                return engine.rows(text)[1]
            engine.command(text)
            return []
        finally:
            engine.close()


def stored_bytes(db: str | Path) -> bytes:
    """Every byte of a SQLite store's files (database, WAL, shared memory), then the text of
    every value in it stored compressed (`llmlog.store.compression`), which the bytes alone
    would hide: what a test looks for in clear, or checks is absent, is found either way."""
    path = Path(db)
    files = sorted(path.parent.glob(path.name + "*"))
    out = [p.read_bytes() for p in files if p.is_file()]
    if path.exists():
        conn = sqlite_connect(str(path), readonly=True)
        try:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    for v in row:
                        if isinstance(v, bytes) and v[:1] and v[0] in compression.DIGESTS:
                            # Other BLOBs (the search index's) may begin with the same byte.
                            with contextlib.suppress(zstandard.ZstdError):
                                out.append(str(compression.unpack(v)).encode())
        finally:
            conn.close()
    return b"\n".join(out)
