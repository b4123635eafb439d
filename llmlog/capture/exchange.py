"""What the HTTP layer saw of one model call, before any parsing.

The caller's thread only fills this in (a few appends and clock reads) and hands it to the
writer; turning it into a `Call` (JSON and SSE parsing, pricing) happens on the writer's
thread, off the caller's path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from llmlog.capture.context import CallContext


@dataclass(slots=True, eq=False)
class Exchange:
    provider: str  # which SDK made the call: "anthropic" or "openai"
    api: str  # "messages", "chat", "responses"
    url: str
    request_body: bytes
    context: CallContext
    started_at: float  # wall clock, epoch seconds
    t0: float  # perf_counter at send
    retry_count: int = 0
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    # Raw (possibly content-encoded) body bytes, each with its arrival offset in ms.
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    ended_ms: float | None = None
    # Transport failure: (kind, exception class, message); kind is "timeout" or "connection_error".
    failure: tuple[str, str, str] | None = None
    incomplete: bool = False
    _sink: Callable[[Exchange], object] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to the writer processes thousands a second: rebuilt there from its fields in
        # order, not from a state dict through copyreg and the Python `__setstate__` of a
        # dataclass with slots (a tenth of what loading one cost). Where it would be handed
        # is not sent.
        return (Exchange, tuple(getattr(self, name) for name in _SENT))

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000.0

    def add_chunk(self, chunk: bytes) -> None:
        if chunk:
            self.chunks.append((self.elapsed_ms(), chunk))

    def finish(self, *, incomplete: bool = False, failure: BaseException | None = None) -> None:
        """Close the exchange once and hand it on; later calls are no-ops."""
        sink = self._sink
        if sink is None:
            return
        self._sink = None
        self.ended_ms = self.elapsed_ms()
        self.incomplete = incomplete
        if failure is not None:
            self.failure = describe_failure(failure)
        sink(self)


# The fields an exchange is sent with, in `__init__`'s order: all but its `_sink`.
_SENT = tuple(f.name for f in fields(Exchange) if f.name != "_sink")


def describe_failure(exc: BaseException) -> tuple[str, str, str]:
    name = type(exc).__name__
    if isinstance(exc, GeneratorExit | KeyboardInterrupt | SystemExit | asyncio.CancelledError):
        kind = "cancelled"
    else:
        kind = "timeout" if "Timeout" in name else "connection_error"
    return kind, f"{type(exc).__module__}.{name}", str(exc) or name
