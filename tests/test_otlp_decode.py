"""OTLP protobuf is read from the parsed message directly: what comes out is what the same
request in OTLP/JSON gives, value kind by value kind."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmlog.capture.genai import _NAMESPACE, call_id
from llmlog.capture.otlp import decode_logs, decode_spans

NOW = 1_767_000_000_000_000_000


def _set(kv: Any, key: str, value: Any) -> None:
    kv.key = key
    _value(kv.value, value)


def _value(v: Any, value: Any) -> None:
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, bytes):
        v.bytes_value = value
    elif isinstance(value, list):
        v.array_value.SetInParent()
        for x in value:
            _value(v.array_value.values.add(), x)
    elif isinstance(value, dict):
        v.kvlist_value.SetInParent()
        for k, x in value.items():
            _set(v.kvlist_value.values.add(), k, x)
    elif value is not None:
        v.string_value = value


ATTRIBUTES = {
    "gen_ai.request.model": "gpt-4.1",
    "gen_ai.usage.input_tokens": 2**40,
    "gen_ai.request.temperature": 0.25,
    "stream": True,
    "off": False,
    "zero": 0,
    "empty": "",
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "nested": {"a": [1, {"b": "c"}], "d": b"\x00\x01"},
    "raw": b"\xff\xfe",
    "unset": None,
    "none of them": [],
    "ünïcode ✓": "text ✓ \u2028",
}


def _json_form(message: Any, ids: tuple[str, ...]) -> bytes:
    """The request in OTLP/JSON: ids in hex, as the specification writes them."""
    data = json_format.MessageToDict(message)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: base64.b64decode(v).hex() if k in ids and v else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    return json.dumps(walk(data)).encode()


def test_protobuf_spans_decode_as_their_json_form_does() -> None:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    _set(rs.resource.attributes.add(), "service.name", "svc")
    spans = rs.scope_spans.add().spans
    for i, kind in enumerate((0, 1, 3)):
        span = spans.add()
        span.trace_id = bytes(range(16))
        span.span_id = bytes([i + 1] * 8)
        if i:
            span.parent_span_id = bytes([1] * 8)
        span.name = f"span {i}" if i != 1 else ""
        span.kind = kind  # type: ignore[assignment]
        span.start_time_unix_nano = NOW + i
        if i != 2:
            span.end_time_unix_nano = NOW + 1000 + i
        span.status.code = i  # type: ignore[assignment]
        if i == 2:
            span.status.message = "it broke"
        for k, v in ATTRIBUTES.items():
            _set(span.attributes.add(), k, v)
        _set(span.attributes.add(), "", "an empty key")
        event = span.events.add()
        event.name = "exception" if i else ""
        event.time_unix_nano = NOW + 5
        _set(event.attributes.add(), "exception.message", "boom")
    bad = spans.add()  # no start time: rejected alone, in its place
    bad.trace_id, bad.span_id = bytes(range(16)), bytes([9] * 8)
    body = request.SerializeToString()
    got, rejected = decode_spans(body, "application/x-protobuf")
    want, rejected_json = decode_spans(
        _json_form(request, ("traceId", "spanId", "parentSpanId")), "application/json"
    )
    assert [r.index for r in rejected] == [r.index for r in rejected_json] == [3]
    assert len(got) == 3 and got == want
    assert got[0].attributes["gen_ai.usage.input_tokens"] == 2**40 and got[0].service == "svc"
    assert got[2].status == "error" and got[2].status_message == "it broke" and got[2].end is None


def test_protobuf_log_records_decode_as_their_json_form_does() -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for i, body in enumerate(({"content": "hi", "n": [1, 2.5]}, "plain", None)):
        record = records.add()
        if i < 2:
            record.trace_id = bytes(range(16))
            record.span_id = bytes([i + 1] * 8)
        if i == 0:
            record.event_name = "gen_ai.user.message"
        _set(record.attributes.add(), "event.name", "gen_ai.choice")
        for k, v in ATTRIBUTES.items():
            _set(record.attributes.add(), k, v)
        if body is not None:
            _value(record.body, body)
    got, rejected = decode_logs(request.SerializeToString(), "application/x-protobuf")
    want, _ = decode_logs(_json_form(request, ("traceId", "spanId")), "application/json")
    assert not rejected and len(got) == 3 and got == want
    assert [e.name for e in got] == ["gen_ai.user.message", "gen_ai.choice", "gen_ai.choice"]
    assert got[0].body == {"content": "hi", "n": [1, 2.5]} and got[2].body is None


def test_protobuf_nested_past_what_the_parser_reads_is_not_otlp() -> None:
    """Why protobuf spans need no nesting check of their own: the parser refuses a message
    nested far less deeply than the stores' serializer writes (about 250 levels)."""
    import pytest

    from llmlog.capture.otlp import OTLPError

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.start_time_unix_nano = bytes(range(16)), bytes([1] * 8), NOW
    value: Any = [[[["deep"]]]]
    for _ in range(60):
        value = [value]
    _set(span.attributes.add(), "deep", value)
    with pytest.raises(OTLPError, match="not OTLP protobuf"):
        decode_spans(request.SerializeToString(), "application/x-protobuf")


def test_call_ids_are_uuid5_of_the_span_or_the_providers_id() -> None:
    # Written out for speed: the ids stored before must come out the same.
    for trace, span, key in [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", None),
        ("t", "s", "anthropic:response:msg_01XFDUDYJgAACzvnptvVoYEL"),
        ("t", "s", "openai:request:req_ünïcödé-€-😀"),
        ("", "", ""),
    ]:
        name = key if key is not None else f"{trace}:{span}"
        assert call_id(trace, span, key) == str(uuid.uuid5(_NAMESPACE, name))
