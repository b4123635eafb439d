"""A trace as a tree on its time axis: what the trace page (`/traces/{id}`), the call page's
summary of its trace and `llmlog trace ID` all draw, built here once.

A trace is made of spans and calls (`llmlog.core.record`). A call received over OTLP has a
span of its own (`Span.call_id`): it is that span's node, with the call's figures (shown once
when two spans are the same call, as an instrumentation's span around the SDK's own is). A call made
by a wrapped client inside `llmlog.span` has no span: it is a node of its own under the span
that holds it (`Call.parent_id`), placed by its timestamp and latency. A node whose parent
never arrived (or whose parents go round in a circle, as hostile OTLP may send) is shown at
the top, marked, never dropped.

Everything in a span but its name and figures may be text an app logged (attributes, events,
a status message): `tree_json` leaves it out unless asked (`text=True`), as a viewer may see
figures only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, Span, TraceSummary
from llmlog.store import Store

# What one trace's view holds at most: the page, its JSON and the terminal draw this many
# nodes (in tree order) and say how many were left out. A trace of 10,000 spans is read and
# placed whole (its tree needs every span) but never drawn whole.
MAX_NODES = 1000
# The calls of a trace read for its nodes (brief: no prompt, no conversation), its latest
# first; the figures count them all (`Store.trace_summary`).
MAX_CALLS = 5000
# What a call's page reads of its trace (`call_in_trace`): its own spans, at most this many,
# and the path from it up to the root, at most this many nodes (the nearest to the call).
MAX_CALL_SPANS = 20
MAX_PATH = 256
# The narrowest bar, in % of the trace's length: a span of no time still shows.
MIN_WIDTH = 0.3


@dataclass
class Node:
    """One row of the tree: a span, a call, or both (an OTLP model call's span)."""

    name: str
    depth: int
    start: datetime
    end: datetime | None
    offset_ms: float  # from the trace's start
    left: float  # where its bar starts and how wide it is, in % of the trace's length
    width: float
    span: Span | None = None  # None: a call made inside a span of the app's, with no span of its own
    call: Call | None = None  # the call this node is, when it is one and was read
    call_id: str | None = None  # the call this node is (a span's call may not have been read)
    orphan: bool = False  # its parent never arrived: it is shown at the top
    # Another span above it in the tree stands for the same call (an instrumentation's span
    # around the SDK's own): the call's figures are shown there, once.
    repeats_call: bool = False
    parent_id: str | None = None  # the span it is under, as the trace says (an orphan's too)

    @property
    def duration_ms(self) -> float | None:
        return None if self.end is None else (self.end - self.start).total_seconds() * 1000

    @property
    def span_failed(self) -> bool:
        return self.span is not None and self.span.status == "error"

    @property
    def call_failed(self) -> bool:
        return self.call is not None and bool(self.call.error)

    @property
    def failed(self) -> bool:
        return self.span_failed or self.call_failed

    @property
    def error_type(self) -> str | None:
        """The call's error type (a figure: a viewer sees it, not its message)."""
        if not self.call_failed:
            return None
        error = self.call.error if self.call else None
        kind = error.get("type") if isinstance(error, dict) else None
        return str(kind) if kind else "error"


@dataclass
class Tree:
    """A trace's nodes in tree order (each under its parent, by start), and its figures;
    `nodes` are the first `limit` of them, those drawn."""

    trace_id: str
    every: list[Node]  # the whole tree: spans, and calls without a span of their own
    limit: int
    # The trace's figures: the store's (`Store.trace_summary`, every call counted) when read
    # from one, else summed over the spans and calls given.
    summary: TraceSummary
    started: datetime  # the time axis: from the earliest node's start to the latest end
    ended: datetime
    calls_read: int  # calls of the trace read for its nodes (all of them unless more than MAX_CALLS)

    @property
    def nodes(self) -> list[Node]:
        return self.every[: self.limit]

    @property
    def total(self) -> int:
        return len(self.every)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.nodes)

    @property
    def axis_ms(self) -> float:
        """The length of the time axis the nodes are placed on."""
        return (self.ended - self.started).total_seconds() * 1000

    @property
    def gone(self) -> bool:
        """Its spans and calls were deleted (retention); its figures are what is left."""
        return not self.every

    @property
    def calls_capped(self) -> bool:
        """Some of the trace's calls were not read: their nodes are missing from the tree."""
        return not self.gone and self.calls_read < self.summary.calls

    @property
    def orphans(self) -> int:
        """Nodes shown at the top because their parent never arrived."""
        return sum(1 for n in self.every if n.orphan)

    def path_to(self, call_id: str) -> list[Node]:
        """The nodes from the root down to the call's node (its own last); [] if it is not in
        the trace. Read from the whole tree, drawn or not."""
        node = next((n for n in self.every if n.call_id == call_id), None)
        if node is None:
            return []
        by_span = {n.span.span_id: n for n in self.every if n.span is not None}
        path = [node]
        seen = {id(node)}
        while not path[-1].orphan and path[-1].parent_id in by_span:
            parent = by_span[path[-1].parent_id]
            if id(parent) in seen:  # a circle: stop where it closes
                break
            seen.add(id(parent))
            path.append(parent)
        return path[::-1]


def summed(trace_id: str, spans: list[Span], calls: list[Call]) -> TraceSummary | None:
    """A trace's figures summed over these spans and calls, as the store sums them
    (`llmlog.store.trace_rollup`); None for neither."""
    times = [s.start for s in spans] + [c.timestamp for c in calls]
    if not times:
        return None
    ends = [
        e for e in [*(s.end for s in spans), *(_end_of(c) or c.timestamp for c in calls)] if e is not None
    ]
    roots = sorted((s for s in spans if s.parent_id is None), key=lambda s: (s.start, s.span_id))
    first = {
        name: next((getattr(c, name) for c in calls if getattr(c, name)), None)
        for name in ("feature", "user_id", "session_id")
    }
    return TraceSummary(
        trace_id=trace_id,
        started=min(times),
        ended=max(ends) if ends else None,
        name=roots[0].name if roots else None,
        service=roots[0].service if roots else None,
        spans=len(spans),
        calls=len(calls),
        errors=sum(1 for c in calls if c.error),
        failed_spans=sum(1 for s in spans if s.status == "error"),
        input_tokens=sum(c.input_tokens or 0 for c in calls),
        output_tokens=sum(c.output_tokens or 0 for c in calls),
        cost_usd=sum(c.cost_usd for c in calls if c.cost_usd is not None),
        feature=first["feature"],
        user_id=first["user_id"],
        session_id=first["session_id"],
    )


def _end_of(call: Call) -> datetime | None:
    if call.latency_ms is None:
        return None
    try:
        return call.timestamp + timedelta(milliseconds=max(call.latency_ms, 0.0))
    except OverflowError:  # a latency past the calendar's end (hostile or broken input)
        return None


def _call_name(call: Call) -> str:
    return call.model or "model call"


def build(trace_id: str, spans: Iterable[Span], calls: Iterable[Call], limit: int = MAX_NODES) -> Tree | None:
    """The tree of a trace's spans and calls (any order), each node placed on its time axis,
    with their figures; None for neither."""
    spans = list(spans)
    calls = list(calls)
    by_call = {c.id: c for c in calls}
    span_ids = {s.span_id for s in spans}
    spans_calls = {s.call_id for s in spans if s.call_id}
    # Each node's place on the time axis comes once the trace's length is known.
    items: list[Node] = []
    for s in spans:
        call = by_call.get(s.call_id) if s.call_id else None
        items.append(
            Node(
                s.name,
                0,
                s.start,
                s.end,
                0.0,
                0.0,
                0.0,
                span=s,
                call=call,
                call_id=s.call_id,
                parent_id=s.parent_id,
            )
        )
    for c in calls:
        if c.id in spans_calls:
            continue  # drawn as its span
        items.append(
            Node(
                _call_name(c),
                0,
                c.timestamp,
                _end_of(c),
                0.0,
                0.0,
                0.0,
                call=c,
                call_id=c.id,
                parent_id=c.parent_id,
            )
        )
    if not items:
        return None
    started = min(n.start for n in items)
    ended = max(e for n in items for e in (n.start, n.end) if e is not None)

    children: dict[str | None, list[Node]] = {}
    for n in items:
        own = n.span.span_id if n.span is not None else None
        under = n.parent_id if n.parent_id in span_ids and n.parent_id != own else None
        if under is None and n.parent_id is not None:
            n.orphan = True
        children.setdefault(under, []).append(n)
    for group in children.values():
        group.sort(key=lambda n: (n.start, n.span is None, n.name))

    ordered: list[Node] = []
    placed: set[int] = set()

    def walk(roots: list[Node]) -> None:
        # Depth first without recursion: a chain of 10,000 spans is 10,000 deep.
        stack = [(n, 0) for n in reversed(roots)]
        while stack:
            n, depth = stack.pop()
            if id(n) in placed:
                continue
            placed.add(id(n))
            n.depth = depth
            ordered.append(n)
            if n.span is not None:
                stack.extend((c, depth + 1) for c in reversed(children.get(n.span.span_id, [])))

    walk(children.get(None, []))
    # Spans whose parents make a circle are under each other and under nothing at the top:
    # each circle is shown from its earliest span, at the top.
    left_out = sorted((n for n in items if id(n) not in placed), key=lambda n: n.start)
    for n in left_out:
        if id(n) not in placed:
            n.orphan = True
            walk([n])

    seen: set[str] = set()
    for n in ordered:
        if n.span is not None and n.call_id:
            if n.call_id in seen:
                n.call, n.repeats_call = None, True
            seen.add(n.call_id)

    total_ms = max((ended - started).total_seconds() * 1000, 0.001)
    for n in ordered:
        n.offset_ms = (n.start - started).total_seconds() * 1000
        n.left = min(100 * n.offset_ms / total_ms, 100.0)
        n.width = max(min(100 * (n.duration_ms or 0.0) / total_ms, 100.0 - n.left), MIN_WIDTH)

    figures = summed(trace_id, spans, calls)
    assert figures is not None  # there are spans or calls
    return Tree(trace_id, ordered, limit, figures, started, ended, len(calls))


def read(store: Store, trace_id: str, limit: int = MAX_NODES) -> Tree | None:
    """The tree of the trace `trace_id` as `store` keeps it, with the store's figures; None
    when it holds neither a span nor a call of it, nor its figures. A trace whose spans and
    calls retention deleted keeps its figures (the cold tier): its tree is empty (`gone`)."""
    spans = store.trace(trace_id)
    calls = store.recent(CallFilter(trace_id=trace_id), limit=MAX_CALLS, brief=True)
    tree = build(trace_id, spans, calls, limit)
    summary = store.trace_summary(trace_id)
    if tree is not None:
        tree.summary = summary or tree.summary
    elif summary is not None:
        tree = Tree(trace_id, [], limit, summary, summary.started, summary.ended or summary.started, 0)
    return tree


@dataclass
class InTrace:
    """Where a call sits in its trace, as its page says: the trace's figures, the nodes from
    the root down to the call's, and when the call starts in it. `cut`: the path is the
    `MAX_PATH` nodes nearest the call, and goes on above them."""

    summary: TraceSummary
    path: list[Node]
    offset_ms: float
    cut: bool = False


def call_in_trace(store: Store, call: Call) -> InTrace | None:
    """The trace `call` is part of, read from the store's figures, the call's own spans and
    the spans above them (`Store.span_lineage`): never the trace's other spans, nor its
    other calls, so that a call in a trace of 100,000 spans reads a handful. The path is
    the one the trace's tree (`build`) gives the call's node."""
    if not call.trace_id:
        return None
    summary = store.trace_summary(call.trace_id)
    if summary is None:
        return None
    own = store.spans_of_call(call.trace_id, call.id, MAX_CALL_SPANS)
    starts = [s.span_id for s in own] or ([call.parent_id] if call.parent_id else [])
    known = {i: _span_node(s) for i, s in store.span_lineage(call.trace_id, starts, MAX_PATH).items()}
    # The call's node is the first of its spans in the tree's order (the outermost), or
    # itself when it has none (a call made inside a span of the app's).
    chains = [_chain(known[s.span_id], known) for s in own if s.span_id in known]
    if chains:
        chain, _ = min(chains, key=_tree_order)
        chain[0].call = call
    else:
        node = Node(_call_name(call), 0, call.timestamp, _end_of(call), 0.0, 0.0, 0.0,
                    call=call, call_id=call.id, parent_id=call.parent_id)  # fmt: skip
        chain, _ = _chain(node, known)
    path = chain[::-1]
    for depth, n in enumerate(path):
        n.depth = depth
    top = path[0]
    spans = sum(1 for n in path if n.span is not None)
    cut = top.parent_id is not None and top.parent_id not in known and spans >= MAX_PATH
    return InTrace(summary, path, (path[-1].start - summary.started).total_seconds() * 1000, cut)


def _span_node(span: Span) -> Node:
    return Node(span.name, 0, span.start, span.end, 0.0, 0.0, 0.0, span=span, call_id=span.call_id,
                parent_id=span.parent_id)  # fmt: skip


def _chain(node: Node, known: dict[str, Node]) -> tuple[list[Node], bool]:
    """`node` and the spans' nodes above it, nearest first, up to where the tree (`build`)
    puts the top of its branch: a root, a span whose parent never arrived (or is itself),
    or, where parents go round in a circle, the node the tree shows the circle's branch
    from; and whether it is that (such branches come after the rest)."""
    chain = [node]
    at = {id(node): 0}
    while True:
        last = chain[-1]
        parent = known.get(last.parent_id) if last.parent_id is not None else None
        if parent is None or parent is last:
            return chain, False
        if id(parent) in at:  # a circle, closing there
            return chain[: _circle_top(chain, at[id(parent)]) + 1], True
        at[id(parent)] = len(chain)
        chain.append(parent)


def _placed(n: Node) -> tuple[datetime, int, str]:
    # The order `build` walks what is under no root in: by start, spans (by start and id,
    # as a store gives them) before calls.
    return (n.start, n.span is None, n.span.span_id if n.span is not None else "")


def _circle_top(chain: list[Node], closes: int) -> int:
    """Where the tree puts the top of a branch under a circle (`chain[closes:]`): what is
    under no root is walked from its earliest node on, so the top is the first node from
    the bottom that comes before every node above it (in a circle, each is above all)."""
    for i, node in enumerate(chain):
        above = chain[i + 1 :] if i < closes else [n for n in chain[closes:] if n is not node]
        if all(_placed(node) < _placed(n) for n in above):
            return i
    return len(chain) - 1


def _tree_order(chain: tuple[list[Node], bool]) -> tuple[bool, list[tuple[datetime, str, str]]]:
    """Where the first of a chain comes in the tree's order (`build`): each node under its
    parent by start and name, the branches under a circle after the rest."""
    nodes, circled = chain
    return circled, [(n.start, n.name, n.span.span_id if n.span else "") for n in reversed(nodes)]


# ---------------------------------------------------------------- as JSON


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def call_json(c: Call) -> dict[str, Any]:
    """A call's figures as a node of a trace shows them."""
    return {
        "id": c.id,
        "timestamp": c.timestamp.isoformat(),
        "provider": c.provider,
        "model": c.model,
        "feature": c.feature,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "cost_usd": c.cost_usd,
        "latency_ms": c.latency_ms,
        "error": (c.error.get("type") or "error") if isinstance(c.error, dict) and c.error else None,
    }


def node_json(n: Node, text: bool) -> dict[str, Any]:
    s = n.span
    out: dict[str, Any] = {
        "kind": "span" if s is not None else "call",
        "name": n.name,
        "depth": n.depth,
        "span_id": s.span_id if s else None,
        "parent_id": n.parent_id,
        "orphan": n.orphan,
        "start": _iso(n.start),
        "end": _iso(n.end),
        "offset_ms": n.offset_ms,
        "duration_ms": n.duration_ms,
        "span_kind": s.kind if s else None,
        "status": s.status if s else ("error" if n.call_failed else "ok"),
        "service": s.service if s else None,
        "call_id": n.call_id,
        "call": call_json(n.call) if n.call else None,
        "repeats_call": n.repeats_call,
    }
    if text and s is not None:
        out.update(status_message=s.status_message, attributes=s.attributes, events=s.events)
    return out


def summary_json(t: TraceSummary) -> dict[str, Any]:
    """A trace's figures, as the traces list and a trace's JSON give them."""
    return {
        "trace_id": t.trace_id,
        "started": _iso(t.started),
        "ended": _iso(t.ended),
        "duration_ms": t.duration_ms,
        "name": t.name,
        "service": t.service,
        "spans": t.spans,
        "calls": t.calls,
        "errors": t.errors,
        "failed_spans": t.failed_spans,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cost_usd": t.cost_usd,
        "feature": t.feature,
        "user_id": t.user_id,
        "session_id": t.session_id,
    }


def tree_json(tree: Tree, *, text: bool) -> dict[str, Any]:
    """The tree as the trace page's JSON twin and `llmlog trace --json` give it: the trace's
    figures, then its nodes. `text`: with each span's attributes, events and status message
    (logged text: not for a viewer)."""
    return {
        **summary_json(tree.summary),
        "calls_read": tree.calls_read,
        "orphans": tree.orphans,
        "nodes_total": tree.total,
        "truncated": tree.truncated,
        "gone": tree.gone,  # its spans and calls deleted by retention: figures only
        "nodes": [node_json(n, text) for n in tree.nodes],
    }


# ---------------------------------------------------------------- finding one

_HEX = re.compile(r"[0-9a-f]{4,31}")


def find(store: Store, given: str, limit: int = MAX_NODES) -> Tree | None:
    """The tree of the trace `given` names: its whole id, or (as with git hashes) the start of
    the id of a trace with spans, 4 hex digits or more; LookupError when several start so.
    A prefix is matched on the spans' key, not on the calls, which have no index on it."""
    tree = read(store, given, limit)
    if tree is not None or not _HEX.fullmatch(given):
        return tree
    p = store.dialect.placeholder
    # Every id that starts with these hex digits lies between them and them followed by "g".
    rows = store.internal_query(
        f"SELECT DISTINCT trace_id FROM spans WHERE trace_id >= {p} AND trace_id < {p} LIMIT 2",
        [given, given + "g"],
        timeout_s=10,
    ).rows
    if len(rows) > 1:
        raise LookupError(f"trace id prefix {given!r} is ambiguous: more than one trace starts with it")
    return read(store, str(rows[0][0]), limit) if rows else None
