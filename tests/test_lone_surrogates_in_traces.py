"""Span and log-event text holding a lone surrogate (an OTLP/JSON `\\ud800` escape, text read
from bad UTF-16): every engine keeps it with U+FFFD in its place, as `unicode_text` says and
as PostgreSQL and ClickHouse do; nothing is refused for it, and no request fails for it."""

from __future__ import annotations

from datetime import UTC, datetime

from llmlog.core.record import Span
from tests.backends import Backend

JSON = "application/json"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_span_whose_text_holds_a_lone_surrogate_is_kept(backend: Backend) -> None:
    store = backend.open()
    try:
        span = Span(
            trace_id="a" * 32, span_id="a" * 16, parent_id=None, name="retrieve\ud800", kind="internal",
            start=T0, end=T0, status_message="late\udfff", service="svc\ud800", call_id="call-\ud800",
        )  # fmt: skip
        assert store.insert_spans([span]) == []
        got = store.trace("a" * 32)
        assert [(s.name, s.status_message, s.service, s.call_id) for s in got] == [
            ("retrieve\ufffd", "late\ufffd", "svc\ufffd", "call-\ufffd")  # the call's id, as stored
        ]
    finally:
        store.close()
