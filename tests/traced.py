"""Traces made by real code, for the pages, the CLI and the browser to show: an agent's request
traced with `llmlog.span` around a wrapped real Anthropic client against the fake provider,
shaped as tests/test_otlp.py's instrumented program (`PROGRAM`) shapes its OTLP trace:
agent run → retrieve, a model call, tool lookup_order, a model call."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import anthropic

import llmlog
from llmlog.demo.fake_provider import FakeProvider


def traced_agent(db: str, fake: FakeProvider, *, fail: bool = False) -> str:
    """Record the agent's request into the store at `db`; its trace id. `fail`: the tool
    raises (its span fails) and the second model call is refused (529: a call with an
    error). llmlog's configuration is put back afterwards."""
    previous = llmlog._settings  # what configure() last set (None: the defaults)
    llmlog.configure(db=db)
    try:
        client = llmlog.wrap(
            anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
        )

        def ask(system: str, text: str, headers: dict[str, str] | None = None) -> None:
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=60,
                system=system,
                messages=[{"role": "user", "content": text}],
                extra_headers=headers,
            )

        with llmlog.span("agent run") as root:
            with llmlog.span("retrieve", k=3):
                time.sleep(0.01)
            ask("You plan.", "plan the refund")
            with contextlib.suppress(LookupError), llmlog.span("tool lookup_order", order=7):
                time.sleep(0.01)
                if fail:
                    raise LookupError("order 7 not found")
            with contextlib.suppress(anthropic.APIStatusError):
                ask("You answer.", "answer the refund", {"x-fake-fail": "529"} if fail else None)
        assert llmlog.flush(timeout=10), "the writer did not drain"
    finally:
        # Drains and stops this writer, and brings back the settings from before.
        if previous is None:
            llmlog.configure()
        else:
            llmlog.configure(**dataclasses.asdict(previous))
    return root.trace_id
