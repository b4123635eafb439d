"""Log events (OTLP `/v1/logs`) that carry a call's content: when they come after their span,
the content they give the stored call goes through the pipeline as any call's does (checked,
redacted, sealed, its prompt version given; the user id hashed and the cost counted once);
once in the call they are not kept beside it; those that never join a call wait a bounded
time, and go with the person they name in `llmlog delete`. The same for a call completed by
a later span of it. Through the real OpenTelemetry openai-v2 instrumentation (event-only
content) and hand-written OTLP JSON, on SQLite and PostgreSQL; the stores' part on ClickHouse
too."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmlog.core.config import Settings
from llmlog.core.encryption import Keyring, new_key
from llmlog.core.filters import CallFilter
from llmlog.core.prompts import REGISTRY
from llmlog.core.record import Span, SpanEvent
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations import retention
from llmlog.pipeline import otlp as otlp_ingest
from llmlog.pipeline.intake import Intake, hash_user_id
from llmlog.pipeline.otlp import ingest_events, ingest_spans
from llmlog.pipeline.pricing import Pricer
from llmlog.store import open_store, retention_policy
from llmlog.store.rollup import from_raw_sql
from tests.backends import Backend, ClickHouseBackend, PostgresBackend, SQLiteBackend
from tests.otel_programs import TOKEN, run_program
from tests.test_cli import run as cli
from tests.test_otlp import EMAIL, SECRET_WORD, _attrs, _held, _otlp_json, post
from tests.webui import Running

JSON = "application/json"
HOUR_NS = 3600 * 10**9


def _logs(records: list[dict[str, object]]) -> bytes:
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()


def _record(trace: str, span: str | None, name: str, body: dict[str, str] | None = None,
            **attributes: object) -> dict[str, object]:  # fmt: skip
    out: dict[str, object] = {"traceId": trace, "eventName": name, "attributes": _attrs(**attributes)}
    if span is not None:
        out["spanId"] = span
    if body is not None:
        out["body"] = {
            "kvlistValue": {"values": [{"key": k, "value": {"stringValue": v}} for k, v in body.items()]}
        }
    return out


def _regulated(monkeypatch: pytest.MonkeyPatch) -> Keyring:
    """A redaction rule, regulated mode and a user id secret, as `llmlog serve` reads them."""
    key = new_key()
    monkeypatch.setenv("LLMLOG_REDACT", "email")
    monkeypatch.setenv("LLMLOG_KEY", key)
    monkeypatch.setenv("LLMLOG_USER_ID_SECRET", "pepper")
    return Keyring.parse(key)


def _waiting(backend: Backend) -> int:
    return int(backend.sql("SELECT count(*) FROM span_events")[0][0])


# ---------------------------------------------------------------- the real instrumentation

V2 = """
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
OpenAIInstrumentor().instrument(tracer_provider=tp, logger_provider=lp)
"""
V2_CALLS = 4
V2_BODY = f"""
for i in range({V2_CALLS}):
    openai_client.chat.completions.create(model="gpt-4.1-mini", messages=[
        {{"role": "system", "content": f"You answer case {{i}}. Escalate to {EMAIL}"}},
        {{"role": "user", "content": f"{SECRET_WORD} {{i}}: write to {EMAIL}"}}])
"""
EVENT_ONLY = {
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY",
    # Nothing exported before the program's end, where the spans are flushed first, then the
    # logs: every event comes after its span, a call already.
    "OTEL_BSP_SCHEDULE_DELAY": "600000",
    "OTEL_BLRP_SCHEDULE_DELAY": "600000",
}


def test_openai_v2_event_only_content_goes_through_the_pipeline(
    backend: Backend, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = _regulated(monkeypatch)
    with Running(backend, ingest_token=TOKEN, keyring=keyring) as c:
        run_program(c, fake, V2, V2_BODY, batch=True, env=EVENT_ONLY)
        c.store.keyring = keyring
        calls = sorted(c.store.iter_calls(CallFilter()), key=lambda x: x.timestamp)
    assert len(calls) == V2_CALLS
    for i, call in enumerate(calls):
        said = f"You answer case {i}. Escalate to {EMAIL}"
        # Its version, as `wrap` gives it: from the prompt as the app sent it.
        assert call.prompt_template_version == REGISTRY.version_of(said), (i, call.prompt_template_version)
        assert call.system_prompt == said.replace(EMAIL, "[EMAIL]")
        assert (
            call.messages
            and SECRET_WORD in json.dumps(call.messages)
            and EMAIL not in json.dumps(call.messages)
        )
        # Each address taken out is counted, as for any call.
        taken = json.dumps([call.system_prompt, call.messages, call.response]).count("[EMAIL]")
        assert call.metadata and call.metadata["llmlog"]["redactions"] == {"EMAIL": taken} and taken >= 2
        assert call.response and call.input_tokens and call.cost_usd and call.cost_usd > 0
    assert len({c.prompt_template_version for c in calls}) == V2_CALLS
    # Sealed at rest; and the events are not kept beside the calls that hold their content.
    held = _held(backend)
    assert SECRET_WORD.encode() not in held and EMAIL.encode() not in held
    assert b"llmlog-enc:v1:" in held
    assert _waiting(backend) == 0


# ---------------------------------------------------------------- hand-written OTLP JSON

TRACE_A = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
TRACE_B = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
NOW = time.time_ns()


def _chat_span(trace: str, span: str, parent: str | None = None, **attrs: object) -> dict[str, object]:
    out: dict[str, object] = {
        "traceId": trace, "spanId": span, "name": "chat", "kind": 3,
        "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 400_000_000),
        "attributes": _attrs(gen_ai__operation__name="chat", gen_ai__provider__name="anthropic",
                             gen_ai__request__model="claude-sonnet-4-6", gen_ai__usage__input_tokens=1000,
                             gen_ai__usage__output_tokens=200, **attrs),
    }  # fmt: skip
    if parent:
        out["parentSpanId"] = parent
    return out


def test_late_events_and_a_late_span_complete_their_call_through_the_pipeline(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = _regulated(monkeypatch)
    system = f"You handle refunds. Escalate to {EMAIL}"
    word = f"{SECRET_WORD} order 9, mail {EMAIL}"
    with Running(backend, ingest_token=TOKEN, keyring=keyring) as c:
        # The span first (a call without content), then its content in log events.
        span = _chat_span(TRACE_A, "a000000000000001", user__id="u-late")
        assert post(c, "/v1/traces", json.dumps(_otlp_json([span])).encode(), JSON).status_code == 200
        (before,) = c.store.iter_calls(CallFilter())
        events = [
            _record(TRACE_A, "a000000000000001", "gen_ai.system.message", {"content": system}),
            _record(TRACE_A, "a000000000000001", "gen_ai.user.message", {"content": word}),
        ]
        assert post(c, "/v1/logs", _logs(events), JSON).status_code == 200
        # The SDK's span of another call, then the framework's span around it, with content.
        inner = _chat_span(TRACE_B, "b000000000000002", parent="b000000000000001", user__id="u-late")
        outer = {
            "traceId": TRACE_B, "spanId": "b000000000000001", "name": "llm", "kind": 1,
            "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 500_000_000),
            "attributes": _attrs(openinference__span__kind="LLM", llm__model_name="claude-sonnet-4-6",
                                 llm__provider="anthropic", user__id="u-late",
                                 **{"llm.input_messages.0.message.role": "system",
                                    "llm.input_messages.0.message.content": system,
                                    "llm.input_messages.1.message.role": "user",
                                    "llm.input_messages.1.message.content": word}),
        }  # fmt: skip
        assert post(c, "/v1/traces", json.dumps(_otlp_json([inner])).encode(), JSON).status_code == 200
        assert post(c, "/v1/traces", json.dumps(_otlp_json([outer])).encode(), JSON).status_code == 200
        c.store.keyring = keyring
        calls = {call.trace_id: call for call in c.store.iter_calls(CallFilter())}
        daily_cost = backend.sql("SELECT sum(cost_usd), sum(calls) FROM daily")[0]
    assert set(calls) == {TRACE_A, TRACE_B}  # one call each
    for trace, call in calls.items():
        assert call.prompt_template_version == REGISTRY.version_of(system), trace
        assert call.system_prompt == system.replace(EMAIL, "[EMAIL]"), trace
        assert EMAIL not in json.dumps(call.messages) and SECRET_WORD in json.dumps(call.messages), trace
        assert call.metadata and call.metadata["llmlog"]["redactions"] == {"EMAIL": 2}, trace
        assert call.user_id == hash_user_id("u-late", "pepper"), trace  # hashed once
        assert call.cost_usd == before.cost_usd and call.cost_usd and call.cost_usd > 0, trace
    # Priced once each: the rollup counts two calls at their price.
    assert daily_cost[1] == 2 and daily_cost[0] == pytest.approx(2 * (before.cost_usd or 0))
    held = _held(backend)
    assert SECRET_WORD.encode() not in held and EMAIL.encode() not in held
    assert _waiting(backend) == 0


def test_late_content_too_deep_to_keep_leaves_the_call_as_it_was(backend: Backend) -> None:
    """What the pipeline refuses of a call it refuses of late content: the call stays as it
    was, the events wait (and expire)."""
    deep: object = "x"
    for _ in range(400):
        deep = [deep]
    with Running(backend, ingest_token=TOKEN) as c:
        span = _chat_span(TRACE_A, "a000000000000003")
        assert post(c, "/v1/traces", json.dumps(_otlp_json([span])).encode(), JSON).status_code == 200
        details = "gen_ai.client.inference.operation.details"
        record = _record(TRACE_A, "a000000000000003", details, gen_ai__tool__definitions=json.dumps(deep))
        assert post(c, "/v1/logs", _logs([record]), JSON).status_code == 200
        (call,) = c.store.iter_calls(CallFilter())
    assert call.tools is None
    assert _waiting(backend) == 1


# ---------------------------------------------------------------- events that never join a call


def test_events_that_join_no_call_expire(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    with Running(backend, ingest_token=TOKEN) as c:
        # One whose span never comes; one whose span is not a model call.
        plain = {"traceId": TRACE_B, "spanId": "b0000000000000aa", "name": "retrieve",
                 "startTimeUnixNano": str(NOW)}  # fmt: skip
        assert post(c, "/v1/traces", json.dumps(_otlp_json([plain])).encode(), JSON).status_code == 200
        records = [
            _record(TRACE_A, "a0000000000000ff", "gen_ai.user.message", {"content": "no span"}),
            _record(TRACE_B, "b0000000000000aa", "gen_ai.user.message", {"content": "not a call"}),
        ]
        assert post(c, "/v1/logs", _logs(records), JSON).status_code == 200
        assert _waiting(backend) == 2
        store = c.store
        assert retention.run(store).events == 0  # within their wait (an hour)
        assert _waiting(backend) == 2
        backend.sql(f"UPDATE span_events SET received = received - {2 * HOUR_NS}")
        # A longer wait, set as the other retention settings are, keeps them.
        retention_policy.set_policy(store, retention_policy.Policy(days=36_500, events_minutes=180))
        assert retention.run(store).events == 0 and _waiting(backend) == 2
        retention_policy.set_policy(store, retention_policy.Policy(days=36_500))
        report = retention.run(store)
        assert report.events == 2 and _waiting(backend) == 0
        # The collector sweeps too, as it receives.
        monkeypatch.setattr(otlp_ingest, "SWEEP_EVERY_S", 0.0)
        assert post(c, "/v1/logs", _logs(records[:1]), JSON).status_code == 200
        backend.sql(f"UPDATE span_events SET received = received - {2 * HOUR_NS}")
        assert post(c, "/v1/logs", _logs(records[1:]), JSON).status_code == 200
        left = backend.sql("SELECT trace_id FROM span_events")
    assert left == [(TRACE_B,)]


def test_the_wait_of_events_is_a_retention_setting() -> None:
    p = retention_policy.Policy(days=30, features={"bot": 7}, events_minutes=15)
    assert retention_policy.Policy.from_json(p.to_json()) == p
    assert (
        retention_policy.Policy.from_json({"days": 30}).events_minutes
        == retention_policy.DEFAULT_EVENTS_MINUTES
    )
    for bad in (0, -1, retention_policy.MAX_EVENTS_MINUTES + 1):
        with pytest.raises(ValueError, match="minutes"):
            retention_policy.Policy(events_minutes=bad)


def test_retention_set_events_minutes(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    out = cli(db, "retention", "set", "--days", "30", "--events-minutes", "15").output
    assert "log events waiting for their span kept 15 minutes" in out
    with open_store(db) as store:
        assert retention_policy.policy(store) == retention_policy.Policy(days=30, events_minutes=15)
    cli(db, "retention", "set", "--days", "40")  # the wait stays as set
    with open_store(db) as store:
        assert retention_policy.policy(store) == retention_policy.Policy(days=40, events_minutes=15)


def test_delete_erases_the_events_waiting_in_their_traces_or_naming_them(backend: Backend) -> None:
    with Running(backend, ingest_token=TOKEN) as c:
        span = _chat_span(TRACE_A, "a000000000000001", user__id="u-gone")
        assert post(c, "/v1/traces", json.dumps(_otlp_json([span])).encode(), JSON).status_code == 200
        records = [
            # In the trace of their call, for a span that has not come.
            _record(TRACE_A, "a0000000000000ee", "gen_ai.user.message", {"content": "in the trace"}),
            # Elsewhere, naming them: by attribute, and in the body.
            _record(
                "c" * 32, "c000000000000001", "gen_ai.user.message", {"content": "hi"}, user__id="u-gone"
            ),
            _record("d" * 32, "d000000000000001", "gen_ai.user.message", {"content": "x", "user": "u-gone"}),
            # Someone else's.
            _record(
                "e" * 32, "e000000000000001", "gen_ai.user.message", {"content": "y"}, user__id="u-stays"
            ),
            # Someone without calls.
            _record(
                "f" * 32, "f000000000000001", "gen_ai.user.message", {"content": "z"}, enduser__id="u-none"
            ),
        ]
        assert post(c, "/v1/logs", _logs(records), JSON).status_code == 200
        assert _waiting(backend) == 5
    out = cli(backend.url, "delete", "--user", "u-gone", "--yes").output
    assert "Erased 1 call(s) of user u-gone" in out and "3 waiting log event(s)" in out, out
    assert sorted(t for (t,) in backend.sql("SELECT trace_id FROM span_events")) == ["e" * 32, "f" * 32]
    out = cli(backend.url, "delete", "--user", "u-none", "--yes").output
    assert "No calls of user u-none" in out and "1 waiting log event(s)" in out, out
    assert backend.sql("SELECT trace_id FROM span_events") == [("e" * 32,)]


# ---------------------------------------------------------------- the stores, ClickHouse too


@pytest.fixture(params=["sqlite", "postgres", "clickhouse"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "calls.db")
    if request.param == "clickhouse":
        return ClickHouseBackend(tmp_path / "ch")
    return PostgresBackend(request.getfixturevalue("pg_url"))


def test_each_store_joins_drops_expires_and_erases_events(any_backend: Backend) -> None:
    when = datetime.now(UTC).replace(microsecond=0)
    intake = Intake(Settings(), Pricer())
    span = Span("t1", "s1", None, "chat", "client", when - timedelta(seconds=1), when,
                attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                            "gen_ai.request.model": "claude-sonnet-4-6", "user.id": "u1",
                            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5})  # fmt: skip
    system = SpanEvent("t1", "s1", "gen_ai.system.message", {}, {"content": "You are terse."})
    choice = SpanEvent("t1", "s1", "gen_ai.choice", {}, {"message": {"role": "assistant", "content": "ok"}})
    with any_backend.open() as store:
        assert ingest_spans(store, [span], intake)[0] == 1
        assert ingest_events(store, [system], intake) == (1, [])
        (call,) = store.iter_calls(CallFilter())
        assert call.system_prompt == "You are terse."
        assert call.prompt_template_version == REGISTRY.version_of("You are terse.")
        assert store.span_events([("t1", "s1")]) == []  # in the call, not kept beside it
        # A later event still completes it; its version, once given, stays.
        assert ingest_events(store, [choice], intake) == (1, [])
        (call,) = store.iter_calls(CallFilter())
        assert call.response and call.prompt_template_version == REGISTRY.version_of("You are terse.")
        store.update_content(call.replace(prompt_template_version="other@v9"))
        assert store.get(call.id).prompt_template_version == REGISTRY.version_of("You are terse.")  # type: ignore[union-attr]
        # Waiting events: dropped by span and arrival, expired by arrival, erased with the person.
        waiting = [
            SpanEvent("t1", "s9", "gen_ai.user.message", {}, {"content": "in t1"}),
            SpanEvent("t2", "s2", "gen_ai.user.message", {"user.id": "u1"}, {"content": "names u1"}),
            SpanEvent("t3", "s3", "gen_ai.user.message", {}, {"content": "about", "who": "u1"}),
            SpanEvent("t4", "s4", "gen_ai.user.message", {"user.id": "u2"}, {"content": "u2's"}),
            SpanEvent("t5", "s5", "gen_ai.user.message", {}, {"content": "waits"}),
        ]
        assert store.insert_span_events(waiting) == []
        arrived = time.time_ns() + 1
        assert store.drop_span_events([("t5", "s5")], arrived - HOUR_NS) == 0  # arrived after
        assert store.drop_span_events([("t5", "s5")], arrived) == 1
        assert store.expire_span_events(arrived - HOUR_NS) == 0
        erased = store.erase(user_id="u1")
        assert (erased.calls, erased.events) == (1, 3)
        left = [e for _, e in store.iter_span_events()]
        assert [(e.trace_id, e.body) for e in left] == [("t4", {"content": "u2's"})]
        assert store.expire_span_events(arrived) == 1
        assert list(store.iter_span_events()) == []


def test_a_call_completed_late_moves_to_its_prompt_version_in_the_rollups(any_backend: Backend) -> None:
    """`daily` groups calls by prompt version and counts their tool calls: a call that gains
    them after it was stored is counted where it now belongs, as if it had come whole."""
    when = datetime.now(UTC).replace(microsecond=0)
    intake = Intake(Settings(), Pricer())

    def chat(span_id: str, user: str) -> Span:
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                      "gen_ai.request.model": "claude-sonnet-4-6", "user.id": user,
                      "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}  # fmt: skip
        return Span(
            "t1", span_id, None, "chat", "client", when - timedelta(seconds=1), when, attributes=attributes
        )

    def system(span_id: str) -> SpanEvent:
        return SpanEvent("t1", span_id, "gen_ai.system.message", {}, {"content": "You file refunds."})

    tool = {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}
    tool_choice = SpanEvent("t1", "s4", "gen_ai.choice", {},
                            {"message": {"role": "assistant", "tool_calls": [tool]}})  # fmt: skip
    version = REGISTRY.version_of("You file refunds.")
    with any_backend.open() as store:
        spans = [chat("s1", "u1"), chat("s2", "u1"), chat("s3", "u2"), chat("s4", "u1")]
        assert ingest_spans(store, spans, intake)[0] == 4
        assert ingest_events(store, [system("s1"), system("s3"), tool_choice], intake)[0] == 3
        by_version = {c.prompt_template_version for c in store.iter_calls(CallFilter())}
        assert by_version == {None, version}
        rows = store.query(
            "SELECT prompt_template_version, calls, users, tool_calls, input_tokens FROM daily", limit=100
        ).rows
        assert sorted((tuple(r) for r in rows), key=repr) == sorted(
            [(None, 2, 1, 1, 20), (version, 2, 2, 0, 20)], key=repr
        )
        if any_backend.kind != "clickhouse":  # the engine's own rollup from scratch agrees
            from tests.test_retention import _norm, assert_same_rollup, daily_rows

            scratch = store.query(from_raw_sql(store.dialect), limit=1_000)
            assert_same_rollup({(str(r[0]), *r[1:5]): _norm(r[5:]) for r in scratch.rows}, daily_rows(store))
            seen = any_backend.sql("SELECT count(*) FROM daily_seen")[0][0]
            assert seen == 3  # u1 in both groups, u2 in one
