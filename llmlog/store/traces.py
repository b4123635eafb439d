"""What every store offers for traces: spans (received over OTLP, or made by `llmlog.span`)
and the log events that carry their content; each trace's figures (`TraceSummary`). Each
write is held to regulated mode as a call's is (`Regulated`): what a store would not keep is
given back, record by record (`Refused`), the rest stored."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Any

from llmlog.core.filters import TraceFilter
from llmlog.core.record import Span, SpanEvent, TraceSummary
from llmlog.store.regulated import Refused


class Traces(abc.ABC):
    """Mixed into `Store`."""

    @abc.abstractmethod
    def insert_spans(self, spans: Sequence[Span]) -> list[Refused]:
        """Keep spans (OTLP); one already kept keeps its first form, and gains the call id
        it lacked. Returns those refused (regulated mode, without a key), by position."""

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
