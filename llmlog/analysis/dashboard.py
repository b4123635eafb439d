"""Figures over a period of whole UTC days, for the dashboard and its JSON; and the limits
and output formats of read-only queries, which `llmlog query` and the SQL console share.

Everything here reads through `Store.query`: read-only, time-limited, SQL written for both
dialects. Per-day figures come from the `daily` rollup (a few hundred rows whatever the
number of calls). What `daily` cannot give — latency percentiles, users, averages over
non-NULL values — is read from `call_data` one day at a time and kept per day in a
`DayCache` (`llmlog.analysis.days`) while that day's `daily` row sums stay the same, so a
view of 30 days on a busy store reads only the days that changed since the last view
(usually today).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Generic, TypeVar

from llmlog.analysis.days import DayCache, cached_days
from llmlog.store import QueryResult, ReadOnlyError, Store, retention_policy
from llmlog.store.rollup import counts_of, histogram_percentile, merge_counts

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- read-only queries

# `llmlog query`'s defaults.
QUERY_TIMEOUT_S = 10.0
QUERY_ROW_LIMIT = 10_000
# The web console's: a page shows a table a person reads; a download may be a spreadsheet.
CONSOLE_TIMEOUT_S = 5.0
CONSOLE_ROW_LIMIT = 1_000
DOWNLOAD_ROW_LIMIT = 100_000

# The queries the README starts with, as the console offers them and the dashboard shows them.
FIRST_QUERIES = (
    "SELECT * FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC",
    "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model",
    "SELECT prompt_template_version, AVG(output_tokens) FROM calls GROUP BY 1 ORDER BY 1",
)


def _json_value(value: object) -> str:
    # What json cannot write itself: a BLOB as hex, anything else as its text.
    return value.hex() if isinstance(value, bytes) else str(value)


def result_json(result: QueryResult) -> str:
    """Rows as a JSON array of objects keyed by column name (JSON columns stay text)."""
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    return json.dumps(rows, ensure_ascii=False, indent=2, default=_json_value)


# What a spreadsheet takes as the start of a formula (OWASP's CSV injection list): a logged
# prompt of `=HYPERLINK(...)` must open as text, not run, when the download is opened.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows as text: text starting like a formula gets a
    leading `'` (numbers are left as they are: a negative number is no formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(result: QueryResult, out: IO[str]) -> None:
    """A header of column names, then the rows; NULL is an empty field; text that a
    spreadsheet would run as a formula is made text (`csv_cell`). Lines end in CRLF (RFC
    4180), so that a field holding a lone CR is quoted: unquoted, a reader would start a new
    line there, and its rest (`=1`) a new cell."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([csv_cell(c) for c in result.columns])
    w.writerows([csv_cell(v) for v in row] for row in result.rows)


# ---------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    """Whole UTC days, `first` through `last`."""

    first: date
    last: date

    @classmethod
    def ending(cls, days: int, last: date | None = None) -> Period:
        last = last or datetime.now(UTC).date()
        return cls(last - timedelta(days=days - 1), last)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def end(self) -> date:
        """The day after the last, where the period stops."""
        return self.last + timedelta(days=1)

    def dates(self) -> list[str]:
        return [(self.first + timedelta(days=i)).isoformat() for i in range(self.days)]

    def where(self) -> str:
        """The period as a condition on `timestamp` with literal dates, which means the same
        on both stores (SQLite compares the ISO text, PostgreSQL reads the date as UTC
        midnight), so SQL shown with it can be pasted into the console as it is."""
        return f"timestamp >= '{self.first.isoformat()}' AND timestamp < '{self.end.isoformat()}'"


def day_param(store: Store, day: date) -> Any:
    # `daily.day`: 'YYYY-MM-DD' text on SQLite, a date on PostgreSQL and ClickHouse.
    return store.dialect.day_param(day)


def time_param(store: Store, when: date) -> Any:
    # Compared with `timestamp`. A day is its midnight UTC: the ISO text of the day sorts
    # just before every stored time of that day on SQLite; a time with its zone elsewhere.
    return store.dialect.time_param(when)


# ---------------------------------------------------------------- results that may be missing

T = TypeVar("T")


@dataclass
class Section(Generic[T]):
    """One panel's figures, or why there are none; `sql` is what the panel shows and runs."""

    value: T | None = None
    error: str | None = None
    sql: str | None = None


def attempt(fn: Callable[[], T], sql: str | None = None) -> Section[T]:
    """Run one panel's query; a refusal, time limit or failure becomes the panel's message."""
    try:
        return Section(fn(), sql=sql)
    except ReadOnlyError as exc:
        return Section(error=str(exc), sql=sql)
    except Exception as exc:  # the store itself failing (server gone): the other panels may still work
        log.warning("a report failed", exc_info=True)
        return Section(error=f"failed ({type(exc).__name__}; the server's log has the details)", sql=sql)


# ---------------------------------------------------------------- the daily rollup


@dataclass
class DailyRow:
    """`daily` summed over providers and prompt versions: one day, feature and model."""

    day: str
    feature: str | None
    model: str | None
    calls: int
    errors: int
    priced_calls: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    latency_ms: float


def read_daily(store: Store, period: Period, timeout_s: float = 2.0) -> list[DailyRow]:
    p = store.dialect.placeholder
    sql = (
        "SELECT day, feature, model, sum(calls), sum(errors), sum(priced_calls), sum(cost_usd),"
        " sum(input_tokens), sum(output_tokens), sum(latency_ms)"
        f" FROM daily WHERE day >= {p} AND day <= {p} GROUP BY day, feature, model"
    )
    params = [day_param(store, period.first), day_param(store, period.last)]
    result = store.internal_query(sql, params, timeout_s=timeout_s, limit=1_000_000)
    if result.truncated:
        raise ReadOnlyError("too many feature and model groups in the period")
    rows = []
    for day, feature, model, calls, errors, priced, cost, tokens_in, tokens_out, latency in result.rows:
        row = DailyRow(str(day), feature, model, int(calls), int(errors), int(priced), float(cost), 0, 0, 0.0)
        row.input_tokens, row.output_tokens, row.latency_ms = int(tokens_in), int(tokens_out), float(latency)
        rows.append(row)
    # One order whatever the engine's grouping: sums of floats over them come out the same.
    rows.sort(key=lambda r: (r.day, _sort_key(r.feature), _sort_key(r.model)))
    return rows


def _sort_key(value: str | None) -> tuple[bool, str]:
    return (value is not None, value or "")


@dataclass
class Totals:
    calls: int = 0
    errors: int = 0
    priced_calls: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    def add(self, r: DailyRow) -> None:
        self.calls += r.calls
        self.errors += r.errors
        self.priced_calls += r.priced_calls
        self.cost_usd += r.cost_usd
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens


def totals(rows: Iterable[DailyRow]) -> Totals:
    t = Totals()
    for r in rows:
        t.add(r)
    return t


@dataclass
class Stack:
    """Cost per day broken down by a column: the biggest `series` by cost over the period,
    then what the others add up to (`other`, when there are more)."""

    days: list[str]
    series: list[tuple[str | None, list[float]]]
    other: list[float] | None
    day_totals: list[float]


def cost_stack(rows: Iterable[DailyRow], period: Period, by: str, top: int = 8) -> Stack:
    """`by` is "model" or "feature"."""
    days = period.dates()
    index = {d: i for i, d in enumerate(days)}
    per: dict[str | None, list[float]] = {}
    for r in rows:
        key = r.model if by == "model" else r.feature
        per.setdefault(key, [0.0] * len(days))[index[r.day]] += r.cost_usd
    ranked = sorted(per, key=lambda k: (-sum(per[k]), _sort_key(k)))
    # Keys that cost nothing are left out of the stack; they add no height.
    ranked = [k for k in ranked if sum(per[k]) > 0]
    shown, rest = ranked[:top], ranked[top:]
    other = [sum(per[k][i] for k in rest) for i in range(len(days))] if rest else None
    day_totals = [sum(per[k][i] for k in ranked) for i in range(len(days))]
    return Stack(days, [(k, per[k]) for k in shown], other, day_totals)


@dataclass
class DayCalls:
    day: str
    calls: int
    errors: int

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None


def calls_per_day(rows: Iterable[DailyRow], period: Period) -> list[DayCalls]:
    per = {d: DayCalls(d, 0, 0) for d in period.dates()}
    for r in rows:
        per[r.day].calls += r.calls
        per[r.day].errors += r.errors
    return list(per.values())


@dataclass
class Ranked:
    """A user or feature with its calls and cost in the period; cost is None when none of
    its calls has one."""

    name: str | None
    calls: int
    cost_usd: float | None


def _ranked(groups: dict[str | None, list[Any]], n: int) -> list[Ranked]:
    # groups: name → [calls, cost of the priced calls, priced calls]
    items = [Ranked(k, int(v[0]), v[1] if v[2] else None) for k, v in groups.items()]
    items.sort(key=lambda r: (-(r.cost_usd or 0.0), -r.calls, _sort_key(r.name)))
    return items[:n]


def top_features(rows: Iterable[DailyRow], n: int = 10) -> list[Ranked]:
    groups: dict[str | None, list[Any]] = {}
    for r in rows:
        g = groups.setdefault(r.feature, [0, 0.0, 0])
        g[0] += r.calls
        g[1] += r.cost_usd
        g[2] += r.priced_calls
    return _ranked(groups, n)


def day_fingerprints(rows: Iterable[DailyRow]) -> dict[str, tuple[Any, ...]]:
    """What `daily` says of each day: a new call there, or a new cost, changes it."""
    out: dict[str, list[Any]] = {}
    for r in rows:
        f = out.setdefault(r.day, [0, 0, 0, 0.0, 0, 0, 0.0])
        f[0] += r.calls
        f[1] += r.errors
        f[2] += r.priced_calls
        f[3] += r.cost_usd
        f[4] += r.input_tokens
        f[5] += r.output_tokens
        f[6] += r.latency_ms
    return {day: tuple(f) for day, f in out.items()}


# ---------------------------------------------------------------- one day of calls


@dataclass
class DayPart:
    """One UTC day of calls reduced to what the period's figures are made of."""

    latencies: dict[str | None, array[float]] = field(default_factory=dict)  # sorted, per model
    by_user: dict[str | None, list[Any]] = field(default_factory=dict)  # [calls, cost, priced]
    by_model: dict[str | None, list[Any]] = field(default_factory=dict)  # [calls, cost, priced]
    by_version: dict[str | None, list[int]] = field(default_factory=dict)  # [output sum, count]

    @property
    def size(self) -> int:
        """About how many numbers it holds, for the cache's bound."""
        groups = len(self.by_user) + len(self.by_model) + len(self.by_version)
        return sum(len(a) for a in self.latencies.values()) + 4 * groups


def read_day(store: Store, day: date, timeout_s: float) -> DayPart:
    """The calls of one UTC day, read once (through the timestamp index) and reduced."""
    p = store.dialect.placeholder
    sql = (
        "SELECT model, user_id, prompt_template_version, latency_ms, cost_usd, output_tokens"
        f" FROM call_data WHERE timestamp >= {p} AND timestamp < {p}"
    )
    params = [time_param(store, day), time_param(store, day + timedelta(days=1))]
    result = store.internal_query(sql, params, timeout_s=timeout_s, limit=50_000_000)
    part = DayPart()
    latencies: dict[str | None, list[float]] = {}
    for model, user, version, latency, cost, output in result.rows:
        if latency is not None and latency == latency:  # NaN is not a latency
            latencies.setdefault(model, []).append(float(latency))
        for groups, key in ((part.by_user, user), (part.by_model, model)):
            g = groups.get(key)
            if g is None:
                g = groups[key] = [0, 0.0, 0]
            g[0] += 1
            if cost is not None:
                g[1] += cost
                g[2] += 1
        v = part.by_version.get(version)
        if v is None:
            v = part.by_version[version] = [0, 0]
        if output is not None:
            v[0] += int(output)
            v[1] += 1
    part.latencies = {m: array("d", sorted(values)) for m, values in latencies.items()}
    return part


def read_parts(
    reading: Callable[[], AbstractContextManager[Store]],
    fingerprints: dict[str, tuple[Any, ...]],
    cache: DayCache[DayPart],
    budget_s: float,
) -> list[DayPart]:
    """The parts of every day of the period that has calls (`cached_days`); raises
    ReadOnlyError when some are still to read once the budget has run out."""
    parts, unread = cached_days(reading, fingerprints, cache, budget_s, read_day)
    if unread:
        raise ReadOnlyError(
            f"{len(unread)} of {len(fingerprints)} days of calls still to read after"
            f" the {budget_s:g} s limit of one view; reload to read on"
        )
    return [part for _, part in parts]


# ---------------------------------------------------------------- figures from the day parts


def _kth(arrays: Sequence[Sequence[float]], k: int) -> float:
    """The k-th smallest value (from 0) of several sorted arrays together, found by
    narrowing a range in each around a pivot (no merge of a million values)."""
    lo = [0] * len(arrays)
    hi = [len(a) for a in arrays]
    while True:
        widest = max(range(len(arrays)), key=lambda j: hi[j] - lo[j])
        pivot = arrays[widest][(lo[widest] + hi[widest]) // 2]
        below = [bisect_left(a, pivot, lo[j], hi[j]) for j, a in enumerate(arrays)]
        upto = [bisect_right(a, pivot, lo[j], hi[j]) for j, a in enumerate(arrays)]
        n_below = sum(b - s for b, s in zip(below, lo, strict=True))
        n_upto = sum(u - s for u, s in zip(upto, lo, strict=True))
        if k < n_below:
            hi = below
        elif k < n_upto:
            return pivot
        else:
            k -= n_upto
            lo = upto


def percentile(arrays: Sequence[Sequence[float]], p: float) -> float:
    """PostgreSQL's percentile_cont(p) of the values of sorted arrays: the value at position
    p·(n−1) of the sorted values, linearly interpolated between its two neighbours, with
    PostgreSQL's own arithmetic (lo + frac·(hi − lo)), so both stores agree to the bit."""
    n = sum(len(a) for a in arrays)
    if n == 0:
        raise ValueError("no values")
    pos = p * (n - 1)
    first, second = math.floor(pos), math.ceil(pos)
    lo = _kth(arrays, first)
    if second == first:
        return lo
    hi = _kth(arrays, second)
    return lo + (pos - first) * (hi - lo)


@dataclass
class Latency:
    model: str | None
    calls: int  # calls with a latency
    p50_ms: float
    p95_ms: float


def latency_by_model(parts: Iterable[DayPart]) -> list[Latency]:
    per: dict[str | None, list[array[float]]] = {}
    for part in parts:
        for model, values in part.latencies.items():
            per.setdefault(model, []).append(values)
    out = [
        Latency(m, sum(len(a) for a in arrays), percentile(arrays, 0.5), percentile(arrays, 0.95))
        for m, arrays in per.items()
    ]
    out.sort(key=lambda x: (-x.calls, _sort_key(x.model)))
    return out


def _merge(parts: Iterable[DayPart], attr: str) -> dict[str | None, list[Any]]:
    merged: dict[str | None, list[Any]] = {}
    for part in parts:
        for key, values in getattr(part, attr).items():
            m = merged.get(key)
            if m is None:
                merged[key] = list(values)
            else:
                for i, v in enumerate(values):
                    m[i] += v
    return merged


def top_users(parts: Iterable[DayPart], n: int = 10) -> list[Ranked]:
    return _ranked(_merge(parts, "by_user"), n)


def calls_and_cost_by_model(parts: Iterable[DayPart]) -> list[tuple[str | None, int, float | None]]:
    """What `SELECT model, COUNT(*), SUM(cost_usd) FROM calls … GROUP BY model` gives over
    the period (SUM is NULL where no call has a cost), most calls first."""
    merged = _merge(parts, "by_model")
    rows = [(k, int(v[0]), v[1] if v[2] else None) for k, v in merged.items()]
    rows.sort(key=lambda r: (-r[1], _sort_key(r[0])))
    return rows


def average_output_by_version(parts: Iterable[DayPart]) -> list[tuple[str | None, float | None]]:
    """What `SELECT prompt_template_version, AVG(output_tokens) FROM calls … GROUP BY 1
    ORDER BY 1` gives over the period: the mean of the non-NULL counts (NULL when none),
    NULL version first as in SQLite."""
    merged = _merge(parts, "by_version")
    rows = [(k, v[0] / v[1] if v[1] else None) for k, v in merged.items()]
    rows.sort(key=lambda r: _sort_key(r[0]))
    return rows


# ---------------------------------------------------------------- the cold tier
# A period reaching back past the store's retention window is read from the rollups alone,
# whether or not retention has run yet: so its figures are the same the day after a run as
# the day before. Latency percentiles then come from `daily`'s histograms (within 4.5%).


def reaches_cold(store: Store, period: Period, today: date | None = None) -> bool:
    """Whether the period starts before the day the store's shortest window keeps from."""
    p = retention_policy.policy(store)
    today = today or datetime.now(UTC).date()
    return period.first < max(p.cutoff(f, today) for f in [None, *p.features])


def read_rollup_part(store: Store, period: Period, timeout_s: float = 2.0) -> tuple[DayPart, list[Latency]]:
    """The period's figures that the dashboard otherwise reads from the calls, from `daily`
    and `people_daily`: calls and cost by model and by user (users only: calls without
    one are not in `people_daily`), output tokens by version, and latency by model."""
    p = store.dialect.placeholder
    bounds = [day_param(store, period.first), day_param(store, period.last)]
    where = f"WHERE day >= {p} AND day <= {p}"
    part = DayPart()
    sql = (
        "SELECT model, prompt_template_version, calls, cost_usd, priced_calls, output_tokens, output_calls,"
        f" latency_hist FROM daily {where}"
    )
    hists: dict[str | None, list[dict[str, int]]] = {}
    for model, version, calls, cost, priced, output, output_calls, hist in store.internal_query(
        sql, bounds, timeout_s=timeout_s, limit=50_000_000
    ).rows:
        m = part.by_model.setdefault(model, [0, 0.0, 0])
        m[0] += int(calls)
        m[1] += float(cost)
        m[2] += int(priced)
        v = part.by_version.setdefault(version, [0, 0])
        v[0] += int(output)
        v[1] += int(output_calls)
        hists.setdefault(model, []).append(counts_of(hist))
    users = store.internal_query(
        f"SELECT user_id, sum(calls), sum(cost_usd), sum(priced_calls) FROM people_daily {where}"
        " AND user_id IS NOT NULL GROUP BY user_id",
        bounds,
        timeout_s=timeout_s,
        limit=50_000_000,
    )
    for user, calls, cost, priced in users.rows:
        part.by_user[user] = [int(calls), float(cost), int(priced)]
    latency = []
    for model, objects in hists.items():
        merged = merge_counts(objects)
        n = sum(merged.values())
        if n:
            latency.append(
                Latency(model, n, histogram_percentile(merged, 0.5), histogram_percentile(merged, 0.95))
            )
    latency.sort(key=lambda x: (-x.calls, _sort_key(x.model)))
    return part, latency


# ---------------------------------------------------------------- the dashboard


def panel_sql(period: Period, cold: bool = False) -> dict[str, str]:
    """The three first queries as the dashboard runs them: over the period; from `daily`
    where the period reaches the cold tier."""
    where = period.where()
    if cold:
        days = f"day >= '{period.first.isoformat()}' AND day <= '{period.last.isoformat()}'"
        return {
            "recent_errors": (
                f"SELECT * FROM calls WHERE error IS NOT NULL\nAND {where}\nORDER BY timestamp DESC LIMIT 10"
            ),
            "by_model": (
                "SELECT model, SUM(calls), CASE WHEN SUM(priced_calls) > 0 THEN SUM(cost_usd) END\n"
                f"FROM daily WHERE {days}\nGROUP BY model"
            ),
            "by_version": (
                "SELECT prompt_template_version, SUM(output_tokens) * 1.0 / NULLIF(SUM(output_calls), 0)"
                f" FROM daily\nWHERE {days}\nGROUP BY 1 ORDER BY 1"
            ),
        }
    return {
        "recent_errors": (
            f"SELECT * FROM calls WHERE error IS NOT NULL\nAND {where}\nORDER BY timestamp DESC LIMIT 10"
        ),
        "by_model": f"SELECT model, COUNT(*), SUM(cost_usd) FROM calls\nWHERE {where}\nGROUP BY model",
        "by_version": (
            "SELECT prompt_template_version, AVG(output_tokens) FROM calls\n"
            f"WHERE {where}\nGROUP BY 1 ORDER BY 1"
        ),
    }


@dataclass
class Dashboard:
    period: Period
    totals: Section[Totals]
    cost_by_model: Section[Stack]
    cost_by_feature: Section[Stack]
    calls_by_day: Section[list[DayCalls]]
    top_features: Section[list[Ranked]]
    latency: Section[list[Latency]]
    top_users: Section[list[Ranked]]
    recent_errors: Section[QueryResult]
    by_model: Section[list[tuple[str | None, int, float | None]]]
    by_version: Section[list[tuple[str | None, float | None]]]
    elapsed_ms: float = 0.0


def dashboard(
    reading: Callable[[], AbstractContextManager[Store]],
    period: Period,
    cache: DayCache[DayPart],
    budget_s: float = 6.0,
) -> Dashboard:
    """Every figure of the dashboard. `reading()` lends the store for one query at a time
    (the web app's lock), so a first view reading many days of calls does not hold up the
    other pages; `cache` is to be used by one view at a time."""
    started = time.perf_counter()

    def read_cold() -> bool:
        with reading() as store:
            return reaches_cold(store, period)

    cold = bool(attempt(read_cold).value)
    sql = panel_sql(period, cold)

    def read_daily_rows() -> list[DailyRow]:
        with reading() as store:
            return read_daily(store, period)

    def read_recent_errors() -> QueryResult:
        with reading() as store:
            return store.internal_query(sql["recent_errors"], timeout_s=2.0, limit=10)

    daily = attempt(read_daily_rows)
    rows = daily.value or []

    def from_daily(fn: Callable[[], T]) -> Section[T]:
        return Section(error=daily.error) if daily.error else Section(fn())

    latency: Section[list[Latency]]
    if cold:

        def read_rollup() -> tuple[DayPart, list[Latency]]:
            with reading() as store:
                return read_rollup_part(store, period)

        rolled = attempt(read_rollup)
        parts = Section[list[DayPart]](error=rolled.error, value=[rolled.value[0]] if rolled.value else None)
        latency = Section(error=rolled.error, value=rolled.value[1] if rolled.value else None)
    else:
        parts = (
            Section[list[DayPart]](error=daily.error)
            if daily.error
            else attempt(lambda: read_parts(reading, day_fingerprints(rows), cache, budget_s))
        )

    def from_parts(fn: Callable[[list[DayPart]], T], sql: str | None = None) -> Section[T]:
        if parts.error or parts.value is None:
            return Section(error=parts.error, sql=sql)
        return Section(fn(parts.value), sql=sql)

    recent = attempt(read_recent_errors, sql["recent_errors"])
    if not cold:
        latency = from_parts(latency_by_model)
    return Dashboard(
        period=period,
        totals=from_daily(lambda: totals(rows)),
        cost_by_model=from_daily(lambda: cost_stack(rows, period, "model")),
        cost_by_feature=from_daily(lambda: cost_stack(rows, period, "feature")),
        calls_by_day=from_daily(lambda: calls_per_day(rows, period)),
        top_features=from_daily(lambda: top_features(rows)),
        latency=latency,
        top_users=from_parts(top_users),
        recent_errors=recent,
        by_model=from_parts(calls_and_cost_by_model, sql["by_model"]),
        by_version=from_parts(average_output_by_version, sql["by_version"]),
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def parse_error(text: Any) -> dict[str, Any]:
    """A stored `error` (JSON text from the query) as a dict; text that is not JSON as the message."""
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"message": text}
    return value if isinstance(value, dict) else {"message": value}


def dashboard_json(d: Dashboard) -> dict[str, Any]:
    """The dashboard's figures as JSON: each section is {"error": …} when not available."""

    def section(s: Section[Any], value: Callable[[Any], Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"sql": s.sql} if s.sql else {}
        if s.error is not None or s.value is None:
            out["error"] = s.error
        else:
            out["rows"] = value(s.value)
        return out

    def stack(s: Stack) -> list[dict[str, Any]]:
        named = [*s.series, *([("(other)", s.other)] if s.other else [])]
        return [
            {
                "day": day,
                "total": s.day_totals[i],
                "by": [{"name": k, "cost_usd": v[i]} for k, v in named if v[i]],
            }
            for i, day in enumerate(s.days)
        ]

    def ranked(rows: list[Ranked]) -> list[dict[str, Any]]:
        return [{"name": r.name, "calls": r.calls, "cost_usd": r.cost_usd} for r in rows]

    def errors(result: QueryResult) -> list[dict[str, Any]]:
        out = []
        for row in result.rows:
            r = dict(zip(result.columns, row, strict=True))
            keep = ("id", "timestamp", "model", "feature", "user_id")
            out.append({**{k: r.get(k) for k in keep}, "error": parse_error(r.get("error"))})
        return out

    return {
        "period": {
            "days": d.period.days,
            "first": d.period.first.isoformat(),
            "last": d.period.last.isoformat(),
        },
        "totals": section(
            d.totals,
            lambda t: {
                "calls": t.calls,
                "errors": t.errors,
                "error_rate": t.error_rate,
                "priced_calls": t.priced_calls,
                "cost_usd": t.cost_usd,
            },
        ),
        "cost_by_model": section(d.cost_by_model, stack),
        "cost_by_feature": section(d.cost_by_feature, stack),
        "calls_by_day": section(
            d.calls_by_day,
            lambda rows: [
                {"day": r.day, "calls": r.calls, "errors": r.errors, "error_rate": r.error_rate} for r in rows
            ],
        ),
        "latency_by_model": section(
            d.latency,
            lambda rows: [
                {"model": r.model, "calls": r.calls, "p50_ms": r.p50_ms, "p95_ms": r.p95_ms} for r in rows
            ],
        ),
        "top_users": section(d.top_users, ranked),
        "top_features": section(d.top_features, ranked),
        "recent_errors": section(d.recent_errors, errors),
        "calls_by_model": section(
            d.by_model, lambda rows: [{"model": m, "calls": n, "cost_usd": c} for m, n, c in rows]
        ),
        "output_tokens_by_version": section(
            d.by_version,
            lambda rows: [{"prompt_template_version": v, "avg_output_tokens": a} for v, a in rows],
        ),
    }
