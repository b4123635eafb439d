"""OTLP in: OpenTelemetry traces and logs (OTLP/HTTP, protobuf or JSON) as calls and spans.

Here the requests are decoded into `Span`s and `SpanEvent`s (each unusable one rejected
with its position and reason, the others kept) and answered; `llmlog.capture.genai` reads
the calls they describe and `llmlog.pipeline.otlp` keeps them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

from llmlog.core.record import Span, SpanEvent
from llmlog.store.regulated import Refused

__all__ = ["OTLPError", "Rejected", "answer", "decode_logs", "decode_spans", "in_request"]

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}


class OTLPError(ValueError):
    """A request that is not OTLP; the message says why."""


# ------------------------------------------------------------------ decoding


def _decode(body: bytes) -> dict[str, Any]:
    """An OTLP/JSON request as data (protobuf is read from the parsed message: `_pb_span`)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise OTLPError(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise OTLPError("body is not JSON this server reads: nested too deeply") from None
    if not isinstance(data, dict):
        raise OTLPError("body is not a JSON object")
    return data


_HEX = re.compile(r"[0-9a-f]{1,64}")


def _ended(start: datetime, end: datetime | None) -> datetime | None:
    # A span sent ending before it starts (a clock stepped between the two readings) is
    # kept, as lasting no time: a negative length would draw nothing true anywhere.
    return start if end is not None and end < start else end


def _id(value: Any, binary: bool) -> str | None:
    if not value or not isinstance(value, str):
        return None
    if binary:
        try:
            found = base64.b64decode(value).hex()
        except ValueError:
            return None
    else:
        found = value.lower()
        if not _HEX.fullmatch(found):
            raise OTLPError(f"id {value[:64]!r}: expected hex digits")
    # All zeros is OpenTelemetry's invalid id: a parent so named is none (exporters that
    # convert from Zipkin or Jaeger write it for a root).
    return found if found.strip("0") else None


def _value(v: Any) -> Any:
    """An OTLP AnyValue as a plain value."""
    if not isinstance(v, dict):
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return None
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return None
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return _attributes((v["kvlistValue"] or {}).get("values"))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if items is not None and not isinstance(items, list):
        raise OTLPError(f"attributes: expected a list of key-values, got {type(items).__name__}")
    out: dict[str, Any] = {}
    for item in items or []:
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            out[item["key"]] = _value(item.get("value"))
    return out


def _time(nanos: Any) -> datetime | None:
    try:
        n = int(nanos)
    except (TypeError, ValueError):
        return None
    if n <= 0:
        return None
    try:
        return datetime.fromtimestamp(n / 1e9, UTC)
    except (OverflowError, ValueError, OSError):
        raise OTLPError(f"time out of range: {n} ns") from None


def _list(data: dict[str, Any], key: str) -> list[Any]:
    """The list under `key` in a part of the request's envelope (resource, scope): one that
    is something else makes the request unreadable as OTLP (a 400), not a server error."""
    value = data.get(key) if isinstance(data, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise OTLPError(f"{key}: expected a list, got {type(value).__name__}")
    return value


def _each(index: int, rejected: list[Rejected], decode: Callable[[], Any]) -> Any:
    """One span or log record decoded, or rejected with its position and why: whatever it
    holds (a status that is not an object, a kind that is a list, a time out of range), the
    others of the request are kept."""
    try:
        return decode()
    except OTLPError as exc:
        rejected.append(Rejected(index, str(exc)))
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError, RecursionError) as exc:
        rejected.append(Rejected(index, f"malformed: {type(exc).__name__}: {exc}"))
    return None


@dataclass
class Rejected:
    index: int  # the span's (or log record's) position in the request, from 0
    reason: str


def decode_spans(body: bytes, content_type: str) -> tuple[list[Span], list[Rejected]]:
    """The spans of an ExportTraceServiceRequest; each unusable span rejected with its
    position and reason, the others kept."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans: list[Span] = []
    rejected: list[Rejected] = []
    index = 0
    if "json" not in content_type:  # read from the parsed message: no dicts in between
        for rs in _parse(body, ExportTraceServiceRequest()).resource_spans:
            service = _pb_service(rs.resource.attributes)
            for ss in rs.scope_spans:
                for raw in ss.spans:
                    span = _each(index, rejected, partial(_pb_span, raw, service))
                    if span is not None:
                        spans.append(span)
                    index += 1
        return spans, rejected
    data, binary = _decode(body), False
    for rs in _list(data, "resourceSpans"):
        service = _service(rs)
        for ss in _list(rs, "scopeSpans"):
            for raw in _list(ss, "spans"):
                span = _each(index, rejected, partial(_span, raw, binary, service))
                if span is not None:
                    spans.append(span)
                index += 1
    return spans, rejected


def _service(rs: Any) -> str | None:
    resource = rs.get("resource") if isinstance(rs, dict) else None
    try:
        service = _attributes(resource.get("attributes") if isinstance(resource, dict) else None)
    except OTLPError as exc:
        raise OTLPError(f"resource {exc}") from None
    name = service.get("service.name")
    return name if isinstance(name, str) else None


def _span(raw: Any, binary: bool, service: str | None) -> Span:
    if not isinstance(raw, dict):
        raise OTLPError("a span is not an object")
    trace_id, span_id = _id(raw.get("traceId"), binary), _id(raw.get("spanId"), binary)
    if not trace_id or not span_id:
        raise OTLPError("a span without traceId or spanId")
    start = _time(raw.get("startTimeUnixNano"))
    if start is None:
        raise OTLPError(f"span {span_id}: no startTimeUnixNano")
    status = raw.get("status") or {}
    if not isinstance(status, dict):
        raise OTLPError(f"span {span_id}: status: expected an object, got {type(status).__name__}")
    code = status.get("code", 0)
    if isinstance(code, str):  # protobuf's JSON names the enum
        code = {"STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    message = status.get("message")
    kind = raw.get("kind", 0)
    if isinstance(kind, str):
        kind = kind.removeprefix("SPAN_KIND_").lower()
    elif isinstance(kind, int):
        kind = _KINDS.get(kind, "unspecified")
    else:
        raise OTLPError(f"span {span_id}: kind: expected a number or a name, got {type(kind).__name__}")
    if not isinstance(raw.get("events") or [], list):
        raise OTLPError(f"span {span_id}: events: expected a list")
    events = [
        {
            "name": e.get("name"),
            "time": _iso(_time(e.get("timeUnixNano"))),
            "attributes": _attributes(e.get("attributes")),
        }
        for e in raw.get("events") or []
        if isinstance(e, dict)
    ]
    attributes = _attributes(raw.get("attributes"))
    try:  # as the stores write them: one nested past what they write is refused here, alone
        orjson.dumps([attributes, events], default=str)
    except orjson.JSONEncodeError as exc:
        if str(exc) == "Recursion limit reached":
            raise OTLPError(f"span {span_id}: attributes nested too deeply") from None
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=_id(raw.get("parentSpanId"), binary),
        name=str(raw.get("name") or ""),
        kind=str(kind),
        start=start,
        end=_ended(start, _time(raw.get("endTimeUnixNano"))),
        status=_STATUS.get(code, "unset") if isinstance(code, int) else "unset",
        status_message=str(message) if message else None,
        attributes=attributes,
        events=events,
        service=service,
    )


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def decode_logs(body: bytes, content_type: str) -> tuple[list[SpanEvent], list[Rejected]]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    events: list[SpanEvent] = []
    rejected: list[Rejected] = []
    index = 0
    if "json" not in content_type:
        for rl in _parse(body, ExportLogsServiceRequest()).resource_logs:
            for sl in rl.scope_logs:
                for raw in sl.log_records:
                    event = _each(index, rejected, partial(_pb_log_record, raw))
                    if event is not None:
                        events.append(event)
                    index += 1
        return events, rejected
    data, binary = _decode(body), False
    for rl in _list(data, "resourceLogs"):
        for sl in _list(rl, "scopeLogs"):
            for raw in _list(sl, "logRecords"):
                event = _each(index, rejected, partial(_log_record, raw, binary))
                if event is not None:
                    events.append(event)
                index += 1
    return events, rejected


def _log_record(raw: Any, binary: bool) -> SpanEvent:
    if not isinstance(raw, dict):
        raise OTLPError("a log record is not an object")
    attributes = _attributes(raw.get("attributes"))
    name = raw.get("eventName") or attributes.get("event.name") or ""
    return SpanEvent(
        _id(raw.get("traceId"), binary), _id(raw.get("spanId"), binary),
        str(name), attributes, _value(raw.get("body")),
    )  # fmt: skip


# ------------------------------------------------------------------ protobuf, read directly
#
# The parsed message's fields are read as they are: turning it into OTLP/JSON-shaped dicts
# first (`json_format.MessageToDict`) cost more than everything else the receiver does. What
# comes out is what the JSON path makes of the same request (`_value`, `_attributes`, `_span`).


def _parse(body: bytes, message: Any) -> Any:
    from google.protobuf.message import DecodeError

    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise OTLPError(f"body is not OTLP protobuf: {exc}") from None
    return message


def _pb_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()  # as in OTLP/JSON
    return None


def _pb_attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key = item.key
        if key:  # as OTLP/JSON, which leaves an empty key out
            v = item.value
            # Most values are text: one read. Empty, it may be another kind (or empty text).
            text = v.string_value
            out[key] = text if text else _pb_value(v)
    return out


def _pb_service(items: Any) -> str | None:
    for item in items:
        if item.key == "service.name":
            name = _pb_value(item.value)
            return name if isinstance(name, str) else None
    return None


def _pb_span(raw: Any, service: str | None) -> Span:
    trace_id, span_id = raw.trace_id.hex(), raw.span_id.hex()
    if not trace_id or not span_id:
        raise OTLPError("a span without traceId or spanId")
    start = _time(raw.start_time_unix_nano)
    if start is None:
        raise OTLPError(f"span {span_id}: no startTimeUnixNano")
    events = [
        {
            "name": e.name or None,
            "time": _iso(_time(e.time_unix_nano)),
            "attributes": _pb_attributes(e.attributes),
        }
        for e in raw.events
    ]
    # No check of nesting, as `_span` makes: protobuf parsing refuses a message nested past
    # about 50 levels, far from the 250 the stores' serializer writes.
    attributes = _pb_attributes(raw.attributes)
    status = raw.status
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=(raw.parent_span_id.hex().strip("0") and raw.parent_span_id.hex()) or None,
        name=raw.name,
        kind=_KINDS.get(raw.kind, "unspecified"),
        start=start,
        end=_ended(start, _time(raw.end_time_unix_nano)),
        status=_STATUS.get(status.code, "unset"),
        status_message=status.message or None,
        attributes=attributes,
        events=events,
        service=service,
    )


def _pb_log_record(raw: Any) -> SpanEvent:
    attributes = _pb_attributes(raw.attributes)
    name = raw.event_name or attributes.get("event.name") or ""
    body = _pb_value(raw.body) if raw.HasField("body") else None
    return SpanEvent(raw.trace_id.hex() or None, raw.span_id.hex() or None, str(name), attributes, body)


def in_request(refused: list[Refused], decoded: int, rejected: list[Rejected]) -> list[Rejected]:
    """Every record of a request rejected, by its position in the request: those it could
    not be decoded into (`rejected`), and those the store refused (`refused`, by position
    among the `decoded` records)."""
    skipped = {r.index for r in rejected}
    positions = [i for i in range(decoded + len(rejected)) if i not in skipped]
    return sorted(
        [*rejected, *(Rejected(positions[r.index], r.reason) for r in refused)], key=lambda r: r.index
    )


def answer(kind: str, content_type: str, rejected: list[Rejected]) -> Response:
    """The Export…ServiceResponse, in the request's encoding, with a partial success naming
    what was rejected (by position, with the first reasons)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    message = ExportTraceServiceResponse() if kind == "traces" else ExportLogsServiceResponse()
    if rejected:
        partial = message.partial_success
        if kind == "traces":
            partial.rejected_spans = len(rejected)
        else:
            partial.rejected_log_records = len(rejected)
        partial.error_message = "; ".join(f"#{r.index}: {r.reason}" for r in rejected[:10])
    if "json" in content_type:
        from google.protobuf import json_format

        return JSONResponse(json_format.MessageToDict(message))
    return Response(message.SerializeToString(), media_type="application/x-protobuf")
