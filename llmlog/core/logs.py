"""The log of the recording path: a line that cannot be written never stops recording.

What llmlog logs while it records (a store down and retried, a call refused, a full queue)
goes to the app's handlers, on the app's threads and the writer's. A handler is meant to
report its own failures through `handleError`, and Python's own do; one of the app's that
raises instead (a sink of its own that is down, or a test runner's that fails the test)
would otherwise raise out of the app's SDK call or end the writer's thread, after which
nothing is stored. The line is lost; the calls are not.
"""

from __future__ import annotations

import logging
import threading
from typing import Any


class _Unfailing(logging.LoggerAdapter[logging.Logger]):
    """A logger whose calls never raise, whatever its handlers do."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        # One frame more than the logger's own: the line names the caller, not this method.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        try:
            super().log(level, msg, *args, **kwargs)
        except Exception:
            pass
        except BaseException:
            # What ends a program or a test (KeyboardInterrupt, SystemExit, a test runner's
            # failure) is the app's to see on its own threads; on one of llmlog's (all named
            # so), it would end the thread, and recording with it.
            if not threading.current_thread().name.startswith("llmlog-"):
                raise

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, kwargs  # no `extra` of the adapter's: the caller's own, if any


def recording_log(name: str = "llmlog") -> logging.LoggerAdapter[logging.Logger]:
    """The logger `name`, for code on the recording path: its calls never raise."""
    return _Unfailing(logging.getLogger(name), None)
