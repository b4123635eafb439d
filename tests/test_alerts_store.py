"""The state of alerts in each store (`llmlog.store.alerts`): the lease that lets one evaluator
at a time post, each finding's state, the history, and that read-only SQL reads none of it.
On SQLite, PostgreSQL, ClickHouse embedded (its private file) and ClickHouse as a server
keeps it (versioned rows, on the real engine embedded)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmlog.core.record import Call
from llmlog.store import ReadOnlyError, Store, open_store
from llmlog.store.alerts import Alert, AlertEvent, Delivery
from llmlog.store.clickhouse.embedded import PRIVATE_FILE, EmbeddedClickHouseStore
from llmlog.store.clickhouse.engine import EmbeddedEngine
from llmlog.store.clickhouse.store import ClickHouseStore
from llmlog.store.sqlite.store import SQLiteStore
from tests.backends import stored_bytes

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KINDS = ["sqlite", "postgres", "chdb", "clickhouse-server"]


@pytest.fixture(params=KINDS)
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores over one: as two processes (servers, a cron job) sharing it."""
    kind = request.param
    if kind == "clickhouse-server":
        # The server's store, on the engine embedded: one engine for both, as one server.
        engine = EmbeddedEngine(str(tmp_path / "ch"))
        try:
            yield (
                ClickHouseStore(f"chdb://{tmp_path}/ch", engine),
                ClickHouseStore(f"chdb://{tmp_path}/ch", engine),
            )
        finally:
            engine.close()
        return
    url = {
        "sqlite": str(tmp_path / "calls.db"),
        "chdb": f"chdb://{tmp_path}/ch",
        "postgres": request.getfixturevalue("pg_url") if kind == "postgres" else "",
    }[kind]
    first = open_store(url)
    # The embedded engine opens its directory once per process: the same store twice.
    second = first if kind == "chdb" else open_store(url)
    try:
        yield first, second
    finally:
        first.close()
        if second is not first:
            second.close()


def test_one_holder_of_the_lease_at_a_time(two: tuple[Store, Store]) -> None:
    a, b = two
    t = NOW.timestamp()
    assert a.take_alert_lease("a", 60, now=t)
    assert not b.take_alert_lease("b", 60, now=t + 1)
    assert a.take_alert_lease("a", 60, now=t + 30)  # renewed: until t + 90
    assert not b.take_alert_lease("b", 60, now=t + 89)
    assert b.take_alert_lease("b", 60, now=t + 91)  # expired: a holder that died lets go so
    assert not a.take_alert_lease("a", 60, now=t + 92)
    a.drop_alert_lease("a")  # not a's to drop
    assert not a.take_alert_lease("a", 60, now=t + 93)
    b.drop_alert_lease("b")
    assert a.take_alert_lease("a", 60, now=t + 94)


def test_states_and_history_are_kept_and_read_back(two: tuple[Store, Store]) -> None:
    a, b = two
    sent = Delivery(sent=NOW)
    failing = Delivery(failures=2, retry=NOW + timedelta(minutes=2), error="HTTP 500")
    open_one = Alert(
        "drift:code-review:v2:output_tokens", "drift", opened=NOW, seen=NOW, sentence="Longer answers.",
        numbers={"before": 120.0, "after": 410.5}, link="/reports/compare?feature=code-review",
        deliveries={"ops": sent, "slack": failing},
    )  # fmt: skip
    failed_rule = Alert("rule:spend", "rule", status="cleared", problem="timed out after 10 s")
    a.save_alerts([open_one, failed_rule])
    assert b.alerts() == [open_one, failed_rule]
    cleared = Alert(open_one.key, "drift", "cleared", NOW, NOW, NOW + timedelta(hours=1), "Longer answers.")
    a.save_alerts([cleared])  # in place of the state before
    assert b.alerts() == [cleared, failed_rule]
    events = [
        AlertEvent(NOW + timedelta(seconds=i), open_one.key, "drift", e, w, d)
        for i, (e, w, d) in enumerate([("opened", None, "Longer answers."), ("posted", "ops", ""),
                                       ("failed", "slack", "HTTP 500"), ("cleared", None, "")])
    ]  # fmt: skip
    a.add_alert_events(events)
    assert b.alert_events() == events[::-1]
    assert b.alert_events(limit=2) == events[:1:-1]
    # What is older than the history's days goes, and the findings cleared before then.
    a.forget_alerts(NOW + timedelta(hours=2))
    assert [x.key for x in b.alerts()] == ["rule:spend"]  # never opened: kept
    if not isinstance(b, ClickHouseStore) or hasattr(b, "_private"):  # a server drops it by TTL
        assert b.alert_events() == []


def test_read_only_sql_reads_no_alert_table(two: tuple[Store, Store]) -> None:
    a, _ = two
    if isinstance(a, ClickHouseStore) and not hasattr(a, "_private"):
        pytest.skip("a server's reader is granted the public tables only (`clickhouse.reader`)")
    a.save_alerts([Alert("k", "rule", opened=NOW, seen=NOW, sentence="s")])
    for table in ("alerts", "alert_events", "alert_lease"):
        with pytest.raises(ReadOnlyError):
            a.query(f"SELECT * FROM {table}")


def test_erasure_takes_the_alerts_naming_them(two: tuple[Store, Store], tmp_path: Path) -> None:
    a, b = two
    a.insert([Call(id=f"c-{u}", timestamp=NOW, model="m", user_id=u) for u in ("u1", "u10")])
    u1 = Alert("user:u1:error_rate", "user_outlier", opened=NOW, seen=NOW, sentence="u1 fails 40% of calls.")
    u10 = Alert("user:u10:error_rate", "user_outlier", opened=NOW, seen=NOW, sentence="u10 fails 30%.")
    linked = Alert("costly_session:s9", "costly_session", opened=NOW, seen=NOW, sentence="It costs $9.",
                   link="/users/u1")  # fmt: skip
    drift = Alert("drift:f:v2:output_tokens", "drift", opened=NOW, seen=NOW, sentence="f answers longer.")
    a.save_alerts([u1, u10, linked, drift])
    a.add_alert_events(
        [AlertEvent(NOW, s.key, s.kind, "opened", None, s.sentence) for s in (u1, u10, linked, drift)]
        + [AlertEvent(NOW, drift.key, "drift", "failed", "ops", "HTTP 500 (u1 is not here)")]
    )
    erased = a.erase(user_id="u1")
    # Two states (by its key; by its link), two lines (by the key; by the detail); "u10" stays.
    assert erased.calls == 1 and erased.alerts == 4
    assert [s.key for s in b.alerts()] == [drift.key, u10.key]
    assert sorted((e.key, e.event) for e in b.alert_events()) == [
        (linked.key, "opened"),
        (drift.key, "opened"),
        (u10.key, "opened"),
    ]
    # What was deleted is overwritten, not left in the file.
    if isinstance(a, SQLiteStore):
        assert b"u1 fails" not in stored_bytes(a.path)
    if isinstance(a, EmbeddedClickHouseStore):
        assert b"u1 fails" not in stored_bytes(str(tmp_path / "ch" / PRIVATE_FILE))
    elif isinstance(a, ClickHouseStore):
        # Versioned rows: neither the versions before nor a newer one that marks them deleted
        # (which would carry the same key and sentence) may be left, merged or not.
        for column, text in (("key", "u1:"), ("sentence", "u1 fails"), ("link", "/users/u1")):
            left = a._select(f"SELECT count() FROM alerts WHERE position({column}, %s) > 0", [text])
            assert left[0][0] == 0, column
