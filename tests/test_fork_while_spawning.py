"""A fork of the app made while a writer process is being spawned (another thread of the
app starting a worker) closes its copies of that process's pipes, as one made at any other
moment of the process's start does: held open there, the process never reads the end of
its input, and closing the writer waits its whole exit timeout, then kills it."""

from __future__ import annotations

import os
import subprocess
import sys

import anthropic
import pytest

import llmlog
from llmlog.demo.fake_provider import FakeProvider


def test_a_fork_made_while_the_process_is_spawned_closes_its_copy_of_the_input(
    db_path: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmlog.pipeline import processes

    real_pipe, real_popen = os.pipe, subprocess.Popen
    inputs: list[int] = []  # the app's end of each process's input
    held: list[int] = []  # 1: the fork still held it open

    def pipe() -> tuple[int, int]:
        fds = real_pipe()
        if sys._getframe(1).f_code.co_name == "_spawn" and not inputs:
            inputs.append(fds[1])
        return fds

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        if inputs and not held:
            pid = os.fork()  # the app's other thread, forking now
            if pid == 0:
                try:
                    os.fstat(inputs[0])
                except OSError:
                    os._exit(0)
                os._exit(1)
            held.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        return proc

    monkeypatch.setattr(processes.os, "pipe", pipe)
    monkeypatch.setattr(processes.subprocess, "Popen", popen)
    llmlog.configure(db=db_path, writer_processes=1)
    client = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert llmlog.flush(timeout=20)
    monkeypatch.undo()
    llmlog.configure(db=db_path)
    assert held == [0], "the fork kept the app's end of the process's input open"
