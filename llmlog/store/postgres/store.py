"""The PostgreSQL store: the same `calls` relation as SQLite, on a server many processes share.

Layout, as in SQLite: `call_data` holds one row per call with the summary columns inline;
system prompts, tool lists, request params and each message live once in `content` (as
`jsonb`, a system prompt as a JSON string), keyed by a hash of their JSON text, and
`call_data` points at them (`message_ids` is a `bigint[]`). The `calls` view presents every
call whole, with `jsonb` for the JSON columns and `timestamptz` for the time.

`call_data` is partitioned by month of `timestamp`, so that dropping old calls is dropping a
table; a month's partition is created the first time a call from that month arrives. Its key
is (id, timestamp): a call sent twice is the same record with the same time, stored once.

Tables go in the first schema of the connection's search_path (usually `public`); a URL such
as `postgresql://host/db?options=-csearch_path%3Dllmlog` keeps them in a schema of their own.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql as pgsql

from llmlog.core.encryption import ENCRYPTION_SETTING
from llmlog.core.filters import CallFilter
from llmlog.core.record import ATTRIBUTION, COLUMNS, USAGE, Call, format_timestamp, json_text
from llmlog.store import search
from llmlog.store.base import (
    AuditEntry,
    Erased,
    QueryResult,
    ReadOnlyError,
    RowTables,
    Store,
    day_and_features,
    erase_target,
    like_pattern,
    utc_days,
)
from llmlog.store.content import ContentBatch, ContentIds, Key
from llmlog.store.layout import INLINE_JSON, INLINE_PLAIN, select_list
from llmlog.store.postgres import POSTGRES, reader
from llmlog.store.postgres.schema import (
    check_schema,
    migrate,
    schema_lock,
    schema_version,
    store_missing,
    tune_search_index,
)
from llmlog.store.postgres.traces import PostgresTraces, naming_sql
from llmlog.store.postgres.traces import storable as _storable
from llmlog.store.readonly import RESULT_MAX_BYTES, QueryRows, deadline_after, held
from llmlog.store.rollup import MOVES_SQL, moves, refile

CONNECT_TIMEOUT_S = 10


def missing(url: str) -> str | None:
    """Why the database at `url` holds no llmlog store (its schema does not exist, or has no
    tables of ours), found without creating anything; None when it holds one."""
    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        return store_missing(conn)


def _rows(cur: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
    return cur.fetchall() if cur.description else []


# Creating a partition briefly locks the parent table; waiting longer than this for a long
# reader to finish would stall every writer queued behind the lock, so give up and retry.
DDL_LOCK_TIMEOUT = "5s"


def _partition_month(name: str) -> tuple[int, int] | None:
    """The (year, month) of a monthly partition's table name, `call_data_YYYYMM`."""
    m = re.fullmatch(r"call_data_(\d{4})(\d{2})", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


# A call as a list shows it (`Store.recent(brief=True)`): the row and its last message.
_LAST_MESSAGE = """CASE WHEN d.message_ids IS NULL THEN NULL ELSE COALESCE((
        SELECT jsonb_build_array(m.body) FROM content AS m
        WHERE m.id = d.message_ids[cardinality(d.message_ids)]
    ), '[]'::jsonb) END"""
_BRIEF_OF = {
    "system_prompt": "NULL::text",
    "messages": _LAST_MESSAGE,
    "tools": "NULL::jsonb",
    "params": "NULL::jsonb",
    "response": "d.response",
}
_BRIEF = f"(\nSELECT\n    {select_list(_BRIEF_OF)}\nFROM call_data AS d\n) AS brief"

# The stored row, in COPY order: the content a call names by id and its response first,
# then the table's inline columns (`llmlog.store.layout`), so a column added to the table
# is written without a change here.
ROW_COLUMNS = (
    "id", "timestamp", "system_id", "message_ids", "tools_id", "params_id", "response",
    "response_instructions_id", "response_tools_id", *INLINE_PLAIN, *INLINE_JSON,
)  # fmt: skip
_PLAIN = operator.attrgetter(*INLINE_PLAIN)
_JSON = operator.attrgetter(*INLINE_JSON)

# The columns of `call_data` naming content, besides `message_ids`.
CONTENT_COLUMNS = ("system_id", "tools_id", "params_id", "response_instructions_id", "response_tools_id")

# The content of a call, keyed: system prompt, messages, tools, params, the instructions and
# tools its response echoes; then the response without them.
_Keys = tuple[Key | None, list[Key] | None, Key | None, Key | None, Key | None, Key | None, Any]


# Every content id a row of `call_data` names.
_USED = f"coalesce(message_ids, '{{}}') || ARRAY[{', '.join(CONTENT_COLUMNS)}]"

# ------------------------------------------------------------------ helpers


def _storable_call(c: Call) -> Call:
    return c.replace(**{name: _storable(getattr(c, name)) for name in COLUMNS if name != "timestamp"})


def _int_array(values: list[int]) -> str:
    # An array literal for COPY: psycopg's own list dumping costs more than the rest of the row.
    return "{" + ",".join(map(str, values)) + "}"


def _is_encoding_error(exc: psycopg.DataError) -> bool:
    return isinstance(
        exc, psycopg.errors.UntranslatableCharacter | psycopg.errors.CharacterNotInRepertoire
    ) or "NUL" in str(exc)


class PostgresStore(RowTables, PostgresTraces):
    url: str
    dialect = POSTGRES
    # ProgramLimitExceeded: e.g. a feature name too long for an index entry (over ~2.7 kB).
    data_errors = (
        *Store.data_errors,
        psycopg.DataError,
        psycopg.IntegrityError,
        psycopg.errors.ProgramLimitExceeded,
    )

    def __init__(self, url: str, reader_url: str | None = None) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        # Read-only SQL a person writes runs on a connection of its own, as the reader login
        # (`postgres.reader`): the one given, else the one the store made.
        self._reader_url = reader_url
        self._reader: psycopg.Connection[Any] | None = None
        self._content = ContentIds()
        self._epoch = -1  # unknown until the first write
        self._partitions: set[tuple[int, int]] = set()
        self._staging = False  # the connection's temporary staging table exists
        try:
            check_schema(self.conn)  # said as such, not as the CREATE TABLE that would fail
            self.schema_found = schema_version(self.conn)
            self.schema_version = migrate(self.conn)
            row = self.conn.execute("SELECT current_schema()").fetchone()
            self._schema: str = row[0] if row else "public"
            if reader_url is None and self.setting(reader.LOGIN_SETTING) is None:
                # Made by migration m010 when it could; a user given CREATEROLE since makes it now.
                with self.conn.transaction(), self.conn.cursor() as cur:
                    schema_lock(cur)
                    reader.create_reader(cur)
            self._read_settings()
            # This month's and next month's tables exist before any call needs them, so the
            # brief lock creating one takes is rarely taken while calls are arriving.
            now = datetime.now(UTC)
            self._ensure_partitions([Call(timestamp=now), Call(timestamp=now + timedelta(days=31))])
        except BaseException:
            self.close()
            raise

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                # A connection whose network path went silent must fail, not hang the writer:
                # then it is the "store down" case, retried on a new connection.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=30_000,
            )
            # Times in SQL (timestamp::date, literals like '2026-03-01') mean UTC, as in SQLite.
            self._conn.execute("SET TIME ZONE 'UTC'")
            self._partitions.clear()
            self._staging = False
        return self._conn

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _reopen(self) -> PostgresStore:
        return PostgresStore(self.url, self._reader_url)

    @contextlib.contextmanager
    def ingest_lock(self) -> Iterator[None]:
        """`Store.ingest_lock`: a session advisory lock keyed by the schema (as the
        migrations' is, under another name), on the connection that writes, so every server
        on this database writing this schema waits its turn. Let go of in `finally` on that
        same connection; if it cannot be (the connection failed), the connection is closed,
        which ends its session and the lock with it. (The readers' connections let go of
        every advisory lock after each query: theirs, not this one's.)"""
        conn = self.conn  # the property reconnects: the lock stays with this connection
        key = f"{self._schema}.llmlog.ingest"
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            yield
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
            except psycopg.Error:
                conn.close()

    # -------------------------------------------------------------- writing

    def insert(self, calls: Sequence[Call]) -> int:
        """Store a batch in one transaction; a call already stored (same id and time) is skipped."""
        if not calls:
            return 0
        calls = self._sealed(calls)
        try:
            inserted = self._insert_storable(calls)
        except psycopg.errors.CheckViolation:
            # "No partition for row": a month this store created was dropped since (old calls
            # go by dropping their month's table). Forget the months it knows; create them again.
            self._partitions.clear()
            inserted = self._insert_storable(calls)
        self._embed([_storable_call(c) for c in calls] if self.vectors else ())
        return inserted

    def _insert_storable(self, calls: Sequence[Call]) -> int:
        try:
            return self._insert(calls)
        except (UnicodeEncodeError, psycopg.DataError) as exc:
            # Text PostgreSQL cannot hold (NUL, a lone surrogate): store the calls with those
            # characters replaced rather than lose them. Other bad data is the caller's to see.
            if isinstance(exc, psycopg.DataError) and not _is_encoding_error(exc):
                raise
            return self._insert([_storable_call(c) for c in calls])

    def _insert(self, calls: Sequence[Call]) -> int:
        self._ensure_partitions(calls)
        # Every piece of content named by its id when known, else by its hash; then the ids
        # of the hashes, then the rows.
        batch = self._content.batch()
        keyed = [self._keys(c, batch) for c in calls]
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            # Regulated mode as the settings say now, not as when the store was opened.
            settings = self._settings_now(cur)
            enforced = self._enforce(calls, settings)
            if self._content_changed(settings) or enforced is not calls:
                calls = enforced
                batch = self._content.batch()
                keyed = [self._keys(c, batch) for c in calls]
            self._resolve(cur, batch)
            cid = batch.id

            if not self._staging:
                cur.execute(
                    "CREATE TEMP TABLE call_stage (seq integer, doc text, LIKE call_data)"
                    " ON COMMIT DELETE ROWS"
                )
            with cur.copy(f"COPY call_stage (seq, doc, {', '.join(ROW_COLUMNS)}) FROM STDIN") as copy:
                for seq, (c, keys) in enumerate(zip(calls, keyed, strict=True)):
                    system, messages, tools, params, echo_instructions, echo_tools, response = keys
                    copy.write_row(
                        (
                            seq,
                            search.pg_document(c),
                            c.id,
                            c.timestamp,
                            cid(system) if system is not None else None,
                            _int_array(batch.ids(messages)) if messages is not None else None,
                            cid(tools) if tools is not None else None,
                            cid(params) if params is not None else None,
                            json_text(response) if response is not None else None,
                            cid(echo_instructions) if echo_instructions is not None else None,
                            cid(echo_tools) if echo_tools is not None else None,
                            *_PLAIN(c),
                            *(json_text(v) if v is not None else None for v in _JSON(c)),
                        )
                    )
            # In key order, as every writer does, so concurrent writers wait on each other's
            # rows in one order and never deadlock; the first of a repeated id wins.
            columns = ", ".join(ROW_COLUMNS)
            cur.execute(
                f"INSERT INTO call_data ({columns}, search)"
                f" SELECT DISTINCT ON (id, timestamp) {columns}, to_tsvector(%s::regconfig, doc)"
                " FROM call_stage"
                " ORDER BY id, timestamp, seq ON CONFLICT DO NOTHING",
                (search.PG_CONFIG,),
            )
            inserted = cur.rowcount
        self._staging = True
        batch.commit()  # only now are the new content rows certain to exist
        return inserted

    @staticmethod
    def _keys(c: Call, batch: ContentBatch) -> _Keys:
        """The content of a call, keyed, and its response with what it echoes left out."""
        response, echo_instructions, echo_tools = c.response, None, None
        if isinstance(response, dict):
            # What the response echoes of the request goes to `content`, as the request's
            # own copy does; the row keeps a null in its place for the view to fill.
            echoed: dict[str, None] = {}
            if isinstance(response.get("instructions"), str):
                echo_instructions = batch.key(response["instructions"])
                echoed["instructions"] = None
            if isinstance(response.get("tools"), list) and response["tools"]:
                echo_tools = batch.key(response["tools"])
                echoed["tools"] = None
            if echoed:
                response = {**response, **echoed}
        return (
            batch.key(c.system_prompt) if c.system_prompt is not None else None,
            batch.keys(c.messages) if c.messages is not None else None,
            batch.key(c.tools) if c.tools is not None else None,
            batch.key(c.params) if c.params is not None else None,
            echo_instructions,
            echo_tools,
            response,
        )

    def _settings_now(self, cur: psycopg.Cursor[Any]) -> dict[str, Any]:
        """First in a writing transaction: the settings the write obeys. The share lock on
        the content epoch holds off a deletion of content (which updates it) and the mark of
        `require_sealed` until this transaction ends, or waits for one under way; the
        settings are then read by a statement of its own, whose snapshot follows the lock."""
        cur.execute("SELECT value FROM settings WHERE key = 'content_epoch' FOR SHARE")
        rows = cur.execute(
            "SELECT key, value FROM settings WHERE key = ANY(%s)", (list(self.WRITE_SETTINGS),)
        )
        return dict(rows.fetchall())

    def require_sealed(self, key_id: str) -> None:
        """The sealed-only mark, set while holding the content epoch's row for update: an
        insert under way (which holds it for share) commits first, and so is in the store
        when the rotation's sweep reads it; an insert starting now waits for this to commit
        and then reads the mark."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT value FROM settings WHERE key = 'content_epoch' FOR UPDATE")
            cur.execute(
                "INSERT INTO settings VALUES (%s, %s::jsonb)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (ENCRYPTION_SETTING, json.dumps({"required": True, "key": key_id})),
            )
        self.sealed_only = True

    @staticmethod
    def _content_deleting(cur: psycopg.Cursor[Any]) -> None:
        """First in a transaction that deletes content: waits for the writers using cached
        ids to finish, keeps new ones out until it ends, and makes them all forget."""
        cur.execute(
            "UPDATE settings SET value = to_jsonb((value #>> '{}')::bigint + 1) WHERE key = 'content_epoch'"
        )

    def _resolve(self, cur: psycopg.Cursor[Any], batch: ContentBatch) -> None:
        """Find the ids of the batch's content, inserting what is new."""
        missing = batch.unknown()
        if not missing:
            return
        # Arrays as parameters in binary (`%b`): psycopg quotes each item of a text-format
        # array in Python, which cost ten times the statement's own time (300 bodies: 4.6 ms
        # against 0.47), all of it holding the interpreter's lock.
        cur.execute("SELECT hash, id FROM content WHERE hash = ANY(%b)", (missing,))
        batch.found.update((bytes(h), i) for h, i in cur)
        new = [h for h in missing if h not in batch.found]
        if new:
            # Sorted, as the calls are: one lock order for every writer, so none deadlock.
            cur.execute(
                "INSERT INTO content (hash, body)"
                " SELECT h, b::jsonb FROM unnest(%b::bytea[], %b::text[]) AS u(h, b) ORDER BY h"
                " ON CONFLICT (hash) DO NOTHING RETURNING hash, id",
                (new, [batch.bodies[h] for h in new]),
                binary=True,  # and the hashes back as bytes, not as hex to decode
            )
            batch.found.update((bytes(h), i) for h, i in cur)
            raced = [h for h in new if h not in batch.found]  # inserted by another writer meanwhile
            if raced:
                cur.execute("SELECT hash, id FROM content WHERE hash = ANY(%b)", (raced,))
                batch.found.update((bytes(h), i) for h, i in cur)

    def _ensure_partitions(self, calls: Sequence[Call]) -> None:
        """Create the monthly partitions this batch needs, each in its own short transaction
        (never inside the insert's, whose locks could then cross another writer's)."""
        months = {(c.timestamp.astimezone(UTC).year, c.timestamp.astimezone(UTC).month) for c in calls}
        for year, month in sorted(months - self._partitions):
            start = datetime(year, month, 1, tzinfo=UTC)
            last = (year, month) == (9999, 12)
            end = None if last else datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            name = f"call_data_{year:04d}{month:02d}"
            conn = self.conn
            found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
            if found and found[0]:  # no DDL, no lock: the common case, and all a reader may do
                self._partitions.add((year, month))
                continue
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
                schema_lock(cur)
                cur.execute(
                    pgsql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF call_data FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        pgsql.Identifier(name),
                        pgsql.Literal(format_timestamp(start)),
                        pgsql.Literal(format_timestamp(end)) if end else pgsql.SQL("MAXVALUE"),
                    )
                )
                tune_search_index(cur, name)
            self._partitions.add((year, month))

    def update_costs(self, costs: Iterable[tuple[str, float | None, str | None]]) -> int:
        rows = list(costs)
        conn = self.conn
        n = 0
        with conn.transaction(), conn.cursor() as cur:
            for i in range(0, len(rows), 5000):  # set-based: one statement per chunk, not per row
                chunk = rows[i : i + 5000]
                cur.execute(
                    "UPDATE call_data AS d SET cost_usd = u.cost, rate_card = u.card"
                    " FROM unnest(%s::text[], %s::float8[], %s::text[]) AS u(id, cost, card)"
                    " WHERE d.id = u.id",
                    ([r[0] for r in chunk], [r[1] for r in chunk], [r[2] for r in chunk]),
                )
                n += cur.rowcount
        return n

    def update_usage(self, call: Call) -> None:
        with self.conn.transaction():  # the triggers of `daily`, `people_daily` and `traces` follow
            self.conn.execute(
                f"UPDATE call_data SET {', '.join(f'{c} = %s' for c in USAGE)} WHERE id = %s",
                [*(getattr(call, c) for c in USAGE), call.id],
            )

    def update_content(self, call: Call) -> None:
        (call,) = self._sealed([call])
        c = _storable_call(call)
        batch = self._content.batch()
        keys = self._keys(c, batch)
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            settings = self._settings_now(cur)
            (enforced,) = self._enforce([c], settings)
            if self._content_changed(settings) or enforced is not c:
                c = enforced
                batch = self._content.batch()
                keys = self._keys(c, batch)
            self._resolve(cur, batch)
            system, messages, tools, params, echo_instructions, echo_tools, response = keys
            was = cur.execute(f"SELECT {MOVES_SQL} FROM call_data WHERE id = %s", (c.id,)).fetchone()
            update = functools.partial(
                cur.execute,
                "UPDATE call_data SET system_id = %s, message_ids = %s::bigint[], tools_id = %s,"
                " params_id = %s, response = %s::jsonb, tool_calls = %s::jsonb, stop_reason = %s,"
                " error = %s::jsonb, metadata = %s::jsonb, search = to_tsvector(%s::regconfig, %s),"
                " response_instructions_id = %s, response_tools_id = %s,"
                " prompt_template_version = coalesce(prompt_template_version, %s), embedding = NULL,"
                " feature = coalesce(feature, %s), user_id = coalesce(user_id, %s),"
                " session_id = coalesce(session_id, %s) WHERE id = %s",
                (
                    batch.id(system) if system is not None else None,
                    _int_array(batch.ids(messages)) if messages is not None else None,
                    batch.id(tools) if tools is not None else None,
                    batch.id(params) if params is not None else None,
                    json_text(response) if response is not None else None,
                    json_text(c.tool_calls) if c.tool_calls is not None else None,
                    c.stop_reason,
                    json_text(c.error) if c.error is not None else None,
                    json_text(c.metadata) if c.metadata is not None else None,
                    search.PG_CONFIG,
                    search.pg_document(c),  # the words it is found by change with it
                    batch.id(echo_instructions) if echo_instructions is not None else None,
                    batch.id(echo_tools) if echo_tools is not None else None,
                    c.prompt_template_version,
                    *(getattr(c, n) for n in ATTRIBUTION),
                    c.id,
                ),
            )
            if moves(was, c):
                # What the rollups count it in (or as) changes: the triggers follow inserts.
                refile(lambda sql, params: _rows(cur.execute(sql, params)), POSTGRES, c.id, update)
            else:
                update()
        batch.commit()
        self._embed([c])

    def erase(self, *, user_id: str | None = None, session_id: str | None = None) -> Erased:
        column, value = erase_target(user_id, session_id)
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            self._content_deleting(cur)
            traces = [
                t
                for (t,) in cur.execute(
                    f"SELECT DISTINCT trace_id FROM call_data WHERE {column} = %s AND trace_id IS NOT NULL",
                    (value,),
                ).fetchall()
            ]
            out, candidates = self._delete_calls(cur, f"{column} = %s", [value])
            spans, events = self._erase_from_traces(cur, column, value, traces)
            out.spans += spans
            # The log events still waiting in their traces, or naming them.
            named, params = naming_sql(column, value, ("attributes", "body"))
            out.events = (
                events
                + cur.execute(
                    f"DELETE FROM span_events WHERE trace_id = ANY(%s) OR {named}", (traces, *params)
                ).rowcount
            )
            out.contents = self._delete_content(cur, candidates)
            out.rollup_rows = cur.execute(f"DELETE FROM people_daily WHERE {column} = %s", (value,)).rowcount
            # And the note of which days counted them: a rollup that names them.
            cur.execute("DELETE FROM daily_seen WHERE who = %s AND kind = %s", (value, column[:-3]))
        out.alerts = self.forget_alerts_naming(value)
        # Dead rows stay in the table's pages until vacuumed: vacuum what held the text.
        conn.execute("VACUUM call_data, content, spans, span_events, traces, alerts, alert_events")
        return out

    @staticmethod
    def _delete_calls(
        cur: psycopg.Cursor[Any], where: str, params: Sequence[Any]
    ) -> tuple[Erased, list[int]]:
        """The calls `where` selects, their spans and span events; and the content they used."""
        rows = cur.execute(
            f"DELETE FROM call_data WHERE {where} RETURNING id, message_ids, {', '.join(CONTENT_COLUMNS)}",
            params,
        ).fetchall()
        ids = [r[0] for r in rows]
        cur.execute(
            "DELETE FROM span_events WHERE (trace_id, span_id) IN"
            " (SELECT trace_id, span_id FROM spans WHERE call_id = ANY(%s))",
            (ids,),
        )
        out = Erased(calls=len(rows))
        out.spans = cur.execute("DELETE FROM spans WHERE call_id = ANY(%s)", (ids,)).rowcount
        return out, sorted({c for r in rows for c in (*(r[1] or ()), *r[2:]) if c is not None})

    @staticmethod
    def _delete_content(cur: psycopg.Cursor[Any], candidates: list[int] | None) -> int:
        """The content no stored call uses, among `candidates` (all when None); after
        `_content_deleting` in the same transaction."""
        if candidates is not None:
            if not candidates:
                return 0
            used = cur.execute(
                f"SELECT DISTINCT u FROM (SELECT unnest({_USED}) AS u FROM call_data"
                " WHERE message_ids && %s::bigint[]"
                f" {''.join(f' OR {c} = ANY(%s)' for c in CONTENT_COLUMNS)}) AS s WHERE u = ANY(%s)",
                (candidates,) * (len(CONTENT_COLUMNS) + 2),
            ).fetchall()
            gone = sorted(set(candidates) - {r[0] for r in used})
            return cur.execute("DELETE FROM content WHERE id = ANY(%s)", (gone,)).rowcount
        # Every piece: the ids in use gathered once, then an anti-join (a NOT IN over millions
        # of ids would run a subquery per content row once it outgrows work_mem).
        cur.execute(
            "CREATE TEMP TABLE content_used ON COMMIT DROP AS SELECT DISTINCT u AS id FROM"
            f" (SELECT unnest({_USED}) AS u FROM call_data) AS s WHERE u IS NOT NULL"
        )
        cur.execute("ANALYZE content_used")
        return cur.execute(
            "DELETE FROM content AS c WHERE NOT EXISTS (SELECT 1 FROM content_used AS u WHERE u.id = c.id)"
        ).rowcount

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql.replace("?", "%s"), list(params))
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def audit(self, who: str, action: str, call_ids: Sequence[str]) -> None:
        self.conn.execute(
            "INSERT INTO audit (time, who, action, call_ids) VALUES (now(), %s, %s, %s::jsonb)",
            (who, action, json.dumps(list(call_ids))),
        )

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self.conn.execute(
            "SELECT time, who, action, call_ids FROM audit ORDER BY id DESC LIMIT %s", (limit,)
        )
        return [AuditEntry(t.astimezone(UTC), who, action, list(ids)) for t, who, action, ids in rows]

    # -------------------------------------------------------------- retention

    def old_calls(self, before: date) -> list[tuple[date, str | None, int]]:
        rows = self.conn.execute(
            "SELECT (timestamp AT TIME ZONE 'UTC')::date, feature, count(*) FROM call_data"
            " WHERE timestamp < %s GROUP BY 1, 2 ORDER BY 1",
            (datetime(before.year, before.month, before.day, tzinfo=UTC),),
        )
        return [(d, f, n) for d, f, n in rows]

    def purge(self, day: date, features: Sequence[str | None]) -> Erased:
        where, params = day_and_features(day, features, self.dialect)
        with self.conn.transaction(), self.conn.cursor() as cur:
            return self._delete_calls(cur, where, params)[0]

    def collect_content(self) -> int:
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._content_deleting(cur)
            return self._delete_content(cur, None)

    def purge_traces(self, before: datetime) -> int:
        with self.conn.transaction(), self.conn.cursor() as cur:
            n = cur.execute("DELETE FROM spans WHERE start_time < %s", (before,)).rowcount
            n += cur.execute(
                "DELETE FROM span_events WHERE received < %s", (int(before.timestamp() * 1e9),)
            ).rowcount
        return n

    def reclaim(self, thorough: bool = False) -> None:
        """Months whose every call is gone are dropped whole (their files go, dead rows and
        all); the rest is vacuumed, so new calls reuse the space. The current and next
        month's tables stay: calls are arriving there."""
        conn = self.conn
        now = datetime.now(UTC)
        keep = {(now.year, now.month), ((now + timedelta(days=31)).year, (now + timedelta(days=31)).month)}
        parts = conn.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'call_data'::regclass"
        ).fetchall()
        for (name,) in parts:
            month = _partition_month(name)
            if month is None or month in keep:
                continue
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
                schema_lock(cur)
                table = pgsql.Identifier(name)
                # Locked before looking: no writer can put a call in between the look and the drop.
                cur.execute(pgsql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
                if cur.execute(pgsql.SQL("SELECT 1 FROM {} LIMIT 1").format(table)).fetchone():
                    continue
                cur.execute(pgsql.SQL("DROP TABLE {}").format(table))
            self._partitions.discard(month)
        conn.execute(f"VACUUM {'FULL ' if thorough else ''}call_data, content, spans, span_events, traces")

    def size_bytes(self) -> int:
        row = self.conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'm')"
        ).fetchone()
        return int(row[0]) if row else 0

    def setting(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM settings WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO settings VALUES (%s, %s::jsonb)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    # -------------------------------------------------------------- reading

    def _json_clauses(self, f: CallFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if f.tag is not None:
            clauses.append("tags @> %s::jsonb")
            params.append(json.dumps([f.tag]))
        for key, value in f.metadata:
            clauses.append("metadata #>> %s = %s")
            params += [key.split("."), value]
        if f.text:
            # Content is stored once and referenced by id: find the matching bodies once,
            # then the calls that use them.
            like = "ILIKE %s"
            clauses.append(
                f"(response::text {like} OR tool_calls::text {like} OR error::text {like}"
                f" OR system_id IN (SELECT id FROM content WHERE body::text {like})"
                f" OR message_ids && ARRAY(SELECT id FROM content WHERE body::text {like}))"
            )
            params += [like_pattern(f.text)] * 5
        return clauses, params

    def _calls(
        self, where: str, params: Sequence[Any], order: str, limit: int, brief: bool = False
    ) -> list[Call]:
        """The calls `where` picks from `call_data`, assembled (whole, or `brief`) only for those."""
        sql = (
            f"SELECT * FROM {_BRIEF if brief else 'calls'} WHERE (id, timestamp) IN"
            f" (SELECT id, timestamp FROM call_data {where}"
            f" ORDER BY {order} LIMIT {int(limit)}) ORDER BY {order}"
        )
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            names = [d.name for d in cur.description or ()]
            calls = [_to_call(names, row) for row in cur]
        return self._reveal(calls)

    def _where(
        self, f: CallFilter, extra: Sequence[str] = (), params: Sequence[Any] = ()
    ) -> tuple[str, list[Any]]:
        clauses, values = self._json_clauses(f)
        return f.sql([*clauses, *extra], [*values, *params], placeholder="%s", time_param=lambda t: t)

    def set_vectors(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "UPDATE call_data SET embedding = %s WHERE id = %s AND embedding IS NULL",
                [(v, i) for i, v in pairs],
            )

    def _without_vectors(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM call_data WHERE embedding IS NULL")]

    def _vector_of(self, call_id: str) -> bytes | None:
        row = self.conn.execute("SELECT embedding FROM call_data WHERE id = %s", (call_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def _vectors(self, f: CallFilter, limit: int) -> list[tuple[str, bytes]]:
        where, params = self._where(f, ["embedding IS NOT NULL"])
        sql = f"SELECT id, embedding FROM call_data {where} ORDER BY timestamp DESC LIMIT {int(limit)}"
        return [(i, bytes(v)) for i, v in self.conn.execute(sql, params)]

    def _search_ids(self, q: search.Query, f: CallFilter, limit: int) -> list[tuple[str, float]]:
        # Ranked among the newest RANKED matches: ts_rank_cd reads each match's tsvector.
        query = "websearch_to_tsquery(%s::regconfig, %s)"
        text = [search.PG_CONFIG, search.tsquery_text(q)]
        where, params = self._where(f, [f"search @@ {query}"], text)
        rows = self.conn.execute(
            f"SELECT id, ts_rank_cd(search, {query}) AS score FROM"
            f" (SELECT id, timestamp, search FROM call_data {where}"
            f" ORDER BY timestamp DESC LIMIT {search.RANKED}) AS newest"
            f" ORDER BY score DESC, timestamp DESC LIMIT {int(limit)}",
            [*text, *params],
        ).fetchall()
        return [(i, float(score)) for i, score in rows]

    def sample(self, f: CallFilter, n: int = 20, *, brief: bool = False) -> list[Call]:
        where, params = self._where(f)
        sql = f"SELECT id, timestamp FROM call_data {where} ORDER BY random() LIMIT {int(n)}"
        picked = self.conn.execute(sql, params).fetchall()
        if not picked:
            return []
        pairs = ",".join(["(%s, %s)"] * len(picked))
        return self._calls(
            f"WHERE (id, timestamp) IN ({pairs})", [v for r in picked for v in r], "timestamp", n, brief
        )

    def iter_calls(self, f: CallFilter, batch: int = 1000) -> Iterator[Call]:
        """Every matching call, oldest first, in pages (memory stays flat on a big store)."""
        last: tuple[datetime, str] | None = None
        while True:
            extra = ["(timestamp, id) > (%s, %s)"] if last else []
            where, params = self._where(f, extra, last or ())
            page = self._calls(where, params, "timestamp, id", batch)
            if not page:
                return
            yield from page
            last = (page[-1].timestamp, page[-1].id)
            if len(page) < batch:
                return

    def count(self, f: CallFilter) -> int:
        where, params = self._where(f)
        row = self.conn.execute(f"SELECT count(*) FROM call_data {where}", params).fetchone()
        return int(row[0]) if row else 0

    def cost_by_day(
        self, since: datetime, until: datetime | None = None
    ) -> list[tuple[str, str | None, int, float | None]]:
        sql = (
            "SELECT to_char(day, 'YYYY-MM-DD'), model, sum(calls)::bigint,"
            " CASE WHEN sum(priced_calls) > 0 THEN sum(cost_usd) END"
            " FROM daily WHERE day BETWEEN %s AND %s GROUP BY day, model ORDER BY day, model NULLS FIRST"
        )
        return [tuple(r) for r in self.conn.execute(sql, utc_days(since, until))]

    def _day(self, day: date) -> Any:
        return day

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        rows = self.conn.execute("SELECT id FROM call_data WHERE id = ANY(%s)", (list(ids),))
        return {r[0] for r in rows}

    def query_rows(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout_s: float = 10.0,
        limit: int = 10_000,
        max_bytes: int = RESULT_MAX_BYTES,
    ) -> QueryRows:
        """Run SQL a person wrote as the store's reader login, on its own connection: it can
        read the public relations and nothing else, and become no one who can more."""
        deadline = deadline_after(timeout_s)
        conn = self._reader_conn(timeout_s)
        source = self._reader_rows(conn, sql, params, timeout_s, max_bytes)
        return QueryRows(source, limit, timeout_s, deadline)

    def _reader_rows(
        self, conn: psycopg.Connection[Any], sql: str, params: Sequence[Any], timeout_s: float, max_bytes: int
    ) -> Generator[Sequence[Any], None, None]:
        try:
            yield from reader.rows(conn, sql, params, timeout_s, max_bytes)
        except psycopg.Error:
            self._reader = None  # the server went away: a new connection next time
            conn.close()
            raise

    def internal_query(
        self, sql: str, params: Sequence[Any] = (), *, timeout_s: float = 10.0, limit: int = 10_000
    ) -> QueryResult:
        deadline = deadline_after(timeout_s)
        source = reader.rows(self.conn, sql, params, timeout_s, None)
        with QueryRows(source, limit, timeout_s, deadline) as rows:
            return held(rows, None)

    def _reader_conn(self, timeout_s: float) -> psycopg.Connection[Any]:
        if self._reader is not None and not self._reader.closed and not self._reader.broken:
            return self._reader
        if self._reader_url is not None:
            conninfo = self._reader_url
        else:
            login = self.setting(reader.LOGIN_SETTING)
            if not isinstance(login, dict):
                raise ReadOnlyError(self.reader_setup() or "no reader")
            conninfo = reader.conninfo_as(self.url, login)
        self._reader = reader.connect(conninfo, self._schema, timeout_s)
        return self._reader

    def reader_setup(self) -> str | None:
        if self._reader_url is not None or self.setting(reader.LOGIN_SETTING) is not None:
            return None
        with self.conn.cursor() as cur:
            return reader.missing(self._schema, reader.reader_name(cur))


def _to_call(names: Sequence[str], row: Sequence[Any]) -> Call:
    values = {name: value for name, value in zip(names, row, strict=True) if name in COLUMNS}
    values["timestamp"] = values["timestamp"].astimezone(UTC)
    return Call(**values)
