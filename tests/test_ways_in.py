"""Every way in applies redaction and sealing: one invariant, run through each of them.

The same marked content goes in by every way a call comes in: the SDK wrapper, remote mode
(through its spool), the proxy of `llmlog serve`, `llmlog wrap`, `POST /v1/calls`, OTLP
traces and logs from the real OpenTelemetry SDK (protobuf, and JSON), `llmlog import`, a
replay from the web UI and `llmlog copy`. Then the raw bytes of the SQLite file, its WAL
and the spool are searched, once while everything is still open (what sits in the WAL, not
yet checkpointed) and once after it is all closed:

- with redaction rules set, neither the e-mail address nor the custom pattern is anywhere;
- in regulated mode (LLMLOG_KEY), none of the marker words is either;
- with neither, every marker the way carries is there: the search itself works, and each
  way did store what it was given.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from click.testing import CliRunner

import llmlog
from llmlog.capture.proxy import Upstreams
from llmlog.cli import cli
from llmlog.core.config import Settings
from llmlog.core.encryption import Keyring, new_key
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, Span
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations.replay import Providers
from llmlog.pipeline.intake import Intake
from llmlog.store import open_store
from llmlog.store.sqlite import connect as sqlite_connect
from tests.backends import SQLiteBackend, stored_bytes
from tests.webui import Running

KEY = new_key()
EMAIL = "marker.person@example.com"
CASE = "CASE-314159"  # the custom pattern's match
PATTERNS = (EMAIL.encode(), CASE.encode())
# A word of its own for each place text can be: which one leaks says where.
WORD = {
    where: f"qx{where}word"
    for where in ("system", "message", "tool", "error", "metadata", "attribute", "event", "replay")
}
MODES = {
    "clear": {},
    "redact": {
        # The default fields: the tool definitions and metadata carry the patterns too.
        "LLMLOG_REDACT": "email",
        "LLMLOG_REDACT_PATTERNS": json.dumps({"CASE": r"CASE-\d{6}"}),
    },
    "sealed": {"LLMLOG_KEY": KEY, "LLMLOG_SENSITIVE_METADATA": "note"},
}


def text(where: str) -> str:
    return f"{WORD[where]}: write to {EMAIL} about {CASE}"


TOOLS = [
    {
        "name": "lookup",
        "description": "Look a case up.",
        # The fake provider fills a tool call's input from the schema: the const comes back
        # as the model's tool arguments.
        "input_schema": {
            "type": "object",
            "properties": {"note": {"type": "string", "const": text("tool")}},
            "required": ["note"],
        },
    }
]
REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 200,
    "system": text("system"),
    "messages": [{"role": "user", "content": text("message")}],
    "tools": TOOLS,
}
OPENAI_MESSAGES: list[Any] = [
    {"role": "system", "content": text("system")},
    {"role": "user", "content": text("message")},
]
OPENAI_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}} for t in TOOLS
]
SDK = ("system", "message", "tool")
RECORD = ("system", "message", "tool", "error", "metadata")


def record() -> dict[str, Any]:
    """A call as `POST /v1/calls` and `llmlog import` take it."""
    return {
        "timestamp": "2026-11-30T12:00:00Z",
        "provider": "anthropic",
        "model": "claude-sonnet-4-6",
        "system_prompt": text("system"),
        "messages": [{"role": "user", "content": text("message")}],
        "response": {"role": "assistant", "content": [{"type": "text", "text": text("message")}]},
        "tool_calls": [{"id": "t1", "name": "lookup", "input": {"note": text("tool")}}],
        "error": {"type": "api_error", "message": text("error")},
        "metadata": {"note": text("metadata")},
        "input_tokens": 12,
        "output_tokens": 3,
    }


@dataclass
class Env:
    tmp: Path
    fake: FakeProvider
    mode: str

    @property
    def db(self) -> str:
        return str(self.tmp / "store" / "calls.db")

    @property
    def spool(self) -> Path:
        return self.tmp / "spool"

    def collector(self) -> Running:
        """`llmlog serve` over the store, its proxy and replays going to the fake provider."""
        keyring = Keyring.parse(KEY) if self.mode == "sealed" else None
        return Running(
            SQLiteBackend(Path(self.db)),
            providers=Providers.fake(self.fake.anthropic_base_url, self.fake.openai_base_url),
            upstreams=Upstreams(anthropic=self.fake.url, openai=self.fake.url),
            keyring=keyring,
        )

    def raw(self) -> bytes:
        """Every byte of the store's files (database, WAL, shared memory) and of the spool,
        and the text of every value stored compressed (`llmlog.store.compression`), which
        the bytes alone would hide."""
        files = [p for d in (self.tmp / "store", self.spool) if d.exists() for p in sorted(d.rglob("*"))]
        return b"".join(p.read_bytes() for p in files if p.is_file()) + stored_bytes(self.db)


def wait_for_calls(db: str, n: int) -> None:
    deadline = time.monotonic() + 20
    with open_store(db) as store:
        while store.count(CallFilter()) < n:
            assert time.monotonic() < deadline, "the calls were not stored"
            time.sleep(0.05)


def cli_run(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- the ways in
# Each puts the marked content in by its way, and returns what is to be searched while it
# is all still open (then it closes, and the files are searched again).


def via_sdk(env: Env) -> bytes:
    llmlog.configure(db=env.db)
    client = llmlog.wrap(anthropic.Anthropic(api_key="sk-test", base_url=env.fake.anthropic_base_url))
    chat = llmlog.wrap(openai.OpenAI(api_key="sk-test", base_url=env.fake.openai_base_url))
    with llmlog.context(metadata={"note": text("metadata")}):
        client.messages.create(**REQUEST)
        # The OpenAI shapes too: the system prompt a message, the tool arguments JSON text.
        chat.chat.completions.create(model="gpt-4.1", messages=OPENAI_MESSAGES, tools=OPENAI_TOOLS)
    assert llmlog.flush(10)
    wait_for_calls(env.db, 2)
    return env.raw()


def via_remote(env: Env) -> bytes:
    client = llmlog.wrap(anthropic.Anthropic(api_key="sk-test", base_url=env.fake.anthropic_base_url))
    # First with the collector away: the call waits in the spool, which is searched then.
    llmlog.configure(url="http://127.0.0.1:9", spool=str(env.spool), exit_timeout_s=0.2)
    with llmlog.context(metadata={"note": text("metadata")}):
        client.messages.create(**REQUEST)
    assert llmlog.flush(10)
    assert list(env.spool.glob("*.ndjson")), "nothing waits in the spool"
    spooled = env.raw()
    with env.collector() as collector:
        # A new process with the same spool ships what the first left, and its own call.
        llmlog.configure(url=collector.base, spool=str(env.spool))
        client.messages.create(**REQUEST)
        assert llmlog.flush(10)
        wait_for_calls(env.db, 2)
        return spooled + env.raw()


def via_proxy(env: Env) -> bytes:
    with env.collector() as collector:
        client = anthropic.Anthropic(
            api_key="sk-test",
            base_url=collector.base + "/anthropic",
            default_headers={"llmlog-metadata": json.dumps({"note": text("metadata")})},
        )
        client.messages.create(**REQUEST)
        wait_for_calls(env.db, 1)
        return env.raw()


CHILD = textwrap.dedent(
    """\
    import json, sys
    import anthropic  # ANTHROPIC_BASE_URL: the proxy `llmlog wrap` runs this behind
    anthropic.Anthropic(api_key="sk-test", max_retries=0).messages.create(**json.loads(sys.argv[1]))
    """
)


def via_wrap_command(env: Env, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", env.fake.anthropic_base_url)  # where the proxy forwards
    cli_run("--db", env.db, "wrap", "--", sys.executable, "-c", CHILD, json.dumps(REQUEST))
    return env.raw()  # the command has ended: its writer is closed


def via_post_calls(env: Env) -> bytes:
    with env.collector() as collector:
        r = collector.post("/v1/calls", json=record())
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
        return env.raw()


def otel_program(spans: Any, logs: Any) -> None:
    """A program instrumented by hand with the real OpenTelemetry SDK: a GenAI chat span
    (content in its attributes, an error, an exception event) under an agent span, and
    content log events emitted inside it (exported before the span ends)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    resource = Resource.create({"service.name": "ways-in"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(spans))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    tracer, logger = tp.get_tracer("ways-in"), lp.get_logger("ways-in")
    parts = lambda where: [{"type": "text", "content": text(where)}]  # noqa: E731
    call = {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"note": text("tool")}}
    with tracer.start_as_current_span("agent run") as agent:
        agent.set_attribute("app.query", text("attribute"))
        with tracer.start_as_current_span("chat claude-sonnet-4-6") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-6",
                    "gen_ai.usage.input_tokens": 40,
                    "gen_ai.usage.output_tokens": 9,
                    "gen_ai.system_instructions": json.dumps(parts("system")),
                    "gen_ai.input.messages": json.dumps([{"role": "user", "parts": parts("message")}]),
                    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [call]}]),
                    "metadata": json.dumps({"note": text("metadata")}),
                    "app.note": text("attribute"),
                }
            )
            for name in ("gen_ai.user.message", "gen_ai.tool.message"):
                logger.emit(body={"content": text("event")}, event_name=name, attributes={"event.name": name})
            # What the span does not say (its tools), said by an event: the call gains it; the
            # events above carry messages the span has already, and go once it is a call.
            details = "gen_ai.client.inference.operation.details"
            tools = [{"type": "function", "name": "lookup", "description": text("event")}]
            said = {"event.name": details, "gen_ai.tool.definitions": json.dumps(tools)}
            logger.emit(event_name=details, attributes=said)
            span.record_exception(ValueError(text("error")))
            span.set_status(Status(StatusCode.ERROR, text("error")))
    tp.shutdown()
    lp.shutdown()


def via_otlp_protobuf(env: Env) -> bytes:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with env.collector() as collector:
        otel_program(
            OTLPSpanExporter(endpoint=collector.base + "/v1/traces"),
            OTLPLogExporter(endpoint=collector.base + "/v1/logs"),
        )
        wait_for_calls(env.db, 1)
        return env.raw()


def _hex_ids(value: Any) -> Any:
    """Protobuf's JSON mapping writes ids in base64; OTLP/JSON writes them in hex."""
    if isinstance(value, dict):
        return {
            k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value


def via_otlp_json(env: Env) -> bytes:
    """The SDK's spans and log records, encoded by the OTLP exporters' own encoder, sent as
    OTLP/JSON (the Python SDK has no JSON exporter of its own)."""
    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    otel_program(spans, logs)
    with env.collector() as collector:
        # Logs first, as the program sent them: their content waits for the span.
        for path, message in (
            ("/v1/logs", encode_logs(logs.get_finished_logs())),
            ("/v1/traces", encode_spans(spans.get_finished_spans())),
        ):
            body = _hex_ids(json_format.MessageToDict(message))
            r = collector.post(path, json=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 200 and r.json() == {}, r.text
        wait_for_calls(env.db, 1)
        return env.raw()


def via_import(env: Env) -> bytes:
    lines = env.tmp / "in" / "calls.jsonl"
    lines.parent.mkdir()
    lines.write_text(json.dumps(record()) + "\n")
    cli_run("--db", env.db, "import", str(lines))
    return env.raw()


def via_replay(env: Env) -> bytes:
    with env.collector() as collector:
        # The original comes in through the collector; its replay, with an edited system
        # prompt, goes to the fake provider and is stored by the web app.
        original = {**record(), "tools": TOOLS, "params": {"model": "claude-sonnet-4-6", "max_tokens": 200}}
        assert collector.post("/v1/calls", json={**original, "error": None}).json()["stored"] == 1
        (call,) = list(collector.store.iter_calls(CallFilter()))
        r = collector.submit(f"/calls/{call.id}/replay", {"model": "", "system_prompt": text("replay")})
        assert r.status_code == 303, r.text
        wait_for_calls(env.db, 2)
        return env.raw()


def via_copy(env: Env) -> bytes:
    # A store from before the rules or the key were set, its text stored as it came.
    source = str(env.tmp / "old" / "calls.db")
    Path(source).parent.mkdir()
    with open_store(source) as old:
        old.insert([Call.from_dict(record())])
        # A span of the app's with text in its attributes and its events, copied as spans are.
        at = datetime(2026, 11, 30, 12, tzinfo=UTC)
        span = Span("ab" * 16, "cd" * 8, None, "agent run", "internal", at, at,
                    attributes={"app.query": text("attribute")},
                    events=[{"name": "note", "attributes": {"text": text("event")}}])  # fmt: skip
        assert old.insert_spans([span]) == []
    cli_run("copy", "--from", source, "--to", env.db)
    return env.raw()


@dataclass
class Way:
    run: Callable[..., bytes]
    words: tuple[str, ...]  # the marker words it stores


WAYS = {
    "sdk": Way(via_sdk, (*SDK, "metadata")),
    "remote": Way(via_remote, (*SDK, "metadata")),
    "proxy": Way(via_proxy, (*SDK, "metadata")),
    "wrap-command": Way(via_wrap_command, SDK),
    "post-calls": Way(via_post_calls, RECORD),
    "otlp-protobuf": Way(via_otlp_protobuf, (*RECORD, "attribute", "event")),
    "otlp-json": Way(via_otlp_json, (*RECORD, "attribute", "event")),
    "import": Way(via_import, RECORD),
    "replay": Way(via_replay, ("replay", "message", "tool")),
    "copy": Way(via_copy, (*RECORD, "attribute", "event")),
}


@pytest.fixture
def sdk_reset(tmp_path: Path) -> Iterator[None]:
    yield
    llmlog.configure(db=str(tmp_path / "idle.db"))  # drains and stops the writer


def opened_text(env: Env) -> str:
    """What the store holds, opened with the key: calls, spans and events."""
    store = open_store(env.db)
    store.keyring = Keyring.parse(KEY)
    intake = Intake(Settings(db=env.db))
    try:
        calls = [c.to_json() for c in store.iter_calls(CallFilter())]
        traces = [t for (t,) in sqlite_connect(env.db).execute("SELECT DISTINCT trace_id FROM spans")]
        spans = [intake.open_span(s) for t in traces for s in store.trace(t)]
        ids = {t: [s.span_id for s in spans if s.trace_id == t] for t in traces}
        events = [intake.open_event(e) for t in traces for e in store.span_events([(t, i) for i in ids[t]])]
    finally:
        store.close()
    return json.dumps([calls, [(s.attributes, s.events, s.status_message) for s in spans],
                       [(e.attributes, e.body) for e in events]])  # fmt: skip


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("way", list(WAYS))
def test_every_way_in_redacts_and_seals(
    way: str,
    mode: str,
    tmp_path: Path,
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    sdk_reset: None,
) -> None:
    for name in ("DB", "URL", "SPOOL", "INGEST_TOKEN", "KEY", "KEY_FILE", "SENSITIVE_METADATA",
                 "REDACT", "REDACT_PATTERNS", "REDACT_FIELDS", "USER_ID_SECRET", "UI_TOKEN"):  # fmt: skip
        monkeypatch.delenv(f"LLMLOG_{name}", raising=False)
    for name, value in MODES[mode].items():
        monkeypatch.setenv(name, value)
    (tmp_path / "store").mkdir()
    env = Env(tmp_path, fake, mode)
    run = WAYS[way].run
    while_open = run(env, monkeypatch) if way == "wrap-command" else run(env)
    llmlog.configure(db=str(tmp_path / "idle.db"))  # the SDK's writer closed, its spool shipped
    after = env.raw()
    words = [WORD[w].encode() for w in WAYS[way].words]

    with open_store(env.db) as store:
        assert store.count(CallFilter()) >= 1, "nothing was stored"
    for when, data in (("while open", while_open), ("after closing", after)):
        if mode == "clear":
            continue
        for marker in PATTERNS:
            assert marker not in data, f"{way}: {marker!r} stored in clear ({when})"
        if mode == "sealed":
            for marker in words:
                assert marker not in data, f"{way}: {marker!r} stored in clear ({when})"
    both = while_open + after
    if mode == "clear":  # the search finds what is there: every marker this way carries
        for marker in (*words, *PATTERNS):
            assert marker in both, f"{way}: {marker!r} not found though stored in clear"
    elif mode == "redact":  # stored, with the patterns replaced
        assert b"[EMAIL]" in both and b"[CASE]" in both
        for marker in words:
            assert marker in both, f"{way}: {marker!r} not stored"
    else:  # stored sealed, and whole: the key opens every marker
        assert b"llmlog-enc:v1:" in both
        opened = opened_text(env)
        for w in WAYS[way].words:
            assert WORD[w] in opened, f"{way}: {WORD[w]} not in what the key opens"


# ---------------------------------------------------------------- each finding on its own


def test_an_unknown_redaction_rule_is_an_error_wherever_the_settings_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMLOG_REDACT", "email,emial")
    said = "unknown redaction rule 'emial': choose from secret, email, card, phone or all"
    with pytest.raises(ValueError, match=said):
        Settings()
    with pytest.raises(ValueError, match=said):
        llmlog.configure(db=str(tmp_path / "sdk.db"))
    db = str(tmp_path / "calls.db")
    lines = tmp_path / "calls.jsonl"
    lines.write_text(json.dumps(record()) + "\n")
    for command in (["import", str(lines)], ["serve", "--port", "0", "--no-retention"], ["calls"]):
        result = CliRunner().invoke(cli, ["--db", db, *command])
        assert result.exit_code == 2 and said in result.output, (command, result.output)
    assert not Path(db).exists()  # nothing was imported unredacted


def test_import_redacts_with_the_rules_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLOG_REDACT", "email")
    db = str(tmp_path / "calls.db")
    lines = tmp_path / "in" / "calls.jsonl"
    lines.parent.mkdir()
    lines.write_text(
        json.dumps({"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1",
                    "user_message": f"mail {EMAIL}", "assistant_response": "sent"}) + "\n"
    )  # fmt: skip
    cli_run("--db", db, "import", str(lines))
    with open_store(db) as store:
        (call,) = list(store.iter_calls(CallFilter()))
    assert call.messages == [{"role": "user", "content": "mail [EMAIL]"}]
    assert call.metadata == {"llmlog": {"redactions": {"EMAIL": 1}}}
    assert EMAIL.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("calls.db*"))


def test_the_collector_takes_calls_sealed_before_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regulated mode seals a call's tools, parameters and response whole, each one string:
    the collector takes them as remote mode ships them, instead of refusing the call."""
    monkeypatch.setenv("LLMLOG_KEY", KEY)
    sealed = Intake(Settings()).call(
        Call.from_dict({**record(), "tools": TOOLS, "params": {"max_tokens": 9}})
    )
    assert all(isinstance(v, str) for v in (sealed.tools, sealed.params, sealed.response))
    with Running(SQLiteBackend(tmp_path / "c.db"), keyring=Keyring.parse(KEY)) as c:
        r = c.post("/v1/calls", json=sealed.to_dict())
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
        c.store.keyring = Keyring.parse(KEY)
        (call,) = list(c.store.iter_calls(CallFilter()))
    assert call.tools == TOOLS and call.params == {"max_tokens": 9} and call.system_prompt == text("system")


def test_redaction_leaves_sealed_text_as_it_is() -> None:
    from llmlog.core.redact import Redactor

    sealed = Keyring.parse(KEY).seal(f"mail {EMAIL} about {CASE}")
    redactor = Redactor(["all"], {"CASE": r"CASE-\d{6}", "ANY": r"[A-Za-z0-9]{4}"})
    assert redactor.text(sealed)[0] == sealed
    assert redactor.value({"a": [sealed, "E1234"]}) == {"a": [sealed, "[ANY]4"]}


def test_an_app_with_a_bad_rule_in_its_environment_keeps_working(
    tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    llmlog.configure(db=str(tmp_path / "idle.db"))  # the writer of earlier tests closed
    monkeypatch.setattr(llmlog, "_settings", None)  # never configured: settings from the environment
    monkeypatch.setattr(llmlog, "_writer", None)
    monkeypatch.setenv("LLMLOG_REDACT", "emial")
    client = llmlog.wrap(anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url))
    with caplog.at_level(logging.ERROR, logger="llmlog"):
        for _ in range(2):
            assert client.messages.create(**REQUEST).content
    said = [r.getMessage() for r in caplog.records if "emial" in r.getMessage()]
    assert len(said) == 1 and "not recorded" in said[0], said
