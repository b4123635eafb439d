"""The request and response bodies a span carries as they were sent (OpenInference's
`input.value` and `output.value`, JSON), read as `llmlog.wrap` reads an exchange's bodies
(`providers.split_request`, `providers.read_response`), so a call told by spans has the columns the
SDK path gives it: messages, system prompt, tools and params exactly as sent, in the shape
of the API called (Messages, Chat Completions or Responses), and the tool calls, stop
reason and usage its answer says.

The flattened attributes (`llm.input_messages.*`, …) say the same less exactly: they do not
tell a text content from a list of blocks, nor the Responses API from Chat, and name
parameters as the instrumentation chose. They are read only where no body came.
"""

from __future__ import annotations

import threading
from typing import Any

from llmlog.capture.parse import Decoder
from llmlog.providers import api_named, api_taking

# The conventions' name of a provider that serves another's APIs under its own name.
_SERVES = {"azure.ai.openai": "openai"}

# A conversation's spans re-send its earlier messages, its system prompt and its tools: each
# decoded once and shared, as the SDK path's writer shares what it decodes (the stores
# recognize shared values by identity). The receiver reads spans on several threads.
_DECODER = Decoder()
_LOCK = threading.Lock()


# The SDK methods' request options, among the arguments an instrumentation records: not sent
# in the body, but for `extra_body`, which the SDK merges into it.
_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


def _as_sent(arguments: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in arguments.items() if k not in _OPTIONS}
    extra = arguments.get("extra_body")
    return {**body, **extra} if isinstance(extra, dict) else body


def _decoded(text: str) -> Any:
    with _LOCK:
        value = _DECODER.decode(text)
        _DECODER.release()  # nothing of the span's body held once it is read
        return value


def sent_request(a: dict[str, Any], provider: str | None) -> tuple[str, dict[str, Any]] | None:
    """The API and request body a span carries as sent, or None: when it carries none, or
    one that is not a request of a known API of its provider."""
    if a.get("input.mime_type") != "application/json" or not isinstance(a.get("input.value"), str):
        return None
    body = _decoded(a["input.value"])
    if not isinstance(body, dict):
        return None
    if _OPTIONS.intersection(body):  # what the instrumentation saw: the SDK method's arguments
        body = _as_sent(body)
    api = api_taking(_SERVES.get(provider or "", provider), body)
    return (api.name, body) if api else None


def sent_response(a: dict[str, Any], api: str) -> dict[str, Any] | None:
    """The response body a span carries as sent (the non-streamed shape: an instrumentation
    puts a stream's together), when it is one of `api`'s."""
    if a.get("output.mime_type") != "application/json" or not isinstance(a.get("output.value"), str):
        return None
    body = _decoded(a["output.value"])
    if not isinstance(body, dict):
        return None
    return body if api_named(api).sent(body) else None


def is_whole(api: str, body: dict[str, Any]) -> bool:
    """Whether a response body is the API's whole answer (its id and usage with it), not
    the part of a stream an instrumentation put together (text and tool calls only)."""
    return api_named(api).whole(body)
