"""Experiments from production: re-send a sample of a feature's recorded calls with one
change (a model, a system prompt, a prompt version, request parameters) and keep each answer
as a new call beside its original, for `llmlog.analysis.experiments` to compare.

Each new call is a replay (`llmlog.operations.replay.replay`): sent through the provider's own
SDK, parsed, redacted, sealed and priced as any recorded call is, with `metadata.experiment`
(the experiment's id) and `metadata.replay_of` (the original's id). A run is resumable: the
sample is fixed when the experiment is planned and kept in the store
(`llmlog.store.experiments`), and a run sends only the sampled calls that have no replay yet.

No change at all is an experiment too: the calls re-sent as logged, a baseline of how much
the answers vary by themselves (the noise any change is to be read against).

The budget is held against what the calls cost as they come back, plus the estimate of
each call still in flight and of the next one: a call is not sent when those would pass it.
A call costs what its answer turns out to be, not its estimate, so the last calls may pass
the budget by the difference. Calls of a model with no price count nothing against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import secrets
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmlog.core import prompts
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.operations.replay import NotSent, Providers, ReplayError, check_params, replay, request_of
from llmlog.pipeline.pricing import Pricer
from llmlog.store.base import Store
from llmlog.store.experiments import Experiment

log = logging.getLogger("llmlog")

DEFAULT_CONCURRENCY = 4
MAX_SYSTEM_BYTES = 4 * 2**20  # as the replay form's limit
LEASE_S = 60.0  # a run's hold on its experiment, renewed while it runs
MAX_CONCURRENCY = 64
# The candidates a sample is drawn from, at most: their ids are read whole, then shuffled.
MAX_CANDIDATES = 1_000_000
_BATCH = 100  # calls read from the store at once
# The output limits a request may set: an estimate takes no more output than they allow.
_OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class ExperimentError(Exception):
    """The experiment cannot be planned or run as asked; nothing was sent. Said in one line."""


def new_id() -> str:
    return f"exp-{secrets.token_hex(4)}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _read_file(path: str) -> str:
    try:
        # A system prompt is a file of text: not a fifo or a device, whose read may never end,
        # and not megabytes (a model's whole context is a few hundred kB of text).
        info = Path(path).stat()
        if not stat.S_ISREG(info.st_mode):
            raise ExperimentError(f"{path}: not a file")
        if info.st_size > MAX_SYSTEM_BYTES:
            raise ExperimentError(
                f"{path}: {info.st_size:,} bytes; a system prompt is at most {MAX_SYSTEM_BYTES:,}"
            )
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ExperimentError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ExperimentError(f"{path}: {exc.strerror or exc}") from None


def _read_prompt(version: str, root: str | None) -> str:
    name, at, v = version.rpartition("@")
    if not at or not name or not v:
        raise ExperimentError(f"a prompt version is NAME@VERSION (code-review@v2), not {version!r}")
    try:
        return str(prompts.read(name, v, root))
    except LookupError as exc:
        raise ExperimentError(str(exc).strip("'\"")) from None
    except UnicodeDecodeError:
        raise ExperimentError(f"prompt {version}: not UTF-8 text") from None
    except OSError as exc:
        raise ExperimentError(f"prompt {version}: {exc.strerror or exc}") from None


@dataclass
class Change:
    """What an experiment tries. `system_prompt` is the text read from `system_file` or from
    the prompts folder for `prompt_version`; it is sent, never kept in the definition."""

    model: str | None = None
    prompt_version: str | None = None  # "name@version"
    system_file: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(
        cls,
        *,
        model: str | None = None,
        prompt_version: str | None = None,
        system_file: str | None = None,
        params: dict[str, Any] | None = None,
        prompts_root: str | None = None,
    ) -> Change:
        """The change asked for, its system prompt read from the file or the prompts folder;
        raises ExperimentError when it cannot be read or is not a change a replay can make."""
        if prompt_version and system_file:
            raise ExperimentError("a system prompt from a file or a prompt version, not both")
        text = None
        if system_file:
            system_file = str(Path(system_file).resolve())  # a resumed run may start elsewhere
            text = _read_file(system_file)
        elif prompt_version:
            text = _read_prompt(prompt_version, prompts_root)
        change = cls(model or None, prompt_version or None, system_file or None, text, dict(params or {}))
        change.check()
        return change

    def check(self) -> None:
        try:
            check_params(self.params)
        except ReplayError as exc:
            raise ExperimentError(str(exc)) from None

    @property
    def empty(self) -> bool:
        """No change: the calls are re-sent as logged (a baseline of the answers' own spread)."""
        return not (self.model or self.system_prompt is not None or self.params)

    def to_json(self) -> dict[str, Any]:
        """The definition's `change` (`Experiment.change`): no text, its hash instead."""
        out: dict[str, Any] = {}
        if self.model:
            out["model"] = self.model
        if self.prompt_version:
            out["prompt_version"] = self.prompt_version
        if self.system_file:
            out["system_file"] = self.system_file
        if self.system_prompt is not None:
            out["system_sha256"] = _sha256(self.system_prompt)
        if self.params:
            out["params"] = dict(self.params)
        return out

    @classmethod
    def of(cls, experiment: Experiment, prompts_root: str | None = None) -> Change:
        """The change of a stored experiment, its text read again (a resumed run); raises
        ExperimentError when the file or prompt is gone or its text changed since."""
        c = experiment.change
        text = None
        where = None
        if c.get("prompt_version"):
            where = f"prompt {c['prompt_version']}"
            text = _read_prompt(str(c["prompt_version"]), prompts_root)
        elif c.get("system_file"):
            where = str(c["system_file"])
            text = _read_file(where)
        if text is not None and _sha256(text) != c.get("system_sha256"):
            raise ExperimentError(
                f"the text of {where} changed since experiment {experiment.id} was planned:"
                " its remaining calls would try another prompt than its first ones"
                " (start a new experiment, or put the text back)"
            )
        params = c.get("params") or {}
        change = cls(c.get("model"), c.get("prompt_version"), c.get("system_file"), text, dict(params))
        change.check()
        return change


@dataclass
class Estimate:
    """What the sample should cost with the change: each original's tokens priced at the
    new model (the input adjusted by the new system prompt's length)."""

    usd: float | None  # None: nothing could be priced
    calls: int
    priced: int  # the calls the estimate covers; the rest have no price for their model


def _why_not(call: Call, change: Change) -> str | None:
    """Why `call` is no candidate for the experiment (None: it is one)."""
    if (call.metadata or {}).get("replay_of"):
        return "a replay itself"
    try:
        request_of(call, model=change.model, system_prompt=change.system_prompt)
    except ReplayError as exc:
        return str(exc)
    return None


def _originals(store: Store, ids: list[str]) -> Iterator[tuple[str, Call | None]]:
    """Each of `ids` with its call, whole (None: no longer stored), in the order given."""
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        found = {c.id: c for c in store.recent(CallFilter(ids=batch), len(batch))}
        for i in batch:
            yield i, found.get(i)


def _window(since: datetime, until: datetime) -> str:
    return f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


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
    """A new experiment on `sample` calls drawn at random from `feature`'s (and `version`'s,
    as stored: "code-review@v1") successful calls in [since, now) that can be re-sent (not
    themselves replays), with status "planned"; not saved (`run` saves it). The same seed on
    the same calls draws the same sample. Fewer candidates than `sample`: all of them
    (`extra["asked"]` says how many were asked for). Raises ExperimentError naming what is
    missing."""
    if sample < 1:
        raise ExperimentError("the sample is one call or more")
    change.check()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    since = since.astimezone(UTC)
    if since >= now:
        raise ExperimentError(f"the window starts at {since:%Y-%m-%d %H:%M} UTC, which is not in the past")
    seed = secrets.randbelow(2**31) if seed is None else seed
    d, p = store.dialect, store.dialect.placeholder
    where = f"feature = {p} AND timestamp >= {p} AND timestamp < {p}"
    params: list[Any] = [feature, d.time_param(since), d.time_param(now)]
    chosen = where + " AND error IS NULL"
    if version is not None:
        chosen += f" AND prompt_template_version = {p}"
    rows = store.internal_query(
        f"SELECT DISTINCT id FROM call_data WHERE {chosen}",
        [*params, *([version] if version is not None else [])],
        timeout_s=120.0,
        limit=MAX_CANDIDATES,
    ).rows
    # Sorted before the shuffle: the engine's order is no order, and the seed must draw alike.
    ids = sorted(str(r[0]) for r in rows)
    random.Random(seed).shuffle(ids)
    picked: list[str] = []
    passed: Counter[str] = Counter()
    for i, call in _originals(store, ids):
        if len(picked) >= sample:
            break
        if call is None:
            continue
        why = _why_not(call, change)
        if why is not None:
            passed[why] += 1
            continue
        picked.append(i)
    if not picked:
        raise ExperimentError(_nothing_to_sample(store, feature, version, since, now, where, params, passed))
    return Experiment(
        id=new_id(),
        created=now,
        feature=feature,
        version=version,
        since=since,
        until=now,
        change=change.to_json(),
        sample=picked,
        budget_usd=budget_usd,
        extra={"seed": seed, "asked": sample},
    )


def _nothing_to_sample(
    store: Store,
    feature: str,
    version: str | None,
    since: datetime,
    now: datetime,
    where: str,
    params: list[Any],
    passed: Counter[str],
) -> str:
    what = f"feature {feature!r}" + (f" at version {version!r}" if version else "")
    said = f"no successful call of {what} from {_window(since, now)} can be re-sent"
    if passed:
        reasons = "; ".join(f"{n} {why}" for why, n in passed.most_common(3))
        said += f" ({reasons})"
    rows = store.internal_query(
        f"SELECT DISTINCT prompt_template_version FROM call_data WHERE {where}",
        params,
        timeout_s=60.0,
        limit=100,
    ).rows
    versions = sorted(str(r[0]) for r in rows if r[0] is not None)
    if version is not None or versions:
        said += f"; its versions in that window: {prompts.a_few(versions)}"
    elif not rows:
        said += "; it has no calls in that window (an earlier --since?)"
    return said


def _pricer(settings: Settings) -> Pricer | None:
    try:
        return Pricer(settings.prices)
    except Exception:  # a bad price file: said where the calls are priced (the replays)
        log.exception("llmlog: cannot load prices; the experiment is not estimated")
        return None


def _prefix(call: Call, change: Change) -> str:
    """What a prompt cache is keyed by, about: the model, the tools and the system prompt sent."""
    system = change.system_prompt if change.system_prompt is not None else call.system_prompt
    tools = json.dumps(call.tools, sort_keys=True, default=str)
    return _sha256(f"{call.provider}\0{change.model or call.model}\0{tools}\0{system}")


def call_estimate(
    pricer: Pricer | None, call: Call, change: Change, now: datetime, cached: set[str] | None = None
) -> float | None:
    """What re-sending `call` with `change` should cost: its tokens at the new model's price
    in force `now`; the input by the new system prompt's length (a token per 4 characters),
    the output no more than a new output limit allows. None: no price, or no tokens logged.
    The tokens the original read from the prompt cache are priced as written to it where its
    prefix (`_prefix`) is not in `cached` yet, which is then added to: by the time a call is
    replayed its cache has expired (or held another system prompt), and the first replay of
    a prefix writes it again for the next ones to read. (A read costs a tenth of a write: an
    estimate at the logged reads would not hold a budget.)"""
    if pricer is None or call.input_tokens is None or call.output_tokens is None:
        return None
    tokens_in, tokens_out = call.input_tokens, call.output_tokens
    if change.system_prompt is not None:
        grown = (len(change.system_prompt) - len(call.system_prompt or "")) / 4
        tokens_in = max(0, round(tokens_in + grown))
    for key in _OUTPUT_LIMITS:
        limit = change.params.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            tokens_out = min(tokens_out, limit)
    read = call.cache_read_tokens or 0
    if cached is not None:
        key = _prefix(call, change)
        read = 0 if key in cached else read
        cached.add(key)
    written = (call.cache_creation_tokens or 0) + read
    probe = call.replace(
        model=change.model or call.model,
        input_tokens=max(tokens_in, written),
        output_tokens=tokens_out,
        cache_read_tokens=0 if read else call.cache_read_tokens,
        cache_creation_tokens=written if read else call.cache_creation_tokens,
        timestamp=now,
        cost_usd=None,
    )
    if read:
        # Anthropic's usage splits the writes by time to live: the reads join the 5-minute ones.
        usage = call.response.get("usage") if isinstance(call.response, dict) else None
        split = usage.get("cache_creation") if isinstance(usage, dict) else None
        hour = split.get("ephemeral_1h_input_tokens") if isinstance(split, dict) else None
        hour = hour if isinstance(hour, int) and 0 <= hour <= written else 0
        probe.response = {
            "usage": {
                "cache_creation": {
                    "ephemeral_5m_input_tokens": written - hour,
                    "ephemeral_1h_input_tokens": hour,
                }
            }
        }
    try:
        return pricer.price(probe).cost_usd
    except Exception:  # a price the card cannot apply to these tokens: unpriced, as at ingest
        return None


def estimate(
    store: Store,
    experiment: Experiment,
    change: Change,
    settings: Settings | None = None,
    *,
    only: Collection[str] | None = None,
) -> Estimate:
    """The estimate of the sample's calls (`only` these of them: what a resumed run has
    left), priced as `call_estimate` does. A sampled call no longer stored is not counted."""
    pricer = _pricer(settings or Settings())
    now = datetime.now(UTC)
    ids = [i for i in experiment.sample if only is None or i in only]
    total, calls, priced = 0.0, 0, 0
    cached: set[str] = set()
    for _, call in _originals(store, ids):
        if call is None:
            continue
        calls += 1
        usd = call_estimate(pricer, call, change, now, cached)
        if usd is not None:
            total += usd
            priced += 1
    return Estimate(total if priced else None, calls, priced)


def replays(store: Store, experiment_id: str) -> dict[str, Call]:
    """The experiment's new calls so far, by the original each replays."""
    out: dict[str, Call] = {}
    for call in store.iter_calls(CallFilter(metadata=[("experiment", experiment_id)])):
        original = (call.metadata or {}).get("replay_of")
        if isinstance(original, str):
            out.setdefault(original, call)
    return out


def _unreachable(call: Call) -> bool:
    """The request never reached the provider (refused, no such host): no answer to compare,
    and the next calls would fare alike."""
    err = call.error or {}
    exception = str(err.get("exception") or "")
    return (
        err.get("status") is None
        and err.get("type") in ("connection_error", "timeout")
        and exception.endswith(("ConnectError", "ConnectTimeout"))
    )


def _refused_for_load(call: Call) -> str | None:
    """Why the provider turned the request away for its load (429 rate limited, 529
    overloaded), or None. Such an answer says nothing of the change, and the next calls
    would be turned away alike: the run stops without keeping it, so a resume sends it again."""
    err = call.error or {}
    status, kind = err.get("status"), str(err.get("type") or "")
    if status == 429 or kind in ("rate_limit_error", "rate_limit_exceeded", "RateLimitError"):
        return "rate limited"
    if status == 529 or kind in ("overloaded_error", "OverloadedError"):
        return "overloaded"
    return None


class _Workers:
    """`n` threads re-sending calls; their answers come back on `results`, in the order they
    come. Daemon threads: a run left at a second Ctrl-C does not wait for them to exit."""

    def __init__(self, n: int, send: Callable[[Call], Call]) -> None:
        self.tasks: queue.Queue[Call | None] = queue.Queue()
        self.results: queue.Queue[tuple[Call, Call | None, BaseException | None]] = queue.Queue()
        self._send = send
        self._threads = [
            threading.Thread(target=self._work, name=f"llmlog-experiment-{i}", daemon=True) for i in range(n)
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while (call := self.tasks.get()) is not None:
            try:
                self.results.put((call, self._send(call), None))
            except BaseException as exc:  # handed to the run, which decides
                self.results.put((call, None, exc))

    def close(self) -> None:
        for _ in self._threads:
            self.tasks.put(None)


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
    each answer as it comes (from this thread); the experiment saved as it goes (its spent
    and status, for `llmlog experiment list`), and at the end: "done", or "stopped" and why
    (the budget reached, a provider not reached or rate limited, no key, interrupted). `on_call` is shown
    each new call once stored (a progress bar).

    Ctrl-C (KeyboardInterrupt, here or in `on_call`): nothing more is sent, the calls in
    flight are waited for and stored (a second Ctrl-C leaves them), the experiment is saved
    as stopped ("interrupted") and the KeyboardInterrupt raised again."""
    settings = settings or Settings()
    concurrency = max(1, min(int(concurrency), MAX_CONCURRENCY))
    # One run of an experiment at a time, across processes and machines sharing the store:
    # two would each send the calls left, and pay for them twice. The lease is renewed while
    # the run lives, so one killed outright frees it within LEASE_S.
    lease = Lease(store, experiment.id)
    try:
        return _run(store, experiment, change, lease, providers, settings, concurrency, on_call)
    finally:
        lease.drop()


class Lease:
    """The right to run one experiment, held in the store (`Store.take_alert_lease`)."""

    def __init__(self, store: Store, experiment_id: str) -> None:
        self.store, self.name = store, f"experiment:{experiment_id}"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.renewed = time.monotonic()
        if not store.take_alert_lease(self.holder, LEASE_S, name=self.name):
            raise ExperimentError(
                f"experiment {experiment_id} is being run by another process; resume it once that"
                f" run ends (or {LEASE_S:.0f} s after it stopped without ending)"
            )

    def renew(self, now: float | None = None) -> bool:
        """Renewed, if due; False when another run has taken it over meanwhile."""
        now = time.monotonic() if now is None else now
        if now - self.renewed < LEASE_S / 4:
            return True
        self.renewed = now
        return self.store.take_alert_lease(self.holder, LEASE_S, name=self.name)

    def drop(self) -> None:
        try:
            self.store.drop_alert_lease(self.holder, name=self.name)
        except Exception:  # it expires by itself
            log.exception("llmlog: could not let go of the lease on %s", self.name)


def _run(
    store: Store,
    experiment: Experiment,
    change: Change,
    lease: Lease,
    providers: Providers | None,
    settings: Settings,
    concurrency: int,
    on_call: Callable[[Call], None] | None,
) -> Experiment:
    done = replays(store, experiment.id)
    experiment.spent_usd = sum(c.cost_usd or 0.0 for c in done.values())
    pending = [i for i in experiment.sample if i not in done]
    experiment.status, experiment.note, experiment.finished = "running", None, None
    store.save_experiment(experiment)
    pricer = _pricer(settings)
    now = datetime.now(UTC)
    meta = {"experiment": experiment.id}
    budget = experiment.budget_usd

    def send(call: Call) -> Call:
        return replay(
            call,
            model=change.model,
            system_prompt=change.system_prompt,
            params=change.params or None,
            prompt_version=change.prompt_version if change.system_prompt is not None else None,
            metadata=meta,
            providers=providers,
            settings=settings,
        )

    gone = 0

    def still_stored() -> Iterator[Call]:
        nonlocal gone
        for _, call in _originals(store, pending):
            if call is None:
                gone += 1  # removed since it was sampled (retention, an erasure)
            else:
                yield call

    originals = still_stored()
    upcoming: Call | None = next(originals, None)
    in_flight: dict[str, float] = {}  # id → its estimate, held against the budget
    cached: set[str] = set()  # the prompt prefixes this run has sent (`call_estimate`)
    stop: str | None = None
    failed: Counter[str] = Counter()
    lost = 0  # answers paid for that the store would not take
    # A call with no price (its model unpriced, no tokens logged) is held against the budget at
    # the mean of the priced ones, not at nothing: at nothing, every such call in flight at
    # once could pass the budget.
    mean = 0.0
    if budget is not None:
        ahead = estimate(store, experiment, change, settings, only=set(pending))
        mean = ahead.usd / ahead.priced if ahead.usd is not None and ahead.priced else 0.0
    workers = _Workers(min(concurrency, max(1, len(pending))), send)
    held = True  # the lease: once another run has taken it, the definition is that run's

    def keep() -> None:
        # A run that lost its lease writes its answers (paid for) as calls, never the
        # definition: that would put back its own status and spending over the new run's.
        if held:
            store.save_experiment(experiment)

    def finish(status: str, note: str | None) -> Experiment:
        experiment.status, experiment.note = status, note
        experiment.finished = datetime.now(UTC)
        keep()
        return experiment

    def take(original: Call, new: Call | None, exc: BaseException | None) -> None:
        nonlocal stop, lost
        in_flight.pop(original.id, None)
        if isinstance(exc, NotSent):
            stop = stop or str(exc)
        elif isinstance(exc, ReplayError):
            failed[str(exc)] += 1
        elif exc is not None:
            raise exc
        elif new is not None and _unreachable(new):
            err = new.error or {}
            stop = stop or f"{original.provider} not reached: {err.get('message') or err.get('type')}"
        elif new is not None and (load := _refused_for_load(new)):
            err = new.error or {}
            stop = stop or f"{original.provider} {load}: {err.get('message') or err.get('type')}"
        elif new is not None:
            try:
                store.insert([new])
            except Exception as exc:  # the store refused it: stop paying for answers it will not keep
                lost += 1
                log.exception("llmlog: a replay of %s could not be stored", original.id)
                stop = stop or f"a replay could not be stored: {type(exc).__name__}: {exc}"[:500]
                return
            experiment.spent_usd += new.cost_usd or 0.0
            keep()
            if on_call is not None:
                on_call(new)

    try:
        while True:
            # Before sending more: a run that lost its lease sends nothing after.
            if held and not lease.renew():
                held = False
                stop = stop or "another run took the experiment over"
            while stop is None and upcoming is not None and len(in_flight) < concurrency:
                usd = call_estimate(pricer, upcoming, change, now, cached)
                usd = mean if usd is None else usd
                if budget is not None and experiment.spent_usd + sum(in_flight.values()) + usd > budget:
                    stop = "budget reached"
                    break
                in_flight[upcoming.id] = usd
                workers.tasks.put(upcoming)
                upcoming = next(originals, None)
            if not in_flight:
                break
            try:
                got = workers.results.get(timeout=LEASE_S / 4)
            except queue.Empty:
                got = None
            if got is not None:
                take(*got)
    except KeyboardInterrupt:
        _drain(workers, in_flight, take)
        finish("stopped", "interrupted")
        workers.close()
        raise
    except BaseException as exc:
        finish("stopped", f"failed: {type(exc).__name__}: {exc}"[:500])
        workers.close()
        raise
    workers.close()
    if stop is None and failed:
        why = failed.most_common(1)[0][0]
        stop = f"{sum(failed.values())} call(s) could not be re-sent ({why})"
    if stop is not None:
        if lost > 1:
            stop += f" ({lost} answers not stored; resume sends them again)"
        return finish("stopped", stop)
    note = f"{gone} sampled call(s) no longer stored" if gone > 0 else None
    return finish("done", note)


def _drain(
    workers: _Workers,
    in_flight: dict[str, float],
    take: Callable[[Call, Call | None, BaseException | None], None],
) -> None:
    """After a Ctrl-C: the answers still coming, stored; a second Ctrl-C leaves them."""
    try:
        while in_flight:
            take(*workers.results.get())
    except KeyboardInterrupt:
        pass
    except Exception:
        log.exception("llmlog: a call in flight when the run was interrupted was not stored")
