"""The ClickHouse store's seam to the engine: SQL in, rows out, and inserts of Python rows,
the same for a server (`clickhouse-connect`, over HTTP) and for the engine embedded in the
process (`chdb`). Parameters are bound on the client by clickhouse-connect's own binding (the
maintained quoting), as `%s`, so every statement is the same text on both."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Generator, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from llmlog.store.base import unicode_text

# Settings every read gets: 64-bit integers as JSON numbers (the embedded engine answers in
# JSON), NaN as null, and names as in standard SQL.
READ_SETTINGS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_denormals": 0,
    # A column's name means the column, as in standard SQL (the SQL shared with the other
    # stores says `sum(cost_usd) AS cost_usd, count(cost_usd)`); ClickHouse would take the alias.
    "prefer_column_name_to_alias": 1,
}


Rows = tuple[list[str], list[tuple[Any, ...]]]  # column names, rows


class Engine(Protocol):
    def rows(self, sql: str, settings: dict[str, Any] | None = None) -> Rows:
        """A query's column names and rows."""

    def command(self, sql: str) -> None: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


def _no_rows() -> Generator[tuple[Any, ...], None, None]:
    """The rows of a query that has none, closable as any query's rows are."""
    yield from ()


def _settings_clause(settings: dict[str, Any] | None) -> str:
    if not settings:
        return ""
    return " SETTINGS " + ", ".join(
        f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()
    )


class EmbeddedEngine:
    """The ClickHouse engine in this process (chdb), its data in a directory.

    `fixed` settings are the session's own from its start, as a server's user profile would
    give them (a reader's `readonly = 1` and limits): a statement cannot change them (under
    readonly = 1 not even in its SETTINGS clause), and none is added to each statement."""

    def __init__(self, path: str, fixed: dict[str, Any] | None = None) -> None:
        from chdb import session

        os.makedirs(path, exist_ok=True)
        self.fixed = fixed
        args = "&".join(f"{k}={v}" for k, v in (fixed or {}).items())
        self.session = session.Session(f"{path}?{args}" if args else path)
        self.lock = threading.Lock()  # one statement at a time through the session

    def _run(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        from chdb._exceptions import ChdbError

        try:
            with self.lock:
                return self.session.query(sql, fmt).bytes()
        except (ChdbError, RuntimeError) as exc:
            raise EngineError(str(exc)) from None

    def rows(self, sql: str, settings: dict[str, Any] | None = None) -> Rows:
        if self.fixed is None:
            sql += _settings_clause({**READ_SETTINGS, **(settings or {})})
        out = self._run(sql)
        if not out.strip():
            return [], []
        data = _last_document(out.decode())
        # As the server's client gives them: numbers, dates and times as Python's own.
        convert = [_converter(m["type"]) for m in data["meta"]]
        rows = [
            tuple(None if v is None else f(v) for f, v in zip(convert, r, strict=True)) for r in data["data"]
        ]
        return [m["name"] for m in data["meta"]], rows

    def command(self, sql: str) -> None:
        self._run(sql, "CSV")

    def stream(self, sql: str) -> tuple[list[str], Generator[tuple[Any, ...], None, None]]:
        """A query's column names, and its rows as the engine sends them, block by block: what
        the caller does not take is never held (the query is cancelled when it stops, or the
        caller closes the rows)."""
        from chdb._exceptions import ChdbError

        def blocks() -> Generator[list[bytes], None, None]:
            # Each block arrives whole, its column names and types first, then a row a line.
            with self.lock:
                try:
                    result = self.session.send_query(sql, "JSONCompactEachRowWithNamesAndTypes")
                except (ChdbError, RuntimeError) as exc:
                    raise EngineError(str(exc)) from None
                try:
                    for chunk in result:
                        yield chunk.bytes().split(b"\n")
                except (ChdbError, RuntimeError) as exc:
                    raise EngineError(str(exc)) from None
                finally:
                    result.cancel()

        it = blocks()
        try:
            first = next(it)
        except StopIteration:
            return [], _no_rows()
        names = json.loads(first[0])
        convert = [_converter(k) for k in json.loads(first[1])]

        def rows() -> Generator[tuple[Any, ...], None, None]:
            try:
                block: list[bytes] | None = first
                while block is not None:
                    for line in block[2:]:
                        if line:
                            values = json.loads(line)
                            yield tuple(
                                None if v is None else f(v) for f, v in zip(convert, values, strict=True)
                            )
                    block = next(it, None)
            finally:
                it.close()

        return names, rows()

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        lines = "\n".join(json.dumps(dict(zip(columns, map(_json_value, row), strict=True))) for row in rows)
        self._run(f"INSERT INTO {table} ({', '.join(columns)}) FORMAT JSONEachRow\n{lines}\n", "CSV")

    def close(self) -> None:
        self.session.close()


def _last_document(text: str) -> Any:
    """The last JSON document of an answer: after a query the engine stopped (a time limit),
    the embedded engine's next answer still begins with that query's unfinished output."""
    decoder, at, doc = json.JSONDecoder(), 0, None
    while at < len(text):
        doc, at = decoder.raw_decode(text, at)
        while at < len(text) and text[at].isspace():
            at += 1
    return doc


def _converter(kind: str) -> Any:
    """How a value of ClickHouse type `kind`, as JSON, becomes Python's."""
    while kind.startswith(("Nullable(", "LowCardinality(", "SimpleAggregateFunction(")):
        inner = kind[kind.index("(") + 1 : -1]
        kind = inner.split(", ", 1)[1] if kind.startswith("Simple") else inner
    if kind.startswith("Float"):
        return float
    if kind.startswith(("Int", "UInt")):
        return int
    if kind.startswith("DateTime"):
        return lambda v: datetime.fromisoformat(v).replace(tzinfo=UTC)
    if kind == "Date":
        return date.fromisoformat
    return lambda v: v


class ServerEngine:
    """A ClickHouse server, over HTTP with clickhouse-connect."""

    url: str

    def __init__(self, url: str) -> None:
        self.url = url
        import clickhouse_connect

        u = urlsplit(url)
        self.client = clickhouse_connect.get_client(
            host=u.hostname or "localhost",
            port=u.port or (8443 if u.scheme == "clickhouses" else 8123),
            username=unquote(u.username or "default"),
            password=unquote(u.password or ""),
            database=u.path.lstrip("/") or "default",
            secure=u.scheme == "clickhouses",
        )

    def rows(self, sql: str, settings: dict[str, Any] | None = None) -> Rows:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            result = self.client.query(sql, settings={**READ_SETTINGS, **(settings or {})})
        except ClickHouseError as exc:
            raise EngineError(str(exc)) from None
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    def command(self, sql: str) -> None:
        self.client.command(sql)

    def stream(
        self, sql: str, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], Generator[tuple[Any, ...], None, None]]:
        # The server bounds the result itself (the reader's max_result_bytes).
        names, rows = self.rows(sql, settings)
        return names, (r for r in rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        # Many processes, each writing small batches when traffic is light, would make a part
        # per insert; the server gathers them into one part (async insert) and answers once
        # it is written, so a call acknowledged is a call stored.
        self.client.insert(
            table,
            [list(r) for r in rows],
            column_names=list(columns),
            settings={"async_insert": 1, "wait_for_async_insert": 1},
        )

    def close(self) -> None:
        self.client.close()


class EngineError(Exception):
    """What the engine refused, with its message."""


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, str):
        return unicode_text(value)
    return value


def _time_text(t: datetime) -> str:
    """A DateTime64(6, 'UTC') literal: what either engine parses."""
    t = (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def utc_time(value: Any) -> datetime:
    """A time as the engine gives it (a datetime, or its text), in UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def bind(sql: str, params: Sequence[Any] | None) -> str:
    """`%s` parameters bound into the SQL by clickhouse-connect's quoting."""
    from clickhouse_connect.driver.binding import bind_query

    values = [_time_text(p) if isinstance(p, datetime) else p for p in params or ()]
    bound, _ = bind_query(sql, values) if values else (sql, {})
    return bound if isinstance(bound, str) else bound.decode()


def open_engine(url: str) -> Engine:
    embedded = url.startswith("chdb://")
    try:
        return EmbeddedEngine(urlsplit(url).path or "llmlog-chdb") if embedded else ServerEngine(url)
    except ImportError:
        extra = "clickhouse-embedded" if embedded else "clickhouse"
        raise ValueError(
            f"the ClickHouse store needs an extra: install llmlog with it,"
            f" e.g. pip install '/path/to/llmlog[{extra}]' from a checkout"
        ) from None
