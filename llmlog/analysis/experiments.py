"""An experiment's comparison: each original call against its replay, pair by pair.

Paired, because each new call answers the very request its original did: the differences
are taken within pairs, so a feature's spread between requests (a long diff against a short
one) does not drown the change. Means (output tokens, latency, cost) are compared by the mean
of the paired differences (the paired t-test); rates (errors, refusals, tool calls) by the
pairs that disagree (McNemar's test, exact). Tool choice and the answer's text have no
"before" to compare with: they are how often the pair agrees (the same tools called, in
order) and how alike the two answers read (0 to 1).

A metric is flagged where its change is both unlikely to be chance (p < 0.01) and large
enough to matter (half a standard deviation of the paired differences, or 5 points). The
level is 0.01, not the 0.001 of `report compare`: an experiment has tens to hundreds of
pairs, not a production's thousands of calls, and pairing already removes most of the noise
a looser level would let through; at 0.001 a 50-pair experiment could hardly flag anything.

`Condition` is a `--fail-if` test ("refusal_rate > +2pts"), which makes a comparison a CI gate.
"""

from __future__ import annotations

import math
import operator
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from llmlog.analysis.answers import answer_text, similarity
from llmlog.analysis.refusals import refused, response_parts
from llmlog.analysis.reports import binomial_tail
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.core.sealed import is_sealed
from llmlog.store.base import Store
from llmlog.store.experiments import Experiment

MEANS = ("output_tokens", "latency_ms", "cost_usd")
RATES = ("error_rate", "refusal_rate", "tool_call_rate")
AGREEMENT = ("tool_agreement", "similarity")  # the pair's, 0 to 1; no before and after
METRICS = (*MEANS, *RATES, *AGREEMENT)

MIN_PAIRS = 10  # below this many pairs a metric gets no p: a test on fewer says nothing
ALPHA = 0.01  # see the module's docstring for why not report compare's 0.001
MIN_EFFECT_SD = 0.5  # a mean's change, in standard deviations of the paired differences
MIN_EFFECT_RATE = 0.05  # a rate's change: 5 points
# Ids per read of the originals: a sample of thousands is read in a few queries, each with a
# parameter list every engine takes.
CHUNK = 500


# ---------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for aa in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast on one side of the mean; the other side by symmetry.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom, exactly (through the
    incomplete beta function), at every df: no normal approximation, which would be too
    optimistic for the small samples experiments have."""
    if not math.isfinite(t):
        return 0.0
    return min(1.0, _betainc(df / 2.0, 0.5, df / (df + t * t)))


def paired_t(diffs: Sequence[float], scale: float = 0.0) -> tuple[float | None, float | None]:
    """(effect, p) of paired differences: their mean over their sd, and the two-sided p of
    the paired t-test. No effect under two differences or without spread; no p under
    MIN_PAIRS either. `scale`: the largest figure the differences were taken between."""
    n = len(diffs)
    if n < 2:
        return None, None
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs)
    # Spread no larger than float rounding is none: figures that differ by the same amount
    # (or not at all) but for their last bits would otherwise make an enormous t out of noise.
    scale = max(scale, *(abs(d) for d in diffs))
    if sd <= 1e-12 * scale:
        return None, None
    effect = mean / sd
    if n < MIN_PAIRS:
        return effect, None
    return effect, t_two_sided(mean / (sd / math.sqrt(n)), n - 1)


def mcnemar(only_before: int, only_after: int) -> float:
    """Two-sided p of McNemar's exact test: of the pairs that disagree, how unlikely a split
    this uneven is when either side is as likely (a binomial with p = 1/2)."""
    n = only_before + only_after
    if n == 0:
        return 1.0  # no pair disagrees: nothing points either way
    return min(1.0, 2.0 * binomial_tail(max(only_before, only_after), n, 0.5))


# ---------------------------------------------------------------- one call, one pair


def _figure(value: Any) -> float | None:
    """A call's figure as a number; None where none was recorded (NaN included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def failed(call: Call) -> bool:
    return call.error is not None


def declined(call: Call) -> bool:
    """Whether the call refused (`llmlog.analysis.refusals`): sealed, by its stop reason only."""
    return refused(call.stop_reason, *response_parts(call.response))


def called_tools(call: Call) -> bool:
    return bool(call.tool_calls)


def sealed(call: Call) -> bool:
    """Whether the call's answer is sealed (regulated mode, read without the key)."""
    return is_sealed(call.response) or any(is_sealed(t) for t in call.tool_calls or [])


def tool_names(call: Call) -> list[Any] | None:
    """The tools the call called, in order; None when they cannot be read (sealed)."""
    names = []
    for tc in call.tool_calls or []:
        if is_sealed(tc):
            return None
        names.append(tc.get("name") if isinstance(tc, dict) else None)
    return names


def _tools_agree(a: Call, b: Call) -> bool | None:
    if failed(a) or failed(b):
        return None
    na, nb = tool_names(a), tool_names(b)
    return None if na is None or nb is None else na == nb


def _similarity(a: Call, b: Call) -> float | None:
    def readable(c: Call) -> bool:
        return not failed(c) and not sealed(c) and (c.response is not None or bool(c.tool_calls))

    return similarity(answer_text(a), answer_text(b)) if readable(a) and readable(b) else None


@dataclass
class Pair:
    """One original call and its replay (None: not run yet, or not sent)."""

    original: Call
    replay: Call | None
    similarity: float | None = None  # 0..1, the answers' text; None when either has none (or is sealed)
    tools_agree: bool | None = None  # the same tools called, in order; None unless both answered

    def _sides(self, test: Callable[[Call], bool]) -> tuple[bool, bool]:
        return test(self.original), self.replay is not None and test(self.replay)

    @cached_property
    def failed(self) -> tuple[bool, bool]:
        """(the original failed, the replay failed); the replay's False when there is none."""
        return self._sides(failed)

    @cached_property
    def refused(self) -> tuple[bool, bool]:
        """(the original refused, the replay refused); the replay's False when there is none."""
        return self._sides(declined)

    @cached_property
    def called_tools(self) -> tuple[bool, bool]:
        return self._sides(called_tools)

    def to_json(self) -> dict[str, Any]:
        return {
            "original": self.original.id,
            "replay": self.replay.id if self.replay is not None else None,
            "similarity": self.similarity,
            "tools_agree": self.tools_agree,
            "original_error": self.failed[0],
            "replay_error": self.failed[1] if self.replay is not None else None,
            "original_refusal": self.refused[0],
            "replay_refusal": self.refused[1] if self.replay is not None else None,
        }


# ---------------------------------------------------------------- the comparison


@dataclass
class Metric:
    """One figure, originals against replays. For means `before`/`after` are means per call
    and `change` the mean paired difference; for rates they are rates (0..1) and `change`
    the difference in points (0.02 is 2 points); for AGREEMENT only `after` is set."""

    metric: str
    before: float | None
    after: float | None
    change: float | None
    relative: float | None  # change / before, where before is not 0
    effect: float | None  # means: the paired differences' mean over their sd; rates: change
    p: float | None  # two-sided; None when too few pairs, or no spread
    n: int  # the pairs that count for this metric
    flagged: bool = False  # unlikely to be chance and large enough to matter

    def to_json(self) -> dict[str, Any]:
        return vars(self)


def _mean_metric(name: str, done: list[Pair]) -> Metric:
    # Only pairs answered on both sides: an error's latency is how fast it was refused (a 429
    # in milliseconds), not how fast the change answers; the error rate counts the errors.
    both = [
        (a, b)
        for p in done
        if p.replay is not None
        and not any(p.failed)
        and (a := _figure(getattr(p.original, name))) is not None
        and (b := _figure(getattr(p.replay, name))) is not None
    ]
    if not both:
        return Metric(name, None, None, None, None, None, None, 0)
    before = statistics.fmean(a for a, _ in both)
    after = statistics.fmean(b for _, b in both)
    diffs = [b - a for a, b in both]
    change = statistics.fmean(diffs)
    effect, p = paired_t(diffs, max(max(abs(a), abs(b)) for a, b in both))
    flagged = p is not None and effect is not None and p < ALPHA and abs(effect) >= MIN_EFFECT_SD
    return Metric(
        name, before, after, change, change / before if before else None, effect, p, len(both), flagged
    )


def _rate_metric(name: str, sides: list[tuple[bool, bool]]) -> Metric:
    n = len(sides)
    if not n:
        return Metric(name, None, None, None, None, None, None, 0)
    before = sum(a for a, _ in sides) / n
    after = sum(b for _, b in sides) / n
    change = after - before
    p = (
        mcnemar(sum(a and not b for a, b in sides), sum(b and not a for a, b in sides))
        if n >= MIN_PAIRS
        else None
    )
    flagged = p is not None and p < ALPHA and abs(change) >= MIN_EFFECT_RATE
    return Metric(name, before, after, change, change / before if before else None, change, p, n, flagged)


def _agreement_metric(name: str, values: list[float]) -> Metric:
    after = statistics.fmean(values) if values else None
    return Metric(name, None, after, None, None, None, None, len(values))


@dataclass
class Comparison:
    experiment: Experiment
    pairs: list[Pair]  # every sampled call whose original is still stored, replayed or not
    metrics: list[Metric]  # MEANS, RATES, then AGREEMENT, in that order

    @property
    def done(self) -> list[Pair]:
        """The pairs with a replay."""
        return [p for p in self.pairs if p.replay is not None]

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.metric == name)

    def most_different(self, k: int = 5) -> list[Pair]:
        """The pairs to read first: an error on one side only, then a refusal on one side
        only, then the least similar answers (those whose similarity is unknown last). Pairs
        with nothing to tell apart (the same answer, word for word) are left out."""

        def rank(p: Pair) -> tuple[int, float]:
            group = 0 if p.failed[0] != p.failed[1] else 1 if p.refused[0] != p.refused[1] else 2
            return group, 2.0 if p.similarity is None else p.similarity

        differing = [p for p in self.done if rank(p) != (2, 1.0) or p.tools_agree is False]
        return sorted(differing, key=rank)[: max(0, k)]

    @property
    def gone(self) -> int:
        """The sampled calls no longer stored (erased or purged since the run)."""
        return len(set(self.experiment.sample)) - len(self.pairs)

    @property
    def verdict(self) -> str:
        """What the comparison found, in words the CLI and the web page both print."""
        done = len(self.done)
        head = f"{done} of {len(set(self.experiment.sample))} calls replayed"
        if self.gone:
            head += f" ({self.gone} erased since)"
        if done < MIN_PAIRS:
            return f"{head}; too few pairs to test (at least {MIN_PAIRS})"
        changed = [m.metric for m in self.metrics if m.flagged]
        if not changed:
            return f"{head}; no metric changed beyond chance"
        what = "1 metric" if len(changed) == 1 else f"{len(changed)} metrics"
        return f"{head}; {what} changed beyond chance ({', '.join(changed)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment.to_json(),
            "verdict": self.verdict,
            "sampled": len(set(self.experiment.sample)),
            "replayed": len(self.done),
            "erased": self.gone,
            "metrics": [m.to_json() for m in self.metrics],
            "most_different": [p.original.id for p in self.most_different()],
            "pairs": [p.to_json() for p in self.pairs],
        }


def compare(experiment: Experiment, pairs: list[tuple[Call, Call | None]]) -> Comparison:
    """The comparison of `experiment` from its (original, replay) pairs, in sample order."""
    out = []
    for original, new in pairs:
        pair = Pair(original, new)
        if new is not None:
            pair.similarity = _similarity(original, new)
            pair.tools_agree = _tools_agree(original, new)
        out.append(pair)
    done = [p for p in out if p.replay is not None]
    metrics = [
        *(_mean_metric(name, done) for name in MEANS),
        _rate_metric("error_rate", [p.failed for p in done]),
        _rate_metric("refusal_rate", [p.refused for p in done]),
        _rate_metric("tool_call_rate", [p.called_tools for p in done]),
        _agreement_metric(
            "tool_agreement", [float(p.tools_agree) for p in done if p.tools_agree is not None]
        ),
        _agreement_metric("similarity", [p.similarity for p in done if p.similarity is not None]),
    ]
    return Comparison(experiment, out, metrics)


def load(store: Store, experiment: Experiment) -> Comparison:
    """Read the experiment's originals and its replays (the calls with
    `metadata.experiment` = its id, matched by `metadata.replay_of`) and compare them.
    Originals erased since are left out, with their replays. Where an original has several
    replays (a run interrupted between storing one and noting it), the earliest counts."""
    ids = list(dict.fromkeys(experiment.sample))
    originals: dict[str, Call] = {}
    for i in range(0, len(ids), CHUNK):
        for call in store.iter_calls(CallFilter(ids=ids[i : i + CHUNK])):
            originals.setdefault(call.id, call)  # an engine that merges late may give one twice
    replays: dict[str, Call] = {}
    for call in store.iter_calls(CallFilter(metadata=[("experiment", experiment.id)])):
        meta = call.metadata if isinstance(call.metadata, dict) else {}
        of = meta.get("replay_of")
        # The store matches metadata as text; the id itself must be the same.
        if meta.get("experiment") != experiment.id or not isinstance(of, str) or of not in originals:
            continue
        kept = replays.get(of)
        if kept is None or (call.timestamp, call.id) < (kept.timestamp, kept.id):
            replays[of] = call
    return compare(experiment, [(originals[i], replays.get(i)) for i in ids if i in originals])


# ---------------------------------------------------------------- --fail-if

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
MAX_CONDITION = 200  # characters: a condition is a few words; the patterns then stay cheap
_SHAPE = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*([<>=!]+)\s*(.*?)\s*")
_VALUE = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(pts|%)?")
_EXAMPLE = 'METRIC OP VALUE, e.g. "refusal_rate > +2pts", "output_tokens > +20%", "similarity < 0.8"'
_VALUES = (
    "a signed change (rates: +2pts or +20%; means: +20% or +150 in the metric's unit) or the"
    " replays' own figure, unsigned (rates and agreement: 0 to 1, or 0 to 100pts; means: in"
    " their unit)"
)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "…")


@dataclass(frozen=True)
class Condition:
    """A `--fail-if` condition: `METRIC OP VALUE`. OP is one of > >= < <=. VALUE with a sign
    is a change: "+2pts" (rates, in points), "+20%" (means and rates, relative to before),
    "+150" (means, in the metric's unit: tokens, ms, USD); VALUE without a sign is the
    replays' own figure: rates and agreement as 0 to 1 ("error_rate > 0.05", "similarity <
    0.8") or in points ("similarity < 80pts"), means in their unit ("latency_ms > 2000").
    METRIC is one of METRICS."""

    text: str  # as given
    metric: str
    op: str
    value: float  # as written: 2 for "+2pts", 20 for "+20%", 0.05 for "0.05"
    unit: str  # "pts", "%", or "" (the metric's unit)
    change: bool  # a change (signed VALUE), or the replays' figure

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Raises ValueError saying what is wrong and what is allowed."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"empty condition: expected {_EXAMPLE}")
        if len(text) > MAX_CONDITION:
            raise ValueError(
                f"condition {_shown(text)}: over {MAX_CONDITION} characters; expected {_EXAMPLE}"
            )
        shape = _SHAPE.fullmatch(text)
        if shape is None:
            raise ValueError(f"condition {_shown(text)}: expected {_EXAMPLE}")
        metric, op, value = shape.groups()
        if metric not in METRICS:
            raise ValueError(
                f"condition {_shown(text)}: unknown metric {_shown(metric)}; one of {', '.join(METRICS)}"
            )
        if op not in OPS:
            raise ValueError(f"condition {_shown(text)}: operator {_shown(op)}; one of {' '.join(OPS)}")
        number = _VALUE.fullmatch(value)
        if number is None:
            raise ValueError(f"condition {_shown(text)}: value {_shown(value)}; {_VALUES}")
        sign, digits, unit = number.group(1), number.group(2), number.group(3) or ""
        amount = float(sign + digits)
        if not math.isfinite(amount):  # not within MAX_CONDITION digits; kept should it grow
            raise ValueError(f"condition {_shown(text)}: value {_shown(value)} is out of range")
        change = bool(sign)
        problem = _unit_problem(metric, change, unit, amount)
        if problem:
            raise ValueError(f"condition {_shown(text)}: {problem}")
        return cls(text, metric, op, amount, unit, change)

    def observed(self, comparison: Comparison) -> float | None:
        """The figure the condition tests, in its unit; None when unknown."""
        m = comparison.metric(self.metric)
        got = (m.relative if self.unit == "%" else m.change) if self.change else m.after
        if got is None and self.change and self.unit == "%" and m.before == 0 and m.change is not None:
            # From nothing, any rise is past every percentage: a gate on "+50%" must not pass
            # a feature that started refusing because it never refused before.
            return 0.0 if m.change == 0 else math.copysign(math.inf, m.change)
        if got is None:
            return None
        # Scaled to points or per cent: rounded so that a change of exactly 2 points is 2,
        # not 2.0000000000000004 (which "> +2pts" would count).
        return round(got * 100, 9) if self.unit in ("pts", "%") else got

    def met(self, comparison: Comparison) -> tuple[bool, str]:
        """Whether the comparison meets the condition, and what was observed, in words
        ("refusal_rate +3.1 pts (0.4% → 3.5%)"). Not met when the figure is unknown."""
        m = comparison.metric(self.metric)
        got = self.observed(comparison)
        if got is None:
            why = "no pairs" if not m.n else "no figure before" if self.unit == "%" else "unknown"
            return False, f"{self.metric} unknown ({why})"
        if self.unit == "pts":
            shown = f"{got:+.1f} pts" if self.change else f"{got:.1f} pts"
        elif self.unit == "%":
            shown = f"{got:+.1f}%" if math.isfinite(got) else "up from none" if got > 0 else "down from none"
        elif self.change:
            shown = _signed(self.metric, got)
        else:
            shown = _figure_text(self.metric, got) if self.metric in MEANS else f"{got:.3f}"
        if self.metric in AGREEMENT:
            context = f"over {m.n} pair{'s' if m.n != 1 else ''}"
        else:
            context = f"{_figure_text(self.metric, m.before)} → {_figure_text(self.metric, m.after)}"
        return OPS[self.op](got, self.value), f"{self.metric} {shown} ({context})"


def _unit_problem(metric: str, change: bool, unit: str, amount: float) -> str | None:
    """What is wrong with a VALUE for `metric`, in words; None when it is allowed."""
    if metric in AGREEMENT:
        if change:
            return (
                f"{metric} has no before to change from: give its figure, 0 to 1 (0.8) or in points (80pts)"
            )
        if unit == "%":
            return f"{metric}: give its figure, 0 to 1 (0.8) or in points (80pts), not per cent"
    elif change:
        if metric in MEANS and unit == "pts":
            return f"{metric} is a mean: a change is +20% (relative) or +150 (in its unit), not points"
        if metric in RATES and not unit:
            return f"{metric} is a rate: a change is +2pts (points) or +20% (relative)"
        return None
    elif unit == "%":
        return (
            f"a relative change needs a sign (+{amount:g}% or -{amount:g}%); a rate itself is 0 to 1 or pts"
        )
    elif metric in MEANS and unit == "pts":
        return f"{metric} is a mean: its figure is in its unit, not points"
    limit = 100.0 if unit == "pts" else 1.0
    if metric not in MEANS and amount > limit:
        return f"{metric} is 0 to 1 (or 0 to 100pts); {amount:g}{unit} is out of range"
    return None


def _figure_text(metric: str, v: float | None) -> str:
    if v is None:
        return "none"
    if metric in RATES:
        return f"{v:.1%}"
    if metric in AGREEMENT:
        return f"{v:.3f}"
    if metric == "cost_usd":
        return f"${v:,.6f}"
    return f"{v:,.0f} ms" if metric == "latency_ms" else f"{v:,.1f}"


def _signed(metric: str, v: float) -> str:
    sign = "+" if v >= 0 else "-"
    if metric == "cost_usd":
        return f"{sign}${abs(v):,.6f}"
    return f"{sign}{abs(v):,.0f} ms" if metric == "latency_ms" else f"{sign}{abs(v):,.1f}"
