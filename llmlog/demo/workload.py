"""Realistic production traffic, deterministic from a seed, for benchmarks and load tests.

`generate(n, seed)` returns `n` model calls as `Step`s: the exact SDK call to make, with its
llmlog context. The mix is what teams ship — a support bot (Anthropic, tools, prompt caching,
long conversations), a research agent (OpenAI Responses, function calls), an SQL assistant
(Chat Completions, tool calls), a code reviewer and a summarizer (single calls). Each feature
has its own multi-KB system prompt, the agents a multi-KB tool list sent on every call.
Sessions run from 1 to 80 turns with a heavy tail, each call re-sending the conversation so
far, tool calls and tool results included (the assistant's turns are written here, so the
workload does not depend on what the provider answers). About half the calls stream; about
2% fail (the fake provider fails a call when asked to by a header).

`run(step, anthropic_client, openai_client)` makes one call through the SDKs.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai

WORDS = [
    "account", "billing", "invoice", "refund", "order", "shipment", "delay", "warranty", "password",
    "login", "export", "report", "dashboard", "latency", "timeout", "deploy", "rollback", "migration",
    "schema", "index", "query", "cache", "token", "budget", "customer", "ticket", "escalation",
    "policy", "compliance", "region", "plan", "upgrade", "downgrade", "seat", "license",
]  # fmt: skip

FAILURES = ("429", "500", "529", "429", "drop")
ERROR_RATE = 0.02
MAX_TURNS = 80


def prose(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


class Text:
    """The workload's words: `prose` for what users, tools and documents say, `answer` for the
    assistant's turns that conversations carry. This one draws both from `WORDS` (short
    answers that compress unrealistically well); a workload of other text passes its own to
    `generate`, the calls and conversations otherwise the same."""

    def prose(self, rng: random.Random, n_words: int) -> str:
        return prose(rng, n_words)

    def answer(self, rng: random.Random) -> str:
        return prose(rng, rng.randint(20, 80))


def system_prompt(name: str, version: str, rng: random.Random) -> str:
    # Multi-KB, as production prompts are: rules, style guide, examples.
    rules = "\n".join(f"{i}. {prose(rng, 18)}" for i in range(1, 40))
    return f"You are the {name} assistant (prompt {version}).\n\nRules:\n{rules}\n"


def tool(name: str, props: dict[str, str], style: str = "anthropic", detail: int = 6) -> dict[str, Any]:
    """A tool definition in the provider's shape: anthropic, chat or responses."""
    described = {k: {"type": t, "description": f"The {k.replace('_', ' ')}."} for k, t in props.items()}
    schema = {
        "type": "object",
        "properties": described,
        "required": list(props),
    }
    desc = f"{name.replace('_', ' ').capitalize()}. " + "Use it when the user asks about it. " * detail
    if style == "chat":
        return {"type": "function", "function": {"name": name, "description": desc, "parameters": schema}}
    if style == "responses":
        return {"type": "function", "name": name, "description": desc, "parameters": schema}
    return {"name": name, "description": desc, "input_schema": schema}


def feature_prompts(rng: random.Random) -> dict[tuple[str, str], str]:
    """(feature, version) → its system prompt, for every feature and prompt version."""
    versions = {
        "support-bot": ("v3", "v4"),
        "code-review": ("v1", "v2"),
        "summarize": ("v7",),
        "research-agent": ("v1", "v2"),
        "sql-assistant": ("v2",),
    }
    return {(f, v): system_prompt(f, v, rng) for f, vs in versions.items() for v in vs}


@dataclass(slots=True)
class Step:
    """One model call: which API, the SDK keyword arguments, and its llmlog context."""

    api: str  # "messages" (Anthropic), "chat" or "responses" (OpenAI)
    kwargs: dict[str, Any]
    stream: bool
    context: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def fails(self) -> bool:
        return "x-fake-fail" in self.headers


def _turns(rng: random.Random) -> int:
    # Pareto with shape 1: half the sessions are one or two turns, one in forty passes 40.
    return min(int(rng.paretovariate(1.0)), MAX_TURNS)


class _Features:
    def __init__(self, rng: random.Random, text: Text) -> None:
        self.text = text
        self.prompts = feature_prompts(rng)
        support = [
            ("lookup_order", {"order_id": "string"}),
            ("issue_refund", {"order_id": "string", "amount": "number", "reason": "string"}),
            ("escalate", {"summary": "string", "priority": "string"}),
            ("update_address", {"order_id": "string", "address": "string"}),
        ]
        self.support_tools = [tool(n, p, detail=12) for n, p in support]
        agent = [
            ("web_search", {"query": "string", "recency_days": "integer"}),
            ("read_page", {"url": "string"}),
            ("summarize_page", {"url": "string", "focus": "string"}),
            ("save_note", {"title": "string", "body": "string"}),
        ]
        self.agent_tools = [tool(n, p, "responses", detail=12) for n, p in agent]
        self.sql_tools = [
            tool(n, p, "chat", detail=12)
            for n, p in [("run_sql", {"sql": "string"}), ("describe_table", {"table": "string"})]
        ]
        self.users = [f"user_{i:03d}" for i in range(200)]


def _session_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}_{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"


def _headers(rng: random.Random) -> dict[str, str]:
    return {"x-fake-fail": rng.choice(FAILURES)} if rng.random() < ERROR_RATE else {}


def _support(f: _Features, rng: random.Random, ctx: dict[str, Any]) -> Iterator[Step]:
    version = rng.choice(["v3", "v4"])
    text = f.prompts[("support-bot", version)]
    system = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
    ctx = {**ctx, "session_id": _session_id(rng, "sess"), "prompt_template_version": f"support-bot@{version}"}
    messages: list[dict[str, Any]] = [{"role": "user", "content": f.text.prose(rng, rng.randint(6, 40))}]
    for turn in range(_turns(rng)):
        kwargs = dict(model="claude-sonnet-4-6", max_tokens=1024, system=system, tools=f.support_tools)
        yield Step("messages", {**kwargs, "messages": list(messages)}, rng.random() < 0.5, ctx, _headers(rng))
        if rng.random() < 0.4:  # the assistant looks something up, then the result comes back
            use_id = f"toolu_{rng.getrandbits(64):016x}"
            messages.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": f.text.prose(rng, 8)},
                        {"type": "tool_use", "id": use_id, "name": "lookup_order", "input": {"id": turn}},
                    ],
                }
            )
            result = f'{{"status": "shipped", "note": "{f.text.prose(rng, 10)}"}}'
            block = {"type": "tool_result", "tool_use_id": use_id, "content": result}
            messages.append({"role": "user", "content": [block]})
        else:
            answer = f.text.answer(rng)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
            messages.append({"role": "user", "content": f.text.prose(rng, rng.randint(6, 40))})


def _research(f: _Features, rng: random.Random, ctx: dict[str, Any]) -> Iterator[Step]:
    version = rng.choice(["v1", "v2"])
    version_name = f"research-agent@{version}"
    ctx = {**ctx, "session_id": _session_id(rng, "agent"), "prompt_template_version": version_name}
    items: list[dict[str, Any]] = [{"role": "user", "content": f"Research: {f.text.prose(rng, 12)}"}]
    for _ in range(_turns(rng)):
        instructions = f.prompts[("research-agent", version)]
        kwargs = dict(model="gpt-5-mini", instructions=instructions, tools=f.agent_tools)
        yield Step("responses", {**kwargs, "input": list(items)}, rng.random() < 0.5, ctx, _headers(rng))
        call_id = f"call_{rng.getrandbits(64):016x}"
        args = f'{{"query": "{f.text.prose(rng, 5)}"}}'
        items.append({"type": "function_call", "call_id": call_id, "name": "web_search", "arguments": args})
        items.append({"type": "function_call_output", "call_id": call_id, "output": f.text.prose(rng, 60)})


def _sql(f: _Features, rng: random.Random, ctx: dict[str, Any]) -> Iterator[Step]:
    ctx = {**ctx, "session_id": _session_id(rng, "sql"), "prompt_template_version": "sql-assistant@v2"}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f.prompts[("sql-assistant", "v2")]},
        {"role": "user", "content": f"How many {rng.choice(WORDS)} rows last week?"},
    ]
    for _ in range(min(_turns(rng), 12)):
        yield Step(
            "chat",
            dict(model="gpt-4.1-mini", messages=list(messages), tools=f.sql_tools),
            False,
            ctx,
            _headers(rng),
        )
        tc_id = f"call_{rng.getrandbits(64):016x}"
        sql = f"SELECT count(*) FROM {rng.choice(WORDS)} WHERE created_at > now() - interval '7 days'"
        args = f'{{"sql": "{sql}"}}'
        messages.append(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": tc_id, "type": "function", "function": {"name": "run_sql", "arguments": args}}
                ],
            }
        )
        rows = f'[{{"count": {rng.randint(0, 9999)}}}]'
        messages.append({"role": "tool", "tool_call_id": tc_id, "content": rows})


def _review(f: _Features, rng: random.Random, ctx: dict[str, Any]) -> Iterator[Step]:
    version = rng.choice(["v1", "v2"])
    diff = "\n".join(f"+    {f.text.prose(rng, 8)}" for _ in range(rng.randint(10, 80)))
    kwargs: dict[str, Any] = dict(
        model=rng.choice(["gpt-4.1", "gpt-4.1-mini"]),
        messages=[
            {"role": "system", "content": f.prompts[("code-review", version)]},
            {"role": "user", "content": f"Review this diff:\n{diff}"},
        ],
    )
    stream = rng.random() < 0.5
    if stream:
        kwargs["stream_options"] = {"include_usage": True}
    ctx = {**ctx, "prompt_template_version": f"code-review@{version}"}
    yield Step("chat", kwargs, stream, ctx, _headers(rng))


def _summarize(f: _Features, rng: random.Random, ctx: dict[str, Any]) -> Iterator[Step]:
    doc = "\n\n".join(f.text.prose(rng, rng.randint(40, 120)) for _ in range(rng.randint(3, 15)))
    # The over-routing pattern: some short summaries go to the most expensive model.
    model = "claude-opus-4-7" if rng.random() < 0.15 else "claude-haiku-4-5"
    kwargs = dict(
        model=model,
        max_tokens=300,
        system=f.prompts[("summarize", "v7")],
        messages=[{"role": "user", "content": doc}],
    )
    yield Step("messages", kwargs, False, {**ctx, "prompt_template_version": "summarize@v7"}, _headers(rng))


FEATURES = [
    ("support-bot", _support, 5),
    ("code-review", _review, 3),
    ("summarize", _summarize, 3),
    ("research-agent", _research, 2),
    ("sql-assistant", _sql, 2),
]


def generate(n: int, seed: int = 7, text: Text | None = None) -> list[Step]:
    """`n` calls of realistic traffic; the same seed (and `text`) gives the same calls."""
    rng = random.Random(seed)
    features = _Features(random.Random(rng.random()), text or Text())
    weights = [w for *_, w in FEATURES]
    steps: list[Step] = []
    while len(steps) < n:
        name, make, _ = rng.choices(FEATURES, weights=weights)[0]
        user = rng.choice(features.users[: 40 if rng.random() < 0.6 else 200])
        tier = "enterprise" if int(user[-3:]) % 3 == 0 else "free"
        ctx = {"feature": name, "user_id": user, "metadata": {"tier": tier}, "tags": ["workload"]}
        for step in make(features, rng, ctx):
            steps.append(step)
            if len(steps) >= n:
                break
    return steps


def run(step: Step, anthropic_client: anthropic.Anthropic, openai_client: openai.OpenAI) -> None:
    """Make the call through the SDK (reading a stream to its end); an API error is the
    workload's own doing and is swallowed."""
    kwargs = {**step.kwargs, "extra_headers": step.headers} if step.headers else step.kwargs
    try:
        if step.api == "messages":
            if step.stream:
                with anthropic_client.messages.stream(**kwargs) as s:
                    s.get_final_message()
            else:
                anthropic_client.messages.create(**kwargs)
        elif step.api == "chat":
            if step.stream:
                for _ in openai_client.chat.completions.create(stream=True, **kwargs):
                    pass
            else:
                openai_client.chat.completions.create(**kwargs)
        elif step.stream:
            for _ in openai_client.responses.create(stream=True, **kwargs):
                pass
        else:
            openai_client.responses.create(**kwargs)
    except (anthropic.APIError, openai.APIError):
        pass


async def arun(
    step: Step, anthropic_client: anthropic.AsyncAnthropic, openai_client: openai.AsyncOpenAI
) -> None:
    """`run`, with the async clients."""
    kwargs = {**step.kwargs, "extra_headers": step.headers} if step.headers else step.kwargs
    try:
        if step.api == "messages":
            if step.stream:
                async with anthropic_client.messages.stream(**kwargs) as s:
                    await s.get_final_message()
            else:
                await anthropic_client.messages.create(**kwargs)
        elif step.api == "chat":
            if step.stream:
                async for _ in await openai_client.chat.completions.create(stream=True, **kwargs):
                    pass
            else:
                await openai_client.chat.completions.create(**kwargs)
        elif step.stream:
            async for _ in await openai_client.responses.create(stream=True, **kwargs):
                pass
        else:
            await openai_client.responses.create(**kwargs)
    except (anthropic.APIError, openai.APIError):
        pass
