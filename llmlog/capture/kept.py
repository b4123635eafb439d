"""What a span that became a call keeps: only what the call does not hold. Its content and
the attributes its other columns hold are dropped before the span is redacted, sealed and
stored; what says what the span is stays, so the trace view is whole."""

from __future__ import annotations

import dataclasses

from llmlog.capture.attributes import LONG_KEY
from llmlog.core.record import Span

# The attributes that carry a model call's content, as the instrumentations send it: the
# request and response whole (OpenInference `input.value` / `output.value`, Traceloop's
# `traceloop.entity.*`), the messages, the system instructions, the tool definitions and the
# parameters, under each convention's names. Once the span is a call, the call holds them.
CONTENT_ATTRIBUTES = frozenset(
    {
        # OpenInference
        "input.value",
        "input.mime_type",
        "output.value",
        "output.mime_type",
        "llm.invocation_parameters",
        # GenAI semantic conventions, current and deprecated
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.definitions",
        "gen_ai.prompt",
        "gen_ai.completion",
        # Traceloop OpenLLMetry
        "traceloop.entity.input",
        "traceloop.entity.output",
    }
)
CONTENT_PREFIXES = (
    "llm.input_messages.",  # OpenInference, flattened
    "llm.output_messages.",
    "llm.tools.",
    "gen_ai.prompt.",  # deprecated GenAI conventions (Traceloop), flattened
    "gen_ai.completion.",
    "llm.request.functions.",  # Traceloop's tool definitions
)
# The attributes a call's other columns hold: model, usage, finish reason, request
# parameters, session, user, prompt version, metadata and tags. The provider and the
# operation stay (they say what kind of span this is), as do ids, http and error attributes.
CALL_COLUMN_ATTRIBUTES = frozenset(
    {
        "gen_ai.response.model",
        "gen_ai.response.finish_reasons",
        "gen_ai.conversation.id",
        "llm.model_name",
        "llm.request.model_name",
        "llm.response.model_name",
        "llm.finish_reason",
        "llm.prompt_template.version",
        "anthropic.message.stop_reason",
        "session.id",
        "user.id",
        "enduser.id",
        "metadata",
        "tag.tags",
    }
)
CALL_COLUMN_PREFIXES = ("gen_ai.request.", "gen_ai.usage.", "llm.token_count.")
# Span events that carry content (the GenAI conventions' events, when sent on the span).
CONTENT_EVENTS = frozenset(
    {
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.client.inference.operation.details",
    }
)


def is_content_attribute(key: str) -> bool:
    return key in CONTENT_ATTRIBUTES or key.startswith(CONTENT_PREFIXES)


def is_call_attribute(key: str) -> bool:
    """Whether the call a span became holds what this attribute says: its content, or one
    of its other columns."""
    return is_content_attribute(key) or key in CALL_COLUMN_ATTRIBUTES or key.startswith(CALL_COLUMN_PREFIXES)


_CALL_KEYS: dict[str, bool] = {}  # is_call_attribute, remembered for the keys spans keep sending


def without_content(span: Span) -> Span:
    """`span` without what its call holds (`is_call_attribute`, `CONTENT_EVENTS`), when it
    became a call; any other span as it is. What stays is what the call does not hold and
    what says what the span is: ids, names, status, provider and operation, response and
    request ids, timings, http and error attributes, and events such as exceptions and the
    first token. The call's page shows the rest, from the call."""
    if span.call_id is None:
        return span
    said = _CALL_KEYS
    attributes = {}
    for k, v in span.attributes.items():
        held = said.get(k)
        if held is None:
            held = is_call_attribute(k)
            if len(said) < 50_000 and len(k) <= LONG_KEY:  # the keys instrumentations keep sending,
                said[k] = held  # not what a client makes up: bounded in bytes, not only in entries
        if not held:
            attributes[k] = v
    events = [e for e in span.events if e.get("name") not in CONTENT_EVENTS]
    if len(attributes) == len(span.attributes) and len(events) == len(span.events):
        return span
    out = dataclasses.replace(span)
    out.attributes, out.events = attributes, events
    return out
