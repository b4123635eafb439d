"""What every store offers, and the filter the CLI (and later the UI) passes to it."""

from __future__ import annotations

import abc
import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llmlog.core.config import cache_bytes
from llmlog.core.encryption import Keyring
from llmlog.core.filters import CallFilter
from llmlog.core.logs import recording_log
from llmlog.core.record import Call, format_timestamp, parse_timestamp
from llmlog.store import search, vectors
from llmlog.store.alerts import Alerts, RowAlerts
from llmlog.store.content import ContentIds
from llmlog.store.dialect import Dialect
from llmlog.store.experiments import Experiments, RowExperiments
from llmlog.store.readonly import RESULT_MAX_BYTES, QueryResult, QueryRows, ReadOnlyError, held
from llmlog.store.regulated import Regulated
from llmlog.store.search import Hit, Query
from llmlog.store.traces import Traces

log = recording_log()  # never raises: a handler of the app's cannot stop recording


def utc_days(since: datetime, until: datetime | None = None) -> tuple[date, date]:
    """The first and last UTC day of a `cost_by_day` window (naive times mean UTC)."""

    def day(t: datetime) -> date:
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).date()

    return day(since), day(until if until is not None else datetime.now(UTC))


def plain(value: Any) -> Any:
    """A query result value as SQLite would give it (times as our timestamp text, dates as
    ISO text, numbers as int or float), so that `Store.query` reads the same on every store."""
    if isinstance(value, datetime):
        return format_timestamp(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value() and value.as_tuple().exponent >= 0:  # type: ignore[operator]
            return int(value)
        return float(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def unicode_text(text: str) -> str:
    """`text` as a store can keep it: one that is not Unicode (a lone surrogate, read from bad
    UTF-16) with that replaced by U+FFFD, as every engine keeps such text."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)  # (an encoder's "replace" writes "?")
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


def like_pattern(text: str) -> str:
    """`text` as a LIKE pattern that matches it anywhere, its own % and _ taken literally
    (with ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass
class Erased:
    """What `Store.erase` removed."""

    calls: int = 0
    contents: int = 0  # pieces of content (prompts, messages, tool lists) no other call used
    spans: int = 0
    rollup_rows: int = 0  # `people_daily` rows
    # Log events of their traces, or naming them, that had not joined a call; erasure's also
    # counts those of the spans it deleted.
    events: int = 0
    alerts: int = 0  # findings' states and lines of the alerts' history naming them


@dataclass
class Account:
    name: str
    role: str  # "viewer", "debugger" or "admin"
    password_hash: str = field(repr=False)
    created: str


@dataclass
class ApiToken:
    name: str
    scope: str  # "ingest" or "read"
    created: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class AuditEntry:
    time: datetime
    who: str
    action: str  # "read" (decrypted calls shown or exported), "rotate", …
    call_ids: list[str]


def erase_target(user_id: str | None, session_id: str | None) -> tuple[str, str]:
    """The column and value `erase` deletes by: exactly one of the two."""
    if (user_id is None) == (session_id is None):
        raise ValueError("erase one user or one session: give exactly one of user_id and session_id")
    return ("user_id", user_id) if user_id is not None else ("session_id", session_id)  # type: ignore[return-value]


# The attributes that name a call's user or session, in spans and log events (OTLP).
NAMING_ATTRIBUTES = {
    "user_id": ("user.id", "enduser.id"),
    "session_id": ("session.id", "gen_ai.conversation.id"),
}


def day_and_features(day: date, features: Sequence[str | None], dialect: Dialect) -> tuple[str, list[Any]]:
    """A condition on `call_data` for one UTC day's calls of these features (None: none)."""
    bounds = [dialect.time_param(day), dialect.time_param(day + timedelta(days=1))]
    named = [f for f in features if f is not None]
    p = dialect.placeholder
    alternatives = ["feature IS NULL"] if None in features else []
    if named:
        alternatives.append(f"feature IN ({', '.join([p] * len(named))})")
    which = " OR ".join(alternatives) or "false"
    return f"timestamp >= {p} AND timestamp < {p} AND ({which})", [*bounds, *named]


# How many of the latest matching calls a facet counts when the rollup cannot answer.
FACET_WINDOW = 10_000


@dataclass
class Facet:
    """The most frequent values of a column among the calls a filter selects, with counts."""

    values: list[tuple[Any, int]]
    # Set when only the latest this-many matching calls were counted (more match): counting
    # them all would read every one.
    latest: int | None = None
    too_slow: bool = False  # the count took longer than its time limit: no values


@dataclass
class SessionSummary:
    session_id: str
    user_id: str | None  # the first, should a session have several
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None when none of its calls has a cost
    errors: int
    priced_calls: int
    first: datetime
    last: datetime


@dataclass
class UserSummary:
    user_id: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    errors: int
    priced_calls: int
    sessions: int
    first: datetime
    last: datetime

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


def _numbers(values: Sequence[Any]) -> tuple[int, int, int, float | None, int, int]:
    """calls, input, output, cost, errors, priced: counts as ints, cost None when unpriced."""
    calls, inp, out, cost, errors, priced = values
    cost = float(cost) if priced else None
    return (int(calls), int(inp or 0), int(out or 0), cost, int(errors), int(priced))


def _daily_only(f: CallFilter) -> bool:
    """Whether `f` names only columns the `daily` rollup groups by (and error status)."""
    others = [name for name in ("user_id", "session_id", "since", "until", "tag", "text") if getattr(f, name)]
    return not others and not f.ids and not f.metadata


def _people_only(f: CallFilter) -> bool:
    """Whether `f` names only what the `people_daily` rollup knows: user, session and time."""
    others = ("feature", "model", "prompt_template_version", "provider", "tag", "text")
    return not any(getattr(f, name) for name in others) and f.errors is None and not f.ids and not f.metadata


def _utc(t: datetime) -> datetime:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def _midnight(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _when(value: Any) -> datetime:
    return value if isinstance(value, datetime) else parse_timestamp(value)


class Store(Regulated, Traces, Alerts, Experiments, abc.ABC):
    """A place calls are kept (and traces: `Traces`; the state of alerts: `Alerts`; experiments:
    `Experiments`).
    Implementations: SQLite (embedded default), PostgreSQL, ClickHouse."""

    if TYPE_CHECKING:
        # Read-only to its users: SQLite and ClickHouse make it from what they hold,
        # PostgreSQL keeps the one it was given.
        @property
        def url(self) -> str: ...

    # What the engine's SQL says differently, for code that writes its own read-only SQL for
    # `query` (reports, the dashboard).
    dialect: Dialect
    # What `insert` raises for a call that can never be stored (retrying will not help), as
    # opposed to the store being down. RecursionError: JSON nested deeper than the serializer
    # goes (not a ValueError, and a batch retried on it would block every call behind it).
    data_errors: tuple[type[BaseException], ...] = (ValueError, TypeError, OverflowError, RecursionError)
    # Regulated mode: the keys that open what the store holds sealed, set by whoever opens it
    # to read (the CLI, the web app), and who is reading, for the audit log. Without keys a
    # sealed call reads sealed.
    keyring: Keyring | None = None
    reader: str = "unknown"

    # Set on open from the store's settings: calls are embedded as they are stored (`llmlog
    # similar --enable`); what regulated mode asks is `Regulated`'s.
    vectors: bool = False
    _vectors_missing: bool = False  # said once: the store asks for vectors, the extra is absent

    def _read_settings(self) -> None:
        """On open: what the store's settings ask of every process using it."""
        self.sealing_policy()
        asked = self.setting("vectors")
        self.vectors = isinstance(asked, dict) and bool(asked.get("enabled"))

    # The content ids this store has seen (SQLite, PostgreSQL), and the content epoch they
    # hold for: a deletion of content (erasure, retention) moves the epoch on. What they may
    # hold: None, the whole of their share of LLMLOG_CACHE_MB (`share_content_ids`).
    _content: ContentIds
    _epoch: int = 0
    _content_bytes: int | None = None

    def share_content_ids(self, shares: int) -> None:
        """Keep a `shares`th of what the content ids may hold: a writer that stores through
        several stores at once (`WRITERS`) gives each a share, so that together they hold no
        more than one would."""
        self._content_bytes = cache_bytes("named") // shares
        self._content = ContentIds(self._content_bytes)

    def _content_changed(self, settings: Mapping[str, Any]) -> bool:
        """In a writing transaction, given the settings read in it: whether content was
        deleted since this store last looked. Its cached content ids may then name rows that
        are gone, or that a new piece has taken since, so it forgets them."""
        epoch = int(settings.get("content_epoch") or 0)
        if epoch == self._epoch:
            return False
        self._epoch, self._content = epoch, ContentIds(self._content_bytes)
        return True

    def _reveal(self, calls: list[Call]) -> list[Call]:
        """Calls as read: with keys, opened, and the reading written to the audit log."""
        if self.keyring is None or not calls:
            return calls
        self.audit(self.reader, "read", [c.id for c in calls])
        return [self.keyring.open_call(c) for c in calls]

    # ---------------------------------------------- accounts, web sessions and API tokens
    # (`llmlog.operations.accounts`, `llmlog.web.auth`): an engine that updates rows in place
    # takes them from `RowTables`; ClickHouse keeps versions of rows instead.

    @abc.abstractmethod
    def add_account(self, name: str, role: str, password_hash: str) -> None:
        """A new account; ValueError if the name is taken. From then on the UI asks everyone
        to sign in (the setting `accounts_required`), even once the last one is removed."""

    @abc.abstractmethod
    def set_account(self, name: str, *, role: str | None = None, password_hash: str | None = None) -> bool:
        """A new role or password; whoever was signed in as it signs in again. False when
        there is no such account."""

    @abc.abstractmethod
    def account(self, name: str) -> Account | None: ...

    @abc.abstractmethod
    def accounts(self) -> list[Account]: ...

    @abc.abstractmethod
    def remove_account(self, name: str) -> bool:
        """The account gone and its sessions ended; False when there was none."""

    @abc.abstractmethod
    def add_web_session(self, session_hash: bytes, name: str, expires: int) -> None:
        """A session signed in as `name` until `expires` (Unix time), known by the hash of its
        cookie."""

    @abc.abstractmethod
    def web_session(self, session_hash: bytes) -> str | None:
        """The account a session is signed in as, unless it has ended or expired."""

    @abc.abstractmethod
    def end_web_session(self, session_hash: bytes) -> None: ...

    @abc.abstractmethod
    def end_web_sessions(self, name: str) -> None:
        """End every session of an account."""

    @abc.abstractmethod
    def add_token(self, name: str, scope: str, token_hash: bytes) -> None:
        """A new API token, known by its hash; ValueError if the name is taken. An ingest
        token makes the collector take calls with a token only (`ingest_tokens_required`)."""

    @abc.abstractmethod
    def token(self, token_hash: bytes) -> ApiToken | None: ...

    @abc.abstractmethod
    def tokens(self) -> list[ApiToken]: ...

    @abc.abstractmethod
    def remove_token(self, name: str) -> bool: ...

    @abc.abstractmethod
    def audit(self, who: str, action: str, call_ids: Sequence[str]) -> None:
        """Write to the audit log: who did what, now, to which calls."""

    @abc.abstractmethod
    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The latest entries of the audit log, newest first."""

    @abc.abstractmethod
    def insert(self, calls: Sequence[Call]) -> int:
        """Store a batch atomically; ids already stored are skipped. Returns how many were new."""

    # How `recent` orders what it gives: newest first, with whatever tie-break the engine's
    # index serves without a sort.
    recent_order = "timestamp DESC"

    @abc.abstractmethod
    def _calls(
        self, where: str, params: Sequence[Any], order: str, limit: int, brief: bool = False
    ) -> list[Call]:
        """The calls `where` picks from `call_data` (in `order`, `limit` at most), whole or
        `brief`, opened for the reader where they are sealed."""

    def get(self, call_id: str) -> Call | None:
        """One call, whole, by its id or a unique start of it, as with git hashes
        (LookupError when several calls start so)."""
        p = self.dialect.placeholder
        found = self._calls(f"WHERE id = {p}", [call_id], "timestamp", 1)
        if found or not call_id:
            return found[0] if found else None
        if self.dialect.id_starts_with:
            starts, params = self.dialect.id_starts_with, [call_id]
        else:
            starts, params = f"id >= {p} AND id < {p}", [call_id, call_id + "\U0010ffff"]
        # DISTINCT: an engine that merges repeated rows late (ClickHouse) may hold an id
        # twice. Its own time limit: a prefix is matched against every id on some engines.
        rows = self.internal_query(
            f"SELECT DISTINCT id FROM call_data WHERE {starts} LIMIT 2", params, timeout_s=60
        ).rows
        if len(rows) > 1:
            raise LookupError(f"id prefix {call_id!r} is ambiguous: more than one call starts with it")
        return self.get(rows[0][0]) if rows and len(rows[0][0]) > len(call_id) else None

    def recent(self, f: CallFilter, limit: int = 100, *, brief: bool = False) -> list[Call]:
        """The newest calls `f` selects, newest first. `brief`: what a list of calls shows,
        without assembling each whole: no system prompt, tools or params, and of the messages
        only the last (what the caller said last); a Responses reply without the instructions
        and tools it echoes."""
        where, params = self._where(f)
        return self._calls(where, params, self.recent_order, limit, brief)

    @abc.abstractmethod
    def sample(self, f: CallFilter, n: int = 20, *, brief: bool = False) -> list[Call]:
        """`n` calls picked at random among those `f` selects, oldest first; `brief` as in
        `recent`."""

    def search(self, text: str, f: CallFilter, limit: int = 50) -> list[Hit]:
        """The calls `f` selects whose text matches the search box's `text` (see
        `llmlog.store.search`), best first, each brief (as `recent` gives it) with a snippet
        of where it matched. Nothing to find (no words, or only -excluded ones): none."""
        q = search.parse(text)
        if q.empty:
            return []
        ranked = self._search_ids(q, f, limit)
        found = self._brief_by_id([i for i, _ in ranked])
        return [
            Hit(c, score, search.snippet(search.document(c), q))
            for i, score in ranked
            if (c := found.get(i)) is not None
        ]

    def _brief_by_id(self, ids: list[str]) -> dict[str, Call]:
        """Calls by id, brief (as `recent` gives them), for results ranked elsewhere."""
        return {c.id: c for c in self.recent(CallFilter(ids=ids), len(ids), brief=True)} if ids else {}

    @abc.abstractmethod
    def _search_ids(self, q: Query, f: CallFilter, limit: int) -> list[tuple[str, float]]:
        """The best `limit` matches' ids and scores (higher is better), best first."""

    # -------------------------------------------------------------- calls like this one

    def _embed(self, calls: Sequence[Call]) -> None:
        """After storing calls: their vectors, when the store asks for them. Without the
        extra, the calls stay without (`enable_vectors` fills them in later), said once."""
        if not self.vectors or not calls:
            return
        try:
            pairs = vectors.of_calls(list(calls))
        except vectors.Unavailable as exc:
            if not self._vectors_missing:
                self._vectors_missing = True
                log.warning("%s; calls are stored without vectors", exc)
            return
        self.set_vectors(pairs)

    def enable_vectors(self, on_batch: Callable[[int], None] | None = None) -> int:
        """From now on, every process storing calls here embeds them; and the calls already
        stored without a vector get one (run again, it carries on where it stopped). Returns
        how many calls it embedded."""
        vectors.model()  # Unavailable before anything changes
        self.set_setting("vectors", {"enabled": True})
        self.vectors = True
        done = 0
        missing = self._without_vectors()
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            pairs = vectors.of_calls(list(self._brief_by_id(chunk).values()))
            self.set_vectors(pairs)
            done += len(pairs)
            if on_batch is not None:
                on_batch(done)
        return done

    def disable_vectors(self) -> None:
        """No more vectors (those stored stay, and are still compared with)."""
        self.set_setting("vectors", {"enabled": False})
        self.vectors = False

    def similar(self, call_id: str, f: CallFilter, limit: int = 20) -> list[tuple[Call, float]]:
        """The calls `f` selects most like `call_id` (among the newest `vectors.SCAN`), brief,
        with their cosine similarity, best first. LookupError: no such call, or it has no
        text to compare (sealed, or empty)."""
        target = self._vector_of(call_id)
        if target is None:
            call = self.get(call_id)
            if call is None:
                raise LookupError(f"no call {call_id}")
            pairs = vectors.of_calls([call])
            if not pairs:
                raise LookupError(f"call {call_id} has no text to compare")
            target = pairs[0][1]
        candidates = [(i, v) for i, v in self._vectors(f, vectors.SCAN) if i != call_id]
        ranked = vectors.nearest(target, candidates, limit)
        found = self._brief_by_id([i for i, _ in ranked])
        return [(c, score) for i, score in ranked if (c := found.get(i)) is not None]

    @abc.abstractmethod
    def set_vectors(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        """Store (call id, vector) pairs, for calls without a vector only: a call's vector is
        of the text it was stored with, not of a record sent again under its id (which is
        not stored); `update_content` clears it with the text it replaces."""

    @abc.abstractmethod
    def _without_vectors(self) -> list[str]:
        """The ids of stored calls without a vector."""

    @abc.abstractmethod
    def _vector_of(self, call_id: str) -> bytes | None: ...

    @abc.abstractmethod
    def _vectors(self, f: CallFilter, limit: int) -> list[tuple[str, bytes]]:
        """The newest `limit` calls `f` selects that have a vector: (id, vector)."""

    @abc.abstractmethod
    def iter_calls(self, f: CallFilter, batch: int = 1000) -> Iterator[Call]: ...

    @abc.abstractmethod
    def count(self, f: CallFilter) -> int: ...

    @abc.abstractmethod
    def cost_by_day(
        self, since: datetime, until: datetime | None = None
    ) -> list[tuple[str, str | None, int, float | None]]:
        """(UTC day 'YYYY-MM-DD', model, calls, cost) per day and model, oldest day first,
        then by model (NULL first), over whole UTC days: from since's day through until's day
        (through today when None). Read from the `daily` rollup, not the calls; cost is None
        for a day and model none of whose calls has a cost."""

    @abc.abstractmethod
    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these call ids the store holds."""

    @abc.abstractmethod
    def update_costs(self, costs: Iterable[tuple[str, float | None, str | None]]) -> int: ...

    @abc.abstractmethod
    def update_usage(self, call: Call) -> None:
        """Give a stored call the usage `call` has (`llmlog.core.record.USAGE`), which it lacked when it
        was stored: its tokens came in a later span (`Intake.complete`). `daily`,
        `people_daily` and `traces` count the new figures, as they follow a new cost."""

    @abc.abstractmethod
    def update_content(self, call: Call) -> None:
        """Rewrite a stored call's content (system prompt, messages, tools, params, response,
        tool calls, stop reason, error, metadata) from `call`, which has its id, and give it
        `call`'s prompt version if it had none; the figures stay as stored. For content that
        arrives after its call (OTLP log events), and for sealing it again with a new key
        (`llmlog keys rotate`)."""

    @abc.abstractmethod
    def erase(self, *, user_id: str | None = None, session_id: str | None = None) -> Erased:
        """The right to erasure: delete one user's (or one session's) calls, the content no
        remaining call uses and their `people_daily` and `daily_seen` rows, in one
        transaction, so that none of their text stays readable in the database. And every
        span of their calls' traces, with every span anywhere that names them (an attribute
        of `NAMING_ATTRIBUTES` equal to the id, or a JSON string in its attributes or events
        equal to it: OpenInference puts `user.id` and the input on root and chain spans),
        with those spans' log events; and the log events kept waiting for a span (OTLP) that
        are in their calls' traces or name them (the same rule, on their attributes or body);
        and, after that transaction, the alerts' states and history that name them
        (`forget_alerts_naming`).
        The traces they were in are summed again from what is left (`traces`; a trace with
        nothing left loses its row), as are those whose row names them. The `daily` rollup
        keeps its counts: it holds no user, session or text. `Erased.spans` counts the spans
        deleted, `Erased.events` the log events. Reads every call once, to know which content
        other calls still use, and every span and waiting event once, for the id."""

    # -------------------------------------------------------------- retention (llmlog.operations.retention)

    @abc.abstractmethod
    def old_calls(self, before: date) -> list[tuple[date, str | None, int]]:
        """(UTC day, feature, calls) of the stored calls from days before `before`."""

    @abc.abstractmethod
    def purge(self, day: date, features: Sequence[str | None]) -> Erased:
        """Delete one UTC day's calls of these features (None: no feature) and their spans,
        in one transaction. `daily` and `people_daily` keep them: they are the cold tier.
        The content they alone used stays until `collect_content`."""

    @abc.abstractmethod
    def collect_content(self) -> int:
        """Delete the content no stored call uses; how many pieces went."""

    @abc.abstractmethod
    def purge_traces(self, before: datetime) -> int:
        """Delete the spans that started, and the span events that arrived, before `before`."""

    @abc.abstractmethod
    def reclaim(self, thorough: bool = False) -> None:
        """Give the space deleted rows held back to the file system. `thorough`: rewrite the
        tables whole (SQLite VACUUM, PostgreSQL VACUUM FULL), so that nothing deleted or
        replaced is left anywhere in the files; slow, and locks the tables meanwhile."""

    @abc.abstractmethod
    def size_bytes(self) -> int:
        """What the store takes on disk."""

    @abc.abstractmethod
    def setting(self, key: str) -> Any:
        """A value from the store's `settings` (None when not set)."""

    @abc.abstractmethod
    def set_setting(self, key: str, value: Any) -> None: ...

    def query(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout_s: float = 10.0,
        limit: int = 10_000,
        max_bytes: int = RESULT_MAX_BYTES,
    ) -> QueryResult:
        """Run SQL a person wrote, which may only read the calls (`query_rows`), its result
        held: `limit` rows and `max_bytes` of values at most."""
        with self.query_rows(sql, params, timeout_s=timeout_s, limit=limit, max_bytes=max_bytes) as rows:
            return held(rows, max_bytes)

    @abc.abstractmethod
    def query_rows(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout_s: float = 10.0,
        limit: int = 10_000,
        max_bytes: int = RESULT_MAX_BYTES,
    ) -> QueryRows:
        """Run SQL a person wrote, which may only read the calls: as a reader that cannot
        write, read the private tables (accounts, tokens, settings, audit) nor become anyone
        who can. Its rows come as they arrive, `limit` at most, none held (`llmlog query`
        prints a result of any size); no value may pass `max_bytes`. `timeout_s` covers the
        query and the reading of its rows, however slowly the caller takes them."""

    @abc.abstractmethod
    def internal_query(
        self, sql: str, params: Sequence[Any] = (), *, timeout_s: float = 10.0, limit: int = 10_000
    ) -> QueryResult:
        """Run read-only SQL llmlog wrote itself (reports, the dashboard) on the store's own
        connection, within a time limit. Never SQL from a person: that is `query`."""

    def reader_setup(self) -> str | None:
        """None when `query` has a reader to run as; else what an administrator does."""
        return None

    @contextlib.contextmanager
    def ingest_lock(self) -> Iterator[None]:
        """Held for the whole of one request's OTLP ingest (`llmlog.pipeline.otlp`),
        exclusive among the processes writing this store. That ingest reads the store (the
        spans kept earlier in its traces, calls stored with the same response id, the log
        events waiting, a keyless span's partner) and then writes in several transactions:
        two servers doing so at once, each given one span of the same call, could each find
        nothing and store the call twice, or lose the content one would give the other.

        Not exclusive among the threads of one process: a store and its connection are used
        by one at a time, under a lock of the process's own (`Web.writing`). Here: nothing
        more, for a store only one process can open; each engine says what it takes."""
        yield

    @abc.abstractmethod
    def close(self) -> None: ...

    def reopened(self) -> Store | None:
        """The same store on a connection of its own, with the same keys (a web server's
        readers, which must not wait on each other nor on the collector's writes); None where
        this process may hold no second one (the embedded ClickHouse engine, an in-memory
        SQLite database) or one has not been shown safe beside the first."""
        other = self._reopen()
        if other is not None:
            other.keyring = self.keyring
        return other

    def _reopen(self) -> Store | None:
        return None

    # Columns a list of calls can be broken down by (`facets`); "error" is the status.
    FACETS = ("feature", "model", "user_id", "prompt_template_version", "provider", "session_id", "error")

    def _where(
        self, f: CallFilter, extra: Sequence[str] = (), params: Sequence[Any] = ()
    ) -> tuple[str, list[Any]]:
        """The WHERE clause for `f` on the stored table, `call_data` (not on `calls`: the text
        condition reads the content ids)."""
        clauses, values = self._json_clauses(f)
        return f.sql([*clauses, *extra], [*values, *params], placeholder=self.dialect.placeholder)

    @abc.abstractmethod
    def _json_clauses(self, f: CallFilter) -> tuple[list[str], list[Any]]:
        """`f`'s tag, metadata and text conditions on `call_data`, in this engine's SQL."""

    # The rollup's grouping columns: a filter on these alone can be counted from `daily`.
    DAILY = ("feature", "model", "prompt_template_version", "provider")

    def facets(
        self,
        f: CallFilter,
        columns: Sequence[str],
        limit: int = 10,
        window: int = FACET_WINDOW,
        timeout_s: float = 2.0,
    ) -> dict[str, Facet]:
        """The most frequent values of each of `columns` among the calls `f` selects.

        Where the filter and the column are among the `daily` rollup's groups (and the filter
        has no time bounds, which the rollup knows only by day), the counts are exact, from a
        few hundred rows. The other columns are counted together in one pass over the latest
        `window` matching calls, newest first along an index: exact when fewer calls match,
        and said to be the latest `window` otherwise, so that a page over a million calls
        never waits for a count of all of them. Each read is time-limited: past `timeout_s`
        its columns come back `too_slow` rather than hold (or fail) the page."""
        unknown = [c for c in columns if c not in self.FACETS]
        if unknown:
            raise ValueError(f"no facet {unknown[0]!r}")
        out: dict[str, Facet] = {}
        scanned: list[str] = []
        for column in columns:
            if (column == "error" or column in self.DAILY) and _daily_only(f):
                sql, params = self._daily_facet(f, column)
                sql += f" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {int(limit)}"
                try:
                    rows = self.internal_query(sql, params, timeout_s=timeout_s).rows
                except ReadOnlyError:  # a store under load: the page says so, and is shown
                    out[column] = Facet([], too_slow=True)
                    continue
                out[column] = Facet(
                    [(row[0], int(row[1])) for row in rows if row[1]]
                )  # a sum of none is NULL
            else:
                scanned.append(column)
        if scanned:
            out.update(self._latest_facets(f, scanned, limit, window, timeout_s))
        return {column: out[column] for column in columns}

    def _latest_facets(
        self, f: CallFilter, columns: list[str], limit: int, window: int, timeout_s: float
    ) -> dict[str, Facet]:
        status = "CASE WHEN error IS NULL THEN 'ok' ELSE 'error' END"
        select = ", ".join(status if c == "error" else c for c in columns)
        where, params = self._where(f)
        sql = f"SELECT {select} FROM call_data {where} ORDER BY timestamp DESC LIMIT {int(window)}"
        try:
            rows = self.internal_query(sql, params, timeout_s=timeout_s, limit=window).rows
        except ReadOnlyError:
            return {c: Facet([], too_slow=True) for c in columns}
        latest = window if len(rows) == window else None
        out = {}
        for i, column in enumerate(columns):
            counts = Counter(row[i] for row in rows)
            # Most frequent first, then by value (None first), as the rollup's ORDER BY 2 DESC, 1.
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is not None, str(kv[0])))
            out[column] = Facet(ranked[:limit], latest)
        return out

    def _daily_facet(self, f: CallFilter, column: str) -> tuple[str, list[Any]]:
        p = self.dialect.placeholder
        clauses = [f"{col} = {p}" for col in self.DAILY if getattr(f, col) is not None]
        params: list[Any] = [getattr(f, col) for col in self.DAILY if getattr(f, col) is not None]
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        counted = {None: "calls", True: "errors", False: "calls - errors"}[f.errors]
        if column != "error":
            return f"SELECT {column}, sum({counted}) FROM daily {where}", params
        # Both statuses from one pass; a status the filter excludes counts 0 and is dropped.
        ok = "0" if f.errors is True else "sum(calls - errors)"
        bad = "0" if f.errors is False else "sum(errors)"
        both = f"SELECT 'ok' AS status, {ok} AS n FROM daily {where}"
        both += f" UNION ALL SELECT 'error', {bad} FROM daily {where}"
        return f"SELECT status, sum(n) FROM ({both}) AS s", params * 2

    def sessions(self, f: CallFilter, limit: int = 50) -> list[SessionSummary]:
        """The costliest sessions among the calls `f` selects (then the longest), with the
        user behind each. Read-only and time-limited, as `facets`."""
        return [
            SessionSummary(row[0], row[1], *_numbers(row[2:8]), _when(row[8]), _when(row[9]))
            for row in self._grouped("session_id", "min(user_id)", f, limit)
        ]

    def users(self, f: CallFilter, limit: int = 100) -> list[UserSummary]:
        """Calls, sessions, cost and errors per user among the calls `f` selects, costliest
        first."""
        return [
            UserSummary(row[0], *_numbers(row[2:8]), int(row[1]), _when(row[8]), _when(row[9]))
            for row in self._grouped("user_id", "count(DISTINCT session_id)", f, limit)
        ]

    def _grouped(self, key: str, also: str, f: CallFilter, limit: int) -> list[tuple[Any, ...]]:
        parts, params = self._people_parts(f)
        sql = (
            f"SELECT {key}, {also}, sum(calls), sum(input_tokens), sum(output_tokens), sum(cost_usd),"
            " sum(errors), sum(priced_calls), min(first), max(last)"
            f" FROM ({parts}) AS parts WHERE {key} IS NOT NULL GROUP BY {key}"
            " ORDER BY CASE WHEN sum(priced_calls) > 0 THEN sum(cost_usd) END DESC NULLS LAST,"
            f" sum(calls) DESC, {key} LIMIT {int(limit)}"
        )
        return self.internal_query(sql, params, timeout_s=5.0).rows

    _PEOPLE_RAW = (
        "SELECT user_id, session_id, count(*) AS calls, count(error) AS errors,"
        " sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd,"
        " count(cost_usd) AS priced_calls, min(timestamp) AS first, max(timestamp) AS last"
        " FROM call_data {} GROUP BY user_id, session_id"
    )

    def _people_parts(self, f: CallFilter) -> tuple[str, list[Any]]:
        """Rows of (user, session, figures, first, last) that add up to the calls `f` selects:
        per day from `people_daily` for the whole UTC days of the period, from the calls for
        the part-days at its ends; from the calls alone when `f` asks more than user, session
        and time."""
        if not _people_only(f):
            where, params = self._where(f)
            return self._PEOPLE_RAW.format(where), params
        since = _utc(f.since) if f.since is not None else None
        until = _utc(f.until) if f.until is not None else None
        # The whole days: from since's day (the next, unless since is its midnight) through
        # the day before until's.
        lo = None if since is None else since.date() + timedelta(days=0 if since == _midnight(since) else 1)
        hi = None if until is None else until.date() - timedelta(days=1)
        segments: list[tuple[str, list[Any]]] = []

        def raw(start: datetime | None, end: datetime | None) -> None:
            cf = CallFilter(user_id=f.user_id, session_id=f.session_id, since=start, until=end)
            where, params = self._where(cf)
            segments.append((self._PEOPLE_RAW.format(where), params))

        if lo is not None and hi is not None and lo > hi:
            raw(since, until)
        else:
            p = self.dialect.placeholder
            clauses, params = [], []
            for column in ("user_id", "session_id"):
                if getattr(f, column) is not None:
                    clauses.append(f"{column} = {p}")
                    params.append(getattr(f, column))
            if lo is not None:
                clauses.append(f"day >= {p}")
                params.append(self._day(lo))
            if hi is not None:
                clauses.append(f"day <= {p}")
                params.append(self._day(hi))
            where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
            segments.append(
                (
                    "SELECT user_id, session_id, calls, errors, input_tokens, output_tokens, cost_usd,"
                    f" priced_calls, first, last FROM people_daily {where}",
                    params,
                )
            )
            if since is not None and lo is not None and since != _midnight(since):
                raw(since, _midnight(since) + timedelta(days=1))
            if until is not None and hi is not None and until != _midnight(until):
                raw(_midnight(until), until)
        return " UNION ALL ".join(sql for sql, _ in segments), [v for _, ps in segments for v in ps]

    def _day(self, day: date) -> Any:
        """A UTC day as this engine's rollups hold it (SQLite: 'YYYY-MM-DD')."""
        return day.isoformat()

    # Set by the store on open: the schema version found, and the one it migrated to.
    schema_found: int = 0
    schema_version: int = 0

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RowTables(RowAlerts, RowExperiments, Store):
    """Accounts, web sessions, API tokens, alerts and experiments kept as rows updated and
    deleted in place, by SQL each such engine runs as written (SQLite, PostgreSQL, and the
    embedded ClickHouse store's private SQLite file). Listed first among a store's bases, it
    supplies them."""

    @abc.abstractmethod
    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement of the store's own (never the user's SQL), committed; its rows.
        `sql` marks parameters with `?`."""

    def add_account(self, name: str, role: str, password_hash: str) -> None:
        """A new account; ValueError if the name is taken."""
        if self._run("SELECT 1 FROM accounts WHERE name = ?", (name,)):
            raise ValueError(f"there is an account {name!r} already")
        self._run("INSERT INTO accounts VALUES (?, ?, ?, ?)", (name, role, password_hash, _now()))
        # From now on the UI asks everyone to sign in, even once the last account is removed.
        self.set_setting("accounts_required", True)

    def set_account(self, name: str, *, role: str | None = None, password_hash: str | None = None) -> bool:
        changed = False
        if role is not None:
            changed = bool(
                self._run("UPDATE accounts SET role = ? WHERE name = ? RETURNING name", (role, name))
            )
        if password_hash is not None:
            changed = bool(
                self._run(
                    "UPDATE accounts SET password = ? WHERE name = ? RETURNING name", (password_hash, name)
                )
            )
        if changed:  # a new role or password: whoever was signed in as it signs in again
            self.end_web_sessions(name)
        return changed

    def account(self, name: str) -> Account | None:
        rows = self._run("SELECT name, role, password, created FROM accounts WHERE name = ?", (name,))
        return Account(*rows[0]) if rows else None

    def accounts(self) -> list[Account]:
        return [
            Account(*r) for r in self._run("SELECT name, role, password, created FROM accounts ORDER BY name")
        ]

    def remove_account(self, name: str) -> bool:
        self.end_web_sessions(name)
        return bool(self._run("DELETE FROM accounts WHERE name = ? RETURNING name", (name,)))

    def add_web_session(self, session_hash: bytes, name: str, expires: int) -> None:
        """A session signed in as `name` until `expires` (Unix time), known by the hash of its
        cookie. Sessions past their time are cleared as new ones begin."""
        self._run("DELETE FROM web_sessions WHERE expires <= ?", (int(time.time()),))
        self._run("INSERT INTO web_sessions VALUES (?, ?, ?)", (session_hash, name, expires))

    def web_session(self, session_hash: bytes) -> str | None:
        """The account a session is signed in as, unless it has ended or expired."""
        rows = self._run(
            "SELECT name FROM web_sessions WHERE hash = ? AND expires > ?", (session_hash, int(time.time()))
        )
        return str(rows[0][0]) if rows else None

    def end_web_session(self, session_hash: bytes) -> None:
        self._run("DELETE FROM web_sessions WHERE hash = ?", (session_hash,))

    def end_web_sessions(self, name: str) -> None:
        """End every session of an account."""
        self._run("DELETE FROM web_sessions WHERE name = ?", (name,))

    def add_token(self, name: str, scope: str, token_hash: bytes) -> None:
        if self._run("SELECT 1 FROM api_tokens WHERE name = ?", (name,)):
            raise ValueError(f"there is a token {name!r} already")
        self._run("INSERT INTO api_tokens VALUES (?, ?, ?, ?)", (token_hash, name, scope, _now()))
        if scope == "ingest":  # from now on the collector takes calls with a token only
            self.set_setting("ingest_tokens_required", True)

    def token(self, token_hash: bytes) -> ApiToken | None:
        rows = self._run("SELECT name, scope, created FROM api_tokens WHERE hash = ?", (token_hash,))
        return ApiToken(*rows[0]) if rows else None

    def tokens(self) -> list[ApiToken]:
        return [ApiToken(*r) for r in self._run("SELECT name, scope, created FROM api_tokens ORDER BY name")]

    def remove_token(self, name: str) -> bool:
        return bool(self._run("DELETE FROM api_tokens WHERE name = ? RETURNING name", (name,)))
