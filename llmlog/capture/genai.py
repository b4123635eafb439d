"""GenAI spans and events as calls: what the OpenTelemetry GenAI semantic conventions
(`gen_ai.*`, with the deprecated names too) and OpenInference (`llm.*`,
`openinference.span.kind = LLM`) say of a model call, read into the columns of a `Call`.

Content that an instrumentation sends as log events instead of span attributes
(`gen_ai.user.message`, `gen_ai.choice`, `gen_ai.client.inference.operation.details` …) is
read by `event_content`; `span_content` reads a span's own attributes; `span_call` makes
the call of one span from the content of both. Beside it: `attributes` (reading attribute
values, flattened lists), `outcome` (first token, error) and `kept` (what a span that became
a call keeps).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmlog.capture.attributes import (
    Items,
    Shared,
    first_of,
    flattened,
    int_value,
    json_value,
    listed,
    nest,
    obj,
    str_value,
)
from llmlog.capture.outcome import first_token_ms, span_error
from llmlog.capture.sent import is_whole, sent_request, sent_response
from llmlog.capture.shapes import SpanSaid, implied, memo_of
from llmlog.core.config import cache_bytes
from llmlog.core.record import Call, Span, SpanEvent
from llmlog.providers import api_named, read_response, shared_stop, split_request
from llmlog.providers.api import blocks_text
from llmlog.providers.openai_chat import CHAT

_NAMESPACE = uuid.UUID("0b6c3f8e-7d1a-5b2c-9e4f-1a2b3c4d5e6f")
_NAMESPACE_BYTES = _NAMESPACE.bytes
# gen_ai operations that are a model generating: a call. Embeddings, tools and agents are
# spans of the tree.
_GENERATING = {"chat", "text_completion", "generate_content", "responses", "completion"}


def call_id(trace_id: str, span_id: str, key: str | None = None) -> str:
    """A call's id from its span's: a span exported twice is one call. With a `key` (what
    the provider calls the call: `call_key`), from that instead, so every span of one call —
    an instrumentation's and the SDK's own, in one trace or two, in one request or several —
    names the same call."""
    # uuid.uuid5, written out: the same text at a third of the cost (every span's call is named).
    name = key if key is not None else f"{trace_id}:{span_id}"
    h = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


# What the provider calls a call. The response id (`msg_…`, `chatcmpl-…`): the semconv
# attribute, or the start of the response body OpenInference keeps in `output.value`.
_BODY_ID = re.compile(r'^\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_-]{6,200})"')
# The request id of a failed call: the anthropic SDK's span has it as an attribute, its
# exceptions (which instrumentations record on their spans) say it in their message.
_REQUEST_ID = re.compile(r"request_id: (req_[A-Za-z0-9_-]{6,200})")


def response_id(a: dict[str, Any]) -> str | None:
    rid = first_of(a, "gen_ai.response.id", "llm.response.id")
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
    provider = first_of(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    return str(provider).lower() if provider else None


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


# The GenAI semantic conventions' finish reasons, where they are not OpenAI's words.
_SEMCONV_STOP = {"tool_call": "tool_calls"}


def stop_reason(provider: str | None, raw: Any) -> str | None:
    """A finish or stop reason as `llmlog.wrap` stores it: in OpenAI's words (`stop`,
    `length`, `tool_calls`, `content_filter`), Anthropic's mapped as wrap maps them
    (`end_turn` → `stop`, `tool_use` → `tool_calls`, `max_tokens` → `length`, …), whatever
    the provider is called (Anthropic models served elsewhere say the same); OpenAI's
    deprecated `function_call` and the conventions' `tool_call` are `tool_calls`. Others
    are kept as said."""
    del provider  # the words do not overlap between providers: one table serves them all
    if raw is None or raw == "":
        return None
    raw = str(raw)
    return shared_stop(raw) or _SEMCONV_STOP.get(raw, raw)


def is_model_call(span: Span) -> object:
    # Read as a condition: the last case gives the system's name (or None), not a bool.
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
            "input": json_value(p.get("arguments")),
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
    value = json_value(value)
    if not isinstance(value, list):
        return None
    out = []
    for m in value:
        if not isinstance(m, dict):
            continue
        if "parts" in m:
            parts = m.get("parts")
            parts = [_part(p) for p in parts] if isinstance(parts, list) else []
            out.append({"role": m.get("role", "user"), "content": parts})
        else:  # already provider-shaped
            out.append(m)
    return out


_MESSAGES = Shared(
    20_000, cache_bytes("messages")
)  # (path, text) pairs of an OpenInference message → the message
_TOOLS = Shared(2_000, cache_bytes("tools"))  # the tool definitions' texts → the tool list
_TEXTS = Shared(2_000, cache_bytes("texts"))  # a system prompt → the same string


def _openinference_messages(items: Items, prefix: str, mixed: set[tuple[str, int]]) -> list[dict[str, Any]]:
    out = []
    for i in sorted(items):
        pairs = items[i]
        if (prefix, i) in mixed:  # equal keys must mean equal content: 1 == True == 1.0 would not
            out.append(_built_message(pairs))
        else:
            out.append(_MESSAGES.get(tuple(pairs), _built_message, pairs))
    return out


def _built_message(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return _openinference_message(nest(pairs))


def _openinference_tools(items: Items, prefix: str, mixed: set[tuple[str, int]]) -> list[Any]:
    groups = [items[i] for i in sorted(items)]
    if any(p == prefix for p, _ in mixed):
        return _built_tools(groups)
    return _TOOLS.get(tuple(map(tuple, groups)), _built_tools, groups)


def _built_tools(groups: list[list[tuple[str, Any]]]) -> list[Any]:
    return [json_value(obj(nest(pairs).get("tool")).get("json_schema")) for pairs in groups]


def _openinference_message(item: dict[str, Any]) -> dict[str, Any]:
    m = obj(item.get("message"))
    blocks: list[dict[str, Any]] = []
    if m.get("content") is not None:
        blocks.append({"type": "text", "text": str(m["content"])})
    contents = obj(m.get("contents"))
    for key in sorted(contents, key=lambda k: int(k) if str(k).isdigit() else 0):
        c = obj(obj(contents[key]).get("message_content"))
        if c.get("type", "text") == "text" and c.get("text") is not None:
            blocks.append({"type": "text", "text": str(c["text"])})
    calls = obj(m.get("tool_calls"))
    for key in sorted(calls, key=lambda k: int(k) if str(k).isdigit() else 0):
        tc = obj(obj(calls[key]).get("tool_call"))
        fn = obj(tc.get("function"))
        blocks.append({"type": "tool_use", "id": tc.get("id"), "name": fn.get("name"),
                       "input": json_value(fn.get("arguments"))})  # fmt: skip
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
    finish_reason: str | None = None  # as the instrumentation said it
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None  # the API's response whole (OpenInference's output.value)
    # The API whose request the span carried as sent (`sent.sent_request`): the system
    # prompt, messages, tools and params are that request's, as wrap reads them.
    api: str | None = None

    def fill(self, other: Content) -> None:
        """Take what this lacks from `other`."""
        if self.api is None and other.api is not None and self.messages is None:
            # The request as sent, whole: its parameters are all of them, named as sent.
            self.api, self.params = other.api, dict(other.params)
        for name in ("system_prompt", "messages", "tools", "output", "finish_reason", "body"):
            if getattr(self, name) is None and getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        self.params = {**other.params, **self.params}


def _system_text(value: Any) -> str | None:
    value = json_value(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # a list of parts
        return "\n".join(str(p.get("content", "")) if isinstance(p, dict) else str(p) for p in value)
    return None


def span_content(a: dict[str, Any]) -> Content:
    c = Content()
    # The request as sent (OpenInference's input.value), read as wrap reads it.
    sent = sent_request(a, provider_of(a))
    if sent is not None:
        c.api, request = sent
        told = Call(id="", timestamp=_EPOCH)  # read from, never kept: no random id to make
        split_request(c.api, request, told)
        c.system_prompt, c.messages, c.tools = told.system_prompt, told.messages, told.tools
        c.params = dict(told.params or {})
        invocation = json_value(a.get("llm.invocation_parameters"))
        if isinstance(invocation, dict) and invocation.get("stream") is True:
            # The SDK's stream helpers add it to the request they send, after the span saw it.
            c.params.setdefault("stream", True)
        return _output_content(a, c)
    # GenAI semantic conventions (current).
    c.system_prompt = _system_text(a.get("gen_ai.system_instructions"))
    c.messages = _semconv_messages(a.get("gen_ai.input.messages"))
    c.output = _semconv_messages(a.get("gen_ai.output.messages"))
    tools = json_value(a.get("gen_ai.tool.definitions"))
    c.tools = tools if isinstance(tools, list) else None
    flat, mixed = flattened(a)
    # Deprecated: gen_ai.prompt / gen_ai.completion, flat or indexed.
    if c.messages is None:
        indexed = listed(flat.get("gen_ai.prompt.", {}))
        if indexed:
            c.messages = [{"role": m.get("role", "user"), "content": m.get("content")} for m in indexed]
        elif isinstance(a.get("gen_ai.prompt"), str):
            prompt = json_value(a["gen_ai.prompt"])
            c.messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if c.output is None:
        indexed = listed(flat.get("gen_ai.completion.", {}))
        if indexed:
            c.output = [{"role": m.get("role", "assistant"), "content": m.get("content")} for m in indexed]
        elif isinstance(a.get("gen_ai.completion"), str):
            c.output = [{"role": "assistant", "content": a["gen_ai.completion"]}]
    # OpenInference.
    if c.messages is None:
        inputs = _openinference_messages(flat.get("llm.input_messages.", {}), "llm.input_messages.", mixed)
        if inputs:
            c.messages = inputs
    if c.tools is None:
        tools = _openinference_tools(flat.get("llm.tools.", {}), "llm.tools.", mixed)
        c.tools = tools or None
    # System messages among the inputs are the system prompt (they stay among the messages
    # here: an OpenAI call keeps them there, as sent; `span_call` shapes them per provider).
    if c.messages and c.system_prompt is None:
        c.system_prompt = _system_of(c.messages)
    invocation = json_value(a.get("llm.invocation_parameters"))
    if isinstance(invocation, dict):
        c.params.update(invocation)
    for key, value in a.items():
        if key.startswith("gen_ai.request.") and key != "gen_ai.request.model" and value is not None:
            c.params[key.removeprefix("gen_ai.request.")] = value
    return _output_content(a, c, flat, mixed)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _output_content(
    a: dict[str, Any],
    c: Content,
    flat: dict[str, Items] | None = None,
    mixed: set[tuple[str, int]] | None = None,
) -> Content:
    """What a span says of its call's answer: the response body where it came whole, the
    output messages under each convention (not read beside a whole response as sent, which
    says all they say), and the finish reason."""
    if c.api is not None:
        c.body = sent_response(a, c.api)
    elif a.get("output.mime_type") == "application/json" and a.get("openinference.span.kind") == "LLM":
        body = json_value(a.get("output.value"))
        if isinstance(body, dict) and CHAT.sent(body):  # a Chat completion
            c.body = body
    whole = c.api is not None and c.body is not None and is_whole(c.api, c.body)
    if c.output is None and not whole:
        if flat is None or mixed is None:
            flat, mixed = flattened(a)
        outputs = _openinference_messages(flat.get("llm.output_messages.", {}), "llm.output_messages.", mixed)
        if outputs:
            c.output = outputs
    reasons = a.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list) and reasons:
        c.finish_reason = str(reasons[0])
    elif a.get("llm.finish_reason"):
        c.finish_reason = str(a["llm.finish_reason"])
    else:  # in the output messages (streamed calls often say it only there), or Anthropic's own
        said = json_value(a.get("gen_ai.output.messages"))
        said = said if isinstance(said, list) else []
        reasons = [m["finish_reason"] for m in said if isinstance(m, dict) and m.get("finish_reason")]
        reason = reasons[0] if reasons else a.get("anthropic.message.stop_reason")
        c.finish_reason = str(reason) if reason else None
    return c


def _system_of(messages: list[Any]) -> str | None:
    """The system prompt of messages that lead with system (or developer) messages: their
    text, joined as `llmlog.wrap` joins an OpenAI request's."""
    texts = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer"):
            break
        content = m.get("content")
        texts.append(content if isinstance(content, str) else blocks_text(content) or "")
    return "\n\n".join(texts) if texts else None


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
            c.system_prompt = text if isinstance(text, str) else blocks_text(text)
        elif e.name in ("gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message"):
            msg: dict[str, Any] = {"role": role, "content": body.get("content")}
            if body.get("tool_calls"):
                msg["tool_calls"] = body["tool_calls"]
            if body.get("id") and role == "tool":
                msg["tool_call_id"] = body["id"]
            messages.append(msg)
        elif e.name == "gen_ai.choice":
            message = obj(body.get("message"))
            msg = {"role": message.get("role", "assistant"), "content": message.get("content")}
            # Tool calls under the message, or beside it (Traceloop puts them there).
            tool_calls = message.get("tool_calls") or body.get("tool_calls")
            if tool_calls:
                msg["tool_calls"] = tool_calls
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
        said = m.get("tool_calls")
        for tc in said if isinstance(said, list) else []:
            if not isinstance(tc, dict):
                continue
            fn = obj(tc.get("function"))
            calls.append(
                {"id": tc.get("id"), "name": fn.get("name"), "input": json_value(fn.get("arguments"))}
            )
    return calls or None


def span_call(span: Span, content: Content) -> Call:
    """The call a model-call span describes (its content given separately: the span's own
    and its events', merged by the caller). An OpenAI Chat call's messages, tools, params
    and response are in that API's shape, as `llmlog.wrap` stores them; other calls' content
    is in Anthropic's."""
    a = span.attributes
    provider = provider_of(a)
    model = first_of(
        a, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "llm.request.model_name"
    )
    if model is None:  # a failed call says only what was asked for (OpenInference)
        model = _requested_model(a, content)
    metadata: dict[str, Any] = {"otel": {"span_id": span.span_id, "span": span.name}}
    if span.service:
        metadata["otel"]["service"] = span.service
    extra = json_value(a.get("metadata"))
    feature = None
    if isinstance(extra, dict):
        metadata.update({k: v for k, v in extra.items() if k != "otel"})
        if isinstance(metadata.get("feature"), str):
            # The product feature the call serves, a column of its own as wrap's context gives it.
            feature = metadata.pop("feature")
    _request_note(span, metadata)
    _fallback_note(a, str_value(model), metadata)
    tags = a.get("tag.tags")
    reason = stop_reason(provider, content.finish_reason)
    output = content.output
    system_prompt, messages, tools, params = (
        content.system_prompt,
        content.messages,
        content.tools,
        content.params,
    )
    told: Call | None = None  # what the response as sent says, read as wrap reads it
    said = SpanSaid(a)
    if content.api is not None:  # the request as sent: its columns as wrap reads them
        body = content.body
        response = api_named(content.api).answer_from(body, output, reason, said)
        if response is not None and body is not None and is_whole(content.api, body):
            told = Call(id="", timestamp=span.start)  # read from, never kept
            read_response(content.api, response, told)
    else:  # the conventions' content, in the shape of the API they imply
        api, takes_body = implied(provider, a)
        if api.request_from is not None:
            messages, system_prompt, tools, params = api.request_from(
                messages, system_prompt, tools, params, said, memo_of(api)
            )
        response = api.answer_from(content.body if takes_body else None, output, reason, said)
    if isinstance(system_prompt, str):  # the same string as the calls before that sent it
        system_prompt = _TEXTS.get(system_prompt, str, system_prompt)
    end = span.end or span.start
    latency_ms = (end - span.start).total_seconds() * 1000
    tool_calls = _tool_calls(output) if told is None else told.tool_calls
    if told is not None and told.stop_reason is not None:
        reason = told.stop_reason
    _cut_tool_note(tool_calls, metadata)
    call = Call(
        id=call_id(span.trace_id, span.span_id, call_key(span)),
        session_id=str_value(first_of(a, "gen_ai.conversation.id", "session.id")),
        user_id=str_value(first_of(a, "user.id", "enduser.id")),
        feature=feature,
        timestamp=span.start,
        provider=provider,
        model=str_value(model),
        prompt_template_version=str_value(a.get("llm.prompt_template.version")),
        system_prompt=system_prompt,
        messages=messages,
        tools=tools,
        params=_served_params(params, metadata, str_value(model)) or None,
        response=response,
        tool_calls=tool_calls,
        stop_reason=reason,
        input_tokens=int_value(
            first_of(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
        ),
        output_tokens=int_value(
            first_of(
                a,
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
                "llm.token_count.completion",
            )
        ),
        cache_read_tokens=int_value(
            first_of(
                a,
                "gen_ai.usage.cache_read.input_tokens",
                "gen_ai.usage.cache_read_input_tokens",
                "llm.token_count.prompt_details.cache_read",
            )
        ),
        cache_creation_tokens=int_value(
            first_of(
                a,
                "gen_ai.usage.cache_creation.input_tokens",
                "gen_ai.usage.cache_write.input_tokens",
                "gen_ai.usage.cache_creation_input_tokens",
                "llm.token_count.prompt_details.cache_write",
            )
        ),
        latency_ms=latency_ms,
        first_token_ms=first_token_ms(span, provider, latency_ms),
        error=span_error(span),
        metadata=metadata,
        tags=[str(t) for t in tags] if isinstance(tags, list) else None,
        trace_id=span.trace_id,
        parent_id=span.parent_id,
    )
    if told is not None:  # figures the attributes left out (a cache count of 0), as the answer says
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"):
            if getattr(call, name) is None:
                setattr(call, name, getattr(told, name))
    if call.first_token_ms is None and call.error is None and _anthropic_sdk_unstreamed(span):
        call.first_token_ms = latency_ms  # as wrap counts it: the whole answer at once
    if provider == "openai" and call.input_tokens is not None:
        # As wrap counts them: OpenAI caches by itself and bills no cache writes; usage
        # without cached tokens read none.
        call.cache_creation_tokens = call.cache_creation_tokens or 0
        call.cache_read_tokens = call.cache_read_tokens or 0
    return call


def _requested_model(a: dict[str, Any], content: Content) -> Any:
    """The model a call asked for: OpenInference's invocation parameters, or its input."""
    if isinstance(content.params.get("model"), str):
        return content.params["model"]
    if a.get("input.mime_type") == "application/json":
        request = json_value(a.get("input.value"))
        if isinstance(request, dict) and isinstance(request.get("model"), str):
            return request["model"]
    return None


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


def _anthropic_sdk_unstreamed(span: Span) -> bool:
    """The anthropic SDK's own span of a Messages call that was not streamed: the SDK sets
    `gen_ai.request.stream` on the span of a call that streams, and nothing otherwise."""
    a = span.attributes
    return (
        is_sdk_span(span)
        and provider_of(a) == "anthropic"
        and a.get("gen_ai.operation.name") == "chat"
        and "gen_ai.request.stream" not in a
        and "gen_ai.response.time_to_first_chunk" not in a
    )


def _fallback_note(a: dict[str, Any], model: str | None, metadata: dict[str, Any]) -> None:
    """A call the anthropic SDK's refusal fallback (its beta middleware) sent again to another
    model after a refusal is the model that served (`gen_ai.response.model`, OpenInference's
    `llm.model_name`), priced as that; the model asked for is noted,
    `metadata.llmlog.requested_model`. (An alias the API resolved to a dated model, or a
    `-latest`, is the same model: not noted.)"""
    requested = first_of(a, "gen_ai.request.model", "llm.request.model_name")
    if not isinstance(requested, str) or model is None or provider_of(a) != "anthropic":
        return
    if not model.startswith(requested.removesuffix("-latest")):
        metadata.setdefault("llmlog", {})["requested_model"] = requested


def _served_params(params: dict[str, Any], metadata: dict[str, Any], model: str | None) -> dict[str, Any]:
    """A request the refusal fallback sent again went to the model that served it, as the
    request wrap saw (`_fallback_note`)."""
    if "model" in params and model and (metadata.get("llmlog") or {}).get("requested_model"):
        return {**params, "model": model}
    return params


def _request_note(span: Span, metadata: dict[str, Any]) -> None:
    """The provider's request id, where `wrap` keeps it (`metadata.llmlog.request_id`)."""
    rid = request_id(span)
    if rid is not None:
        metadata.setdefault("llmlog", {})["request_id"] = rid
