"""Content read from spans is shared between the calls of a conversation, as the SDK path's
decoder shares it: a message, system prompt or tool list that an earlier span sent is the
same object in the later call, so the stores name it by identity instead of serializing and
hashing it again. Sharing must never change what a call holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llmlog.capture.genai import span_call, span_content
from llmlog.core.record import Span
from llmlog.pipeline.otlp import calls_from

SYSTEM = "You are the support assistant.\n\nRules: be brief."
TOOL = '{"name": "lookup_order", "description": "Look an order up.", "parameters": {"type": "object"}}'


def turn(n: int, provider: str, extra: dict[str, Any] | None = None) -> Span:
    """An OpenInference span of a conversation's `n`th turn: the system message, then
    `n` user messages (each turn re-sends the earlier ones)."""
    a: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "llm.system": provider,
        "llm.provider": provider,
        "llm.model_name": "gpt-4.1-mini" if provider == "openai" else "claude-sonnet-4-6",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": SYSTEM,
        "llm.tools.0.tool.json_schema": TOOL,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": f"answer {n}",
    }
    for i in range(1, n + 1):
        a[f"llm.input_messages.{i}.message.role"] = "user"
        a[f"llm.input_messages.{i}.message.content"] = f"question {i}"
    a.update(extra or {})
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return Span(
        f"{n:032x}", f"{n:016x}", None, "llm", "internal", start, start + timedelta(seconds=1), attributes=a
    )


def test_a_resent_message_is_the_same_object_in_the_later_call() -> None:
    for provider in ("anthropic", "openai"):
        first, second = (
            span_call(s, span_content(s.attributes)) for s in (turn(1, provider), turn(2, provider))
        )
        assert first.messages is not None and second.messages is not None
        assert second.messages[: len(first.messages)] == first.messages
        # The messages both sent, the system prompt and the tools: one object each.
        assert all(a is b for a, b in zip(first.messages, second.messages, strict=False)), provider
        assert first.system_prompt is second.system_prompt == SYSTEM, provider
        assert first.tools is second.tools and first.tools, provider
        assert second.messages[-1] == (
            {"role": "user", "content": "question 2"}
            if provider == "openai"
            else {"role": "user", "content": [{"type": "text", "text": "question 2"}]}
        )


def test_sharing_never_mixes_values_that_are_equal_only_as_python_sees_them() -> None:
    """`True == 1 == 1.0` as dict keys: a message whose content is a boolean or a number is
    read as it is, never as another call's message with an equal key."""
    said = []
    for value in ("1", 1, True, 1.0):
        s = turn(1, "anthropic", {"llm.input_messages.1.message.content": value})
        (call,) = calls_from([s], [])
        said.append(call.messages[-1]["content"][0]["text"])
    assert said == ["1", "1", "True", "1.0"]


def test_a_shared_message_is_not_changed_by_the_calls_that_hold_it() -> None:
    (first,) = calls_from([turn(3, "openai")], [])
    before = [dict(m) for m in first.messages]
    (second,) = calls_from([turn(4, "openai")], [])
    second.messages.append({"role": "user", "content": "more"})
    assert first.messages == before
    assert len(second.messages) == 6


def test_the_server_process_collects_garbage_less_often_and_never_walks_what_startup_made() -> None:
    """`llmlog serve` sets its process's collector (`whole_process_gc`), in a process of its own here."""
    import subprocess
    import sys

    code = (
        "import gc; from llmlog.pipeline.processes import GC_THRESHOLD, whole_process_gc; whole_process_gc();"
        " print(gc.get_threshold()[0] == GC_THRESHOLD > 700, gc.get_freeze_count() > 1000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_what_the_span_reader_shares_is_bounded_in_bytes_too() -> None:
    """A conversation of huge messages (an image's base64, a pasted document) must not hold
    20,000 of them: the shared messages are bounded by their size as well as their count."""
    from llmlog.capture import genai

    shared = genai._MESSAGES
    big = "x" * (2 * 2**20)
    for n in range(40):
        s = turn(1, "anthropic", {"llm.input_messages.1.message.content": f"{n} {big}"})
        calls_from([s], [])
        assert shared.bytes <= shared.max_bytes
    assert sum(len(orjson_size(m)) for m in shared.made.values()) <= shared.max_bytes


def orjson_size(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)
