"""Who and what a call is for: session, user, feature, prompt version, metadata, tags.

Held in a `ContextVar`, so asyncio tasks inherit it always; threads inherit it only when
the caller asks (`propagate`), because a worker pool's threads outlive any one request.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CallContext:
    session_id: str | None = None
    user_id: str | None = None
    feature: str | None = None
    prompt_template_version: str | None = None
    trace_id: str | None = None
    parent_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent with each exchange to the writer processes: rebuilt from its fields in order,
        # not through copyreg and the Python state methods of a frozen dataclass with slots.
        return (CallContext, tuple(getattr(self, name) for name in _FIELDS))

    def merged(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        **fields: str | None,
    ) -> CallContext:
        """Inner wins for scalar fields, metadata merges (inner keys win), tags add up."""
        values = {
            name: (fields[name] if fields.get(name) is not None else getattr(self, name))
            for name in (
                "session_id",
                "user_id",
                "feature",
                "prompt_template_version",
                "trace_id",
                "parent_id",
            )
        }
        merged_meta = {**self.metadata, **(metadata or {})}
        merged_tags = self.tags + tuple(t for t in (tags or ()) if t not in self.tags)
        return CallContext(metadata=merged_meta, tags=merged_tags, **values)

    def in_trace(self, trace_id: str, parent_id: str | None) -> CallContext:
        """This context in a trace, under a parent: what a span sets for the code inside it
        (built directly: it is on the path of every span)."""
        return CallContext(
            session_id=self.session_id,
            user_id=self.user_id,
            feature=self.feature,
            prompt_template_version=self.prompt_template_version,
            trace_id=trace_id,
            parent_id=parent_id,
            metadata=self.metadata,
            tags=self.tags,
        )


# A context's fields, in `__init__`'s order.
_FIELDS = tuple(f.name for f in fields(CallContext))


EMPTY = CallContext()
_current: ContextVar[CallContext] = ContextVar("llmlog_context", default=EMPTY)


def current() -> CallContext:
    return _current.get()


@contextlib.contextmanager
def context(
    *,
    session_id: str | None = None,
    user_id: str | None = None,
    feature: str | None = None,
    prompt_template_version: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    trace_id: str | None = None,
    parent_id: str | None = None,
) -> Iterator[CallContext]:
    """Attach context to every call made inside the block.

    >>> with llmlog.context(feature="support-bot", user_id="u_42", tags=["beta"]):
    ...     client.messages.create(...)
    """
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError("metadata must be a dict")
    if isinstance(tags, str):
        raise TypeError("tags must be a list of strings, not a string")
    ctx = _current.get().merged(
        session_id=session_id,
        user_id=user_id,
        feature=feature,
        prompt_template_version=prompt_template_version,
        trace_id=trace_id,
        parent_id=parent_id,
        metadata=metadata,
        tags=tags,
    )
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def propagate(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind `fn` to the current llmlog context, for running it in another thread.

    >>> executor.submit(llmlog.propagate(answer), question)
    >>> threading.Thread(target=llmlog.propagate(worker)).start()
    """
    captured = _current.get()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        # Set and reset our one variable rather than running in a copied Context: a
        # Context object cannot be entered by two threads at once, a bound fn can.
        token = _current.set(captured)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)

    return bound
