"""Experiments on a ClickHouse server (`llmlog.store.experiments`): `ClickHouseStore`'s part of
`Experiments`. An experiment saved again is a newer version of its row (ReplacingMergeTree,
read with FINAL), as the alerts' states are; none is deleted. A version is the saving host's
clock in microseconds: one experiment saved from two hosts whose clocks disagree by more than
the time between the saves keeps the save of the host ahead (a run saves from one process).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from llmlog.core.record import format_timestamp
from llmlog.store.base import Store
from llmlog.store.clickhouse.engine import Engine
from llmlog.store.experiments import Experiment, checked_id, definition, lookup_id, parsed


class ClickHouseExperiments(Store):
    """The part of `ClickHouseStore` that keeps experiments; its engine and statements are the
    store's."""

    engine: Engine
    _experiment_version = 0

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _experiment_next_version(self) -> int:
        """A version later than any this process wrote: an experiment saved twice in one
        microsecond (a run's progress) still ends as the second."""
        self._experiment_version = max(int(time.time() * 1e6), self._experiment_version + 1)
        return self._experiment_version

    def save_experiment(self, experiment: Experiment) -> None:
        row = [checked_id(experiment), format_timestamp(experiment.created), definition(experiment)]
        self.engine.insert(
            "experiments",
            ["id", "created", "definition", "version"],
            [[*row, self._experiment_next_version()]],
        )

    def experiment(self, experiment_id: str) -> Experiment | None:
        wanted = lookup_id(experiment_id)
        if wanted is None:
            return None
        rows = self._select("SELECT id, definition FROM experiments FINAL WHERE id = %s", [wanted])
        return parsed(*rows[0]) if rows else None

    def experiments(self, limit: int = 200) -> list[Experiment]:
        rows = self._select(
            "SELECT id, definition FROM experiments FINAL ORDER BY created DESC, id DESC"
            f" LIMIT {max(0, int(limit))}"
        )
        return [e for e in (parsed(i, d) for i, d in rows) if e is not None]
