"""The ClickHouse store against the real engine, embedded (chdb): every statement the store
issues runs in ClickHouse itself. The calls relation and its three first queries, filters,
a batch sent twice, the daily rollup, read-only SQL, the cluster DDL (parsed and checked by
the engine), and a clear refusal for what the store does not do yet."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmlog.record import Call
from llmlog.store import CallFilter, ReadOnlyError, open_store
from llmlog.store.clickhouse import ClickHouseStore
from llmlog.store.clickhouse_engine import bind
from llmlog.store.clickhouse_schema import statements

NOW = datetime.now(UTC).replace(microsecond=123456)


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


def test_regulated_mode_seals_and_audits(store: ClickHouseStore) -> None:
    from llmlog.encryption import Keyring
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
    from llmlog import investigate
    from llmlog.reports import Period
    from tests import test_investigate as planted

    store.insert(planted.calls_with_errors())
    groups = investigate.errors_report(store, Period.ending(7, planted.TODAY))
    assert [(g.error_type, g.model, g.feature, g.errors, g.new) for g in groups] == [
        ("tool_schema_error", "claude", "support-bot", 15, True),
        ("rate_limit_error", "gpt-4.1", "search", 14, False),
    ]
    assert groups[0].per_day == [0, 0, 0, 0, 5, 5, 5] and groups[0].examples[0].startswith("b-0-")


def test_drift_and_spikes_find_what_was_planted(store: ClickHouseStore) -> None:
    from llmlog import investigate
    from llmlog.reports import Period
    from tests import test_investigate as planted

    store.insert(planted.drifting_calls())
    found = {(c.feature, c.version, c.metric) for c in investigate.drift_report(store, now=planted.NOW)}
    assert found == {
        ("summarize", "v1", "output_tokens"),
        ("search", "v3", "error_rate"),
        ("chat", "v1", "refusal_rate"),
        ("triage", investigate.ALL_VERSIONS, "output_tokens"),
        ("triage", investigate.ALL_VERSIONS, "cost_usd"),
    }
    store.insert(planted.people_calls())
    spikes = investigate.spikes_report(store, Period.ending(7, planted.TODAY))
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


def test_web_sessions(store: ClickHouseStore) -> None:
    from tests.test_access import check_web_sessions

    # Read-only SQL here keeps no table private yet (clickhouse_schema.PRIVATE_TABLES names them).
    check_web_sessions(store, private=False)
