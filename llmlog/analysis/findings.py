"""Findings: what is wrong now, one ranked list (`/findings`, `llmlog check`, the alerts).

Each finding is one sentence with its numbers, a small chart, and links to its evidence. It
is built from the reports (`llmlog.analysis.reports`): new error types and error-rate jumps,
drift flags per feature and version, over-routing, users far above their peers, the
costliest sessions, and cost this week against last.

A finding's `key` names what it is about, not its numbers ("drift:code-review:v2:output_tokens"),
so that the same finding found again is known as the same: alerts post it once, until an
evaluation no longer finds it (it clears).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from llmlog.store import Store

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
        if self.kind == "session":
            return "/sessions/" + quote(p.pop("session_id"), safe="")
        if self.kind == "user":
            return "/users/" + quote(p.pop("user_id"), safe="")
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
    raise NotImplementedError
