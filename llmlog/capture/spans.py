"""Spans an app makes itself: the steps of a request around its model calls.

    with llmlog.span("retrieve-context", k=5) as s:
        docs = search(question)
        s.set(found=len(docs))

    @llmlog.trace
    async def answer(question): ...

A span opens a trace (or joins the one it is in) through the same context `llmlog.context`
uses, so a model call made inside it, by a wrapped client, is its child (`trace_id`,
`parent_id`), and so is a span inside it; asyncio tasks inherit it, threads through
`llmlog.propagate`. When the app already has an OpenTelemetry span active and no llmlog
span is open, a span (and a wrapped call) joins that span's trace instead of starting its
own. A finished span goes to the writer as a call does: off the app's path, never raising
into it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar, overload

from llmlog.capture.context import CallContext, _current
from llmlog.core.record import Span

F = TypeVar("F", bound=Callable[..., Any])
Submit = Callable[["ActiveSpan"], None]

# Ids as OpenTelemetry prints them (hex, 16 bytes a trace, 8 a span). Not secrets: ids only
# need not to collide, and the module's generator is several times cheaper than os.urandom.
_random = random.Random()


def new_trace_id() -> str:
    return f"{_random.getrandbits(128):032x}"


def new_span_id() -> str:
    return f"{_random.getrandbits(64):016x}"


def otel_parent() -> tuple[str, str] | None:
    """The trace and span ids of the app's active OpenTelemetry span, or None. Read only when
    the app has imported OpenTelemetry (llmlog does not depend on it)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        context = trace.get_current_span().get_span_context()
    except Exception:  # an SDK in a state of its own: llmlog starts a trace of its own
        return None
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def joined(ctx: CallContext) -> CallContext:
    """`ctx`, in the active OpenTelemetry span's trace when it is in no trace of llmlog's."""
    if ctx.trace_id is not None:
        return ctx
    parent = otel_parent()
    if parent is None:
        return ctx
    return ctx.in_trace(parent[0], parent[1])


# How deep an attribute's value is followed: past it, the rest is kept as text.
_DEPTH = 32


def _text(value: Any) -> str:
    """`value` as text, whatever its `__str__` does: the app's objects are its own."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _value(value: Any, depth: int = 0) -> Any:
    """An attribute as stored: JSON's own types as they are, anything else as its text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if depth >= _DEPTH:
        return "…"
    if isinstance(value, list | tuple):
        return [_value(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_text(k): _value(v, depth + 1) for k, v in value.items()}
    return _text(value)


def _values(attributes: dict[str, Any]) -> dict[str, Any]:
    try:
        return {_text(k): _value(v) for k, v in attributes.items()}
    except Exception:  # a mapping that changes as it is read: the span goes on without it
        return {}


class ActiveSpan:
    """A span while it is open: what `with llmlog.span(...) as s` gives."""

    __slots__ = (
        "attributes",
        "end",
        "events",
        "name",
        "parent_id",
        "span_id",
        "start",
        "status",
        "status_message",
        "trace_id",
    )

    def __init__(self, name: str, trace_id: str, parent_id: str | None, attributes: dict[str, Any]) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = new_span_id()
        self.parent_id = parent_id
        self.attributes = attributes
        self.events: list[dict[str, Any]] = []
        self.status = "unset"
        self.status_message: str | None = None
        self.start = time.time()  # epoch seconds
        self.end: float | None = None

    # Once the span has ended it is the writer's: what the handle is told then is ignored.

    def set(self, **attributes: Any) -> None:
        """Add or replace attributes."""
        if self.end is None:
            self.attributes.update(_values(attributes))

    def event(self, name: str, **attributes: Any) -> None:
        """Something that happened at a moment of the span (a retry, a cache hit)."""
        if self.end is None:
            self.events.append(
                {"name": _text(name), "time": _now().isoformat(), "attributes": _values(attributes)}
            )

    def fail(self, message: str | None = None) -> None:
        """Mark the span failed, without an exception (one raised out of it does so itself)."""
        if self.end is None:
            self.status, self.status_message = "error", None if message is None else _text(message)

    def ok(self) -> None:
        if self.end is None:
            self.status = "ok"

    def record(self) -> Span:
        """The span as kept: made on the writer's thread, off the app's path."""
        return Span(
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_id=self.parent_id,
            name=self.name,
            kind="internal",
            start=datetime.fromtimestamp(self.start, UTC),
            end=None if self.end is None else datetime.fromtimestamp(self.end, UTC),
            status=self.status,
            status_message=self.status_message,
            attributes=self.attributes,
            events=self.events,
        )


def _now() -> datetime:
    return datetime.now(UTC)


class Scope:
    """One span's life: opened (made), its context entered and left around the code it
    times (once for a block; around each step of a generator), and finished: handed to the
    writer as it is, to be made a record there."""

    __slots__ = ("_begun", "_inside", "_submit", "_token", "span")

    def __init__(self, submit: Submit, name: str, attributes: dict[str, Any]) -> None:
        self._submit = submit
        ctx = joined(_current.get())
        trace_id = ctx.trace_id or new_trace_id()
        self.span = ActiveSpan(
            _text(name), trace_id, ctx.parent_id, _values(attributes) if attributes else {}
        )
        self._begun = time.perf_counter()
        self._token: Any = None
        self._inside: CallContext | None = None

    def enter(self) -> Any:
        return _current.set(_current.get().in_trace(self.span.trace_id, self.span.span_id))

    def step_in(self) -> Any:
        """A generator's step: in the context its body left at the step before (what it set
        across a yield, `llmlog.context` or a span of its own, holds), else the span's."""
        if self._inside is None:
            return self.enter()
        return _current.set(self._inside)

    def step_out(self, token: Any) -> None:
        self._inside = _current.get()
        self.leave(token)

    @staticmethod
    def leave(token: Any) -> None:
        # A block left in another context than it was entered in (a generator stepped
        # through `Context.run`) has nothing to restore here: the app goes on regardless.
        with contextlib.suppress(ValueError):
            _current.reset(token)

    def finish(self, exc: BaseException | None) -> None:
        s = self.span
        # The end from the monotonic clock: a wall clock stepped meanwhile moves no bar.
        s.end = s.start + (time.perf_counter() - self._begun)
        with contextlib.suppress(Exception):  # recording never breaks the app, nor its exception
            if exc is not None and not isinstance(exc, GeneratorExit | StopIteration | StopAsyncIteration):
                said = _text(exc)
                attributes = {"exception.type": type(exc).__qualname__, "exception.message": said}
                event = "exception"
                if isinstance(exc, Exception):
                    s.status, s.status_message = "error", f"{type(exc).__name__}: {said}"
                else:
                    # Cancelled (a task's CancelledError: a client gone, a request timed
                    # out above it) or interrupted (KeyboardInterrupt, SystemExit): the
                    # work was stopped, not failed, so the span is not counted as an
                    # error; the event says why it ended early.
                    event = "cancelled"
                s.events.append({"name": event, "time": _now().isoformat(), "attributes": attributes})
            self._submit(s)

    # As a `with` block (in sync and async code alike).
    def __enter__(self) -> ActiveSpan:
        self._token = self.enter()
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.leave(self._token)
        self.finish(exc)


def traced(submit: Submit, fn: F, name: str | None = None) -> F:
    """`fn` (a function, coroutine function, generator or async generator function) run in
    a span of its own each time it is called, named `name` or for the function."""
    label = name or getattr(fn, "__name__", None) or repr(fn)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            scope = Scope(submit, label, {})
            inner = fn(*args, **kwargs)
            error: BaseException | None = None
            try:
                step: Callable[[], Any] = functools.partial(inner.asend, None)
                while True:
                    token = scope.step_in()
                    try:
                        value = await step()
                    except StopAsyncIteration:
                        return
                    finally:
                        scope.step_out(token)
                    try:
                        sent = yield value
                    except GeneratorExit:
                        # Closed early: its cleanup (finally blocks) runs inside the span
                        # too, as each step did.
                        token = scope.step_in()
                        try:
                            await inner.aclose()
                        finally:
                            scope.step_out(token)
                        raise
                    except BaseException as thrown:  # thrown in by the consumer: the generator's to handle
                        step = functools.partial(inner.athrow, thrown)
                    else:
                        step = functools.partial(inner.asend, sent)
            except BaseException as exc:
                error = exc
                raise
            finally:
                scope.finish(error)

        return agen  # type: ignore[return-value]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
            scope = Scope(submit, label, {})
            inner = fn(*args, **kwargs)
            error: BaseException | None = None
            try:
                token = scope.step_in()
                try:
                    value = next(inner)
                finally:
                    scope.step_out(token)
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        token = scope.step_in()  # its cleanup inside the span, as each step
                        try:
                            inner.close()
                        finally:
                            scope.step_out(token)
                        raise
                    except BaseException as thrown:
                        step: Callable[[], Any] = functools.partial(inner.throw, thrown)
                    else:
                        step = functools.partial(inner.send, sent)
                    token = scope.step_in()
                    try:
                        value = step()
                    finally:
                        scope.step_out(token)
            except StopIteration as stop:
                return stop.value
            except BaseException as exc:
                error = exc
                raise
            finally:
                scope.finish(error)

        return gen  # type: ignore[return-value]

    # An object whose `__call__` is a coroutine function is awaited as one.
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):

        @functools.wraps(fn)
        async def coro(*args: Any, **kwargs: Any) -> Any:
            with Scope(submit, label, {}):
                return await fn(*args, **kwargs)

        return coro  # type: ignore[return-value]

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        with Scope(submit, label, {}):
            return fn(*args, **kwargs)

    return plain  # type: ignore[return-value]


@overload
def trace_decorator(submit: Submit, fn: F, name: str | None = None) -> F: ...
@overload
def trace_decorator(submit: Submit, fn: None, name: str | None = None) -> Callable[[F], F]: ...
def trace_decorator(submit: Submit, fn: F | None, name: str | None = None) -> F | Callable[[F], F]:
    """`@trace` and `@trace(name="...")` alike, above or below `@staticmethod` and
    `@classmethod`."""
    if fn is None:
        return lambda f: trace_decorator(submit, f, name)
    if isinstance(fn, staticmethod | classmethod):
        return type(fn)(traced(submit, fn.__func__, name))
    return traced(submit, fn, name)
