"""The OTLP receiver of `llmlog serve`: the real OpenTelemetry SDK and exporter, a published
instrumentation driving the real Anthropic SDK against the fake provider, hand-written OTLP
JSON, and malformed input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from llmlog.core.encryption import Keyring
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from tests.backends import Backend
from tests.test_encryption import raw_bytes
from tests.webui import HOSTILE, Running, assert_inert

TOKEN = "otel-token"

# A real program: OpenInference's Anthropic instrumentation (and the SDK's own GenAI spans)
# around two model calls in an agent-like trace, exported with the OTLP/HTTP protobuf
# exporter; and GenAI log events carrying the content of a hand-made semconv span.
PROGRAM = textwrap.dedent(
    """\
    import os, time
    from opentelemetry import trace, _logs
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from openinference.instrumentation.anthropic import AnthropicInstrumentor
    import anthropic

    base, headers = os.environ["COLLECTOR"], {"Authorization": "Bearer " + os.environ["TOKEN"]}
    resource = Resource.create({"service.name": "agent-svc"})
    tp = TracerProvider(resource=resource)
    spans_out = OTLPSpanExporter(endpoint=base + "/v1/traces", headers=headers)
    tp.add_span_processor(SimpleSpanProcessor(spans_out))
    trace.set_tracer_provider(tp)
    lp = LoggerProvider(resource=resource)
    logs_out = OTLPLogExporter(endpoint=base + "/v1/logs", headers=headers)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    AnthropicInstrumentor().instrument(tracer_provider=tp)
    tracer = trace.get_tracer("agent")
    client = anthropic.Anthropic(api_key="sk-test", base_url=os.environ["FAKE"], max_retries=0)

    with tracer.start_as_current_span("agent run") as root:
        with tracer.start_as_current_span("retrieve"):
            time.sleep(0.01)
        client.messages.create(model="claude-sonnet-4-6", max_tokens=60, system="You plan.",
                               messages=[{"role": "user", "content": "plan the refund"}])
        with tracer.start_as_current_span("tool lookup_order"):
            time.sleep(0.01)
        client.messages.create(model="claude-sonnet-4-6", max_tokens=60, system="You answer.",
                               messages=[{"role": "user", "content": "answer the refund"}])
        print(format(root.get_span_context().trace_id, "032x"))

    # GenAI semantic conventions by hand, content in log events (sent before the span ends).
    logger = lp.get_logger("genai")
    with tracer.start_as_current_span("chat gpt-4.1") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                             "gen_ai.request.model": "gpt-4.1", "gen_ai.usage.input_tokens": 120,
                             "gen_ai.usage.output_tokens": 30, "gen_ai.conversation.id": "conv-7",
                             "gen_ai.response.finish_reasons": ["stop"]})
        ctx = span.get_span_context()
        for name, body in (("gen_ai.system.message", {"content": "Be terse."}),
                           ("gen_ai.user.message", {"content": "status of order 9?"}),
                           ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": "Shipped."}})):
            logger.emit(body=body, attributes={"event.name": name}, event_name=name)  # in the span's context
        print(format(ctx.trace_id, "032x"))
    tp.shutdown()
    lp.shutdown()
    """
)


@pytest.fixture
def collector(backend: Backend) -> Iterator[Running]:
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


def run_program(collector: Running, fake: FakeProvider) -> list[str]:
    env = {**os.environ, "COLLECTOR": collector.base, "TOKEN": TOKEN, "FAKE": fake.anthropic_base_url}
    r = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def calls_of(collector: Running, trace_id: str) -> list[Call]:
    return [c for c in collector.store.iter_calls(CallFilter()) if c.trace_id == trace_id]


def test_an_instrumented_program_becomes_calls_and_a_trace_tree(
    collector: Running, fake: FakeProvider
) -> None:
    agent_trace, chat_trace = run_program(collector, fake)
    calls = sorted(calls_of(collector, agent_trace), key=lambda c: c.timestamp)
    # Two model calls, each seen by OpenInference and by the SDK's own span: recorded once.
    assert len(calls) == 2, [c.metadata for c in calls]
    first, second = calls
    assert (first.provider, first.model) == ("anthropic", "claude-sonnet-4-6")
    assert first.system_prompt == "You plan." and second.system_prompt == "You answer."
    assert first.messages == [{"role": "user", "content": "plan the refund"}]  # as sent
    assert first.response and first.response["content"][0]["text"]
    assert first.input_tokens and first.output_tokens and first.cost_usd and first.cost_usd > 0
    assert (
        first.latency_ms is not None and first.metadata and first.metadata["otel"]["service"] == "agent-svc"
    )
    # The whole tree is kept, model calls marked, with timings.
    spans = collector.store.trace(agent_trace)
    names = [s.name for s in spans]
    assert names[0] == "agent run" and "retrieve" in names and "tool lookup_order" in names
    root = spans[0]
    assert root.parent_id is None and all(s.parent_id for s in spans[1:])
    assert {s.call_id for s in spans if s.call_id} == {first.id, second.id}
    assert all(s.duration_ms is not None and s.duration_ms >= 0 for s in spans)
    # The call's page links to its trace, whose page shows the tree, each call linked.
    page = collector.get(f"/calls/{first.id}").text
    assert f'href="/traces/{agent_trace}"' in page and f"{len(spans)} spans, 2 calls" in page
    assert "(this call)" in page
    tree = collector.get(f"/traces/{agent_trace}").text
    assert (
        "tool lookup_order" in tree
        and f'href="/calls/{first.id}"' in tree
        and f'href="/calls/{second.id}"' in tree
    )
    # GenAI semconv span, its content carried by log events.
    (chat,) = calls_of(collector, chat_trace)
    assert (chat.provider, chat.model, chat.session_id) == ("openai", "gpt-4.1", "conv-7")
    assert (chat.input_tokens, chat.output_tokens, chat.stop_reason) == (120, 30, "stop")
    assert chat.system_prompt == "Be terse."
    # An OpenAI call's messages as sent (the system message among them) and its response a
    # Chat completion, as wrap stores them.
    assert chat.messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "status of order 9?"},
    ]
    assert chat.response == {
        "object": "chat.completion",
        "model": "gpt-4.1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Shipped."}, "finish_reason": "stop"}
        ],
    }


def _otlp_json(spans: list[dict[str, object]]) -> dict[str, object]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}],
            }
        ]
    }


def _attrs(**values: object) -> list[dict[str, object]]:
    out = []
    for key, v in values.items():
        key = key.replace("__", ".")
        if isinstance(v, bool):
            value: dict[str, object] = {"boolValue": v}
        elif isinstance(v, int):
            value = {"intValue": str(v)}
        elif isinstance(v, list):
            value = {"arrayValue": {"values": [{"stringValue": x} for x in v]}}
        else:
            value = {"stringValue": str(v)}
        out.append({"key": key, "value": value})
    return out


NOW = time.time_ns()
TRACE = "5b8efff798038103d269b633813fc60c"


def post(c: Running, path: str, body: bytes, content_type: str, gz: bool = False) -> httpx.Response:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"}
    if gz:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return httpx.post(c.base + path, content=body, headers=headers, timeout=30)


def test_otlp_json_with_deprecated_names_and_openinference_context(collector: Running) -> None:
    spans = [
        {"traceId": TRACE, "spanId": "eee19b7ec3c1b174", "name": "old-style", "kind": 3,
         "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 250_000_000),
         "attributes": _attrs(gen_ai__system="openai", gen_ai__request__model="gpt-4.1",
                              gen_ai__usage__prompt_tokens=11, gen_ai__usage__completion_tokens=7,
                              **{"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hello old",
                                 "gen_ai.completion.0.role": "assistant",
                                 "gen_ai.completion.0.content": "hi"}),
         "status": {"code": 2, "message": "boom"}},
        {"traceId": TRACE, "spanId": "aaa19b7ec3c1b174", "name": "oi", "kind": 1,
         "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 10),
         "attributes": _attrs(openinference__span__kind="LLM", llm__model_name="claude-haiku-4-5",
                              llm__provider="anthropic", session__id="s-oi", user__id="u-oi",
                              metadata=json.dumps({"tier": "pro"}), tag__tags=["a", "b"],
                              llm__prompt_template__version="review@v3",
                              **{"llm.token_count.prompt": 5, "llm.token_count.completion": 2,
                                 "llm.input_messages.0.message.role": "user",
                                 "llm.input_messages.0.message.content": "review this"})},
    ]  # fmt: skip
    r = post(collector, "/v1/traces", json.dumps(_otlp_json(spans)).encode(), "application/json", gz=True)
    assert r.status_code == 200 and r.json() == {}
    old, oi = sorted(calls_of(collector, TRACE), key=lambda c: c.model or "", reverse=True)
    assert (old.provider, old.input_tokens, old.output_tokens) == ("openai", 11, 7)
    assert old.messages == [{"role": "user", "content": "hello old"}] and old.error == {
        "type": "error",
        "status": None,
        "message": "boom",
    }
    assert abs((old.latency_ms or 0) - 250) < 1
    assert (oi.session_id, oi.user_id, oi.tags, oi.prompt_template_version) == (
        "s-oi",
        "u-oi",
        ["a", "b"],
        "review@v3",
    )
    assert oi.metadata and oi.metadata["tier"] == "pro"
    # A hostile span name is text on the call's page.
    hostile = {"traceId": TRACE, "spanId": "ddd19b7ec3c1b174", "parentSpanId": "aaa19b7ec3c1b174",
               "name": HOSTILE, "startTimeUnixNano": str(NOW + 5)}  # fmt: skip
    post(collector, "/v1/traces", json.dumps(_otlp_json([hostile])).encode(), "application/json")
    page = collector.get(f"/calls/{oi.id}").text
    tree = collector.get(f"/traces/{TRACE}").text
    assert_inert(page)
    assert_inert(tree)
    assert "&lt;script&gt;alert" in tree
    # Sent again: stored once.
    post(collector, "/v1/traces", json.dumps(_otlp_json(spans)).encode(), "application/json")
    assert len(calls_of(collector, TRACE)) == 2


def test_content_events_before_their_span(collector: Running) -> None:
    span_id = "bbb19b7ec3c1b174"
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"traceId": TRACE, "spanId": span_id, "eventName": "gen_ai.user.message",
         "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": "early words"}}]}}},
    ]}]}]}  # fmt: skip
    assert post(collector, "/v1/logs", json.dumps(logs).encode(), "application/json").status_code == 200
    span = {"traceId": TRACE, "spanId": span_id, "name": "chat", "startTimeUnixNano": str(NOW),
            "endTimeUnixNano": str(NOW + 1000), "attributes": _attrs(gen_ai__operation__name="chat",
            gen_ai__provider__name="anthropic", gen_ai__request__model="claude-sonnet-4-6")}  # fmt: skip
    assert (
        post(collector, "/v1/traces", json.dumps(_otlp_json([span])).encode(), "application/json").status_code
        == 200
    )
    (call,) = calls_of(collector, TRACE)
    assert call.messages == [{"role": "user", "content": "early words"}]


def test_malformed_otlp_is_refused_with_a_reason(collector: Running) -> None:
    r = post(collector, "/v1/traces", b"\x0a\xff\xff\xff garbage", "application/x-protobuf")
    assert r.status_code == 400 and "protobuf" in r.json()["error"]
    assert post(collector, "/v1/traces", b"{nope", "application/json").status_code == 400
    # One span without ids among good ones: rejected by position, the others kept.
    good = {"traceId": TRACE, "spanId": "ccc19b7ec3c1b174", "name": "ok", "startTimeUnixNano": str(NOW)}
    r = post(
        collector,
        "/v1/traces",
        json.dumps(_otlp_json([{"name": "no ids"}, good])).encode(),
        "application/json",
    )
    assert r.status_code == 200
    assert (
        r.json()["partialSuccess"]["rejectedSpans"] == "1"
        and "#0" in r.json()["partialSuccess"]["errorMessage"]
    )
    assert [s.name for s in collector.store.trace(TRACE)] == ["ok"]
    assert (
        httpx.post(
            collector.base + "/v1/traces", content=b"{}", headers={"Content-Type": "application/json"}
        ).status_code
        == 401
    )


# ---------------------------------------------------------------- redaction and regulated mode

EMAIL = "ada.lovelace@example.com"
SECRET_WORD = "qxconfidential"


def _regulated_request(span_id: str) -> tuple[bytes, bytes]:
    """Log events carrying a call's content, then its span (content events come first);
    every text holds a word only the app may read, and an e-mail address."""
    said = f"{SECRET_WORD} mail {EMAIL}"
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"traceId": TRACE, "spanId": span_id, "eventName": "gen_ai.user.message",
         "attributes": _attrs(event__name="gen_ai.user.message", app__detail=said),
         "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": said}}]}}},
    ]}]}]}  # fmt: skip
    span = {"traceId": TRACE, "spanId": span_id, "name": "chat", "startTimeUnixNano": str(NOW),
            "endTimeUnixNano": str(NOW + 1000), "status": {"code": 2, "message": said},
            "events": [{"name": "exception", "timeUnixNano": str(NOW),
                        "attributes": _attrs(exception__type="ValueError", exception__message=said)}],
            "attributes": _attrs(gen_ai__operation__name="chat", gen_ai__provider__name="anthropic",
                                 gen_ai__request__model="claude-sonnet-4-6", user__id="u-7",
                                 gen_ai__usage__input_tokens=7, app__note=said,
                                 gen_ai__request__stop_sequences=[said])}  # fmt: skip
    return json.dumps(logs).encode(), json.dumps(_otlp_json([span])).encode()


def _stored(backend: Backend, table: str, columns: str) -> str:
    """A table's rows as the database holds them, as text."""
    return json.dumps([list(map(str, row)) for row in backend.sql(f"SELECT {columns} FROM {table}")])


def test_spans_and_log_events_are_redacted_with_the_calls_rules(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMLOG_REDACT", "email")
    logs, spans = _regulated_request("aab19b7ec3c1b174")
    with Running(backend) as c:
        assert post(c, "/v1/logs", logs, "application/json").status_code == 200
        waiting = _stored(backend, "span_events", "attributes, body")  # for its span
        assert post(c, "/v1/traces", spans, "application/json").status_code == 200
        (call,) = calls_of(c, TRACE)
    assert EMAIL not in waiting and waiting.count("[EMAIL]") == 2, waiting
    held = _stored(backend, "spans", "name, status_message, attributes, events")
    held += _stored(backend, "span_events", "attributes, body")  # none: joined into the call
    # The span's status, note and exception; its stop sequences are the call's (`params`),
    # not kept twice.
    assert EMAIL not in held and held.count("[EMAIL]") == 3, held
    assert SECRET_WORD in held  # redacted, not removed
    assert call.messages == [{"role": "user", "content": f"{SECRET_WORD} mail [EMAIL]"}]
    assert (call.params or {}).get("stop_sequences") == [f"{SECRET_WORD} mail [EMAIL]"]


def test_regulated_mode_seals_spans_and_log_events(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlog.core.config import Settings
    from llmlog.core.encryption import Keyring, new_key
    from llmlog.pipeline.intake import Intake

    key = new_key()
    monkeypatch.setenv("LLMLOG_KEY", key)
    monkeypatch.setenv("LLMLOG_USER_ID_SECRET", "pepper")
    logs, spans = _regulated_request("bbb29b7ec3c1b174")
    with Running(backend, keyring=Keyring.parse(key)) as c:
        assert post(c, "/v1/logs", logs, "application/json").status_code == 200
        (event,) = c.store.span_events([(TRACE, "bbb29b7ec3c1b174")])  # waiting for its span
        waiting = _stored(backend, "span_events", "attributes, body")
        assert post(c, "/v1/traces", spans, "application/json").status_code == 200
        c.store.keyring = Keyring.parse(key)
        (call,) = calls_of(c, TRACE)  # opened with the key
        page = c.get(f"/calls/{call.id}").text
        (span,) = c.store.trace(TRACE)
    held = _stored(backend, "spans", "name, status_message, attributes, events")
    held += _stored(backend, "span_events", "attributes, body") + waiting
    assert SECRET_WORD not in held and EMAIL not in held, held
    # The content of events that came before their span was opened to make the call.
    assert call.messages == [{"role": "user", "content": f"{SECRET_WORD} mail {EMAIL}"}]
    # What stays clear: the tree's labels, the structural attributes, the figures.
    assert (span.name, span.status) == ("chat", "error") and "chat" in page
    kept = span.attributes
    assert kept["gen_ai.provider.name"] == "anthropic" and kept["gen_ai.operation.name"] == "chat"
    # The model, usage, user and parameters are the call's, not kept twice.
    assert not {"gen_ai.request.model", "gen_ai.usage.input_tokens", "user.id"} & set(kept)
    assert (call.model, call.input_tokens) == ("claude-sonnet-4-6", 7) and call.user_id not in (None, "u-7")
    assert kept["app.note"].startswith("llmlog-enc:v1:") and span.status_message.startswith("llmlog-enc:")
    assert "gen_ai.request.stop_sequences" not in kept
    assert span.events[0]["attributes"]["exception.type"] == "ValueError"
    assert event.attributes["event.name"] == "gen_ai.user.message" and event.body.startswith("llmlog-enc:")
    # The key opens them whole.
    intake = Intake(Settings())
    opened = intake.open_span(span)
    assert opened.attributes["app.note"] == f"{SECRET_WORD} mail {EMAIL}"
    assert (call.params or {}).get("stop_sequences") == [f"{SECRET_WORD} mail {EMAIL}"]
    assert opened.events[0]["attributes"]["exception.message"] == f"{SECRET_WORD} mail {EMAIL}"
    assert intake.open_event(event).body == {"content": f"{SECRET_WORD} mail {EMAIL}"}


def _traced(said: str) -> tuple[bytes, bytes]:
    """A program's spans and log records, made by the real OpenTelemetry SDK and encoded by
    the OTLP exporters' own encoders (protobuf, as OTLPSpanExporter sends them): an agent
    span with a text attribute; a span without text; a GenAI chat span with its messages, an
    error status and a content event; and an event without text."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tp, lp = TracerProvider(), LoggerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    tracer, logger = tp.get_tracer("t"), lp.get_logger("t")
    with tracer.start_as_current_span("agent run") as agent:
        agent.set_attribute("app.query", said)
        with tracer.start_as_current_span("retrieve") as plain:
            plain.set_attribute("retrieve.documents", 3)
        with tracer.start_as_current_span("chat claude-sonnet-4-6") as chat:
            chat.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-6",
                    "gen_ai.usage.input_tokens": 11,
                    "gen_ai.input.messages": json.dumps(
                        [{"role": "user", "parts": [{"type": "text", "content": said}]}]
                    ),
                }
            )
            logger.emit(body={"content": said}, event_name="gen_ai.user.message",
                        attributes={"event.name": "gen_ai.user.message"})  # fmt: skip
            logger.emit(event_name="gen_ai.choice", attributes={"event.name": "gen_ai.choice"})
            chat.set_status(Status(StatusCode.ERROR, said))
    tp.shutdown()
    lp.shutdown()
    return (
        encode_spans(spans.get_finished_spans()).SerializeToString(),
        encode_logs(logs.get_finished_logs()).SerializeToString(),
    )


def _partial(r: httpx.Response, kind: str) -> tuple[int, str]:
    """(how many were rejected, why) from an OTLP protobuf answer."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    assert r.status_code == 200, r.text
    message = ExportTraceServiceResponse() if kind == "traces" else ExportLogsServiceResponse()
    message.ParseFromString(r.content)
    partial = message.partial_success
    n = partial.rejected_spans if kind == "traces" else partial.rejected_log_records  # type: ignore[attr-defined]
    return n, partial.error_message


def _held(backend: Backend) -> bytes:
    """What the store holds of traces and calls, as bytes: the SQLite files (WAL too), or the
    PostgreSQL tables' rows."""
    if backend.kind == "sqlite":
        return raw_bytes(backend)
    rows = backend.sql(
        "SELECT string_agg(t, '|') FROM (SELECT row_to_json(s)::text AS t FROM spans AS s UNION ALL"
        " SELECT row_to_json(e)::text FROM span_events AS e UNION ALL"
        " SELECT row_to_json(d)::text FROM call_data AS d UNION ALL"
        " SELECT row_to_json(c)::text FROM content AS c) AS x"
    )
    return (rows[0][0] or "").encode()


def test_a_store_turned_sealed_only_refuses_clear_spans_from_a_collector_without_a_key(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector without a key, running since before another process ran `llmlog keys
    rotate`: the spans and events with text it is then sent are refused by the store, each
    alone, and said so in the OTLP partial success (not a 503 the exporter would retry);
    those without text are kept. With a key, the same is all kept, sealed."""
    from llmlog.core.config import Settings
    from llmlog.pipeline.intake import Intake
    from tests.test_encryption import K1
    from tests.test_regulated import llmlog_process

    monkeypatch.delenv("LLMLOG_KEY", raising=False)
    said = f"{SECRET_WORD} mail {EMAIL}"
    spans, logs = _traced(said)
    protobuf = "application/x-protobuf"
    with Running(backend) as c:  # its store is open, taking clear text
        rotated = llmlog_process(backend.url, "keys", "rotate", key=K1)
        assert rotated.returncode == 0, rotated.stderr
        rejected, why = _partial(post(c, "/v1/logs", logs, protobuf), "logs")
        assert rejected == 1 and "#0:" in why and "no key is set here" in why, why
        rejected, why = _partial(post(c, "/v1/traces", spans, protobuf), "traces")
        assert rejected == 2 and "no key is set here" in why, why  # the agent span, the chat span
        assert [s.name for s in c.store.iter_spans()] == ["retrieve"]
        assert len(list(c.store.iter_span_events())) == 1  # the event without text
        assert c.store.count(CallFilter()) == 0  # the chat's call, with its messages, refused
    assert SECRET_WORD.encode() not in _held(backend) and EMAIL.encode() not in _held(backend)

    key = Keyring.parse(K1)
    monkeypatch.setenv("LLMLOG_KEY", K1)
    with Running(backend, keyring=key) as c:
        assert _partial(post(c, "/v1/logs", logs, protobuf), "logs") == (0, "")
        assert _partial(post(c, "/v1/traces", spans, protobuf), "traces") == (0, "")
        c.store.keyring = key
        (call,) = calls_of(c, spans_trace := next(c.store.iter_spans()).trace_id)
        kept = c.store.trace(spans_trace)
    assert SECRET_WORD.encode() not in _held(backend) and EMAIL.encode() not in _held(backend)
    assert call.messages == [{"role": "user", "content": [{"type": "text", "text": said}]}]
    agent = next(s for s in kept if s.name == "agent run")
    assert Intake(Settings()).open_span(agent).attributes["app.query"] == said
