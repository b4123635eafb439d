"""OTLP in: OpenTelemetry traces and logs (OTLP/HTTP, protobuf or JSON) as calls and spans.

Spans that follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`, with the
deprecated names too) or OpenInference (`llm.*`, `openinference.span.kind = LLM`) become
calls, priced at ingest like any other; every span, model call or not, is kept in `spans`
with its trace and parent ids, so a trace (retrieve → llm → tool → llm) can be shown as a
tree with its timings. Content that an instrumentation sends as log events instead of span
attributes (`gen_ai.user.message`, `gen_ai.choice`, `gen_ai.client.inference.operation.details`
…) is joined to its span by span id.

One call seen twice — a framework's LLM span wrapping the SDK's own `gen_ai` span — is
recorded once: the inner span's call, with the content either of them carries.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import JSONResponse, Response

from llmlog.record import Call, RecordError, Span, SpanEvent
from llmlog.store import Store
from llmlog.store.regulated import Refused

if TYPE_CHECKING:
    from llmlog.intake import Intake

log = logging.getLogger("llmlog")

_NAMESPACE = uuid.UUID("0b6c3f8e-7d1a-5b2c-9e4f-1a2b3c4d5e6f")
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
# gen_ai operations that are a model generating: a call. Embeddings, tools and agents are
# spans of the tree.
_GENERATING = {"chat", "text_completion", "generate_content", "responses", "completion"}


class OTLPError(ValueError):
    """A request that is not OTLP; the message says why."""


def call_id(trace_id: str, span_id: str) -> str:
    """A call's id from its span's: a span exported twice is one call."""
    return str(uuid.uuid5(_NAMESPACE, f"{trace_id}:{span_id}"))


# ------------------------------------------------------------------ decoding


def _decode(body: bytes, content_type: str, message: Any) -> tuple[dict[str, Any], bool]:
    """The request as OTLP/JSON-shaped data, and whether its ids are base64 (protobuf)."""
    if "json" in content_type:
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise OTLPError(f"body is not JSON: {exc}") from None
        except RecursionError:
            raise OTLPError("body is not JSON this server reads: nested too deeply") from None
        if not isinstance(data, dict):
            raise OTLPError("body is not a JSON object")
        return data, False
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError

    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise OTLPError(f"body is not OTLP protobuf: {exc}") from None
    return json_format.MessageToDict(message), True


def _id(value: Any, binary: bool) -> str | None:
    if not value or not isinstance(value, str):
        return None
    if binary:
        try:
            return base64.b64decode(value).hex() or None
        except ValueError:
            return None
    return value.lower()


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

    data, binary = _decode(body, content_type, ExportTraceServiceRequest())
    spans: list[Span] = []
    rejected: list[Rejected] = []
    index = 0
    for rs in _list(data, "resourceSpans"):
        service = _service(rs)
        for ss in _list(rs, "scopeSpans"):
            for raw in _list(ss, "spans"):
                span = _each(index, rejected, lambda r=raw, s=service: _span(r, binary, s))
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
        end=_time(raw.get("endTimeUnixNano")),
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

    data, binary = _decode(body, content_type, ExportLogsServiceRequest())
    events: list[SpanEvent] = []
    rejected: list[Rejected] = []
    index = 0
    for rl in _list(data, "resourceLogs"):
        for sl in _list(rl, "scopeLogs"):
            for raw in _list(sl, "logRecords"):
                event = _each(index, rejected, lambda r=raw: _log_record(r, binary))
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


# ------------------------------------------------------------------ spans → calls


def _json_value(value: Any) -> Any:
    """Attribute values that hold JSON as text (messages, tool definitions) as data."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # too deep to read is text too
            return value
    return value


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    return None


def _first(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        if attrs.get(name) is not None:
            return attrs[name]
    return None


def is_model_call(span: Span) -> bool:
    a = span.attributes
    if a.get("openinference.span.kind") == "LLM":
        return True
    operation = a.get("gen_ai.operation.name")
    if operation is not None:
        return operation in _GENERATING
    # Older instrumentations name no operation: a request model says it is a model call.
    return a.get("gen_ai.request.model") is not None and (
        a.get("gen_ai.system") or a.get("gen_ai.provider.name")
    )


def _part(p: Any) -> dict[str, Any]:
    """A GenAI semconv message part as a content block (the Anthropic shape, which the
    conversation view reads)."""
    if not isinstance(p, dict):
        return {"type": "text", "text": str(p)}
    kind = p.get("type")
    if kind == "text":
        return {"type": "text", "text": str(p.get("content", ""))}
    if kind == "tool_call":
        return {
            "type": "tool_use",
            "id": p.get("id"),
            "name": p.get("name"),
            "input": _json_value(p.get("arguments")),
        }
    if kind == "tool_call_response":
        return {
            "type": "tool_result",
            "tool_use_id": p.get("id"),
            "content": p.get("response", p.get("result")),
        }
    return p


def _semconv_messages(value: Any) -> list[dict[str, Any]] | None:
    """`gen_ai.input.messages` / `gen_ai.output.messages` (role and parts) as messages."""
    value = _json_value(value)
    if not isinstance(value, list):
        return None
    out = []
    for m in value:
        if not isinstance(m, dict):
            continue
        if "parts" in m:
            out.append({"role": m.get("role", "user"), "content": [_part(p) for p in m.get("parts") or []]})
        else:  # already provider-shaped
            out.append(m)
    return out


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Flattened lists (`llm.input_messages.0.message.role`, …) back as a list of dicts."""
    items: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if not index.isdigit() or not rest:
            continue
        node = items.setdefault(int(index), {})
        *path, last = rest.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return [items[i] for i in sorted(items)]


def _openinference_message(item: dict[str, Any]) -> dict[str, Any]:
    m = item.get("message") or {}
    blocks: list[dict[str, Any]] = []
    if m.get("content") is not None:
        blocks.append({"type": "text", "text": str(m["content"])})
    contents = m.get("contents") or {}
    for key in sorted(contents, key=lambda k: int(k) if str(k).isdigit() else 0):
        c = (contents[key] or {}).get("message_content") or {}
        if c.get("type", "text") == "text" and c.get("text") is not None:
            blocks.append({"type": "text", "text": str(c["text"])})
    calls = m.get("tool_calls") or {}
    for key in sorted(calls, key=lambda k: int(k) if str(k).isdigit() else 0):
        tc = (calls[key] or {}).get("tool_call") or {}
        fn = tc.get("function") or {}
        blocks.append({"type": "tool_use", "id": tc.get("id"), "name": fn.get("name"),
                       "input": _json_value(fn.get("arguments"))})  # fmt: skip
    if m.get("tool_call_id"):
        text = " ".join(b.get("text", "") for b in blocks if b["type"] == "text")
        return {
            "role": m.get("role", "tool"),
            "content": [{"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": text}],
        }
    return {"role": m.get("role", "user"), "content": blocks}


@dataclass
class Content:
    """What a span (or its events) says of a call's content."""

    system_prompt: str | None = None
    messages: list[Any] | None = None
    tools: list[Any] | None = None
    output: list[dict[str, Any]] | None = None  # assistant messages
    finish_reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def fill(self, other: Content) -> None:
        """Take what this lacks from `other`."""
        for name in ("system_prompt", "messages", "tools", "output", "finish_reason"):
            if getattr(self, name) is None and getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        self.params = {**other.params, **self.params}


def _system_text(value: Any) -> str | None:
    value = _json_value(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # a list of parts
        return "\n".join(str(p.get("content", "")) if isinstance(p, dict) else str(p) for p in value)
    return None


def span_content(a: dict[str, Any]) -> Content:
    c = Content()
    # GenAI semantic conventions (current).
    c.system_prompt = _system_text(a.get("gen_ai.system_instructions"))
    c.messages = _semconv_messages(a.get("gen_ai.input.messages"))
    c.output = _semconv_messages(a.get("gen_ai.output.messages"))
    tools = _json_value(a.get("gen_ai.tool.definitions"))
    c.tools = tools if isinstance(tools, list) else None
    # Deprecated: gen_ai.prompt / gen_ai.completion, flat or indexed.
    if c.messages is None:
        indexed = _indexed(a, "gen_ai.prompt.")
        if indexed:
            c.messages = [{"role": m.get("role", "user"), "content": m.get("content")} for m in indexed]
        elif isinstance(a.get("gen_ai.prompt"), str):
            prompt = _json_value(a["gen_ai.prompt"])
            c.messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if c.output is None:
        indexed = _indexed(a, "gen_ai.completion.")
        if indexed:
            c.output = [{"role": m.get("role", "assistant"), "content": m.get("content")} for m in indexed]
        elif isinstance(a.get("gen_ai.completion"), str):
            c.output = [{"role": "assistant", "content": a["gen_ai.completion"]}]
    # OpenInference.
    if c.messages is None:
        inputs = [_openinference_message(m) for m in _indexed(a, "llm.input_messages.")]
        if inputs:
            c.messages = inputs
    if c.output is None:
        outputs = [_openinference_message(m) for m in _indexed(a, "llm.output_messages.")]
        if outputs:
            c.output = outputs
    if c.tools is None:
        tools = [_json_value((t.get("tool") or {}).get("json_schema")) for t in _indexed(a, "llm.tools.")]
        c.tools = tools or None
    # A system message among the inputs is the system prompt, as in the Anthropic API.
    if c.messages and c.system_prompt is None and c.messages[0].get("role") in ("system", "developer"):
        first = c.messages.pop(0)
        content = first.get("content")
        c.system_prompt = content if isinstance(content, str) else _blocks_text(content)
    reasons = a.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list) and reasons:
        c.finish_reason = str(reasons[0])
    elif a.get("llm.finish_reason"):
        c.finish_reason = str(a["llm.finish_reason"])
    invocation = _json_value(a.get("llm.invocation_parameters"))
    if isinstance(invocation, dict):
        c.params.update(invocation)
    for key, value in a.items():
        if key.startswith("gen_ai.request.") and key != "gen_ai.request.model" and value is not None:
            c.params[key.removeprefix("gen_ai.request.")] = value
    return c


def _blocks_text(content: Any) -> str | None:
    if not isinstance(content, list):
        return None
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def event_content(events: Iterable[SpanEvent]) -> Content:
    """Content carried by GenAI log events, in the order they came."""
    c = Content()
    messages: list[dict[str, Any]] = []
    output: list[dict[str, Any]] = []
    for e in events:
        body = e.body if isinstance(e.body, dict) else {}
        if e.name == "gen_ai.client.inference.operation.details":
            c.fill(span_content(e.attributes))
            continue
        role = e.name.removeprefix("gen_ai.").removesuffix(".message")
        if e.name == "gen_ai.system.message":
            text = body.get("content")
            c.system_prompt = text if isinstance(text, str) else _blocks_text(text)
        elif e.name in ("gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message"):
            msg: dict[str, Any] = {"role": role, "content": body.get("content")}
            if body.get("tool_calls"):
                msg["tool_calls"] = body["tool_calls"]
            if body.get("id") and role == "tool":
                msg["tool_call_id"] = body["id"]
            messages.append(msg)
        elif e.name == "gen_ai.choice":
            message = body.get("message") or {}
            msg = {"role": message.get("role", "assistant"), "content": message.get("content")}
            if message.get("tool_calls"):
                msg["tool_calls"] = message["tool_calls"]
            output.append(msg)
            if body.get("finish_reason") and c.finish_reason is None:
                c.finish_reason = str(body["finish_reason"])
    if messages and c.messages is None:
        c.messages = messages
    if output and c.output is None:
        c.output = output
    return c


def _tool_calls(output: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    calls = []
    for m in output or []:
        for b in m.get("content") or [] if isinstance(m.get("content"), list) else []:
            if isinstance(b, dict) and b.get("type") == "tool_use":
                calls.append({"id": b.get("id"), "name": b.get("name"), "input": b.get("input")})
        for tc in m.get("tool_calls") or []:
            fn = (tc or {}).get("function") or {}
            calls.append(
                {"id": tc.get("id"), "name": fn.get("name"), "input": _json_value(fn.get("arguments"))}
            )
    return calls or None


def span_call(span: Span, content: Content) -> Call:
    """The call a model-call span describes (its content given separately: the span's own
    and its events', merged by the caller)."""
    a = span.attributes
    provider = _first(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    model = _first(
        a, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "llm.request.model_name"
    )
    metadata: dict[str, Any] = {"otel": {"span_id": span.span_id, "span": span.name}}
    if span.service:
        metadata["otel"]["service"] = span.service
    extra = _json_value(a.get("metadata"))
    if isinstance(extra, dict):
        metadata.update({k: v for k, v in extra.items() if k != "otel"})
    tags = a.get("tag.tags")
    error_type = a.get("error.type")
    error = None
    if error_type is not None or span.status == "error":
        error = {"type": str(error_type or "error"), "message": span.status_message or ""}
    output = content.output
    response = None
    if output:
        blocks: list[Any] = []
        for m in output:
            body = m.get("content")
            blocks.extend(
                body if isinstance(body, list) else ([{"type": "text", "text": str(body)}] if body else [])
            )
        response = {"role": "assistant", "content": blocks}
    end = span.end or span.start
    return Call(
        id=call_id(span.trace_id, span.span_id),
        session_id=_str(_first(a, "gen_ai.conversation.id", "session.id")),
        user_id=_str(_first(a, "user.id", "enduser.id")),
        timestamp=span.start,
        provider=_str(provider).lower() if provider else None,
        model=_str(model),
        prompt_template_version=_str(a.get("llm.prompt_template.version")),
        system_prompt=content.system_prompt,
        messages=content.messages,
        tools=content.tools,
        params=content.params or None,
        response=response,
        tool_calls=_tool_calls(output),
        stop_reason=content.finish_reason,
        input_tokens=_int(
            _first(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
        ),
        output_tokens=_int(
            _first(
                a,
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
                "llm.token_count.completion",
            )
        ),
        cache_read_tokens=_int(
            _first(
                a,
                "gen_ai.usage.cache_read.input_tokens",
                "gen_ai.usage.cache_read_input_tokens",
                "llm.token_count.prompt_details.cache_read",
            )
        ),
        cache_creation_tokens=_int(
            _first(
                a,
                "gen_ai.usage.cache_creation.input_tokens",
                "gen_ai.usage.cache_write.input_tokens",
                "gen_ai.usage.cache_creation_input_tokens",
                "llm.token_count.prompt_details.cache_write",
            )
        ),
        latency_ms=(end - span.start).total_seconds() * 1000,
        error=error,
        metadata=metadata,
        tags=[str(t) for t in tags] if isinstance(tags, list) else None,
        trace_id=span.trace_id,
        parent_id=span.parent_id,
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def calls_from(spans: list[Span], events: list[SpanEvent]) -> list[Call]:
    """The calls these spans describe, with their events' content; marks each span's call.

    A model-call span directly under another (a framework's LLM span around the SDK's own)
    is one call: the inner one, which carries the SDK's exact usage, with content from
    either. Spans of earlier requests are the store's business (`Store.spans`)."""
    by_span: dict[tuple[str, str], list[SpanEvent]] = {}
    for e in events:
        if e.trace_id and e.span_id:
            by_span.setdefault((e.trace_id, e.span_id), []).append(e)
    model_spans = {(s.trace_id, s.span_id): s for s in spans if is_model_call(s)}
    contents = {}
    for key, s in model_spans.items():
        c = span_content(s.attributes)
        c.fill(event_content(by_span.get(key, [])))
        contents[key] = c
    calls = []
    for key, s in model_spans.items():
        inner = [k for k, o in model_spans.items() if o.parent_id == s.span_id and k[0] == s.trace_id]
        if inner:  # the same call, seen from outside: its content goes to the inner span's
            contents[inner[0]].fill(contents[key])
    for key, s in model_spans.items():
        inner = [k for k, o in model_spans.items() if o.parent_id == s.span_id and k[0] == s.trace_id]
        if inner:
            continue
        call = span_call(s, contents[key])
        outer = model_spans.get((s.trace_id, s.parent_id or ""))
        if outer is not None:  # fill what the SDK's span lacks from the framework's
            wrapper = span_call(outer, contents[key])
            for name in (
                "session_id",
                "user_id",
                "prompt_template_version",
                "tags",
                "input_tokens",
                "output_tokens",
            ):
                if getattr(call, name) is None:
                    setattr(call, name, getattr(wrapper, name))
            if wrapper.metadata:
                call.metadata = {**wrapper.metadata, **(call.metadata or {})}
            outer.call_id = call.id
        s.call_id = call.id
        calls.append(call)
    return calls


# ------------------------------------------------------------------ into the store

_CONTENT = ("system_prompt", "messages", "tools", "params", "response", "tool_calls", "stop_reason")


def _fill(call: Call, other: Call) -> bool:
    """Give `call` the content it lacks from `other`; whether anything changed."""
    changed = False
    for name in _CONTENT:
        if getattr(call, name) is None and getattr(other, name) is not None:
            setattr(call, name, getattr(other, name))
            changed = True
    return changed


def _insert_calls(store: Store, calls: list[Call], refused: dict[str, str]) -> int:
    """Insert the batch in one transaction; when the store refuses a call as data (not as
    being down), each goes alone, and why each refused one was goes to `refused` by id.
    Returns how many were new."""
    if not calls:
        return 0
    try:
        return store.insert(calls)
    except store.data_errors:
        pass
    added = 0
    for call in calls:
        try:
            added += store.insert([call])
        except store.data_errors as exc:
            refused[call.id] = str(exc)
    return added


def ingest_spans(store: Store, spans: list[Span], intake: Intake) -> tuple[int, list[Refused]]:
    """Keep the spans and the calls their model-call spans describe, each through `intake`
    (redacted, sealed, priced); returns how many calls were new, and the spans refused, by
    their position in `spans`: those the store would not keep (regulated mode, text this
    process has no key to seal), and those whose call it would not keep. The rest is kept
    whatever was refused. A span of this request and one of an earlier request that are one
    call (wrapper and SDK span, exported apart) make one call: the one stored first, given
    the content it lacked."""
    by_trace: dict[str, list[Span]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    new: list[Call] = []
    enriched: list[Call] = []
    calls_refused: dict[str, str] = {}
    for trace_id, group in by_trace.items():
        known = {s.span_id: s for s in store.trace(trace_id)}
        model = [s.span_id for s in group if is_model_call(s)]
        # Content events that came first are kept sealed: opened to be read into the calls.
        events = [intake.open_event(e) for e in store.span_events(trace_id, model)]
        for call in calls_from(group, events):
            mine = [s for s in group if s.call_id == call.id]
            ids = {s.span_id for s in mine}
            parents = {s.parent_id for s in mine}
            # A span kept earlier, directly above or below one of these, already a call.
            earlier = next(
                (
                    k.call_id
                    for k in known.values()
                    if k.call_id and k.call_id != call.id and (k.span_id in parents or k.parent_id in ids)
                ),
                None,
            )
            if earlier is None:
                try:
                    new.append(intake.call(call))
                except RecordError as exc:  # a bad figure, or content too deep to keep
                    calls_refused[call.id] = str(exc)
                continue
            for s in mine:
                s.call_id = earlier
            stored = store.get(earlier)
            try:
                if stored is not None and _fill(stored, intake.protect(call)):
                    enriched.append(stored)
            except RecordError as exc:  # `Unfit`: the content it would give cannot be kept
                calls_refused[earlier] = str(exc)
    added = _insert_calls(store, new, calls_refused)
    for call in enriched:
        try:
            store.update_content(call)
        except store.data_errors as exc:
            calls_refused[call.id] = str(exc)
    # A span whose call was refused is refused with it: what it says was not kept.
    refused = [
        Refused(i, f"its call was not stored: {calls_refused[s.call_id]}")
        for i, s in enumerate(spans)
        if s.call_id in calls_refused
    ]
    kept = [i for i, s in enumerate(spans) if s.call_id not in calls_refused]
    # The calls were read from the spans as they came; the spans are kept as every record is.
    refused += [
        Refused(kept[r.index], r.reason) for r in store.insert_spans([intake.span(spans[i]) for i in kept])
    ]
    return added, sorted(refused)


def ingest_events(store: Store, events: list[SpanEvent], intake: Intake) -> tuple[int, list[Refused]]:
    """Keep content events (through `intake`: redacted, sealed); those whose span is a
    stored call give it the content it lacks. Returns how many calls gained content, and
    the events the store refused, by their position in `events`. Events that come before
    their span wait in the store for it (`ingest_spans` reads them)."""
    joined = [i for i, e in enumerate(events) if e.trace_id and e.span_id]
    refused: list[Refused] = []
    if joined:
        said = store.insert_span_events([intake.event(events[i]) for i in joined])
        refused = [Refused(joined[r.index], r.reason) for r in said]
    kept = [events[i] for i in sorted(set(joined) - {r.index for r in refused})]
    updated = 0
    for trace_id in {e.trace_id for e in kept if e.trace_id}:
        spans = {s.span_id: s for s in store.trace(trace_id)}
        for span_id in {e.span_id for e in kept if e.trace_id == trace_id and e.span_id}:
            span = spans.get(span_id)
            if span is None or span.call_id is None:
                continue
            stored = store.get(span.call_id)
            if stored is None:
                continue
            events_read = [intake.open_event(e) for e in store.span_events(trace_id, [span_id])]
            content = span_call(intake.open_span(span), event_content(events_read))
            try:
                protected = intake.protect(content)
            except RecordError as exc:  # the events are kept; their call stays as it was
                log.warning("llmlog: call %s could not gain its events' content: %s", stored.id, exc)
                continue
            if _fill(stored, protected):
                try:
                    store.update_content(stored)
                except store.data_errors as exc:  # the events are kept; their call stays as it was
                    log.warning("llmlog: call %s could not gain its events' content: %s", stored.id, exc)
                    continue
                updated += 1
    return updated, refused


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
            partial.rejected_spans = len(rejected)  # type: ignore[attr-defined]
        else:
            partial.rejected_log_records = len(rejected)  # type: ignore[attr-defined]
        partial.error_message = "; ".join(f"#{r.index}: {r.reason}" for r in rejected[:10])
    if "json" in content_type:
        from google.protobuf import json_format

        return JSONResponse(json_format.MessageToDict(message))
    return Response(message.SerializeToString(), media_type="application/x-protobuf")
