"""OTLP spans and log events into the store: the calls their model-call spans describe,
each through the one pipeline (`llmlog.intake`), and every span kept in `spans` with its
trace and parent ids, so a trace (retrieve → llm → tool → llm) can be shown as a tree.

One call seen twice — a framework's LLM span wrapping the SDK's own `gen_ai` span — is
recorded once: the inner span's call, with the content either of them carries.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

from llmlog import retention
from llmlog.capture.genai import event_content, is_model_call, span_call, span_content
from llmlog.record import Call, RecordError, Span, SpanEvent
from llmlog.store import Store
from llmlog.store.regulated import Refused

if TYPE_CHECKING:
    from llmlog.intake import Intake

log = logging.getLogger("llmlog")


def calls_from(spans: list[Span], events: list[SpanEvent]) -> list[Call]:
    """The calls these spans describe, with their events' content; marks each span's call.

    A model-call span directly under another (a framework's LLM span around the SDK's own)
    is one call: the inner one, which carries the SDK's exact usage, with content from
    either. Spans of earlier requests are the store's business (`Store.spans`)."""
    by_span: dict[tuple[str, str], list[SpanEvent]] = {}
    for e in events:
        if e.trace_id and e.span_id:
            by_span.setdefault((e.trace_id, e.span_id), []).append(e)
    model_spans = {(s.trace_id, s.span_id): s for s in spans if is_model_call(s)}
    contents = {}
    for key, s in model_spans.items():
        c = span_content(s.attributes)
        c.fill(event_content(by_span.get(key, [])))
        contents[key] = c
    calls = []
    for key, s in model_spans.items():
        inner = [k for k, o in model_spans.items() if o.parent_id == s.span_id and k[0] == s.trace_id]
        if inner:  # the same call, seen from outside: its content goes to the inner span's
            contents[inner[0]].fill(contents[key])
    for key, s in model_spans.items():
        inner = [k for k, o in model_spans.items() if o.parent_id == s.span_id and k[0] == s.trace_id]
        if inner:
            continue
        call = span_call(s, contents[key])
        outer = model_spans.get((s.trace_id, s.parent_id or ""))
        if outer is not None:  # fill what the SDK's span lacks from the framework's
            wrapper = span_call(outer, contents[key])
            for name in (
                "session_id",
                "user_id",
                "prompt_template_version",
                "tags",
                "input_tokens",
                "output_tokens",
            ):
                if getattr(call, name) is None:
                    setattr(call, name, getattr(wrapper, name))
            if wrapper.metadata:
                call.metadata = {**wrapper.metadata, **(call.metadata or {})}
            outer.call_id = call.id
        s.call_id = call.id
        calls.append(call)
    return calls


# How often a collector deletes, as it receives, the log events that waited for their span
# too long (`retention.expire_events`): a retention run does it too, but only once a day.
SWEEP_EVERY_S = 60.0
_swept: weakref.WeakKeyDictionary[Store, float] = weakref.WeakKeyDictionary()
_sweeping = threading.Lock()


def sweep(store: Store) -> int:
    """Expire the waiting log events now if this store was not swept in `SWEEP_EVERY_S`;
    how many went. A failure is logged: what is being received is not refused for it."""
    now = time.monotonic()
    with _sweeping:
        last = _swept.get(store)
        if last is not None and now - last < SWEEP_EVERY_S:
            return 0
        _swept[store] = now
    try:
        return retention.expire_events(store)
    except Exception as exc:
        log.warning("llmlog: could not delete the log events past their wait: %r", exc)
        return 0


def _insert_calls(store: Store, calls: list[Call], refused: dict[str, str]) -> int:
    """Insert the batch in one transaction; when the store refuses a call as data (not as
    being down), each goes alone, and why each refused one was goes to `refused` by id.
    Returns how many were new."""
    if not calls:
        return 0
    try:
        return store.insert(calls)
    except store.data_errors:
        pass
    added = 0
    for call in calls:
        try:
            added += store.insert([call])
        except store.data_errors as exc:
            refused[call.id] = str(exc)
    return added


def ingest_spans(store: Store, spans: list[Span], intake: Intake) -> tuple[int, list[Refused]]:
    """Keep the spans and the calls their model-call spans describe, each through `intake`
    (redacted, sealed, priced); returns how many calls were new, and the spans refused, by
    their position in `spans`: those the store would not keep (regulated mode, text this
    process has no key to seal), and those whose call it would not keep. The rest is kept
    whatever was refused. A span of this request and one of an earlier request that are one
    call (wrapper and SDK span, exported apart) make one call: the one stored first, given
    the content it lacked."""
    arrived = time.time_ns()  # the events read below arrived before this
    by_trace: dict[str, list[Span]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    new: list[Call] = []
    enriched: list[Call] = []
    calls_refused: dict[str, str] = {}
    for trace_id, group in by_trace.items():
        known = {s.span_id: s for s in store.trace(trace_id)}
        model = [s.span_id for s in group if is_model_call(s)]
        # Content events that came first are kept sealed: opened to be read into the calls.
        events = [intake.open_event(e) for e in store.span_events(trace_id, model)]
        for call in calls_from(group, events):
            mine = [s for s in group if s.call_id == call.id]
            ids = {s.span_id for s in mine}
            parents = {s.parent_id for s in mine}
            # A span kept earlier, directly above or below one of these, already a call.
            earlier = next(
                (
                    k.call_id
                    for k in known.values()
                    if k.call_id and k.call_id != call.id and (k.span_id in parents or k.parent_id in ids)
                ),
                None,
            )
            if earlier is None:
                try:
                    new.append(intake.call(call))
                except RecordError as exc:  # a bad figure, or content too deep to keep
                    calls_refused[call.id] = str(exc)
                continue
            for s in mine:
                s.call_id = earlier
            stored = store.get(earlier)
            try:
                if stored is not None and intake.complete(stored, call):
                    enriched.append(stored)
            except RecordError as exc:  # a bad figure, or content it would give that cannot be kept
                calls_refused[earlier] = str(exc)
    added = _insert_calls(store, new, calls_refused)
    for call in enriched:
        try:
            store.update_content(call)
        except store.data_errors as exc:
            calls_refused[call.id] = str(exc)
    # The content events of the spans that are calls now are in their calls: not kept twice.
    for trace_id, group in by_trace.items():
        made = [s.span_id for s in group if s.call_id and s.call_id not in calls_refused and is_model_call(s)]
        if made:
            store.drop_span_events(trace_id, made, arrived)
    # A span whose call was refused is refused with it: what it says was not kept.
    refused = [
        Refused(i, f"its call was not stored: {calls_refused[s.call_id]}")
        for i, s in enumerate(spans)
        if s.call_id in calls_refused
    ]
    kept = [i for i, s in enumerate(spans) if s.call_id not in calls_refused]
    # The calls were read from the spans as they came; the spans are kept as every record is.
    refused += [
        Refused(kept[r.index], r.reason) for r in store.insert_spans([intake.span(spans[i]) for i in kept])
    ]
    sweep(store)
    return added, sorted(refused)


def ingest_events(store: Store, events: list[SpanEvent], intake: Intake) -> tuple[int, list[Refused]]:
    """Log events carrying a span's content. Those whose span is a stored call complete it
    (`Intake.complete`: checked, redacted, sealed, its prompt version given, as any call's
    content) and are not kept: the call holds what they say. The others, their span not come
    yet or not a model call, are kept (through `intake`: redacted, sealed) for their span
    (`ingest_spans` reads them) until they expire (`llmlog.retention.expire_events`). Returns
    how many calls gained content, and the events the store refused, by their position in
    `events`."""
    arrived = time.time_ns()
    by_span: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(events):
        if e.trace_id and e.span_id:
            by_span.setdefault((e.trace_id, e.span_id), []).append(i)
    joined: set[int] = set()
    updated = 0
    for trace_id in {t for t, _ in by_span}:
        spans = {s.span_id: s for s in store.trace(trace_id)}
        for (t, span_id), mine in by_span.items():
            span = spans.get(span_id)
            if t != trace_id or span is None or span.call_id is None:
                continue
            stored = store.get(span.call_id)
            if stored is None:
                continue
            # Events of this span kept before (one that could not join then), then these.
            earlier = [intake.open_event(e) for e in store.span_events(trace_id, [span_id])]
            said = event_content([*earlier, *(events[i] for i in mine)])
            try:
                if intake.complete(stored, span_call(intake.open_span(span), said)):
                    store.update_content(stored)
                    updated += 1
            except (RecordError, *store.data_errors) as exc:  # the events are kept; the call stays
                log.warning("llmlog: call %s could not gain its events' content: %s", stored.id, exc)
                continue
            joined.update(mine)
            if earlier:
                store.drop_span_events(trace_id, [span_id], arrived)
    waiting = [i for ids in by_span.values() for i in ids if i not in joined]
    refused: list[Refused] = []
    if waiting:
        said_no = store.insert_span_events([intake.event(events[i]) for i in waiting])
        refused = [Refused(waiting[r.index], r.reason) for r in said_no]
    sweep(store)
    return updated, sorted(refused)
