"""Sealing what a store holds, as `llmlog keys` does it: every stored record sealed again with the
current key (`rotate`), and the store's list of metadata names whose values are sealed. What
sealing is, and the keys themselves, are `llmlog.core.encryption`'s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llmlog.core.encryption import (
    SENSITIVE_SETTING,
    KeyProblem,
    Keyring,
    Policy,
    clear_parts,
    sealed_key_ids,
    trace_key_ids,
)
from llmlog.core.filters import CallFilter
from llmlog.core.record import Span, SpanEvent
from llmlog.store import Store
from llmlog.store.regulated import Refused


def parse_names(values: Iterable[str]) -> list[str]:
    """Metadata names as typed: separated by commas or given apart, each stripped."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def sensitive_metadata(store: Store) -> list[str]:
    """The store's own list of metadata names whose values are sealed."""
    return sorted(Policy.from_settings({SENSITIVE_SETTING: store.setting(SENSITIVE_SETTING)}).sensitive)


def set_sensitive_metadata(store: Store, names: Iterable[str]) -> list[str]:
    """Make `names` the store's list, for every process writing to it from its next batch on."""
    names = sorted(set(names))
    store.set_setting(SENSITIVE_SETTING, names)
    store.sensitive_metadata = frozenset(names)
    return names


@dataclass
class Rotated:
    calls: int = 0  # calls sealed again with the current key
    contents: int = 0  # pieces of content sealed with an old key (or none) deleted after
    spans: int = 0  # spans sealed again
    span_events: int = 0  # log events kept for their spans, sealed again


def rotate(
    store: Store,
    keyring: Keyring,
    who: str,
    on_call: Callable[[int], None] | None = None,
    settle_s: float | None = None,
) -> Rotated:
    """Seal every stored call's text with the keyring's current key: what an older key of
    the keyring sealed, what is stored clear (a store made before regulated mode), and the
    values of the metadata named sensitive (by the store's list or the keyring's) still
    clear; and so every span and log event received over OTLP. In this order, so that no
    moment of it lets text in clear:

    1. the store is marked sealed-only (`Store.require_sealed`). Every insert (of calls,
       spans, span events) reads that mark in its own transaction, after a lock the marking
       conflicts with: an insert committed before the mark is in the store when the sweep
       below reads it; one committed after it is sealed (a process with a key) or refused
       (one without);
    2. every call with clear text, an old key's text or a named metadata value still clear
       is sealed again with the current key; then every span and span event;
    3. the pieces in their old form are deleted (overwritten, on SQLite) and the files
       rewritten, so that neither clear text nor old ciphertext stays in their free space.

    A store without transactions (ClickHouse) is swept again after `settle_s` (its own
    `rotation_settle_s` unless given): see `ClickHouseStore.insert` for what that covers.
    A span or event sealed with a key the keyring lacks stops the rotation before any
    record is changed, and a call so sealed before anything is lost; the store stays
    sealed-only (the mark never loosens): add that key and run again."""
    out = Rotated()
    store.require_sealed(keyring.current)
    saved = store.keyring
    store.keyring = None  # read the records as stored; what is written is sealed here
    try:
        _check_traces(store, keyring)
        out.calls = _reseal(store, keyring, on_call)
        out.spans, out.span_events = _reseal_traces(store, keyring)
        settle = store.rotation_settle_s if settle_s is None else settle_s
        if settle > 0:
            time.sleep(settle)
            out.calls += _reseal(store, keyring, on_call)
            spans, events = _reseal_traces(store, keyring)
            out.spans, out.span_events = out.spans + spans, out.span_events + events
        out.contents = store.collect_content()
        # The clear text (or old ciphertext) replaced must not stay in the files' free space.
        store.reclaim(thorough=True)
        store.audit(
            who,
            f"rotate to key {keyring.current}: {out.calls} call(s) sealed again,"
            f" {out.spans} span(s) and {out.span_events} span event(s)",
            [],
        )
    finally:
        store.keyring = saved
    return out


def _reseal(store: Store, keyring: Keyring, on_call: Callable[[int], None] | None) -> int:
    """One sweep of `rotate`: how many calls it sealed again."""
    names = keyring.sensitive_metadata | store.sealing_policy().sensitive
    done = 0
    for n, call in enumerate(store.iter_calls(CallFilter()), 1):
        if sealed_key_ids(call) <= {keyring.current} and not clear_parts(call, names):
            continue
        opened = keyring.open_call(call)
        missing = sealed_key_ids(opened) - {""}
        if missing:
            raise KeyProblem(
                f"call {call.id} is sealed with key {sorted(missing)[0]}, which is not in the keyring"
            )
        store.update_content(keyring.seal_call(opened, names))
        done += 1
        if on_call is not None:
            on_call(n)
    return done


def _check_traces(store: Store, keyring: Keyring) -> None:
    """Before `rotate` changes any record: KeyProblem if a span or a span event is sealed
    with a key the keyring lacks (it could not be sealed again, nor the old key retired)."""
    known = set(keyring.ids) | {""}
    for span in store.iter_spans():
        missing = trace_key_ids(span) - known
        if missing:
            raise KeyProblem(
                f"span {span.span_id} of trace {span.trace_id} is sealed with key {sorted(missing)[0]},"
                " which is not in the keyring"
            )
    for _, event in store.iter_span_events():
        missing = trace_key_ids(event) - known
        if missing:
            raise KeyProblem(
                f"a log event of span {event.span_id} of trace {event.trace_id} is sealed with key"
                f" {sorted(missing)[0]}, which is not in the keyring"
            )


_TRACE_BATCH = 500


def _reseal_traces(store: Store, keyring: Keyring) -> tuple[int, int]:
    """One sweep of `rotate` over the spans and the span events: how many of each it sealed
    again. Those already sealed with the current key alone are left as they are."""
    current = {keyring.current}
    spans: list[Span] = []
    events: list[tuple[Any, SpanEvent]] = []
    done_spans = done_events = 0

    def written(refused: Sequence[Refused]) -> None:
        if refused:  # cannot be: each was sealed just now; but never lose one silently
            raise ValueError(f"rotation could not write a span sealed again: {refused[0].reason}")

    for span in store.iter_spans():
        if trace_key_ids(span) <= current:
            continue
        spans.append(keyring.reseal_span(span))
        if len(spans) >= _TRACE_BATCH:
            written(store.update_spans(spans))
            done_spans, spans = done_spans + len(spans), []
    if spans:
        written(store.update_spans(spans))
        done_spans += len(spans)
    for key, event in store.iter_span_events():
        if trace_key_ids(event) <= current:
            continue
        events.append((key, keyring.reseal_event(event)))
        if len(events) >= _TRACE_BATCH:
            written(store.replace_span_events(events))
            done_events, events = done_events + len(events), []
    if events:
        written(store.replace_span_events(events))
        done_events += len(events)
    return done_spans, done_events
