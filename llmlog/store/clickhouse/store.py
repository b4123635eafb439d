"""The ClickHouse store: for when one machine is outgrown.

`clickhouse://user:pass@host:8123/db` (`clickhouses://` for TLS) talks to a server with
`clickhouse-connect`; `chdb:///path` runs the same engine embedded in this process (the
`chdb` package), which is what the tests use. Both sit behind one seam (`clickhouse.engine`):
every statement the store issues is the same on both, and parameters are `%s`, so the SQL
shared with the other stores (filters, reports) reads the same.

Search matches words in the raw text of a call's last message, response and error (no
index: the scan is of the newest calls the filters select, in columns the engine reads
fast); "calls like this one" keeps each vector as hex beside the call. See
`clickhouse.schema` for the schema and why it is shaped so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

from llmlog.core.config import clickhouse_cluster
from llmlog.core.encryption import Policy
from llmlog.core.filters import CallFilter
from llmlog.core.record import ATTRIBUTION, COLUMNS, INT_COLUMNS, JSON_COLUMNS, USAGE, Call, json_text
from llmlog.store import retention_policy, search
from llmlog.store.base import (
    Account,
    ApiToken,
    AuditEntry,
    Erased,
    QueryResult,
    ReadOnlyError,
    erase_target,
    plain,
    unicode_text,
    utc_days,
)
from llmlog.store.clickhouse import CLICKHOUSE, reader
from llmlog.store.clickhouse.alerts import ClickHouseAlerts
from llmlog.store.clickhouse.engine import READ_SETTINGS, Engine, EngineError, bind, open_engine
from llmlog.store.clickhouse.engine import utc_time as _when
from llmlog.store.clickhouse.experiments import ClickHouseExperiments
from llmlog.store.clickhouse.schema import DAILY_GROUP, DAILY_SELECT, PEOPLE_SELECT, Versions, migrate
from llmlog.store.clickhouse.traces import ClickHouseTraces, naming_sql
from llmlog.store.filelock import FileLock
from llmlog.store.readonly import RESULT_MAX_BYTES, QueryRows, deadline_after, too_large
from llmlog.store.rollup import GROUP, MOVES_SQL, moves
from llmlog.store.search import Query
from llmlog.store.urls import redact_url


class ClickHouseStore(ClickHouseAlerts, ClickHouseExperiments, ClickHouseTraces):
    dialect = CLICKHOUSE
    recent_order = "timestamp DESC, id"
    # Rotation sweeps again after this long, for what a cluster's replicas saw late (`insert`).
    rotation_settle_s = 5.0

    def __init__(self, url: str, engine: Engine | None = None, reader_url: str | None = None) -> None:
        self._url = url
        self._ingesting: FileLock | None = None  # made on first use: readers never take it
        # Read-only SQL a person writes runs as the reader (`clickhouse.reader`): the URL
        # given, else the user the store made, on an engine of its own.
        self._reader_url = reader_url
        self._reader_engine: Engine | None = None
        self.engine = engine or open_engine(url)
        self.cluster = clickhouse_cluster()
        try:
            self.schema_found = Versions(self.engine).read()
            self.schema_version = migrate(self.engine, self.cluster)
            self._prepare()
            self._read_settings()
        except BaseException:
            self.engine.close()  # the embedded engine holds its directory until closed
            raise

    @property
    def url(self) -> str:
        return self._url

    @contextlib.contextmanager
    def ingest_lock(self) -> Iterator[None]:
        """`Store.ingest_lock`: ClickHouse has no lock to lend, so a file lock in the temp
        directory, named by a hash of the store's URL (its password left out) and this user:
        it serves the processes of one user on one host. Servers on several hosts writing one
        ClickHouse store are not kept apart by it; nor are two URLs naming one server
        differently (`localhost` and `127.0.0.1`)."""
        if self._ingesting is None:
            digest = hashlib.sha256(redact_url(self._url).encode()).hexdigest()[:32]
            path = os.path.join(tempfile.gettempdir(), f"llmlog-ingest-{os.geteuid()}-{digest}.lock")
            self._ingesting = FileLock(path, 0o600, owned=True)
        with self._ingesting.held():
            yield

    def close(self) -> None:
        if self._ingesting is not None:
            self._ingesting.close()
        if self._reader_engine is not None:
            self._reader_engine.close()
            self._reader_engine = None
        self.engine.close()

    # -------------------------------------------------------------- schema

    def _prepare(self) -> None:
        """After the migrations: the store's reader user, if it has none and may make one."""
        if self._reader_url is None and self.setting(reader.LOGIN_SETTING) is None:
            login = reader.create_reader(self.engine, self.cluster)
            if login is not None:
                self.set_setting(reader.LOGIN_SETTING, login)

    # The people pages' figures from the calls, in `people_daily`'s types: a UNION of UInt64
    # (count) with Int64 (the rollup's sums) has no common type in ClickHouse.
    _PEOPLE_RAW = (
        "SELECT user_id, session_id, toInt64(count()) AS calls, toInt64(count(error)) AS errors,"
        " toInt64(sum(ifNull(input_tokens, 0))) AS input_tokens,"
        " toInt64(sum(ifNull(output_tokens, 0))) AS output_tokens,"
        " toFloat64(sum(ifNull(cost_usd, 0))) AS cost_usd, toInt64(count(cost_usd)) AS priced_calls,"
        " min(timestamp) AS first, max(timestamp) AS last FROM call_data {} GROUP BY user_id, session_id"
    )

    # -------------------------------------------------------------- reading helpers

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.engine.rows(bind(sql, params))[1]

    def _where(
        self, f: CallFilter, extra: Sequence[str] = (), params: Sequence[Any] = ()
    ) -> tuple[str, list[Any]]:
        clauses, values = self._json_clauses(f)
        return f.sql([*clauses, *extra], [*values, *params], placeholder="%s", time_param=lambda t: t)

    def _json_clauses(self, f: CallFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if f.tag is not None:
            clauses.append("has(JSONExtract(ifNull(tags, '[]'), 'Array(String)'), %s)")
            params.append(f.tag)
        for key, value in f.metadata:
            # The value as its JSON text reads (true, 1, "pro" → pro): strings unquoted.
            path = ", ".join("%s" for _ in key.split("."))
            raw = f"JSONExtractRaw(ifNull(metadata, '{{}}'), {path})"
            text = f"JSONExtractString(ifNull(metadata, '{{}}'), {path})"
            clauses.append(f"if(startsWith({raw}, '\"'), {text}, {raw}) = %s")
            params += [*key.split("."), *key.split("."), *key.split("."), value]
        if f.text:
            columns = ("system_prompt", "messages", "response", "tool_calls", "error")
            clauses.append(
                "("
                + " OR ".join(f"positionCaseInsensitiveUTF8(ifNull({c}, ''), %s) > 0" for c in columns)
                + ")"
            )
            params += [f.text] * len(columns)
        return clauses, params

    def _calls(
        self, where: str, params: Sequence[Any], order: str, limit: int, brief: bool = False
    ) -> list[Call]:
        columns = ", ".join(_BRIEF.get(c, c) if brief else c for c in COLUMNS_READ)
        names, rows = self.engine.rows(
            bind(f"SELECT {columns} FROM call_data {where} ORDER BY {order} LIMIT {int(limit)}", params)
        )
        return self._reveal([_to_call(names, r) for r in rows])

    # -------------------------------------------------------------- writing

    def insert(self, calls: Sequence[Call]) -> int:
        """Store a batch; a call whose id is already stored is skipped (and a batch sent twice
        at once is one, once the table's parts merge).

        ClickHouse has no transaction to hold regulated mode's setting still while the rows
        go in, so the settings are read just before the insert (calls with clear text are
        refused, or sealed with a key, as on the other stores) and again just after it.
        `llmlog keys rotate` marks the store sealed-only first, then sweeps it. Either the
        read after the insert still finds the store taking clear text, and then the insert
        was done before the mark, so before the sweep read the table, which seals it; or it
        finds the mark, and then the calls it let in clear are deleted again (their days'
        rollups summed anew) and the batch is refused as a data error: a writer with a key
        sends it again sealed, one without counts it failed. On one server that leaves no
        moment in which a clear call stays. What it cannot cover: a cluster whose replicas
        see the mark (or the rows) late; rotation sweeps a second time after a settle
        (`rotation_settle_s`) for that, and a write slower than the settle is the window
        left. A content update (`update_content`) is checked before only: a clear one that
        races the mark is sealed by that second sweep."""
        if not calls:
            return 0
        # An id that is not Unicode (a lone surrogate) is stored as the engine keeps other
        # such text (`unicode_text`), and looked for as stored.
        calls = [
            c.replace(id=unicode_text(c.id)) if isinstance(c.id, str) and not c.id.isascii() else c
            for c in calls
        ]
        calls = self._sealed(calls)
        before = self._settings_now()
        calls = self._enforce(calls, before)
        held = self.existing_ids([c.id for c in calls])
        new: dict[str, Call] = {}
        for c in calls:
            if c.id not in held and c.id not in new:
                new[c.id] = c
        if new:
            self.engine.insert("call_data", COLUMNS_READ, [_row(c) for c in new.values()])
            after = self._settings_now()
            if after != before:
                self._take_back_clear(list(new.values()), Policy.from_settings(after))
        return len(new)

    def _settings_now(self) -> dict[str, Any]:
        """The settings a write obeys (`Store.WRITE_SETTINGS`), in one statement."""
        rows = self._select(
            "SELECT key, argMax(value, version) FROM settings WHERE key IN %s GROUP BY key",
            [list(self.WRITE_SETTINGS)],
        )
        return {key: json.loads(value) for key, value in rows}

    def _take_back_clear(self, calls: list[Call], policy: Policy) -> None:
        """After an insert that raced the sealed-only mark: delete the calls it stored that
        the mark refuses, and refuse them (see `insert`)."""
        wrong = [c for c in calls if self._clear(c, policy)]
        if not wrong:
            return
        ids = [c.id for c in wrong]
        self._mutate("ALTER TABLE call_data DELETE WHERE id IN %s", [ids])
        self._recount(sorted({c.timestamp.astimezone(UTC).date() for c in wrong}))
        raise ValueError(
            f"call {ids[0]} (and {len(ids) - 1} more): the store was made to keep text encrypted"
            " (regulated mode) while they were stored with clear text; they were deleted again"
        )

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(ids)
        for i in range(0, len(ids), 5000):
            rows = self._select("SELECT id FROM call_data WHERE id IN %s", [ids[i : i + 5000]])
            found.update(r[0] for r in rows)
        return found

    def setting(self, key: str) -> Any:
        rows = self._select("SELECT argMax(value, version) FROM settings WHERE key = %s GROUP BY key", [key])
        return json.loads(rows[0][0]) if rows else None

    # -------------------------------------------------------------- reading

    def sample(self, f: CallFilter, n: int = 20, *, brief: bool = False) -> list[Call]:
        where, params = self._where(f)
        ids = [
            r[0]
            for r in self._select(f"SELECT id FROM call_data {where} ORDER BY rand() LIMIT {int(n)}", params)
        ]
        if not ids:
            return []
        where, params = self._where(CallFilter(ids=ids))
        return self._calls(where, params, "timestamp, id", n, brief)

    def iter_calls(self, f: CallFilter, batch: int = 1000) -> Iterator[Call]:
        last: tuple[Any, str] | None = None
        while True:
            extra = ["(timestamp, id) > (toDateTime64(%s, 6, 'UTC'), %s)"] if last else []
            where, params = self._where(f, extra, list(last) if last else [])
            page = self._calls(where, params, "timestamp, id", batch)
            if not page:
                return
            yield from page
            last = (page[-1].timestamp, page[-1].id)
            if len(page) < batch:
                return

    def count(self, f: CallFilter) -> int:
        where, params = self._where(f)
        return int(self._select(f"SELECT count() FROM call_data {where}", params)[0][0])

    def cost_by_day(
        self, since: datetime, until: datetime | None = None
    ) -> list[tuple[str, str | None, int, float | None]]:
        first, last = utc_days(since, until)
        rows = self._select(
            "SELECT toString(day), model, sum(calls), if(sum(priced_calls) > 0, sum(cost_usd), NULL)"
            " FROM daily WHERE day BETWEEN %s AND %s GROUP BY day, model ORDER BY day, model NULLS FIRST",
            [first, last],
        )
        return [(str(d), m, int(n), None if c is None else float(c)) for d, m, n, c in rows]

    def query_rows(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout_s: float = 10.0,
        limit: int = 10_000,
        max_bytes: int = RESULT_MAX_BYTES,
    ) -> QueryRows:
        """Run SQL a person wrote as the store's reader (`clickhouse.reader`): one statement,
        as ClickHouse itself parses it, within a time, memory and result size limit."""
        deadline = deadline_after(timeout_s)
        engine = self._reader(timeout_s, max_bytes)
        source = self._reader_rows(engine, sql, params, timeout_s, limit, max_bytes)
        return QueryRows(source, limit, timeout_s, deadline)

    def _reader_rows(
        self, engine: Engine, sql: str, params: Sequence[Any], timeout_s: float, limit: int, max_bytes: int
    ) -> Generator[Sequence[Any], None, None]:
        text = bind(sql, params).strip().rstrip(";")
        try:
            # One statement, as the engine parses it (its comments gone): the embedded engine
            # would otherwise run several.
            ((one,),) = engine.rows(bind("SELECT formatQuerySingleLine(%s)", [text]))[1]
            names, rows = self._stream(
                engine, f"SELECT * FROM ({one}) LIMIT {int(limit) + 1}", timeout_s, max_bytes
            )
            yield names
            try:
                for row in rows:
                    yield tuple(plain(v) for v in row)
            finally:
                rows.close()  # the rest not read
        except EngineError as exc:
            self._reader_failed()
            raise ReadOnlyError(_refusal(str(exc), timeout_s, max_bytes)) from None

    def _stream(self, engine: Any, sql: str, timeout_s: float, max_bytes: int) -> tuple[list[str], Any]:
        return engine.stream(sql, reader.limits(timeout_s, max_bytes))

    def _reader_failed(self) -> None:
        """After a refusal: nothing to do on a server (each query is a request of its own)."""

    def _reader(self, timeout_s: float, max_bytes: int) -> Engine:
        if self._reader_engine is None:
            url = self._reader_url
            if url is None:
                login = self.setting(reader.LOGIN_SETTING)
                if not isinstance(login, dict):
                    raise ReadOnlyError(self.reader_setup() or "no reader")
                url = reader.url_as(self.url, login)
            try:
                self._reader_engine = reader.server_reader(url)
            except EngineError as exc:
                raise ReadOnlyError(str(exc)) from None
        return self._reader_engine

    def reader_setup(self) -> str | None:
        if self._reader_url is not None or self.setting(reader.LOGIN_SETTING) is not None:
            return None
        _, rows = self.engine.rows("SELECT currentDatabase()")
        return reader.missing(str(rows[0][0]))

    def internal_query(
        self, sql: str, params: Sequence[Any] = (), *, timeout_s: float = 10.0, limit: int = 10_000
    ) -> QueryResult:
        """llmlog's own SQL, on the writer's engine with `readonly = 1` and a time limit."""
        text = bind(sql, params).strip().rstrip(";")
        settings = {"readonly": 1, "max_execution_time": max(1, round(timeout_s)), **READ_SETTINGS}
        try:
            self.engine.rows(bind("SELECT formatQuerySingleLine(%s)", [text]))
            names, rows = self.engine.rows(f"SELECT * FROM ({text}) LIMIT {int(limit) + 1}", settings)
        except EngineError as exc:
            raise ReadOnlyError(_refusal(str(exc), timeout_s, 0)) from None
        return QueryResult(names, [tuple(plain(v) for v in r) for r in rows[:limit]], len(rows) > limit)

    def size_bytes(self) -> int:
        rows = self._select(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase()"
        )
        return int(rows[0][0] or 0)

    # -------------------------------------------------------------- changing and deleting
    # Mutations, waited for (mutations_sync): the parts holding the rows are rewritten
    # without them, so erased text is gone from the parts in use when the call returns.

    def _mutate(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.engine.command(bind(sql, params) + " SETTINGS mutations_sync = 1")

    def update_costs(self, costs: Iterable[tuple[str, float | None, str | None]]) -> int:
        """New costs for stored calls (a repricing), and the days of the rollups they fall on
        summed again from the calls: a materialized view sees inserts only."""
        costs = list(costs)
        if not costs:
            return 0
        ids = [c[0] for c in costs]
        held = self.existing_ids(ids)
        self._mutate(
            "ALTER TABLE call_data UPDATE cost_usd = transform(id, %s, %s, cost_usd),"
            " rate_card = transform(id, %s, %s, rate_card) WHERE id IN %s",
            [ids, [c[1] for c in costs], ids, [c[2] for c in costs], ids],
        )
        days = [
            r[0]
            for r in self._select("SELECT DISTINCT toDate(timestamp) FROM call_data WHERE id IN %s", [ids])
        ]
        self._recount(days)
        return len(held)

    def _recount(self, days: Sequence[date]) -> None:
        """The rollups of these days summed again from the calls: a materialized view sees
        inserts only, not what a mutation changed or deleted."""
        if not days:
            return
        self._mutate("ALTER TABLE people_parts DELETE WHERE day IN %s", [list(days)])
        self.engine.command(
            bind(
                f"INSERT INTO people_parts SELECT {PEOPLE_SELECT} FROM call_data AS c"
                " WHERE toDate(c.timestamp) IN %s AND (c.user_id IS NOT NULL OR c.session_id IS NOT NULL)"
                " GROUP BY day, user_id, session_id",
                [list(days)],
            )
        )
        self._mutate("ALTER TABLE daily_parts DELETE WHERE day IN %s", [list(days)])
        self.engine.command(
            bind(
                f"INSERT INTO daily_parts SELECT {DAILY_SELECT} FROM call_data AS c"
                " WHERE toDate(c.timestamp) IN %s"
                f" GROUP BY {DAILY_GROUP}",
                [list(days)],
            )
        )

    def erase(self, *, user_id: str | None = None, session_id: str | None = None) -> Erased:
        column, value = erase_target(user_id, session_id)
        n = int(self._select(f"SELECT count() FROM call_data WHERE {column} = %s", [value])[0][0])
        people = int(self._select(f"SELECT count() FROM people_daily WHERE {column} = %s", [value])[0][0])
        # The log events waiting in their traces or naming them, and the spans of their calls,
        # of their traces or naming them (see `Store.erase`): first, while the calls that
        # lead to their traces are still there. A trace's figures are summed as read: what
        # is left of it is what they say.
        in_traces = (
            f"trace_id IN (SELECT trace_id FROM call_data WHERE {column} = %s AND trace_id IS NOT NULL)"
        )
        named, named_params = naming_sql(column, value, ("attributes", "body"))
        waiting, params = f"{in_traces} OR {named}", [value, *named_params]
        events = int(self._select(f"SELECT count() FROM span_events WHERE {waiting}", params)[0][0])
        if events:
            self._mutate(f"ALTER TABLE span_events DELETE WHERE {waiting}", params)
        named, named_params = naming_sql(column, value, ("attributes", "events"))
        spans, span_events = self._delete_spans(
            f"call_id IN (SELECT id FROM call_data WHERE {column} = %s) OR {in_traces} OR {named}",
            [value, value, *named_params],
        )
        self._mutate(f"ALTER TABLE call_data DELETE WHERE {column} = %s", [value])
        self._mutate(f"ALTER TABLE people_parts DELETE WHERE {column} = %s", [value])
        # Content is inline: it went with them.
        alerts = self.forget_alerts_naming(value)
        return Erased(calls=n, spans=spans, rollup_rows=people, events=events + span_events, alerts=alerts)

    def old_calls(self, before: date) -> list[tuple[date, str | None, int]]:
        rows = self._select(
            "SELECT toDate(timestamp) AS day, feature, count() FROM call_data WHERE timestamp < %s"
            " GROUP BY day, feature ORDER BY day, feature",
            [datetime(before.year, before.month, before.day, tzinfo=UTC)],
        )
        return [(_day(d), f, int(n)) for d, f, n in rows]

    def purge(self, day: date, features: Sequence[str | None]) -> Erased:
        named = [f for f in features if f is not None]
        which = "(feature IN %s OR (%s AND feature IS NULL))"
        where = f"toDate(timestamp) = %s AND {which}"
        params = [day, named or [""], None in features]
        n = int(self._select(f"SELECT count() FROM call_data WHERE {where}", params)[0][0])
        spans = 0
        if n:
            spans = sum(self._delete_spans(f"call_id IN (SELECT id FROM call_data WHERE {where})", params))
            self._mutate(f"ALTER TABLE call_data DELETE WHERE {where}", params)
        return Erased(calls=n, spans=spans)

    def collect_content(self) -> int:
        return 0  # content is inline: nothing is shared to collect

    def reclaim(self, thorough: bool = False) -> None:
        # A mutation has already rewritten the parts; merging them drops months now empty.
        self.engine.command("OPTIMIZE TABLE call_data FINAL")
        if thorough:  # and the versions of spans replaced, the events sent twice, merged away
            self.engine.command("OPTIMIZE TABLE spans FINAL")
            self.engine.command("OPTIMIZE TABLE span_events FINAL")

    def set_setting(self, key: str, value: Any) -> None:
        """A setting; the retention policy also becomes the table's TTL, so the engine drops
        calls past their window in its merges, between retention runs too."""
        self._store_setting(key, value)
        if key == "retention":
            self.engine.command(f"ALTER TABLE call_data MODIFY TTL {ttl(value)}")

    def _store_setting(self, key: str, value: Any) -> None:
        version = int(datetime.now(UTC).timestamp() * 1e6)
        self.engine.insert("settings", ["key", "value", "version"], [[key, json.dumps(value), version]])

    def update_usage(self, call: Call) -> None:
        """The call's usage, and the difference it makes added to its rows of `daily` and
        `people_daily` as rows of their own (the engine sums them as it merges; a column not
        given is nothing): not summed again from the calls, which would lose the calls
        retention deleted, that the rollups keep counting."""
        tokens = USAGE[:4]
        was = self._select(
            f"SELECT toDate(timestamp), {', '.join(GROUP)}, user_id, session_id, {', '.join(tokens)},"
            " cost_usd, timestamp FROM call_data WHERE id = %s LIMIT 1",
            [call.id],
        )
        sets = ", ".join(f"{c} = %s" for c in USAGE)
        self._mutate(
            f"ALTER TABLE call_data UPDATE {sets} WHERE id = %s",
            [*(getattr(call, c) for c in USAGE), call.id],
        )
        if not was:
            return
        day, *group = was[0][:5]
        day = day.isoformat()  # as JSONEachRow takes a Date
        user, session = was[0][5:7]
        old = dict(zip((*tokens, "cost_usd"), was[0][7:12], strict=True))
        moved = {c: (getattr(call, c) or 0) - (old[c] or 0) for c in (*tokens, "cost_usd")}
        moved["priced_calls"] = (call.cost_usd is not None) - (old["cost_usd"] is not None)
        daily = {
            **moved,
            "output_calls": (call.output_tokens is not None) - (old["output_tokens"] is not None),
        }
        self.engine.insert("daily_parts", ["day", *GROUP, *daily], [[day, *group, *daily.values()]])
        if user is not None or session is not None:
            people = {c: moved[c] for c in ("input_tokens", "output_tokens", "cost_usd", "priced_calls")}
            # Its time as the row's first and last: within them already (a column not given
            # would be the epoch, the least of any).
            people["first"] = people["last"] = was[0][12]
            self.engine.insert("people_parts", ["day", "user_id", "session_id", *people],
                               [[day, user, session, *people.values()]])  # fmt: skip

    def _attributed(self, call_id: str, was: Sequence[Any]) -> None:
        """A stored call given a user or a session (OTLP: a later span): its share moves out of
        the `people_daily` row it was in, if any, into its new one, and its group's distinct
        users and sessions take in the new ones, as rows of their own that the engine sums
        and merges (not summed again from the calls, which would lose those retention
        deleted). `was`: its user, session, error, tokens, cost and time before."""
        user, session, failed, tokens_in, tokens_out, cost, at = was
        self.engine.command(
            bind(
                f"INSERT INTO people_parts SELECT {PEOPLE_SELECT} FROM call_data AS c WHERE c.id = %s"
                " GROUP BY day, user_id, session_id",
                [call_id],
            )
        )
        self.engine.command(
            bind(
                f"INSERT INTO daily_parts (day, {', '.join(GROUP)}, users, sessions)"
                f" SELECT toDate(timestamp) AS day, {', '.join(GROUP)}, uniqExactState(user_id),"
                f" uniqExactState(session_id) FROM call_data WHERE id = %s GROUP BY day, {', '.join(GROUP)}",
                [call_id],
            )
        )
        if user is None and session is None:
            return  # it was in no row
        columns = ("day", "user_id", "session_id", "calls", "errors", "input_tokens", "output_tokens",
                   "cost_usd", "priced_calls", "first", "last")  # fmt: skip
        row = [at.date().isoformat(), user, session, -1, -int(failed), -(tokens_in or 0), -(tokens_out or 0),
               -(cost or 0.0), -int(cost is not None), at, at]  # fmt: skip
        self.engine.insert("people_parts", columns, [row])

    def update_content(self, call: Call) -> None:
        """A stored call's text changed (a redaction, a sealing, a span's content joined)."""
        (call,) = self._sealed([call])
        (call,) = self._enforce([call], self._settings_now())
        row = dict(zip(COLUMNS_READ, _row(call), strict=True))
        changed = ("system_prompt", "messages", "tools", "params", "response", "tool_calls", "stop_reason",
                   "error", "metadata")  # fmt: skip
        # Whom it was for, given later (OTLP); not its feature, which leads the table's sorting
        # key, and a key column cannot be updated.
        given = [c for c in ATTRIBUTION if c != "feature"]
        sets = ", ".join([*(f"{c} = %s" for c in changed), *(f"{c} = ifNull({c}, %s)" for c in given)])
        was = self._select(
            f"SELECT {MOVES_SQL}, toDate(timestamp), user_id, session_id, error IS NOT NULL, input_tokens,"
            " output_tokens, cost_usd, timestamp FROM call_data WHERE id = %s LIMIT 1",
            [call.id],
        )
        # The vector of the text replaced goes with it (see `Store.set_vectors`).
        self._mutate(
            f"ALTER TABLE call_data UPDATE {sets}, embedding = NULL,"
            " prompt_template_version = ifNull(prompt_template_version, %s) WHERE id = %s",
            [*(row[c] for c in (*changed, *given)), row["prompt_template_version"], call.id],
        )
        if not was:
            return
        moved, day = was[0][:5], was[0][5]
        if moves((*moved[:2], False, False, False), call):
            self._recount([day])  # its group in `daily`, or what it counts there, changed
        elif moves((False, False, False, *moved[3:5]), call):
            self._attributed(
                call.id, was[0][6:]
            )  # its group in the rollups, or what it counts there, changed
        self._embed([call])

    # -------------------------------------------------------------- regulated mode's audit log

    def audit(self, who: str, action: str, call_ids: Sequence[str]) -> None:
        row = [datetime.now(UTC), who, action, json.dumps(list(call_ids))]
        self.engine.insert("audit", ["time", "who", "action", "call_ids"], [row])

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._select(
            f"SELECT time, who, action, call_ids FROM audit ORDER BY time DESC LIMIT {int(limit)}"
        )
        return [AuditEntry(_when(t), who, action, json.loads(ids)) for t, who, action, ids in rows]

    # -------------------------------------------------------------- search and vectors

    def _search_ids(self, q: Query, f: CallFilter, limit: int) -> list[tuple[str, float]]:
        """Words found in the text of the call's last message, response and error
        (`search_text`): a word as a word's start (the other stores stem: "refunds" finds
        "refund"), a phrase as written, case aside; scored by how often the words occur,
        among the newest matches. Each word is first looked for as a plain substring, which
        the engine checks far faster than the pattern, and which the pattern implies."""
        found, params = [], []
        for group in q.groups:
            either = ["(position(search_text, %s) > 0 AND match(search_text, %s))" for _ in group]
            found.append("(" + " OR ".join(either) + ")")
            params += [v for t in group for v in (_literal(t.words), _pattern(t.words))]
        for term in q.excluded:
            found.append("NOT match(search_text, %s)")
            params.append(_pattern(term.words))
        words = [w for g in q.groups for t in g for w in t.words]
        score = " + ".join("countMatches(search_text, %s)" for _ in words)
        where, wparams = self._where(f, found, params)
        rows = self._select(
            f"SELECT id, {score} AS score FROM (SELECT id, timestamp, search_text FROM call_data {where}"
            f" ORDER BY timestamp DESC LIMIT {search.RANKED})"
            f" ORDER BY score DESC, timestamp DESC LIMIT {int(limit)}",
            [*(_pattern([w]) for w in words), *wparams],
        )
        return [(i, float(s)) for i, s in rows]

    def set_vectors(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        for i in range(0, len(pairs), 1000):
            chunk = pairs[i : i + 1000]
            ids, hexes = [p[0] for p in chunk], [p[1].hex() for p in chunk]
            self._mutate(
                "ALTER TABLE call_data UPDATE embedding = transform(id, %s, %s, embedding)"
                " WHERE id IN %s AND embedding IS NULL",
                [ids, hexes, ids],
            )

    def _without_vectors(self) -> list[str]:
        return [r[0] for r in self._select("SELECT id FROM call_data WHERE embedding IS NULL")]

    def _vector_of(self, call_id: str) -> bytes | None:
        rows = self._select(
            "SELECT embedding FROM call_data WHERE id = %s AND embedding IS NOT NULL", [call_id]
        )
        return bytes.fromhex(rows[0][0]) if rows else None

    def _vectors(self, f: CallFilter, limit: int) -> list[tuple[str, bytes]]:
        where, params = self._where(f, ["embedding IS NOT NULL"])
        sql = f"SELECT id, embedding FROM call_data {where} ORDER BY timestamp DESC LIMIT {int(limit)}"
        return [(i, bytes.fromhex(v)) for i, v in self._select(sql, params)]

    # -------------------------------------------------------------- accounts and tokens
    # Rows are replaced by newer versions (ReplacingMergeTree), so each change is an insert.

    def _version_row(self, table: str, values: dict[str, Any], deleted: bool = False) -> None:
        version = int(datetime.now(UTC).timestamp() * 1e6)
        row = {**values, "version": version, "deleted": int(deleted)}
        self.engine.insert(table, list(row), [list(row.values())])

    def _live(
        self, table: str, columns: str, where: str = "", params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        clause = f"WHERE deleted = 0 {'AND ' + where if where else ''}"
        return self._select(f"SELECT {columns} FROM {table} FINAL {clause} ORDER BY name", params)

    def add_account(self, name: str, role: str, password_hash: str) -> None:
        if self.account(name) is not None:
            raise ValueError(f"there is an account {name!r} already")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self._version_row(
            "accounts", {"name": name, "role": role, "password": password_hash, "created": created}
        )
        self.set_setting("accounts_required", True)

    def set_account(self, name: str, *, role: str | None = None, password_hash: str | None = None) -> bool:
        found = self.account(name)
        if found is None:
            return False
        values = {"name": name, "role": role or found.role, "password": password_hash or found.password_hash}
        self._version_row("accounts", {**values, "created": found.created})
        self.end_web_sessions(name)
        return True

    def account(self, name: str) -> Account | None:
        rows = self._live("accounts", "name, role, password, created", "name = %s", [name])
        return Account(*rows[0]) if rows else None

    def accounts(self) -> list[Account]:
        return [Account(*r) for r in self._live("accounts", "name, role, password, created")]

    def remove_account(self, name: str) -> bool:
        self.end_web_sessions(name)
        found = self.account(name)
        if found is not None:
            values = {"name": name, "role": found.role, "password": "", "created": found.created}
            self._version_row("accounts", values, deleted=True)
        return found is not None

    def add_token(self, name: str, scope: str, token_hash: bytes) -> None:
        if self._live("api_tokens", "name", "name = %s", [name]):
            raise ValueError(f"there is a token {name!r} already")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self._version_row(
            "api_tokens", {"name": name, "hash": token_hash.hex(), "scope": scope, "created": created}
        )
        if scope == "ingest":
            self.set_setting("ingest_tokens_required", True)

    def token(self, token_hash: bytes) -> ApiToken | None:
        rows = self._live("api_tokens", "name, scope, created", "hash = %s", [token_hash.hex()])
        return ApiToken(*rows[0]) if rows else None

    def tokens(self) -> list[ApiToken]:
        return [ApiToken(*r) for r in self._live("api_tokens", "name, scope, created")]

    def remove_token(self, name: str) -> bool:
        rows = self._live("api_tokens", "name, hash, scope, created", "name = %s", [name])
        for n, h, scope, created in rows:
            self._version_row(
                "api_tokens", {"name": n, "hash": h, "scope": scope, "created": created}, deleted=True
            )
        return bool(rows)

    def add_web_session(self, session_hash: bytes, name: str, expires: int) -> None:
        # Expired rows go in the engine's merges (the table's TTL); reads skip them before.
        self._version_row("web_sessions", {"hash": session_hash.hex(), "name": name, "expires": expires})

    def web_session(self, session_hash: bytes) -> str | None:
        rows = self._live(
            "web_sessions", "name", "hash = %s AND expires > %s", [session_hash.hex(), int(time.time())]
        )
        return str(rows[0][0]) if rows else None

    def _end_sessions(self, where: str, params: Sequence[Any]) -> None:
        for h, n, expires in self._live("web_sessions", "hash, name, expires", where, params):
            self._version_row("web_sessions", {"hash": h, "name": n, "expires": expires}, deleted=True)

    def end_web_session(self, session_hash: bytes) -> None:
        self._end_sessions("hash = %s", [session_hash.hex()])

    def end_web_sessions(self, name: str) -> None:
        self._end_sessions("name = %s", [name])


def _refusal(message: str, timeout_s: float, max_bytes: int) -> str:
    """What the engine said, in the words the other stores use."""
    if "READONLY" in message or "readonly" in message:
        return "only reading queries are allowed (and no settings, table functions or files)"
    if "ACCESS_DENIED" in message:
        return f"not readable here ({message.splitlines()[0]})"
    if "TIMEOUT_EXCEEDED" in message:
        return f"query took longer than the {timeout_s:g} s limit"
    if "TOO_MANY_ROWS_OR_BYTES" in message:
        return too_large(max_bytes)
    if "MEMORY_LIMIT_EXCEEDED" in message:
        return f"the query needed more than the {reader.QUERY_MEMORY_BYTES // 2**20} MB of memory it may use"
    return message.split("\n")[0]


# The calls' columns, as the table holds them.
COLUMNS_READ = list(COLUMNS)
# What a list shows of a call (`brief`): no system prompt, tools or params, and of the
# messages only the last.
_LAST = "JSONExtractArrayRaw(ifNull(messages, '[]'))"
_BRIEF = {
    "system_prompt": "NULL AS system_prompt",
    "tools": "NULL AS tools",
    "params": "NULL AS params",
    "messages": (
        f"if(messages IS NULL, NULL, if(empty({_LAST}), '[]', concat('[', {_LAST}[-1], ']'))) AS messages"
    ),
}


def _row(c: Call) -> list[Any]:
    out = []
    for name in COLUMNS_READ:
        value = getattr(c, name)
        if name in INT_COLUMNS and value is not None and not -(2**63) <= value < 2**63:
            raise ValueError(f"call {c.id}: {name} {value} does not fit in 64 bits")
        if name == "timestamp" and not 1900 <= value.astimezone(UTC).year <= 2299:
            raise ValueError(
                f"call {c.id}: ClickHouse keeps times from 1900 to 2299, not {value.isoformat()}"
            )
        if name in JSON_COLUMNS and value is not None:
            value = json_text(value)
        out.append(value)
    return out


def _literal(words: Sequence[str]) -> str:
    """What any text a term's pattern matches holds verbatim: its first word's stem."""
    first = words[0]
    return first if len(first) < 5 else first[:-2]


def _pattern(words: Sequence[str]) -> str:
    """A search term as an re2 pattern on lower-cased text: the words in order, each from a
    word's start; a longer word may end otherwise ("refunds" finds "refund")."""

    def word(w: str) -> str:
        return re.escape(w) + r"\b" if len(w) < 5 else re.escape(w[:-2]) + r"\w*"

    return r"\b" + r"\W+".join(word(w) for w in words)


def ttl(policy: Any) -> str:
    """The retention policy (`retention_policy.Policy`'s JSON) as TTL rules: a call goes the
    day after its feature's window ends. Feature names are quoted by the binding."""
    p = retention_policy.Policy.from_json(policy)

    def after(days: int) -> str:
        return f"toDate(timestamp) + toIntervalDay({days + 1})"

    rules = [bind(f"{after(d)} DELETE WHERE feature = %s", [f]) for f, d in p.features.items()]
    rest = bind(" WHERE feature IS NULL OR feature NOT IN %s", [list(p.features)]) if p.features else ""
    return ", ".join([*rules, f"{after(p.days)} DELETE{rest}"])


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _to_call(names: Sequence[str], row: Sequence[Any]) -> Call:
    values: dict[str, Any] = {}
    for name, value in zip(names, row, strict=True):
        if name in JSON_COLUMNS and value is not None:
            value = json.loads(value)
        values[name] = value
    values["timestamp"] = _when(values["timestamp"])
    return Call(**values)
