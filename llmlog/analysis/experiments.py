"""An experiment's comparison: each original call against its replay, pair by pair.

Paired, because each new call answers the very request its original did: the differences
are taken within pairs, so a feature's spread between requests (a long diff against a short
one) does not drown the change. Means (output tokens, latency, cost) are compared by the mean
of the paired differences; rates (errors, refusals, tool calls) by the pairs that disagree
(McNemar's test, exact). Tool choice and the answer's text have no "before" to compare with:
they are how often the pair agrees (the same tools called, in order) and how alike the two
answers read (0 to 1).

`Condition` is a `--fail-if` test ("refusal_rate > +2pts"), which makes a comparison a CI gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmlog.core.record import Call
from llmlog.store.base import Store
from llmlog.store.experiments import Experiment

MEANS = ("output_tokens", "latency_ms", "cost_usd")
RATES = ("error_rate", "refusal_rate", "tool_call_rate")
AGREEMENT = ("tool_agreement", "similarity")  # the pair's, 0 to 1; no before and after


@dataclass
class Pair:
    """One original call and its replay (None: not run yet, or not sent)."""

    original: Call
    replay: Call | None
    similarity: float | None = None  # 0..1, the answers' text; None when either has none (or is sealed)
    tools_agree: bool | None = None  # the same tools called, in order; None unless both answered


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
        only, then the least similar answers."""
        raise NotImplementedError

    @property
    def verdict(self) -> str:
        """What the comparison found, in words the CLI and the web page both print."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


def compare(experiment: Experiment, pairs: list[tuple[Call, Call | None]]) -> Comparison:
    """The comparison of `experiment` from its (original, replay) pairs, in sample order."""
    raise NotImplementedError


def load(store: Store, experiment: Experiment) -> Comparison:
    """Read the experiment's originals and its replays (the calls with
    `metadata.experiment` = its id, matched by `metadata.replay_of`) and compare them."""
    raise NotImplementedError


@dataclass(frozen=True)
class Condition:
    """A `--fail-if` condition: `METRIC OP VALUE`. OP is one of > >= < <=. VALUE with a sign
    and a unit is a change: "+2pts" (rates, in points), "+20%" (relative to before), "+150"
    (means, in the metric's unit); VALUE without a sign is the replays' own figure
    ("error_rate > 0.05", "similarity < 0.8")."""

    text: str  # as given
    metric: str
    op: str
    value: float
    unit: str  # "pts", "%", or "" (the metric's unit)
    change: bool  # a change (signed VALUE), or the replays' figure

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Raises ValueError saying what is wrong and what is allowed."""
        raise NotImplementedError

    def met(self, comparison: Comparison) -> tuple[bool, str]:
        """Whether the comparison meets the condition, and what was observed, in words
        ("refusal_rate +3.1 pts (0.4% → 3.5%)"). Not met when the figure is unknown."""
        raise NotImplementedError
