"""A writer process whose second pipe cannot be made (the app is out of file descriptors,
EMFILE) leaks the first: its two ends stay open in the app for ever, one pair more at each
try to start the process again, which makes the shortage it failed on worse."""

from __future__ import annotations

import errno
import os
import sys

import pytest

from llmlog.core.config import Settings
from llmlog.pipeline import processes


def test_the_first_pipe_is_closed_when_the_second_cannot_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    real_pipe = os.pipe
    made: list[int] = []

    def pipe() -> tuple[int, int]:
        if sys._getframe(1).f_code.co_name == "_spawn" and made:
            raise OSError(errno.EMFILE, "Too many open files")
        fds = real_pipe()
        if sys._getframe(1).f_code.co_name == "_spawn":
            made.extend(fds)
        return fds

    procs = processes.Processes(Settings(db=":memory:"), 1, lambda n: None, lambda n: None)
    try:
        monkeypatch.setattr(processes.os, "pipe", pipe)
        with pytest.raises(OSError):
            procs._spawn()
        monkeypatch.undo()
        assert len(made) == 2
        still_open = []
        for fd in made:
            try:
                os.fstat(fd)
                still_open.append(fd)
            except OSError:
                pass
        for fd in still_open:
            os.close(fd)
        assert still_open == [], "the first pipe's ends were left open"
        assert procs._spawning == set()
    finally:
        procs.close(5)
