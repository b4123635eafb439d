"""One way in: what every record goes through before anything keeps it.

Calls arrive many ways: the SDK wrapper (`llmlog.wrap`), remote mode (on the app's side,
before the spool), the proxy and `llmlog wrap`, the collector's `POST /v1/calls`, OTLP spans
and log events, `llmlog import`, replays and `llmlog copy`. Each hands its records to an
`Intake` built from the same `Settings`, which

- redacts them with the configured rules (`llmlog.redact`): a call's chosen fields, and
  every text of a span or a log event (name, status message, attribute values, bodies);
- seals their text in regulated mode (`llmlog.encryption`): a call's as `Keyring.seal_call`
  does; of a span or an event, every value that holds text, except the few structural
  attributes in `CLEAR_ATTRIBUTES` (figures, numbers and booleans, stay clear as a call's do);
- hashes user ids when a secret is set, and prices calls.

So a store, a spool or a collector is only ever given what has been through this, whichever
way it came. The settings are checked when they are read (`Settings`): a rule that does not
exist is an error there, not a call kept unredacted here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

from llmlog.capture.exchange import Exchange
from llmlog.capture.parse import Decoder, to_call
from llmlog.config import Settings
from llmlog.encryption import KeyProblem, is_sealed
from llmlog.pricing import Pricer
from llmlog.prompts import REGISTRY
from llmlog.record import Call, Span, SpanEvent, json_text
from llmlog.redact import Redactor

Item = Exchange | Call

# The span and event attributes whose text stays clear in regulated mode: what a call keeps
# clear too, as columns, and what the collector must read to know a span for a model call
# (operation, span kind, provider, model), to join it to its session and user, and to show
# why it stopped or failed. Each is a name or an identifier set by the instrumentation, not
# what a user or a model wrote. Every other attribute holding text is sealed: the prompt and
# completion attributes of each convention (gen_ai.input.messages, gen_ai.prompt.0.content,
# llm.input_messages.…, input.value, …), tool definitions and arguments, metadata,
# exception messages and stack traces, and whatever else an instrumentation adds, known or
# not. An allow-list, so that a new convention's content is sealed before anyone has heard
# of it.
CLEAR_ATTRIBUTES = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.system",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.finish_reasons",
        "gen_ai.conversation.id",
        "openinference.span.kind",
        "llm.system",
        "llm.provider",
        "llm.model_name",
        "llm.request.model_name",
        "llm.finish_reason",
        "llm.prompt_template.version",
        "session.id",
        "user.id",  # hashed, when a secret is set, as a call's user id is
        "enduser.id",
        "tag.tags",
        "error.type",
        "exception.type",
        "event.name",
    }
)
USER_ID_ATTRIBUTES = ("user.id", "enduser.id")


def hash_user_id(user_id: str, secret: str) -> str:
    """HMAC-SHA256, hex: joins to analytics that apply the same keyed hash."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def _figure(value: Any) -> bool:
    """A value without text: nothing, a number, a boolean, or a list of those."""
    if value is None or isinstance(value, bool | int | float):
        return True
    return isinstance(value, list) and all(v is None or isinstance(v, bool | int | float) for v in value)


class Intake:
    """What every record goes through, with the settings it was built from. `pricer`:
    prices calls without a cost (None: left unpriced). `stored`: the records were stored
    before (an export, another store), so their user ids are hashed already and their prompt
    versions are what they were."""

    def __init__(
        self,
        settings: Settings,
        pricer: Pricer | None = None,
        decoder: Decoder | None = None,
        *,
        redactor: Redactor | None = None,
        stored: bool = False,
    ) -> None:
        self.settings = settings
        # Built once: a conversation re-sends its earlier messages, which the redactor
        # remembers having searched.
        self.redactor = redactor if redactor is not None else Redactor.from_settings(settings)
        self.keyring = settings.keyring
        self.pricer = pricer
        self.decoder = decoder
        self.stored = stored

    # -------------------------------------------------------------- calls

    def call(self, item: Item) -> Call:
        """A finished exchange (or a call built by hand, or read) as the record to keep:
        parsed, redacted, sealed, its user id hashed, priced."""
        call = to_call(item, self.decoder) if isinstance(item, Exchange) else item
        prompt = call.system_prompt
        if call.prompt_template_version is None and prompt and not self.stored and not is_sealed(prompt):
            call.prompt_template_version = REGISTRY.version_of(prompt)  # as `to_call` does
        self.protect(call)
        secret = self.settings.user_id_secret
        if secret and call.user_id is not None and not self.stored:
            call.user_id = hash_user_id(call.user_id, secret)
        if call.cost_usd is None and self.pricer is not None:
            self.pricer.price(call)
        return call

    def protect(self, call: Call) -> Call:
        """Redact and seal `call` in place: all that is done to its text."""
        if self.redactor:
            self.redactor.call(call)
        if self.keyring is not None:
            # Sealed here, before the spool or the network; the store seals what it is given
            # unsealed too, and leaves this as it is.
            self.keyring.seal_call(call)
        return call

    # -------------------------------------------------------------- spans and events (OTLP)

    def span(self, span: Span) -> Span:
        """A copy of `span` as it may be kept: its text redacted, sealed but for
        `CLEAR_ATTRIBUTES`, its user id hashed. Ids, kind, times and status stay as they are;
        so do its name and service, the trace tree's labels (redacted, not sealed)."""
        out = dataclasses.replace(span)
        attributes = self._user_ids(span.attributes)
        events = span.events
        if self.redactor:
            out.name = self.redactor.value(span.name)
            out.service = self.redactor.value(span.service)
            out.status_message = self.redactor.value(span.status_message)
            attributes = self.redactor.value(attributes)
            events = [
                {
                    **e,
                    "name": self.redactor.value(e.get("name")),
                    "attributes": self.redactor.value(e.get("attributes")),
                }
                for e in events
            ]
        if self.keyring is not None:
            out.status_message = self._seal(out.status_message)
            attributes = self._seal_attributes(attributes)
            events = [{**e, "attributes": self._seal_attributes(e.get("attributes"))} for e in events]
        out.attributes, out.events = attributes, events
        return out

    def event(self, event: SpanEvent) -> SpanEvent:
        """A copy of a log event as it may be kept: its attributes as a span's, its body
        redacted and sealed whole."""
        attributes, body, name = self._user_ids(event.attributes), event.body, event.name
        if self.redactor:
            name = self.redactor.value(name)
            attributes = self.redactor.value(attributes)
            body = self.redactor.value(body)
        if self.keyring is not None:
            attributes = self._seal_attributes(attributes)
            body = self._seal(body)
        return SpanEvent(event.trace_id, event.span_id, name, attributes, body)

    def open_span(self, span: Span) -> Span:
        """A copy of a kept span with what this process's keys seal opened."""
        if self.keyring is None:
            return span
        out = dataclasses.replace(span)
        out.status_message = self._open(span.status_message)
        out.attributes = self._open_attributes(span.attributes)
        out.events = [{**e, "attributes": self._open_attributes(e.get("attributes"))} for e in span.events]
        return out

    def open_event(self, event: SpanEvent) -> SpanEvent:
        """A copy of a kept log event with what this process's keys seal opened: the
        collector reads the content of events that came before their span."""
        if self.keyring is None:
            return event
        attributes = self._open_attributes(event.attributes)
        return SpanEvent(event.trace_id, event.span_id, event.name, attributes, self._open(event.body))

    def _user_ids(self, attributes: dict[str, Any]) -> dict[str, Any]:
        secret = self.settings.user_id_secret
        if (
            not secret
            or self.stored
            or not any(isinstance(attributes.get(k), str) for k in USER_ID_ATTRIBUTES)
        ):
            return attributes
        return {
            k: hash_user_id(v, secret) if k in USER_ID_ATTRIBUTES and isinstance(v, str) else v
            for k, v in attributes.items()
        }

    def _seal(self, value: Any) -> Any:
        """A value with text as one sealed string: the JSON of it, so that opening gives back
        the value as it was (text, list or object)."""
        if _figure(value) or is_sealed(value):
            return value
        assert self.keyring is not None
        return self.keyring.seal(json_text(value))

    def _open(self, value: Any) -> Any:
        if self.keyring is None or not is_sealed(value):
            return value
        try:
            return json.loads(self.keyring.open(value))
        except (KeyProblem, ValueError):  # a key this process lacks: it stays sealed
            return value

    def _seal_attributes(self, attributes: Any) -> Any:
        if not isinstance(attributes, dict):
            return self._seal(attributes)
        return {k: v if k in CLEAR_ATTRIBUTES else self._seal(v) for k, v in attributes.items()}

    def _open_attributes(self, attributes: Any) -> Any:
        if not isinstance(attributes, dict):
            return self._open(attributes)
        return {k: self._open(v) for k, v in attributes.items()}


def prepare(
    item: Item,
    settings: Settings,
    pricer: Pricer | None,
    decoder: Decoder | None = None,
    redactor: Redactor | None = None,
) -> Call:
    """`Intake(settings, pricer, decoder).call(item)`, for one record."""
    return Intake(settings, pricer, decoder, redactor=redactor).call(item)
