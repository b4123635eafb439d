"""OTLP spans and log events into the store: the calls their model-call spans describe,
each through the one pipeline (`llmlog.pipeline.intake`), and every span kept in `spans` with its
trace and parent ids, so a trace (retrieve → llm → tool → llm) can be shown as a tree.

One call seen twice — a framework's LLM span wrapping the SDK's own `gen_ai` span — is
recorded once: the inner span's call, with the content either of them carries.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from llmlog.capture.genai import (
    Content,
    call_id,
    call_key,
    event_content,
    is_model_call,
    is_sdk_span,
    span_call,
    span_content,
)
from llmlog.capture.kept import without_content
from llmlog.capture.outcome import join_errors
from llmlog.core.filters import CallFilter
from llmlog.core.logs import recording_log
from llmlog.core.record import USAGE, Call, RecordError, Span, SpanEvent
from llmlog.store import Store, retention_policy
from llmlog.store.regulated import Refused
from llmlog.store.traces import apart

if TYPE_CHECKING:
    from llmlog.pipeline.intake import Intake

log = recording_log()  # never raises: a handler of the app's cannot stop it


# What reading a span's call may raise on input no instrumentation sends (a value where a
# list belongs, …): that span is refused with the reason, not the request answered 503 and
# sent again for ever.
_UNREADABLE = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError, OverflowError)


# What each model-call span's attributes say of its call (`span_content`), or why it could
# not be read, by (trace id, span id).
Read = dict[tuple[str, str], Content | Exception]


def read_spans(spans: list[Span]) -> Read:
    """Each model-call span's content read from its attributes: what takes longest in
    `calls_from`, and needs nothing from the store."""
    read: Read = {}
    for s in spans:
        if is_model_call(s):
            try:
                read[(s.trace_id, s.span_id)] = span_content(s.attributes)
            except _UNREADABLE as exc:
                read[(s.trace_id, s.span_id)] = exc
    return read


@dataclass
class Prepared:
    """What a request's spans say, worked out before the store is consulted: most of the
    work of `ingest_spans`, done outside the writer (and, with several server processes,
    outside the lock that makes one request's matching of spans to calls whole), so that
    another request's rows go in meanwhile. Made as though no log event waited for these
    spans; when some do, `ingest_spans` makes the calls again with them."""

    calls: list[Call]  # `calls_from` the spans alone
    unreadable: dict[str, str]  # why a span's call could not be read, by the id it was given
    kept: list[Span]  # each span as it may be kept (`without_content`, then `Intake.span`)


def prepare_spans(spans: list[Span], intake: Intake) -> Prepared:
    """`Prepared` for `spans` (their calls marked on them, as `calls_from` marks them)."""
    unreadable: dict[str, str] = {}
    calls = calls_from(spans, [], unreadable)
    # Stripped before it is redacted and sealed; the call ids are set once they are final.
    return Prepared(calls, unreadable, [intake.span(without_content(s)) for s in spans])


def calls_from(
    spans: list[Span],
    events: list[SpanEvent],
    unreadable: dict[str, str] | None = None,
) -> list[Call]:
    """The calls these spans describe, with their events' content; marks each span's call.

    A model-call span directly under another (a framework's LLM span around the SDK's own)
    is one call: the inner one, which carries the SDK's exact usage, with content from
    either. Spans side by side that name the same call (`genai.call_key`: an
    instrumentation's span and the SDK's own, in one trace or two) are one call too, and so
    is a span that names none with the one sibling that is plainly the same call
    (`_same_call`). Spans of earlier requests are the store's business (`Store.spans`).
    A model-call span whose call cannot be read is marked with a call id of its own, named
    in `unreadable` with the reason, and makes no call."""
    unreadable = {} if unreadable is None else unreadable

    def refuse(s: Span, exc: Exception) -> None:
        s.call_id = call_id(s.trace_id, s.span_id)
        unreadable[s.call_id] = f"span {s.span_id}: its call could not be read: {type(exc).__name__}: {exc}"
        log.warning("llmlog: OTLP %s", unreadable[s.call_id])

    by_span: dict[tuple[str, str], list[SpanEvent]] = {}
    for e in events:
        if e.trace_id and e.span_id:
            by_span.setdefault((e.trace_id, e.span_id), []).append(e)
    model_spans = {(s.trace_id, s.span_id): s for s in spans if is_model_call(s)}
    contents = {}
    read = read_spans(list(model_spans.values()))
    for key, s in list(model_spans.items()):
        try:
            c = read[key]
            if isinstance(c, Exception):
                raise c
            c.fill(event_content(by_span.get(key, [])))
        except _UNREADABLE as exc:
            refuse(s, exc)
            del model_spans[key]
            continue
        contents[key] = c
    # Which model-call span sits directly under which: one pass, not a scan per span.
    inner: dict[tuple[str, str], tuple[str, str]] = {}
    for key, s in model_spans.items():
        if s.parent_id and (s.trace_id, s.parent_id) in model_spans:
            inner.setdefault((s.trace_id, s.parent_id), key)
    for outer_key, inner_key in inner.items():  # the same call, seen from outside
        contents[inner_key].fill(contents[outer_key])
    made: dict[str, _Made] = {}
    for key, s in model_spans.items():
        if key in inner:
            continue
        outer = model_spans.get((s.trace_id, s.parent_id or ""))
        try:
            call = span_call(s, contents[key])
            wrapper = span_call(outer, contents[key]) if outer is not None else None
        except _UNREADABLE as exc:
            refuse(s, exc)
            if outer is not None:
                outer.call_id = s.call_id
            continue
        mine = [s]
        if outer is not None and wrapper is not None:  # fill what the SDK's span lacks from the framework's
            for name in (
                "session_id",
                "feature",
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
            call.error = join_errors(call.error, wrapper.error)
            mine.append(outer)
        one = _Made(call, mine, is_sdk_span(s), call_key(s) is not None or any(map(call_key, mine[1:])))
        if call.id in made and not at_once(made[call.id].call, call):
            # The same id for another call (a server that reuses response ids): its own.
            call.id = call_id(s.trace_id, s.span_id)
        if call.id in made:  # another span of the same call (same response or request id)
            made[call.id].join(one)
        else:
            made[call.id] = one
    _pair_keyless(made)
    for m in made.values():
        for s in m.spans:
            s.call_id = m.call.id
    return [m.call for m in made.values()]


# Content columns: of two spans' accounts of one call, the fuller one is kept.
_RICHER = ("system_prompt", "messages", "tools", "params", "response", "tool_calls")
# Figures: the SDK's own span has the response's exact usage; the other fills what it lacks.
_FIGURES = (
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "stop_reason",
    "first_token_ms",
    "latency_ms",
    "session_id",
    "feature",
    "user_id",
    "prompt_template_version",
    "tags",
    "trace_id",
    "parent_id",
)


def _size(value: object) -> int:
    return len(json.dumps(value, default=str, separators=(",", ":")))


def merge_call(call: Call, other: Call, *, exact: bool) -> None:
    """Give `call` what `other`, another span's account of the same call, says better:
    non-null wins, the richer content wins; figures are `call`'s when `exact` (it is the
    SDK's), else `other`'s where it has them."""
    for name in _FIGURES:
        mine, theirs = getattr(call, name), getattr(other, name)
        if theirs is not None and (mine is None or not exact):
            setattr(call, name, theirs)
    for name in _RICHER:
        mine, theirs = getattr(call, name), getattr(other, name)
        if theirs is not None and (mine is None or (mine != theirs and _size(theirs) > _size(mine))):
            setattr(call, name, theirs)
    if other.timestamp < call.timestamp and not exact:
        call.timestamp = other.timestamp
    if other.error is not None:
        call.error = join_errors(call.error, other.error) if call.error is not None else other.error
    if other.metadata:
        mine_meta = call.metadata or {}
        merged = {**other.metadata, **mine_meta}
        if isinstance(other.metadata.get("llmlog"), dict) and isinstance(mine_meta.get("llmlog"), dict):
            merged["llmlog"] = {**other.metadata["llmlog"], **mine_meta["llmlog"]}
        if isinstance(other.metadata.get("otel"), dict) and isinstance(mine_meta.get("otel"), dict):
            merged["otel"] = {**other.metadata["otel"], **mine_meta["otel"]}
            spans = [mine_meta["otel"].get("span"), other.metadata["otel"].get("span")]
            merged["otel"]["spans"] = sorted({str(n) for n in spans if n})
        call.metadata = merged


@dataclass
class _Made:
    """A call made of one or more spans of this request."""

    call: Call
    spans: list[Span]
    sdk: bool  # made from the SDK's own span (exact figures)
    keyed: bool  # its id is the provider's (response or request id), not a span's

    def join(self, other: _Made) -> None:
        """`other` is the same call: one call, the SDK's figures, the richer content."""
        if other.sdk and not self.sdk:
            merge_call(other.call, self.call, exact=True)
            self.call, self.sdk = other.call, True
        else:
            merge_call(self.call, other.call, exact=self.sdk)
        self.spans += other.spans
        self.keyed = self.keyed or other.keyed


# How far apart in time two spans of one call may seem (their ends rounded, clocks of two
# processes): farther, they are two calls, whatever ids they share.
_SLACK_S = 5.0


def at_once(a: Call, b: Call) -> bool:
    """Whether two accounts of calls happened at once (their times overlap): two spans of one
    call always do. A response id names one call only where the server makes each anew;
    Ollama's OpenAI-compatible API, for one, picks it among a thousand."""
    a0, b0 = a.timestamp.timestamp(), b.timestamp.timestamp()
    a_end = a0 + (a.latency_ms or 0) / 1000
    b_end = b0 + (b.latency_ms or 0) / 1000
    return a0 <= b_end + _SLACK_S and b0 <= a_end + _SLACK_S


def _same_call(a: Call, b: Call) -> bool:
    """Whether two accounts of a call, one of which names no response or request id, are
    plainly one: from one service, side by side (same parent, or both roots), one's time
    within the other's, same provider, same model where both say, same tokens where both
    say, both failed or neither."""
    if a.parent_id != b.parent_id or (a.parent_id is not None and a.trace_id != b.trace_id):
        return False
    for name in ("provider", "model", "input_tokens", "output_tokens"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None and x != y:
            return False
    if (a.error is None) != (b.error is None) or _service(a) != _service(b):
        return False
    a_end = a.timestamp.timestamp() + (a.latency_ms or 0) / 1000
    b_end = b.timestamp.timestamp() + (b.latency_ms or 0) / 1000
    a0, b0 = a.timestamp.timestamp(), b.timestamp.timestamp()
    return (a0 <= b0 and b_end <= a_end) or (b0 <= a0 and a_end <= b_end)


def _service(call: Call) -> object:
    """The service (OpenTelemetry resource) whose span made the call."""
    otel = (call.metadata or {}).get("otel")
    return otel.get("service") if isinstance(otel, dict) else None


def _pair_keyless(made: dict[str, _Made]) -> None:
    """A call of an instrumentation's span that names no response or request id (Traceloop in
    event mode) joins the SDK's span of the same call beside it: when exactly one fits, and
    it fits no other."""
    keyless = [m for m in made.values() if not m.keyed and not m.sdk]
    if not keyless:
        return
    sdk = [m for m in made.values() if m.sdk]
    fits = {id(k): [s for s in sdk if _same_call(k.call, s.call)] for k in keyless}
    claimed: dict[int, int] = {}
    for k in keyless:
        for s in fits[id(k)]:
            claimed[id(s)] = claimed.get(id(s), 0) + 1
    for k in keyless:
        (only, *more) = fits[id(k)] or (None,)
        if only is None or more or claimed[id(only)] != 1:
            continue
        del made[k.call.id]
        only.join(k)


# At most this many calls of the time window are read to find such partners (the newest).
_PARTNERS_READ = 2000


def _keyless_partners(store: Store, calls: list[Call], sdk_ids: set[str]) -> dict[str, Call]:
    """Of the calls an instrumentation's spans with no response or request id make, those
    whose SDK span came in an earlier request: that call (stored with the request id the SDK
    says, without content: no instrumentation's span has joined it yet), by the new call's
    id. One query for all."""
    if not calls:
        return {}
    since = min(c.timestamp for c in calls)
    until = max(c.timestamp + timedelta(milliseconds=c.latency_ms or 0) for c in calls)
    # Brief (what a list of calls shows): whether a call has content, not all of it.
    window = CallFilter(provider="anthropic", since=since, until=until + timedelta(milliseconds=1))
    stored = [
        s
        for s in store.recent(window, limit=_PARTNERS_READ, brief=True)
        if s.messages is None
        and s.response is None
        and s.id not in sdk_ids
        and ((s.metadata or {}).get("llmlog") or {}).get("request_id")
    ]
    out = {}
    for c in calls:
        fits = [s for s in stored if _same_call(c, s)]
        if len(fits) == 1 and sum(_same_call(o, fits[0]) for o in calls) == 1:
            whole = store.get(fits[0].id)  # one read per call joined, not per span
            if whole is not None:
                out[c.id] = whole
    return out


# How often a collector deletes, as it receives, the log events that waited for their span
# too long (`retention_policy.expire_events`): a retention run does it too, but only once a day.
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
        return retention_policy.expire_events(store)
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


def _usage(call: Call) -> tuple[object, ...]:
    return tuple(getattr(call, n) for n in USAGE)


def _own_ids(store: Store, new: list[Call], spans_of: dict[str, list[Span]], refused: dict[str, str]) -> int:
    """After an insert that kept fewer calls than it was given: those whose provider's id a
    call stored long before holds (further back than the lookup's window; a server that
    reuses response ids) are calls of their own, named by their span, and stored so. A span
    sent again finds its own call there: nothing to do. Returns how many more were new."""
    added = 0
    for call in new:
        if call.id in refused or (first := spans_of.get(call.id, [None])[0]) is None:
            continue
        own = call_id(first.trace_id, first.span_id)
        stored = store.get(call.id) if own != call.id else None
        if stored is None or at_once(stored, call):
            continue
        mine = spans_of.pop(call.id)
        call.id = own
        spans_of[own] = mine
        for s in mine:
            s.call_id = own
        added += _insert_calls(store, [call], refused)
    return added


# How far apart the starts of two spans of one call can be, at most: a generous bound on a
# call's length.
_SAME_CALL_WINDOW = timedelta(hours=6)


def ingest_spans(
    store: Store, spans: list[Span], intake: Intake, prepared: Prepared | None = None
) -> tuple[int, list[Refused]]:
    """Keep the spans and the calls their model-call spans describe, each through `intake`
    (redacted, sealed, priced); returns how many calls were new, and the spans refused, by
    their position in `spans`: those the store would not keep (regulated mode, text this
    process has no key to seal), and those whose call it would not keep. The rest is kept
    whatever was refused. A span of this request and one of an earlier request that are one
    call (wrapper and SDK span, exported apart) make one call: the one stored first, given
    the content it lacked. `prepared`: `prepare_spans(spans, intake)`, made already."""
    arrived = time.time_ns()  # the events read below arrived before this
    new: list[Call] = []
    enriched: list[Call] = []  # stored calls given content (or usage) by a span of this request
    counted: list[Call] = []  # those of them given their usage
    if prepared is None:
        prepared = prepare_spans(spans, intake)
    calls_refused = dict(prepared.unreadable)
    # The request's traces as kept, and the events waiting for its model-call spans: a
    # query each, whatever the number of traces.
    known = {s.span_id: s for s in store.traces(list({s.trace_id for s in spans}))}
    # Content events that came first are kept sealed: opened to be read into the calls.
    events = [
        intake.open_event(e)
        for e in store.span_events([(s.trace_id, s.span_id) for s in spans if is_model_call(s)])
    ]
    calls = prepared.calls
    if events:  # the calls made again with them, from the spans as they came
        for s in spans:
            s.call_id = None
        calls_refused = {}
        # All the request's spans at once: one call's spans may be in two traces (both roots).
        calls = calls_from(spans, events, calls_refused)
    spans_of: dict[str, list[Span]] = {}
    for s in spans:
        if s.call_id:
            spans_of.setdefault(s.call_id, []).append(s)
    # A span kept earlier, directly above or below one of a call's, already a call.
    earlier: dict[str, str] = {}
    for call in calls:
        ids_mine = {s.span_id for s in spans_of[call.id]}
        parents = {s.parent_id for s in spans_of[call.id]}
        for k in known.values():
            if k.call_id and k.call_id != call.id and (k.span_id in parents or k.parent_id in ids_mine):
                earlier[call.id] = k.call_id
                break
    # Calls an earlier request stored already (their id is the provider's: another span of
    # the same call came first), in one query; and the SDK's call that an instrumentation's
    # span naming no id goes with, in one more, only when there are such spans.
    ids = [c.id for c in calls]
    stored_now: dict[str, Call] = {}
    if calls:
        # Spans of one call start within the call's time: the window lets a store that keeps
        # calls in time order (ClickHouse) read only the days that can hold them.
        since = min(c.timestamp for c in calls) - _SAME_CALL_WINDOW
        until = (
            max(c.timestamp + timedelta(milliseconds=c.latency_ms or 0) for c in calls) + _SAME_CALL_WINDOW
        )
        for i in range(0, len(ids), 500):
            f = CallFilter(ids=ids[i : i + 500], since=since, until=until)
            stored_now.update((c.id, c) for c in store.iter_calls(f))
    sdk_ids = {c.id for c in calls if any(is_sdk_span(s) for s in spans_of[c.id])}
    # (Only Anthropic's SDK makes spans of its own beside an instrumentation's.)
    keyless = [
        c
        for c in calls
        if c.provider == "anthropic"
        and c.id not in stored_now
        and c.id not in earlier
        and c.id not in sdk_ids
        and not any(call_key(s) for s in spans_of[c.id])
    ]
    for keyless_id, partner in _keyless_partners(store, keyless, sdk_ids).items():
        earlier[keyless_id] = partner.id
        stored_now[partner.id] = partner
    for call in calls:
        target = earlier.get(call.id, call.id)
        stored = stored_now.get(target)
        if target == call.id and stored is not None and not at_once(stored, call):
            # Another call stored with the same response id: this one is a call of its own,
            # named by its span (stored already when that span came before).
            first = spans_of[call.id][0]
            mine = spans_of.pop(call.id)
            call.id = target = call_id(first.trace_id, first.span_id)
            spans_of[call.id] = mine
            for s in mine:
                s.call_id = call.id
            stored = store.get(call.id)
        if target == call.id and stored is None:
            try:
                new.append(intake.call(call))
            except RecordError as exc:  # a bad figure, or content too deep to keep
                calls_refused[call.id] = str(exc)
            continue
        for s in spans_of[call.id]:
            s.call_id = target
        if stored is None:
            stored = store.get(target)
        if stored is None:
            continue
        try:
            usage = _usage(stored)
            if intake.complete(stored, call) and all(c is not stored for c in enriched):
                enriched.append(stored)
            if _usage(stored) != usage and all(c is not stored for c in counted):
                counted.append(stored)
        except RecordError as exc:  # a bad figure, or content it would give that cannot be kept
            calls_refused[target] = str(exc)
    added = _insert_calls(store, new, calls_refused)
    if added < len([c for c in new if c.id not in calls_refused]):
        added += _own_ids(store, new, spans_of, calls_refused)
    for call in enriched:
        try:
            store.update_content(call)
            if any(c is call for c in counted):
                store.update_usage(call)
        except store.data_errors as exc:
            calls_refused[call.id] = str(exc)
    # The content events read into calls stored now are in them: not kept twice.
    made = {(s.trace_id, s.span_id) for s in spans if s.call_id and s.call_id not in calls_refused}
    store.drop_span_events([k for k in {(e.trace_id, e.span_id) for e in events} if k in made], arrived)
    # A span whose call was refused is refused with it: what it says was not kept.
    refused = [
        Refused(i, f"its call was not stored: {calls_refused[s.call_id]}")
        for i, s in enumerate(spans)
        if s.call_id in calls_refused
    ]
    kept = [i for i, s in enumerate(spans) if s.call_id not in calls_refused]
    # The calls were read from the spans as they came; the spans are kept as every record is,
    # a call's without the content its call holds (`prepare_spans`), with its call's id.
    kept_spans = []
    for i in kept:
        span = prepared.kept[i]
        span.call_id = spans[i].call_id
        kept_spans.append(span)
    said_no = apart(store.insert_spans, kept_spans, store.data_errors)
    refused += [Refused(kept[r.index], r.reason) for r in said_no]
    sweep(store)
    return added, sorted(refused)


def ingest_events(store: Store, events: list[SpanEvent], intake: Intake) -> tuple[int, list[Refused]]:
    """Log events carrying a span's content. Those whose span is a stored call complete it
    (`Intake.complete`: checked, redacted, sealed, its prompt version given, as any call's
    content) and are not kept: the call holds what they say. The others, their span not come
    yet or not a model call, are kept (through `intake`: redacted, sealed) for their span
    (`ingest_spans` reads them) until they expire (`llmlog.store.retention_policy.expire_events`). Returns
    how many calls gained content, and the events the store refused, by their position in
    `events`."""
    arrived = time.time_ns()
    by_span: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(events):
        if e.trace_id and e.span_id:
            by_span.setdefault((e.trace_id, e.span_id), []).append(i)
    joined: set[int] = set()
    updated = 0
    spans = {(s.trace_id, s.span_id): s for s in store.traces(list({t for t, _ in by_span}))}
    calls = {k: s for k, s in spans.items() if k in by_span and s.call_id is not None}
    # Events of these spans kept before (that could not join then), read first.
    kept: dict[tuple[str | None, str | None], list[SpanEvent]] = {}
    for e in store.span_events(list(calls)):
        kept.setdefault((e.trace_id, e.span_id), []).append(intake.open_event(e))
    joined_kept: list[tuple[str, str]] = []
    # Spelled out for the except clause below: an unpacked tuple there is not read as exceptions.
    unusable: tuple[type[BaseException], ...] = (RecordError, *_UNREADABLE, *store.data_errors)
    for key, span in calls.items():
        assert span.call_id is not None
        stored = store.get(span.call_id)
        if stored is None:
            continue
        mine = by_span[key]
        try:
            said = event_content([*kept.get(key, []), *(events[i] for i in mine)])
            usage = _usage(stored)
            if intake.complete(stored, span_call(intake.open_span(span), said), kept=True):
                store.update_content(stored)
                if _usage(stored) != usage:
                    store.update_usage(stored)
                updated += 1
        except unusable as exc:
            # The events are kept; the call stays as it was.
            log.warning("llmlog: call %s could not gain its events' content: %s", stored.id, exc)
            continue
        joined.update(mine)
        if key in kept:
            joined_kept.append(key)
    store.drop_span_events(joined_kept, arrived)
    waiting = [i for ids in by_span.values() for i in ids if i not in joined]
    refused: list[Refused] = []
    if waiting:
        said_no = apart(
            store.insert_span_events, [intake.event(events[i]) for i in waiting], store.data_errors
        )
        refused = [Refused(waiting[r.index], r.reason) for r in said_no]
    sweep(store)
    return updated, sorted(refused)
