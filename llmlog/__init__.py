"""llmlog: the flight recorder for LLM calls.

    import anthropic, llmlog

    client = llmlog.wrap(anthropic.Anthropic())
    with llmlog.context(feature="support-bot", user_id="u_42", session_id="s_1"):
        client.messages.create(model="claude-sonnet-4-5", max_tokens=512, messages=[...])

Every call becomes one row of the `calls` relation in a SQLite file (by default), priced at
ingest; `llmlog calls`, `llmlog show ID` and `llmlog query "SQL"` read it back.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Any, TypeVar

from llmlog.capture.context import context, current, propagate
from llmlog.capture.exchange import Exchange
from llmlog.capture.spans import ActiveSpan, Scope, trace_decorator
from llmlog.capture.wrap import instrument
from llmlog.core.config import Settings
from llmlog.core.logs import recording_log
from llmlog.core.prompts import Prompt, prompt
from llmlog.core.record import COLUMNS, Call
from llmlog.pipeline.writer import Stats, Writer, anchored

__all__ = [
    "COLUMNS",
    "Call",
    "Prompt",
    "Settings",
    "configure",
    "context",
    "current",
    "flush",
    "prompt",
    "propagate",
    "span",
    "stats",
    "trace",
    "wrap",
]
__version__ = "0.1.0"

C = TypeVar("C")
log = recording_log()  # never raises: a handler of the app's cannot stop recording

_lock = threading.Lock()
_settings: Settings | None = None
_writer: Writer | None = None
_exit_hook = False
_said: set[str] = set()  # what was wrong with the settings, said once each


def configure(**settings: Any) -> Settings:
    """Set where and how calls are recorded; see `llmlog.core.config.Settings` for the fields.

    >>> llmlog.configure(db="calls.db", on_full="block")  # or sqlite:////absolute/calls.db

    Calls already queued are flushed to the previous store first.
    """
    global _settings, _writer
    # A bad key or redaction rule is an error here, not a lost call later; a relative store
    # path is the file where the app is now, wherever it goes before its first call.
    new = anchored(Settings(**settings))
    with _lock:
        old, _writer, _settings = _writer, None, new
    if old is not None:
        old.close()
    return new


def _get_writer() -> Writer:
    global _writer, _settings, _exit_hook
    writer = _writer
    if writer is not None:
        return writer
    with _lock:
        if _writer is None:
            _settings = _settings or Settings()
            _writer = Writer(_settings)
            if not _exit_hook:
                atexit.register(_at_exit)
                _exit_hook = True
        return _writer


def _submit(item: Exchange | Call | ActiveSpan) -> None:
    # Resolved per call, so configure() after wrap() redirects already-wrapped clients.
    try:
        writer = _get_writer()
    except Exception as exc:
        # Settings read from the environment on first use (no configure()) can be wrong: a
        # bad key or redaction rule. The call is not recorded, and the log says why, once;
        # the app's own call goes on.
        if str(exc) not in _said:
            _said.add(str(exc))
            log.error("llmlog: calls are not recorded: the settings are wrong: %s", exc)
        return
    writer.submit(item)


def wrap(client: C) -> C:
    """Record every model call `client` makes; returns the same client, otherwise unchanged.

    Takes anthropic.Anthropic / AsyncAnthropic and openai.OpenAI / AsyncOpenAI clients.
    """
    return instrument(client, _submit)


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[ActiveSpan]:
    """A step of the app's own, timed, as a span of the trace it runs in (a new trace when
    it runs in none): model calls made inside it by wrapped clients are its children, as
    are spans inside it. Its status is an error when an exception leaves it.

    >>> with llmlog.span("retrieve-context", k=5) as s:
    ...     docs = search(question)
    ...     s.set(found=len(docs))
    """
    return Scope(_submit, name, attributes)


def trace(fn: Any = None, *, name: str | None = None) -> Any:
    """Run a function in a span of its own each time it is called: plain, async, or a
    generator (the span lasts until it is exhausted or closed).

    >>> @llmlog.trace
    ... async def answer(question): ...
    >>> @llmlog.trace(name="format-answer")
    ... def format_answer(text): ...
    """
    return trace_decorator(_submit, fn, name)


def flush(timeout: float | None = None) -> bool:
    """Block until every call recorded so far is in the store; False if `timeout` ran out."""
    writer = _writer
    return True if writer is None else writer.flush(timeout)


def stats() -> Stats:
    """Counters: recorded, dropped, failed, store_errors, queued."""
    writer = _writer
    return Stats() if writer is None else writer.stats()


def _at_exit() -> None:
    writer = _writer
    if writer is not None:
        writer.close()


def _after_fork() -> None:
    # The writer thread does not survive fork; the child starts its own on first use.
    global _writer, _lock
    _lock = threading.Lock()
    _writer = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
