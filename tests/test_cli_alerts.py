"""`llmlog alerts`: webhooks and rules configured, refused when wrong, shown without their
secrets; one round for a cron job (`alerts run`) against a real receiver on loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.store import open_store
from tests.receiver import Receiver, closed_url

NOW = datetime.now(UTC)
FAILURES = "SELECT count(*) FROM calls WHERE error IS NOT NULL"


def run(db: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", db, *args], catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "calls.db")
    with open_store(path) as store:
        store.insert(
            [
                Call(id=f"c{i}", timestamp=NOW - timedelta(minutes=i), model="m", feature="f",
                     error={"type": "overloaded_error", "message": "busy"} if i < 3 else None)
                for i in range(10)
            ]
        )  # fmt: skip
    return path


def test_webhooks_are_added_listed_and_removed_without_showing_their_secret(db: str) -> None:
    slack = "https://hooks.slack.com/services/T0/B0/SECRET123"
    assert run(db, "alerts", "webhook", "add", "team", slack, "--format", "slack").exit_code == 0
    assert (
        run(db, "alerts", "webhook", "add", "ops", "https://hooks.example.com/x?token=SECRET456").exit_code
        == 0
    )
    listed = run(db, "alerts", "webhook", "list").output
    assert "https://hooks.slack.com/…" in listed and "team" in listed and "slack" in listed
    shown = run(db, "alerts", "show", "--json").stdout
    assert "SECRET" not in listed + shown
    assert [w["name"] for w in json.loads(shown)["webhooks"]] == ["team", "ops"]
    again = run(db, "alerts", "webhook", "add", "team", slack)
    assert again.exit_code == 1 and "already" in again.output
    for bad in ("file:///etc/passwd", "hooks.example.com", "javascript:alert(1)"):
        refused = run(db, "alerts", "webhook", "add", "bad", bad)
        assert refused.exit_code == 1 and "http:// or https://" in refused.output
    assert run(db, "alerts", "webhook", "remove", "team").exit_code == 0
    assert run(db, "alerts", "webhook", "remove", "team").exit_code == 1
    assert "team" not in run(db, "alerts", "webhook", "list").output


def test_a_rule_is_added_once_its_query_gives_a_number(db: str) -> None:
    added = run(db, "alerts", "rule", "add", "failures", FAILURES, "--when", "> 2")
    assert added.exit_code == 0, added.output
    assert "its query gives 3, > 2: a finding now" in added.output
    tested = run(db, "alerts", "rule", "test", "failures")
    assert tested.exit_code == 0 and "a finding" in tested.output
    assert "SELECT count(*)" in run(db, "alerts", "rule", "list").output
    for sql, said in (
        ("DELETE FROM calls", "refused or failed"),
        ("UPDATE call_data SET model = 'x'", "refused or failed"),
        ("SELECT value FROM settings", "refused or failed"),
        ("SELECT model FROM calls LIMIT 1", "returned text"),
        ("SELECT 1 FROM calls WHERE 0", "returned no rows"),
    ):
        refused = run(db, "alerts", "rule", "add", "bad", sql, "--when", "> 1")
        assert refused.exit_code == 1 and said in refused.output, (sql, refused.output)
    bad_when = run(db, "alerts", "rule", "add", "bad", FAILURES, "--when", "more than 5")
    assert bad_when.exit_code == 2 and "'> 20'" in bad_when.output
    assert [r["name"] for r in json.loads(run(db, "alerts", "show", "--json").stdout)["rules"]] == [
        "failures"
    ]
    with open_store(db) as store:
        assert store.count(CallFilter()) == 10


def test_alerts_run_posts_once_and_says_what_failed(db: str) -> None:
    with Receiver() as hook:
        run(db, "alerts", "webhook", "add", "ops", hook.url)
        run(db, "alerts", "rule", "add", "failures", FAILURES, "--when", "> 2")
        run(db, "alerts", "link-base", "https://llmlog.example.com/")
        first = run(db, "alerts", "run")
        assert first.exit_code == 0, first.output
        assert "1 new finding(s)" in first.output and "1 post(s)" in first.output
        again = run(db, "alerts", "run", "--json")
        assert again.exit_code == 0 and json.loads(again.stdout)["posted"] == []
        assert hook.bodies == [
            {
                "source": "llmlog", "event": "finding", "kind": "rule", "key": "rule:failures",
                "sentence": "Rule failures: its query gives 3, above 2.",
                "numbers": {"value": 3, "threshold": 2}, "link": "https://llmlog.example.com/alerts",
                "opened": hook.bodies[0]["opened"],
            }
        ]  # fmt: skip
    run(db, "alerts", "webhook", "add", "down", closed_url())
    failed = run(db, "alerts", "run")
    assert failed.exit_code == 1 and "down: ConnectError" in failed.output
    history = run(db, "alerts", "history", "--json").stdout.splitlines()
    assert [json.loads(line)["event"] for line in history] == ["failed", "posted", "opened"]
    shown = run(db, "alerts", "show").output
    assert "Rule failures" in shown and "ops" in shown


def test_link_base_is_a_url_or_nothing(db: str) -> None:
    assert run(db, "alerts", "link-base", "ftp://x").exit_code == 1
    assert run(db, "alerts", "link-base").exit_code == 2
    assert run(db, "alerts", "link-base", "https://llmlog.example.com").exit_code == 0
    assert json.loads(run(db, "alerts", "show", "--json").stdout)["link_base"] == "https://llmlog.example.com"
    assert run(db, "alerts", "link-base", "--clear").exit_code == 0
    assert json.loads(run(db, "alerts", "show", "--json").stdout)["link_base"] is None


def test_webhook_test_says_whether_it_was_taken(db: str) -> None:
    with Receiver() as hook, Receiver(status=404) as gone:
        run(db, "alerts", "webhook", "add", "ok", hook.url, "--format", "slack")
        run(db, "alerts", "webhook", "add", "gone", gone.url)
        assert run(db, "alerts", "webhook", "test", "ok").exit_code == 0
        refused = run(db, "alerts", "webhook", "test", "gone")
    assert refused.exit_code == 1 and "HTTP 404" in refused.output
    assert hook.bodies == [{"text": "llmlog: a test of the webhook ok; findings will be posted here."}]


def test_check_notify_posts_what_check_finds_once(db: str) -> None:
    """`llmlog check --notify`, the cron job's form: the findings and the rules that trip are
    listed (exit status 1) and posted once; run again, listed again and not posted again."""
    with Receiver() as hook:
        run(db, "alerts", "webhook", "add", "ops", hook.url)
        run(db, "alerts", "rule", "add", "failures", FAILURES, "--when", "> 2")
        first = CliRunner().invoke(cli, ["--db", db, "check", "--notify"])
        assert first.exit_code == 1, first.output
        assert "Rule failures: its query gives 3, above 2." in first.stdout
        assert "1 new finding(s)" in first.stderr
        again = CliRunner().invoke(cli, ["--db", db, "check", "--notify", "--json"])
        assert again.exit_code == 1
        assert "rule:failures" in {f["key"] for f in json.loads(again.stdout)["findings"]}
        assert [b["key"] for b in hook.bodies] == ["rule:failures"]


def test_check_notify_cannot_tell_when_a_rule_fails(db: str) -> None:
    """A rule whose query fails is a part not evaluated: with nothing found, `check` cannot
    say "nothing wrong" (0) to the cron job; it says it cannot tell (2), and why."""
    from llmlog.analysis import alerts

    with open_store(db) as store:
        alerts.add_rule(store, alerts.Rule("broken", "SELECT count(*) FROM nowhere", ">", 0))
    done = CliRunner().invoke(cli, ["--db", db, "check", "--notify"])
    assert done.exit_code == 2, done.output
    assert "not evaluated: rule broken (its query was refused or failed)" in done.stderr
