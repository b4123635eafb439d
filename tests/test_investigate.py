"""Reports over the stored calls: planted errors are found, grouped, dated and exemplified,
on both stores and across a retention run; nothing is flagged where nothing happened."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog.analysis import reports
from llmlog.analysis.dashboard import Period
from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.operations import retention
from llmlog.store import retention_policy
from tests.backends import Backend

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY = NOW.date()


def calls_with_errors() -> list[Call]:
    """Five weeks of traffic: `search` on gpt-4.1 has a steady 1 in 10 rate_limit_error; in the
    last three days `support-bot` on claude starts failing with a new `tool_schema_error`."""
    out = []
    for d in range(35):
        day = NOW - timedelta(days=d)
        for i in range(20):
            failing = i % 10 == 0
            out.append(
                Call(id=f"s-{d}-{i}", timestamp=day + timedelta(minutes=i), model="gpt-4.1", feature="search",
                     error={"type": "rate_limit_error", "message": "slow down"} if failing else None)
            )  # fmt: skip
            new = d < 3 and i % 4 == 0
            bad = {"type": "tool_schema_error", "message": "bad tool"} if new else None
            when = day + timedelta(minutes=i)
            call = Call(id=f"b-{d}-{i}", timestamp=when, model="claude", feature="support-bot", error=bad)
            out.append(call)
    return out


def test_the_errors_report_finds_what_was_planted(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(calls_with_errors())
        groups = reports.errors_report(store, Period.ending(7, TODAY))
        assert [(g.error_type, g.model, g.feature) for g in groups] == [  # most errors first
            ("tool_schema_error", "claude", "support-bot"),
            ("rate_limit_error", "gpt-4.1", "search"),
        ]
        new, steady = groups
        assert (steady.errors, steady.calls, steady.new) == (14, 140, False)
        assert steady.rate == 0.1 and steady.per_day == [2] * 7
        assert (new.errors, new.calls, new.new) == (15, 140, True)
        assert new.per_day == [0, 0, 0, 0, 5, 5, 5]
        assert len(new.examples) == 3 and all(e.startswith("b-0-") for e in new.examples)
        assert all(store.get(e).error["type"] == "tool_schema_error" for e in new.examples)  # type: ignore[union-attr]
        # A week with nothing new flags nothing new.
        earlier = reports.errors_report(store, Period.ending(7, TODAY - timedelta(days=10)))
        assert [g.new for g in earlier] == [False]
        # The same counts after most calls are gone: read from `daily`; examples from the kept.
        retention.run(store, retention_policy.Policy(days=1))
        after = reports.errors_report(store, Period.ending(7, TODAY))
        assert [(g.error_type, g.errors, g.per_day, g.new) for g in after] == [
            (g.error_type, g.errors, g.per_day, g.new) for g in groups
        ]
        kept = [e for g in after for e in g.examples]
        assert kept and all(store.get(e) is not None for e in kept)
        assert all(e.split("-")[1] in ("0", "1") for e in kept)  # today's and yesterday's


def test_the_cli_lists_reports_and_runs_one(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    runner = CliRunner()
    from llmlog.store import open_store

    with open_store(db) as store:
        store.insert(calls_with_errors())
    listed = runner.invoke(cli, ["--db", db, "report"]).output
    assert listed.startswith("errors")
    table = runner.invoke(cli, ["--db", db, "report", "errors"]).output
    assert "tool_schema_error" in table and "new" in table and "10.0%" in table
    data = json.loads(runner.invoke(cli, ["--db", db, "report", "errors", "--json", "--days", "3"]).output)
    assert [(g["error_type"], g["new"], g["errors"]) for g in data] == [
        ("tool_schema_error", True, 15),
        ("rate_limit_error", False, 6),
    ]
    assert runner.invoke(cli, ["--db", db, "report", "errors", "--days", "0"]).exit_code == 2
    assert reports.sparkline([0, 1, 4, 8]) == " ▁▄█"


def routed_calls(plant: bool = True) -> list[Call]:
    """`classify`: short answers, no tools, on gpt-4.1-mini, and (planted) a third on gpt-4.1
    at 10× the price; `agent`: gpt-4.1 with tools; `essay`: long answers on gpt-4.1."""
    out = []
    for i in range(90):
        when = NOW - timedelta(hours=i)
        pricey = plant and i % 3 == 0
        out.append(Call(id=f"c{i}", timestamp=when, feature="classify", user_id=f"u{i % 3}",
                        model="gpt-4.1" if pricey else "gpt-4.1-mini", output_tokens=12,
                        cost_usd=0.01 if pricey else 0.001))  # fmt: skip
        model = "gpt-4.1" if i % 2 else "gpt-4.1-mini"
        out.append(Call(id=f"a{i}", timestamp=when, feature="agent", model=model, output_tokens=40,
                        tool_calls=[{"id": "t"}], cost_usd=0.02 if i % 2 else 0.002))  # fmt: skip
        out.append(Call(id=f"e{i}", timestamp=when, feature="essay", model=model, output_tokens=2000,
                        cost_usd=0.05 if i % 2 else 0.005))  # fmt: skip
    return out


def test_the_cost_report_finds_over_routing(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(routed_calls())
        r = reports.cost_report(store, Period.ending(7, TODAY))
        assert r.total_usd == pytest.approx(30 * 0.01 + 60 * 0.001 + 45 * 0.022 + 45 * 0.055)
        assert [s.name for s in r.by_feature] == ["essay", "agent", "classify"]
        assert r.by_model[0].name == "gpt-4.1" and sum(d.calls for d in r.by_day) == 270
        assert [u.name for u in r.by_user][:1] == ["u0"]  # i % 3 == 0: every pricey call
        (found,) = r.over_routing  # not `agent` (tools), not `essay` (long answers)
        assert (found.feature, found.model, found.cheaper, found.calls) == (
            "classify",
            "gpt-4.1",
            "gpt-4.1-mini",
            30,
        )
        assert found.savings_usd == pytest.approx(30 * (0.01 - 0.001))
    with backend.open() as store:
        store.insert(
            [
                c.replace(id="x" + c.id, timestamp=c.timestamp - timedelta(days=30))
                for c in routed_calls(False)
            ]
        )
        quiet = reports.cost_report(store, Period.ending(7, TODAY - timedelta(days=30)))
        assert quiet.over_routing == [] and quiet.total_usd > 0


def test_the_cli_cost_report(tmp_path: Path) -> None:
    from llmlog.store import open_store

    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert(routed_calls())
    out = CliRunner().invoke(cli, ["--db", db, "report", "cost", "--days", "7"]).output
    assert "over-routing" in out and "classify" in out and "$0.2700" in out
    data = json.loads(CliRunner().invoke(cli, ["--db", db, "report", "cost", "--json"]).output)
    assert data["over_routing"][0]["savings_usd"] == pytest.approx(0.27)


def answer(text: str) -> dict[str, object]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def drifting_calls(plant: bool = True, seed: int = 5) -> list[Call]:
    """Five weeks of `summarize` (v1), `search` (v3), `triage` (v1) and `chat` (v1). Planted
    in the last week: summarize's answers twice as long ("the model started writing
    essays"), search failing 20% instead of 2%, chat declining one call in seven instead of
    one in a hundred; three days ago triage moved to v2, which answers twice as long and so
    costs twice as much. And `review`, v1 and v2 side by side, v2 answering twice as long."""
    import random

    rng = random.Random(seed)
    out = []
    for h in range(35 * 24):
        when = NOW - timedelta(hours=h, minutes=1)
        recent = plant and h < 7 * 24
        out.append(Call(id=f"m{h}", timestamp=when, feature="summarize", prompt_template_version="v1",
                        output_tokens=max(1, round(rng.gauss(400 if recent else 200, 40))),
                        latency_ms=rng.gauss(900, 100)))  # fmt: skip
        failing = rng.random() < (0.2 if recent else 0.02)
        out.append(Call(id=f"s{h}", timestamp=when, feature="search", prompt_template_version="v3",
                        output_tokens=max(1, round(rng.gauss(50, 10))), latency_ms=rng.gauss(300, 30),
                        error={"type": "x"} if failing else None))  # fmt: skip
        v2 = plant and h < 3 * 24
        tokens = max(1, round(rng.gauss(400 if v2 else 200, 40)))
        version = "v2" if v2 else "v1"
        out.append(Call(id=f"t{h}", timestamp=when, feature="triage", prompt_template_version=version,
                        output_tokens=tokens, cost_usd=tokens / 1e5))  # fmt: skip
        declined = h % (7 if recent else 100) == 0
        text = "I'm sorry, but I can't help with that." if declined else f"Here is what I found: {h} items."
        out.append(Call(id=f"c{h}", timestamp=when, feature="chat", prompt_template_version="v1",
                        output_tokens=max(1, round(rng.gauss(100, 10))), latency_ms=rng.gauss(700, 70),
                        response=answer(text), stop_reason="stop"))  # fmt: skip
        if h < 10 * 24:
            v2 = h % 2 == 0
            version = "v2" if v2 else "v1"
            out.append(Call(id=f"r{h}", timestamp=when, feature="review", prompt_template_version=version,
                            output_tokens=max(1, round(rng.gauss(600 if v2 and plant else 300, 50))),
                            latency_ms=rng.gauss(1200, 150)))  # fmt: skip
    return out


def test_drift_finds_what_changed_and_nothing_else(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(drifting_calls())
        found = {(c.feature, c.version, c.metric): c for c in reports.drift_report(store, now=NOW)}
        assert set(found) == {
            ("summarize", "v1", "output_tokens"),
            ("search", "v3", "error_rate"),
            ("chat", "v1", "refusal_rate"),
            # The new version has no baseline of its own: it shows on the feature's row.
            ("triage", reports.ALL_VERSIONS, "output_tokens"),
            ("triage", reports.ALL_VERSIONS, "cost_usd"),
        }
        essays = found[("summarize", "v1", "output_tokens")]
        assert essays.before == pytest.approx(200, rel=0.05) and essays.after == pytest.approx(400, rel=0.05)
        assert essays.effect > 3 and essays.p < 1e-10 and essays.n_after == 7 * 24  # type: ignore[operator]
        failing = found[("search", "v3", "error_rate")]
        assert failing.before == pytest.approx(0.02, abs=0.015)
        assert failing.after == pytest.approx(0.2, abs=0.05)
        declining = found[("chat", "v1", "refusal_rate")]
        assert declining.before == pytest.approx(0.01, abs=0.01)
        assert declining.after == pytest.approx(1 / 7, abs=0.01)
        compared = reports.compare_versions(store, "review", "v1", "v2", now=NOW)
        assert [c.metric for c in compared.metrics] == [*reports.MEANS, *reports.RATES]
        assert [(c.metric, round(c.after / c.before)) for c in compared.flagged] == [("output_tokens", 2)]  # type: ignore[operator]
        assert len(compared.pairs) == 3 and all(
            a.startswith("r") and b.startswith("r") for a, b in compared.pairs
        )  # type: ignore[union-attr]
        few = reports.compare_versions(store, "review", "v1", "v9", now=NOW)
        assert few.flagged == [] and few.metrics[0].p is None  # too few calls to test
        moment = reports.compare_moment(store, "triage", NOW - timedelta(days=3), now=NOW)
        assert {c.metric for c in moment.flagged} == {"output_tokens", "cost_usd"}
        assert moment.metrics[0].n_after == 3 * 24 and moment.metrics[0].n_before == 7 * 24


def test_no_drift_is_flagged_where_there_is_none(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(drifting_calls(plant=False))
        assert reports.drift_report(store, now=NOW) == []
        assert reports.compare_versions(store, "review", "v1", "v2", now=NOW).flagged == []
        assert reports.compare_moment(store, "triage", NOW - timedelta(days=3), now=NOW).flagged == []


def test_the_cli_drift_and_compare(tmp_path: Path) -> None:
    from llmlog.store import open_store

    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert(drifting_calls())
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", db, "report", "drift"]).output
    assert "summarize" in out and "output_tokens" in out and "refusal_rate" in out and "(all versions)" in out
    data = json.loads(
        runner.invoke(cli, ["--db", db, "report", "compare", "review", "v1", "v2", "--json"]).output
    )
    assert [c["metric"] for c in data["metrics"] if c["flagged"]] == ["output_tokens"]
    assert len(data["pairs"]) == 3
    # A version against itself puts every call on the old side: nothing to test, not "no change".
    same = runner.invoke(cli, ["--db", db, "report", "compare", "search", "v3", "v3"]).output
    assert "→ 0 calls; too few calls to test" in same
    deploy = runner.invoke(cli, ["--db", db, "report", "compare", "triage", "--at", "3d"]).output
    assert "before" in deploy and "output_tokens" in deploy and "changed" in deploy
    bad = runner.invoke(cli, ["--db", db, "report", "compare", "triage"])
    assert bad.exit_code == 2 and "two versions" in bad.output


def people_calls(plant: bool = True) -> list[Call]:
    """Twenty users, two sessions each, ~1 error in 50. Planted: `u-broken` fails half its
    calls; `u-heavy` runs one session of 400 turns at 20× the usual cost."""
    out = []
    for u in range(20):
        for s in range(2):
            for t in range(20):
                i = len(out)
                out.append(Call(id=f"p{i}", timestamp=NOW - timedelta(hours=t + 24 * s), user_id=f"u{u}",
                                session_id=f"u{u}-s{s}", model="m", cost_usd=0.001,
                                error={"type": "x"} if i % 50 == 0 else None))  # fmt: skip
    if plant:
        for t in range(40):
            when = NOW - timedelta(hours=t)
            out.append(Call(id=f"b{t}", timestamp=when, user_id="u-broken", session_id="b", model="m",
                            cost_usd=0.001, error={"type": "x"} if t % 2 else None))  # fmt: skip
        for t in range(400):
            when = NOW - timedelta(minutes=t)
            out.append(Call(id=f"h{t}", timestamp=when, user_id="u-heavy", session_id="long", model="m",
                            cost_usd=0.002))  # fmt: skip
    return out


def test_spikes_find_the_session_and_the_users(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(people_calls())
        r = reports.spikes_report(store, Period.ending(7, TODAY))
        assert (r.sessions[0].session_id, r.sessions[0].user_id, r.sessions[0].calls) == (
            "long",
            "u-heavy",
            400,
        )
        assert r.sessions[0].cost_usd == pytest.approx(0.8)
        assert {(o.user_id, o.metric) for o in r.outliers} == {
            ("u-heavy", "calls"), ("u-heavy", "cost_usd"), ("u-broken", "error_rate"),
        }  # fmt: skip
        broken = next(o for o in r.outliers if o.metric == "error_rate")
        assert broken.value == 0.5 and broken.calls == 40
    with backend.open() as store:
        store.insert(
            [
                c.replace(id="q" + c.id, timestamp=c.timestamp - timedelta(days=20))
                for c in people_calls(False)
            ]
        )
        assert reports.spikes_report(store, Period.ending(7, TODAY - timedelta(days=20))).outliers == []


def test_the_cli_spikes(tmp_path: Path) -> None:
    from llmlog.store import open_store

    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert(people_calls())
    out = CliRunner().invoke(cli, ["--db", db, "report", "spikes"]).output
    assert "costliest sessions" in out and "u-heavy" in out and "u-broken" in out and "50.0%" in out
    data = json.loads(CliRunner().invoke(cli, ["--db", db, "report", "spikes", "--json"]).output)
    assert data["sessions"][0]["session_id"] == "long"


def test_the_error_test_is_exact_for_users_of_few_calls() -> None:
    """5 failures in 37 calls where 2.3% fail: one in 500 by the binomial law (the normal
    approximation said one in 300,000, and named an ordinary user of the demo)."""
    exact = sum(math.comb(37, i) * 0.023**i * 0.977 ** (37 - i) for i in range(5, 38))
    assert reports.binomial_tail(5, 37, 0.023) == pytest.approx(exact, rel=1e-9)
    assert reports.binomial_tail(0, 37, 0.023) == 1.0 and reports.binomial_tail(38, 37, 0.5) == 0.0
    users = {f"u{i}": [200.0, 4.0 + i % 3, 0.0] for i in range(52)}
    users["few"] = [37.0, 5.0, 0.0]
    assert [o.user_id for o in reports._outliers(users) if o.metric == "error_rate"] == []
    users["broken"] = [60.0, 20.0, 0.0]
    assert [o.user_id for o in reports._outliers(users) if o.metric == "error_rate"] == ["broken"]


def test_clumped_failures_name_no_ordinary_user() -> None:
    """Failures come in clumps (a session gone wrong, an outage): most users none, some
    eight at once. A user with twelve is one more clump, not a user whose calls fail; one
    with half their calls failing still is."""
    users = {f"quiet{i}": [100.0, 0.0, 0.0] for i in range(30)}
    users |= {f"clump{i}": [100.0, 8.0, 0.0] for i in range(10)}
    users["twelve"] = [100.0, 12.0, 0.0]
    assert [o.user_id for o in reports._outliers(users) if o.metric == "error_rate"] == []
    users["broken"] = [100.0, 50.0, 0.0]
    assert [o.user_id for o in reports._outliers(users) if o.metric == "error_rate"] == ["broken"]


def test_a_user_of_a_few_calls_that_all_failed_is_no_outlier() -> None:
    """Five calls, all failed: one request retried, or one failure seen on several days;
    too few calls to say the user's calls fail (MIN_CALLS, as drift asks of each side)."""
    users = {f"u{i}": [200.0, 4.0 + i % 3, 0.0] for i in range(52)}
    users["retried"] = [5.0, 5.0, 0.0]
    assert [o.user_id for o in reports._outliers(users) if o.metric == "error_rate"] == []
    users["broken"] = [30.0, 10.0, 0.0]
    assert [o.user_id for o in reports._outliers(users) if o.metric == "error_rate"] == ["broken"]
