"""Each experiment's comparison as the `/experiments` list shows it (how many pairs are
replayed, the verdict), kept a few minutes.

A comparison reads every sampled call and its replay and compares their answers' text: tens
of milliseconds to seconds each. A list of a hundred experiments cannot compare them all on
every view, so what an experiment that has ended (done or stopped) compared to is kept, by
its definition as stored: a run resumed, or anything else that changes the definition, is
compared again. Kept `keep_s` at most, so that calls erased or dropped by retention since
are counted again. A running experiment's is not kept: its replays arrive as the page is read.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass

from llmlog.store.experiments import Experiment

ENDED = ("done", "stopped")
KEEP_S = 300.0


@dataclass(frozen=True)
class Summary:
    """What the list shows of one experiment's comparison."""

    stored: int  # the sampled calls whose original is still stored
    replayed: int  # those with a replay
    verdict: str
    flagged: bool  # a metric changed beyond chance


def fingerprint(experiment: Experiment) -> str:
    text = json.dumps(experiment.to_json(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Verdicts:
    def __init__(self, keep_s: float = KEEP_S) -> None:
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, str, Summary]] = {}  # id → (when, fingerprint, summary)

    def get(self, experiment: Experiment) -> Summary | None:
        """What `experiment` compared to, if it is kept and still holds."""
        with self._lock:
            known = self._known.get(experiment.id)
        if known is None or experiment.status not in ENDED:
            return None
        when, print_, summary = known
        if time.monotonic() - when > self.keep_s or print_ != fingerprint(experiment):
            return None
        return summary

    def put(self, experiment: Experiment, summary: Summary) -> None:
        if experiment.status not in ENDED:
            return
        now = time.monotonic()
        with self._lock:
            # Those past their time go: an experiment nobody lists again is not kept for ever.
            self._known = {k: v for k, v in self._known.items() if now - v[0] <= self.keep_s}
            self._known[experiment.id] = (now, fingerprint(experiment), summary)
