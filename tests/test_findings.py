"""Findings: each kind found where it was planted and nowhere else, on every store; ranked;
kept for the pages (`analysis.latest`); `llmlog check`'s lines, JSON and exit status; the
four findings planted in the demo's month named."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import pytest
from click.testing import CliRunner

from llmlog.analysis import findings
from llmlog.analysis.findings import Evaluation, Finding
from llmlog.analysis.latest import Latest
from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.store import ReadOnlyError, Store, open_store
from tests import test_investigate as planted
from tests.backends import Backend

# Noon today, as the reports' tests have it: the calls built around it stay on their days.
# Findings are evaluated as of it, never of the clock.
NOW = planted.NOW


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    """Each store: the reports findings are built on read SQL shared by every engine."""
    return every_engine


def found(store: Store, now: datetime = NOW) -> dict[str, Finding]:
    e = findings.evaluation(store, now)
    assert e.skipped == {}
    return {f.key: f for f in e.findings}


# Where the same traffic unplanted is put (and evaluated): long before the planted, so that
# one store holds both and neither's weeks reach the other's.
EARLIER = timedelta(days=80)


def quiet(store: Store, calls: list[Call]) -> None:
    """The traffic without what was planted finds nothing."""
    store.insert([c.replace(id=f"q{c.id}", timestamp=c.timestamp - EARLIER) for c in calls])
    assert list(found(store, NOW - EARLIER)) == []


def error_calls(plant: bool = True) -> list[Call]:
    """Five weeks, 20 calls a day each: `search` on gpt-4.1 fails 1 in 20 with rate_limit_error,
    planted 1 in 4 in the last week; `support-bot` on claude never fails, planted a new
    tool_schema_error in 5 of 20 calls a day in the last three days; `steady` fails 1 in 10."""
    out = []
    for d in range(35):
        for i in range(20):
            when = NOW - timedelta(days=d, minutes=i + 1)
            recent = plant and d < 7
            fails = i % 4 == 0 if recent else i % 20 == 0
            limit = {"type": "rate_limit_error"}
            out.append(Call(id=f"s{d}-{i}", timestamp=when, feature="search", model="gpt-4.1",
                            error=limit if fails else None))  # fmt: skip
            new = plant and d < 3 and i % 4 == 0
            out.append(Call(id=f"b{d}-{i}", timestamp=when, feature="support-bot", model="claude",
                            error={"type": "tool_schema_error"} if new else None))  # fmt: skip
            out.append(Call(id=f"k{d}-{i}", timestamp=when, feature="steady", model="claude",
                            error={"type": "api_error"} if i % 10 == 0 else None))  # fmt: skip
    return out


def test_new_error_types_and_error_rate_jumps(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(error_calls())
        got = found(store)
        assert set(got) == {
            "new_error:support-bot:claude:tool_schema_error",
            # support-bot's jump is its new error type's finding, said once.
            "error_rate:search:gpt-4.1",
        }
        new = got["new_error:support-bot:claude:tool_schema_error"]
        assert new.numbers["errors"] == 15 and new.numbers["calls"] == 140
        assert "tool_schema_error" in new.sentence and "15 calls" in new.sentence and "10.7%" in new.sentence
        assert [v for _, v in new.chart][-3:] == [5, 5, 5] and sum(v or 0 for _, v in new.chart) == 15
        assert len(new.chart) == findings.CHART_DAYS and new.chart[-1][0] == NOW.date().isoformat()
        jump = got["error_rate:search:gpt-4.1"]
        assert jump.numbers["rate"] == 0.25 and jump.numbers["rate_before"] == 0.05
        assert "25.0%" in jump.sentence and "5.0%" in jump.sentence and "35 of 140" in jump.sentence
        week = (NOW.date() - timedelta(days=6)).isoformat()
        assert [e.path for e in jump.evidence] == [
            f"/?feature=search&model=gpt-4.1&status=error&since={week}",
            "/reports/errors?days=7",
        ]
        assert [e.role for e in jump.evidence] == ["debugger", "viewer"]
        quiet(store, error_calls(plant=False))


def better_calls() -> list[Call]:
    """`calm`, v1: declines one call in seven and answers in 900 ms, until the last week,
    when it declines one in a hundred and answers in 450 ms: better, no finding."""
    out = []
    for h in range(35 * 24):
        recent = h < 7 * 24
        declined = h % (100 if recent else 7) == 0
        text = "I'm sorry, but I can't help with that." if declined else f"Done: {h}."
        out.append(Call(id=f"calm{h}", timestamp=NOW - timedelta(hours=h, minutes=1), feature="calm",
                        prompt_template_version="v1", output_tokens=100 + h % 7,
                        latency_ms=(450 if recent else 900) + h % 13, response=planted.answer(text),
                        stop_reason="stop"))  # fmt: skip
    return out


def test_drift_and_each_version_against_the_one_before(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(planted.drifting_calls() + better_calls())
        got = found(store)
        assert set(got) == {
            "drift:summarize:v1:output_tokens",  # the last week against the four before
            "drift:chat:v1:refusal_rate",
            "error_rate:search:None",  # the error rate is the error findings', from `daily`
            # triage's v2, three days old, against v1: its feature's weekly drift is this.
            "drift:triage:v2:output_tokens",
            "drift:triage:v2:cost_usd",
            # review's v1 and v2 side by side all along: no week shows it, the versions do.
            "drift:review:v2:output_tokens",
        }
        essays = got["drift:summarize:v1:output_tokens"]
        assert (
            essays.sentence.startswith("summarize v1: output tokens per call 4") and "2.0×" in essays.sentence
        )
        assert essays.numbers["before"] == pytest.approx(200, rel=0.05)
        days = [v for _, v in essays.chart]
        assert days[-2] == pytest.approx(400, rel=0.1) and days[-10] == pytest.approx(200, rel=0.1)
        declines = got["drift:chat:v1:refusal_rate"]
        assert "refusal rate 14.3%" in declines.sentence and declines.chart_label.startswith(
            "refusal rate per"
        )
        step = got["drift:review:v2:output_tokens"]
        assert (
            step.numbers["previous"] == "v1" and "review v2" in step.sentence and "review v1" in step.sentence
        )
        assert step.evidence[0].path == "/reports/compare?feature=review&old=v1&new=v2&days=35"
        assert step.evidence[0].role == "viewer" and step.evidence[1].role == "debugger"
        triage = [v for _, v in got["drift:triage:v2:output_tokens"].chart]
        assert triage[:-4] == [None] * (findings.CHART_DAYS - 4)  # v2 had no calls before
        # Refusals weigh more than other drift: up 13 points, they rank with answers 5 sd longer.
        assert (
            1.5 < declines.score / findings.WEIGHTS["drift"] < essays.score / findings.WEIGHTS["drift"] == 2
        )
        quiet(store, planted.drifting_calls(plant=False))


def test_over_routing(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(planted.routed_calls())
        (f,) = found(store).values()
        assert f.key == "over_routing:classify:gpt-4.1"
        assert f.numbers["savings_usd"] == pytest.approx(0.27) and f.numbers["cheaper"] == "gpt-4.1-mini"
        assert "classify sent 30 short calls" in f.sentence and "$0.27 more" in f.sentence
        assert sum(v or 0 for _, v in f.chart) == pytest.approx(0.3)
        quiet(store, planted.routed_calls(plant=False))


def test_users_far_above_their_peers_and_costly_sessions(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(planted.people_calls())
        got = found(store)
        assert set(got) == {
            "user_outlier:u-broken:error_rate",
            "user_outlier:u-heavy:calls",
            "user_outlier:u-heavy:cost_usd",
            "costly_session:long",
        }
        broken = got["user_outlier:u-broken:error_rate"]
        assert broken.sentence.startswith("u-broken: 50.0% of their 40 calls failed")
        assert [e.path for e in broken.evidence][:1] == ["/users/u-broken"]
        assert sum(1 for _, v in broken.chart if v is not None) == 3  # the three days of its 40 hours
        long = got["costly_session:long"]
        assert "$0.80 over 400 calls" in long.sentence and "40× the median session's $0.02" in long.sentence
        assert long.evidence[0].path == "/sessions/long" and long.evidence[0].role == "debugger"
        # A user whose calls fail above one who merely calls a lot, above the longest session.
        ranked = [f.key for f in findings.evaluation(store, NOW).findings]
        assert ranked[0] == "user_outlier:u-broken:error_rate" and ranked[-1] == "costly_session:long"
        quiet(store, planted.people_calls(plant=False))


def spending_calls(plant: bool = True) -> list[Call]:
    """Two weeks of `chat` at $0.10 a call (planted: $0.20 in the last week) and `search` at
    $0.05, ten calls a day each."""
    out = []
    for d in range(14):
        for i in range(10):
            when = NOW - timedelta(days=d, minutes=i + 1)
            cost = 0.2 if plant and d < 7 else 0.1
            out.append(Call(id=f"c{d}-{i}", timestamp=when, feature="chat", model="m", cost_usd=cost))
            out.append(Call(id=f"s{d}-{i}", timestamp=when, feature="search", model="m", cost_usd=0.05))
    return out


def test_cost_this_week_against_last(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(spending_calls())
        (f,) = found(store).values()
        assert f.key == "cost_week" and f.numbers["rise"] == pytest.approx(7 / 10.5)
        assert f.sentence == (
            "Cost in the last 7 days: $17.50, up 67% from $10.50 in the 7 days before;"
            " chat rose the most ($7.00 more)."
        )
        assert [v for _, v in f.chart][-8:] == pytest.approx([1.5] + [2.5] * 7)
        quiet(store, spending_calls(plant=False))


# ---------------------------------------------------------------- kept for the pages


@contextmanager
def reading(url: str) -> Iterator[Store]:
    with open_store(url) as store:
        yield store


def test_a_part_the_store_stops_is_skipped_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query stopped at its time limit leaves its part out, said, and its kinds unsure; the
    other parts still count."""
    with open_store(str(tmp_path / "calls.db")) as store:
        store.insert(error_calls() + planted.people_calls())
        read = store.internal_query

        def stopped(sql: str, *args: Any, **kw: Any) -> Any:
            if sql.startswith("SELECT user_id, session_id"):  # the spikes report's
                raise ReadOnlyError("the query ran past its time limit")
            return read(sql, *args, **kw)

        monkeypatch.setattr(store, "internal_query", stopped)
        e = findings.evaluation(store, NOW)
        assert e.skipped == {"people": "the query ran past its time limit"}
        assert e.unsure == ("user_outlier", "costly_session")
        assert {f.kind for f in e.findings} == {"new_error", "error_rate"}


def test_the_latest_is_evaluated_once_off_the_callers_path(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert(error_calls())
    latest = Latest(every_s=3600)
    assert latest.peek() is None and not latest.running  # looking starts nothing
    first = latest.get(lambda: reading(db), wait_s=60)
    assert isinstance(first, Evaluation) and first.findings
    assert latest.get(lambda: reading(db)) is first and not latest.running  # not stale: kept
    later = Evaluation(NOW, [], {})
    latest.put(later)
    assert latest.peek() is later
    latest.close()


def test_an_evaluation_put_while_another_runs_stays_the_latest(tmp_path: Path) -> None:
    """A scheduled evaluation put while a page's is under way is newer than it: the one that
    started before must not replace it when it ends."""
    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert(error_calls())
    entered, go = threading.Event(), threading.Event()

    @contextmanager
    def held() -> Iterator[Store]:
        entered.set()
        go.wait(60)
        with reading(db) as store:
            yield store

    latest = Latest(every_s=3600)
    assert latest.get(held) is None and entered.wait(60)
    mine = Evaluation(NOW, [], {})
    latest.put(mine)
    go.set()
    latest.close(60)
    assert not latest.running and latest.peek() is mine


def test_a_failed_evaluation_is_said_and_not_retried_at_once(tmp_path: Path) -> None:
    tried: list[int] = []

    @contextmanager
    def gone() -> Iterator[Store]:
        tried.append(1)
        raise ConnectionError("the store is down")
        yield  # type: ignore[unreachable]

    latest = Latest(every_s=3600)
    assert latest.get(gone, wait_s=60) is None
    assert latest.failed == "the store is down" and not latest.running
    assert latest.get(gone, wait_s=60) is None and len(tried) == 1


# ---------------------------------------------------------------- llmlog check


def test_check_prints_the_findings_and_exits_1_when_there_are_any(tmp_path: Path) -> None:
    calm, db = str(tmp_path / "calm.db"), str(tmp_path / "calls.db")
    runner = CliRunner()
    with open_store(calm) as store:
        store.insert(error_calls(plant=False))
    said = runner.invoke(cli, ["--db", calm, "check"])
    assert said.exit_code == 0 and "No findings" in said.output
    said = runner.invoke(cli, ["--db", calm, "check", "--json"])
    assert said.exit_code == 0 and json.loads(said.output)["findings"] == []
    with open_store(db) as store:
        store.insert(error_calls())
    out = runner.invoke(cli, ["--db", db, "check"])
    assert out.exit_code == 1
    assert out.output.startswith("1. ") and "tool_schema_error" in out.output
    assert "/reports/errors?days=7" in out.output
    data = json.loads(runner.invoke(cli, ["--db", db, "check", "--json"]).output)
    assert {"at", "findings", "skipped", "took_s"} <= set(data)
    keys = [f["key"] for f in data["findings"]]
    assert "new_error:support-bot:claude:tool_schema_error" in keys
    first = data["findings"][0]
    assert set(first) == {"kind", "key", "score", "sentence", "numbers", "chart", "evidence"}
    assert first["chart"]["points"][-1][0] == datetime.now(UTC).date().isoformat()
    assert {"label", "kind", "params", "path", "role"} >= set(first["evidence"][0])
    assert [f["score"] for f in data["findings"]] == sorted(
        (f["score"] for f in data["findings"]), reverse=True
    )


def test_check_names_the_findings_planted_in_the_demo_month(tmp_path: Path) -> None:
    """The demo's month (llmlog.demo.traffic's docstring): code-review's longer answers after
    v2, support-bot v4's refusals, user_013's failures, summaries sent to the most expensive
    model."""
    db = str(tmp_path / "demo.db")
    runner = CliRunner()
    made = runner.invoke(cli, ["--db", db, "demo", "--calls", "800"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    out = runner.invoke(cli, ["--db", db, "check", "--json"])
    assert out.exit_code == 1
    data = json.loads(out.output)
    assert data["skipped"] == {}
    by_key = {f["key"]: f for f in data["findings"]}
    longer = by_key["drift:code-review:code-review@v2:output_tokens"]
    assert (
        longer["numbers"]["previous"] == "code-review@v1"
        and longer["numbers"]["value"] > 2 * longer["numbers"]["before"]
    )
    assert "/reports/drift-by-day?feature=code-review&days=30" in {e["path"] for e in longer["evidence"]}
    declines = by_key["drift:support-bot:support-bot@v4:refusal_rate"]
    assert declines["numbers"]["previous"] == "support-bot@v3" and declines["numbers"]["value"] > 0.05
    assert "user_outlier:user_013:error_rate" in by_key
    with open_store(db) as store:
        (priciest,) = store.query(
            "SELECT model FROM calls WHERE feature = 'summarize' GROUP BY model"
            " ORDER BY SUM(cost_usd) / COUNT(*) DESC LIMIT 1"
        ).rows[0]
    routed = by_key[f"over_routing:summarize:{priciest}"]
    assert "summarize sent" in routed["sentence"] and priciest in routed["sentence"]
    # What is wrong comes before who spends the most.
    ranked = list(by_key)
    planted_four = [ranked.index(k) for k in (
        "user_outlier:user_013:error_rate", "drift:support-bot:support-bot@v4:refusal_rate",
        "drift:code-review:code-review@v2:output_tokens", f"over_routing:summarize:{priciest}",
    )]  # fmt: skip
    others = [i for i, f in enumerate(data["findings"]) if f["kind"] in ("user_outlier", "costly_session")
              and f["key"] != "user_outlier:user_013:error_rate"]  # fmt: skip
    assert max(planted_four) < min(others, default=len(ranked))


def test_now_is_read_as_utc_whatever_its_zone(tmp_path: Path) -> None:
    """The week ends on now's UTC day, however now is given: in another zone (where it may
    still be yesterday), or naive (taken as UTC, as the store keeps its times)."""
    with open_store(str(tmp_path / "calls.db")) as store:
        store.insert(error_calls())
        utc = findings.evaluation(store, NOW)
        west = timezone(timedelta(hours=-14))  # NOW there is 22:00 the day before
        for now in (NOW.astimezone(west), NOW.replace(tzinfo=None)):
            e = findings.evaluation(store, now)
            assert e.skipped == {} and e.at == NOW and e.at.tzinfo == UTC
            assert [(f.key, f.chart) for f in e.findings] == [(f.key, f.chart) for f in utc.findings]


def test_check_exits_2_when_it_cannot_tell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cron job must not take "could not evaluate" for "nothing wrong" (0) nor for a finding
    (1): a store that cannot be opened, or a part not evaluated where nothing else was found,
    is 2. A finding found is 1 even while another part could not be read."""
    runner = CliRunner()
    gone = runner.invoke(cli, ["--db", "postgresql://nobody@127.0.0.1:1/none", "check"])
    assert gone.exit_code == 2 and "cannot open store" in gone.output
    assert runner.invoke(cli, ["--db", str(tmp_path / "none.db"), "check"]).exit_code == 2
    calm, db = str(tmp_path / "calm.db"), str(tmp_path / "calls.db")
    with open_store(calm) as store:
        store.insert(error_calls(plant=False))
    with open_store(db) as store:
        store.insert(error_calls())

    def stopped(ask: Any) -> list[Finding]:
        raise ReadOnlyError("the query ran past its time limit")

    monkeypatch.setitem(findings.PARTS, "drift", stopped)
    said = runner.invoke(cli, ["--db", calm, "check"])
    assert said.exit_code == 2 and "not evaluated: drift" in said.output
    assert runner.invoke(cli, ["--db", calm, "check", "--json"]).exit_code == 2
    assert runner.invoke(cli, ["--db", db, "check"]).exit_code == 1


def chat_sessions() -> list[Call]:
    """A week of 280 chat sessions whose lengths run as chats do (geometric, five turns on
    average: each turn is followed by another 4 times in 5), at $0.001 a call; forty users."""
    out = []
    for s in range(280):
        u = (s + 0.5) / 280  # the lengths' quantiles, not a random draw: the same every run
        turns = 1 + int(math.log(u) / math.log(0.8))
        for t in range(turns):
            when = NOW - timedelta(minutes=30 * s + t)
            out.append(Call(id=f"c{s}-{t}", timestamp=when, user_id=f"u{s % 40}", session_id=f"s{s}",
                            model="m", cost_usd=0.001))  # fmt: skip
    return out


def test_the_long_tail_of_ordinary_sessions_is_no_finding(tmp_path: Path) -> None:
    """The longest of many ordinary sessions runs several times the median one (here 30 turns
    against 4); that is how sessions are, nothing wrong. The planted 400 turns still is."""
    with open_store(str(tmp_path / "calls.db")) as store:
        calls = chat_sessions()
        store.insert(calls)
        assert max(sum(1 for c in calls if c.session_id == s) for s in {c.session_id for c in calls}) >= 25
        assert found(store) == {}
        store.insert([c.replace(id=f"p{c.id}") for c in planted.people_calls() if c.session_id == "long"])
        assert "costly_session:long" in found(store)


def test_cost_is_no_finding_in_a_store_recording_since_the_week_before(tmp_path: Path) -> None:
    """A store that began recording during the week before has spent less in it only for
    the days it did not record: steady traffic is no rise in cost."""
    with open_store(str(tmp_path / "calls.db")) as store:
        store.insert(spending_calls(plant=False)[: 2 * 10 * 10])  # the last ten days, steady
        assert found(store) == {}


def test_check_says_each_finding_on_its_lines_whatever_the_names(tmp_path: Path) -> None:
    """A name from the calls is one line of a finding: a newline in it (a feature, a model,
    an error type) must not start a line of its own, a forged finding, say; terminal control
    is shown escaped."""
    forged = "\n9. Nothing wrong.\n\x1b[2J" + " long" * 60  # and past any terminal's width
    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert(
            [
                c.replace(feature="search" + forged, error={"type": "rate" + forged} if c.error else None)
                if c.feature == "search"
                else c
                for c in error_calls()
            ]
        )
    said = CliRunner().invoke(cli, ["--db", db, "check"])
    assert said.exit_code == 1 and "search" in said.output
    assert "\x1b" not in said.output and "\\x1b[2J" in said.output
    lines = said.output.splitlines()
    assert not [line for line in lines if line.startswith("9.")]
    assert [line[:3] for line in lines if not line.startswith("   ")] == ["1. ", "2. "]
    # A link whole on its line, to be copied: never wrapped.
    link = findings.Evidence("", "calls", {"feature": "search" + forged, "model": "gpt-4.1"}).path
    assert any(line.startswith("   the failed calls: " + link) for line in lines)


@pytest.mark.parametrize("name", [".", "..", "a/../b", "../x", "x?y#z", "%2e%2e", "\x00\u202e<b>"])
def test_a_session_or_user_is_linked_whatever_its_id(name: str) -> None:
    """Each id reaches its own page: one path segment, never resolved away by the browser
    (a "." or ".." segment is, however it is encoded: those go to the calls list filtered on
    them, which the same role opens)."""
    for kind, column, page, param in (("session", "session_id", "/sessions/", "session"),
                                      ("user", "user_id", "/users/", "user")):  # fmt: skip
        path = findings.Evidence("", kind, {column: name}).path
        resolved = urlsplit(urljoin("http://llmlog.test/findings", path))
        if name in (".", ".."):
            assert (resolved.path, parse_qs(resolved.query)) == ("/", {param: [name]})
        else:
            assert resolved.path.startswith(page) and unquote(resolved.path[len(page) :]) == name
