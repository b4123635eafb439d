"""The ClickHouse store against the real engine, embedded (chdb): every statement the store
issues runs in ClickHouse itself. The calls relation and its three first queries, filters,
a batch sent twice, the daily rollup, read-only SQL, the cluster DDL (parsed and checked by
the engine), and a clear refusal for what the store does not do yet."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.store import ReadOnlyError, open_store
from llmlog.store.clickhouse.engine import bind
from llmlog.store.clickhouse.schema import statements
from llmlog.store.clickhouse.store import ClickHouseStore

# The calls of `calls()`, a minute apart before NOW, fall in one UTC day: the figures by day
# compared below are those of one day (in the day's first hour, NOW is an hour earlier).
NOW = datetime.now(UTC).replace(microsecond=123456)
NOW -= timedelta(hours=1) if NOW.hour == 0 else timedelta(0)


def calls(n: int = 30) -> list[Call]:
    return [
        Call(id=f"call-{i:03d}", timestamp=NOW - timedelta(minutes=i), model="gpt-4.1" if i % 2 else "claude",
             feature="support" if i % 3 else "summarize", user_id=f"u{i % 4}", session_id=f"s{i // 10}",
             prompt_template_version="v1" if i < 15 else "v2", output_tokens=10 * i,
             cost_usd=0.01 if i % 5 else None,
             messages=[{"role": "user", "content": f"question {i} about a REFUND"}],
             response={"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]},
             error={"type": "overloaded_error", "message": "busy"} if i % 7 == 0 else None,
             metadata={"tier": "pro" if i % 2 else "free", "retry": i % 2 == 0, "n": i},
             tags=["beta"] if i < 5 else None)
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    with open_store(f"chdb://{tmp_path}/ch") as s:
        assert isinstance(s, ClickHouseStore)
        yield s


def test_calls_go_in_once_and_come_back_whole(store: ClickHouseStore) -> None:
    batch = calls()
    assert store.insert(batch) == 30
    assert store.insert(batch[:10]) == 0  # a batch sent again
    assert store.count(CallFilter()) == 30
    call = store.get("call-003")
    assert call == batch[3]
    with pytest.raises(LookupError, match="more than one"):
        store.get("call-0")
    assert store.get("call-029") == batch[29] and store.get("nope") is None


def test_the_three_first_queries_run_as_written(store: ClickHouseStore) -> None:
    store.insert(calls())
    failed = store.query("SELECT * FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC")
    assert [r[0] for r in failed.rows] == ["call-000", "call-007", "call-014", "call-021", "call-028"]
    by_model = store.query("SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model ORDER BY model")
    assert [(m, n) for m, n, _ in by_model.rows] == [("claude", 15), ("gpt-4.1", 15)]
    assert by_model.rows[0][2] == pytest.approx(0.01 * 12)
    versions = store.query(
        "SELECT prompt_template_version, AVG(output_tokens) FROM calls GROUP BY 1 ORDER BY 1"
    )
    assert versions.rows == [("v1", 70.0), ("v2", 220.0)]
    # JSON columns through ClickHouse's JSON functions.
    tiers = store.query(
        "SELECT JSONExtractString(metadata, 'tier') AS t, count() FROM calls GROUP BY t ORDER BY t"
    )
    assert tiers.rows == [("free", 15), ("pro", 15)]


def test_filters(store: ClickHouseStore) -> None:
    store.insert(calls())
    assert store.count(CallFilter(model="claude", feature="summarize")) == 5
    assert store.count(CallFilter(errors=True)) == 5 and store.count(CallFilter(errors=False)) == 25
    assert store.count(CallFilter(tag="beta")) == 5
    assert store.count(CallFilter(metadata=[("tier", "pro")])) == 15
    assert store.count(CallFilter(metadata=[("retry", "true"), ("n", "4")])) == 1
    assert store.count(CallFilter(text="question 1 ")) == 1 and store.count(CallFilter(text="refund")) == 30
    assert store.count(CallFilter(since=NOW - timedelta(minutes=9, seconds=30))) == 10
    assert store.count(CallFilter(until=NOW - timedelta(minutes=9, seconds=30))) == 20
    assert [c.id for c in store.recent(CallFilter(user_id="u1"), 3)] == ["call-001", "call-005", "call-009"]
    assert [c.id for c in store.iter_calls(CallFilter(session_id="s0"), batch=4)] == [
        f"call-{i:03d}" for i in range(9, -1, -1)
    ]
    picked = store.sample(CallFilter(feature="support"), 5)
    assert len({c.id for c in picked}) == 5 and all(c.feature == "support" for c in picked)
    assert store.existing_ids(["call-001", "x"]) == {"call-001"}
    # A value is only ever a parameter.
    hostile = "x' OR 1=1 --"
    assert store.count(CallFilter(feature=hostile)) == 0 and store.count(CallFilter(text=hostile)) == 0


def test_the_daily_rollup_is_kept_as_calls_arrive(store: ClickHouseStore) -> None:
    store.insert(calls()[:15])
    store.insert(calls()[15:])
    rows = store.cost_by_day(NOW - timedelta(days=1))
    assert {(m, n) for _, m, n, _ in rows} == {("claude", 15), ("gpt-4.1", 15)}
    assert sum(c or 0 for *_, c in rows) == pytest.approx(0.01 * 24)
    summed = store.query("SELECT sum(calls), sum(errors), sum(priced_calls) FROM daily").rows
    assert summed == [(30, 5, 24)]


def test_sql_is_read_only_and_one_statement(store: ClickHouseStore) -> None:
    store.insert(calls(3))
    refused = (
        "DROP TABLE calls",
        "INSERT INTO calls (id, timestamp) VALUES ('x', now())",
        "SELECT 1; DROP TABLE calls",
        "ALTER TABLE calls DELETE WHERE 1",
        "SELECT * FROM nowhere",
    )
    for sql in refused:
        with pytest.raises(ReadOnlyError):
            store.query(sql)
    assert store.count(CallFilter()) == 3
    assert store.query("SELECT id FROM calls ORDER BY id", limit=2).truncated
    assert bind("SELECT %s", ["it's"]) == "SELECT 'it\\'s'"


def test_settings_last_write_wins(store: ClickHouseStore) -> None:
    assert store.setting("k") is None
    store.set_setting("k", {"days": 30})
    store.set_setting("k", {"days": 60})
    assert store.setting("k") == {"days": 60}


def test_search_finds_the_needles(store: ClickHouseStore) -> None:
    from tests.test_search import haystack

    store.insert(haystack(100))
    everything = CallFilter()

    def ids(words: str, f: CallFilter = everything) -> list[str]:
        return [h.call.id for h in store.search(words, f)]

    assert ids("xylophone") == ["thrice", "once"]  # said three times ranks first
    assert ids("XYLOPHONES") == ["thrice", "once"] and ids("xylophone", CallFilter(feature="chat")) == [
        "once"
    ]
    assert ids("xylophone -broken") == ["thrice"] and ids("quokkaexpress") == ["tool-result"]
    assert ids("gryphon") == ["failed"] and ids('"blue whale"') == ["phrase"] and ids('"whale blue"') == []
    assert set(ids("gryphon OR marmalade")) == {"failed", "tool-call"} and ids("-nebula") == []
    for typed in ['"', "a*", "'); DROP TABLE calls; --", "\\", "(?i).*"]:
        store.search(typed, everything)
    assert store.count(everything) == 107


def test_calls_like_this_one(store: ClickHouseStore) -> None:
    from tests.test_vectors import calls as paraphrases

    store.insert(paraphrases())
    assert store.enable_vectors() == 48
    assert {c.id for c, _ in store.similar("c0", CallFilter(), limit=3)} == {"c1", "c2", "c3"}
    # A record sent again under a stored id changes neither the call nor its vector.
    before = store.internal_query("SELECT embedding FROM call_data WHERE id = 'c1'").rows
    store.insert([paraphrases()[-1].replace(id="c1")])
    assert store.internal_query("SELECT embedding FROM call_data WHERE id = 'c1'").rows == before


def test_rotation_leaves_no_vector_of_the_text_it_seals(store: ClickHouseStore) -> None:
    from llmlog.core.encryption import Keyring
    from llmlog.operations.sealing import rotate
    from tests.test_encryption import K1
    from tests.test_vectors import calls as paraphrases

    store.insert(paraphrases()[:6])
    assert store.enable_vectors() == 6
    vectors = "SELECT count() FROM call_data WHERE embedding IS NOT NULL"
    rotate(store, Keyring.parse(K1), "test", settle_s=0)
    assert store.internal_query(vectors).rows == [(0,)]


def test_regulated_mode_seals_and_audits(store: ClickHouseStore) -> None:
    from llmlog.core.encryption import Keyring
    from tests.test_encryption import K1

    store.keyring = Keyring.parse(K1)
    store.reader = "ada"
    store.insert(calls(2))
    raw = store.query("SELECT messages FROM calls ORDER BY id").rows
    assert all("question" not in r[0] and "llmlog-enc:v1:k1:" in r[0] for r in raw)
    call = store.get("call-001")
    assert call is not None and call.messages == calls(2)[1].messages
    (entry, *_) = store.audit_log()
    assert (entry.who, entry.action, entry.call_ids) == ("ada", "read", ["call-001"])
    store.update_content(call.replace(messages=[{"role": "user", "content": "[REDACTED]"}]))
    again = store.get("call-001")
    assert again is not None and again.messages == [{"role": "user", "content": "[REDACTED]"}]
    store.keyring = None  # what search reads is computed from the stored (sealed) text
    store.update_content(call.replace(messages=[{"role": "user", "content": "a walrus said it"}]))
    assert [h.call.id for h in store.search("walrus", CallFilter())] == ["call-001"]


def test_the_cluster_ddl_is_valid_clickhouse(store: ClickHouseStore) -> None:
    ddl = list(statements("prod"))
    assert any("ReplicatedReplacingMergeTree" in s for s in ddl) and any("Distributed(prod" in s for s in ddl)
    assert all(" ON CLUSTER prod" in s for s in ddl)
    for sql in ddl:  # parsed by the engine itself
        (formatted,) = store.engine.rows(bind("SELECT formatQuerySingleLine(%s)", [sql]))[1][0]
        assert formatted.startswith("CREATE")


def test_the_reports_find_what_was_planted(store: ClickHouseStore) -> None:
    """The reports' SQL, shared with the other stores, on ClickHouse: the same findings."""
    from llmlog.analysis import reports
    from llmlog.analysis.dashboard import Period
    from tests import test_investigate as planted

    store.insert(planted.calls_with_errors())
    groups = reports.errors_report(store, Period.ending(7, planted.TODAY))
    assert [(g.error_type, g.model, g.feature, g.errors, g.new) for g in groups] == [
        ("tool_schema_error", "claude", "support-bot", 15, True),
        ("rate_limit_error", "gpt-4.1", "search", 14, False),
    ]
    assert groups[0].per_day == [0, 0, 0, 0, 5, 5, 5] and groups[0].examples[0].startswith("b-0-")


def test_drift_and_spikes_find_what_was_planted(store: ClickHouseStore) -> None:
    from llmlog.analysis import reports
    from llmlog.analysis.dashboard import Period
    from tests import test_investigate as planted

    store.insert(planted.drifting_calls())
    found = {(c.feature, c.version, c.metric) for c in reports.drift_report(store, now=planted.NOW)}
    assert found == {
        ("summarize", "v1", "output_tokens"),
        ("search", "v3", "error_rate"),
        ("chat", "v1", "refusal_rate"),
        ("triage", reports.ALL_VERSIONS, "output_tokens"),
        ("triage", reports.ALL_VERSIONS, "cost_usd"),
    }
    store.insert(planted.people_calls())
    spikes = reports.spikes_report(store, Period.ending(7, planted.TODAY))
    assert ("u-broken", "error_rate") in {(o.user_id, o.metric) for o in spikes.outliers}
    assert spikes.sessions[0].session_id == "long"


def test_the_people_pages_and_facets(store: ClickHouseStore) -> None:
    store.insert(calls())
    users = store.users(CallFilter(since=NOW - timedelta(days=2)))
    assert sum(u.calls for u in users) == 30 and {u.user_id for u in users} == {"u0", "u1", "u2", "u3"}
    sessions = store.sessions(CallFilter())
    assert [(s.session_id, s.calls) for s in sessions] == [("s0", 10), ("s1", 10), ("s2", 10)]
    facets = store.facets(CallFilter(), ["feature", "error"])
    assert facets["feature"].values == [("support", 20), ("summarize", 10)]
    assert facets["error"].values == [("ok", 25), ("error", 5)]
    assert store.facets(CallFilter(user_id="u1"), ["model"])["model"].values == [("gpt-4.1", 8)]


def test_accounts_and_tokens(store: ClickHouseStore) -> None:
    store.add_account("ada", "admin", "hash1")
    with pytest.raises(ValueError, match="already"):
        store.add_account("ada", "viewer", "x")
    assert store.set_account("ada", role="debugger") and not store.set_account("nobody", role="viewer")
    account = store.account("ada")
    assert account is not None and (account.role, account.password_hash) == ("debugger", "hash1")
    store.add_token("ci", "ingest", b"\x01\x02")
    assert store.token(b"\x01\x02") is not None and store.setting("ingest_tokens_required") is True
    assert store.remove_account("ada") and store.accounts() == [] and not store.remove_account("ada")
    assert store.remove_token("ci") and store.tokens() == [] and store.token(b"\x01\x02") is None
    assert store.setting("accounts_required") is True  # once asked, always asked


def test_retention_keeps_the_cold_figures(store: ClickHouseStore) -> None:
    """Calls past their window go (by the table's TTL, and by a run); `daily` and
    `people_daily` keep standing for them, so reports read the same before and after."""
    from llmlog.analysis import reports
    from llmlog.analysis.dashboard import Period
    from llmlog.operations import retention
    from llmlog.store import retention_policy
    from tests import test_investigate as planted

    store.insert(planted.calls_with_errors())  # five weeks
    period = Period.ending(35, planted.TODAY)
    before = reports.errors_report(store, period)
    retention_policy.set_policy(store, retention_policy.Policy(days=10, features={"search": 3, "it's": 5}))
    (create,) = store.query("SELECT create_table_query FROM system.tables WHERE name = 'call_data'").rows[0]
    assert "toDate(timestamp) + toIntervalDay(4) WHERE feature = 'search'" in create
    assert "feature = 'it\\'s'" in create and "toIntervalDay(11)" in create
    report = retention.run(store, today=planted.TODAY)
    kept = store.query(
        "SELECT feature, min(toDate(timestamp)) FROM calls GROUP BY feature ORDER BY feature"
    ).rows
    assert kept == [
        ("search", (planted.TODAY - timedelta(days=3)).isoformat()),
        ("support-bot", (planted.TODAY - timedelta(days=10)).isoformat()),
    ]
    # The TTL had already dropped them as it was set (the engine applies a new TTL to the
    # parts it has), so the run found little or nothing left to do.
    assert report.calls >= 0 and store.count(CallFilter()) == 4 * 20 + 11 * 20
    assert store.query("SELECT sum(calls) FROM daily").rows == [(35 * 40,)]
    after = reports.errors_report(store, period, examples=0)
    assert [(g.error_type, g.errors, g.calls, g.per_day) for g in after] == [
        (g.error_type, g.errors, g.calls, g.per_day) for g in before
    ]
    assert retention.run(store, today=planted.TODAY).calls == 0  # again: nothing more


def test_erasure_and_repricing(store: ClickHouseStore) -> None:
    store.insert(calls())
    gone = store.erase(user_id="u1")
    assert gone.calls == 8 and store.count(CallFilter(user_id="u1")) == 0
    assert "u1" not in {u.user_id for u in store.users(CallFilter())}
    assert not store.query("SELECT count() FROM calls WHERE user_id = 'u1'").rows[0][0]
    assert store.update_costs([("call-000", 1.5, "card-2"), ("nope", 1.0, None)]) == 1
    call = store.get("call-000")
    assert call is not None and (call.cost_usd, call.rate_card) == (1.5, "card-2")
    total = sum(c or 0 for *_, c in store.cost_by_day(NOW - timedelta(days=1)))
    assert total == pytest.approx(
        1.5 + sum(c.cost_usd or 0 for c in calls() if c.user_id != "u1" and c.id != "call-000")
    )


# ---------------------------------------------------------------- read-only SQL as a reader

SECRET = "zq7sessionsecret"


def _with_secrets(store: ClickHouseStore) -> None:
    store.insert(calls(3))
    store.set_setting("session_secret", SECRET)
    store.add_account("ada", "admin", "zq7passwordhash")
    store.add_token("ci", "read", b"zq7t")
    store.audit("zq7auditor", "read", ["call-000"])


PRIVATE = [
    "SELECT * FROM settings", "SELECT * FROM accounts", "SELECT * FROM api_tokens", "SELECT * FROM audit",
    "SELECT * FROM merge(currentDatabase(), '^(settings|accounts|api_tokens|audit)$')",
    "SELECT * FROM mergeTreeIndex(currentDatabase(), 'accounts')",
]  # fmt: skip
OUTSIDE = [
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT * FROM file('llmlog-private.sqlite3', 'RawBLOB')",
    "SELECT * FROM sqlite('{dir}/llmlog-private.sqlite3', 'settings')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "SELECT * FROM executable('cat /etc/hostname', 'LineAsString', 'x String')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x', 'LineAsString')",
    "SELECT * FROM Python('store')",
]
# Each asks for a setting of its own: refused, or run with the reader's setting unchanged.
SETTINGS_CHANGED = [
    ("SELECT getSetting('readonly') SETTINGS readonly = 0", 1),
    ("SELECT getSetting('max_memory_usage') SETTINGS max_memory_usage = 0", 2**30),
    ("SELECT getSetting('max_execution_time') SETTINGS max_execution_time = 1000", 10),
    ("SELECT * FROM (SELECT * FROM file('/etc/hostname', 'LineAsString') SETTINGS readonly = 0)", None),
    ("SET readonly = 0", None),
    ("SELECT 1; SET readonly = 0", None),
]


@pytest.mark.parametrize("sql", PRIVATE)
def test_the_private_tables_are_not_in_the_engine(store: ClickHouseStore, sql: str) -> None:
    _with_secrets(store)
    with pytest.raises(ReadOnlyError) as refused:
        store.query(sql)
    assert SECRET not in str(refused.value)
    names = store.query("SELECT name FROM system.tables WHERE database = currentDatabase()").rows
    assert not {n for (n,) in names} & {"settings", "accounts", "api_tokens", "audit"}
    # Still the store's own: they read as before.
    assert store.setting("session_secret") == SECRET and store.account("ada") is not None
    assert store.audit_log()[0].who == "zq7auditor"


@pytest.mark.parametrize("sql", OUTSIDE)
def test_nothing_outside_the_engine_can_be_read(store: ClickHouseStore, tmp_path: Path, sql: str) -> None:
    _with_secrets(store)
    with pytest.raises(ReadOnlyError) as refused:
        store.query(sql.format(dir=tmp_path / "ch"))
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(("sql", "kept"), SETTINGS_CHANGED)
def test_a_query_cannot_change_its_settings(store: ClickHouseStore, sql: str, kept: int | None) -> None:
    with contextlib.suppress(ReadOnlyError):
        assert store.query(sql).rows == [(kept,)]
    # The writer's session is another: it goes on writing.
    assert store.insert(calls(2)) == 2 and store.count(CallFilter()) == 2


def test_time_and_memory_stay_bounded(store: ClickHouseStore) -> None:
    started = datetime.now(UTC)
    with pytest.raises(ReadOnlyError, match="limit"):
        runaway = "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) = 1"
        store.query(f"{runaway} SETTINGS max_execution_time = 1000", timeout_s=1)
    assert (datetime.now(UTC) - started).total_seconds() < 10
    with pytest.raises(ReadOnlyError, match="1024 MB of memory"):
        store.query("SELECT length(arrayMap(x -> x, range(300000000)))")  # 2.4 GB
    big = store.query("SELECT repeat('x', 100000) FROM numbers(10000)")  # a 1 GB result
    assert big.truncated and big.note and "64 MB" in big.note and len(big.rows) < 700
    assert store.query("SELECT count() FROM calls").rows == [(0,)]


def test_a_query_with_no_rows_answers_none(tmp_path: Path) -> None:
    # The console stops reading a query's rows when it has enough: rows that never came
    # are stopped the same way, and are no server error.
    from tests.backends import ClickHouseBackend
    from tests.webui import Running

    with Running(ClickHouseBackend(tmp_path / "ch")) as ui:
        for path in ("/sql", "/sql.json", "/sql.csv"):
            assert ui.get(path, params={"q": "SELECT id FROM calls WHERE 0"}).status_code == 200
        assert ui.get("/sql.json", params={"q": "SELECT id FROM calls WHERE 0"}).json() == []


def test_private_tables_of_a_store_from_before_move_out_of_the_engine(tmp_path: Path) -> None:
    from llmlog.store.clickhouse.embedded import PRIVATE_FILE
    from llmlog.store.clickhouse.engine import EmbeddedEngine

    path = tmp_path / "old"
    engine = EmbeddedEngine(str(path))  # the tables as the store kept them before
    engine.command(
        "CREATE TABLE settings (key String, value String, version UInt64)"
        " ENGINE = ReplacingMergeTree(version) ORDER BY key"
    )
    engine.command(
        f"INSERT INTO settings VALUES ('session_secret', '\"{SECRET}\"', 1), ('session_secret', '\"old\"', 0)"
    )
    engine.command(
        "CREATE TABLE accounts (name String, role String, password String, created String, version UInt64,"
        " deleted UInt8) ENGINE = ReplacingMergeTree(version, deleted) ORDER BY name"
    )
    engine.command(
        "INSERT INTO accounts VALUES ('ada', 'admin', 'h', '2026-01-01', 1, 0),"
        " ('bob', 'admin', 'h', '2026-01-01', 1, 1)"
    )
    engine.command(
        "CREATE TABLE api_tokens (name String, hash String, scope String, created String, version UInt64,"
        " deleted UInt8) ENGINE = ReplacingMergeTree(version, deleted) ORDER BY name"
    )
    engine.command("INSERT INTO api_tokens VALUES ('ci', '0102', 'read', '2026-01-01', 1, 0)")
    engine.close()
    with open_store(f"chdb://{path}") as store:
        assert store.setting("session_secret") == SECRET
        assert [a.name for a in store.accounts()] == ["ada"] and store.token(b"\x01\x02") is not None
        with pytest.raises(ReadOnlyError):
            store.query("SELECT * FROM settings")
    assert (path / PRIVATE_FILE).exists()


def test_web_sessions(store: ClickHouseStore) -> None:
    from tests.test_access import check_web_sessions

    check_web_sessions(store)  # the table private: read-only SQL cannot read it


# ---------------------------------------------------------------- `daily` across merges

DAILY_TOTALS = (
    "SELECT sum(calls), sum(errors), sumMap(latency_hist), sumMap(first_token_hist), sumMap(error_types),"
    " sum(users), sum(sessions) FROM daily"
)


def _in_parts(store: ClickHouseStore, parts: int = 4, each: int = 25) -> list[Call]:
    """Calls of one day and group inserted in several inserts: each its own part of
    `daily_parts`, holding its own histogram, error types, users and sessions."""
    day = datetime(2026, 2, 3, 9, tzinfo=UTC)
    sent = []
    for p in range(parts):
        batch = [
            Call(timestamp=day + timedelta(minutes=p * each + i), model="claude", feature="support",
                 latency_ms=float(40 + 13 * i + p), first_token_ms=float(5 + i),
                 user_id=f"u{(p + i) % 7}", session_id=f"s{p}-{i % 3}",
                 error={"type": f"e{i % 3}"} if i % 4 == 0 else None)
            for i in range(each)
        ]  # fmt: skip
        store.insert(batch)
        sent += batch
    return sent


def test_daily_keeps_its_counts_when_parts_merge(store: ClickHouseStore) -> None:
    """A merge adds the parts' maps up and unites their users and sessions; it used to keep
    one part's maps of the merged row (5,553 latency entries became 5,160)."""
    sent = _in_parts(store)
    maps = DAILY_TOTALS.replace(", sum(users), sum(sessions)", "")
    before = store.query(maps).rows
    calls_, errors, latency, first, types = before[0]
    assert (calls_, errors) == (100, 28)
    assert sum(latency.values()) == 100 and sum(first.values()) == 100
    assert types == {"e0": 12, "e1": 8, "e2": 8}
    assert store.query("SELECT count() FROM daily_parts").rows[0][0] > 1  # not merged yet
    store.engine.command("OPTIMIZE TABLE daily_parts FINAL")
    assert store.query("SELECT count() FROM daily_parts").rows[0][0] == 1
    assert store.query(maps).rows == before
    # Users and sessions, as the other stores' `daily` has them: distinct across the parts.
    people = store.query("SELECT sum(users), sum(sessions) FROM daily").rows
    assert people == [(len({c.user_id for c in sent}), len({c.session_id for c in sent}))]


def test_a_store_made_before_the_maps_merged_is_rebuilt(tmp_path: Path) -> None:
    """A store whose `daily_parts` is the old `SummingMergeTree` (no users nor sessions) is
    rebuilt from its calls on open; a day whose calls are gone keeps its old row."""
    url = f"chdb://{tmp_path}/ch"
    with open_store(url) as s:
        assert isinstance(s, ClickHouseStore)
        for sql in ("DROP VIEW daily_rollup", "DROP VIEW daily", "DROP TABLE daily_parts"):
            s.engine.command(sql)
        floats = ("cost_usd", "latency_ms", "first_token_ms")
        names = ("calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
                 "cache_creation_tokens", *floats, "priced_calls", "output_calls", "tool_calls")  # fmt: skip
        maps = ("error_types", "latency_hist", "first_token_hist")
        cols = ", ".join(
            [f"{c} {'Float64' if c in floats else 'Int64'}" for c in names]
            + [f"{m} Map(String, Int64)" for m in maps]
        )
        tag = "LowCardinality(Nullable(String))"
        s.engine.command(
            f"CREATE TABLE daily_parts (day Date, feature {tag}, model {tag}, provider {tag},"
            f" prompt_template_version {tag}, {cols}) ENGINE = SummingMergeTree()"
            " PARTITION BY toYYYYMM(day) ORDER BY (day, feature, model, provider, prompt_template_version)"
            " SETTINGS allow_nullable_key = 1"
        )
        s.engine.command(
            "CREATE MATERIALIZED VIEW daily_rollup TO daily_parts AS SELECT toDate(c.timestamp) AS day,"
            " c.feature AS feature, c.model AS model, c.provider AS provider,"
            " c.prompt_template_version AS prompt_template_version, toInt64(count()) AS calls,"
            " toInt64(countIf(c.error IS NOT NULL)) AS errors,"
            " sumMapIf(map(JSONExtractString(ifNull(c.error, '{}'), 'type'), toInt64(1)),"
            " c.error IS NOT NULL) AS error_types FROM call_data AS c"
            " GROUP BY day, feature, model, provider, prompt_template_version"
        )
        s.engine.command("ALTER TABLE llmlog_schema DELETE WHERE version > 5 SETTINGS mutations_sync = 1")
        sent = _in_parts(s)
        # A cold day: its row in the rollup, its calls gone.
        s.engine.command(
            "INSERT INTO daily_parts (day, feature, calls, errors, error_types)"
            " VALUES ('2025-12-01', 'old', 9, 2, map('timeout', 2))"
        )
    with open_store(url) as s:
        assert isinstance(s, ClickHouseStore)
        s.engine.command("OPTIMIZE TABLE daily_parts FINAL")
        (row,) = s.query(DAILY_TOTALS + " WHERE feature = 'support'").rows
        assert row[:2] == (100, 28) and sum(row[2].values()) == 100
        assert row[4] == {"e0": 12, "e1": 8, "e2": 8}
        assert row[5:] == (len({c.user_id for c in sent}), len({c.session_id for c in sent}))
        cold = s.query("SELECT calls, errors, error_types, users FROM daily WHERE feature = 'old'").rows
        assert cold == [(9, 2, {"timeout": 2}, 0)]
        s.insert([Call(timestamp=datetime(2026, 2, 3, 23, tzinfo=UTC), feature="support", model="claude")])
        assert s.query("SELECT sum(calls) FROM daily WHERE feature = 'support'").rows == [(101,)]
