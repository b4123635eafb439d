"""What every store offers for traces: spans (received over OTLP, or made by `llmlog.span`)
and the log events that carry their content; each trace's figures (`TraceSummary`). Each
write is held to regulated mode as a call's is (`Regulated`): what a store would not keep is
given back, record by record (`Refused`), the rest stored.

A span sent again replaces the one kept when it differs from it: the newest form wins on
every engine (an exporter sends a span again when it learns more of it: its end, its
status). What is compared is the form as it would be stored, its text sealed: sealing is
deterministic under one key (`llmlog.core.encryption`), so the same span sent again by the
same process, as a retry does, is the same form and changes nothing (it is neither stored
again nor counted twice); the same text sealed under another key (after `llmlog keys
rotate`) is another form, and replaces the one kept, with the text it had.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from llmlog.core.filters import TraceFilter
from llmlog.core.record import Span, SpanEvent, TraceSummary
from llmlog.store.regulated import Refused

# A span's columns that its newest form replaces (beside its ids and the call it became,
# which a form naming none does not take away).
SPAN_COLUMNS = ("parent_id", "name", "kind", "start_time", "end_time", "status", "status_message",
                "attributes", "events", "service")  # fmt: skip


def newest_forms(spans: Sequence[Span]) -> list[Span]:
    """A batch's spans, each once, where first seen: a span twice in one batch is its last
    form, with the first call id it was given, as storing them one after another keeps it
    (one statement must have each row once)."""
    kept: dict[tuple[str, str], Span] = {}
    for s in spans:
        was = kept.get((s.trace_id, s.span_id))
        if was is not None and was.call_id is not None and s.call_id != was.call_id:
            s = dataclasses.replace(s, call_id=was.call_id)
        kept[(s.trace_id, s.span_id)] = s
    return list(kept.values())


R = TypeVar("R")


def apart(
    insert: Callable[[Sequence[R]], list[Refused]],
    records: Sequence[R],
    data_errors: tuple[type[BaseException], ...],
) -> list[Refused]:
    """`insert(records)`; on a data error (a value the store cannot write), the records again
    one by one, so that only the bad ones are refused, by position, and the rest kept: one
    record must neither lose its batch nor be taken for the store being down."""
    try:
        return insert(records)
    except data_errors:
        pass
    refused: list[Refused] = []
    for index, record in enumerate(records):
        try:
            refused += [Refused(index, r.reason) for r in insert([record])]
        except data_errors as exc:
            refused.append(Refused(index, f"cannot be stored: {exc}"))
    return refused


# The spans that stand for a call, by its id (SQLite and PostgreSQL; ClickHouse reads the
# call's trace, its sorting key): the call page finds its node in a trace of any size, and
# erasure the spans of the calls it deletes, without reading every span. Partial: most
# spans are no model call, and cost nothing here.
SPANS_CALL_INDEX = "CREATE INDEX IF NOT EXISTS spans_call ON spans (call_id) WHERE call_id IS NOT NULL"


class Traces(abc.ABC):
    """Mixed into `Store`."""

    @abc.abstractmethod
    def insert_spans(self, spans: Sequence[Span]) -> list[Refused]:
        """Keep spans (OTLP); one already kept is replaced by its newer form when that
        differs (its trace summed again), keeping the call id it had or gaining the one it
        lacked. Returns those refused (regulated mode, without a key), by position."""

    @abc.abstractmethod
    def existing_spans(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these spans (trace id, span id) the store holds: `llmlog copy` skips
        them, as it skips the calls the target holds."""

    @abc.abstractmethod
    def traces(self, trace_ids: Sequence[str]) -> list[Span]:
        """The spans of these traces, earliest first: in one query (a few for very many
        traces), as a request of 512 spans may name 512 traces."""

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace, earliest first."""
        return self.traces([trace_id])

    @abc.abstractmethod
    def spans_of_call(self, trace_id: str, call_id: str, limit: int = 20) -> list[Span]:
        """The spans of a trace that stand for this call (an OTLP model call's own, and an
        instrumentation's around it), earliest first, `limit` at most: by the call's id,
        not by reading the trace's every span."""

    @abc.abstractmethod
    def spans_by_id(self, trace_id: str, span_ids: Sequence[str]) -> list[Span]:
        """Those of these spans of a trace that the store holds, in no order: along the key."""

    def span_lineage(self, trace_id: str, span_ids: Sequence[str], depth: int) -> dict[str, Span]:
        """These spans of a trace and those above them, by span id: each one's parent, its
        parent's, up to a root or a parent the store does not hold, `depth` levels at most
        (the spans given the first). One look-up along the key a level, however many spans
        the trace has: what a call's page reads of a trace of 100,000. Parents that go round
        in a circle are each read once."""
        found: dict[str, Span] = {}
        wanted = set(span_ids)
        for _ in range(depth):
            wanted -= found.keys()
            if not wanted:
                break
            spans = self.spans_by_id(trace_id, sorted(wanted))
            found.update((s.span_id, s) for s in spans)
            wanted = {s.parent_id for s in spans if s.parent_id is not None}
        return found

    @abc.abstractmethod
    def list_traces(self, f: TraceFilter, limit: int = 50) -> list[TraceSummary]:
        """The traces `f` selects, newest started first, `limit` at most; each trace's
        figures without reading its calls (`llmlog.store.trace_rollup`). A page of older
        ones: the same filter with `until` the last one's `started`."""

    @abc.abstractmethod
    def trace_summary(self, trace_id: str) -> TraceSummary | None:
        """One trace's figures; None for a trace the store knows nothing of."""

    @abc.abstractmethod
    def insert_span_events(self, events: Sequence[SpanEvent]) -> list[Refused]:
        """Keep log events that carry a span's content; the same event twice is kept once.
        Returns those refused, by position."""

    @abc.abstractmethod
    def span_events(self, spans: Sequence[tuple[str, str]]) -> list[SpanEvent]:
        """The kept events of these spans (trace id, span id), in the order they came; in
        one query (a few for very many traces)."""

    @abc.abstractmethod
    def drop_span_events(self, spans: Sequence[tuple[str, str]], before: int) -> int:
        """Delete the kept events of these spans (trace id, span id) that arrived before
        `before` (ns since the epoch): their content has joined their call, which holds it.
        How many went."""

    @abc.abstractmethod
    def expire_span_events(self, before: int) -> int:
        """Delete the kept events that arrived before `before` (ns since the epoch): those
        still kept have waited that long for a span that did not come or is not a model
        call. How many went."""

    # -------------------------------------------------------------- for `llmlog keys rotate`

    @abc.abstractmethod
    def iter_spans(self, batch: int = 1000) -> Iterator[Span]:
        """Every kept span, as stored, in batches read one after another (a change made
        between them does not stop the iteration)."""

    @abc.abstractmethod
    def update_spans(self, spans: Sequence[Span]) -> list[Refused]:
        """Rewrite the status message, attributes and events of kept spans (by trace and
        span id) from `spans`, in one writing transaction obeying regulated mode as an
        insert does. Returns those refused, by position."""

    @abc.abstractmethod
    def iter_span_events(self, batch: int = 1000) -> Iterator[tuple[Any, SpanEvent]]:
        """Every kept span event, as stored, with the key it is kept by."""

    @abc.abstractmethod
    def replace_span_events(self, events: Sequence[tuple[Any, SpanEvent]]) -> list[Refused]:
        """Replace kept span events (by the key `iter_span_events` gave) with these forms,
        which keep their place in the order events came; in one writing transaction obeying
        regulated mode. Returns those refused, by position."""
