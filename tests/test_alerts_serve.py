"""`llmlog serve` posts alerts on its schedule: two servers over one store (one of them with
two workers), each running rounds every second, post each opening of a finding once."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.store import open_store
from tests.receiver import Receiver
from tests.test_serve_workers import Serving


def wait_for(condition: Callable[[], bool], timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


FLAGGED = "SELECT count(*) FROM calls WHERE model = 'flag'"


def flagged(session: str) -> Call:
    return Call(id=f"flag-{session}", timestamp=datetime.now(UTC), model="flag", session_id=session)


def events(db: str) -> list[str]:
    with open_store(db) as store:
        return [e.event for e in reversed(store.alert_events(100))]


@pytest.mark.slow
def test_servers_sharing_a_store_post_each_opening_once(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert([flagged("s1")])
    with Receiver() as hook:
        for args in (
            ["alerts", "webhook", "add", "ops", hook.url],
            ["alerts", "rule", "add", "flagged", FLAGGED, "--when", "> 0"],
        ):
            assert CliRunner().invoke(cli, ["--db", db, *args]).exit_code == 0
        # Two servers, one of them with two workers, each running a round every second.
        servers = [Serving(db, "--alerts-every", "1", workers=n) for n in (2, 1)]
        try:
            assert hook.wait_posts(1)
            with open_store(db) as store:
                store.erase(session_id="s1")
            assert wait_for(lambda: events(db)[-1:] == ["cleared"])
            with open_store(db) as store:
                store.insert([flagged("s2")])
            assert hook.wait_posts(2)
            with open_store(db) as store:
                store.erase(session_id="s2")
            # Rounds ran on after the post (one cleared it): none posted it again.
            assert wait_for(lambda: events(db)[-1:] == ["cleared"])
        finally:
            for s in servers:
                s.stop()
    assert [b["key"] for b in hook.bodies] == ["rule:flagged", "rule:flagged"]
    assert events(db) == ["opened", "posted", "cleared", "opened", "posted", "cleared"]
