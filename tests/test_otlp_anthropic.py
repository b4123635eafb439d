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
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import pytest

import llmlog
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from tests.backends import Backend, PostgresBackend, SQLiteBackend
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
    import anthropic, logging
    from anthropic.lib.middleware import BetaRefusalFallbackMiddleware
    logging.getLogger("anthropic.lib.middleware").setLevel(logging.ERROR)
    M, FALLBACK = "claude-sonnet-4-6", "claude-haiku-4-5"
    WEATHER = [{"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                 "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}]

    def user(text):
        return [{"role": "user", "content": text}]

    def calls(client, tag, cut_streams, fallback_streams):
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
        n = 8
        if cut_streams:
            for _ in client.messages.create(messages=user("cut raw " + tag), stream=True, **cut):
                pass
            with client.messages.stream(messages=user("cut helper " + tag), **cut) as s:
                s.get_final_message()
            n += 2
        # Refused by the model asked for, served by the fallback (the SDK's beta middleware).
        fallback = client.with_middleware(BetaRefusalFallbackMiddleware([{"model": FALLBACK}]))
        refuse = {"x-fake-refuse": M}
        fallback.beta.messages.create(model=M, max_tokens=200, messages=user("fb " + tag),
                                      extra_headers=refuse)
        n += 1
        if fallback_streams:
            with fallback.beta.messages.stream(model=M, max_tokens=200, messages=user("fb streamed " + tag),
                                               extra_headers=refuse) as s:
                s.get_final_message()
            n += 1
        return n
    """
)

BODY = CALLS + textwrap.dedent(
    """\
    streams = os.environ["CUT_STREAMS"] == "1", os.environ["FALLBACK_STREAMS"] == "1"
    n = calls(anthropic_client, "alone", *streams)
    with tracer.start_as_current_span("app turn"):
        n += calls(anthropic_client, "in app", *streams)
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


def fallback_streams(setup: str) -> bool:
    """Whether the program streams a call that falls back: Traceloop's span of
    `beta.messages.stream()` ends before the call starts, with none of its figures, so it is
    not the SDK's span's call and would be a call of its own."""
    return not setup.startswith("traceloop")


def programs_env(setup: str) -> dict[str, str]:
    return {
        "CUT_STREAMS": "1" if cut_streams(setup) else "0",
        "FALLBACK_STREAMS": "1" if fallback_streams(setup) else "0",
    }


def wrapped(recorder: Recorder, fake: FakeProvider, setup: str) -> list[Call]:
    """The same calls through `llmlog.wrap`, oldest first: without the refused requests of
    the calls that fell back (wrap records each request; the spans tell of the call)."""
    client = llmlog.wrap(anthropic.Anthropic(api_key="sk-test", base_url=fake.url, max_retries=0))
    scope: dict[str, Any] = {}
    exec(CALLS, scope)  # our own text, above
    scope["calls"](client, "alone", cut_streams(setup), fallback_streams(setup))
    scope["calls"](client, "in app", cut_streams(setup), fallback_streams(setup))
    calls = sorted(recorder.calls(), key=lambda c: c.timestamp)
    refused = [c for c in calls if (c.response or {}).get("stop_reason") == "refusal"]
    assert len(refused) == (4 if fallback_streams(setup) else 2)
    return [c for c in calls if c not in refused]


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
        assert o.stop_reason == w.stop_reason, where
        assert (o.first_token_ms is None) == (w.first_token_ms is None), where
        if w.error is not None:
            assert (o.error or {}).get("status") == w.error.get("status"), where
            assert (o.error or {}).get("type") == w.error.get("type"), where
        if w.error is None:
            assert (o.input_tokens, o.output_tokens) == (w.input_tokens, w.output_tokens), where
            assert (o.cache_read_tokens, o.cache_creation_tokens) == (
                w.cache_read_tokens,
                w.cache_creation_tokens,
            ), where
            assert o.cost_usd == pytest.approx(w.cost_usd), where
        assert (o.metadata or {}).get("llmlog", {}).get("request_id", "").startswith("req_"), where
        # A call that fell back is the model that served, priced as that, the one asked for noted.
        fell_back = w.model == "claude-haiku-4-5"
        assert (o.metadata or {}).get("llmlog", {}).get("requested_model") == (
            "claude-sonnet-4-6" if fell_back else None
        ), where
        if setup == "sdk" or setup == "traceloop-events":
            continue  # no content on the spans (Traceloop's events name no span)
        if setup == "traceloop" and w.error is not None and w.error.get("status") == 429:
            continue  # Traceloop makes no span of a `messages.stream()` that fails
        assert o.messages is not None, where
        if setup == "openinference":  # the request as sent (its input.value), read as wrap reads it
            assert (o.system_prompt, o.messages, o.tools) == (w.system_prompt, w.messages, w.tools), where
            assert o.params == w.params, where
        if w.error is not None:  # the API's message, as wrap reads it from the body
            assert (o.error or {}).get("message") == w.error.get("message"), where
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
    (made,) = run_program(sqlite_collector, fake, SETUPS[setup], BODY, batch=batch, env=programs_env(setup))
    otlp = assert_one_row_per_call(sqlite_collector, SQLiteBackend(tmp_path / "otlp.db"), int(made))
    wrap = wrapped(recorder, fake, setup)
    # wrap says which tool inputs were cut off: the streamed ones (not streamed, the API
    # sends what of the input was whole).
    cut = [(w.metadata or {}).get("llmlog", {}).get("cut_tool_inputs") for w in wrap]
    assert cut.count(1) == (4 if cut_streams(setup) else 0) and cut.count(None) == len(cut) - cut.count(1)
    assert_like_wrap(otlp, wrap, setup)


def test_every_call_once_on_postgresql(pg_url: str, fake: FakeProvider, recorder: Recorder) -> None:
    """Traceloop, one request per span: each SDK span's call is stored first, then completed
    by Traceloop's span in a later request, on PostgreSQL."""
    backend = PostgresBackend(pg_url)
    with Running(backend, ingest_token=TOKEN) as running:
        (made,) = run_program(running, fake, SETUPS["traceloop"], BODY, env=programs_env("traceloop"))
        otlp = assert_one_row_per_call(running, backend, int(made))
    assert_like_wrap(otlp, wrapped(recorder, fake, "traceloop"), "traceloop")


# ---------------------------------------------------------------- spans by hand: what is not one call

NOW = time.time_ns()
MS = 1_000_000


def _span(trace: str, span: str, start_ms: int, end_ms: int, **attrs: Any) -> dict[str, Any]:
    values = []
    for key, v in attrs.items():
        value = {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}
        values.append({"key": key, "value": value})
    out: dict[str, Any] = {
        "traceId": trace,
        "spanId": span,
        "name": "chat",
        "startTimeUnixNano": str(NOW + start_ms * MS),
        "endTimeUnixNano": str(NOW + end_ms * MS),
        "attributes": values,
    }
    return out


def _sdk(trace: str, span: str, start_ms: int, end_ms: int, model: str, rid: str) -> dict[str, Any]:
    """The anthropic SDK's own span of a call: its response and request ids, exact usage."""
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.response.id": rid,
        "http.request.method": "POST",
        "anthropic.request.id": "req_" + rid,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 20,
    }
    return _span(trace, span, start_ms, end_ms, **attrs)


def _bare(trace: str, span: str, start_ms: int, end_ms: int, **more: Any) -> dict[str, Any]:
    """An instrumentation's span naming no response or request id (Traceloop in event mode)."""
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 10,
    }
    return _span(
        trace, span, start_ms, end_ms, **{**attrs, **{k.replace("__", "."): v for k, v in more.items()}}
    )


def _send(running: Running, *spans: dict[str, Any], services: tuple[str, ...] = ()) -> None:
    """The spans in one request; with `services`, each span from the service named in turn."""
    if services:
        resources = [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": name}}]},
                "scopeSpans": [{"spans": [span]}],
            }
            for name, span in zip(services, spans, strict=True)
        ]
    else:
        resources = [{"scopeSpans": [{"spans": list(spans)}]}]
    r = httpx.post(
        running.base + "/v1/traces",
        json={"resourceSpans": resources},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 200 and not r.json(), r.text


T1, T2, T3 = "a" * 32, "b" * 32, "c" * 32


def test_spans_without_ids_join_a_call_only_when_plainly_the_same(collector: Running) -> None:
    """On SQLite and PostgreSQL."""
    # One bare span beside one SDK span within its time: one call, in one request or two.
    _send(
        collector,
        _sdk(T1, "1" * 16, 10, 90, "claude-sonnet-4-6", "msg_one1"),
        _bare(T2, "2" * 16, 0, 100),
    )
    _send(collector, _sdk(T1, "3" * 16, 210, 290, "claude-sonnet-4-6", "msg_two2"))
    _send(collector, _bare(T3, "4" * 16, 200, 300))
    assert collector.store.count(CallFilter()) == 2
    # Two calls at once (two threads), each an SDK span and a bare span: which bare span goes
    # with which is not plain, so none is joined (a call too many, never two calls as one).
    t = ["d" * 32, "e" * 32, "f" * 32, "9" * 32]
    _send(collector, _sdk(t[0], "5" * 16, 410, 480, "claude-sonnet-4-6", "msg_three"),
          _sdk(t[1], "6" * 16, 420, 490, "claude-sonnet-4-6", "msg_four"),
          _bare(t[2], "7" * 16, 400, 500), _bare(t[3], "8" * 16, 405, 495))  # fmt: skip
    assert collector.store.count(CallFilter()) == 6
    # Beside an SDK span, under the same parent, but not the same call: another model, other
    # tokens, not within its time, one failed and the other not; or under another parent, or
    # from another service. Each pair is two calls.
    app = "1" * 32
    unlike: list[tuple[dict[str, Any], tuple[int, int], bool, str, str]] = [
        ({"gen_ai__request__model": "claude-haiku-4-5"}, (0, 100), False, "d" * 16, "svc"),
        ({"gen_ai__usage__input_tokens": 11}, (0, 100), False, "d" * 16, "svc"),
        ({}, (50, 150), False, "d" * 16, "svc"),
        ({}, (0, 100), True, "d" * 16, "svc"),
        ({}, (0, 100), False, "e" * 16, "svc"),
        ({}, (0, 100), False, "d" * 16, "other-svc"),
    ]
    for n, (attrs, (start, end), failed, parent, service) in enumerate(unlike):
        at = 1000 + 1000 * n
        sdk = _sdk(app, f"{n + 1:x}" * 16, at + 10, at + 90, "claude-sonnet-4-6", f"msg_unlike{n}")
        bare = _bare(app, "f" * 15 + str(n), at + start, at + end, **attrs)
        sdk["parentSpanId"], bare["parentSpanId"] = "d" * 16, parent
        if failed:
            bare["status"] = {"code": 2, "message": "boom"}
        _send(collector, sdk, bare, services=("svc", service))
        assert collector.store.count(CallFilter()) == 8 + 2 * n, (attrs, service)
    # The same pair, from one service: one call.
    at = 1000 + 1000 * len(unlike)
    sdk = _sdk(app, "a" * 16, at + 10, at + 90, "claude-sonnet-4-6", "msg_alike")
    bare = _bare(app, "b" * 16, at, at + 100)
    sdk["parentSpanId"] = bare["parentSpanId"] = "d" * 16
    _send(collector, sdk, bare, services=("svc", "svc"))
    assert collector.store.count(CallFilter()) == 8 + 2 * (len(unlike) - 1) + 1


def test_an_anthropic_sdk_error_message_gives_the_apis_type_status_and_message() -> None:
    """The Anthropic SDK (2.x) words an API error as "429 <message> (request_id: …, path: …,
    type: …)": the row keeps what wrap reads from the body, not the whole sentence."""
    from datetime import UTC, datetime

    from llmlog.capture.outcome import span_error
    from llmlog.core.record import Span

    said = (
        "429 Injected failure (429) from the fake provider. "
        "(request_id: req_7f2b91c4006f4bc8862dad24, path: /v1/messages, type: rate_limit_error)"
    )
    span = Span(
        trace_id="a" * 32, span_id="b" * 16, parent_id=None, name="messages.create", kind="client",
        start=datetime.now(UTC), end=None, status="error", status_message=None,
        attributes={"openinference.span.kind": "LLM", "llm.provider": "anthropic"},
        events=[{"name": "exception", "attributes": {"exception.type": "anthropic.RateLimitError",
                                                     "exception.message": said}}],
    )  # fmt: skip
    assert span_error(span) == {
        "type": "rate_limit_error",
        "status": 429,
        "message": "Injected failure (429) from the fake provider.",
    }
