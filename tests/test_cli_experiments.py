"""`llmlog experiment`: run, resume, list and show, through the real SDKs to the fake provider
over HTTP, on every engine: what reaches the provider, what is kept, what is refused before
anything is sent, and the exit status a CI job reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.cli.experiments import _param
from llmlog.core.filters import CallFilter
from llmlog.core.prompts import text_hash
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations.experiments import Change, estimate, plan, run
from llmlog.store import open_store
from tests.backends import Backend, SQLiteBackend
from tests.experiment_calls import SUPPORT_V2, providers, record_traffic

KEYS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
)


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeProvider) -> Iterator[None]:
    fake.reset()
    yield
    fake.reset()


def to_fake(fake: FakeProvider) -> dict[str, str | None]:
    """The SDKs' environment, pointed at the test's fake provider."""
    return {
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_AUTH_TOKEN": None,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake.openai_base_url,
    }


def invoke(
    backend: Backend, *args: str, env: dict[str, str | None] | None = None, input: str | None = None
) -> Result:
    # Nothing of the machine's own: no key, no base URL, unless the test gives them.
    environment: dict[str, str | None] = {k: None for k in KEYS}
    environment.update(env or {})
    return CliRunner(env=environment).invoke(
        cli, ["--db", backend.url, "experiment", *args], input=input, catch_exceptions=False
    )


def recorded(backend: Backend, fake: FakeProvider) -> list[Call]:
    # Closed before the command opens it: the embedded ClickHouse takes one opener at a time.
    with backend.open() as store:
        return record_traffic(store, fake)


def experiment_calls(backend: Backend, experiment_id: str) -> list[Call]:
    with backend.open() as store:
        return list(store.iter_calls(CallFilter(metadata=[("experiment", experiment_id)])))


def experiment_id(result: Result) -> str:
    found = re.search(r"Experiment (exp-[0-9a-f]{8})", result.stderr)
    assert found, result.output
    return found.group(1)


def generations(fake: FakeProvider, n: int) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests[n:] if r.path != "/v1/messages/count_tokens"]


@pytest.fixture
def sqlite(tmp_path: Path) -> Backend:
    return SQLiteBackend(tmp_path / "calls.db")


def test_param_values_read_as_json_where_they_can() -> None:
    assert _param("temperature=0") == ("temperature", 0)
    assert _param("top_p=0.9") == ("top_p", 0.9)
    assert _param('stop=["x", "y"]') == ("stop", ["x", "y"])
    assert _param("service_tier=flex") == ("service_tier", "flex")
    assert _param("temperature=null") == ("temperature", None)
    assert _param("user=a=b") == ("user", "a=b")
    assert _param("x=NaN") == ("x", "NaN")
    assert _param('metadata={"team": "a"}') == ("metadata", {"team": "a"})


def test_a_run_prints_the_estimate_and_the_comparison_and_list_and_show_read_it(
    every_engine: Backend, fake: FakeProvider
) -> None:
    backend = every_engine
    originals = {c.id: c for c in recorded(backend, fake)}
    result = invoke(
        backend,
        "run", "--feature", "support-bot", "--version", "v1", "--sample", "4", "--model", "claude-haiku-4-5",
        "--yes", "--seed", "3", "--fake-provider",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    exp = experiment_id(result)
    assert "4 call(s) of support-bot (support-bot@v1)" in result.stderr
    assert "with model claude-haiku-4-5" in result.stderr and "estimated $" in result.stderr
    out = result.stdout
    for metric in ("output_tokens", "latency_ms", "cost_usd", "error_rate", "refusal_rate", "similarity"):
        assert metric in out
    assert "4 of 4 calls replayed; too few pairs to test" in out and "(done; $" in out
    pairs = re.findall(r"/calls/([0-9a-f-]{36})/replay/([0-9a-f-]{36})", out)
    assert pairs and all(a in originals for a, _ in pairs)

    new = experiment_calls(backend, exp)
    assert len(new) == 4 and {c.model for c in new} == {"claude-haiku-4-5"}
    assert all((c.metadata or {})["experiment"] == exp for c in new)
    replayed = [originals[(c.metadata or {})["replay_of"]] for c in new]
    assert len({c.id for c in replayed}) == 4
    assert {c.prompt_template_version for c in replayed} == {"support-bot@v1"}
    assert {b for _, b in pairs} <= {c.id for c in new}

    listed = invoke(backend, "list")
    assert listed.exit_code == 0 and exp in listed.stdout and "4 / 4" in listed.stdout
    assert "done" in listed.stdout and "model claude-haiku-4-5" in listed.stdout
    rows = json.loads(invoke(backend, "list", "--json").stdout)
    assert [(r["id"], r["status"], r["replayed"]) for r in rows] == [(exp, "done", 4)]
    assert rows[0]["spent_usd"] == pytest.approx(sum(c.cost_usd or 0 for c in new))

    shown = invoke(backend, "show", exp, "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["experiment"]["id"] == exp and doc["comparison"] is not None and doc["fail_if"] == []
    missing = invoke(backend, "show", "exp-00000000")
    assert missing.exit_code == 2 and "no experiment 'exp-00000000'" in missing.stderr


def test_the_change_reaches_the_provider_and_the_new_calls(
    sqlite: Backend, fake: FakeProvider, tmp_path: Path
) -> None:
    recorded(sqlite, fake)
    prompts = tmp_path / "prompts"
    (prompts / "support-bot").mkdir(parents=True)
    (prompts / "support-bot" / "v2.txt").write_text(SUPPORT_V2, encoding="utf-8")
    env = {**to_fake(fake), "LLMLOG_PROMPTS": str(prompts)}
    n = len(fake.requests)
    result = invoke(
        sqlite,
        "run", "--feature", "support-bot", "--version", "support-bot@v1", "--sample", "2",
        "--model", "claude-haiku-4-5", "--prompt-version", "v2",  # the feature's prompt's
        "--param", "temperature=0", "--param", 'stop_sequences=["END"]', "--param", "service_tier=auto",
        "--yes",
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bodies = generations(fake, n)
    assert len(bodies) == 2
    for body in bodies:
        assert body["model"] == "claude-haiku-4-5" and body["system"] == SUPPORT_V2
        assert (body["temperature"], body["stop_sequences"], body["service_tier"]) == (0, ["END"], "auto")
        assert body["max_tokens"] == 400  # the rest as logged
    for c in experiment_calls(sqlite, experiment_id(result)):
        assert c.model == "claude-haiku-4-5" and c.system_prompt == SUPPORT_V2
        assert c.prompt_template_version == "support-bot@v2"
        assert c.params is not None and c.params["temperature"] == 0 and c.params["service_tier"] == "auto"
        assert (c.metadata or {})["llmlog"]["replay"]["params"]["stop_sequences"] == ["END"]

    # A system prompt from a file, a parameter removed; redaction as configured applies.
    draft = tmp_path / "draft.txt"
    draft.write_text("Reply in one line; escalate to ops@example.com.", encoding="utf-8")
    n = len(fake.requests)
    result = invoke(
        sqlite,
        "run", "--feature", "support-bot", "--sample", "2", "--system-file", str(draft),
        "--param", "temperature=null", "--yes",
        env={**env, "LLMLOG_REDACT": "email"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bodies = generations(fake, n)
    assert [b["system"] for b in bodies] == [draft.read_text(encoding="utf-8")] * 2
    assert all("temperature" not in b for b in bodies)
    for c in experiment_calls(sqlite, experiment_id(result)):
        assert c.system_prompt == "Reply in one line; escalate to [EMAIL]."
        assert c.prompt_template_version == text_hash(draft.read_text(encoding="utf-8"))
        assert c.params is not None and "temperature" not in c.params
    with open_store(sqlite.url) as store:
        kept = json.dumps([e.to_json() for e in store.experiments()])
    assert "escalate" not in kept and str(draft.resolve()) in kept


def test_past_the_budget_or_declined_nothing_is_sent_nor_saved(sqlite: Backend, fake: FakeProvider) -> None:
    recorded(sqlite, fake)
    n = len(fake.requests)
    args = ("run", "--feature", "support-bot", "--sample", "3", "--model", "claude-opus-4-1")
    refused = invoke(sqlite, *args, "--budget", "0.000001", "--yes", env=to_fake(fake))
    assert refused.exit_code == 2
    assert "passes the budget ($0.000001): nothing sent" in refused.stderr
    declined = invoke(sqlite, *args, env=to_fake(fake), input="n\n")
    assert declined.exit_code == 2 and "Send 3 call(s)? [y/N]" in declined.stderr
    assert "nothing sent" in declined.stderr
    unpriced = invoke(
        sqlite, "run", "--feature", "support-bot", "--sample", "3", "--model", "no-such-model-9",
        "--budget", "5", "--yes", env=to_fake(fake),
    )  # fmt: skip
    assert unpriced.exit_code == 2 and "--budget cannot be held" in unpriced.stderr
    closed = invoke(sqlite, *args, env=to_fake(fake), input="")  # nobody to answer: no
    assert closed.exit_code == 2 and "nothing sent" in closed.stderr
    assert len(fake.requests) == n
    with open_store(sqlite.url) as store:
        assert store.experiments() == [] and store.count(CallFilter()) == 12
    assert "No experiments yet" in invoke(sqlite, "list").stdout
    # Said yes: sent.
    accepted = invoke(sqlite, *args, env=to_fake(fake), input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert len(generations(fake, n)) == 3


def test_no_api_key_is_said_and_resume_sends_once_there_is_one(
    every_engine: Backend, fake: FakeProvider
) -> None:
    backend = every_engine
    recorded(backend, fake)
    n = len(fake.requests)
    keyless = {"ANTHROPIC_BASE_URL": fake.anthropic_base_url}
    result = invoke(backend, "run", "--feature", "support-bot", "--sample", "3", "--yes", env=keyless)
    assert result.exit_code == 2
    assert "ANTHROPIC_API_KEY" in result.stderr and "nothing to compare" in result.stderr
    assert len(fake.requests) == n
    exp = experiment_id(result)
    listed = invoke(backend, "list").stdout
    assert exp in listed and "stopped" in listed and "0 / 3" in listed

    resumed = invoke(backend, "resume", exp, "--yes", env=to_fake(fake))
    assert resumed.exit_code == 0, resumed.output
    assert "0 of 3 calls replayed" in resumed.stderr and "3 to send" in resumed.stderr
    assert len(generations(fake, n)) == 3 and len(experiment_calls(backend, exp)) == 3
    again = invoke(backend, "resume", exp, "--yes", env=to_fake(fake))
    assert again.exit_code == 0 and "every sampled call has its replay" in again.stderr
    assert len(generations(fake, n)) == 3


def test_resume_after_a_budget_stop_sends_only_the_rest(sqlite: Backend, fake: FakeProvider) -> None:
    with sqlite.open() as store:
        record_traffic(store, fake)
        experiment = plan(
            store,
            feature="support-bot",
            version=None,
            since=datetime.now(UTC) - timedelta(days=1),
            sample=6,
            change=Change(),
        )
        whole = estimate(store, experiment, Change()).usd
        assert whole is not None
        # Past the first call whatever the sample's order (the first replay of a prompt prefix
        # is priced as writing it to the cache, a large share of the whole), short of all six.
        experiment.budget_usd = whole * 0.6
        n = len(fake.requests)
        stopped = run(store, experiment, Change(), providers=providers(fake), concurrency=1)
        assert stopped.note == "budget reached"
        first = len(generations(fake, n))
        assert 0 < first < 6
    small = invoke(sqlite, "resume", experiment.id, "--yes", env=to_fake(fake))
    assert small.exit_code == 2 and "passes the budget" in small.stderr
    assert len(generations(fake, n)) == first
    resumed = invoke(sqlite, "resume", experiment.id, "--yes", "--budget", "100", env=to_fake(fake))
    assert resumed.exit_code == 0, resumed.output
    assert f"{first} of 6 calls replayed" in resumed.stderr
    assert len(generations(fake, n)) == 6 and len(experiment_calls(sqlite, experiment.id)) == 6


def test_fail_if_conditions_set_the_exit_status(sqlite: Backend, fake: FakeProvider) -> None:
    recorded(sqlite, fake)
    result = invoke(
        sqlite,
        "run", "--feature", "support-bot", "--sample", "4", "--model", "claude-haiku-4-5", "--yes",
        "--fail-if", "cost_usd < -10%", "--fail-if", "error_rate > 0.5",
        env=to_fake(fake),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "fail-if cost_usd < -10%: MET" in result.stdout
    assert "fail-if error_rate > 0.5: not met" in result.stdout
    exp = experiment_id(result)
    calm = invoke(sqlite, "show", exp, "--fail-if", "error_rate > 0.5")
    assert calm.exit_code == 0, calm.output
    doc = json.loads(invoke(sqlite, "show", exp, "--json", "--fail-if", "cost_usd < -10%").stdout)
    assert [(f["condition"], f["met"]) for f in doc["fail_if"]] == [("cost_usd < -10%", True)]


def test_what_is_wrong_is_said_before_anything_is_sent(
    sqlite: Backend, fake: FakeProvider, tmp_path: Path
) -> None:
    recorded(sqlite, fake)
    # A prompts folder of its own: "no version 'v9'" needs the feature's prompt to be there,
    # whichever tests ran before.
    prompts = tmp_path / "prompts"
    (prompts / "support-bot").mkdir(parents=True)
    (prompts / "support-bot" / "v1.txt").write_text(SUPPORT_V2, encoding="utf-8")
    n = len(fake.requests)
    base = ("run", "--sample", "2", "--yes")
    for args, said in (
        (("--feature", "support-bot", "--param", "temperature"), "not KEY=VALUE"),
        (("--feature", "support-bot", "--param", "messages=[]"), "cannot be set"),
        (("--feature", "support-bot", "--param", "system=x"), "system prompt override"),
        (("--feature", "support-bot", "--fail-if", "vibes > 3"), "--fail-if"),
        (("--feature", "nobody"), "no calls of feature 'nobody'"),
        (("--feature", "support-bot", "--version", "v3"), "support-bot@v1"),
        (("--feature", "support-bot", "--system-file", str(tmp_path / "gone.txt")), "gone.txt"),
        (("--feature", "support-bot", "--prompt-version", "v9"), "no version 'v9'"),
        (("--feature", "support-bot", "--prompt-version", "@v2"), "NAME@VERSION"),
        (("--feature", "support-bot", "--budget", "-1"), "above 0"),
        (("--feature", "support-bot", "--since", "yesterday-ish"), "neither a duration"),
    ):
        result = invoke(sqlite, *base, *args, env={**to_fake(fake), "LLMLOG_PROMPTS": str(prompts)})
        assert result.exit_code == 2, (args, result.output)
        assert said in result.output, (args, result.output)
    assert len(fake.requests) == n
    with open_store(sqlite.url) as store:
        assert store.experiments() == []


def test_no_change_is_a_baseline_said_so(sqlite: Backend, fake: FakeProvider) -> None:
    recorded(sqlite, fake)
    result = invoke(sqlite, "run", "--feature", "triage", "--sample", "4", "--yes", env=to_fake(fake))
    assert result.exit_code == 0, result.output
    assert "No change given: the calls are sent as logged" in result.stderr
    assert "with nothing (the calls as logged)" in result.stderr
    new = experiment_calls(sqlite, experiment_id(result))
    assert len(new) == 4 and {c.provider for c in new} == {"openai"}


def test_json_says_each_condition_and_counts_each_sampled_call_once(
    sqlite: Backend, fake: FakeProvider
) -> None:
    """`show --json` of an experiment with nothing replayed still lists its conditions (not
    met: nothing compared); `list` counts the sampled calls replayed, as the comparison and
    the pages do: one replayed twice (a run stopped between storing and noting) is one."""
    recorded(sqlite, fake)
    keyless = {"ANTHROPIC_BASE_URL": fake.anthropic_base_url}
    result = invoke(sqlite, "run", "--feature", "support-bot", "--sample", "2", "--yes", env=keyless)
    exp = experiment_id(result)
    shown = invoke(sqlite, "show", exp, "--json", "--fail-if", "error_rate > 0.1")
    assert shown.exit_code == 2
    doc = json.loads(shown.stdout)
    assert doc["comparison"] is None
    assert doc["fail_if"] == [{"condition": "error_rate > 0.1", "met": False, "observed": "nothing compared"}]

    assert invoke(sqlite, "resume", exp, "--yes", env=to_fake(fake)).exit_code == 0
    first = experiment_calls(sqlite, exp)[0]
    with sqlite.open() as store:
        store.insert([first.replace(id="a-second-replay", timestamp=first.timestamp + timedelta(seconds=1))])
    rows = json.loads(invoke(sqlite, "list", "--json").stdout)
    assert [(r["id"], r["replayed"]) for r in rows] == [(exp, 2)]
    assert "2 / 2" in invoke(sqlite, "list").stdout
