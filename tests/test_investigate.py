"""Reports over the stored calls: planted errors are found, grouped, dated and exemplified,
on both stores and across a retention run; nothing is flagged where nothing happened."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog import investigate, retention
from llmlog.cli import cli
from llmlog.record import Call
from llmlog.reports import Period
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
        groups = investigate.errors_report(store, Period.ending(7, TODAY))
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
        earlier = investigate.errors_report(store, Period.ending(7, TODAY - timedelta(days=10)))
        assert [g.new for g in earlier] == [False]
        # The same counts after most calls are gone: read from `daily`; examples from the kept.
        retention.run(store, retention.Policy(days=1))
        after = investigate.errors_report(store, Period.ending(7, TODAY))
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
    assert investigate.sparkline([0, 1, 4, 8]) == " ▁▄█"


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
        r = investigate.cost_report(store, Period.ending(7, TODAY))
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
        quiet = investigate.cost_report(store, Period.ending(7, TODAY - timedelta(days=30)))
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
