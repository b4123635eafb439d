"""Drift over time: per feature and UTC day, the mean output tokens per call, the refusal rate
and the tool-call rate, with the days each of the feature's prompt versions and models first
appeared — so that a change is seen on the day it began, beside what was new that day.

Where each figure comes from, and what it costs:
- calls and output tokens per day: `daily` (both tiers, a few hundred rows);
- the first day of each version and model: `daily` over all its days, so that a version
  which came before the period is not taken for new;
- the rates: a refusal is told from the response, and a call's tool calls are not summed in
  `daily` as calls that made one, so both are read from the kept calls
  (`llmlog.analysis.kept_calls`, as drift and compare read them), one UTC day at a time. Each
  day's counts are kept in a `DayCache` while that day's `daily` sums stay the same, so a
  view of 30 days reads only the days that changed since the last (usually today). Days are
  read newest first within a time limit; a day left unread has no rates, and the next view
  reads on from there. A day whose calls retention has dropped has none either.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from llmlog.analysis import kept_calls
from llmlog.analysis.dashboard import Period, day_param, time_param
from llmlog.analysis.days import DayCache, cached_days
from llmlog.store import ReadOnlyError, Store

TOP = 8  # features drawn when none is asked for, most calls first
OTHERS = 100  # the features past those named, to be asked for one by one
BUDGET_S = 5.0  # reading the kept calls, in one view
DAILY_TIMEOUT_S = 5.0


@dataclass
class Day:
    """One feature's figures on one UTC day."""

    day: str
    calls: int  # in `daily`: every call, kept or not
    output_tokens: float | None  # mean per call, over the calls with a count
    calls_read: int = 0  # kept calls the rates are of (0: none kept, or not read in time)
    refusals: int = 0
    tool_calls: int = 0  # calls that made one or more

    @property
    def refusal_rate(self) -> float | None:
        return self.refusals / self.calls_read if self.calls_read else None

    @property
    def tool_call_rate(self) -> float | None:
        return self.tool_calls / self.calls_read if self.calls_read else None

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "calls": self.calls,
            "output_tokens": self.output_tokens,
            "calls_read": self.calls_read,
            "refusals": self.refusals,
            "refusal_rate": self.refusal_rate,
            "tool_calls": self.tool_calls,
            "tool_call_rate": self.tool_call_rate,
        }


@dataclass(frozen=True)
class Appearance:
    """The first UTC day with a call of one of a feature's prompt versions or models."""

    kind: str  # "version" or "model"
    name: str
    day: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "day": self.day}


@dataclass
class Feature:
    feature: str | None
    days: list[Day]  # every day of the period, oldest first
    appeared: list[Appearance]  # each version and model of it, by first day (all time)

    @property
    def calls(self) -> int:
        return sum(d.calls for d in self.days)

    def marks(self, period: Period) -> list[Appearance]:
        """The appearances within the period: what its charts mark."""
        first, last = period.first.isoformat(), period.last.isoformat()
        return [a for a in self.appeared if first <= a.day <= last]

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "calls": self.calls,
            "days": [d.to_json() for d in self.days],
            "appeared": [a.to_json() for a in self.appeared],
        }


@dataclass
class DriftByDay:
    period: Period
    features: list[Feature]  # most calls in the period first
    more: int = 0  # features with calls in the period left out (past `top`)
    others: list[str | None] = field(default_factory=list)  # the first OTHERS of them, by calls
    unread: list[str] = field(default_factory=list)  # days whose kept calls were not read in time

    def to_json(self) -> dict[str, Any]:
        return {
            "period": {
                "days": self.period.days,
                "first": self.period.first.isoformat(),
                "last": self.period.last.isoformat(),
            },
            "features": [f.to_json() for f in self.features],
            "more_features": self.more,
            "other_features": self.others,
            "unread_days": self.unread,
        }


@dataclass
class DayRates:
    """One UTC day of kept calls, per feature: [calls, refusals, calls that made a tool call]."""

    by_feature: dict[str | None, list[int]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return 1 + 3 * len(self.by_feature)


def read_rates(store: Store, day: date, timeout_s: float) -> DayRates:
    """The kept calls of one UTC day (through the timestamp index), counted per feature."""
    part = DayRates()
    bounds = time_param(store, day), time_param(store, day + timedelta(days=1))
    for kept in kept_calls.read(store, ["feature"], *bounds, timeout_s=timeout_s, limit=50_000_000):
        counts = part.by_feature.get(kept.values[0])
        if counts is None:
            counts = part.by_feature[kept.values[0]] = [0, 0, 0]
        counts[0] += 1
        counts[1] += kept.declined()
        counts[2] += kept.tools > 0
    return part


def _rows(store: Store, sql: str, params: list[Any]) -> list[Any]:
    result = store.internal_query(sql, params, timeout_s=DAILY_TIMEOUT_S, limit=1_000_000)
    if result.truncated:
        raise ReadOnlyError("too many groups in the daily rollup to read in one view")
    return result.rows


def _text(value: Any) -> str:
    # `daily.day`: text on SQLite, a date elsewhere.
    return value.isoformat() if isinstance(value, date) else str(value)


def first_days(store: Store, feature: str | None = None) -> dict[str | None, list[Appearance]]:
    """Each feature's prompt versions and models by the first day they were called (`daily`,
    both tiers), oldest first; only `feature`'s when one is named."""
    p = store.dialect.placeholder
    where, params = (f"WHERE feature = {p}", [feature]) if feature is not None else ("", [])
    rows = _rows(
        store,
        f"SELECT feature, prompt_template_version, model, min(day) FROM daily {where}"
        " GROUP BY feature, prompt_template_version, model",
        params,
    )
    firsts: dict[tuple[Any, str, str], str] = {}
    for f, version, model, day in rows:
        for kind, name in (("version", version), ("model", model)):
            if name is not None:
                key = (f, kind, str(name))
                firsts[key] = min(firsts.get(key, "9999"), _text(day))
    out: dict[str | None, list[Appearance]] = {}
    for (f, kind, name), day in firsts.items():
        out.setdefault(f, []).append(Appearance(kind, name, day))
    for appeared in out.values():
        appeared.sort(key=lambda a: (a.day, a.kind != "version", a.name))
    return out


def drift_by_day(
    reading: Callable[[], AbstractContextManager[Store]],
    period: Period,
    cache: DayCache[DayRates] | None = None,
    budget_s: float = BUDGET_S,
    feature: str | None = None,
    top: int = TOP,
) -> DriftByDay:
    """Per feature (the `top` with most calls in the period, or only `feature`), the
    period's figures per UTC day and the first days of its versions and models. `reading()`
    lends the store for one query at a time (the web app's readers); `cache` keeps the days'
    rates between views (threads may share it: at worst two read one day). Raises ReadOnlyError when
    the store stops a read of `daily` at its time limit; the kept calls are read within
    `budget_s`, and the days left are named in `unread`."""
    with reading() as store:
        p = store.dialect.placeholder
        rows = _rows(
            store,
            "SELECT day, feature, sum(calls), sum(output_tokens), sum(output_calls), sum(tool_calls)"
            f" FROM daily WHERE day >= {p} AND day <= {p} GROUP BY day, feature",
            [day_param(store, period.first), day_param(store, period.last)],
        )
    index = {d: i for i, d in enumerate(period.dates())}
    per: dict[str | None, list[list[int]]] = {}  # feature → per day [calls, output tokens, output calls]
    fingerprints: dict[str, list[int]] = {}
    for day, f, calls, output, output_calls, tools in rows:
        d = _text(day)
        if d not in index:  # (a day outside the period, which no engine should give)
            continue
        cells = per.setdefault(f, [[0, 0, 0] for _ in index])[index[d]]
        for i, v in enumerate((calls, output, output_calls)):
            cells[i] += int(v or 0)
        # What `daily` says of the day: a new call there changes it, and so the day is read again.
        sums = fingerprints.setdefault(d, [0, 0, 0, 0])
        for i, v in enumerate((calls, output, output_calls, tools)):
            sums[i] += int(v or 0)
    ranked = sorted(per, key=lambda f: (-sum(c[0] for c in per[f]), f is None, f or ""))
    ranked = [f for f in ranked if sum(c[0] for c in per[f])]
    # A feature asked for by name is shown alone (a NULL feature has no name to ask by).
    shown: list[str | None] = ranked[:top] if feature is None else [f for f in ranked if f == feature]
    with reading() as store:
        appeared = first_days(store, feature)
    parts, unread = cached_days(
        reading,
        {d: tuple(v) for d, v in fingerprints.items()},
        cache if cache is not None else DayCache(),
        budget_s,
        read_rates,
        # A day too big for one view's time is read on later (`llmlog.web.drift`), not refused.
        raise_first=False,
    )
    rates = dict(parts)
    out = []
    for f in shown:
        days = []
        for d, (calls, output, output_calls) in zip(period.dates(), per[f], strict=True):
            day = Day(d, calls, output / output_calls if output_calls else None)
            counted = rates[d].by_feature.get(f) if d in rates else None
            if counted:
                day.calls_read, day.refusals, day.tool_calls = counted
            days.append(day)
        out.append(Feature(f, days, appeared.get(f, [])))
    return DriftByDay(
        period,
        out,
        more=0 if feature is not None else max(0, len(ranked) - top),
        others=[] if feature is not None else ranked[top : top + OTHERS],
        unread=sorted(unread),
    )
