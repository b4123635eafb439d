"""The call record: one row per model call, with exactly the columns of the `calls` relation.

Every way in (SDK wrap, import, later the proxy and OTLP) produces a `Call`; every store
takes `Call`s and gives them back. The JSONL form (`to_json`; read by `llmlog.pipeline.jsonl`) uses the same
column names with JSON columns as nested values, so an export is re-importable as is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from llmlog.core.sealed import is_sealed

Kind = Literal["id", "text", "timestamp", "json", "integer", "real"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of `calls`: its name (a `Call` field's) and the kind of value it holds,
    from which each engine takes its type, and validation its check."""

    name: str
    kind: Kind


#: The columns of `calls`, in order: the one list every store, view, import and export
#: follows. To add a column: add it here at the end (a view's columns can only grow at the
#: end without being made again) and to `Call`, then give each engine a migration adding it
#: (each engine's `add_call_column`). `rate_card` is ours: which rate card priced the call.
CALL_COLUMNS: tuple[Column, ...] = (
    Column("id", "id"),
    Column("session_id", "text"),
    Column("user_id", "text"),
    Column("timestamp", "timestamp"),
    Column("provider", "text"),
    Column("model", "text"),
    Column("feature", "text"),
    Column("prompt_template_version", "text"),
    Column("system_prompt", "text"),
    Column("messages", "json"),
    Column("tools", "json"),
    Column("params", "json"),
    Column("response", "json"),
    Column("tool_calls", "json"),
    Column("stop_reason", "text"),
    Column("input_tokens", "integer"),
    Column("output_tokens", "integer"),
    Column("cache_read_tokens", "integer"),
    Column("cache_creation_tokens", "integer"),
    Column("cost_usd", "real"),
    Column("rate_card", "text"),
    Column("first_token_ms", "real"),
    Column("latency_ms", "real"),
    Column("error", "json"),
    Column("metadata", "json"),
    Column("tags", "json"),
    Column("trace_id", "text"),
    Column("parent_id", "text"),
)
COLUMNS: tuple[str, ...] = tuple(c.name for c in CALL_COLUMNS)
KIND: dict[str, Kind] = {c.name: c.kind for c in CALL_COLUMNS}
#: Columns holding JSON (objects or arrays), stored as JSON text.
JSON_COLUMNS: frozenset[str] = frozenset(c.name for c in CALL_COLUMNS if c.kind == "json")
INT_COLUMNS: frozenset[str] = frozenset(c.name for c in CALL_COLUMNS if c.kind == "integer")
FLOAT_COLUMNS: frozenset[str] = frozenset(c.name for c in CALL_COLUMNS if c.kind == "real")
# A call's usage: its token counts, and what they are priced at.
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
USAGE = (*TOKENS, "cost_usd", "rate_card")
# Whom and what a call was for: what a later sight of a stored call may say first.
ATTRIBUTION = ("feature", "user_id", "session_id")


def json_text(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is; what the stores write and hash.

    orjson does the common case several times faster than the standard library (the writer
    serializes every message of every call); what it refuses (a lone surrogate, an integer
    over 64 bits) goes through `json`. default=str: app metadata may hold datetimes,
    decimals, enums; they are kept as text."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def too_deep(value: Any) -> bool:
    """Whether `value`, held as a field of a record, nests past what the stores and the
    spool write (orjson's limit: about 250 levels, counting the record's own object)."""
    try:
        orjson.dumps({"field": value}, default=str)
    except orjson.JSONEncodeError as exc:
        return str(exc) == "Recursion limit reached"
    return False


def parse_json(text: str | bytes) -> Any:
    """JSON from a request or response body; None when it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # the standard library also takes NaN, Infinity and lone surrogate escapes
            return json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError):  # deeper than it reads: not JSON to us
            return None


class RecordError(ValueError):
    """A record that cannot be stored; the message says which field and why."""


#: Where `drop_bad_figures` notes in `metadata` what it dropped: field → the value, as text.
DROPPED_KEY = "llmlog_dropped_figures"


# The most a call's figure may be: far past any model's (a context of millions of tokens, a
# call of hours), and small enough that the rollups' sums of a day's calls stay in range: a
# 64-bit sum holds 9 million calls of the most tokens in one group and day, where one call
# of 2**63 - 1 tokens made every later call of its group fail to be added on PostgreSQL. A
# real number this size summed stays finite, where two near the largest float made infinity.
MAX_TOKENS = 10**12
MAX_REAL = 1e15


def figure_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be a call's `name` (a token count, a cost or a time), or None.
    A NaN, an infinity or a negative figure would stay in the rollups for ever: a sum with
    one NaN is NaN, and JSON has no NaN to send it as."""
    if value is None:
        return None
    if name in INT_COLUMNS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name}: expected a non-negative integer, got {value!r}"
        if value > MAX_TOKENS:
            return f"{name}: {value} is more than any call has (at most {MAX_TOKENS:,})"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name}: expected a number, got {value!r}"
    try:
        number = float(value)
    except OverflowError:
        return f"{name}: {value} is too large"
    if not math.isfinite(number) or number < 0:
        return f"{name}: expected a finite non-negative number, got {value!r}"
    if number > MAX_REAL:
        return f"{name}: {value!r} is more than any call has (at most {MAX_REAL:g})"
    return None


# In the order the reasons are given: sorted once, not for every call checked.
_FIGURES = (*sorted(INT_COLUMNS), *sorted(FLOAT_COLUMNS))


def bad_figures(call: Call) -> dict[str, str]:
    """The figures of `call` that cannot be stored: field → why."""
    out = {}
    for name in _FIGURES:
        reason = figure_problem(name, getattr(call, name))
        if reason:
            out[name] = reason
    return out


def check_figures(call: Call) -> Call:
    """`call`, or RecordError naming its first figure that cannot be stored."""
    bad = bad_figures(call)
    if bad:
        raise RecordError("; ".join(bad.values()))
    return call


def drop_bad_figures(call: Call) -> Call:
    """Set the figures that cannot be stored to NULL, in place, noting in `metadata` what
    they were: for a call that happened (a provider's usage block that says -3 tokens),
    where losing the call would be worse than losing one figure of it."""
    bad = bad_figures(call)
    if bad:
        dropped = {name: str(getattr(call, name)) for name in bad}
        for name in bad:
            setattr(call, name, None)
        metadata = dict(call.metadata) if isinstance(call.metadata, dict) else {}
        metadata[DROPPED_KEY] = {**metadata.get(DROPPED_KEY, {}), **dropped}
        call.metadata = metadata
    return call


class _Ids:
    """Random (version 4) UUIDs for new calls, from 4 KB of `os.urandom` at a time.

    `uuid.uuid4()` reads 16 bytes from the kernel per id, and Python lets go of the
    interpreter lock for each read: the writer's thread then waits for it again behind the
    app's threads, up to the switch interval (5 ms) when one of them is busy, which capped
    the writer at a few hundred calls a second beside a busy app thread. A forked child
    never takes the bytes its parent held, so that the two never make the same ids: it
    forgets them (`os.register_at_fork`), and where a server forks without running those
    hooks (uWSGI, by default) the pool is known for another process's by its pid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()  # a fork can happen while another thread holds it
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        pid = os.getpid()
        if self._pid != pid:  # forked without the hooks: the lock may be held for good
            self._forget()
        with self._lock:
            at = self._at
            if at >= len(self._pool):  # empty too once forgotten
                self._pool, at, self._pid = os.urandom(4096), 0, pid
            self._at = at + 16
            raw = self._pool[at : at + 16]
        return str(uuid.UUID(bytes=raw, version=4))


new_call_id = _Ids()


@dataclass(slots=True)
class Call:
    """One model call. Field names are the column names of `calls`."""

    id: str = field(default_factory=new_call_id)
    session_id: str | None = None
    user_id: str | None = None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    provider: str | None = None
    model: str | None = None
    feature: str | None = None
    prompt_template_version: str | None = None
    system_prompt: str | None = None
    messages: list[Any] | None = None
    tools: list[Any] | None = None
    params: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cost_usd: float | None = None
    rate_card: str | None = None
    first_token_ms: float | None = None
    latency_ms: float | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    trace_id: str | None = None
    parent_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Column name → value, JSON columns as Python objects, timestamp as ISO text."""
        d = {name: getattr(self, name) for name in COLUMNS}
        d["timestamp"] = format_timestamp(self.timestamp)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Call:
        """Validate a mapping of column names (as in JSONL) into a Call; raises RecordError."""
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(COLUMNS)
        if unknown:
            raise RecordError(f"unknown field(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            values[name] = _coerce(name, value)
        if values.get("id") is None:
            values.pop("id", None)
        if values.get("timestamp") is None:
            raise RecordError("timestamp: required")
        return cls(**values)

    def replace(self, **changes: Any) -> Call:
        return dataclasses.replace(self, **changes)


def format_timestamp(ts: datetime) -> str:
    """Fixed-width ISO-8601 UTC with microseconds, so text order is time order."""
    if ts.tzinfo is not UTC:
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    # Fields, not strftime: twice as fast (every call and span stored formats its times), and
    # %Y is not zero-padded for years before 1000 on every platform; the width must be fixed.
    return (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}"
        f"T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}.{ts.microsecond:06d}Z"
    )


def parse_timestamp(value: str | int | float | datetime) -> datetime:
    """ISO-8601 text (naive means UTC) or epoch seconds → aware UTC datetime."""
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    elif isinstance(value, int | float):
        ts = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        ts = datetime.fromisoformat(text)
    else:
        raise ValueError(f"expected ISO-8601 text, got {type(value).__name__}")
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "timestamp":
        try:
            return parse_timestamp(value)
        except (ValueError, OverflowError, OSError) as exc:
            raise RecordError(f"timestamp: {exc}") from None
    if name == "id":
        if not isinstance(value, str):
            raise RecordError("id: expected a UUID string")
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise RecordError(f"id: not a UUID: {value!r}") from None
    if name in INT_COLUMNS:
        reason = figure_problem(name, value)
        if reason:
            raise RecordError(reason)
        return value
    if name in FLOAT_COLUMNS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{name}: expected a number, got {value!r}")
        reason = figure_problem(name, value)
        if reason:
            raise RecordError(reason)
        return float(value)
    if name in ("params", "response", "tools") and is_sealed(value):
        # Regulated mode seals these whole, before the spool: what a remote-mode app ships.
        return value
    if name in ("metadata", "params", "response", "error"):
        if not isinstance(value, dict):
            raise RecordError(f"{name}: expected a JSON object, got {type(value).__name__}")
        return value
    if name == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise RecordError("tags: expected an array of strings")
        return value
    if name in ("messages", "tools", "tool_calls"):
        if not isinstance(value, list):
            raise RecordError(f"{name}: expected a JSON array, got {type(value).__name__}")
        return value
    if name in JSON_COLUMNS:  # a JSON column the rules above do not shape: any object or array
        if not isinstance(value, dict | list):
            raise RecordError(f"{name}: expected a JSON object or array, got {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise RecordError(f"{name}: expected a string, got {type(value).__name__}")
    if name in ("trace_id", "parent_id"):
        problem = id_problem(value)
        if problem:
            raise RecordError(f"{name}: {problem}")
    return value


# The most a trace or span id may hold: ids name pages (/traces/{id}) and print in a terminal.
MAX_ID = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def id_problem(value: str) -> str | None:
    """Why a trace or parent id from outside cannot be kept (None when it can): one an app
    names itself (`llmlog.context(trace_id=...)`) may be any text that can name a page and
    print as itself."""
    if not value or len(value) > MAX_ID:
        return f"expected 1 to {MAX_ID} characters, got {len(value)}"
    if _CONTROL.search(value):
        return "holds a control character"
    if value in (".", ".."):
        return "is a path segment of its own"
    return None


@dataclass(slots=True)
class Span:
    """One span of a trace received over OTLP, a model call or not: the tree a call sits in
    (retrieve → llm → tool → llm) is made of these. `call_id` names the call a model-call
    span became."""

    trace_id: str  # hex, as OpenTelemetry prints it
    span_id: str
    parent_id: str | None
    name: str
    kind: str  # "internal", "client", "server", …
    start: datetime
    end: datetime | None
    status: str = "unset"  # "unset", "ok" or "error"
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    service: str | None = None
    call_id: str | None = None

    @property
    def duration_ms(self) -> float | None:
        return None if self.end is None else (self.end - self.start).total_seconds() * 1000

    def to_dict(self) -> dict[str, Any]:
        """Field → value, times as ISO text: what remote mode ships (`POST /v1/spans`)."""
        d = {name: getattr(self, name) for name in _SPAN_FIELDS}
        d["start"] = format_timestamp(self.start)
        d["end"] = None if self.end is None else format_timestamp(self.end)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Span:
        """Validate a mapping of the fields (as `to_dict` gives them) into a Span; raises
        RecordError naming the field and why."""
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(_SPAN_FIELDS)
        if unknown:
            raise RecordError(f"unknown field(s): {', '.join(sorted(unknown))}")
        if not isinstance(data.get("span_id"), str) or not _SPAN_ID.fullmatch(data["span_id"]):
            raise RecordError("span_id: expected 16 lower-case hex digits")
        # The trace and the parent may be ones the app named itself (`llmlog.context`), as
        # its calls' are: any text that can name a page.
        for name in ("trace_id", "parent_id"):
            value = data.get(name)
            if value is None and name == "parent_id":
                continue
            if not isinstance(value, str):
                raise RecordError(f"{name}: expected a string")
            problem = id_problem(value)
            if problem:
                raise RecordError(f"{name}: {problem}")
        parent = data.get("parent_id")
        values: dict[str, Any] = {
            "trace_id": data["trace_id"],
            "span_id": data["span_id"],
            "parent_id": parent,
        }
        for name in ("start", "end"):
            value = data.get(name)
            if value is None:
                if name == "start":
                    raise RecordError("start: required")
                values[name] = None
                continue
            try:
                values[name] = parse_timestamp(value)
            except (ValueError, OverflowError, OSError) as exc:
                raise RecordError(f"{name}: {exc}") from None
        if values["end"] is not None and values["end"] < values["start"]:
            raise RecordError("end: before start")
        for name, default in (("name", ""), ("kind", "internal"), ("status", "unset")):
            value = data.get(name, default)
            if not isinstance(value, str):
                raise RecordError(f"{name}: expected a string, got {type(value).__name__}")
            values[name] = value
        if values["status"] not in ("unset", "ok", "error"):
            raise RecordError("status: expected unset, ok or error")
        for name in ("status_message", "service", "call_id"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise RecordError(f"{name}: expected a string, got {type(value).__name__}")
            values[name] = value
        if values["call_id"] is not None:
            try:
                values["call_id"] = str(uuid.UUID(values["call_id"]))
            except ValueError:
                raise RecordError(f"call_id: not a UUID: {values['call_id']!r}") from None
        attributes, events = data.get("attributes") or {}, data.get("events") or []
        if not isinstance(attributes, dict):
            raise RecordError("attributes: expected a JSON object")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise RecordError("events: expected an array of objects")
        try:  # as the stores write them: one nested past what they write is refused here, alone
            orjson.dumps([attributes, events], default=str)
        except orjson.JSONEncodeError as exc:
            if str(exc) == "Recursion limit reached":
                raise RecordError("attributes nested too deeply") from None
        return cls(**values, attributes=attributes, events=events)


@dataclass(slots=True)
class SpanEvent:
    """A log event (OTLP) that carries the content of a span's call: a GenAI event such as
    `gen_ai.user.message` or `gen_ai.choice`, joined to its span by id."""

    trace_id: str | None
    span_id: str | None
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    body: Any = None


@dataclass(slots=True)
class TraceSummary:
    """One trace's figures, from its spans and its calls (`Store.list_traces`,
    `Store.trace_summary`), read without reading every call. A model call received over
    OTLP is both a span (its span row) and a call; a call made inside `llmlog.span` is a call
    only (its parent is the enclosing span)."""

    trace_id: str
    started: datetime  # the earliest span start or call timestamp (UTC)
    ended: datetime | None  # the latest span end or call end (timestamp + latency)
    name: str | None  # the root span's name (the span with no parent), if kept
    service: str | None  # the root span's service
    spans: int  # spans kept
    calls: int  # calls kept with this trace id
    errors: int  # calls with an error
    failed_spans: int  # spans whose status is 'error'
    input_tokens: int
    output_tokens: int
    cost_usd: float  # the sum of the calls' known costs (0.0 when none is known)
    feature: str | None  # of the trace's calls (the first seen that has one)
    user_id: str | None
    session_id: str | None

    @property
    def duration_ms(self) -> float | None:
        return None if self.ended is None else (self.ended - self.started).total_seconds() * 1000


_SPAN_FIELDS = tuple(f.name for f in dataclasses.fields(Span))
_SPAN_ID = re.compile("[0-9a-f]{16}")
