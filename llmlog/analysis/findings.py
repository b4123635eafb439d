"""Findings: what is wrong now, one ranked list (`/findings`, `llmlog check`, the alerts).

Each finding is one sentence with its numbers, a small chart, and links to its evidence. It
is built from the reports (`llmlog.analysis.reports`): new error types and error-rate jumps,
drift flags per feature and version, over-routing, users far above their peers, the
costliest sessions, and cost this week against last.

A finding's `key` names what it is about, not its numbers ("drift:code-review:v2:output_tokens"),
so that the same finding found again is known as the same: alerts post it once, until an
evaluation no longer finds it (it clears).

Each is about the last WEEK days (through today, UTC) against the BASELINE days before; its
chart is a figure per day over both. How findings are ranked is `score`'s comment.

`Latest` keeps the latest evaluation for the web pages: one at a time, at most every few
minutes, off the requests' path.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from llmlog.analysis import reports
from llmlog.analysis.dashboard import DailyRow, Period, day_param, read_daily
from llmlog.core.record import parse_timestamp
from llmlog.store import ReadOnlyError, Store

log = logging.getLogger(__name__)

# What a piece of evidence opens, and the role that page opens to (`llmlog.web.auth`): the
# reports are figures, open to viewers; calls, sessions and users hold text, for debuggers.
EVIDENCE_ROLES = {
    "calls": "debugger",
    "session": "debugger",
    "user": "debugger",
    "traces": "viewer",
    "compare": "viewer",
    "report": "viewer",
}


@dataclass(frozen=True)
class Evidence:
    """A link to what a finding rests on: a page of the UI, by kind and its parameters."""

    label: str  # what a person clicks: "the failed calls", "v1 against v2", "the session"
    kind: str  # one of EVIDENCE_ROLES
    params: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return EVIDENCE_ROLES[self.kind]

    @property
    def path(self) -> str:
        """The page, as a path and query on the UI."""
        p = dict(self.params)
        if self.kind == "calls":
            return "/?" + urlencode(p)
        if self.kind in ("session", "user"):
            page, column, param = (
                ("sessions", "session_id", "session")
                if self.kind == "session"
                else ("users", "user_id", "user")
            )
            who = p.pop(column)
            # A "." or ".." path segment is resolved away by the browser however it is
            # encoded ("/sessions/.." opens "/"): such an id's calls instead, for the same role.
            if who in (".", ".."):
                return "/?" + urlencode({param: who})
            return f"/{page}/" + quote(who, safe="")
        if self.kind == "traces":
            return "/traces?" + urlencode(p)
        if self.kind == "compare":
            return "/reports/compare?" + urlencode(p)
        return "/reports/" + quote(p.pop("name"), safe="") + ("?" + urlencode(p) if p else "")

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "params": self.params, "path": self.path}


@dataclass
class Finding:
    # "new_error", "error_rate", "drift", "over_routing", "user_outlier", "costly_session",
    # "cost_week", "rule" (a user's rule, `llmlog.analysis.alerts`)
    kind: str
    key: str  # what it is about, stable across evaluations (see the module's docstring)
    score: float  # its rank: higher first
    sentence: str  # one sentence, with its numbers
    numbers: dict[str, Any] = field(default_factory=dict)  # the figures the sentence gives
    chart: list[tuple[str, float | None]] = field(default_factory=list)  # (UTC day, value), oldest first
    chart_label: str = ""  # what the chart's values are: "errors per day", "output tokens per call"
    evidence: list[Evidence] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "score": self.score,
            "sentence": self.sentence,
            "numbers": self.numbers,
            "chart": {"label": self.chart_label, "points": [list(p) for p in self.chart]},
            "evidence": [e.to_json() for e in self.evidence],
        }


def evaluate(store: Store, now: datetime | None = None) -> list[Finding]:
    """The findings in `store` as of `now` (default: the present), ranked, highest first."""
    return evaluation(store, now).findings


# ---------------------------------------------------------------- the periods and thresholds

WEEK = 7  # days: what each finding is about, the last WEEK days through today (UTC)
BASELINE = 28  # days before the week, against which a change is measured (the drift report's)
CHART_DAYS = WEEK + BASELINE  # a chart shows the week and its baseline, a figure per day

# A new error type is a finding once this many calls failed that way in the week (fewer is
# the noise of a large store: one timeout of a kind never seen, not something broken), where
# its feature and model made reports.MIN_CALLS calls or more in the weeks before without it.
NEW_ERROR_CALLS = 5
# An error rate has jumped when the week's is at least twice the baseline's, a point or more
# higher, and the two-proportion test says it is no chance (reports.ALPHA).
ERROR_RATE_RATIO = 2.0
ERROR_RATE_POINTS = 0.01
# Cost this week against last: a finding when up by a quarter and by a dollar or more (a
# rise of cents is no one's problem, whatever its percentage).
COST_RISE = 0.25
COST_RISE_USD = 1.0
# Users far above their peers on calls or cost, and costly sessions: at most this many each,
# the furthest first (a store with a long tail of heavy users lists its heaviest, not all).
TOP_PEOPLE = 3

# Whether a change is bad news, by metric: fewer errors, refusals, ms or dollars is not
# "something wrong"; answers or tool use moving either way may be.
WORSE_WHEN_HIGHER = {"error_rate", "refusal_rate", "latency_ms", "cost_usd"}

# ---------------------------------------------------------------- ranking

# A finding's score is its kind's weight times 1 to 2 by its strength: how far past its
# threshold it is, 0 at the threshold and 1 at a stated "twice as bad" point (each kind's
# `_score` call says which), clamped to [0, 1]. The weights order what a reader should see
# first: calls failing (people see errors), then a user whose calls fail and answers that
# decline, then other changes in the answers, then money, then who spends it. Within a kind
# the stronger comes first; a strong finding passes a weak one of a heavier kind only when
# the weights are within 2× (answers three times as long above refusals up a few points,
# never a heavy user above a new error).
WEIGHTS = {
    "new_error": 60.0,
    "error_rate": 60.0,
    "user_errors": 50.0,
    "drift_declines": 50.0,  # drift in the refusal or error rate
    "drift": 40.0,
    "over_routing": 30.0,
    "cost_week": 30.0,
    "user_outlier": 20.0,
    "costly_session": 10.0,
}


def score(weight: str, strength: float) -> float:
    """WEIGHTS[weight] × (1 + strength), strength clamped to [0, 1] (see above)."""
    s = strength if math.isfinite(strength) else 1.0
    return round(WEIGHTS[weight] * (1 + min(max(s, 0.0), 1.0)), 2)


# ---------------------------------------------------------------- how figures are said


def usd(v: float) -> str:
    """Dollars to the cent, and to three significant figures below ten cents ($0.00336)."""
    if v <= 0 or v >= 0.0995:
        return f"${v:,.2f}"
    return f"${v:.{max(2, 2 - math.floor(math.log10(v)))}f}"


def _named(value: Any, none: str) -> str:
    return none if value is None else str(value)


def _feature(value: Any) -> str:
    return _named(value, "(no feature)")


def _version(feature: Any, version: Any) -> str:
    """A version as people say it: "code-review@v2" as stored, else "search v3"."""
    if version == reports.ALL_VERSIONS:
        return f"{_feature(feature)} (all versions)"
    v = _named(version, "(no version)")
    return v if feature is not None and v.startswith(f"{feature}@") else f"{_feature(feature)} {v}"


METRIC_WORDS = {
    "output_tokens": "output tokens per call",
    "latency_ms": "latency per call",
    "cost_usd": "cost per call",
    "error_rate": "error rate",
    "tool_call_rate": "share of calls making tool calls",
    "refusal_rate": "refusal rate",
}


def figure(metric: str, v: float | None) -> str:
    if v is None:
        return "none"
    if metric in reports.RATES:
        return f"{v:.1%}"
    if metric == "cost_usd":
        return usd(v)
    return f"{v:,.0f} ms" if metric == "latency_ms" else f"{v:,.0f}"


def _moved(c: reports.Change) -> str:
    """How far: "2.9×" for a mean (or its effect where the before is 0), points for a rate."""
    if c.metric in reports.RATES:
        return f"{((c.after or 0) - (c.before or 0)) * 100:+.1f} points"
    if c.before and c.after is not None:
        return f"{c.after / c.before:.1f}×"
    return f"{c.effect or 0:+.2f} sd"


def _strength(c: reports.Change) -> float:
    """A rate's change from 5 points (flagged) to 20; a mean's from half an sd to two."""
    effect = abs(c.effect or 0.0)
    if c.metric in reports.RATES:
        return (effect - reports.MIN_EFFECT_RATE) / 0.15
    return (effect - reports.MIN_EFFECT_SD) / 1.5


# ---------------------------------------------------------------- one evaluation


@dataclass
class Evaluation:
    at: datetime  # the moment it is of
    findings: list[Finding]  # ranked, highest first
    skipped: dict[str, str] = field(default_factory=dict)  # a part not read → why
    took_s: float = 0.0

    @property
    def unsure(self) -> tuple[str, ...]:
        """The kinds of finding the parts skipped would have found: none of them is known
        to have cleared (what the alerts must not take for cleared)."""
        return tuple(k for part in self.skipped for k in PART_KINDS.get(part, ()))

    def to_json(self, shown: Callable[[Evidence], bool] = lambda e: True) -> dict[str, Any]:
        """As JSON, with only the evidence `shown` allows (the web: what the reader may open)."""
        return {
            "at": self.at.isoformat(),
            "findings": [
                {**f.to_json(), "evidence": [e.to_json() for e in f.evidence if shown(e)]}
                for f in self.findings
            ],
            "skipped": self.skipped,
            "took_s": round(self.took_s, 3),
        }


@dataclass
class _Ask:
    """What every part reads from: the store, the moment, the week and the chart's days."""

    store: Store
    now: datetime

    @functools.cached_property
    def week(self) -> Period:
        return Period.ending(WEEK, self.now.date())

    @functools.cached_property
    def chart(self) -> Period:
        return Period.ending(CHART_DAYS, self.now.date())

    @functools.cached_property
    def daily(self) -> list[DailyRow]:
        """`daily` over the chart's days, per day, feature and model."""
        return read_daily(self.store, self.chart, timeout_s=10.0)

    def series(self, values: Mapping[str, float | None]) -> list[tuple[str, float | None]]:
        """(day, value) over the chart's days, None where `values` has none."""
        return [(d, values.get(d)) for d in self.chart.dates()]

    def calls(self, label: str, filters: dict[str, Any], since: date | None = None) -> list[Evidence]:
        """A link to the calls list with `filters`, since the week began (or `since`); none
        when a value is NULL, which no filter can ask for (empty means "any")."""
        if any(v is None for v in filters.values()):
            return []
        params = {k: str(v) for k, v in filters.items()}
        return [Evidence(label, "calls", {**params, "since": (since or self.week.first).isoformat()})]

    def report(self, label: str, name: str, days: int = WEEK) -> Evidence:
        return Evidence(label, "report", {"name": name, "days": str(days)})


def evaluation(store: Store, now: datetime | None = None) -> Evaluation:
    """Every part's findings, ranked. A part that cannot be read (the store stops a query at
    its time limit, say) is left out and said in `skipped`; the others still count."""
    started = time.perf_counter()
    # In UTC: the days a finding is about are UTC days (a moment given in another zone may
    # fall on another date there), and a naive moment is UTC, as the store keeps its times.
    ask = _Ask(store, parse_timestamp(now) if now is not None else datetime.now(UTC))
    found: list[Finding] = []
    skipped: dict[str, str] = {}
    for name, part in PARTS.items():
        try:
            found += part(ask)
        except ReadOnlyError as exc:
            skipped[name] = str(exc)
        except Exception as exc:  # one part failing (the server gone, a bug) leaves the others
            log.warning("llmlog: the %s findings could not be evaluated", name, exc_info=True)
            skipped[name] = str(exc) or type(exc).__name__
    found.sort(key=lambda f: (-f.score, f.kind, f.key))
    return Evaluation(ask.now, found, skipped, time.perf_counter() - started)


# ---------------------------------------------------------------- errors


def _errors(ask: _Ask) -> list[Finding]:
    out: list[Finding] = []
    groups = reports.errors_report(ask.store, ask.week, weeks_before=BASELINE // 7, top=10_000, examples=0)
    # "None in the weeks before" says something only where there were calls to fail then: a
    # feature or model new this week has only new error types.
    first = ask.week.first.isoformat()
    before: dict[tuple[Any, Any], int] = {}
    for r in ask.daily:
        if r.day < first:
            before[(r.feature, r.model)] = before.get((r.feature, r.model), 0) + r.calls
    new_in: set[tuple[Any, Any]] = set()
    for g in groups:
        if not g.new or g.errors < NEW_ERROR_CALLS or before.get((g.feature, g.model), 0) < reports.MIN_CALLS:
            continue
        new_in.add((g.feature, g.model))
        where = f"{_feature(g.feature)} ({_named(g.model, 'no model')})"
        out.append(
            Finding(
                kind="new_error",
                key=f"new_error:{g.feature}:{g.model}:{g.error_type}",
                # From 0 to 10% of the calls failing that way.
                score=score("new_error", g.rate / 0.10),
                sentence=(
                    f"New error {g.error_type} on {where}: {g.errors:,} calls failed that way in the last"
                    f" {WEEK} days, {g.rate:.1%} of its {g.calls:,} calls; none in the {BASELINE // 7} weeks"
                    " before."
                ),
                numbers={
                    "error_type": g.error_type,
                    "feature": g.feature,
                    "model": g.model,
                    "errors": g.errors,
                    "calls": g.calls,
                    "rate": g.rate,
                },
                # None in the weeks before, by what makes it new.
                chart=ask.series(
                    {d: 0.0 for d in ask.chart.dates()[:BASELINE]}
                    | {d: float(k) for d, k in zip(ask.week.dates(), g.per_day, strict=True)}
                ),
                chart_label=f"{g.error_type} per day",
                evidence=[
                    *ask.calls(
                        "the failed calls", {"feature": g.feature, "model": g.model, "status": "error"}
                    ),
                    ask.report("the errors report", "errors"),
                ],
            )
        )
    return out + _error_rates(ask, new_in)


def _error_rates(ask: _Ask, explained: set[tuple[Any, Any]]) -> list[Finding]:
    """Error-rate jumps per feature and model, the week against the baseline. A feature and
    model with a new error type is left to that finding: the new type says more."""
    first = ask.week.first.isoformat()
    totals: dict[tuple[Any, Any], list[int]] = {}  # → [calls before, errors before, calls, errors]
    days: dict[tuple[Any, Any], dict[str, float | None]] = {}
    for r in ask.daily:
        t = totals.setdefault((r.feature, r.model), [0, 0, 0, 0])
        i = 2 if r.day >= first else 0
        t[i] += r.calls
        t[i + 1] += r.errors
        days.setdefault((r.feature, r.model), {})[r.day] = r.errors / r.calls if r.calls else None
    out = []
    for (feature, model), (nb, kb, na, ka) in totals.items():
        before, after, diff, p = reports.rate_change(kb, nb, ka, na)
        if (
            (feature, model) in explained
            or p is None
            or p >= reports.ALPHA
            or before is None
            or after is None
        ):
            continue
        if after < ERROR_RATE_RATIO * before or (diff or 0) < ERROR_RATE_POINTS:
            continue
        where = f"{_feature(feature)} on {_named(model, '(no model)')}"
        out.append(
            Finding(
                kind="error_rate",
                key=f"error_rate:{feature}:{model}",
                score=score("error_rate", (after - before) / 0.10),  # up 10 points: twice the weight
                sentence=(
                    f"{where} failed {after:.1%} of calls in the last {WEEK} days ({ka:,} of {na:,}),"
                    f" up from {before:.1%} in the {BASELINE} days before."
                ),
                numbers={
                    "feature": feature,
                    "model": model,
                    "rate": after,
                    "rate_before": before,
                    "errors": ka,
                    "calls": na,
                    "p": p,
                },
                chart=ask.series(days.get((feature, model), {})),
                chart_label="error rate per day",
                evidence=[
                    *ask.calls("the failed calls", {"feature": feature, "model": model, "status": "error"}),
                    ask.report("the errors report", "errors"),
                ],
            )
        )
    return out


# ---------------------------------------------------------------- drift, and each version against the last

# A day's figures of one feature and version, summed from the kept calls for the charts.
_CALLS, _ERRORS, _TOOLS, _REFUSED = 0, 1, 2, 3
_SUMS = {"output_tokens": 4, "latency_ms": 6, "cost_usd": 8}  # sum at i, how many at i + 1
_RATE_AT = {"error_rate": _ERRORS, "tool_call_rate": _TOOLS, "refusal_rate": _REFUSED}


class _Days:
    """Per feature and version, per day of the chart: what the drift's charts show."""

    def __init__(self, chart: Period) -> None:
        self.first, self.dates = chart.first, chart.dates()
        self.tally: dict[tuple[Any, Any], dict[int, list[float]]] = {}

    def add(self, c: reports.CallFigures) -> None:
        i = (c.timestamp.date() - self.first).days
        if not 0 <= i < len(self.dates):
            return
        t = self.tally.setdefault((c.feature, c.version), {}).get(i)
        if t is None:
            t = self.tally[(c.feature, c.version)][i] = [0.0] * 10
        t[_CALLS] += 1
        t[_ERRORS] += c.failed
        t[_TOOLS] += c.tools
        t[_REFUSED] += c.refused
        for metric, value in (
            ("output_tokens", c.output_tokens),
            ("latency_ms", c.latency_ms),
            ("cost_usd", c.cost_usd),
        ):
            if value is not None:
                t[_SUMS[metric]] += value
                t[_SUMS[metric] + 1] += 1

    def series(self, feature: Any, version: Any, metric: str) -> list[tuple[str, float | None]]:
        """The metric per day, of one version or (ALL_VERSIONS) all the feature's."""
        keys = [k for k in self.tally if k[0] == feature and version in (k[1], reports.ALL_VERSIONS)]
        out: list[tuple[str, float | None]] = []
        for i, d in enumerate(self.dates):
            t = [sum(vs) for vs in zip(*(self.tally[k][i] for k in keys if i in self.tally[k]), strict=True)]
            if not t:
                out.append((d, None))
            elif metric in _RATE_AT:
                out.append((d, t[_RATE_AT[metric]] / t[_CALLS]))
            else:
                n = t[_SUMS[metric] + 1]
                out.append((d, t[_SUMS[metric]] / n if n else None))
        return out


def _bad_news(c: reports.Change) -> bool:
    return c.metric not in WORSE_WHEN_HIGHER or (c.effect or 0) > 0


def _drift(ask: _Ask) -> list[Finding]:
    days = _Days(ask.chart)
    read = reports.drift_and_steps(ask.store, WEEK, BASELINE, ask.now, each=days.add)
    out: list[Finding] = []
    explained: set[tuple[Any, Any, str]] = set()  # (feature, version, metric) a step accounts for
    for step in read.steps:
        for c in step.flagged:
            if not _bad_news(c):
                continue
            explained |= {(step.feature, step.new, c.metric), (step.feature, reports.ALL_VERSIONS, c.metric)}
            out.append(_step_finding(ask, days, step, c))
    for c in read.changes:
        # The error rate is the error findings' (from `daily`, over both tiers).
        if c.metric == "error_rate" or not _bad_news(c) or (c.feature, c.version, c.metric) in explained:
            continue
        out.append(_drift_finding(ask, days, c))
    return out


def _drift_weight(c: reports.Change) -> str:
    return "drift_declines" if c.metric in ("refusal_rate", "error_rate") else "drift"


def _step_finding(ask: _Ask, days: _Days, step: reports.Comparison, c: reports.Change) -> Finding:
    new, old = _version(step.feature, step.new), _version(step.feature, step.old)
    sentence = (
        f"{new}: {METRIC_WORDS[c.metric]} {figure(c.metric, c.after)} against"
        f" {figure(c.metric, c.before)} for {old}, the version before it ({_moved(c)};"
        f" {c.n_after:,} and {c.n_before:,} calls in the last {CHART_DAYS} days)."
    )
    evidence = [
        Evidence(
            f"{old} against {new}",
            "compare",
            {"feature": step.feature, "old": step.old, "new": step.new, "days": str(CHART_DAYS)},
        ),
        *ask.calls(f"the calls of {new}", {"feature": step.feature, "version": step.new}, ask.chart.first),
        _by_day(step.feature),
    ]
    return _change_finding(days, step.feature, step.new, c, sentence, evidence, previous=step.old)


def _change_finding(
    days: _Days,
    feature: str | None,
    version: str | None,
    c: reports.Change,
    sentence: str,
    evidence: list[Evidence],
    **more: Any,
) -> Finding:
    """A drift finding: `c`, a change in one metric of a feature's version (against the
    version before it, or against its own earlier days), said in `sentence`."""
    return Finding(
        kind="drift",
        key=f"drift:{feature}:{version}:{c.metric}",
        score=score(_drift_weight(c), _strength(c)),
        sentence=sentence,
        numbers={
            "feature": feature,
            "version": version,
            **more,
            "metric": c.metric,
            "value": c.after,
            "before": c.before,
            "effect": c.effect,
            "p": c.p,
            "calls": c.n_after,
            "calls_before": c.n_before,
        },
        chart=days.series(feature, version, c.metric),
        chart_label=f"{METRIC_WORDS[c.metric]} per day, {_version(feature, version)}",
        evidence=evidence,
    )


def _by_day(feature: str) -> Evidence:
    """The feature's output length, refusals and tool calls per day, with the days each
    version and model appeared marked (`llmlog.analysis.drift`)."""
    return Evidence(
        "its days, versions marked", "report", {"name": "drift-by-day", "feature": feature, "days": "30"}
    )


def _drift_finding(ask: _Ask, days: _Days, c: reports.Change) -> Finding:
    who = _version(c.feature, c.version)
    split = ask.now - timedelta(days=WEEK)
    one_version = {} if c.version == reports.ALL_VERSIONS else {"version": c.version}
    evidence = [
        ask.report("the drift report", "drift"),
        *ask.calls(f"the last {WEEK} days' calls", {"feature": c.feature, **one_version}),
    ]
    if c.feature is not None:
        at = {"feature": c.feature, "at": split.strftime("%Y-%m-%dT%H:%M"), "days": str(WEEK)}
        evidence.insert(0, Evidence(f"the {WEEK} days before and after", "compare", at))
        evidence.append(_by_day(c.feature))
    sentence = (
        f"{who}: {METRIC_WORDS[c.metric]} {figure(c.metric, c.after)} in the last {WEEK} days against"
        f" {figure(c.metric, c.before)} in the {BASELINE} days before ({_moved(c)};"
        f" {c.n_after:,} and {c.n_before:,} calls)."
    )
    return _change_finding(days, c.feature, c.version, c, sentence, evidence)


# ---------------------------------------------------------------- cost


def _cost(ask: _Ask) -> list[Finding]:
    r = reports.cost_report(ask.store, ask.week)
    per_day: dict[tuple[Any, Any], dict[str, float | None]] = {}
    for row in ask.daily:
        d = per_day.setdefault((row.feature, row.model), {})
        d[row.day] = (d.get(row.day) or 0.0) + row.cost_usd
    out = []
    for o in r.over_routing:
        out.append(
            Finding(
                kind="over_routing",
                key=f"over_routing:{o.feature}:{o.model}",
                # What it would have saved, from nothing to a tenth of the week's spend.
                score=score("over_routing", o.savings_usd / r.total_usd * 10 if r.total_usd else 0.0),
                sentence=(
                    f"{_feature(o.feature)} sent {o.calls:,} short calls ({o.avg_output_tokens:,.0f} output"
                    f" tokens on average, no tools) to {o.model} at {usd(o.cost_per_call)} a call, where"
                    f" {o.cheaper} answers its short calls at {usd(o.cheaper_cost_per_call)}:"
                    f" {usd(o.savings_usd)} more in the last {WEEK} days."
                ),
                numbers={
                    "feature": o.feature,
                    "model": o.model,
                    "cheaper": o.cheaper,
                    "calls": o.calls,
                    "avg_output_tokens": o.avg_output_tokens,
                    "cost_per_call": o.cost_per_call,
                    "cheaper_cost_per_call": o.cheaper_cost_per_call,
                    "savings_usd": o.savings_usd,
                },
                chart=ask.series(per_day.get((o.feature, o.model), {})),
                chart_label=f"cost per day on {o.model} (USD)",
                evidence=[
                    *ask.calls(f"the calls sent to {o.model}", {"feature": o.feature, "model": o.model}),
                    ask.report("the cost report", "cost"),
                ],
            )
        )
    return out + _cost_week(ask)


def _cost_week(ask: _Ask) -> list[Finding]:
    """Cost in the week against the week before it; the feature whose cost rose the most."""
    first = ask.week.first.isoformat()
    before = (ask.week.first - timedelta(days=WEEK)).isoformat()
    spent = [0.0, 0.0]  # the week before, the week
    by_feature: dict[Any, list[float]] = {}
    per_day: dict[str, float | None] = {}
    for r in ask.daily:
        per_day[r.day] = (per_day.get(r.day) or 0.0) + r.cost_usd
        if r.day >= before:
            i = 1 if r.day >= first else 0
            spent[i] += r.cost_usd
            by_feature.setdefault(r.feature, [0.0, 0.0])[i] += r.cost_usd
    last, this = spent
    # A store that began recording during the week before spent less in it only for the days
    # it did not record: the week before counts when calls were kept from its first day on.
    recorded = any(r.day <= before for r in ask.daily)
    if not recorded or last <= 0 or this - last < COST_RISE_USD or this < (1 + COST_RISE) * last:
        return []
    rise = this / last - 1
    feature, (f_last, f_this) = max(by_feature.items(), key=lambda kv: (kv[1][1] - kv[1][0], str(kv[0])))
    return [
        Finding(
            kind="cost_week",
            key="cost_week",
            score=score("cost_week", rise),  # from a quarter more to twice the week before
            sentence=(
                f"Cost in the last {WEEK} days: {usd(this)}, up {rise:.0%} from {usd(last)} in the {WEEK}"
                f" days before; {_feature(feature)} rose the most ({usd(f_this - f_last)} more)."
            ),
            numbers={
                "cost_usd": this,
                "cost_before": last,
                "rise": rise,
                "feature": feature,
                "feature_rise_usd": f_this - f_last,
            },
            chart=ask.series(per_day),
            chart_label="cost per day (USD)",
            evidence=[
                ask.report("the cost report, both weeks", "cost", 2 * WEEK),
                *ask.calls(f"the calls of {_feature(feature)}", {"feature": feature}, ask.week.first),
            ],
        )
    ]


# ---------------------------------------------------------------- people


def _people_days(ask: _Ask, column: str, value: str) -> dict[str, tuple[int, int, float]]:
    """One user's (or session's) calls, errors and cost per day over the chart's days."""
    p = ask.store.dialect.placeholder
    rows = ask.store.internal_query(
        f"SELECT day, SUM(calls), SUM(errors), SUM(cost_usd) FROM people_daily"
        f" WHERE {column} = {p} AND day >= {p} AND day <= {p} GROUP BY day",
        [value, day_param(ask.store, ask.chart.first), day_param(ask.store, ask.chart.last)],
        timeout_s=5.0,
    ).rows
    return {str(reports._day(d)): (int(n), int(e), float(c)) for d, n, e, c in rows}


def _people(ask: _Ask) -> list[Finding]:
    r = reports.spikes_report(ask.store, ask.week, top=TOP_PEOPLE)
    out: list[Finding] = []
    heavy = {"calls": 0, "cost_usd": 0}
    for o in sorted(r.outliers, key=lambda o: -(o.value / o.median if o.median else o.value)):
        if o.metric in heavy:
            heavy[o.metric] += 1
            if heavy[o.metric] <= TOP_PEOPLE:
                out.append(_heavy_user(ask, o))
        else:
            out.append(_failing_user(ask, o))
    for s in r.sessions:
        # Far past the median session and past the tail ordinary sessions run to: the
        # longest of many ordinary chats is several times the median, and no finding.
        if s.cost_usd > reports.FAR * max(r.median_session_usd, r.tail_session_usd) > 0:
            out.append(_costly_session(ask, s, r.median_session_usd))
    return out


def _user_evidence(ask: _Ask, user: str, **filters: str) -> list[Evidence]:
    return [
        Evidence("the user", "user", {"user_id": user}),
        *ask.calls("their calls", {"user": user, **filters}),
        ask.report("the spikes report", "spikes"),
    ]


def _failing_user(ask: _Ask, o: reports.Outlier) -> Finding:
    days = _people_days(ask, "user_id", o.user_id)
    return Finding(
        kind="user_outlier",
        key=f"user_outlier:{o.user_id}:error_rate",
        score=score("user_errors", o.value / 0.5),  # up to half their calls failing
        sentence=(
            f"{o.user_id}: {o.value:.1%} of their {o.calls:,} calls failed in the last {WEEK} days,"
            f" against {o.median:.1%} for the median user."
        ),
        numbers={
            "user_id": o.user_id,
            "metric": o.metric,
            "value": o.value,
            "median": o.median,
            "calls": o.calls,
        },
        chart=ask.series({d: (e / n if n else None) for d, (n, e, _) in days.items()}),
        chart_label=f"error rate per day, {o.user_id}",
        evidence=_user_evidence(ask, o.user_id, status="error"),
    )


def _heavy_user(ask: _Ask, o: reports.Outlier) -> Finding:
    days = _people_days(ask, "user_id", o.user_id)
    times = o.value / o.median if o.median else math.inf
    if o.metric == "cost_usd":
        said = (
            f"spent {usd(o.value)} in the last {WEEK} days, {times:,.0f}× the median user's {usd(o.median)}"
        )
        chart = {d: c for d, (_, _, c) in days.items()}
    else:
        said = (
            f"made {o.value:,.0f} calls in the last {WEEK} days,"
            f" {times:,.0f}× the median user's {o.median:,.0f}"
        )
        chart = {d: float(n) for d, (n, _, _) in days.items()}
    return Finding(
        kind="user_outlier",
        key=f"user_outlier:{o.user_id}:{o.metric}",
        # From FAR times the median user to a thousand times.
        score=score("user_outlier", math.log10(times / reports.FAR) / math.log10(1000 / reports.FAR)),
        sentence=f"{o.user_id} {said}.",
        numbers={
            "user_id": o.user_id,
            "metric": o.metric,
            "value": o.value,
            "median": o.median,
            "calls": o.calls,
        },
        chart=ask.series(dict(chart)),
        chart_label=("cost per day (USD), " if o.metric == "cost_usd" else "calls per day, ") + o.user_id,
        evidence=_user_evidence(ask, o.user_id),
    )


def _costly_session(ask: _Ask, s: reports.Session, median: float) -> Finding:
    days = _people_days(ask, "session_id", s.session_id)
    times = s.cost_usd / median
    user = f" ({s.user_id})" if s.user_id is not None else ""
    return Finding(
        kind="costly_session",
        key=f"costly_session:{s.session_id}",
        score=score("costly_session", math.log10(times / reports.FAR) / math.log10(1000 / reports.FAR)),
        sentence=(
            f"Session {s.session_id}{user} cost {usd(s.cost_usd)} over {s.calls:,} calls in the last {WEEK}"
            f" days, {times:,.0f}× the median session's {usd(median)}."
        ),
        numbers={
            "session_id": s.session_id,
            "user_id": s.user_id,
            "cost_usd": s.cost_usd,
            "calls": s.calls,
            "errors": s.errors,
            "median_usd": median,
        },
        chart=ask.series({d: c for d, (_, _, c) in days.items()}),
        chart_label="cost per day (USD)",
        evidence=[
            Evidence("the session", "session", {"session_id": s.session_id}),
            ask.report("the spikes report", "spikes"),
        ],
    )


# The parts of an evaluation, by name (`Evaluation.skipped` says which could not be read).
PARTS: dict[str, Callable[[_Ask], list[Finding]]] = {
    "errors": _errors,
    "drift": _drift,
    "cost": _cost,
    "people": _people,
}
# The kinds each part finds.
PART_KINDS = {
    "errors": ("new_error", "error_rate"),
    "drift": ("drift",),
    "cost": ("over_routing", "cost_week"),
    "people": ("user_outlier", "costly_session"),
}
