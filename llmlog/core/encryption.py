"""Regulated mode: the text of every call encrypted at rest, the figures left clear.

Where the window is set by regulation (years, not days) the text cannot be deleted, so it
is sealed before it is stored: the system prompt, each message, the tool list, the request's
other parameters, the response, each tool call, an error's message and the metadata values
named sensitive. Model, feature,
tokens, cost, latency, times, error type and the number of tool calls stay clear, so the
rollups, the dashboard and retention work without the key.

A sealed value is a string, `llmlog-enc:v1:KEY_ID:DATA`, DATA being the URL-safe base64 of
a 12-byte nonce and the AES-256-GCM ciphertext and tag. The nonce is derived from the text
(an HMAC of it under a key of its own), so the same text sealed twice is the same string:
content stored once stays stored once, and what that shows — that two calls sent the same
message — is all it shows. The key id is bound to the ciphertext as associated data.

Keys come from `LLMLOG_KEY` (`ID:BASE64`, several separated by commas) or a file named by
`LLMLOG_KEY_FILE` (one `ID:BASE64` per line); the first is the one that seals, the others
still open what they sealed until `llmlog keys rotate` (`llmlog.operations.sealing`) has
sealed it again with the first.

Spans and log events received over OTLP are sealed the same way (`Keyring.seal_span`,
`Keyring.seal_event`): every value that holds text, but for the few structural attributes
of `CLEAR_ATTRIBUTES`.

The store enforces it, not each process: once `llmlog keys rotate` has run, the store's
`encryption` setting says sealed text only, and every insert (of calls, spans and span
events) reads the store's settings in its own transaction (`Policy`), so a process opened
before the rotation, or without a key, cannot store clear text. The metadata names whose
values are sealed are the store's setting too (`llmlog keys sensitive-metadata`), applied
by every writer beside the process's own LLMLOG_SENSITIVE_METADATA.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from sys import getsizeof
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from llmlog.core.footprint import json_footprint
from llmlog.core.record import Call, Span, SpanEvent, json_text
from llmlog.core.sealed import PREFIX, SEALED_FORM, is_sealed, key_id_of, well_sealed

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
# What an entry of a keyring's memo takes beyond its value and sealed text: the table's slot,
# its key, the tuple and the size's integer.
_MEMO_ENTRY = 200


class KeyProblem(ValueError):
    """A key that cannot be used: malformed, the wrong length, or missing for a value."""


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


def _figure(value: Any) -> bool:
    """A value without text: nothing, a number, a boolean, or a list of those."""
    if value is None or isinstance(value, bool | int | float):
        return True
    return isinstance(value, list) and all(v is None or isinstance(v, bool | int | float) for v in value)


# What is done to each value of a span or an event that regulated mode seals: given the
# value and whether it may stay clear (an attribute of `CLEAR_ATTRIBUTES`), the value to keep.
_Each = Callable[[Any, bool], Any]


def _attributes(attributes: Any, each: _Each) -> Any:
    if not isinstance(attributes, dict):  # not an object as OTLP makes them: sealed whole
        return each(attributes, False)
    return {k: each(v, k in CLEAR_ATTRIBUTES) for k, v in attributes.items()}


def _each_of_span(span: Span, each: _Each) -> Span:
    """A copy of `span` with `each` applied to every value regulated mode seals: its status
    message, its attributes and its events' attributes. Ids, kind, times and status stay;
    so do its name and service, the trace tree's labels."""
    out = dataclasses.replace(span)
    out.status_message = each(span.status_message, False)
    out.attributes = _attributes(span.attributes, each)
    out.events = [{**e, "attributes": _attributes(e.get("attributes"), each)} for e in span.events]
    return out


def _each_of_event(event: SpanEvent, each: _Each) -> SpanEvent:
    """A copy of a log event with `each` applied to its attributes, as a span's, and to its
    body, sealed whole."""
    attributes = _attributes(event.attributes, each)
    return SpanEvent(event.trace_id, event.span_id, event.name, attributes, each(event.body, False))


def _values(record: Span | SpanEvent) -> list[tuple[str, Any, bool]]:
    """Where each value regulated mode seals is in a span or an event, the value, and
    whether it may stay clear."""
    found: list[tuple[str, Any, bool]] = []

    def at(where: str) -> _Each:
        def each(value: Any, clear_ok: bool) -> Any:
            found.append((where, value, clear_ok))
            return value

        return each

    if isinstance(record, Span):
        at("status message")(record.status_message, False)
        _attributes(record.attributes, at("attributes"))
        for e in record.events:
            _attributes(e.get("attributes"), at("event attributes"))
    else:
        _attributes(record.attributes, at("attributes"))
        at("body")(record.body, False)
    return found


def _clear(value: Any, clear_ok: bool) -> bool:
    return not clear_ok and not _figure(value) and not well_sealed(value)


def trace_clear_parts(record: Span | SpanEvent) -> list[str]:
    """What of a span (or a log event) is stored clear that regulated mode seals; empty
    when it may go in as it is. What a store without the key can check."""
    return list(dict.fromkeys(where for where, value, ok in _values(record) if _clear(value, ok)))


def trace_key_ids(record: Span | SpanEvent) -> set[str]:
    """The ids of the keys that sealed parts of a span or an event ("" for text stored clear
    that regulated mode seals); a sealed value of a clear attribute counts too."""
    found: set[str] = set()
    for _, value, ok in _values(record):
        if well_sealed(value):
            found.add(key_id_of(value) or "")
        elif _clear(value, ok):
            found.add("")
    return found


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM
    nonce_key: bytes

    @classmethod
    def derive(cls, key_id: str, secret: bytes) -> _Key:
        # Two keys from one secret: one encrypts, one derives nonces; neither reveals the other.
        okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"llmlog regulated mode v1").derive(
            secret
        )
        return cls(key_id, AESGCM(okm[:32]), okm[32:])


class Keyring:
    """The keys a process has: the first seals, every one opens what it sealed.
    `memo_bytes`: what the memo of what it sealed may hold (the settings give it the share of
    LLMLOG_CACHE_MB they set aside for it); 0 remembers nothing."""

    def __init__(
        self, keys: Iterable[tuple[str, bytes]], sensitive_metadata: Iterable[str] = (), memo_bytes: int = 0
    ) -> None:
        self._keys: dict[str, _Key] = {}
        for key_id, secret in keys:
            if not _KEY_ID.match(key_id):
                raise KeyProblem(f"key id {key_id!r}: letters, digits, '.', '_' and '-' only, 64 at most")
            if len(secret) != 32:
                raise KeyProblem(f"key {key_id}: AES-256 takes 32 bytes, not {len(secret)}")
            if key_id in self._keys:
                raise KeyProblem(f"key id {key_id} given twice")
            self._keys[key_id] = _Key.derive(key_id, secret)
        if not self._keys:
            raise KeyProblem("no key")
        self.current = next(iter(self._keys))
        self.sensitive_metadata = frozenset(sensitive_metadata)
        # What was sealed last, by the identity of the value: the writer's decoder hands every
        # call that re-sends a message the same object, which is then sealed once (and is the
        # same string object, which the store's content cache knows by identity). Each entry
        # holds its value and what sealing made: bounded by what they take in memory.
        self._memo: OrderedDict[int, tuple[Any, str, int]] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._memo_bytes = 0
        self._memo_max = memo_bytes

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    @classmethod
    def parse(cls, text: str, sensitive_metadata: Iterable[str] = (), memo_bytes: int = 0) -> Keyring:
        """`ID:BASE64` entries, separated by commas or lines; `#` starts a comment."""
        keys = []
        for n, raw in enumerate(re.split(r"[,\n]", text), 1):
            entry = raw.split("#", 1)[0].strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise KeyProblem(f"key entry {n}: write ID:BASE64")
            try:
                secret = base64.b64decode(encoded.strip(), validate=True)
            except ValueError:
                raise KeyProblem(f"key {key_id.strip()}: not base64") from None
            keys.append((key_id.strip(), secret))
        return cls(keys, sensitive_metadata, memo_bytes)

    @classmethod
    def from_environment(
        cls,
        key: str | None,
        key_file: str | None,
        sensitive_metadata: Iterable[str] = (),
        memo_bytes: int = 0,
    ) -> Keyring | None:
        if key:
            return cls.parse(key, sensitive_metadata, memo_bytes)
        if key_file:
            return cls.parse(Path(key_file).read_text(encoding="utf-8"), sensitive_metadata, memo_bytes)
        return None

    # -------------------------------------------------------------- one value

    def seal(self, text: str) -> str:
        key = self._keys[self.current]
        data = text.encode("utf-8", "surrogatepass")
        nonce = hmac.new(key.nonce_key, data, hashlib.sha256).digest()[:12]
        sealed = key.aead.encrypt(nonce, data, key.id.encode())
        return f"{PREFIX}{key.id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str) -> str:
        m = SEALED_FORM.match(value)
        if not m:
            raise KeyProblem("not a sealed value")
        key = self._keys.get(m.group(1))
        if key is None:
            raise KeyProblem(f"no key {m.group(1)} here to open it with")
        try:
            raw = base64.urlsafe_b64decode(m.group(2))
        except ValueError:  # binascii.Error: damaged, not a value this keyring sealed
            raise KeyProblem("damaged: not valid base64") from None
        try:
            return key.aead.decrypt(raw[:12], raw[12:], key.id.encode()).decode("utf-8", "surrogatepass")
        except InvalidTag:
            raise KeyProblem(f"key {key.id} does not open it: altered, or another key of that id") from None

    def _seal_json(self, value: Any) -> str:
        with self._memo_lock:
            hit = self._memo.get(id(value))
            if hit is not None and hit[0] is value:
                self._memo.move_to_end(id(value))
                return hit[1]
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        sealed = self.seal(text)
        size = json_footprint(text) + getsizeof(sealed) + _MEMO_ENTRY
        if size > self._memo_max:
            return sealed
        with self._memo_lock:
            old = self._memo.pop(id(value), None)
            if old is not None:
                self._memo_bytes -= old[2]
            self._memo[id(value)] = (value, sealed, size)  # holds the value: its id() is not reused
            self._memo_bytes += size
            while len(self._memo) > 20_000 or self._memo_bytes > self._memo_max:
                self._memo_bytes -= self._memo.popitem(last=False)[1][2]
        return sealed

    def _open_json(self, value: Any) -> Any:
        if not is_sealed(value):
            return value
        try:
            return json.loads(self.open(value))
        except KeyProblem:
            return value  # a key this process lacks: the value stays sealed, as without any key

    def _open_text(self, value: Any) -> Any:
        if not is_sealed(value):
            return value
        try:
            return self.open(value)
        except KeyProblem:
            return value

    # -------------------------------------------------------------- a whole call

    def seal_call(self, call: Call, sensitive_metadata: Iterable[str] = ()) -> Call:
        """Seal the text of `call` in place (what is sealed already is left as it is), and
        the values of the metadata named sensitive here or in `sensitive_metadata` (the
        store's own list)."""
        sensitive = self.sensitive_metadata.union(sensitive_metadata)

        def text(value: Any) -> Any:
            return value if value is None or well_sealed(value) else self.seal(value)

        def structure(value: Any) -> Any:
            return value if value is None or well_sealed(value) else self._seal_json(value)

        call.system_prompt = text(call.system_prompt)
        if call.messages is not None:
            call.messages = [structure(m) for m in call.messages]
        call.tools = structure(call.tools)
        # The request's other parameters: they can carry text too (system blocks, stop strings).
        call.params = structure(call.params)
        call.response = structure(call.response)
        if call.tool_calls is not None:
            # One sealed string per tool call: how many there were stays countable.
            call.tool_calls = [structure(t) for t in call.tool_calls]
        if isinstance(call.error, dict) and call.error.get("message") is not None:
            call.error = {**call.error, "message": structure(call.error["message"])}
        if isinstance(call.metadata, dict) and sensitive:
            call.metadata = {
                k: structure(v) if k in sensitive and v is not None else v for k, v in call.metadata.items()
            }
        return call

    # -------------------------------------------------------------- spans and events (OTLP)

    def _seal_value(self, value: Any, clear_ok: bool) -> Any:
        """A value with text as one sealed string: the JSON of it, so that opening gives back
        the value as it was (text, list or object). Sealed already: left as it is."""
        return self.seal(json_text(value)) if _clear(value, clear_ok) else value

    def _open_value(self, value: Any, clear_ok: bool = False) -> Any:
        if not is_sealed(value):
            return value
        try:
            return json.loads(self.open(value))
        except (KeyProblem, ValueError):  # a key this keyring lacks: it stays sealed
            return value

    def _reseal_value(self, value: Any, clear_ok: bool) -> Any:
        """Sealed with another key: the same text sealed with the current one (KeyProblem
        when this keyring lacks that key). Clear: sealed, unless it may stay clear."""
        if well_sealed(value):
            return value if key_id_of(value) == self.current else self.seal(self.open(value))
        return self._seal_value(value, clear_ok)

    def seal_span(self, span: Span) -> Span:
        """A copy of `span` with every value that holds text sealed, but for the attributes
        of `CLEAR_ATTRIBUTES`; what is sealed already is left as it is."""
        return _each_of_span(span, self._seal_value)

    def seal_event(self, event: SpanEvent) -> SpanEvent:
        """A copy of a log event sealed as a span is, its body whole."""
        return _each_of_event(event, self._seal_value)

    def open_span(self, span: Span) -> Span:
        """A copy of `span` with what this keyring can open opened."""
        return _each_of_span(span, self._open_value)

    def open_event(self, event: SpanEvent) -> SpanEvent:
        return _each_of_event(event, self._open_value)

    def reseal_span(self, span: Span) -> Span:
        """A copy of `span` sealed with the current key only (`llmlog keys rotate`)."""
        return _each_of_span(span, self._reseal_value)

    def reseal_event(self, event: SpanEvent) -> SpanEvent:
        return _each_of_event(event, self._reseal_value)

    def open_call(self, call: Call) -> Call:
        """A copy of `call` with what this keyring can open opened."""
        out = copy.copy(call)
        out.system_prompt = self._open_text(call.system_prompt)
        if call.messages is not None:
            out.messages = [self._open_json(m) for m in call.messages]
        out.tools = self._open_json(call.tools)
        out.params = self._open_json(call.params)
        out.response = self._open_json(call.response)
        if call.tool_calls is not None:
            out.tool_calls = [self._open_json(t) for t in call.tool_calls]
        if isinstance(call.error, dict) and call.error.get("message") is not None:
            out.error = {**call.error, "message": self._open_json(call.error["message"])}
        if isinstance(call.metadata, Mapping):
            out.metadata = {k: self._open_json(v) for k, v in call.metadata.items()}
        return out


def sealed_key_ids(call: Call) -> set[str]:
    """The ids of the keys that sealed parts of `call` ("" for text stored clear)."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            found.add(key_id_of(value) or "" if is_sealed(value) else "")
        elif isinstance(value, list):
            for v in value:
                visit(v)
        else:
            found.add("")  # a structure stored clear

    visit(call.system_prompt)
    visit(call.messages)
    visit(call.tools)
    visit(call.params)
    visit(call.response)
    visit(call.tool_calls)
    if isinstance(call.error, dict) and call.error.get("message") is not None:
        visit(call.error["message"])
    if isinstance(call.metadata, Mapping):  # sealed values only: which are sensitive is the keyring's
        for value in call.metadata.values():
            if is_sealed(value):
                visit(value)
    return found


def _clear_text(call: Call) -> bool:
    """Whether any of the text `seal_call` seals is stored clear: `"" in sealed_key_ids(call)`,
    without reading the key ids (every write checks it, inside the write lock)."""

    def clear(value: Any) -> bool:
        if value is None:
            return False
        if isinstance(value, list):
            return any(clear(v) for v in value)
        return not well_sealed(value)

    message = call.error.get("message") if isinstance(call.error, dict) else None
    return any(
        clear(v)
        for v in (
            call.system_prompt,
            call.messages,
            call.tools,
            call.params,
            call.response,
            call.tool_calls,
            message,
        )
    )


def clear_parts(call: Call, sensitive_metadata: Collection[str] = (), *, text: bool = True) -> list[str]:
    """What of `call` is stored clear that regulated mode seals: its text (unless `text` is
    False), and the values of the metadata named in `sensitive_metadata`. Empty when the
    call may go in as it is."""
    found = ["text"] if text and _clear_text(call) else []
    if isinstance(call.metadata, Mapping) and sensitive_metadata:
        found += [
            f"metadata {k!r}"
            for k, v in call.metadata.items()
            if k in sensitive_metadata and v is not None and not well_sealed(v)
        ]
    return found


# The store settings regulated mode keeps: whether text must come sealed (and the key
# `llmlog keys rotate` sealed it with), and the metadata names whose values are sealed too.
ENCRYPTION_SETTING = "encryption"
SENSITIVE_SETTING = "sensitive_metadata"
POLICY_SETTINGS = (ENCRYPTION_SETTING, SENSITIVE_SETTING)


@dataclass(frozen=True)
class Policy:
    """What a store's settings ask of every call written to it, as read in the writing
    transaction (never as cached at open: another process may have rotated since)."""

    required: bool = False  # sealed text only
    sensitive: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Policy:
        encryption, names = settings.get(ENCRYPTION_SETTING), settings.get(SENSITIVE_SETTING)
        return cls(
            isinstance(encryption, dict) and bool(encryption.get("required")),
            frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) else frozenset(),
        )


def new_key() -> str:
    """A fresh key, as `ID:BASE64`: the id is the date and a random suffix."""
    from datetime import UTC, datetime

    key_id = f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"
