"""The filters on calls, by the names the web UI's query strings and the CLI's options share,
read into a `CallFilter` by one parser, so that a filter selects the same calls wherever it is
typed: `?tag=beta&meta=tier=pro` on a page, `--tag beta --meta tier=pro` on the command line.

    feature, model, provider, user, session, version,  one column equal to the value
    trace
    tag                                                 the call carries this tag
    meta                                                key=value, repeatable (a dotted key
                                                        reaches nested values)
    q                                                   free text (see CallFilter.text)
    status                                              "error" or "ok"
    since, until                                        1h, 30m, 7d or ISO-8601

The web reads them from the query string; the CLI gives --search for q and --errors /
--successes for status.

The filters on traces (`TraceFilter`, read by `parse_trace_filter`), by the same rule:

    name                                                the root span's name
    feature, user, session                              the trace's (its first call's that has one)
    status                                              "error": a call or a span failed
    min_ms, min_cost                                    at least this long (ms), this costly (USD)
    since, until                                        on when it started, as for calls
    before                                              with until: a trace id, the last of the
                                                        page before (its "older" link gives it)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from llmlog.core.record import format_timestamp, parse_timestamp

_KEY = re.compile(r"[A-Za-z0-9_\-]+")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """'1h', '30m', '7d' (that long ago) or an ISO-8601 date/time (UTC unless it says)."""
    m = _RELATIVE.match(text)
    if m:
        amount, unit = float(m.group(1)), _UNITS[m.group(2).lower()]
        try:
            return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
        except OverflowError:  # further back than year 1 (or than timedelta can hold)
            raise ValueError(f"{text!r} is further back than the calendar goes") from None
    try:
        return parse_timestamp(text)
    except OverflowError:  # a time near year 1 or 9999 that UTC moves off the calendar
        raise ValueError(f"{text!r} is outside the calendar (years 1 to 9999) in UTC") from None
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration like 1h/7d nor an ISO-8601 time") from None


@dataclass
class CallFilter:
    """Conditions on the summary columns; empty means every call."""

    feature: str | None = None
    model: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    prompt_template_version: str | None = None
    provider: str | None = None
    trace_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    errors: bool | None = None  # True: errors only; False: successes only
    ids: list[str] = field(default_factory=list)
    tag: str | None = None
    # (key, value) pairs the metadata must hold; a dotted key reaches into nested objects
    # ("llmlog.retry"). Values compare as text: 1, true and "pro" match "1", "true", "pro".
    metadata: list[tuple[str, str]] = field(default_factory=list)
    # Words that must occur (case-insensitively, as typed) in the system prompt, a message,
    # the response, the tool calls or the error.
    text: str | None = None

    def __post_init__(self) -> None:
        for key, _ in self.metadata:
            if not key or not all(_KEY.fullmatch(part) for part in key.split(".")):
                raise ValueError(f"metadata key {key!r}: letters, digits, _ and - only, dots between")

    def sql(
        self,
        extra: Sequence[str] = (),
        extra_params: Sequence[Any] = (),
        *,
        placeholder: str = "?",
        time_param: Callable[[datetime], Any] = format_timestamp,
    ) -> tuple[str, list[Any]]:
        """A WHERE clause on the summary columns, valid on `calls` and on the stored table.
        The placeholder and the form of a time parameter are the engine's (SQLite: ? and our
        timestamp text). Tag, metadata and text conditions are the store's to add
        (`Store._where`): they are written in each engine's JSON dialect."""
        p = placeholder
        clauses: list[str] = []
        params: list[Any] = []
        for col in EQUALS.values():
            value = getattr(self, col)
            if value is not None:
                clauses.append(f"{col} = {p}")
                params.append(value)
        if self.since is not None:
            clauses.append(f"timestamp >= {p}")
            params.append(time_param(self.since))
        if self.until is not None:
            clauses.append(f"timestamp < {p}")
            params.append(time_param(self.until))
        if self.errors is True:
            clauses.append("error IS NOT NULL")
        elif self.errors is False:
            clauses.append("error IS NULL")
        if self.ids:
            clauses.append(f"id IN ({','.join([p] * len(self.ids))})")
            params.extend(self.ids)
        clauses.extend(extra)
        params.extend(extra_params)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


# Name → CallFilter field, for the filters that are one column equal to a value.
EQUALS = {
    "feature": "feature",
    "model": "model",
    "user": "user_id",
    "session": "session_id",
    "version": "prompt_template_version",
    "provider": "provider",
    "trace": "trace_id",
}
NAMES = (*EQUALS, "tag", "meta", "q", "status", "since", "until")


# The longest free text (q, --search) taken: SQLite refuses a LIKE pattern past 50,000 bytes,
# and this many characters stay inside it even at 4 bytes each with every one escaped.
MAX_TEXT = 10_000


class BadFilter(ValueError):
    pass


def _values(params: Any, name: str) -> list[str]:
    """Every value given for `name`: a query string's repeated parameter (anything with
    `getlist`), a list or tuple, or one value."""
    getlist = getattr(params, "getlist", None)
    if getlist is not None:
        return [v for v in getlist(name) if v]
    value = params.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v]


def _one(params: Any, name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):  # a list: its last word counts
        value = value[-1] if value else None
    if value and "\x00" in value:  # no text column holds one (PostgreSQL refuses it outright)
        raise BadFilter(f"{name}: a NUL character matches nothing stored")
    return value or None


def _read_times(params: Any, f: CallFilter | TraceFilter) -> None:
    """`since` and `until` into `f`, for calls and traces alike."""
    for name in ("since", "until"):
        when = _one(params, name)
        if when:
            try:
                setattr(f, name, parse_when(when))
            except ValueError as exc:
                raise BadFilter(f"{name}: {exc}") from None


def parse_filter(params: Mapping[str, str | Sequence[str] | None] | Any) -> CallFilter:
    """The filter `params` (by the names in NAMES; others are not this parser's) asks for.
    Raises BadFilter, saying which name and why, on a value it cannot read."""
    f = CallFilter()
    for name, column in EQUALS.items():
        setattr(f, column, _one(params, name))
    f.tag = _one(params, "tag")
    f.text = _one(params, "q")
    if f.text is not None and len(f.text) > MAX_TEXT:
        raise BadFilter(f"search text of {len(f.text):,} characters: at most {MAX_TEXT:,} are taken")
    for meta in _values(params, "meta"):
        key, eq, value = meta.partition("=")
        if not eq:
            raise BadFilter(f"meta: {meta!r} is not key=value")
        f.metadata.append((key.strip(), value))
    try:
        f.__post_init__()  # checks the metadata keys
    except ValueError as exc:
        raise BadFilter(str(exc)) from None
    status = _one(params, "status") or ""
    if status not in ("", "error", "ok"):
        raise BadFilter(f"status must be 'error' or 'ok', not {status!r}")
    f.errors = {"error": True, "ok": False}.get(status)
    _read_times(params, f)
    return f


@dataclass
class TraceFilter:
    """Conditions on a trace's figures (`llmlog.core.record.TraceSummary`); empty means
    every trace."""

    name: str | None = None  # the root span's name
    feature: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    errors: bool = False  # only traces with a failed call or span
    min_duration_ms: float | None = None
    min_cost_usd: float | None = None
    since: datetime | None = None  # on `started`
    until: datetime | None = None  # on `started`, before it: how a page asks for older traces
    # With `until`: the traces that started at `until` itself are in too when their id sorts
    # before this one (the last of the page before), so that traces started at one moment
    # are on one page or the next, never on neither.
    before: str | None = None


# Name → TraceFilter field, for the trace filters that are one figure equal to a value.
TRACE_EQUALS = {"name": "name", "feature": "feature", "user": "user_id", "session": "session_id"}
TRACE_NAMES = (*TRACE_EQUALS, "status", "min_ms", "min_cost", "since", "until", "before")


def _at_least(params: Any, name: str) -> float | None:
    """A minimum given as `name`: a finite number, not negative."""
    text = _one(params, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadFilter(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise BadFilter(f"{name}: {text!r} is not a finite number of 0 or more")
    return value


def parse_trace_filter(params: Mapping[str, str | Sequence[str] | None] | Any) -> TraceFilter:
    """The filter on traces `params` (by the names in TRACE_NAMES; others are not this
    parser's) asks for. Raises BadFilter, saying which name and why, on a value it cannot read."""
    f = TraceFilter()
    for name, field_name in TRACE_EQUALS.items():
        setattr(f, field_name, _one(params, name))
    status = _one(params, "status") or ""
    if status not in ("", "error"):
        raise BadFilter(f"status: traces are filtered by 'error' only, not {status!r}")
    f.errors = status == "error"
    f.min_duration_ms = _at_least(params, "min_ms")
    f.min_cost_usd = _at_least(params, "min_cost")
    _read_times(params, f)
    f.before = _one(params, "before")
    return f
