"""Anthropic calls through the published OpenTelemetry instrumentations, each driving the real
anthropic SDK (which emits GenAI spans of its own beside theirs) against the fake provider:
every call is one row, whichever spans tell of it and however they are exported, and its
columns are those `llmlog.wrap` records for the same request where the spans carry them.

One program per instrumentation and mode makes all its calls (plain, `messages.stream()`,
`create(stream=True)`, tool calls, failures, a tool call cut off by max_tokens), once alone
and once inside a span of the app's own; with the simple processor (one export request per
span: the spans of one call arrive in separate requests) and the batch processor (together).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

import llmlog
from llmlog.fake_provider import FakeProvider
from llmlog.record import Call
from llmlog.store import CallFilter
from tests.backends import Backend, SQLiteBackend
from tests.conftest import Recorder
from tests.otel_programs import TOKEN, run_program
from tests.webui import Running

SETUPS = {
    # The anthropic SDK's own spans, no instrumentation.
    "sdk": "",
    "openinference": """\
        from openinference.instrumentation.anthropic import AnthropicInstrumentor
        AnthropicInstrumentor().instrument(tracer_provider=tp)
        """,
    "traceloop": """\
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
        AnthropicInstrumentor().instrument(tracer_provider=tp)
        """,
    "traceloop-events": """\
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
        AnthropicInstrumentor(use_legacy_attributes=False).instrument(tracer_provider=tp, logger_provider=lp)
        """,
}

# The calls, the same in the instrumented program and through `llmlog.wrap`.
CALLS = textwrap.dedent(
    """\
    import anthropic
    M = "claude-sonnet-4-6"
    WEATHER = [{"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                 "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}]

    def user(text):
        return [{"role": "user", "content": text}]

    def calls(client, tag, cut_streams):
        client.messages.create(model=M, max_tokens=200, system="Be brief.", messages=user("plain " + tag))
        with client.messages.stream(model=M, max_tokens=200, messages=user("helper " + tag)) as s:
            s.get_final_message()
        for _ in client.messages.create(model=M, max_tokens=200, messages=user("raw " + tag), stream=True):
            pass
        client.messages.create(model=M, max_tokens=200, messages=user("weather " + tag), tools=WEATHER)
        with client.messages.stream(model=M, max_tokens=200, messages=user("weather streamed " + tag),
                                    tools=WEATHER) as s:
            s.get_final_message()
        for fail, stream in (("500", False), ("429", True)):
            try:
                if stream:
                    with client.messages.stream(model=M, max_tokens=200, messages=user("fail " + tag),
                                                extra_headers={"x-fake-fail": fail}) as s:
                        s.get_final_message()
                else:
                    client.messages.create(model=M, max_tokens=200, messages=user("fail " + tag),
                                           extra_headers={"x-fake-fail": fail})
            except anthropic.APIStatusError:
                pass
        # A tool call cut off by max_tokens: not streamed, then streamed both ways (its JSON never closes).
        cut = dict(model=M, max_tokens=5, tools=WEATHER, tool_choice={"type": "any"})
        client.messages.create(messages=user("cut " + tag), **cut)
        if not cut_streams:
            return 8
        for _ in client.messages.create(messages=user("cut raw " + tag), stream=True, **cut):
            pass
        with client.messages.stream(messages=user("cut helper " + tag), **cut) as s:
            s.get_final_message()
        return 10
    """
)

BODY = CALLS + textwrap.dedent(
    """\
    cut_streams = os.environ["CUT_STREAMS"] == "1"
    n = calls(anthropic_client, "alone", cut_streams)
    with tracer.start_as_current_span("app turn"):
        n += calls(anthropic_client, "in app", cut_streams)
    print(n)
    """
)


@pytest.fixture
def collector(backend: Backend) -> Iterator[Running]:
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


@pytest.fixture
def sqlite_collector(tmp_path: Any) -> Iterator[Running]:
    with Running(SQLiteBackend(tmp_path / "otlp.db"), ingest_token=TOKEN) as running:
        yield running


def cut_streams(setup: str) -> bool:
    """Whether the program streams tool calls cut off by max_tokens: Traceloop in event mode
    raises in the app (its stream wrapper parses the unclosed JSON), so not there."""
    return setup != "traceloop-events"


def wrapped(recorder: Recorder, fake: FakeProvider, setup: str) -> list[Call]:
    """The same calls through `llmlog.wrap`, oldest first."""
    client = llmlog.wrap(anthropic.Anthropic(api_key="sk-test", base_url=fake.url, max_retries=0))
    scope: dict[str, Any] = {}
    exec(CALLS, scope)  # our own text, above
    scope["calls"](client, "alone", cut_streams(setup))
    scope["calls"](client, "in app", cut_streams(setup))
    return sorted(recorder.calls(), key=lambda c: c.timestamp)


def text_of(response: dict[str, Any] | None) -> str:
    blocks = (response or {}).get("content") or []
    return "".join(b.get("text", "") for b in blocks if isinstance(b, dict))


def assert_one_row_per_call(running: Running, backend: Backend, made: int) -> list[Call]:
    calls = sorted(running.store.iter_calls(CallFilter()), key=lambda c: c.timestamp)
    assert len(calls) == made, [(c.model, (c.metadata or {}).get("otel")) for c in calls]
    # The rollup counts each call once, with the calls' own figures.
    (rolled,) = backend.sql(
        "SELECT sum(calls), sum(errors), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM daily"
    )
    assert rolled[:4] == (
        made,
        sum(c.error is not None for c in calls),
        sum(c.input_tokens or 0 for c in calls),
        sum(c.output_tokens or 0 for c in calls),
    )
    assert float(rolled[4]) == pytest.approx(sum(c.cost_usd or 0 for c in calls))
    return calls


def assert_like_wrap(otlp: list[Call], wrap: list[Call], setup: str) -> None:
    """Column by column, where the spans carry the data: figures always (the SDK's own span
    has them exactly); content where the instrumentation sends it."""
    assert len(otlp) == len(wrap)
    for o, w in zip(otlp, wrap, strict=True):
        where = (setup, w.messages)
        assert (o.provider, o.model) == (w.provider, w.model), where
        assert (o.error is None) == (w.error is None), where
        if w.error is None:
            assert (o.input_tokens, o.output_tokens) == (w.input_tokens, w.output_tokens), where
            assert (o.cache_read_tokens, o.cache_creation_tokens) == (
                w.cache_read_tokens,
                w.cache_creation_tokens,
            ), where
            assert o.cost_usd == pytest.approx(w.cost_usd), where
        assert (o.metadata or {}).get("llmlog", {}).get("request_id", "").startswith("req_"), where
        if setup == "sdk" or setup == "traceloop-events":
            continue  # no content on the spans (Traceloop's events name no span)
        if setup == "traceloop" and w.error is not None and w.error.get("status") == 429:
            continue  # Traceloop makes no span of a `messages.stream()` that fails
        assert o.messages is not None, where
        if w.error is not None:
            continue
        assert text_of(o.response) == text_of(w.response), where
        cut = (w.metadata or {}).get("llmlog", {}).get("cut_tool_inputs")
        if cut and setup == "openinference":
            # OpenInference sends what the SDK's partial parse of the cut JSON left: {}.
            assert [t["input"] for t in o.tool_calls or []] == [{}], where
            continue
        assert [(t["name"], t["input"]) for t in o.tool_calls or []] == [
            (t["name"], t["input"]) for t in w.tool_calls or []
        ], where
        # A tool input cut off is kept as the text that came, and the call says so.
        assert (o.metadata or {}).get("llmlog", {}).get("cut_tool_inputs") == cut, where


@pytest.mark.parametrize("batch", [False, True], ids=["simple", "batch"])
@pytest.mark.parametrize("setup", list(SETUPS))
def test_every_call_once_and_like_wrap(
    setup: str, batch: bool, sqlite_collector: Running, tmp_path: Any, fake: FakeProvider, recorder: Recorder
) -> None:
    env = {"CUT_STREAMS": "1" if cut_streams(setup) else "0"}
    (made,) = run_program(sqlite_collector, fake, SETUPS[setup], BODY, batch=batch, env=env)
    otlp = assert_one_row_per_call(sqlite_collector, SQLiteBackend(tmp_path / "otlp.db"), int(made))
    wrap = wrapped(recorder, fake, setup)
    # wrap says which tool inputs were cut off: the streamed ones (not streamed, the API
    # sends what of the input was whole).
    cut = [(w.metadata or {}).get("llmlog", {}).get("cut_tool_inputs") for w in wrap]
    assert cut.count(1) == (4 if cut_streams(setup) else 0) and cut.count(None) == len(cut) - cut.count(1)
    assert_like_wrap(otlp, wrap, setup)
