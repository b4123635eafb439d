"""The embedded store: one SQLite file, WAL mode, repeated content stored once.

Layout: `call_data` holds one row per call with the summary columns inline; system prompts,
tool lists, request params and each message live once in `content`, keyed by a hash of the
text, and `call_data` points at them (`message_ids` is a JSON array of content ids, so a
turn of an 80-turn conversation costs a few bytes per earlier message, not the messages
again). The `calls` view presents every call whole, with the column names of
`llmlog.core.record.COLUMNS`, for SQL written by hand.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from llmlog.core.filters import CallFilter
from llmlog.core.record import (
    ATTRIBUTION,
    COLUMNS,
    JSON_COLUMNS,
    USAGE,
    Call,
    format_timestamp,
    json_text,
    parse_timestamp,
)
from llmlog.store import compression, search
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
    unicode_text,
    utc_days,
)
from llmlog.store.content import ContentBatch, ContentIds, Key
from llmlog.store.filelock import FileLock
from llmlog.store.layout import INLINE_JSON, INLINE_PLAIN, select_list
from llmlog.store.readonly import (
    RESULT_MAX_BYTES,
    QueryRows,
    deadline_after,
    held,
    json_value,
    timed_out,
    too_large,
)
from llmlog.store.rollup import MOVES_SQL, moves, refile
from llmlog.store.sqlite import SQLITE
from llmlog.store.sqlite.schema import migrate
from llmlog.store.sqlite.traces import SQLiteTraces, naming_sql
from llmlog.store.sqlite.traces import json_safe as _json_safe

BUSY_TIMEOUT_MS = 60_000

# A call as a list shows it (`Store.recent(brief=True)`): the row and its last message.
_LAST_MESSAGE = """CASE WHEN d.message_ids IS NULL THEN NULL ELSE ifnull((
        SELECT json_array(json(llmlog_text(m.body))) FROM content AS m
        WHERE m.id = json_extract(d.message_ids, '$[#-1]')
    ), '[]') END"""
_BRIEF_OF = {
    "system_prompt": "NULL",
    "messages": _LAST_MESSAGE,
    "tools": "NULL",
    "params": "NULL",
    "response": "llmlog_text(d.response)",
}
_BRIEF = f"(\nSELECT\n    {select_list(_BRIEF_OF)}\nFROM call_data AS d\n)"


# ------------------------------------------------------------------ helpers


# A call's inline columns, read in one step each (the writer builds a row per call).
_PLAIN = operator.attrgetter(*INLINE_PLAIN)
_JSON = operator.attrgetter(*INLINE_JSON)


def _text(text: str) -> str:
    return text


# The free-text filter's content matches kept (`_content_holding`): patterns, ids a pattern.
_HOLDING_PATTERNS = 16
_HOLDING_MAX_IDS = 200_000

# One content lookup: this many hashes, padded by repeating the last.
_LOOKUP = 500
# Rows an INSERT takes at most, usually (`SQLiteStore._insert_many`).
_ROWS = 512

# The content of a call, keyed: system prompt, messages, tools, params, the instructions and
# tools its response echoes; then the response without them.
_Keys = tuple[Key | None, list[Key] | None, Key | None, Key | None, Key | None, Key | None, Any]


# The functions that read stored (maybe compressed) text, by name and number of arguments:
# `llmlog_text` reads compressed responses and content bodies back as text (`compression`),
# for the `calls` view; `llmlog_document`, the words the search index's triggers index and
# unindex (`search.sqlite_document`). Read-only SQL gets them bounded (`SQLiteStore._rows`).
_STORED_TEXT_FUNCTIONS: dict[str, tuple[int, Callable[..., str | None]]] = {
    "llmlog_text": (1, compression.unpack),
    "llmlog_document": (3, search.sqlite_document),
}


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # JSON_VALUE(metadata, '$.tier') reads as on the other stores (`readonly.json_value`).
    db.create_function("json_value", 2, json_value, deterministic=True)
    for name, (n, function) in _STORED_TEXT_FUNCTIONS.items():
        db.create_function(name, n, function, deterministic=True)
    if not readonly:
        _set_wal(db)
        db.execute("PRAGMA synchronous = NORMAL")
        # What is deleted or replaced (erasure, retention, re-encryption) is overwritten in
        # the file, not left readable in free space.
        db.execute("PRAGMA secure_delete = ON")
    return db


def _set_wal(db: sqlite3.Connection) -> None:
    # Switching a new file to WAL takes an exclusive lock and does not wait on busy_timeout,
    # so processes opening the same new file at once retry here.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


# What read-only SQL (the console, `llmlog query`) may read: the calls and what is computed
# from them. An allow-list, as the PostgreSQL reader's grants are: the tables naming people
# and what they did (accounts, api_tokens, settings, web_sessions, audit), a table added
# later, or a virtual table SQLite brings (`dbstat` shows how many rows and bytes each
# private table holds, page by page) are unreadable until listed here.
_READABLE = frozenset(
    {
        "calls", "call_data", "content", "daily", "people_daily", "daily_seen", "spans", "span_events",
        "traces",
        "sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema",
        "json_each", "json_tree",
    }
)  # fmt: skip

# The authorizer refuses anything but reading, whatever trick the SQL text uses.
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_INTROSPECTION_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
}


def _named(db: sqlite3.Connection) -> frozenset[str]:
    """The names a query can read a table by: the schema's tables and views, and the virtual
    table modules SQLite brings (`dbstat`, …)."""
    rows = db.execute("SELECT name FROM sqlite_master UNION ALL SELECT name FROM pragma_module_list")
    return frozenset(str(name).lower() for (name,) in rows)


def _read_only_authorizer(named: frozenset[str], denied: list[str] | None = None) -> Callable[..., int]:
    """The authorizer of read-only SQL, given `_named` of its connection; the tables it
    refuses a read of are added to `denied` (so that the refusal can name them)."""
    return functools.partial(_authorize, named, [] if denied is None else denied)


def _authorize(
    named: frozenset[str],
    denied: list[str],
    action: int,
    arg1: str | None,
    arg2: str | None,
    dbname: str | None,
    src: str | None,
) -> int:
    if action == sqlite3.SQLITE_READ:
        table = (arg1 or "").lower()
        # pragma_table_info('calls') and the like read as the table `pragma_table_info`.
        if table in _READABLE or table.removeprefix("pragma_") in _INTROSPECTION_PRAGMAS:
            return sqlite3.SQLITE_OK
        # A read with no database is of a WITH's own rows, or of a table no column of which
        # is read (count(*)), by its name as written: the latter is refused as any read of it.
        if dbname is None and table not in named:
            return sqlite3.SQLITE_OK
        denied.append(arg1 or "")
        return sqlite3.SQLITE_DENY
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        if arg1 in _INTROSPECTION_PRAGMAS:  # arg2 is the table or index they describe
            return sqlite3.SQLITE_OK
        if arg1 == "user_version" and arg2 is None:  # reading it; a value would set it
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master" and src is None:
        # SQLite asks this of itself when it sets up json_each() and other table-valued
        # functions; a statement that really writes the schema is refused by its own action.
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class SQLiteStore(RowTables, SQLiteTraces):
    dialect = SQLITE
    data_errors = (*Store.data_errors, sqlite3.IntegrityError, sqlite3.InterfaceError)

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._ingesting: FileLock | None = None  # made on first use: readers never take it
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = connect(self.path)
        self.schema_found = self.db.execute("PRAGMA user_version").fetchone()[0]
        self.schema_version = migrate(self.db)
        self._content = ContentIds()
        # LIKE pattern → (content epoch, last content id read, the ids holding it).
        self._holding: dict[str, tuple[int, int, list[int]]] = {}
        self._epoch = self._content_epoch()
        self._read_settings()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def close(self) -> None:
        if self._ingesting is not None:
            self._ingesting.close()
        self.db.close()

    @contextlib.contextmanager
    def ingest_lock(self) -> Iterator[None]:
        """`Store.ingest_lock`: `flock` on a file beside the database, `<path>-ingest.lock`,
        with the database's permission bits (whoever may write the store may take it; it is
        no more open than the store). Not the database itself: closing any descriptor of it
        would drop the locks SQLite holds on it in this process. In memory, no other process
        sees the store: nothing to take."""
        if self.path == ":memory:":
            yield
            return
        if self._ingesting is None:
            mode = os.stat(self.path).st_mode
            self._ingesting = FileLock(self.path + "-ingest.lock", mode)
        with self._ingesting.held():
            yield

    def _reopen(self) -> SQLiteStore | None:
        # WAL: readers on connections of their own never wait on the writer, nor it on them.
        return None if self.path == ":memory:" else SQLiteStore(self.path)

    # -------------------------------------------------------------- writing

    def _keys(self, c: Call, batch: ContentBatch, safe: bool) -> _Keys:
        """The content of a call, keyed, and its response with what it echoes left out."""
        dumps, text = (_json_safe, unicode_text) if safe else (json_text, _text)
        response, echo_instructions, echo_tools = c.response, None, None
        if isinstance(response, dict):
            # What the response echoes of the request goes to `content`, as the request's
            # own copy does; the row keeps a null in its place for the view to fill.
            echoed: dict[str, None] = {}
            if isinstance(response.get("instructions"), str):
                echo_instructions = batch.key(response["instructions"], text)
                echoed["instructions"] = None
            if isinstance(response.get("tools"), list) and response["tools"]:
                echo_tools = batch.key(response["tools"], dumps)
                echoed["tools"] = None
            if echoed:
                response = {**response, **echoed}
        return (
            batch.key(c.system_prompt, text) if c.system_prompt is not None else None,
            batch.keys(c.messages, dumps) if c.messages is not None else None,
            batch.key(c.tools, dumps) if c.tools is not None else None,
            batch.key(c.params, dumps) if c.params is not None else None,
            echo_instructions,
            echo_tools,
            response,
        )

    def _resolve(self, batch: ContentBatch) -> None:
        """Find the ids of the batch's content, inserting what is new; under the write lock."""
        missing = batch.unknown()
        # As few statements as the parameters allow (`_insert_many` says why), each padded
        # to a multiple of `_LOOKUP` hashes by repeating the last, so that a few prepared
        # statements serve every lookup; what each finds comes back as one value, not a row
        # each (the module lets go of the lock for each row, and for each of its columns).
        most = max(self.db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _LOOKUP, 1) * _LOOKUP
        for i in range(0, len(missing), most):
            chunk = missing[i : i + most]
            size = -(-len(chunk) // _LOOKUP) * _LOOKUP
            chunk += chunk[-1:] * (size - len(chunk))
            sql = (
                "SELECT json_group_array(json_array(hex(hash), id))"
                f" FROM content WHERE hash IN ({','.join('?' * size)})"
            )
            (found,) = self.db.execute(sql, chunk).fetchone()
            batch.found.update((bytes.fromhex(h), n) for h, n in orjson.loads(found))
        new = [h for h in missing if h not in batch.found]
        if new:
            # The write lock is held, so no other writer can take these ids meanwhile.
            first = self.db.execute("SELECT ifnull(max(id), 0) + 1 FROM content").fetchone()[0]
            bodies = compression.pack_all([batch.bodies[h] for h in new])
            rows = [(first + n, h, body) for n, (h, body) in enumerate(zip(new, bodies, strict=True))]
            self._insert_many("INSERT INTO content(id, hash, body) {}", rows)
            batch.found.update((h, i) for i, h, _ in rows)

    def _insert_many(self, sql: str, rows: list[tuple[Any, ...]], most: int = _ROWS) -> int:
        """`sql` (an INSERT whose `{}` takes a SELECT of the rows) for every row, in a few
        statements of many rows; the rows inserted.

        Row by row, each statement would let go of the interpreter lock and wait to take it
        back (the sqlite3 module does so around every step), behind the app's threads: up to
        the switch interval (5 ms) when one of them is busy. And SQLite's own costs come a
        statement: the `daily` trigger opens a statement journal, the search index (FTS5)
        writes out the words it holds. Rows go in statements of up to `most` (a power of
        two, fewer where SQLite allows fewer parameters a statement: 999 before 3.32), each
        padded to a power of two with rows of NULL that its SELECT leaves out: a few shapes
        of statement, each prepared once (the sqlite3 module keeps 128 prepared, each as
        large as its rows: one for each count of rows took tens of MB)."""
        if not rows:
            return 0
        width = len(rows[0]) + 1  # a mark first: 1, or NULL in a row that pads
        most = min(most, max(self.db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width, 1))
        most = 1 << (most.bit_length() - 1)
        inserted = i = 0
        while i < len(rows):
            chunk = rows[i : i + most]
            n = 1 << (len(chunk) - 1).bit_length()
            statement = self._INSERT_ROWS.get((sql, n))
            if statement is None:
                one = "(" + ",".join("?" * width) + ")"
                picked = ", ".join(f"column{k}" for k in range(2, width + 1))
                rows_sql = f"SELECT {picked} FROM (VALUES {','.join([one] * n)}) WHERE column1 IS NOT NULL"
                statement = self._INSERT_ROWS[sql, n] = sql.format(rows_sql)
            values = [value for row in chunk for value in (1, *row)]
            values += [None] * (width * (n - len(chunk)))
            inserted += self.db.execute(statement, values).rowcount
            i += most
        return inserted

    def _row(
        self, c: Call, keys: _Keys, batch: ContentBatch, safe: bool, response: str | bytes | None
    ) -> tuple[Any, ...]:
        """The row of `call_data` for `c`, in `_INSERT_COLUMNS` order; `response` as packed."""
        dumps = _json_safe if safe else json_text

        def cid(key: Key | None) -> int | None:
            return None if key is None else batch.id(key)

        system, messages, tools, params, echo_instructions, echo_tools, _ = keys
        plain = _PLAIN(c)
        if safe:
            plain = tuple(unicode_text(v) if isinstance(v, str) else v for v in plain)
        return (
            unicode_text(c.id) if safe else c.id,  # an id is text as the others are
            format_timestamp(c.timestamp),
            cid(system),
            # A JSON array of the ids, as orjson writes integers: what str() and a join give.
            orjson.dumps(batch.ids(messages)).decode() if messages is not None else None,
            cid(tools),
            cid(params),
            response,
            cid(echo_instructions),
            cid(echo_tools),
            *plain,
            *(dumps(v) if v is not None else None for v in _JSON(c)),
        )

    @staticmethod
    def _words(
        keyed: list[_Keys], responses: list[str | None], rows: list[tuple[Any, ...]], batch: ContentBatch
    ) -> list[tuple[str, str]]:
        """(id, the words the search index takes for its row) of the calls whose words can be
        read here from exactly the text their rows and last messages store, as the delete
        trigger reads them back: a last message the batch names by hash has its text at hand
        (a content row holds the text its hash is of; none is changed in place). One named
        by id, known by the identity of its object (which may have changed since it was
        stored), is read from the row by the insert trigger, as is every row of a batch with
        an id that is not text (SQLite and Python tell ids apart differently: 1.0 and 1)."""
        if any(type(row[0]) is not str for row in rows):
            return []
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        error = SQLiteStore._INSERT_COLUMNS.index("error")
        for keys, response, row in zip(keyed, responses, rows, strict=True):
            call_id = row[0]
            if call_id in seen:  # stored as the first of its id is, if at all
                continue
            seen.add(call_id)
            last = None
            if keys[1]:
                key = keys[1][-1]
                if not isinstance(key, bytes):
                    continue
                last = batch.bodies[key]
            out.append((call_id, search.sqlite_document(last, response, row[error])))
        return out

    # The content a call names by id and its response first, then the table's inline columns
    # (`llmlog.store.layout`): a column added to the table is written without a change here.
    _INSERT_COLUMNS = (
        "id", "timestamp", "system_id", "message_ids", "tools_id", "params_id", "response",
        "response_instructions_id", "response_tools_id", *INLINE_PLAIN, *INLINE_JSON,
    )  # fmt: skip
    # What `update_content` writes again: the content and what redaction or sealing changes
    # beside it; the prompt version last (kept where one is stored).
    _CONTENT_UPDATED = (
        "system_id", "message_ids", "tools_id", "params_id", "response", "tool_calls", "stop_reason",
        "error", "metadata", "response_instructions_id", "response_tools_id", "prompt_template_version",
    )  # fmt: skip
    _INSERT = f"INSERT INTO call_data ({', '.join(_INSERT_COLUMNS)}) {{}} ON CONFLICT(id) DO NOTHING"
    # Rows go in statements of many rows (`_insert_many`).
    _INSERT_ROWS: dict[tuple[str, int], str] = {}  # (insert, rows) → the statement, made on first use

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE: no upgrade from a read lock
        that another writer could make fail); committed, or rolled back on any error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def insert(self, calls: Sequence[Call]) -> int:
        """Store a batch in one transaction; a call whose id is already stored is skipped."""
        if not calls:
            return 0
        calls = self._sealed(calls)
        try:
            inserted = self._insert(calls, safe=False)
        except UnicodeEncodeError:
            inserted = self._insert(calls, safe=True)
        self._embed(calls)
        return inserted

    def _content_epoch(self) -> int:
        row = self.db.execute("SELECT value FROM settings WHERE key = 'content_epoch'").fetchone()
        return int(row[0]) if row else 0

    def _settings_now(self) -> dict[str, Any]:
        """Under the write lock, so as they stay until the write commits: the settings a
        write obeys (`Store.WRITE_SETTINGS`), in one statement."""
        marks = ",".join("?" * len(self.WRITE_SETTINGS))
        rows = self.db.execute(f"SELECT key, value FROM settings WHERE key IN ({marks})", self.WRITE_SETTINGS)
        return {key: json.loads(value) for key, value in rows}

    def _content_deleted(self) -> None:
        """In the deleting transaction: every store's cached content ids are now suspect."""
        self.db.execute(
            "INSERT INTO settings VALUES ('content_epoch', 1)"
            " ON CONFLICT (key) DO UPDATE SET value = value + 1"
        )

    def _insert(self, calls: Sequence[Call], safe: bool) -> int:
        batch = self._content.batch(by_identity=not safe)
        keyed = [self._keys(c, batch, safe) for c in calls]
        # The search index's triggers read the responses and messages packed here.
        with self._writing(), compression.recalling():
            # Regulated mode as the store's settings say now, under the write lock that
            # `llmlog keys rotate` takes to mark the store sealed-only: a call with clear
            # text is refused (or sealed, with a key) however long ago this store was opened.
            settings = self._settings_now()
            enforced = self._enforce(calls, settings)
            if self._content_changed(settings) or enforced is not calls:
                calls = enforced
                batch = self._content.batch(by_identity=not safe)
                keyed = [self._keys(c, batch, safe) for c in calls]
            self._resolve(batch)
            dumps = _json_safe if safe else json_text
            responses = [dumps(keys[6]) if keys[6] is not None else None for keys in keyed]
            packed = compression.pack_all(responses)
            rows = [
                self._row(c, keys, batch, safe, p) for c, keys, p in zip(calls, keyed, packed, strict=True)
            ]
            # The words of the rows for the search index, read here, not by the insert
            # trigger calling Python for each row (`_insert_many`: each call takes the
            # interpreter lock back); gone again before the transaction ends.
            words = self._words(keyed, responses, rows, batch)
            self._insert_many("INSERT OR IGNORE INTO call_words (id, doc) {}", words)
            inserted = self._insert_many(self._INSERT, rows)
            if words:
                self.db.execute("DELETE FROM call_words")
        batch.commit()
        return inserted

    def _merge_index(self) -> None:
        """Merge the search index into one segment: FTS5 deletes by adding a tombstone, and
        the deleted words stay in older segments until they are merged."""
        self.db.execute("INSERT INTO call_text (call_text) VALUES ('optimize')")

    def update_costs(self, costs: Iterable[tuple[str, float | None, str | None]]) -> int:
        with self._writing():
            n = 0
            for call_id, cost, card in costs:
                n += self.db.execute(
                    "UPDATE call_data SET cost_usd = ?, rate_card = ? WHERE id = ?", (cost, card, call_id)
                ).rowcount
        return n

    def update_usage(self, call: Call) -> None:
        with self._writing():  # the triggers of `daily`, `people_daily` and `traces` follow
            self.db.execute(
                f"UPDATE call_data SET {', '.join(f'{c} = ?' for c in USAGE)} WHERE id = ?",
                [*(getattr(call, c) for c in USAGE), call.id],
            )

    def update_content(self, call: Call) -> None:
        (call,) = self._sealed([call])
        batch = self._content.batch(by_identity=False)
        keys = self._keys(call, batch, safe=True)
        with self._writing():
            settings = self._settings_now()
            (enforced,) = self._enforce([call], settings)
            if self._content_changed(settings) or enforced is not call:
                call = enforced
                batch = self._content.batch(by_identity=False)
                keys = self._keys(call, batch, safe=True)
            self._resolve(batch)
            response = compression.pack(_json_safe(keys[6])) if keys[6] is not None else None
            row = dict(zip(self._INSERT_COLUMNS, self._row(call, keys, batch, True, response), strict=True))
            values = [row[name] for name in (*self._CONTENT_UPDATED, *ATTRIBUTION)] + [call.id]

            # The vector of the text replaced goes with it (a sealing must not leave the
            # clear text's vector behind); the new text's is made below, if it has any.
            def change() -> None:
                self.db.execute(
                    f"UPDATE call_data SET {', '.join(f'{c} = ?' for c in self._CONTENT_UPDATED[:-1])},"
                    " prompt_template_version = ifnull(prompt_template_version, ?), embedding = NULL, "
                    + ", ".join(f"{c} = ifnull({c}, ?)" for c in ATTRIBUTION)
                    + " WHERE id = ?",
                    values,
                )

            was = self.db.execute(f"SELECT {MOVES_SQL} FROM call_data WHERE id = ?", (call.id,)).fetchone()
            if moves(was, call):
                # What the rollups count it in (or as) changes: the triggers follow inserts.
                refile(lambda sql, params: self.db.execute(sql, params).fetchall(), SQLITE, call.id, change)
            else:
                change()
        batch.commit()
        self._embed([call])

    _CONTENT_COLUMNS = ("system_id", "tools_id", "params_id", "response_instructions_id", "response_tools_id")

    def erase(self, *, user_id: str | None = None, session_id: str | None = None) -> Erased:
        column, value = erase_target(user_id, session_id)
        with self._checkpointed():
            out = self._erase(column, value)
            out.alerts = self.forget_alerts_naming(value)  # transactions of their own
        return out

    def _erase(self, column: str, value: str) -> Erased:
        with self._writing():
            columns = ", ".join(("message_ids", *self._CONTENT_COLUMNS))
            rows = self.db.execute(f"SELECT {columns} FROM call_data WHERE {column} = ?", (value,)).fetchall()
            candidates = {c for r in rows for c in r[1:] if c is not None}
            candidates.update(c for r in rows if r[0] for c in json.loads(r[0]))
            traces = [
                t for (t,) in self.db.execute(
                    f"SELECT DISTINCT trace_id FROM call_data WHERE {column} = ? AND trace_id IS NOT NULL",
                    (value,),
                )
            ]  # fmt: skip
            out = self._delete_calls(f"{column} = ?", [value])
            spans, events = self._erase_from_traces(column, value, traces)
            out.spans += spans
            out.events = events + self._delete_waiting_events(column, value, traces)
            out.contents = self._delete_content(candidates)
            rollup = self.db.execute(f"DELETE FROM people_daily WHERE {column} = ?", (value,))
            # And the note of which days counted them: a rollup that names them.
            self.db.execute("DELETE FROM daily_seen WHERE who = ? AND kind = ?", (value, column[:-3]))
            out.rollup_rows = rollup.rowcount
            self._merge_index()
        return out

    def _delete_waiting_events(self, column: str, value: str, traces: list[str]) -> int:
        """In a write transaction: the kept log events in these traces, or naming `value`
        (see `Store.erase`)."""
        named, params = naming_sql(column, value, ("attributes", "body"))
        return self.db.execute(
            f"DELETE FROM span_events WHERE trace_id IN (SELECT value FROM json_each(?)) OR {named}",
            (json.dumps(traces), *params),
        ).rowcount

    @contextlib.contextmanager
    def _checkpointed(self) -> Iterator[None]:
        """After deleting: the write-ahead log, which still holds the pages as they were
        before, folded into the file and emptied."""
        yield
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _delete_calls(self, where: str, params: Sequence[Any]) -> Erased:
        """In a write transaction: the calls `where` selects, their spans and span events."""
        db = self.db
        ids = [r[0] for r in db.execute(f"SELECT id FROM call_data WHERE {where}", params)]
        out = Erased(calls=db.execute(f"DELETE FROM call_data WHERE {where}", params).rowcount)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            db.execute(
                "DELETE FROM span_events WHERE (trace_id, span_id) IN"
                f" (SELECT trace_id, span_id FROM spans WHERE call_id IN ({marks}))",
                chunk,
            )
            out.spans += db.execute(f"DELETE FROM spans WHERE call_id IN ({marks})", chunk).rowcount
        return out

    def _delete_content(self, candidates: set[int] | None) -> int:
        """In a write transaction: the content no stored call uses, among `candidates` (all
        when None)."""
        db = self.db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS content_used (id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM content_used")
        within = ""
        if candidates is not None:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS content_candidates (id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM content_candidates")
            db.executemany("INSERT INTO content_candidates VALUES (?)", [(c,) for c in candidates])
            within = " IN (SELECT id FROM content_candidates)"
        for col in self._CONTENT_COLUMNS:
            db.execute(
                f"INSERT OR IGNORE INTO content_used SELECT {col} FROM call_data"
                f" WHERE {col} {within or 'IS NOT NULL'}"
            )
        db.execute(
            "INSERT OR IGNORE INTO content_used SELECT j.value FROM call_data,"
            f" json_each(call_data.message_ids) AS j {'WHERE j.value' + within if within else ''}"
        )
        gone = db.execute(
            "DELETE FROM content WHERE id NOT IN (SELECT id FROM content_used)"
            + (" AND id IN (SELECT id FROM content_candidates)" if within else "")
        ).rowcount
        if gone:
            self._content_deleted()
        return gone

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if sql.startswith("SELECT"):  # a read needs no write lock
            return [tuple(r) for r in self.db.execute(sql, params).fetchall()]
        with self._writing():
            return [tuple(r) for r in self.db.execute(sql, params).fetchall()]

    def audit(self, who: str, action: str, call_ids: Sequence[str]) -> None:
        with self._writing():
            self.db.execute(
                "INSERT INTO audit (time, who, action, call_ids) VALUES (?, ?, ?, ?)",
                (format_timestamp(datetime.now(UTC)), who, action, json.dumps(list(call_ids))),
            )

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self.db.execute(
            "SELECT time, who, action, call_ids FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [AuditEntry(parse_timestamp(t), who, action, json.loads(ids)) for t, who, action, ids in rows]

    # -------------------------------------------------------------- retention

    def old_calls(self, before: date) -> list[tuple[date, str | None, int]]:
        rows = self.db.execute(
            "SELECT substr(timestamp, 1, 10), feature, count(*) FROM call_data WHERE timestamp < ?"
            " GROUP BY 1, 2 ORDER BY 1",
            (before.isoformat(),),
        )
        return [(date.fromisoformat(d), f, n) for d, f, n in rows]

    def purge(self, day: date, features: Sequence[str | None]) -> Erased:
        where, params = day_and_features(day, features, self.dialect)
        with self._checkpointed(), self._writing():
            return self._delete_calls(where, params)

    def collect_content(self) -> int:
        with self._checkpointed(), self._writing():
            return self._delete_content(None)

    def purge_traces(self, before: datetime) -> int:
        with self._checkpointed(), self._writing():
            cutoff = format_timestamp(before)
            n = self.db.execute("DELETE FROM spans WHERE start_time < ?", (cutoff,)).rowcount
            n += self.db.execute(
                "DELETE FROM span_events WHERE received < ?", (int(before.timestamp() * 1e9),)
            ).rowcount
        return n

    def reclaim(self, thorough: bool = False) -> None:
        with self._writing():
            self._merge_index()
        # A store made before incremental vacuum was the default is rebuilt once with it.
        if thorough or self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self.db.execute("VACUUM")
        else:
            self.db.execute("PRAGMA incremental_vacuum")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        files = (Path(self.path + suffix) for suffix in ("", "-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    def setting(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_setting(self, key: str, value: Any) -> None:
        with self._writing():
            self.db.execute(
                "INSERT INTO settings VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    # -------------------------------------------------------------- reading

    def _json_clauses(self, f: CallFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if f.tag is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)")
            params.append(f.tag)
        for key, value in f.metadata:
            path = "$." + ".".join(f'"{part}"' for part in key.split("."))
            # json_extract gives 1/0 for true/false; compare as the JSON text would read.
            clauses.append(
                "(CASE json_type(metadata, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
                " ELSE CAST(json_extract(metadata, ?) AS TEXT) END) = ?"
            )
            params += [path, path, value]
        if f.text:
            # Content is stored once and referenced by id: the matching bodies are found
            # once (`_content_holding`), then the calls that use them.
            like = "LIKE ? ESCAPE '\\'"
            pattern = like_pattern(f.text)
            clauses.append(
                f"(tool_calls {like} OR error {like}"
                " OR system_id IN (SELECT value FROM json_each(?)) OR EXISTS"
                " (SELECT 1 FROM json_each(message_ids) WHERE value IN (SELECT value FROM json_each(?)))"
                f" OR llmlog_text(response) {like})"
            )
            ids = self._content_holding(pattern)
            params += [pattern, pattern, ids, ids, pattern]
        return clauses, params

    def _content_holding(self, pattern: str) -> str:
        """The ids of the content whose text is LIKE `pattern`, as a JSON array. Content is
        compressed, so reading all of it for a free-text filter costs ~3 µs a body; a page
        asks several times (its calls, then its facets), and the next page again. So the
        ids found are kept, per pattern, and only content added since is read: an id never
        changes its text, and a deletion of content (which could free ids for reuse)
        changes the content epoch, which starts the search over."""
        epoch = self._content_epoch()
        kept = self._holding.pop(pattern, None)
        upto, ids = (kept[1], kept[2]) if kept is not None and kept[0] == epoch else (0, [])
        # The last id first: a row past it, stored meanwhile, is read next time.
        top = self.db.execute("SELECT ifnull(max(id), 0) FROM content").fetchone()[0]
        if top > upto:
            rows = self.db.execute(
                "SELECT id FROM content WHERE id > ? AND id <= ? AND llmlog_text(body) LIKE ? ESCAPE '\\'",
                (upto, top, pattern),
            )
            ids = ids + [i for (i,) in rows]
        if len(ids) <= _HOLDING_MAX_IDS:
            self._holding[pattern] = (epoch, top, ids)
            while len(self._holding) > _HOLDING_PATTERNS:
                self._holding.pop(next(iter(self._holding)))
        return json.dumps(ids)

    def _calls(
        self, where: str, params: Sequence[Any], order: str, limit: int, brief: bool = False
    ) -> list[Call]:
        """The calls `where` picks from `call_data`, assembled (whole, or `brief`) only for those."""
        sql = (
            f"SELECT * FROM {_BRIEF if brief else 'calls'} WHERE id IN"
            f" (SELECT id FROM call_data {where} ORDER BY {order}"
            f" LIMIT {int(limit)}) ORDER BY {order}"
        )
        cur = self.db.execute(sql, params)
        return self._reveal([_to_call(cur.description, row) for row in cur])

    def sample(self, f: CallFilter, n: int = 20, *, brief: bool = False) -> list[Call]:
        where, params = self._where(f)
        picked = self.db.execute(f"SELECT id FROM call_data {where} ORDER BY random() LIMIT {int(n)}", params)
        ids = [r[0] for r in picked]
        return self._calls(*self._where(CallFilter(ids=ids)), "timestamp", n, brief) if ids else []

    def _search_ids(self, q: search.Query, f: CallFilter, limit: int) -> list[tuple[str, float]]:
        # Ranked among the newest RANKED matches: the last stored (rowids grow as calls are
        # stored, and the index walks them backwards cheaply, where ordering by timestamp
        # would read every match's row), found first, then bm25 over those alone. The filter's bare
        # column names are call_data's (call_text has only `doc`).
        match = search.fts5(q)
        where, params = self._where(f, ["call_text MATCH ?"], [match])
        joined = "FROM call_text JOIN call_data AS d ON d.rowid = call_text.rowid"
        start = self.db.execute(
            f"SELECT call_text.rowid {joined} {where} ORDER BY call_text.rowid DESC"
            f" LIMIT 1 OFFSET {search.RANKED - 1}",
            params,
        ).fetchone()
        where, params = self._where(
            f, ["call_text MATCH ?", "call_text.rowid >= ?"], [match, start[0] if start else 0]
        )
        # bm25, FTS5's rank: lower is better, so the score is its negative.
        rows = self.db.execute(
            f"SELECT d.id, call_text.rank {joined} {where} ORDER BY call_text.rank, d.timestamp DESC"
            f" LIMIT {int(limit)}",
            params,
        )
        return [(i, -rank) for i, rank in rows]

    def set_vectors(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        with self._writing():
            self.db.executemany(
                "UPDATE call_data SET embedding = ? WHERE id = ? AND embedding IS NULL",
                [(v, i) for i, v in pairs],
            )

    def _without_vectors(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM call_data WHERE embedding IS NULL")]

    def _vector_of(self, call_id: str) -> bytes | None:
        row = self.db.execute("SELECT embedding FROM call_data WHERE id = ?", (call_id,)).fetchone()
        return row[0] if row else None

    def _vectors(self, f: CallFilter, limit: int) -> list[tuple[str, bytes]]:
        where, params = self._where(f, ["embedding IS NOT NULL"])
        sql = f"SELECT id, embedding FROM call_data {where} ORDER BY timestamp DESC LIMIT {int(limit)}"
        return self.db.execute(sql, params).fetchall()

    def iter_calls(self, f: CallFilter, batch: int = 1000) -> Iterator[Call]:
        """Every matching call, oldest first, in pages (memory stays flat on a big store)."""
        last_ts, last_id = "", ""
        while True:
            where, params = self._where(f, ["(timestamp, id) > (?, ?)"], [last_ts, last_id])
            page = self._calls(where, params, "timestamp, id", batch)
            if not page:
                return
            yield from page
            last_ts, last_id = format_timestamp(page[-1].timestamp), page[-1].id
            if len(page) < batch:
                return

    def count(self, f: CallFilter) -> int:
        where, params = self._where(f)
        return int(self.db.execute(f"SELECT count(*) FROM call_data {where}", params).fetchone()[0])

    def cost_by_day(
        self, since: datetime, until: datetime | None = None
    ) -> list[tuple[str, str | None, int, float | None]]:
        first, last = utc_days(since, until)
        sql = (
            "SELECT day, model, sum(calls), CASE WHEN sum(priced_calls) > 0 THEN total(cost_usd) END"
            " FROM daily WHERE day BETWEEN ? AND ? GROUP BY day, model ORDER BY day, model"
        )
        return [tuple(r) for r in self.db.execute(sql, (first.isoformat(), last.isoformat()))]

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(ids)
        for i in range(0, len(ids), 500):  # under SQLite's limit on parameters
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT id FROM call_data WHERE id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def query_rows(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout_s: float = 10.0,
        limit: int = 10_000,
        max_bytes: int = RESULT_MAX_BYTES,
    ) -> QueryRows:
        """Run SQL that may only read, within a time limit, on a separate read-only connection
        whose authorizer allows reading the calls and nothing else, and whose memory is bounded
        (no value past `max_bytes`, sorts and temporary tables on disk, a small page cache)."""
        deadline = deadline_after(timeout_s)
        return QueryRows(self._rows(sql, params, timeout_s, deadline, max_bytes), limit, timeout_s, deadline)

    def internal_query(
        self, sql: str, params: Sequence[Any] = (), *, timeout_s: float = 10.0, limit: int = 10_000
    ) -> QueryResult:
        deadline = deadline_after(timeout_s)
        source = self._rows(sql, params, timeout_s, deadline, None)
        with QueryRows(source, limit, timeout_s, deadline) as rows:
            return held(rows, None)

    def _rows(
        self, sql: str, params: Sequence[Any], timeout_s: float, deadline: float, max_bytes: int | None
    ) -> Generator[Sequence[Any], None, None]:
        """The column names, then the rows as SQLite steps to them (`QueryRows`)."""
        own = self.path != ":memory:"
        db = connect(self.path, readonly=True) if own else self.db
        longest = db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        unpacked_too_large: list[bool] = []
        if max_bytes is not None:
            # Per connection, unlike sqlite3_hard_heap_limit (the whole process, the writer's
            # connection too): a string or blob built past this fails, as does a
            # group_concat or json_group_array growing past it. Half the result's bound: a
            # sort's merge holds a value from each of up to 16 runs at once.
            value_max = max(max_bytes // 2, 1_000_000)
            db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, value_max)

            # Text unpacked in Python is made before SQLite can check its length: bounded too.
            def within(function: Callable[..., str | None]) -> Callable[..., str | None]:
                def bounded(*values: Any) -> str | None:
                    try:
                        for value in values:
                            compression.check_size(value, value_max)
                    except compression.TooLarge:
                        unpacked_too_large.append(True)
                        raise
                    return function(*values)

                return bounded

            for name, (n, function) in _STORED_TEXT_FUNCTIONS.items():
                db.create_function(name, n, within(function), deterministic=True)
            if own:
                # What a sort, DISTINCT or GROUP BY holds goes to a temporary file past a
                # small page cache, rather than grow in memory.
                db.execute("PRAGMA temp_store = FILE")
                db.execute("PRAGMA cache_size = -4096")
        # The deadline is the caller's too (`QueryRows`): time spent between rows counts.
        db.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        denied: list[str] = []
        db.set_authorizer(_read_only_authorizer(_named(db), denied))
        try:
            cur = db.execute(sql, params)
            yield [d[0] for d in cur.description or ()]
            yield from cur
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if msg == "interrupted":
                raise ReadOnlyError(timed_out(timeout_s)) from None
            if unpacked_too_large and max_bytes is not None:
                raise ReadOnlyError(too_large(max_bytes)) from None
            if denied and ("not authorized" in msg or "prohibited" in msg):
                # A read of a table out of reach (accounts, audit, …) is no write: said as
                # PostgreSQL's reader says it. SQLite stops at the first refusal: it is this read.
                raise ReadOnlyError(f"not readable here (permission denied for table {denied[0]})") from None
            if "not authorized" in msg or "prohibited" in msg or "readonly" in msg:
                raise ReadOnlyError(
                    "only reading queries are allowed (no writes, DDL, ATTACH or PRAGMA writes)"
                ) from None
            if "too big" in msg and max_bytes is not None:
                raise ReadOnlyError(too_large(max_bytes)) from None
            raise ReadOnlyError(msg) from None
        finally:
            db.set_authorizer(None)
            db.set_progress_handler(None, 0)
            if own:
                db.close()
            else:
                db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, longest)
                for name, (n, function) in _STORED_TEXT_FUNCTIONS.items():
                    db.create_function(name, n, function, deterministic=True)


def _to_call(description: Any, row: Sequence[Any]) -> Call:
    values: dict[str, Any] = {}
    for (name, *_), value in zip(description, row, strict=True):
        if name not in COLUMNS:
            continue
        if name in JSON_COLUMNS and value is not None:
            value = json.loads(value)
        values[name] = value
    values["timestamp"] = parse_timestamp(values["timestamp"])
    return Call(**values)
