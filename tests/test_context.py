"""Context: nesting rules, threads (on request) and asyncio tasks (always)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import anthropic
import pytest

import llmlog
from llmlog.demo.fake_provider import FakeProvider
from tests.conftest import Recorder


def test_nesting_inner_wins_metadata_merges_tags_add() -> None:
    with llmlog.context(feature="outer", user_id="u1", metadata={"a": 1, "b": 1}, tags=["x"]):
        with llmlog.context(feature="inner", metadata={"b": 2, "c": 3}, tags=["y", "x"]) as ctx:
            assert ctx.feature == "inner" and ctx.user_id == "u1"
            assert ctx.metadata == {"a": 1, "b": 2, "c": 3}
            assert ctx.tags == ("x", "y")
        after = llmlog.current()
        assert after.feature == "outer" and after.metadata == {"a": 1, "b": 1} and after.tags == ("x",)
    assert llmlog.current().feature is None


def test_context_rejects_a_string_for_tags() -> None:
    with pytest.raises(TypeError), llmlog.context(tags="oops"):  # type: ignore[arg-type]
        pass


def _call(client: anthropic.Anthropic, text: str) -> None:
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": text}]
    )


def test_threads_follow_only_when_asked(recorder: Recorder, fake: FakeProvider) -> None:
    client = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))
    with llmlog.context(feature="batch", session_id="s7"):
        plain = threading.Thread(target=_call, args=(client, "plain"))
        plain.start()
        plain.join()
        bound = threading.Thread(target=llmlog.propagate(_call), args=(client, "bound"))
        bound.start()
        bound.join()
        with ThreadPoolExecutor(4) as pool:
            fn = llmlog.propagate(_call)  # one bound function used by several threads at once
            list(pool.map(lambda i: fn(client, f"pool{i}"), range(4)))
    by_text = {c.messages[0]["content"]: c for c in recorder.calls() if c.messages}
    assert by_text["plain"].feature is None
    assert by_text["bound"].feature == "batch" and by_text["bound"].session_id == "s7"
    assert all(by_text[f"pool{i}"].feature == "batch" for i in range(4))


async def test_asyncio_tasks_inherit_and_isolate(recorder: Recorder, fake: FakeProvider) -> None:
    client = llmlog.wrap(
        anthropic.AsyncAnthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
    )

    async def one(user: str) -> None:
        with llmlog.context(user_id=user):
            await asyncio.sleep(0)  # interleave the tasks
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": user}]
            )

    with llmlog.context(feature="chat", tags=["async"]):
        await asyncio.gather(*(asyncio.create_task(one(f"user{i}")) for i in range(5)))
    calls = recorder.calls()
    assert len(calls) == 5
    for c in calls:
        assert c.messages is not None and c.user_id == c.messages[0]["content"]  # each task its own user
        assert c.feature == "chat" and c.tags == ["async"]  # and the parent's context
