"""Experiments run: replay's request-parameter overrides, prompt version and extra metadata,
then planning, estimating and running experiments with the real SDKs against the fake
provider over HTTP, on every engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmlog.core.prompts import text_hash
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations.replay import ReplayError, replay
from tests.experiment_calls import SUPPORT_V1, providers, support_call, triage_call


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
