"""Real instrumented programs for the OTLP tests: the OpenTelemetry SDK, a published
instrumentation and a real provider SDK, in a process of their own (an instrumentation
patches the SDK for the whole process), exporting over OTLP/HTTP to a running collector
while the SDK talks to the fake provider.

`run_program(collector, fake, setup, body)` runs `setup` (instrument here: `tp` is the
tracer provider, `lp` the logger provider) and then `body` (`anthropic_client` and
`openai_client` point at the fake provider; `tracer` starts spans of the app's own), then
flushes both providers. What the body prints is returned, one item per word.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from llmlog.demo.fake_provider import FakeProvider
from tests.webui import Running

TOKEN = "otel-token"

_PROLOGUE = """\
import os, sys, time, json
from opentelemetry import trace, _logs
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

base, headers = os.environ["COLLECTOR"], {"Authorization": "Bearer " + os.environ["TOKEN"]}
batch = os.environ.get("BATCH") == "1"
resource = Resource.create({"service.name": os.environ.get("SERVICE", "otel-app")})
tp = TracerProvider(resource=resource)
spans_out = OTLPSpanExporter(endpoint=base + "/v1/traces", headers=headers)
tp.add_span_processor(BatchSpanProcessor(spans_out) if batch else SimpleSpanProcessor(spans_out))
trace.set_tracer_provider(tp)
lp = LoggerProvider(resource=resource)
logs_out = OTLPLogExporter(endpoint=base + "/v1/logs", headers=headers)
logs_processor = BatchLogRecordProcessor if batch else SimpleLogRecordProcessor
lp.add_log_record_processor(logs_processor(logs_out))
_logs.set_logger_provider(lp)
tracer = trace.get_tracer("app")
"""

_CLIENTS = """\
import anthropic, openai
anthropic_client = anthropic.Anthropic(api_key="sk-ant-test", base_url=os.environ["FAKE"], max_retries=0)
openai_client = openai.OpenAI(api_key="sk-test", base_url=os.environ["FAKE"] + "/v1", max_retries=0)
"""

_EPILOGUE = """\
sys.stdout.flush()
tp.force_flush()
lp.force_flush()
tp.shutdown()
lp.shutdown()
"""


def program(setup: str, body: str) -> str:
    return "\n".join([_PROLOGUE, textwrap.dedent(setup), _CLIENTS, textwrap.dedent(body), _EPILOGUE])


def run_program(
    collector: Running,
    fake: FakeProvider,
    setup: str,
    body: str,
    *,
    batch: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> list[str]:
    """Run the program; fails the test with its stderr if it fails. `batch`: export with the
    batch processors (spans of one call in one request, as most apps do) rather than one
    request per span as it ends."""
    environ = {
        **os.environ,
        "COLLECTOR": collector.base,
        "TOKEN": TOKEN,
        "FAKE": fake.url,
        "BATCH": "1" if batch else "0",
        **(env or {}),
    }
    r = subprocess.run(
        [sys.executable, "-c", program(setup, body)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout.split()
