"""Reports (`llmlog report …`, the Reports pages): the answers people would otherwise write SQL
for, over either tier.

Each report reads `daily` (hot and cold alike, so it works across a retention run) and, for
examples to read, the calls still kept.

- **errors**: errors grouped by type, model and feature over a period: how many, the share
  of that model and feature's calls, per day, whether the type is new (none in the weeks
  before), and the newest calls that failed that way.
- **cost**: by model, feature, user and day; and over-routing: a feature sending short,
  tool-free calls to a model that costs several times what another model it uses for such
  calls costs, with what the period would have saved.
- **drift** and **compare**: output tokens, latency, error rate and tool-call rate, per
  feature and prompt version, the last week against the four before (or version A against
  B), flagged only where the change is both unlikely to be chance (Welch's test for means,
  the two-proportion z-test for rates, p < 0.001) and large enough to matter (half a
  standard deviation, or 5 points). These read the kept calls, which hold each call's figure.
- **spikes**: the costliest sessions and the users behind them, and users far above their
  peers (from `people_daily`): on cost or calls past 5× the median user, on errors at 5× the
  others' rate where the binomial test agrees (p < 0.001) — "one user is breaking it".
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from llmlog.analysis import kept_calls
from llmlog.analysis.dashboard import Period, day_param, time_param
from llmlog.core.prompts import a_few, natural
from llmlog.store import Store
from llmlog.store.rollup import counts_of

REPORTS = {
    "errors": "errors by type, model and feature: counts per day, rates, new types, example calls",
    "cost": "cost by model, feature, user and day; features sending short calls to a pricier model",
    "drift": "per feature and prompt version, what changed in the last week against the four before",
    "compare": "two prompt versions of a feature side by side, every metric, with significance",
    "spikes": "the costliest sessions and their users; users far above their peers on cost, calls or errors",
}


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


def _rollup_rows(store: Store, select: str, first: date, last: date, rest: str = "") -> list[Any]:
    """`SELECT … FROM daily` (or `people_daily`) over the UTC days first to last: `select`
    is everything before the WHERE, `rest` what follows the day condition."""
    p = store.dialect.placeholder
    return store.internal_query(
        f"{select} WHERE day >= {p} AND day <= {p} {rest}",
        [day_param(store, first), day_param(store, last)],
        timeout_s=5.0,
        limit=5_000_000,
    ).rows


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def errors_report(
    store: Store, period: Period, weeks_before: int = 4, top: int = 20, examples: int = 3
) -> list[ErrorGroup]:
    """The period's errors by (type, model, feature), most first."""
    since = period.first - timedelta(weeks=weeks_before)
    rows = _rollup_rows(
        store, "SELECT day, model, feature, calls, error_types FROM daily", since, period.last
    )
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
    p = store.dialect.placeholder
    times = [time_param(store, period.first), time_param(store, period.end)]
    same: list[str] = []
    values: list[Any] = []
    for column, value in (("model", g.model), ("feature", g.feature)):
        condition, given = store.dialect.same_as(column)
        same.append(condition)
        values += given(value)
    sql = (
        f"SELECT id FROM call_data WHERE error IS NOT NULL AND timestamp >= {p} AND timestamp < {p}"
        f" AND {same[0]} AND {same[1]} AND {store.dialect.error_type('error')} = {p}"
        f" ORDER BY timestamp DESC LIMIT {int(n)}"
    )
    return [str(r[0]) for r in store.internal_query(sql, [*times, *values, g.error_type], timeout_s=5.0).rows]


def sparkline(values: Iterable[float]) -> str:
    """Counts (or any figures from 0 up) as a row of block characters, the highest full."""
    values = list(values)
    top = max(values, default=0)
    bars = " ▁▂▃▄▅▆▇█"
    return "".join(bars[0 if v == 0 else max(1, round(v / top * 8))] for v in values)


# ---------------------------------------------------------------- cost and over-routing

# A call is "short" when its feature's average output on a model is this many tokens or fewer,
# and a model "costs more" when its cost per call is this many times the other's.
SHORT_OUTPUT = 300
PRICIER = 3.0


@dataclass
class Spend:
    name: str | None
    calls: int
    cost_usd: float


@dataclass
class OverRouting:
    """A feature sending short, tool-free calls to a model costing `PRICIER`× or more per
    call than another model the same feature also uses for such calls."""

    feature: str | None
    model: str | None  # the expensive one
    cheaper: str | None
    calls: int
    avg_output_tokens: float
    cost_per_call: float
    cheaper_cost_per_call: float

    @property
    def savings_usd(self) -> float:
        """What the period's calls would have cost less on the cheaper model."""
        return self.calls * (self.cost_per_call - self.cheaper_cost_per_call)


@dataclass
class CostReport:
    total_usd: float
    by_model: list[Spend]
    by_feature: list[Spend]
    by_day: list[Spend]  # every day of the period, oldest first
    by_user: list[Spend]  # the ten costliest users
    over_routing: list[OverRouting]

    def to_json(self) -> dict[str, Any]:
        def spend(rows: list[Spend]) -> list[dict[str, Any]]:
            return [{"name": s.name, "calls": s.calls, "cost_usd": s.cost_usd} for s in rows]

        return {
            "total_usd": self.total_usd,
            "by_model": spend(self.by_model),
            "by_feature": spend(self.by_feature),
            "by_day": spend(self.by_day),
            "by_user": spend(self.by_user),
            "over_routing": [{**vars(o), "savings_usd": o.savings_usd} for o in self.over_routing],
        }


def cost_report(store: Store, period: Period) -> CostReport:
    rows = _rollup_rows(
        store,
        "SELECT day, model, feature, calls, cost_usd, priced_calls, output_tokens, output_calls, tool_calls"
        " FROM daily",
        period.first,
        period.last,
    )
    models: dict[Any, list[float]] = {}
    features: dict[Any, list[float]] = {}
    days = {d: [0, 0.0] for d in period.dates()}
    # (feature, model) → [calls, cost, priced calls, output tokens, calls with an output count, tool calls]
    pairs: dict[tuple[Any, Any], list[float]] = {}
    for day, model, feature, calls, cost, priced, output, output_calls, tools in rows:
        for table, key in ((models, model), (features, feature)):
            t = table.setdefault(key, [0, 0.0])
            t[0] += int(calls)
            t[1] += float(cost)
        d = days[_day(day).isoformat()]
        d[0] += int(calls)
        d[1] += float(cost)
        pair = pairs.setdefault((feature, model), [0, 0.0, 0, 0, 0, 0])
        for i, v in enumerate((calls, cost, priced, output, output_calls, tools)):
            pair[i] += v
    users = _rollup_rows(
        store,
        "SELECT user_id, SUM(calls), SUM(cost_usd) FROM people_daily",
        period.first,
        period.last,
        "AND user_id IS NOT NULL GROUP BY user_id ORDER BY SUM(cost_usd) DESC, user_id LIMIT 10",
    )

    def ranked(table: dict[Any, list[float]]) -> list[Spend]:
        out = [Spend(k, int(v[0]), v[1]) for k, v in table.items()]
        return sorted(out, key=lambda s: (-s.cost_usd, -s.calls, str(s.name)))

    return CostReport(
        total_usd=sum(v[1] for v in models.values()),
        by_model=ranked(models),
        by_feature=ranked(features),
        by_day=[Spend(d, int(v[0]), v[1]) for d, v in days.items()],
        by_user=[Spend(u, int(n), float(c)) for u, n, c in users],
        over_routing=_over_routing(pairs),
    )


def _over_routing(pairs: dict[tuple[Any, Any], list[float]]) -> list[OverRouting]:
    """For each feature, the models whose priced calls are short and use no tools, compared
    two by two: the pricier is flagged against the cheapest."""
    by_feature: dict[Any, list[tuple[Any, float, float, int]]] = {}
    for (feature, model), (calls, cost, priced, output, output_calls, tools) in pairs.items():
        if not priced or tools or not output_calls:
            continue
        avg_output = output / output_calls
        if avg_output <= SHORT_OUTPUT:
            by_feature.setdefault(feature, []).append((model, cost / priced, avg_output, int(calls)))
    out = []
    for feature, models in by_feature.items():
        cheapest = min(models, key=lambda m: m[1])
        for model, per_call, avg_output, calls in models:
            if cheapest[1] > 0 and per_call >= PRICIER * cheapest[1]:
                out.append(OverRouting(feature, model, cheapest[0], calls, avg_output, per_call, cheapest[1]))
    return sorted(out, key=lambda o: -o.savings_usd)


# ---------------------------------------------------------------- drift and version comparison

# A change is flagged when it is unlikely to be chance (p below this) and large enough to
# matter: a mean moved by half a standard deviation, or a rate by 5 points.
ALPHA = 0.001
MIN_EFFECT_SD = 0.5
MIN_EFFECT_RATE = 0.05
MIN_CALLS = 30  # on each side

# What is compared: means of a figure per call, and rates of a kind of call.
MEANS = ("output_tokens", "latency_ms", "cost_usd")
RATES = ("error_rate", "tool_call_rate", "refusal_rate")
ALL_VERSIONS = "*"  # the version of a feature's row over all its versions together


@dataclass
class Change:
    feature: str | None
    version: str | None  # ALL_VERSIONS for every version of the feature together
    metric: str  # one of MEANS (compared as means per call) or RATES
    before: float | None  # None: no call on that side had the figure
    after: float | None
    effect: float | None  # Cohen's d for means, the difference for rates; None when untestable
    p: float | None  # two-sided; None when a side has under MIN_CALLS calls, or no spread
    n_before: int
    n_after: int
    flagged: bool = False  # real (p < ALPHA) and large enough to matter

    def to_json(self) -> dict[str, Any]:
        return vars(self)


@dataclass
class _Side:
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MEANS})
    calls: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RATES, 0))
    ids: list[str] = field(default_factory=list)

    def add(self, other: _Side) -> None:
        for m in MEANS:
            self.values[m] += other.values[m]
        for r in RATES:
            self.counts[r] += other.counts[r]
        self.calls += other.calls
        self.ids += other.ids

    def take(self, call: CallFigures) -> None:
        self.calls += 1
        self.ids.append(call.id)
        self.counts["error_rate"] += call.failed
        self.counts["tool_call_rate"] += call.tools
        self.counts["refusal_rate"] += call.refused
        for metric, value in (
            ("output_tokens", call.output_tokens),
            ("latency_ms", call.latency_ms),
            ("cost_usd", call.cost_usd),
        ):
            if value is not None:
                self.values[metric].append(value)


def _mean_change(
    a: list[float], b: list[float]
) -> tuple[float | None, float | None, float | None, float | None]:
    """(mean a, mean b, Cohen's d, two-sided p of Welch's test, normal approximation)."""
    ma = statistics.fmean(a) if a else None
    mb = statistics.fmean(b) if b else None
    if ma is None or mb is None or len(a) < MIN_CALLS or len(b) < MIN_CALLS:
        return ma, mb, None, None
    va, vb = statistics.variance(a), statistics.variance(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    pooled = math.sqrt((va + vb) / 2)
    if se == 0 or pooled == 0:
        return ma, mb, None, None
    return ma, mb, (mb - ma) / pooled, math.erfc(abs(mb - ma) / se / math.sqrt(2))


def rate_change(
    ka: int, na: int, kb: int, nb: int
) -> tuple[float | None, float | None, float | None, float | None]:
    """(rate a, rate b, the difference, two-sided p of the two-proportion z-test)."""
    pa = ka / na if na else None
    pb = kb / nb if nb else None
    if pa is None or pb is None or na < MIN_CALLS or nb < MIN_CALLS:
        return pa, pb, None, None
    pooled = (ka + kb) / (na + nb)
    se = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    if se == 0:
        return pa, pb, None, None
    return pa, pb, pb - pa, math.erfc(abs(pb - pa) / se / math.sqrt(2))


def _changes(key: tuple[Any, Any], a: _Side, b: _Side) -> list[Change]:
    """Every metric, a side against b; flagged where the change is real and large."""
    out = []
    for metric in (*MEANS, *RATES):
        if metric in MEANS:
            got, floor = _mean_change(a.values[metric], b.values[metric]), MIN_EFFECT_SD
        else:
            got = rate_change(a.counts[metric], a.calls, b.counts[metric], b.calls)
            floor = MIN_EFFECT_RATE
        before, after, effect, p = got
        flagged = p is not None and effect is not None and p < ALPHA and abs(effect) >= floor
        out.append(Change(key[0], key[1], metric, before, after, effect, p, a.calls, b.calls, flagged))
    return out


class CallFigures(NamedTuple):
    """What drift and compare read of one kept call."""

    id: str
    feature: Any
    version: Any
    timestamp: datetime  # UTC
    output_tokens: float | None  # None: none recorded (NaN included)
    latency_ms: float | None
    cost_usd: float | None
    failed: bool
    tools: bool  # it made a tool call
    refused: bool  # it declined (`kept_calls.declined`)


def _figure(value: Any) -> float | None:
    return float(value) if value is not None and value == value else None


def read_figures(store: Store, since: datetime, until: datetime | None) -> Iterator[CallFigures]:
    """The kept calls in [since, until) (until None: all to come) as drift and compare read them."""
    until = until or datetime.now(UTC) + timedelta(days=1)
    rows = kept_calls.read(
        store,
        ["id", "feature", "prompt_template_version", "timestamp", "output_tokens", "latency_ms", "cost_usd",
         "error IS NOT NULL"],
        time_param(store, since),
        time_param(store, until),
        timeout_s=20.0,
    )  # fmt: skip
    for kept in rows:
        call_id, feature, version, timestamp, output, latency, cost, failed = kept.values
        yield CallFigures(
            str(call_id), feature, version, _timestamp(timestamp), _figure(output), _figure(latency),
            _figure(cost), bool(failed), bool(kept.tools), kept.declined(),
        )  # fmt: skip


def _read_sides(
    store: Store,
    since: datetime,
    until: datetime | None,
    side: Any,
    each: Callable[[CallFigures], None] | None = None,
) -> dict[tuple[Any, Any], tuple[_Side, _Side]]:
    """The kept calls in [since, until), by (feature, version), each put on side 0 or 1 (or
    neither: None) by `side(feature, version, timestamp)`; and by (feature, ALL_VERSIONS)
    for features with more than one version. `each` is shown every call read, on a side or
    not: what else a caller counts from the same read."""
    groups: dict[tuple[Any, Any], tuple[_Side, _Side]] = {}
    for call in read_figures(store, since, until):
        if each is not None:
            each(call)
        which = side(call.feature, call.version, call.timestamp)
        if which is not None:
            groups.setdefault((call.feature, call.version), (_Side(), _Side()))[which].take(call)
    features: dict[Any, list[tuple[_Side, _Side]]] = {}
    for (feature, _), sides in groups.items():
        features.setdefault(feature, []).append(sides)
    for feature, versions in features.items():
        if len(versions) > 1:
            a, b = _Side(), _Side()
            for sa, sb in versions:
                a.add(sa)
                b.add(sb)
            groups[(feature, ALL_VERSIONS)] = (a, b)
    return groups


def _timestamp(value: Any) -> datetime:
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # ClickHouse's text has no zone: it is UTC


def drift_report(
    store: Store, days: int = 7, baseline_days: int = 28, now: datetime | None = None
) -> list[Change]:
    """Per feature and prompt version (and per feature over its versions): what changed in
    the last `days` days against the `baseline_days` before them, where the change is real
    (see ALPHA) and large enough. A new version shows on its feature's row: it has no
    baseline of its own."""
    return drift_and_steps(store, days, baseline_days, now).changes


@dataclass
class DriftRead:
    changes: list[Change]  # flagged, as `drift_report` gives them
    # Each prompt version against the one before it (`version_order`), over the whole read:
    # a version found worse than the one it followed, whether or not the weekly window shows it.
    steps: list[Comparison]


def drift_and_steps(
    store: Store,
    days: int = 7,
    baseline_days: int = 28,
    now: datetime | None = None,
    each: Callable[[CallFigures], None] | None = None,
) -> DriftRead:
    """The drift (`drift_report`), and each prompt version against the one before it over the
    `days` + `baseline_days` days, from one read of the kept calls, which `each` is shown."""
    now = now or datetime.now(UTC)
    split = now - timedelta(days=days)
    start = split - timedelta(days=baseline_days)

    def side(feature: Any, version: Any, timestamp: Any) -> int:
        return 1 if _timestamp(timestamp) >= split else 0

    groups = _read_sides(store, start, now, side, each)
    flagged = (c for k, (a, b) in groups.items() for c in _changes(k, a, b) if c.flagged)
    changes = sorted(flagged, key=lambda c: (c.p or 0.0, str(c.feature), str(c.version), c.metric))
    steps = []
    for feature, versions in version_order(store).items():
        for old, new in itertools.pairwise(versions):
            if (feature, old) not in groups or (feature, new) not in groups:
                continue  # no call of one of them in the period: nothing to compare
            sides = {v: _Side() for v in (old, new)}
            for v, whole in sides.items():
                for part in groups[(feature, v)]:
                    whole.add(part)
            metrics = _changes((feature, f"{old} → {new}"), sides[old], sides[new])
            steps.append(Comparison(feature, old, new, metrics, []))
    return DriftRead(changes, steps)


def version_order(store: Store, timeout_s: float = 5.0) -> dict[str, list[str]]:
    """Each feature's prompt versions in the order they came: the first day each had calls
    (in `daily`, both tiers), then by name (v2 before v10)."""
    rows = store.internal_query(
        "SELECT feature, prompt_template_version, MIN(day) FROM daily"
        " WHERE feature IS NOT NULL AND prompt_template_version IS NOT NULL GROUP BY 1, 2",
        timeout_s=timeout_s,
        limit=100_000,
    ).rows
    out: dict[str, list[tuple[date, str]]] = {}
    for feature, version, first in rows:
        out.setdefault(str(feature), []).append((_day(first), str(version)))
    return {
        f: [v for _, v in sorted(vs, key=lambda dv: (dv[0], natural(dv[1])))] for f, vs in sorted(out.items())
    }


@dataclass
class Comparison:
    """Two sides of one feature, every metric side by side, and calls from each to read."""

    feature: str
    old: str  # what each side is: a version, or "before …"/"after …" a moment
    new: str
    metrics: list[Change]
    pairs: list[tuple[str | None, str | None]]  # call ids, one from each side

    @property
    def flagged(self) -> list[Change]:
        return [c for c in self.metrics if c.flagged]

    @property
    def testable(self) -> bool:
        """Whether each side has the calls a test needs: with fewer (none, say), no p is
        computed, and "no change" would be a verdict the figures cannot give."""
        n = self.metrics[0]
        return min(n.n_before, n.n_after) >= MIN_CALLS

    @property
    def verdict(self) -> str:
        """What the comparison found, in words the CLI and the web page both print."""
        if not self.testable:
            return f"too few calls to test (at least {MIN_CALLS} per side)"
        if self.flagged:
            k = len(self.flagged)
            return f"{k} metric{'s' if k != 1 else ''} changed beyond chance"
        return "no change beyond chance"

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "old": self.old,
            "new": self.new,
            "metrics": [c.to_json() for c in self.metrics],
            "pairs": [list(p) for p in self.pairs],
        }


def _comparison(
    feature: str, old: str, new: str, groups: dict[Any, tuple[_Side, _Side]], pairs: int
) -> Comparison:
    a, b = _Side(), _Side()
    for (_, version), (sa, sb) in groups.items():
        if version != ALL_VERSIONS:
            a.add(sa)
            b.add(sb)
    rng = random.Random(0)  # the same pairs each time the same calls are compared
    left = rng.sample(a.ids, min(pairs, len(a.ids)))
    right = rng.sample(b.ids, min(pairs, len(b.ids)))
    paired = list(itertools.zip_longest(left, right))
    return Comparison(feature, old, new, _changes((feature, f"{old} → {new}"), a, b), paired)


def known_versions(store: Store, timeout_s: float = 5.0) -> dict[str, list[tuple[str, int]]]:
    """Each feature's prompt versions, with their calls, from `daily` (both tiers), by name.
    A feature with calls but no version has an empty list. Raises ReadOnlyError when the
    store stops the read at its time limit."""
    rows = store.internal_query(
        "SELECT feature, prompt_template_version, SUM(calls) FROM daily GROUP BY 1, 2",
        timeout_s=timeout_s,
        limit=100_000,
    ).rows
    out: dict[str, list[tuple[str, int]]] = {}
    for feature, v, n in rows:
        if feature is not None:  # nothing to ask for by name: no feature is NULL on a command line
            versions = out.setdefault(str(feature), [])
            if v is not None:
                versions.append((str(v), int(n)))
    return {f: sorted(vs) for f, vs in sorted(out.items())}


def known_version(known: dict[str, list[tuple[str, int]]], feature: str, version: str) -> str:
    """The stored name of one of `feature`'s prompt versions, given as stored
    ("code-review@v2") or by the short name after its "@" ("v2", as `llmlog prompts`
    names it). Raises LookupError naming the feature's versions when it has no such one."""
    versions = [v for v, _ in known.get(feature, [])]
    for candidate in (version, f"{feature}@{version}"):
        if candidate in versions:
            return candidate
    raise LookupError(
        f"feature {feature!r} has no prompt version {version!r}; its versions: {a_few(versions)}"
    )


def known_feature(known: dict[str, list[tuple[str, int]]], feature: str) -> str:
    """`feature`, when the store holds calls of it; else LookupError naming those it does."""
    if feature not in known:
        raise LookupError(f"no calls of feature {feature!r}; the features: {a_few(known)}")
    return feature


def compare_versions(
    store: Store,
    feature: str,
    old: str,
    new: str,
    days: int = 28,
    now: datetime | None = None,
    pairs: int = 3,
) -> Comparison:
    """Prompt version `old` against `new` for one feature over the last `days` days."""
    now = now or datetime.now(UTC)

    def side(f: Any, version: Any, timestamp: Any) -> int | None:
        if f != feature:
            return None
        return 0 if version == old else 1 if version == new else None

    groups = _read_sides(store, now - timedelta(days=days), now, side)
    return _comparison(feature, old, new, groups, pairs)


def compare_moment(
    store: Store, feature: str, at: datetime, days: int = 7, now: datetime | None = None, pairs: int = 3
) -> Comparison:
    """One feature before and after a moment (a deploy): the `days` days before it against
    the time since (up to `days` days), whatever the prompt version."""
    now = now or datetime.now(UTC)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)

    def side(f: Any, version: Any, timestamp: Any) -> int | None:
        return None if f != feature else 1 if _timestamp(timestamp) >= at else 0

    groups = _read_sides(store, at - timedelta(days=days), min(now, at + timedelta(days=days)), side)
    when = at.strftime("%Y-%m-%d %H:%M")
    return _comparison(feature, f"before {when}", f"after {when}", groups, pairs)


# ---------------------------------------------------------------- spikes: sessions and users


@dataclass
class Session:
    session_id: str
    user_id: str | None
    calls: int
    cost_usd: float
    errors: int


@dataclass
class Outlier:
    """A user far above their peers on one figure: `value` against the users' median."""

    user_id: str
    metric: str  # "error_rate", "cost_usd", "calls"
    value: float
    median: float
    calls: int


@dataclass
class Spikes:
    sessions: list[Session]  # the costliest, then the longest
    outliers: list[Outlier]
    median_session_usd: float = 0.0  # the cost of the period's median session, of all of them

    def to_json(self) -> dict[str, Any]:
        return {"sessions": [vars(s) for s in self.sessions], "outliers": [vars(o) for o in self.outliers]}


# A user is an outlier on cost or calls past FAR times the median user (and past the median
# plus FAR robust deviations); on errors, when their rate is FAR times everyone else's and the
# binomial test against that rate gives p < ALPHA.
FAR = 5.0


def spikes_report(store: Store, period: Period, top: int = 10) -> Spikes:
    rows = _rollup_rows(
        store,
        "SELECT user_id, session_id, calls, errors, cost_usd FROM people_daily",
        period.first,
        period.last,
    )
    sessions: dict[str, Session] = {}
    users: dict[str, list[float]] = {}  # user → [calls, errors, cost]
    for user, session, calls, errors, cost in rows:
        if session is not None:
            s = sessions.setdefault(session, Session(session, user, 0, 0.0, 0))
            s.calls += int(calls)
            s.errors += int(errors)
            s.cost_usd += float(cost)
        if user is not None:
            u = users.setdefault(user, [0, 0, 0.0])
            u[0] += int(calls)
            u[1] += int(errors)
            u[2] += float(cost)
    ranked = sorted(sessions.values(), key=lambda s: (-s.cost_usd, -s.calls, s.session_id))[:top]
    median = statistics.median(s.cost_usd for s in sessions.values()) if sessions else 0.0
    return Spikes(ranked, _outliers(users), median)


def _outliers(users: dict[str, list[float]]) -> list[Outlier]:
    out: list[Outlier] = []
    if len(users) < 5:  # no peers to speak of
        return out
    for metric, index in (("calls", 0), ("cost_usd", 2)):
        values = [u[index] for u in users.values()]
        median = statistics.median(values)
        mad = statistics.median(abs(v - median) for v in values) * 1.4826
        for name, u in users.items():
            if median > 0 and u[index] > FAR * median and u[index] > median + FAR * mad:
                out.append(Outlier(name, metric, u[index], median, int(u[0])))
    total_calls = sum(u[0] for u in users.values())
    total_errors = sum(u[1] for u in users.values())
    rates = [u[1] / u[0] for u in users.values() if u[0]]
    median_rate = statistics.median(rates) if rates else 0.0
    for name, (calls, errors, _) in users.items():
        others_calls, others_errors = total_calls - calls, total_errors - errors
        if not calls or not others_calls:
            continue
        base = others_errors / others_calls
        rate = errors / calls
        if base == 0 or rate < FAR * base or errors < 5:
            continue
        z = (errors - calls * base) / math.sqrt(calls * base * (1 - base))
        if math.erfc(z / math.sqrt(2)) / 2 < ALPHA:
            out.append(Outlier(name, "error_rate", rate, median_rate, int(calls)))
    return sorted(out, key=lambda o: (o.metric, -o.value))
