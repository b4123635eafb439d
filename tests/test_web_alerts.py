"""The alerts' page and its JSON (`/alerts`, `/api/alerts`): what is open and where it was
posted, the rules, the history; open to viewers, a rule's SQL to debuggers only, a
webhook's URL to nobody, logged names escaped. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from llmlog.analysis import alerts
from llmlog.analysis.alerts import Rule, notify
from llmlog.analysis.findings import Evidence, Finding
from llmlog.analysis.webhooks import Webhook
from llmlog.operations import accounts
from tests.backends import Backend
from tests.receiver import Receiver, closed_url
from tests.test_access import Client
from tests.webui import HOSTILE, Running, assert_inert, make_call

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECRET_URL_PART = "T000/SECRET-PATH"
RULE_SQL = "SELECT count(*) FROM calls WHERE error IS NOT NULL"
USER_FINDING = Finding(
    kind="user_outlier",
    key=f"user:{HOSTILE}",
    score=2.0,
    sentence=f"{HOSTILE} fails 41% of the time.",
    numbers={"error_rate": 0.41},
    evidence=[Evidence("the user", "user", {"user_id": "user_1"})],
)


@pytest.fixture
def server(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running, Receiver() as hook:
        store = running.store
        store.insert([make_call(i) for i in range(30)])
        alerts.add_webhook(store, Webhook("ops", hook.url))
        alerts.add_webhook(store, Webhook("down", closed_url(), "slack"))
        alerts.add_rule(store, Rule("failures", RULE_SQL, ">", 1))
        alerts.add_rule(store, Rule("broken", "SELECT model FROM calls LIMIT 1", ">", 1))
        notify(store, [USER_FINDING], now=NOW)
        for name, role in (("vera", "viewer"), ("dan", "debugger")):
            accounts.add_user(store, name, role, "correct horse battery")
        yield running


def signed_in(server: Running, name: str) -> Client:
    client = Client(server)
    assert client.sign_in(name, "correct horse battery").status_code == 303
    return client


def test_viewers_see_what_is_open_and_what_happened(server: Running) -> None:
    vera = signed_in(server, "vera")
    page = vera.get("/alerts")
    assert page.status_code == 200
    html = page.text
    assert_inert(html, "/alerts")
    assert "fails 41% of the time" in html and "&lt;script&gt;" in html
    assert "Rule failures: its query gives 3, above 1." in html
    assert "its query returned text, not a number" in html  # the broken rule, said
    assert "down: 1 failure" in html and "ops" in html
    # A viewer opens no user's page: the finding is not a link for them; nor any SQL.
    assert 'href="/users/' not in html and RULE_SQL not in html
    assert SECRET_URL_PART not in html and "127.0.0.1" not in html
    assert '<a href="/alerts">Alerts</a>' in html
    data = vera.get("/api/alerts").json()
    assert [w["name"] for w in data["webhooks"]] == ["ops", "down"]
    assert {r["name"]: (r["open"], r["problem"], r["sql"]) for r in data["rules"]} == {
        "failures": (True, None, None),
        "broken": (False, "its query returned text, not a number", None),
    }
    assert sorted(a["key"] for a in data["open"]) == sorted(["rule:failures", USER_FINDING.key])
    events = [(e["event"], e["webhook"]) for e in data["history"]]
    assert ("posted", "ops") in events and ("failed", "down") in events and ("rule_failed", None) in events
    assert SECRET_URL_PART not in page.text + str(data)


def test_debuggers_see_the_rules_sql_and_the_evidence_link(server: Running) -> None:
    dan = signed_in(server, "dan")
    html = dan.get("/alerts").text
    assert RULE_SQL in html and 'href="/users/user_1"' in html
    assert dan.get("/api/alerts").json()["rules"][0]["sql"] == RULE_SQL


def test_the_history_limit_is_checked(server: Running) -> None:
    vera = signed_in(server, "vera")
    assert len(vera.get("/api/alerts?limit=2").json()["history"]) == 2
    for bad in ("0", "x", "100000"):
        assert vera.get(f"/api/alerts?limit={bad}").status_code == 400


def test_without_configuration_the_page_says_how(backend: Backend) -> None:
    with Running(backend) as running:
        html = running.get("/alerts").text
    assert "No webhook and no rule yet" in html and "Nothing open." in html
