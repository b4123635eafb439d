"""GenAI spans and events as calls: what the OpenTelemetry GenAI semantic conventions
(`gen_ai.*`, with the deprecated names too) and OpenInference (`llm.*`,
`openinference.span.kind = LLM`) say of a model call, read into the columns of a `Call`.

Content that an instrumentation sends as log events instead of span attributes
(`gen_ai.user.message`, `gen_ai.choice`, `gen_ai.client.inference.operation.details` …) is
read by `event_content`; `span_content` reads a span's own attributes; `span_call` makes
the call of one span from the content of both.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llmlog.record import Call, Span, SpanEvent

_NAMESPACE = uuid.UUID("0b6c3f8e-7d1a-5b2c-9e4f-1a2b3c4d5e6f")
# gen_ai operations that are a model generating: a call. Embeddings, tools and agents are
# spans of the tree.
_GENERATING = {"chat", "text_completion", "generate_content", "responses", "completion"}


def call_id(trace_id: str, span_id: str, key: str | None = None) -> str:
    """A call's id from its span's: a span exported twice is one call. With a `key` (what
    the provider calls the call: `call_key`), from that instead, so every span of one call —
    an instrumentation's and the SDK's own, in one trace or two, in one request or several —
    names the same call."""
    return str(uuid.uuid5(_NAMESPACE, key if key is not None else f"{trace_id}:{span_id}"))


# What the provider calls a call. The response id (`msg_…`, `chatcmpl-…`): the semconv
# attribute, or the start of the response body OpenInference keeps in `output.value`.
_BODY_ID = re.compile(r'^\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_-]{6,200})"')
# The request id of a failed call: the anthropic SDK's span has it as an attribute, its
# exceptions (which instrumentations record on their spans) say it in their message.
_REQUEST_ID = re.compile(r"request_id: (req_[A-Za-z0-9_-]{6,200})")


def response_id(a: dict[str, Any]) -> str | None:
    rid = _first(a, "gen_ai.response.id", "llm.response.id")
    if isinstance(rid, str) and rid:
        return rid
    body = a.get("output.value")
    if isinstance(body, str) and (m := _BODY_ID.match(body[:300])):
        return m.group(1)
    return None


def request_id(span: Span) -> str | None:
    """The provider's id of the HTTP request a span's call made, where it says it."""
    rid = span.attributes.get("anthropic.request.id")
    if isinstance(rid, str) and rid:
        return rid
    texts = [e.get("attributes", {}).get("exception.message") for e in span.events if isinstance(e, dict)]
    for text in [*texts, span.status_message]:
        if isinstance(text, str) and (m := _REQUEST_ID.search(text)):
            return m.group(1)
    return None


def provider_of(a: dict[str, Any]) -> str | None:
    provider = _first(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    return str(provider).lower() if provider is not None else None


def call_key(span: Span) -> str | None:
    """What identifies a span's call whichever span tells of it: the provider and its
    response id; for a call that failed, and so has none, its request id. None when the span
    says neither (then the span's own ids make the call's)."""
    provider = provider_of(span.attributes) or ""
    rid = response_id(span.attributes)
    if rid is not None:
        return f"{provider}:response:{rid}"
    req = request_id(span)
    return f"{provider}:request:{req}" if req is not None else None


def is_sdk_span(span: Span) -> bool:
    """The provider SDK's own span of an HTTP call (the anthropic SDK's `anthropic.messages.create`):
    its figures are the response's, exact."""
    a = span.attributes
    return a.get("http.request.method") is not None or a.get("url.full") is not None


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
    provider = provider_of(a)
    model = _first(
        a, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "llm.request.model_name"
    )
    metadata: dict[str, Any] = {"otel": {"span_id": span.span_id, "span": span.name}}
    if span.service:
        metadata["otel"]["service"] = span.service
    extra = _json_value(a.get("metadata"))
    if isinstance(extra, dict):
        metadata.update({k: v for k, v in extra.items() if k != "otel"})
    _request_note(span, metadata)
    _fallback_note(a, _str(model), metadata)
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
    tool_calls = _tool_calls(output)
    _cut_tool_note(tool_calls, metadata)
    return Call(
        id=call_id(span.trace_id, span.span_id, call_key(span)),
        session_id=_str(_first(a, "gen_ai.conversation.id", "session.id")),
        user_id=_str(_first(a, "user.id", "enduser.id")),
        timestamp=span.start,
        provider=provider or None,
        model=_str(model),
        prompt_template_version=_str(a.get("llm.prompt_template.version")),
        system_prompt=content.system_prompt,
        messages=content.messages,
        tools=content.tools,
        params=content.params or None,
        response=response,
        tool_calls=tool_calls,
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


def _cut_tool_note(tool_calls: list[dict[str, Any]] | None, metadata: dict[str, Any]) -> None:
    """A tool call whose input JSON never closed (cut off by max_tokens: an instrumentation
    sends the text it had) keeps that text as its input, and the call says so, as `wrap`'s
    does: `metadata.llmlog.cut_tool_inputs`, how many."""
    cut = sum(1 for t in tool_calls or [] if is_cut_input(t.get("input")))
    if cut:
        metadata.setdefault("llmlog", {})["cut_tool_inputs"] = cut


def is_cut_input(value: Any) -> bool:
    """Whether a tool call's input is JSON text that did not parse: the start of an object
    or array that was cut off."""
    return isinstance(value, str) and value.lstrip()[:1] in ("{", "[")


def _fallback_note(a: dict[str, Any], model: str | None, metadata: dict[str, Any]) -> None:
    """A call the anthropic SDK's refusal fallback (its beta middleware) sent again to another
    model after a refusal is the model that served (`gen_ai.response.model`, OpenInference's
    `llm.model_name`), priced as that; the model asked for is noted,
    `metadata.llmlog.requested_model`. (An alias the API resolved to a dated model, or a
    `-latest`, is the same model: not noted.)"""
    requested = _first(a, "gen_ai.request.model", "llm.request.model_name")
    if not isinstance(requested, str) or model is None or provider_of(a) != "anthropic":
        return
    if not model.startswith(requested.removesuffix("-latest")):
        metadata.setdefault("llmlog", {})["requested_model"] = requested


def _request_note(span: Span, metadata: dict[str, Any]) -> None:
    """The provider's request id, where `wrap` keeps it (`metadata.llmlog.request_id`)."""
    rid = request_id(span)
    if rid is not None:
        metadata.setdefault("llmlog", {})["request_id"] = rid


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
