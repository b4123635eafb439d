"""A model call's outcome as its span tells it: when the first token came, and the error,
as `llmlog.wrap` stores them (`first_token_ms`; `{type, status, message}`)."""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime
from typing import Any

from llmlog.capture.attributes import int_value, json_value
from llmlog.core.record import Span

# Span events that mark the first token, or each streamed chunk (the first is the first token).
_FIRST_TOKEN_EVENTS = ("First Token Stream Event",)  # OpenInference
_CHUNK_EVENTS = ("gen_ai.content.completion.chunk", "llm.content.completion.chunk")  # Traceloop


def _event_time(event: dict[str, Any]) -> datetime | None:
    t = event.get("time")
    if isinstance(t, datetime):
        return t
    if isinstance(t, str):
        try:
            return datetime.fromisoformat(t)
        except ValueError:
            return None
    return None


def _streamed(a: dict[str, Any], provider: str | None) -> bool | None:
    """Whether the call was streamed, when the span says so (None: it does not)."""
    for name in ("gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming"):
        if isinstance(a.get(name), bool):
            return bool(a[name])
    invocation = json_value(a.get("llm.invocation_parameters"))
    if isinstance(invocation, dict):
        if "stream" in invocation:
            return bool(invocation["stream"])
        if provider == "openai":  # OpenInference's OpenAI spans hold every parameter the call was given
            return False
    return None


def first_token_ms(span: Span, provider: str | None, latency_ms: float) -> float | None:
    """Milliseconds from the span's start to the first token: from
    `gen_ai.response.time_to_first_chunk` (seconds), a first-token span event, or the first
    per-chunk span event; a call known not to be streamed got its first token with the
    whole answer (as `llmlog.wrap` counts it: the latency)."""
    a = span.attributes
    ttfc = a.get("gen_ai.response.time_to_first_chunk")
    if isinstance(ttfc, (int, float)) and not isinstance(ttfc, bool) and ttfc >= 0:
        return ttfc * 1000
    times = [
        t
        for e in span.events
        if e.get("name") in _FIRST_TOKEN_EVENTS or e.get("name") in _CHUNK_EVENTS
        if (t := _event_time(e)) is not None
    ]
    if times:
        return max(0.0, (min(times) - span.start).total_seconds() * 1000)
    return latency_ms if _streamed(a, provider) is False else None


_STATUS_IN_TYPE = re.compile(r"(?:http[ _]?)?(\d{3})", re.IGNORECASE)
# How the OpenAI and Anthropic SDKs word an API error: "Error code: 429 - <the API's message>".
_SDK_MESSAGE = re.compile(r"Error code: (\d{3})(?: - (.*))?", re.DOTALL)
# The Anthropic SDK from 2.x: "429 <the API's message> (request_id: req_…, path: …, type: <its type>)".
_ANTHROPIC_MESSAGE = re.compile(
    r"(\d{3}) (.*) \(request_id: [^,()]*, path: [^,()]*, type: ([A-Za-z_]+)\)", re.DOTALL
)
_CLASS = re.compile(r"<class '([^']+)'>")


def _class_name(name: str) -> str:
    """`openai.RateLimitError` or `<class 'openai.RateLimitError'>` as `RateLimitError`."""
    match = _CLASS.fullmatch(name)
    name = match.group(1) if match else name
    return name.rsplit(".", 1)[-1] if "." in name and " " not in name else name


def span_error(span: Span) -> dict[str, Any] | None:
    """A failed call's error as `llmlog.wrap` stores one: {"type", "status", "message"}.
    The status from `http.response.status_code`, an HTTP-like `error.type`, or the SDK's
    "Error code: NNN" message; the message from the exception event, else the span's status
    message; the type from `error.type`, else the exception's class."""
    a = span.attributes
    error_type = a.get("error.type")
    if error_type is None and span.status != "error":
        return None
    exception = next(
        (e.get("attributes") or {} for e in reversed(span.events) if e.get("name") == "exception"), {}
    )
    message = exception.get("exception.message") or span.status_message or ""
    status = int_value(a.get("http.response.status_code"))
    etype = str(error_type) if error_type is not None and error_type != "_OTHER" else None
    if etype is not None and (match := _STATUS_IN_TYPE.fullmatch(etype)):
        status, etype = status or int(match.group(1)), None
    said = _SDK_MESSAGE.fullmatch(str(message).strip())
    if said:
        status = status or int(said.group(1))
        message = said.group(2) or ""
        api = _api_error(message)
        if api is not None:  # the API's error body, as the Anthropic SDK prints it: its type and message
            code = api.get("code") if isinstance(api.get("code"), str) and api.get("code") else None
            etype = str(code or api.get("type") or etype or "") or None
            message = str(api.get("message") or "")
    elif said := _ANTHROPIC_MESSAGE.fullmatch(str(message).strip()):
        status = status or int(said.group(1))
        message, etype = said.group(2), said.group(3)
    if etype is None and exception.get("exception.type"):
        etype = str(exception["exception.type"])
    if etype is None:
        etype = f"http_{status}" if status else "error"
    return {"type": _class_name(etype), "status": status, "message": str(message)}


def _api_error(text: str) -> dict[str, Any] | None:
    """The error object of an API error body printed by an SDK (JSON, or a Python dict's
    repr: literals only, never code)."""
    if not text.startswith("{") or len(text) > 20_000:
        return None
    try:
        value = json.loads(text)
    except RecursionError:  # nested past what json reads: no API's error body
        return None
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return None
    error = value.get("error", value) if isinstance(value, dict) else None
    return error if isinstance(error, dict) else None


def join_errors(inner: dict[str, Any] | None, outer: dict[str, Any] | None) -> dict[str, Any] | None:
    """One call's error as two spans saw it (the SDK's and a wrapper's): what the inner one
    lacks (status, message) from the outer one."""
    if inner is None or outer is None:
        return inner
    return {**inner, **{k: v for k, v in outer.items() if not inner.get(k) and v}}
