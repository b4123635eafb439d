"""Experiments run: replay's request-parameter overrides, prompt version and extra metadata,
then planning, estimating and running experiments with the real SDKs against the fake
provider over HTTP, on every engine."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import pytest

from llmlog.capture.wrap import instrument
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.prompts import text_hash
from llmlog.core.record import Call
from llmlog.core.sealed import is_sealed
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations.experiments import Change, ExperimentError, estimate, plan, run
from llmlog.operations.replay import Providers, ReplayError, replay
from llmlog.store import Store
from llmlog.store.experiments import Experiment
from tests.backends import Backend
from tests.experiment_calls import (
    QUESTIONS,
    SUPPORT_V1,
    _recorded,
    providers,
    record_traffic,
    support_call,
    triage_call,
)
from tests.test_encryption import K1
from tests.webui import free_port


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeProvider) -> Iterator[None]:
    fake.reset()  # no queued failure or cache state from other tests
    yield
    fake.reset()


# ---------------------------------------------------------------- replay's overrides


def test_params_are_set_over_the_logged_ones_and_none_removes_one(fake: FakeProvider) -> None:
    original = support_call(fake, "Where is order 42?")
    logged = fake.requests[-1].body
    assert logged["temperature"] == 0.7
    new = replay(
        original,
        params={"temperature": 0, "top_k": 5, "stop_sequences": ["END"], "max_tokens": 100},
        providers=providers(fake),
    )
    sent = fake.requests[-1].body
    assert sent == {**logged, "temperature": 0, "top_k": 5, "stop_sequences": ["END"], "max_tokens": 100}
    # What was sent is what the new call holds, and the override is said in its metadata.
    assert new.params is not None
    assert (new.params["temperature"], new.params["top_k"], new.params["max_tokens"]) == (0, 5, 100)
    assert new.metadata is not None
    assert new.metadata["llmlog"]["replay"]["params"] == {
        "temperature": 0,
        "top_k": 5,
        "stop_sequences": ["END"],
        "max_tokens": 100,
    }
    removed = replay(original, params={"temperature": None}, providers=providers(fake))
    assert "temperature" not in fake.requests[-1].body
    assert removed.params is not None and "temperature" not in removed.params
    assert removed.metadata is not None
    assert removed.metadata["llmlog"]["replay"]["params"] == {"temperature": None}
    # No params: the replay's record is as before.
    plain = replay(original, providers=providers(fake))
    assert plain.metadata is not None and "params" not in plain.metadata["llmlog"]["replay"]


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("messages", "logged messages"),
        ("input", "logged input"),
        ("model", "model override"),
        ("system", "system prompt override"),
        ("instructions", "system prompt override"),
        ("stream", "first-token"),
        ("stream_options", "usage"),
    ],
)
def test_params_that_make_the_replay_itself_are_refused(fake: FakeProvider, key: str, said: str) -> None:
    original = triage_call(fake, "Why was I charged twice?")
    n = len(fake.requests)
    with pytest.raises(ReplayError, match=said):
        replay(original, params={key: "x"}, providers=providers(fake))
    assert len(fake.requests) == n


@pytest.mark.parametrize("value", [float("nan"), {"a": [1, float("inf")]}, [float("-inf")]])
def test_params_holding_nan_or_infinity_at_any_depth_are_refused(fake: FakeProvider, value: Any) -> None:
    original = support_call(fake, "Where is order 42?")
    n = len(fake.requests)
    with pytest.raises(ReplayError, match="NaN or infinity"):
        replay(original, params={"metadata": value}, providers=providers(fake))
    with pytest.raises(ExperimentError, match="NaN or infinity"):
        Change(params={"metadata": value}).check()
    assert len(fake.requests) == n


def test_a_prompt_version_names_the_new_system_prompt(fake: FakeProvider) -> None:
    original = support_call(fake, "How do refunds work?")
    assert original.prompt_template_version == "support-bot@v1"
    new = replay(
        original, system_prompt="Be terse.", prompt_version="support-bot@v9", providers=providers(fake)
    )
    assert fake.requests[-1].body["system"] == "Be terse."
    assert new.system_prompt == "Be terse." and new.prompt_template_version == "support-bot@v9"
    # Without a version, an edited prompt is versioned by its text, as before.
    edited = replay(original, system_prompt="Be terse.", providers=providers(fake))
    assert edited.prompt_template_version == text_hash("Be terse.")
    # As logged, the original's version.
    same = replay(original, providers=providers(fake))
    assert same.prompt_template_version == "support-bot@v1" and same.system_prompt == SUPPORT_V1
    n = len(fake.requests)
    with pytest.raises(ReplayError, match="prompt version"):
        replay(original, prompt_version="support-bot@v9", providers=providers(fake))
    assert len(fake.requests) == n


def test_extra_metadata_is_added_beside_the_originals(fake: FakeProvider) -> None:
    original = support_call(fake, "Do you ship to Norway?")
    original.metadata = {**(original.metadata or {}), "tier": "pro"}
    new = replay(original, metadata={"experiment": "exp-0000abcd"}, providers=providers(fake))
    assert new.metadata is not None
    assert new.metadata["experiment"] == "exp-0000abcd"
    assert new.metadata["replay_of"] == original.id and new.metadata["tier"] == "pro"
    n = len(fake.requests)
    for key in ("replay_of", "llmlog"):
        with pytest.raises(ReplayError, match="the replay's own"):
            replay(original, metadata={key: "x"}, providers=providers(fake))
    assert len(fake.requests) == n


# ---------------------------------------------------------------- experiments


def sent_since(fake: FakeProvider, n: int) -> list[dict[str, Any]]:
    """The generation requests the fake received after the first `n`."""
    return [r.body for r in fake.requests[n:] if r.path != "/v1/messages/count_tokens"]


def experiment_calls(store: Store, experiment_id: str) -> list[Call]:
    return list(store.iter_calls(CallFilter(metadata=[("experiment", experiment_id)])))


def support_plan(store: Store, sample: int = 4, change: Change | None = None, **kw: Any) -> Experiment:
    return plan(
        store,
        feature="support-bot",
        version=kw.pop("version", "support-bot@v1"),
        since=kw.pop("since", datetime.now(UTC) - timedelta(days=1)),
        sample=sample,
        change=change or Change(),
        **kw,
    )


def test_each_sampled_call_is_replayed_once_with_both_keys(engine_store: Store, fake: FakeProvider) -> None:
    store = engine_store
    originals = {c.id: c for c in record_traffic(store, fake)}
    change = Change(model="claude-haiku-4-5")
    experiment = support_plan(store, 4, change, seed=7)
    assert re.fullmatch(r"exp-[0-9a-f]{8}", experiment.id)
    assert len(experiment.sample) == len(set(experiment.sample)) == 4
    assert all(originals[i].prompt_template_version == "support-bot@v1" for i in experiment.sample)
    # The same seed on the same calls draws the same sample.
    assert support_plan(store, 4, change, seed=7).sample == experiment.sample
    assert experiment.change == {"model": "claude-haiku-4-5"} and experiment.status == "planned"
    assert store.experiment(experiment.id) is None  # planned, not saved: a run saves it

    cost = estimate(store, experiment, change)
    logged = sum(originals[i].cost_usd or 0 for i in experiment.sample)
    assert (cost.calls, cost.priced) == (4, 4)
    assert cost.usd is not None and 0 < cost.usd < logged  # the same tokens, a cheaper model

    n = len(fake.requests)
    seen: list[Call] = []
    done = run(store, experiment, change, providers=providers(fake), concurrency=3, on_call=seen.append)
    assert done.status == "done" and done.note is None and done.finished is not None
    bodies = sent_since(fake, n)
    assert len(bodies) == 4 and all(b["model"] == "claude-haiku-4-5" for b in bodies)
    new = experiment_calls(store, experiment.id)
    assert sorted(c.id for c in new) == sorted(c.id for c in seen)
    assert sorted((c.metadata or {})["replay_of"] for c in new) == sorted(experiment.sample)
    for c in new:
        original = originals[(c.metadata or {})["replay_of"]]
        assert (c.metadata or {})["experiment"] == experiment.id
        assert c.model == "claude-haiku-4-5" and c.feature == "support-bot"
        assert c.messages == original.messages and c.system_prompt == original.system_prompt
        assert c.prompt_template_version == "support-bot@v1"
    spent = sum(c.cost_usd or 0 for c in new)
    assert spent > 0 and done.spent_usd == pytest.approx(spent)
    saved = store.experiment(experiment.id)
    assert saved is not None and saved.status == "done" and saved.spent_usd == pytest.approx(spent)
    assert saved.sample == experiment.sample

    # Run again: every sampled call has its replay, nothing is sent.
    n = len(fake.requests)
    again = run(store, saved, change, providers=providers(fake))
    assert again.status == "done" and len(fake.requests) == n
    assert len(experiment_calls(store, experiment.id)) == 4


def test_the_sample_is_the_features_successful_calls_that_can_be_resent(
    engine_store: Store, fake: FakeProvider
) -> None:
    store = engine_store
    now = datetime.now(UTC)
    calls = record_traffic(store, fake)
    support = [c for c in calls if c.feature == "support-bot"]
    failed = support_call(fake, "Hello?").replace(error={"type": "api_error", "status": 500, "message": "x"})
    old = support_call(fake, "Old question").replace(timestamp=now - timedelta(days=30))
    imported = support_call(fake, "Imported").replace(params=None)
    store.insert([failed, old, imported])
    # An earlier experiment's replays carry the feature too: never sampled.
    first = support_plan(store, 2, version=None)
    run(store, first, Change(), providers=providers(fake))
    assert len(experiment_calls(store, first.id)) == 2

    everything = support_plan(store, 100, version=None)
    assert sorted(everything.sample) == sorted(c.id for c in support)  # fewer than asked: all
    assert everything.extra["asked"] == 100 and isinstance(everything.extra["seed"], int)
    assert everything.version is None and everything.until >= now

    with pytest.raises(ExperimentError) as none:
        support_plan(store, 5, version="support-bot@v3")
    said = str(none.value)
    assert "support-bot@v1" in said and "support-bot@v2" in said and "'support-bot'" in said
    with pytest.raises(ExperimentError, match="no calls in that window"):
        plan(store, feature="nobody", version=None, since=now - timedelta(days=1), sample=3, change=Change())
    with pytest.raises(ExperimentError, match="cannot be set"):
        support_plan(store, 3, Change(params={"messages": []}))


def test_a_budget_stops_the_run_and_a_resume_completes_it_without_sending_twice(
    engine_store: Store, fake: FakeProvider
) -> None:
    store = engine_store
    record_traffic(store, fake)
    change = Change()  # as logged: the fake answers alike, so each call costs its estimate
    experiment = support_plan(store, 6, change, version=None)
    each = estimate(store, experiment, change)
    assert each.usd is not None
    experiment.budget_usd = each.usd * 0.6  # past the first call in any order, short of all
    n = len(fake.requests)
    stopped = run(store, experiment, change, providers=providers(fake), concurrency=1)
    assert (stopped.status, stopped.note) == ("stopped", "budget reached")
    first = experiment_calls(store, experiment.id)
    assert 0 < len(first) < 6 and len(sent_since(fake, n)) == len(first)
    assert stopped.spent_usd <= experiment.budget_usd * (1 + 1e-9)
    saved = store.experiment(experiment.id)
    assert saved is not None and (saved.status, saved.note) == ("stopped", "budget reached")

    saved.budget_usd = None
    resumed = run(store, saved, Change.of(saved), providers=providers(fake), concurrency=4)
    assert resumed.status == "done"
    new = experiment_calls(store, experiment.id)
    assert len(new) == 6 and len(sent_since(fake, n)) == 6  # none sent twice
    assert sorted((c.metadata or {})["replay_of"] for c in new) == sorted(experiment.sample)
    assert resumed.spent_usd == pytest.approx(sum(c.cost_usd or 0 for c in new))


def test_ctrl_c_stores_what_came_back_and_a_resume_sends_the_rest(
    engine_store: Store, fake: FakeProvider
) -> None:
    store = engine_store
    record_traffic(store, fake)
    experiment = support_plan(store, 6, version=None)
    n = len(fake.requests)

    def interrupt(_: Call) -> None:
        raise KeyboardInterrupt  # as Ctrl-C arriving while the first answer is shown

    with pytest.raises(KeyboardInterrupt):
        run(store, experiment, Change(), providers=providers(fake), concurrency=2, on_call=interrupt)
    saved = store.experiment(experiment.id)
    assert saved is not None and (saved.status, saved.note) == ("stopped", "interrupted")
    stored = experiment_calls(store, experiment.id)
    sent = len(sent_since(fake, n))
    # Nothing more was sent after it; the call in flight beside the first was stored too.
    assert 1 <= len(stored) == sent <= 2
    assert saved.spent_usd == pytest.approx(sum(c.cost_usd or 0 for c in stored))

    done = run(store, saved, Change(), providers=providers(fake))
    assert done.status == "done" and len(sent_since(fake, n)) == 6
    assert len(experiment_calls(store, experiment.id)) == 6


def test_no_key_or_no_provider_stops_the_run_saying_why(
    backend: Backend, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with backend.open() as store:
        record_traffic(store, fake)
        experiment = support_plan(store, 3)
        n = len(fake.requests)
        keyless = Providers(anthropic_base_url=fake.anthropic_base_url)
        stopped = run(store, experiment, Change(), providers=keyless)
        assert stopped.status == "stopped" and stopped.note is not None
        assert "ANTHROPIC_API_KEY" in stopped.note
        closed = Providers(anthropic_api_key="sk-test", anthropic_base_url=f"http://127.0.0.1:{free_port()}")
        stopped = run(store, experiment, Change(), providers=closed)
        assert stopped.status == "stopped" and stopped.note is not None
        assert stopped.note.startswith("anthropic not reached: ") and "refused" in stopped.note
        # Nothing sent, nothing stored: a resume sends every call.
        assert len(fake.requests) == n and experiment_calls(store, experiment.id) == []
        saved = store.experiment(experiment.id)
        assert saved is not None and saved.note == stopped.note
        assert run(store, saved, Change(), providers=providers(fake)).status == "done"
        assert len(experiment_calls(store, experiment.id)) == 3


def test_the_system_text_is_never_kept_and_a_changed_file_is_refused(
    backend: Backend, fake: FakeProvider, tmp_path: Path, prompts_dir: Path
) -> None:
    draft = tmp_path / "draft.txt"
    draft.write_text("Answer in one line. Mail ops@example.com when unsure.", encoding="utf-8")
    change = Change.read(system_file=str(draft), params={"temperature": 0})
    assert change.system_prompt == draft.read_text(encoding="utf-8")
    definition = change.to_json()
    assert definition == {
        "system_file": str(draft.resolve()),
        "system_sha256": hashlib.sha256(draft.read_bytes()).hexdigest(),
        "params": {"temperature": 0},
    }
    with backend.open() as store:
        record_traffic(store, fake)
        # Redaction applies to the new calls as to any: what is sent is the text, what is kept is not.
        settings = Settings(redact=["email"])
        experiment = support_plan(store, 2, change)
        done = run(store, experiment, change, providers=providers(fake), settings=settings)
        assert done.status == "done"
        assert all("ops@example.com" in b["system"] for b in sent_since(fake, len(fake.requests) - 2))
        for c in experiment_calls(store, experiment.id):
            assert c.system_prompt == "Answer in one line. Mail [EMAIL] when unsure."
            assert c.params is not None and c.params["temperature"] == 0
        saved = store.experiment(experiment.id)
        assert saved is not None and saved.change == definition
        assert "Answer in one line" not in json.dumps(saved.to_json())
        assert Change.of(saved).system_prompt == change.system_prompt

        draft.write_text("Something else.", encoding="utf-8")
        with pytest.raises(ExperimentError, match="changed since"):
            Change.of(saved)
        draft.unlink()
        with pytest.raises(ExperimentError, match=r"draft\.txt"):
            Change.of(saved)

    folder = prompts_dir / "support-bot"
    folder.mkdir(exist_ok=True)
    (folder / "v7.txt").write_text("Version seven.", encoding="utf-8")
    versioned = Change.read(prompt_version="support-bot@v7")
    assert versioned.system_prompt == "Version seven."
    assert versioned.to_json() == {
        "prompt_version": "support-bot@v7",
        "system_sha256": hashlib.sha256(b"Version seven.").hexdigest(),
    }
    for bad, said in (("support-bot", "NAME@VERSION"), ("support-bot@v99", "no version 'v99'")):
        with pytest.raises(ExperimentError, match=said):
            Change.read(prompt_version=bad)
    with pytest.raises(ExperimentError, match="not both"):
        Change.read(prompt_version="support-bot@v7", system_file=str(draft))


def test_sealed_calls_are_sampled_with_the_key_and_their_replays_sealed(
    backend: Backend, fake: FakeProvider
) -> None:
    regulated = Settings(key=K1)
    assert regulated.keyring is not None
    calls = [support_call(fake, q) for q in QUESTIONS[:3]]
    for c in calls:
        regulated.keyring.seal_call(c)
    assert all(is_sealed(c.system_prompt) for c in calls)
    with backend.open() as store:
        store.insert(calls)
        # Without the key: nothing that can be re-sent, and said why.
        store.keyring = None
        with pytest.raises(ExperimentError, match="sealed"):
            support_plan(store, 3)
        n = len(fake.requests)
        store.keyring = regulated.keyring
        experiment = support_plan(store, 3)
        assert (
            run(store, experiment, Change(), providers=providers(fake), settings=regulated).status == "done"
        )
        # Sent clear (the provider reads it), kept sealed.
        assert [b["system"] for b in sent_since(fake, n)] == [SUPPORT_V1] * 3
        store.keyring = None
        for c in experiment_calls(store, experiment.id):
            assert is_sealed(c.system_prompt) and c.messages and all(is_sealed(m) for m in c.messages)


def test_the_estimate_prices_cache_reads_as_the_writes_a_replay_makes(
    engine_store: Store, fake: FakeProvider
) -> None:
    """A replay is sent long after its original: the prompt cache the original read from has
    expired (or holds another system prompt), so the cached prefix is written again. An
    estimate taking the original's cache reads as reads would be a fraction of the cost, and
    a budget held on it would not hold."""
    store = engine_store

    def cached(question: str, i: int) -> Call:
        def make(sink: Any) -> None:
            client = instrument(
                anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url), sink
            )
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=400,
                system=[
                    {
                        "type": "text",
                        "text": f"({i}) " + SUPPORT_V1 * 300,
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
                messages=[{"role": "user", "content": question}],
            )

        return _recorded(make, feature="support-bot", prompt_template_version="support-bot@v1")

    # Each call read its own prompt's prefix, cached by the one before it (not stored); the
    # last two share theirs, as a feature's calls do.
    calls = [cached(q, i) for i, q in enumerate(QUESTIONS[:3]) if cached(q, i)]
    calls.append(cached(QUESTIONS[3], 2))
    assert all(c.cache_read_tokens and not c.cache_creation_tokens for c in calls)
    store.insert(calls)
    fake.reset()  # the provider's cache expired since, as it has by the time anyone replays
    change = Change()
    experiment = support_plan(store, 4, change)
    cost = estimate(store, experiment, change)
    done = run(store, experiment, change, providers=providers(fake), concurrency=1)
    assert done.status == "done"
    # Unchanged, on the fake: what it spends is what was estimated.
    assert cost.usd is not None and cost.usd == pytest.approx(done.spent_usd)


@pytest.mark.parametrize("kind", ["429", "529"])
def test_a_rate_limit_stops_the_run_and_a_resume_sends_those_calls_again(
    engine_store: Store, fake: FakeProvider, kind: str
) -> None:
    """A 429 (or Anthropic's 529, overloaded) says nothing of the change: kept as the pair's
    answer it would count as an error the change made, and a resume would never retry it.
    The next calls would be refused alike: the run stops, to be resumed."""
    store = engine_store
    record_traffic(store, fake)
    experiment = support_plan(store, 6, version=None)
    fake.fail_next(kind, 1)
    stopped = run(store, experiment, Change(), providers=providers(fake), concurrency=1)
    assert stopped.status == "stopped" and "anthropic" in (stopped.note or "")
    assert "rate limited" in (stopped.note or "") or "overloaded" in (stopped.note or "")
    assert experiment_calls(store, experiment.id) == []
    saved = store.experiment(experiment.id)
    assert saved is not None
    resumed = run(store, saved, Change.of(saved), providers=providers(fake))
    assert resumed.status == "done"
    new = experiment_calls(store, experiment.id)
    assert len(new) == 6 and all(c.error is None for c in new)


def test_a_replay_the_store_refuses_stops_the_run_and_a_resume_stores_it(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """An answer the store will not take stops the run (no more money on answers it cannot
    keep); the calls in flight are still taken; the experiment says why; a resume sends what
    was not stored and keeps each original's replay once."""
    import sqlite3

    from llmlog.store import open_store

    path = tmp_path / "calls.db"
    with open_store(str(path)) as store:
        record_traffic(store, fake)
        experiment = support_plan(store, 6, version=None)
        n = len(fake.requests)

        def refuse_from_now_on(_: Call) -> None:
            with sqlite3.connect(path) as db:  # as a disk that fills, from outside the run
                db.execute(
                    "CREATE TRIGGER IF NOT EXISTS refuse BEFORE INSERT ON call_data"
                    " BEGIN SELECT RAISE(ABORT, 'no room left'); END"
                )

        stopped = run(
            store, experiment, Change(), providers=providers(fake), concurrency=1, on_call=refuse_from_now_on
        )
        assert stopped.status == "stopped" and stopped.note is not None
        assert stopped.note.startswith("a replay could not be stored") and "no room left" in stopped.note
        assert len(experiment_calls(store, experiment.id)) == 1
        assert len(sent_since(fake, n)) == 2  # the one refused; nothing sent after it
        with sqlite3.connect(path) as db:
            db.execute("DROP TRIGGER refuse")
        saved = store.experiment(experiment.id)
        assert saved is not None
        done = run(store, saved, Change(), providers=providers(fake))
        assert done.status == "done"
        new = experiment_calls(store, experiment.id)
        assert sorted((c.metadata or {})["replay_of"] for c in new) == sorted(experiment.sample)


def test_calls_without_a_price_are_held_against_the_budget_at_the_priced_ones_mean(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """A call whose original logged no tokens has no estimate; held at nothing, every such
    call could be in flight at once past the budget. It is held at the priced calls' mean."""
    from llmlog.store import open_store

    store = open_store(str(tmp_path / "calls.db"))
    calls = [c for c in record_traffic(store, fake) if c.feature == "support-bot"]
    # Four more calls like the first, their tokens not logged (an import from elsewhere, say).
    untold = dict(input_tokens=None, output_tokens=None, cost_usd=None)
    store.insert([calls[2].replace(id=f"untold-{i}", **untold) for i in range(4)])
    experiment = support_plan(store, 12, version=None)
    ahead = estimate(store, experiment, Change())
    assert ahead.usd is not None and ahead.priced == 8 and ahead.calls == 12
    mean = ahead.usd / ahead.priced
    experiment.budget_usd = 2.5 * mean
    # The calls with no price first: held at nothing, all four would go out at once.
    experiment.sample.sort(key=lambda i: not i.startswith("untold-"))
    n = len(fake.requests)
    stopped = run(store, experiment, Change(), providers=providers(fake), concurrency=12)
    assert (stopped.status, stopped.note) == ("stopped", "budget reached")
    assert len(sent_since(fake, n)) < 12
    # Past the budget by no more than estimates and costs differ (the fake's calls cost
    # about their estimate), not by four whole calls.
    assert stopped.spent_usd <= 1.3 * experiment.budget_usd


def test_one_run_of_an_experiment_at_a_time(engine_store: Store, fake: FakeProvider) -> None:
    """Two resumes of one experiment at once would each send the calls left and pay twice:
    while one runs (holding its lease in the store, whatever the process or machine), the
    other is refused before it sends anything. Another experiment runs alongside."""
    store = engine_store
    record_traffic(store, fake)
    experiment = support_plan(store, 4, version=None)
    other = support_plan(store, 2, version=None)
    n = len(fake.requests)
    refused: list[str] = []
    side: list[Experiment] = []

    def meanwhile(_: Call) -> None:
        if refused or side:
            return
        saved = store.experiment(experiment.id)
        assert saved is not None and saved.status == "running"
        with pytest.raises(ExperimentError) as second:
            run(store, saved, Change(), providers=providers(fake))
        refused.append(str(second.value))
        side.append(run(store, other, Change(), providers=providers(fake)))

    done = run(store, experiment, Change(), providers=providers(fake), concurrency=1, on_call=meanwhile)
    assert done.status == "done" and "being run by another process" in refused[0]
    assert side[0].status == "done"
    assert len(experiment_calls(store, experiment.id)) == 4 and len(sent_since(fake, n)) == 6
    # Once it ended, it may run again (nothing left to send).
    again = store.experiment(experiment.id)
    assert again is not None and run(store, again, Change(), providers=providers(fake)).status == "done"
    assert len(sent_since(fake, n)) == 6


def test_a_run_that_lost_its_lease_sends_no_more_and_leaves_the_definition_to_the_new_run(
    engine_store: Store, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stalled past its lease (a laptop asleep, a process stopped) while another took
    the experiment over: once it sees it, it sends nothing more and no longer writes the
    definition, which would put its own status and spending back over the new run's."""
    import llmlog.operations.experiments as operations

    monkeypatch.setattr(operations, "LEASE_S", 0.0)  # renewed at every step, and lapsed at once
    store = engine_store
    record_traffic(store, fake)
    experiment = support_plan(store, 4, version=None)
    n = len(fake.requests)
    taken: list[Experiment] = []

    def taken_over(_: Call) -> None:
        if taken:
            return
        assert store.take_alert_lease("the other run", 600, name=f"experiment:{experiment.id}")
        other = store.experiment(experiment.id)
        assert other is not None
        other.spent_usd, other.note = 9.99, "the other run's"
        store.save_experiment(other)
        taken.append(other)

    lost = run(store, experiment, Change(), providers=providers(fake), concurrency=1, on_call=taken_over)
    assert (lost.status, lost.note) == ("stopped", "another run took the experiment over")
    assert len(sent_since(fake, n)) == 1  # nothing sent once the lease was gone
    kept = store.experiment(experiment.id)
    assert kept is not None and (kept.status, kept.note, kept.spent_usd) == (
        "running",
        "the other run's",
        9.99,
    )
    store.drop_alert_lease("the other run", name=f"experiment:{experiment.id}")


def test_a_system_file_is_a_file_of_text_of_a_sane_size(tmp_path: Path) -> None:
    """A fifo (whose read would wait forever), a directory, or megabytes are refused, said in
    one line, before anything is sent."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.txt"
    huge.write_text("x" * (4 * 2**20 + 1))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00binary")
    cases = [(fifo, "not a file"), (tmp_path, "not a file"), (huge, "at most"), (binary, "UTF-8")]
    for path, said in cases:
        with pytest.raises(ExperimentError, match=said):
            Change.read(system_file=str(path))
