"""What every store does for regulated mode (`llmlog.core.encryption`) when it writes.

The store enforces it, not each process's configuration: every insert (and every content
update) reads the store's settings in its own writing transaction and obeys them as they
are then, however long ago the store was opened and whatever the process was told. A call
with clear text is sealed by a process that has a key and refused, as a data error, by one
that has not, once the store takes sealed text only; the metadata names whose values are
sealed are the store's own list, applied by every writer beside its own. Spans and span
events (OTLP) are held to the same, one record at a time: one with clear text is sealed
with a key, and without one refused alone (`Refused`), the rest of its batch stored.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from llmlog.core.encryption import (
    ENCRYPTION_SETTING,
    POLICY_SETTINGS,
    Keyring,
    Policy,
    clear_parts,
    trace_clear_parts,
)
from llmlog.core.record import Call, Span, SpanEvent

Record = TypeVar("Record", Span, SpanEvent)


class Refused(NamedTuple):
    """A span or span event the store would not keep: its position in the batch, and why."""

    # The name hides tuple.index, which nothing calls on a Refused; callers read `.index`.
    index: int  # type: ignore[assignment]
    reason: str


@dataclass
class Admitted(Generic[Record]):
    """Of a batch of spans or span events: what may be stored as it now is, with each one's
    position in the batch, and what was refused."""

    records: list[Record] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def refusal(what: str, parts: Sequence[str]) -> str:
    return (
        f"{what}: this store keeps text encrypted (regulated mode), and no key is set here to"
        f" encrypt its {' and '.join(parts)} with (LLMLOG_KEY or LLMLOG_KEY_FILE)"
    )


class Regulated:
    """Mixed into `Store`: the sealing and the checks of every write."""

    keyring: Keyring | None
    vectors: bool

    # Cached from the settings on open and by every write, for display (`llmlog keys
    # status`, the admin page) and to seal before the write lock: text must come sealed
    # (`llmlog keys rotate`), and the metadata whose values are sealed too. A write is never
    # let through on these: it reads the settings again in its own transaction (`_enforce`).
    sealed_only: bool = False
    sensitive_metadata: frozenset[str] = frozenset()
    # How long `llmlog keys rotate` waits before sweeping the store a second time: for a
    # store whose inserts cannot be held off by a lock (ClickHouse).
    rotation_settle_s: float = 0.0
    # What a writing transaction reads of the store's settings, in one statement: the
    # content epoch (whether cached content ids still hold), vectors, and regulated mode.
    WRITE_SETTINGS = ("content_epoch", "vectors", *POLICY_SETTINGS)

    def setting(self, key: str) -> Any:
        raise NotImplementedError

    def set_setting(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def _sealed(self, calls: Sequence[Call]) -> Sequence[Call]:
        """Calls as they may be written, before the writing transaction: with keys, their
        text sealed (copies: the caller's calls stay as they were; what came sealed is left
        so), and the metadata named sensitive here or by the store as last read. Sealing is
        the costly part, so it is done outside the write lock; `_enforce`, in it, has the
        last word."""
        if self.keyring is None:
            return calls
        return [self.keyring.seal_call(copy.copy(c), self.sensitive_metadata) for c in calls]

    def _enforce(self, calls: Sequence[Call], settings: Mapping[str, Any]) -> Sequence[Call]:
        """In the writing transaction, given the store's settings as read in it (never as
        cached: another process may have rotated since this one opened the store): the
        calls as they may be stored. With keys, whatever is still clear that the store's
        settings now name is sealed (copies); without, a call with clear text (or a clear
        value of a metadata name the store lists) is refused, as a data error, when the
        store keeps text sealed only. Returns `calls` itself when nothing changed."""
        policy = self._obey(settings)
        if self.keyring is not None:
            if not any(self._clear(c, policy) for c in calls):
                return calls
            names = policy.sensitive | self.keyring.sensitive_metadata
            return [
                self.keyring.seal_call(copy.copy(c), names) if self._clear(c, policy) else c for c in calls
            ]
        for c in calls:
            clear = self._clear(c, policy)
            if clear:
                raise ValueError(refusal(f"call {c.id}", clear))
        return calls

    def _obey(self, settings: Mapping[str, Any]) -> Policy:
        """What the store's settings, as read in a writing transaction, ask of it (cached
        for display, and to seal before the next write lock)."""
        policy = Policy.from_settings(settings)
        self.sealed_only, self.sensitive_metadata = policy.required, policy.sensitive
        if "vectors" in settings:  # turned on by another process: embedded from this batch on
            asked = settings["vectors"]
            self.vectors = isinstance(asked, dict) and bool(asked.get("enabled"))
        return policy

    # -------------------------------------------------------------- spans and span events

    def _sealed_spans(self, spans: Sequence[Span]) -> Sequence[Span]:
        """As `_sealed` for calls: with keys, copies of `spans` sealed (`Keyring.seal_span`,
        the sealing every way in uses), before the writing transaction."""
        return spans if self.keyring is None else [self.keyring.seal_span(s) for s in spans]

    def _sealed_events(self, events: Sequence[SpanEvent]) -> Sequence[SpanEvent]:
        return events if self.keyring is None else [self.keyring.seal_event(e) for e in events]

    def _enforce_spans(self, spans: Sequence[Span], settings: Mapping[str, Any]) -> Admitted[Span]:
        """As `_enforce` for calls, in the writing transaction, given the settings read in
        it: with keys, whatever is still clear is sealed; without, a span with clear text is
        refused, alone, when the store keeps text sealed only."""
        seal = self.keyring.seal_span if self.keyring is not None else None
        return self._admit(spans, settings, seal, lambda s: f"span {s.span_id} of trace {s.trace_id}")

    def _enforce_events(
        self, events: Sequence[SpanEvent], settings: Mapping[str, Any]
    ) -> Admitted[SpanEvent]:
        seal = self.keyring.seal_event if self.keyring is not None else None
        return self._admit(events, settings, seal, lambda e: f"log event {e.name!r} of span {e.span_id}")

    def _admit(
        self,
        records: Sequence[Record],
        settings: Mapping[str, Any],
        seal: Callable[[Record], Record] | None,
        name: Callable[[Record], str],
    ) -> Admitted[Record]:
        policy = self._obey(settings)
        out: Admitted[Record] = Admitted()
        for i, record in enumerate(records):
            # Without keys in a store that takes clear text nothing need be looked at.
            clear = [] if seal is None and not policy.required else trace_clear_parts(record)
            if not clear:
                out.records.append(record)
            elif seal is not None:
                out.records.append(seal(record))
            else:
                out.refused.append(Refused(i, refusal(name(record), clear)))
                continue
            out.positions.append(i)
        return out

    def _clear(self, call: Call, policy: Policy) -> list[str]:
        """What of `call` must not be stored as it is, under `policy`, by this process: with
        keys, whatever they would seal; without, the clear parts a sealed-only store refuses."""
        if self.keyring is not None:
            # Its text was sealed by `_sealed`, just before: only the store's list of
            # metadata names can have grown since.
            names = policy.sensitive | self.keyring.sensitive_metadata
            return clear_parts(call, names, text=False)
        return clear_parts(call, policy.sensitive) if policy.required else []

    def sealing_policy(self) -> Policy:
        """What regulated mode asks of calls written here, read now (and cached)."""
        policy = Policy.from_settings({key: self.setting(key) for key in POLICY_SETTINGS})
        self.sealed_only, self.sensitive_metadata = policy.required, policy.sensitive
        return policy

    def require_sealed(self, key_id: str) -> None:
        """From now on, text sealed only: the first step of `llmlog keys rotate`. Every
        write reads the mark in its own transaction; where that transaction holds the write
        lock (SQLite) nothing more is needed, and a store with row locks (PostgreSQL) makes
        the marking wait for the inserts under way."""
        self.set_setting(ENCRYPTION_SETTING, {"required": True, "key": key_id})
        self.sealed_only = True
