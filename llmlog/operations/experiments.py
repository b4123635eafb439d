"""Experiments from production: re-send a sample of a feature's recorded calls with one
change (a model, a system prompt, a prompt version, request parameters) and keep each answer
as a new call beside its original, for `llmlog.analysis.experiments` to compare.

Each new call is a replay (`llmlog.operations.replay.replay`): sent through the provider's own
SDK, parsed, redacted, sealed and priced as any recorded call is, with `metadata.experiment`
(the experiment's id) and `metadata.replay_of` (the original's id). A run is resumable: the
sample is fixed when the experiment is planned and kept in the store
(`llmlog.store.experiments`), and a run sends only the sampled calls that have no replay yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmlog.core.config import Settings
from llmlog.core.record import Call
from llmlog.operations.replay import Providers
from llmlog.store.base import Store
from llmlog.store.experiments import Experiment

DEFAULT_CONCURRENCY = 4


class ExperimentError(Exception):
    """The experiment cannot be planned or run as asked; nothing was sent. Said in one line."""


@dataclass
class Change:
    """What an experiment tries. `system_prompt` is the text read from `system_file` or from
    the prompts folder for `prompt_version`; it is sent, never kept in the definition."""

    model: str | None = None
    prompt_version: str | None = None  # "name@version"
    system_file: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The definition's `change` (`Experiment.change`): no text, its hash instead."""
        raise NotImplementedError

    @classmethod
    def of(cls, experiment: Experiment, prompts_root: str | None = None) -> Change:
        """The change of a stored experiment, its text read again (a resumed run); raises
        ExperimentError when the file or prompt is gone or its text changed since."""
        raise NotImplementedError


@dataclass
class Estimate:
    """What the sample should cost with the change: each original's tokens priced at the
    new model (the input adjusted by the new system prompt's length)."""

    usd: float | None  # None: nothing could be priced
    calls: int
    priced: int  # the calls the estimate covers; the rest have no price for their model


def plan(
    store: Store,
    *,
    feature: str,
    version: str | None,
    since: datetime,
    sample: int,
    change: Change,
    budget_usd: float | None = None,
    seed: int | None = None,
    now: datetime | None = None,
) -> Experiment:
    """A new experiment on `sample` calls drawn at random from `feature`'s (and `version`'s)
    successful calls since `since` that can be re-sent (not themselves replays); saved in
    the store with status "planned". Raises ExperimentError naming what is missing."""
    raise NotImplementedError


def estimate(
    store: Store, experiment: Experiment, change: Change, settings: Settings | None = None
) -> Estimate:
    raise NotImplementedError


def run(
    store: Store,
    experiment: Experiment,
    change: Change,
    *,
    providers: Providers | None = None,
    settings: Settings | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_call: Callable[[Call], None] | None = None,
) -> Experiment:
    """Send every sampled call that has no replay yet, `concurrency` at a time, and store
    each answer as it comes; the experiment saved with its status ("done", or "stopped" and
    why: the budget reached, interrupted). `on_call` is shown each new call (a progress bar)."""
    raise NotImplementedError
