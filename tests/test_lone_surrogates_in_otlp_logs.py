"""Span and log-event text holding a lone surrogate (an OTLP/JSON `\\ud800` escape, text read
from bad UTF-16): every engine keeps it with U+FFFD in its place, as `unicode_text` says and
as PostgreSQL and ClickHouse do; nothing is refused for it, and no request fails for it."""

from __future__ import annotations

import json

from tests.backends import Backend
from tests.otel_programs import TOKEN
from tests.test_otlp import _otlp_json, post
from tests.webui import Running

JSON = "application/json"


def test_a_log_event_whose_name_holds_a_lone_surrogate_fails_no_request(backend: Backend) -> None:
    """One event of a request: the request is answered 200 (the event kept, or refused alone
    as a partial success), never 503, which an exporter sends again for ever."""
    events = [
        {"traceId": "c" * 32, "spanId": "c" * 16, "eventName": "gen_ai.choice\ud800",
         "body": {"stringValue": "x"}},
        {"traceId": "d" * 32, "spanId": "d" * 16, "eventName": "gen_ai.choice",
         "body": {"stringValue": "y"}},
    ]  # fmt: skip
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": events}]}]}).encode()
    assert "\\ud800" in body.decode()
    with Running(backend, ingest_token=TOKEN) as c:
        r = post(c, "/v1/logs", body, JSON)
        assert r.status_code == 200, r.text
        # The span they wait for comes: the request with it is answered too.
        plain = {"traceId": "d" * 32, "spanId": "d" * 16, "name": "step", "kind": 1,
                 "startTimeUnixNano": "1700000000000000000",
                 "endTimeUnixNano": "1700000000100000000"}  # fmt: skip
        assert post(c, "/v1/traces", json.dumps(_otlp_json([plain])).encode(), JSON).status_code == 200
