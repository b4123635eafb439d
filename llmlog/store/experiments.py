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
granted the calls and their figures only, and `experiments` is not among them. One table,
`experiments (id, created, definition)`, the definition as `Experiment.to_json()`'s JSON
text: the row stores (SQLite, PostgreSQL, the embedded ClickHouse store's private file) share
the statements here (`RowExperiments`); a ClickHouse server keeps versions of rows
(`clickhouse.experiments`).

`llmlog copy` copies calls and spans only: the experiments stay in the store they were run
on (their new calls are copied, as calls, with their `metadata.experiment`). Erasure leaves
them: a definition names calls by id, never a person, and a sampled call that is erased is
one the comparison no longer finds.
"""

from __future__ import annotations

import abc
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmlog.core.record import format_timestamp, parse_timestamp

log = logging.getLogger("llmlog")

STATUSES = ("planned", "running", "done", "stopped")
# The ids the run makes ("exp-" and 8 hex digits); typed in capitals, they are found too.
ID_PATTERN = re.compile(r"exp-[0-9a-f]{8}", re.IGNORECASE)
# The longest id kept: ids are shown to people and typed back.
ID_MAX = 64

# The table, as SQLite and the embedded ClickHouse store's private file make it. `created` is
# text as `call_data.timestamp` is (`format_timestamp`: text order is time order).
SQLITE_TABLES = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    definition TEXT NOT NULL  -- Experiment.to_json(), as JSON
);
CREATE INDEX IF NOT EXISTS experiments_created ON experiments (created)
"""


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
        """The experiment `to_json` gave; ValueError, KeyError or TypeError when `value` is
        not one."""
        if not isinstance(value, dict):
            raise TypeError(f"an experiment is a JSON object, not {type(value).__name__}")
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


def lookup_id(text: Any) -> str | None:
    """The id a person typed, as it is kept: its spaces around dropped, and one of the run's
    ids ("exp-1a2b3c4d") in lower case. None when no experiment can have it (not text, empty,
    longer than `ID_MAX`, or with a character that cannot be printed: NUL, a control
    character, a lone surrogate), so that such text is never sent to the engine."""
    if not isinstance(text, str):
        return None
    wanted = text.strip()
    if not wanted or len(wanted) > ID_MAX or not wanted.isprintable():
        return None
    return wanted.lower() if ID_PATTERN.fullmatch(wanted) else wanted


def checked_id(experiment: Experiment) -> str:
    """`experiment`'s id, which `lookup_id` must find as it is; ValueError if not."""
    if lookup_id(experiment.id) != experiment.id:
        raise ValueError(
            f"an experiment's id is printable text of at most {ID_MAX} characters without spaces"
            f" around (and the run's ids in lower case): {experiment.id!r}"
        )
    return experiment.id


def definition(experiment: Experiment) -> str:
    """What the `definition` column holds."""
    return json.dumps(experiment.to_json(), ensure_ascii=False, sort_keys=True)


def parsed(experiment_id: str, text: Any) -> Experiment | None:
    """The experiment a stored definition holds; None, said in the log, when it holds none (a
    row written by hand, or by a version of llmlog whose definitions this one cannot read):
    one bad row does not keep the others from being listed."""
    try:
        return Experiment.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("experiment %r: its stored definition cannot be read (%s); skipped", experiment_id, exc)
        return None


class Experiments(abc.ABC):
    """A store's experiments; mixed into `Store`. The row stores share one SQL
    (`RowExperiments`); a ClickHouse server keeps versions of rows."""

    @abc.abstractmethod
    def save_experiment(self, experiment: Experiment) -> None:
        """Keep `experiment`, replacing the one with its id. ValueError for an id
        `lookup_id` would not find as it is."""

    @abc.abstractmethod
    def experiment(self, experiment_id: str) -> Experiment | None:
        """The experiment with this id (as a person typed it: `lookup_id`); None when there is
        none, the id can be no experiment's, or its definition cannot be read."""

    @abc.abstractmethod
    def experiments(self, limit: int = 200) -> list[Experiment]:
        """The experiments, newest first (by `created`), at most `limit`; those whose
        definition cannot be read left out, said in the log."""


class RowExperiments(Experiments):
    """`Experiments` in rows replaced in place, by statements each row store runs as written
    (through `RowTables._run`, whose parameters are `?`)."""

    @abc.abstractmethod
    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def save_experiment(self, experiment: Experiment) -> None:
        self._run(
            "INSERT INTO experiments (id, created, definition) VALUES (?, ?, ?) ON CONFLICT (id)"
            " DO UPDATE SET created = excluded.created, definition = excluded.definition",
            (checked_id(experiment), format_timestamp(experiment.created), definition(experiment)),
        )

    def experiment(self, experiment_id: str) -> Experiment | None:
        wanted = lookup_id(experiment_id)
        if wanted is None:
            return None
        rows = self._run("SELECT id, definition FROM experiments WHERE id = ?", (wanted,))
        return parsed(*rows[0]) if rows else None

    def experiments(self, limit: int = 200) -> list[Experiment]:
        rows = self._run(
            "SELECT id, definition FROM experiments ORDER BY created DESC, id DESC LIMIT ?",
            (max(0, int(limit)),),
        )
        return [e for e in (parsed(i, d) for i, d in rows) if e is not None]
