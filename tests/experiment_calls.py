"""Calls for experiments: made through the real anthropic and openai SDKs against the fake
provider, recorded as the writer records them, and stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import anthropic
import openai

import llmlog
from llmlog.capture.exchange import Exchange
from llmlog.capture.wrap import instrument
from llmlog.core.config import Settings
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations.replay import Providers
from llmlog.pipeline.intake import prepare
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store

SUPPORT_V1 = "You are a careful support agent.\nAnswer in two sentences."
SUPPORT_V2 = "You are a support agent. Be brief, and name the order when there is one."
TRIAGE = "Sort the ticket: billing, shipping or other."
QUESTIONS = [
    "Where is order 42?",
    "How do refunds work?",
    "My parcel arrived broken, what now?",
    "Can I change the address of order 7?",
    "Why was I charged twice?",
    "Do you ship to Norway?",
    "How long does a refund take?",
    "Is there a discount for students?",
]
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
]


def providers(fake: FakeProvider) -> Providers:
    return Providers.fake(fake.anthropic_base_url, fake.openai_base_url)


def _recorded(make: Callable[[Callable[[Exchange], object]], None], **context: object) -> Call:
    exchanges: list[Exchange] = []
    with llmlog.context(**context):  # type: ignore[arg-type]
        make(exchanges.append)
    assert len(exchanges) == 1
    return prepare(exchanges[0], Settings(), Pricer())


def support_call(fake: FakeProvider, question: str, version: str = "v1", tools: bool = False) -> Call:
    """A support-bot call (Anthropic Messages) at prompt version support-bot@VERSION."""
    system = SUPPORT_V1 if version == "v1" else SUPPORT_V2

    def make(sink: Callable[[Exchange], object]) -> None:
        client = instrument(anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url), sink)
        extra = {"tools": TOOLS} if tools else {}
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=400,
            system=system,
            messages=[{"role": "user", "content": question}],
            # This SDK's signature no longer names temperature; the API still takes it.
            extra_body={"temperature": 0.7},
            **extra,  # type: ignore[arg-type]
        )

    return _recorded(
        make,
        feature="support-bot",
        user_id="u_42",
        session_id="s_1",
        prompt_template_version=f"support-bot@{version}",
        tags=["prod"],
    )


def triage_call(fake: FakeProvider, question: str, responses: bool = False) -> Call:
    """A triage call (OpenAI): Chat Completions streamed, or Responses."""

    def make(sink: Callable[[Exchange], object]) -> None:
        client = instrument(openai.OpenAI(api_key="sk-test", base_url=fake.openai_base_url), sink)
        if responses:
            client.responses.create(
                model="gpt-4o-mini", instructions=TRIAGE, input=question, max_output_tokens=300
            )
            return
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": TRIAGE}, {"role": "user", "content": question}],
            max_completion_tokens=300,
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass

    return _recorded(make, feature="triage", user_id="u_7")


def record_traffic(store: Store, fake: FakeProvider, when: datetime | None = None) -> list[Call]:
    """Six support-bot calls at v1 (two with a tool), two at v2, and four triage calls
    (two Chat, streamed, two Responses), stored; `when` sets their time."""
    calls = [support_call(fake, q, "v1", tools=i < 2) for i, q in enumerate(QUESTIONS[:6])]
    calls += [support_call(fake, q, "v2") for q in QUESTIONS[6:]]
    calls += [triage_call(fake, q, responses=i >= 2) for i, q in enumerate(QUESTIONS[:4])]
    if when is not None:
        calls = [c.replace(timestamp=when) for c in calls]
    store.insert(calls)
    return calls
