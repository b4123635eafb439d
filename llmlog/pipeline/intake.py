"""One way in: what every record goes through before anything keeps it.

Calls arrive many ways: the SDK wrapper (`llmlog.wrap`), remote mode (on the app's side,
before the spool), the proxy and `llmlog wrap`, the collector's `POST /v1/calls`, OTLP spans
and log events, `llmlog import`, replays and `llmlog copy`. Each hands its records to an
`Intake` built from the same `Settings`, which

- redacts them with the configured rules (`llmlog.core.redact`): a call's chosen fields, and
  every text of a span or a log event (name, status message, attribute values, bodies);
- seals their text in regulated mode (`llmlog.core.encryption`): a call's as `Keyring.seal_call`
  does; of a span or an event, every value that holds text, except the few structural
  attributes of `CLEAR_ATTRIBUTES` (figures, numbers and booleans, stay clear as a call's
  do), as `Keyring.seal_span` and `Keyring.seal_event` do (the stores seal with them too);
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
from itertools import compress
from operator import attrgetter, is_not
from typing import Any

import orjson

from llmlog.capture.exchange import Exchange
from llmlog.capture.parse import Decoder, to_call
from llmlog.core.config import Settings, cache_bytes
from llmlog.core.encryption import CLEAR_ATTRIBUTES
from llmlog.core.footprint import json_footprint
from llmlog.core.prompts import REGISTRY
from llmlog.core.record import (
    ATTRIBUTION,
    CALL_COLUMNS,
    JSON_COLUMNS,
    TOKENS,
    Call,
    RecordError,
    Span,
    SpanEvent,
    check_figures,
    drop_bad_figures,
    figure_problem,
)
from llmlog.core.redact import Redactor
from llmlog.core.sealed import is_sealed
from llmlog.pipeline.pricing import Pricer

Item = Exchange | Call

# What a call says of the exchange, beyond its figures: what a later sight of a stored call
# can give it (`Intake.complete`).
CONTENT = ("system_prompt", "messages", "tools", "params", "response", "tool_calls", "stop_reason")

__all__ = ["CLEAR_ATTRIBUTES", "Intake", "Unfit", "hash_user_id", "prepare", "record_line"]

USER_ID_ATTRIBUTES = ("user.id", "enduser.id")


def hash_user_id(user_id: str, secret: str) -> str:
    """HMAC-SHA256, hex: joins to analytics that apply the same keyed hash."""
    # A lone surrogate (text Python read from bad UTF-16) is hashed as its code point.
    return hmac.new(secret.encode(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


class Unfit(RecordError):
    """A record no store and no spool could keep (nested too deeply, not serializable): it
    is refused here, alone, before it joins a batch that it would make fail whole."""

    def __init__(self, call_id: Any, reason: str, kind: str) -> None:
        super().__init__(reason)
        # As text that can be logged: the id may be what was refused (an object of the app's
        # whose `__str__` fails), and a log line that fails to format says nothing, or, with
        # a handler that raises, ends the writer's thread.
        self.call_id = printable(call_id)
        self.kind = kind  # a short name of the reason, counted in the writer's stats


def printable(value: Any) -> str:
    """An id as a log line can carry it: its text (`text_of`) with a lone surrogate written as
    its escape, which a log file in UTF-8 could not hold; else the name of its type."""
    try:
        text = text_of(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def record_line(record: dict[str, Any]) -> bytes:
    """A record as one line of JSON, as the spool keeps it and the collector reads it.

    orjson first (fast); what it refuses that the standard library writes (a lone surrogate,
    an integer over 64 bits, a key that is not text) goes through `json`, every non-ASCII
    character escaped so that the line is valid UTF-8 whatever the text held. Raises what
    the serializers raise (TypeError, ValueError, RecursionError) for what neither writes."""
    try:
        return orjson.dumps(record, default=str) + b"\n"
    except orjson.JSONEncodeError as exc:
        if str(exc) == "Recursion limit reached":
            raise
        return json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"


class _Fit:
    """Messages and tool lists that a call's check serialized: a conversation re-sends its
    earlier turns and its tools, the same objects (the decoders share them), which need not
    be serialized again to know they can be. Each entry holds its value, so that its id()
    stays its own; bounded in entries and in the memory the values take (`json_footprint`, a few
    times the JSON they serialized to: what it holds may outlive the decoders' caches),
    emptied when full."""

    LIMIT = 20_000

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = cache_bytes("checked") if max_bytes is None else max_bytes
        self.values: dict[int, Any] = {}
        self.bytes = 0

    def known(self, value: Any) -> bool:
        return self.values.get(id(value)) is value

    def unknown(self, values: list[Any]) -> list[Any]:
        """Those of `values` not known, in order (a conversation's messages: mostly known,
        so looked up in C loops, not a call each)."""
        return list(compress(values, map(is_not, map(self.values.get, map(id, values)), values)))

    def add(self, values: list[Any], size: int) -> None:
        room = self.max_bytes
        if len(self.values) + len(values) > self.LIMIT or self.bytes + size > room:
            self.values = {}
            self.bytes = 0
        if size <= room:
            self.values.update((id(v), v) for v in values)
            self.bytes += size


_FIT = _Fit()


# The columns the stores keep as text, and the id.
_TEXT_COLUMNS = tuple(c.name for c in CALL_COLUMNS if c.kind in ("text", "id"))
_text_values = attrgetter(*_TEXT_COLUMNS)
_TEXT = frozenset({str, type(None)})


def text_of(value: Any) -> str:
    """What an id (or other text) an app gave as something else is stored as: a number's
    digits, bytes as UTF-8, a subclass of text as its value (an enum's `str` may be
    'Feature.CHAT'), anything else its `str`. TypeError when it has none."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return str(bool(value))
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    text = str(value)
    if type(text) is not str:
        raise TypeError(f"its str() is a {type(text).__name__}")
    return text


def as_text(call: Call) -> None:
    """Give each text column of `call` that holds something other than text (an app's
    number, list or UUID as its session id) its text (`text_of`). The stores would bind a
    number as it is (SQLite not past 64 bits, the collector not at all, a user id not hashed)
    and SQLite refuses anything else as a fault of its own, not of the record, so that the
    call would be retried as if the store were down. `Unfit` when it has no text."""
    if set(map(type, _text_values(call))) <= _TEXT:
        return
    try:
        _give_text(call, _TEXT_COLUMNS)
    except TypeError as exc:
        raise Unfit(call.id, str(exc), "not text") from None


def _give_text(record: Any, names: tuple[str, ...]) -> None:
    """The fields `names` of `record` that hold something other than text, as text
    (`text_of`); TypeError naming the first that has none."""
    for name in names:
        value = getattr(record, name)
        if value is not None and type(value) is not str:
            try:
                setattr(record, name, text_of(value))
            except Exception:
                raise TypeError(f"{name}: not text ({type(value).__name__})") from None


def check(call: Call) -> None:
    """Refuse (`Unfit`) a call that cannot be serialized the way the stores and the spool
    serialize it. The one limit on nesting everywhere is orjson's (about 250 levels, counting
    the record's own object): a deeper call would be stored locally (through the slower
    `json`) but never spooled, and at about 1,000 levels `json` fails too. No model call
    nests anywhere near so deep; one that does is refused, the batch around it is not."""
    # The messages, tools and params an earlier check serialized are left out (`_Fit`): each part
    # of a record serializes or not on its own, at the depth it has in every record. Only
    # what orjson takes whole is remembered; anything else is checked below, whole, as ever.
    fit = _FIT
    record = {name: getattr(call, name) for name in JSON_COLUMNS}
    messages = call.messages
    new: list[Any] = []
    if type(messages) is list:
        record["messages"] = unknown = fit.unknown(messages)
        new += unknown
    for name, whole in (("tools", call.tools), ("params", call.params)):
        if type(whole) is list or type(whole) is dict:
            if fit.known(whole):
                record[name] = None
            else:
                new.append(whole)
    try:
        orjson.dumps(record, default=str)
    except Exception:  # whatever it is, the whole record is checked below
        pass
    else:
        if new:
            # Measured by their own JSON, not the record's: the record is mostly what is not
            # remembered (the response, the system prompt, the params), several times the
            # new messages, and counting its marks was most of what a check cost.
            fit.add(new, json_footprint(orjson.dumps(new, default=str)))
        return
    try:
        record_line({name: getattr(call, name) for name in JSON_COLUMNS})
    except Exception as exc:  # whatever the serializers raise, the record is unfit
        where = next((name for name in sorted(JSON_COLUMNS) if _fails(getattr(call, name))), "a JSON column")
        if isinstance(exc, RecursionError) or str(exc) == "Recursion limit reached":
            reason = f"{where}: nested too deeply (at most about 250 levels)"
            raise Unfit(call.id, reason, "too deep") from None
        raise Unfit(call.id, f"{where}: cannot be serialized as JSON: {exc}", "not serializable") from None


def _fails(value: Any) -> bool:
    try:
        record_line({"v": value})
    except Exception:
        return True
    return False


class Intake:
    """What every record goes through, with the settings it was built from. `pricer`:
    prices calls without a cost (None: left unpriced). `stored`: the records were stored
    before (an export, another store), so their user ids are hashed already and their prompt
    versions are what they were. `repair`: a call with a figure that cannot be stored (a NaN
    cost, a negative token count) is kept with that figure dropped (`drop_bad_figures`)
    rather than refused: for the SDK, whose calls happened and must not be lost for one
    odd number. An exchange (what a provider answered) is always repaired so; every other
    record with such a figure is refused (RecordError, naming the field)."""

    def __init__(
        self,
        settings: Settings,
        pricer: Pricer | None = None,
        decoder: Decoder | None = None,
        *,
        redactor: Redactor | None = None,
        stored: bool = False,
        repair: bool = False,
    ) -> None:
        self.settings = settings
        # Built once: a conversation re-sends its earlier messages, which the redactor
        # remembers having searched.
        self.redactor = redactor if redactor is not None else settings.redactor()
        self.keyring = settings.keyring
        self.pricer = pricer
        self.decoder = decoder
        self.stored = stored
        self.repair = repair

    # -------------------------------------------------------------- calls

    def call(self, item: Item) -> Call:
        """A finished exchange (or a call built by hand, or read) as the record to keep:
        parsed, checked (`check`: `Unfit` if it cannot be kept), redacted, sealed, its user id
        hashed, priced. RecordError for a figure that cannot be stored, unless the call is
        repaired (see the class)."""
        exchange = isinstance(item, Exchange)
        call = to_call(item, self.decoder) if isinstance(item, Exchange) else item
        as_text(call)  # before anything reads its text (the prompt version, the user id's hash)
        # Before pricing, which reads the token counts.
        if exchange or self.repair:
            drop_bad_figures(call)
        else:
            check_figures(call)
        if call.prompt_template_version is None:
            call.prompt_template_version = self._version(call.system_prompt)
        self.protect(call)
        secret = self.settings.user_id_secret
        if secret and call.user_id is not None and not self.stored:
            call.user_id = hash_user_id(call.user_id, secret)
        if call.cost_usd is None:
            self._price(call)
        return call

    def complete(self, stored: Call, later: Call, *, kept: bool = False) -> bool:
        """Give a stored call the content it lacks from `later`, the same call seen later (its
        log events, come after its span; another span of it, exported apart): whether it
        changed. What it gains goes through what `call` does to content: `later`'s figures
        checked (RecordError), its content checked (`Unfit`), redacted (the counts added to
        the stored call's) and sealed, and the prompt version given when the system prompt
        arrives now (from its text as it came, before redaction, as `call` reads it); and the
        notes its metadata lacks and what its error does not say, redacted and sealed too.
        Whom and what it was for (its feature, user and session), each the stored call does
        not say, a user id hashed as `call` hashes it; what the stored call says stays. Its
        figures stay as stored, except its usage when it has no token count: then it takes
        `later`'s (an SDK's span, with the tokens, exported after the framework's span that
        made the call), and its cost, if it had none, is `later`'s or priced from them. The
        caller stores a changed `USAGE` apart (`Store.update_usage`). `kept`: `later` was read
        from a span as kept (`span`), whose user id is hashed already."""
        as_text(later)  # as `call` does, before its system prompt is read for a version
        if self.repair:
            drop_bad_figures(later)
        else:
            check_figures(later)
        gained = {n: getattr(later, n) for n in CONTENT if getattr(stored, n) is None}
        gained = {n: v for n, v in gained.items() if v is not None}
        # Parameters another account of the call names and the stored one does not (the
        # SDK's span names a few; the request as sent, all): added, each kept as stored.
        more_params = (
            {k: v for k, v in later.params.items() if k not in stored.params}
            if "params" not in gained and isinstance(stored.params, dict) and isinstance(later.params, dict)
            else {}
        )
        if more_params:
            gained["params"] = more_params
        version = None
        if stored.prompt_template_version is None and not self.stored:
            version = later.prompt_template_version or self._version(gained.get("system_prompt"))
        changed = _notes(stored, later.metadata, later.error, self.protect)
        changed = self._usage(stored, later) or changed
        changed = self._attribution(stored, later, kept) or changed
        if not gained and version is None:
            return changed
        part = Call(id=stored.id, timestamp=stored.timestamp, **gained)
        self.protect(part)
        kept_params = stored.params
        for name in gained:
            setattr(stored, name, getattr(part, name))
        if more_params and isinstance(kept_params, dict) and isinstance(part.params, dict):
            stored.params = {**kept_params, **part.params}
        if version is not None:
            stored.prompt_template_version = version
        counts = ((part.metadata or {}).get("llmlog") or {}).get("redactions")
        if counts and (stored.metadata is None or isinstance(stored.metadata, dict)):
            meta = dict(stored.metadata or {})
            ours = dict(meta.get("llmlog") or {})
            counted = ours.get("redactions")
            before = counted if isinstance(counted, dict) else {}
            ours["redactions"] = {k: before.get(k, 0) + counts.get(k, 0) for k in sorted({*before, *counts})}
            meta["llmlog"] = ours
            stored.metadata = meta
        return True

    def _usage(self, stored: Call, later: Call) -> bool:
        """`later`'s usage given to `stored`, which has none, and its cost then: whether it
        changed. Checked already (`complete`)."""
        if any(getattr(stored, n) is not None for n in TOKENS):
            return False
        if all(getattr(later, n) is None for n in TOKENS):
            return False
        for name in TOKENS:
            setattr(stored, name, getattr(later, name))
        if stored.cost_usd is None:
            if later.cost_usd is not None:
                stored.cost_usd, stored.rate_card = later.cost_usd, later.rate_card
            else:
                self._price(stored)
        return True

    def _attribution(self, stored: Call, later: Call, kept: bool) -> bool:
        """Whom and what the call was for (`ATTRIBUTION`), each `later` says and `stored` does
        not (an instrumentation's span, with the app's user and session, exported after the
        SDK's span inside it): whether it changed. A user id hashed as `call` hashes it."""
        changed = False
        for name in ATTRIBUTION:
            value = getattr(later, name)
            if getattr(stored, name) is None and value is not None:
                secret = self.settings.user_id_secret
                if name == "user_id" and secret and not self.stored and not kept:
                    value = hash_user_id(value, secret)
                setattr(stored, name, value)
                changed = True
        return changed

    def _price(self, call: Call) -> None:
        if self.pricer is not None:
            self.pricer.price(call)
            if figure_problem("cost_usd", call.cost_usd):  # a price table's absurd rate
                call.cost_usd = call.rate_card = None

    def _version(self, prompt: str | None) -> str | None:
        """The prompt version a system prompt gives a call that names none (as `to_call`
        does): from its text as it came, before redaction; none for records stored before."""
        if prompt and not self.stored and not is_sealed(prompt):
            return REGISTRY.version_of(prompt)
        return None

    def protect(self, call: Call) -> Call:
        """Redact and seal `call` in place: all that is done to its text. Checked first
        (`check`: `Unfit` if it cannot be kept), before anything walks it (the redactor, the
        keyring): a call nested a thousand levels deep would fail there, or later in a batch,
        with every other call in it."""
        check(call)
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
        # Its ids as a call's are (`as_text`), which may name them: the trace of a call and
        # of its span the same text. One with none is not kept (TypeError), as a call is not.
        _give_text(out, ("trace_id", "span_id", "parent_id", "call_id"))
        out.attributes = self._user_ids(span.attributes)
        if self.redactor:
            out.name = self.redactor.value(span.name)
            out.service = self.redactor.value(span.service)
            out.status_message = self.redactor.value(span.status_message)
            out.attributes = self.redactor.value(out.attributes)
            out.events = [
                {
                    **e,
                    "name": self.redactor.value(e.get("name")),
                    "attributes": self.redactor.value(e.get("attributes")),
                }
                for e in span.events
            ]
        return out if self.keyring is None else self.keyring.seal_span(out)

    def event(self, event: SpanEvent) -> SpanEvent:
        """A copy of a log event as it may be kept: its attributes as a span's, its body
        redacted and sealed whole."""
        attributes, body, name = self._user_ids(event.attributes), event.body, event.name
        if self.redactor:
            name = self.redactor.value(name)
            attributes = self.redactor.value(attributes)
            body = self.redactor.value(body)
        out = SpanEvent(event.trace_id, event.span_id, name, attributes, body)
        return out if self.keyring is None else self.keyring.seal_event(out)

    def open_span(self, span: Span) -> Span:
        """A copy of a kept span with what this process's keys seal opened."""
        return span if self.keyring is None else self.keyring.open_span(span)

    def open_event(self, event: SpanEvent) -> SpanEvent:
        """A copy of a kept log event with what this process's keys seal opened: the
        collector reads the content of events that came before their span."""
        return event if self.keyring is None else self.keyring.open_event(event)

    def _user_ids(self, attributes: dict[str, Any]) -> dict[str, Any]:
        secret = self.settings.user_id_secret
        if (
            not secret
            or self.stored
            or not any(isinstance(attributes.get(k), str | int | float) for k in USER_ID_ATTRIBUTES)
        ):
            return attributes
        # A number (an OTLP intValue, a database key) is hashed as its text, as a call's is.
        return {
            k: hash_user_id(text_of(v), secret)
            if k in USER_ID_ATTRIBUTES and isinstance(v, str | int | float)
            else v
            for k, v in attributes.items()
        }


def _notes(stored: Call, metadata: dict[str, Any] | None, error: dict[str, Any] | None, protect: Any) -> bool:
    """Give `stored` the notes its metadata lacks and what its error does not say, from a
    later sight of it, redacted and sealed as any call's (`protect`); whether it changed."""
    if not metadata and not (stored.error is not None and error is not None):
        return False
    part = protect(Call(id=stored.id, timestamp=stored.timestamp, metadata=metadata, error=error))
    changed = False
    said = part.metadata
    if said and isinstance(said.get("llmlog"), dict) and not isinstance((metadata or {}).get("llmlog"), dict):
        said = {k: v for k, v in said.items() if k != "llmlog"}  # the counts of this redaction only
    if said:
        meta = dict(stored.metadata or {})
        for key, value in said.items():
            if key not in meta:
                meta[key] = value
            elif key == "llmlog" and isinstance(value, dict) and isinstance(meta[key], dict):
                meta[key] = {**value, **meta[key]}
        if meta != (stored.metadata or {}):
            stored.metadata = meta
            changed = True
    if stored.error is not None and part.error is not None:
        more = {k: v for k, v in part.error.items() if v not in (None, "") and not stored.error.get(k)}
        if more:
            stored.error = {**stored.error, **more}
            changed = True
    return changed


def prepare(
    item: Item,
    settings: Settings,
    pricer: Pricer | None,
    decoder: Decoder | None = None,
    redactor: Redactor | None = None,
) -> Call:
    """`Intake(settings, pricer, decoder).call(item)`, for one record."""
    return Intake(settings, pricer, decoder, redactor=redactor).call(item)
