"""Investigations: the answers people would otherwise write SQL for, over either tier.

Each report reads `daily` (hot and cold alike, so it works across a retention run) and, for
examples to read, the calls still kept.

- **errors**: errors grouped by type, model and feature over a period: how many, the share
  of that model and feature's calls, per day, whether the type is new (none in the weeks
  before), and the newest calls that failed that way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from llmlog.reports import Period
from llmlog.store import Store
from llmlog.store.rollup import counts_of, error_type_sql

REPORTS = {"errors": "errors by type, model and feature: counts per day, rates, new types, example calls"}


@dataclass
class ErrorGroup:
    error_type: str
    model: str | None
    feature: str | None
    errors: int
    calls: int  # all calls of this model and feature in the period
    per_day: list[int]  # over the period's days, oldest first
    new: bool  # no error of this type for this model and feature in the weeks before
    examples: list[str] = field(default_factory=list)  # call ids, newest first (kept calls only)

    @property
    def rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "error_type": self.error_type,
            "model": self.model,
            "feature": self.feature,
            "errors": self.errors,
            "calls": self.calls,
            "rate": self.rate,
            "per_day": self.per_day,
            "new": self.new,
            "examples": self.examples,
        }


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def errors_report(
    store: Store, period: Period, weeks_before: int = 4, top: int = 20, examples: int = 3
) -> list[ErrorGroup]:
    """The period's errors by (type, model, feature), most first."""
    p = store.placeholder
    since = period.first - timedelta(weeks=weeks_before)
    bounds: list[Any] = [since, period.last]
    if store.dialect == "sqlite":
        bounds = [d.isoformat() for d in bounds]
    rows = store.query(
        f"SELECT day, model, feature, calls, error_types FROM daily WHERE day >= {p} AND day <= {p}",
        bounds,
        timeout_s=5.0,
        limit=5_000_000,
    ).rows
    index = {d: i for i, d in enumerate(period.dates())}
    calls: dict[tuple[Any, Any], int] = {}
    groups: dict[tuple[str, Any, Any], ErrorGroup] = {}
    seen_before: set[tuple[str, Any, Any]] = set()
    for day, model, feature, n, types in rows:
        d = _day(day)
        if d < period.first:
            seen_before.update((t, model, feature) for t, k in counts_of(types).items() if k)
            continue
        calls[(model, feature)] = calls.get((model, feature), 0) + int(n)
        for error_type, k in counts_of(types).items():
            g = groups.get((error_type, model, feature))
            if g is None:
                g = groups[(error_type, model, feature)] = ErrorGroup(
                    error_type, model, feature, 0, 0, [0] * period.days, False
                )
            g.errors += k
            g.per_day[index[d.isoformat()]] += k
    out = sorted(groups.values(), key=lambda g: (-g.errors, g.error_type, str(g.model), str(g.feature)))[:top]
    for g in out:
        g.calls = calls.get((g.model, g.feature), 0)
        g.new = (g.error_type, g.model, g.feature) not in seen_before
        if examples:
            g.examples = _examples(store, period, g, examples)
    return out


def _examples(store: Store, period: Period, g: ErrorGroup, n: int) -> list[str]:
    p = store.placeholder
    same = "IS NOT DISTINCT FROM" if store.dialect == "postgres" else "IS"
    start = datetime(period.first.year, period.first.month, period.first.day, tzinfo=UTC)
    end = datetime(period.end.year, period.end.month, period.end.day, tzinfo=UTC)
    times: list[Any] = (
        [start, end] if store.dialect == "postgres" else [start.date().isoformat(), end.date().isoformat()]
    )
    sql = (
        f"SELECT id FROM call_data WHERE error IS NOT NULL AND timestamp >= {p} AND timestamp < {p}"
        f" AND model {same} {p} AND feature {same} {p} AND {error_type_sql(store.dialect, 'error')} = {p}"
        f" ORDER BY timestamp DESC LIMIT {int(n)}"
    )
    return [
        str(r[0]) for r in store.query(sql, [*times, g.model, g.feature, g.error_type], timeout_s=5.0).rows
    ]


def sparkline(values: Iterable[int]) -> str:
    """Counts as a row of block characters, the highest full."""
    values = list(values)
    top = max(values, default=0)
    bars = " ▁▂▃▄▅▆▇█"
    return "".join(bars[0 if v == 0 else max(1, round(v / top * 8))] for v in values)
