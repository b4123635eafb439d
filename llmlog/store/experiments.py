"""What every store keeps for experiments (`llmlog.operations.experiments`): each experiment's
definition — which calls it samples, what it changes — and how far its run got, so that an
interrupted run resumes where it stopped and `llmlog experiment list|show` and the
`/experiments` pages read it back.

The new calls an experiment makes are ordinary calls, with `metadata.experiment` (its id) and
`metadata.replay_of` (the original's id); they are found by that metadata, not listed here.
The definition holds no logged text: a system prompt tried from a file is named by its path
and the SHA-256 of its text (the text itself is in the new calls, redacted and sealed as any
call's), so this table has nothing regulated mode would have to seal.

Private, as `settings` and `alerts` are: read-only SQL (the console, `llmlog query`) is
granted the calls and their figures only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmlog.core.record import format_timestamp, parse_timestamp

STATUSES = ("planned", "running", "done", "stopped")


@dataclass
class Experiment:
    """One experiment: a sample of a feature's recorded calls, and the change tried on them."""

    id: str  # "exp-" and 8 hex digits; stable, shown to people, typed back (`show ID`)
    created: datetime  # UTC
    feature: str
    version: str | None  # the prompt version sampled (as stored, "code-review@v1"); None: any
    since: datetime  # the window the sample was drawn from, [since, until)
    until: datetime
    # What is tried: any of "model" (str), "prompt_version" ("name@version", from the prompts
    # folder), "system_file" (a path) with "system_sha256" (its text's hash), and "params"
    # (request parameters set, a dict of JSON values). Never the text itself.
    change: dict[str, Any]
    sample: list[str]  # the original calls' ids, in the order they are sent
    status: str = "planned"  # one of STATUSES
    budget_usd: float | None = None  # the run stops before spending past it
    estimate_usd: float | None = None  # what the whole sample was estimated to cost
    spent_usd: float = 0.0  # what the new calls cost so far (priced calls only)
    finished: datetime | None = None  # when the run last ended (done or stopped)
    note: str | None = None  # why it stopped, in one line ("budget reached", "interrupted")
    extra: dict[str, Any] = field(default_factory=dict)  # room for later fields, kept as given

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": format_timestamp(self.created),
            "feature": self.feature,
            "version": self.version,
            "since": format_timestamp(self.since),
            "until": format_timestamp(self.until),
            "change": self.change,
            "sample": self.sample,
            "status": self.status,
            "budget_usd": self.budget_usd,
            "estimate_usd": self.estimate_usd,
            "spent_usd": self.spent_usd,
            "finished": format_timestamp(self.finished) if self.finished else None,
            "note": self.note,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Experiment:
        return cls(
            id=str(value["id"]),
            created=parse_timestamp(value["created"]),
            feature=str(value["feature"]),
            version=value.get("version"),
            since=parse_timestamp(value["since"]),
            until=parse_timestamp(value["until"]),
            change=dict(value.get("change") or {}),
            sample=[str(i) for i in value.get("sample") or []],
            status=str(value.get("status") or "planned"),
            budget_usd=value.get("budget_usd"),
            estimate_usd=value.get("estimate_usd"),
            spent_usd=float(value.get("spent_usd") or 0.0),
            finished=parse_timestamp(value["finished"]) if value.get("finished") else None,
            note=value.get("note"),
            extra=dict(value.get("extra") or {}),
        )

    def describe_change(self) -> str:
        """The change in one line, for people: "model claude-haiku-4-5, temperature=0"."""
        parts = []
        if self.change.get("model"):
            parts.append(f"model {self.change['model']}")
        if self.change.get("prompt_version"):
            parts.append(f"prompt {self.change['prompt_version']}")
        if self.change.get("system_file"):
            parts.append(f"system prompt from {self.change['system_file']}")
        for key, value in (self.change.get("params") or {}).items():
            parts.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
        return ", ".join(parts) or "nothing (the calls as logged)"


class Experiments:
    """A store's experiments. Every store implements these (the row stores share one SQL)."""

    def save_experiment(self, experiment: Experiment) -> None:
        """Keep `experiment`, replacing the one with its id."""
        raise NotImplementedError

    def experiment(self, experiment_id: str) -> Experiment | None:
        """The experiment with this id; None when there is none."""
        raise NotImplementedError

    def experiments(self, limit: int = 200) -> list[Experiment]:
        """The experiments, newest first."""
        raise NotImplementedError
