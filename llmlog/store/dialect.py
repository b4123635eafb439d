"""What each engine's SQL says differently, for the SQL written once for all of them: the
rollups and their repairs (`llmlog.store.rollup`), the reports and the dashboard
(`llmlog.analysis`). Each store has its engine's (`Store.dialect`); code that writes SQL for
any store asks it, and never asks which engine it is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from llmlog.core.record import format_timestamp


@dataclass(frozen=True)
class RollupSQL:
    """How an engine that keeps `daily` by triggers writes it (SQLite, PostgreSQL); ClickHouse
    keeps it by materialized views of its own."""

    count_type: str  # a count column of `daily` (the cold tier's)
    map_type: str  # a {key: count} column
    empty_map: str  # the literal of an empty one
    object_agg: str  # the aggregate making {key: value} of a group's rows
    total: str  # the sum of a column `{x}`, 0.0 for none
    infinity: str  # a float above every figure (SQLite's NaN is stored as NULL)
    map_param: str  # a parameter given as a map's JSON text


@dataclass(frozen=True)
class Dialect:
    name: str  # "sqlite", "postgres", "clickhouse": for messages, never for branching
    placeholder: str  # a parameter's mark
    # Equality that takes NULL for a value (a group's feature may be NULL); None where the
    # engine has none outside a join (ClickHouse): `same_as` spells it out.
    null_safe: str | None
    # How a day and a time are given as parameters: SQLite compares ISO text; the others take
    # a date, and a time with its zone.
    iso_text: bool
    # Expressions of a column `{x}`: its base-2 logarithm (a float); the `type` of a stored
    # error ("error" when it has none) as a key of `error_types`; the number of tool calls in
    # `tool_calls`; the UTC day of a `timestamp`, as `daily.day` holds it.
    log2_of: str
    error_type_of: str
    tool_count_of: str
    day_of: str
    # The response of a call when it holds one of some words (%s: the words, a parameter),
    # else NULL; None where the engine reads the response whole and the words are checked
    # after it (SQLite: it may be compressed).
    any_word_in_response: str | None
    words_as_patterns: bool = False  # the words given as LIKE patterns, lower-cased (%word%)
    # An id starting with a parameter (`Store.get` by a prefix), where the engine says it
    # otherwise than as the range of ids from the prefix to the prefix and U+10FFFF (the
    # last character: ids compare byte by byte, as UTF-8).
    id_starts_with: str | None = None
    rollup: RollupSQL | None = None
    # A time `{t}` later by `{ms}` milliseconds (`{t}` itself when `{ms}` is NULL), in the
    # form `timestamp` has (a call's end: its time and latency); the milliseconds from one
    # time `{a}` to another `{b}`, to the microsecond. A latency past `rollup.MAX_MS` (31
    # years: garbage, as the rollup takes it) moves the end no further than that.
    later_by_ms_of: str = ""
    ms_between_of: str = ""
    # What follows a text expression to compare it byte by byte (as UTF-8), whatever the
    # database's collation: what orders values alike on every engine (`trace_rollup`).
    bytewise: str = ""

    def later_by_ms(self, t: str, ms: str) -> str:
        return self.later_by_ms_of.replace("{t}", t).replace("{ms}", ms)

    def ms_between(self, a: str, b: str) -> str:
        return self.ms_between_of.replace("{a}", a).replace("{b}", b)

    def log2(self, value: str) -> str:
        return self.log2_of.replace("{x}", value)

    def error_type(self, error: str) -> str:
        return self.error_type_of.replace("{x}", error)

    def tool_count(self, tool_calls: str) -> str:
        return self.tool_count_of.replace("{x}", tool_calls)

    def day(self, timestamp: str) -> str:
        return self.day_of.replace("{x}", timestamp)

    def response_with_any(self, words: Sequence[str]) -> tuple[str, list[Any]] | None:
        """`any_word_in_response` and its parameter for `words`; None where there is none."""
        if self.any_word_in_response is None:
            return None
        given = [f"%{w.lower()}%" for w in words] if self.words_as_patterns else list(words)
        return self.any_word_in_response, [given]

    def rollup_sql(self) -> RollupSQL:
        if self.rollup is None:
            raise ValueError(f"{self.name} keeps daily by materialized views, not by this SQL")
        return self.rollup

    def null_safe_equal(self) -> str:
        """The operator itself, for SQL that compares two columns (the rollups' joins)."""
        if self.null_safe is None:
            raise ValueError(f"{self.name} has no NULL-safe equality outside a join: see same_as")
        return self.null_safe

    def same_as(self, column: str) -> tuple[str, Callable[[Any], list[Any]]]:
        """`column` equal to a parameter that may be NULL: the condition, and the parameters
        that give it a value."""
        p = self.placeholder
        if self.null_safe is None:
            return f"ifNull({column}, '') = {p} AND isNull({column}) = {p}", lambda v: [v or "", v is None]
        return f"{column} {self.null_safe} {p}", lambda v: [v]

    def day_param(self, day: date) -> Any:
        """A day compared with `daily.day`."""
        return day.isoformat() if self.iso_text else day

    def time_param(self, when: date) -> Any:
        """A time (a day is its midnight UTC) compared with `timestamp`."""
        if isinstance(when, datetime):
            return format_timestamp(when) if self.iso_text else when
        if self.iso_text:
            return when.isoformat()
        return datetime(when.year, when.month, when.day, tzinfo=UTC)
