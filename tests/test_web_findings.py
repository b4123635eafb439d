"""The findings in the web UI: the page and its JSON to a viewer (figures, and links only to
what a viewer opens) and to a debugger (links to the calls, sessions and users too); names
from the calls escaped wherever shown; the first screen (nav, brand, signing in, the calls
list's line); the page while the first evaluation is under way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from llmlog.analysis import findings
from llmlog.core.record import Call
from llmlog.operations import accounts
from llmlog.web import findings as findings_page
from tests import test_investigate as planted
from tests.backends import SQLiteBackend
from tests.test_access import PASSWORD, Client
from tests.webui import HOSTILE, Running, assert_inert

# A user and a feature named to break out of a page, and of a link's query.
USER = HOSTILE + "&status=ok#"
FEATURE = "<b>classify</b>\"'&"


def hostile_calls() -> list[Call]:
    """The people and the over-routing the reports' tests plant, with hostile names: a user
    failing half their calls, a user with a long costly session, a feature sending short
    calls to a pricier model."""
    people = [
        c.replace(user_id=USER if c.user_id == "u-broken" else c.user_id) for c in planted.people_calls()
    ]
    routed = [
        c.replace(feature=FEATURE if c.feature == "classify" else c.feature) for c in planted.routed_calls()
    ]
    return people + routed


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Running]:
    """A server with accounts, its findings evaluated once as of the calls' moment (the
    pages show the latest evaluation; no test waits for one)."""
    with Running(SQLiteBackend(tmp_path / "calls.db")) as running:
        running.store.insert(hostile_calls())
        for name, role in (("vera", "viewer"), ("dan", "debugger")):
            accounts.add_user(running.store, name, role, PASSWORD)
        running.app.state.web.findings.put(findings.evaluation(running.store, planted.NOW))
        yield running


def signed_in(site: Running, name: str) -> Client:
    c = Client(site)
    assert c.sign_in(name).status_code == 303
    return c


def test_a_viewer_sees_the_findings_and_only_the_links_a_viewer_opens(site: Running) -> None:
    page = signed_in(site, "vera").get("/findings")
    assert page.status_code == 200
    html = page.text
    assert_inert(html, "/findings")
    assert HOSTILE not in html and FEATURE not in html  # escaped
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html and "&lt;b&gt;classify&lt;/b&gt;" in html
    assert "50.0% of their 40 calls failed" in html and "short calls" in html
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="spark"') == html.count(
        'class="finding"'
    )
    assert 'href="/reports/spikes?days=7"' in html and 'href="/reports/cost?days=7"' in html
    for text in ('href="/users/', 'href="/sessions/', 'href="/?'):
        assert text not in html, text
    data = signed_in(site, "vera").get("/api/findings").json()
    kinds = {e["kind"] for f in data["findings"] for e in f["evidence"]}
    assert kinds == {"report"}
    assert {f["key"] for f in data["findings"]} >= {
        f"user_outlier:{USER}:error_rate",
        f"over_routing:{FEATURE}:gpt-4.1",
        "costly_session:long",
    }


def test_a_debugger_gets_the_links_to_the_calls_sessions_and_users(site: Running) -> None:
    dan = signed_in(site, "dan")
    html = dan.get("/findings").text
    assert_inert(html, "/findings")
    assert HOSTILE not in html
    # The user's page, its name one path segment; their failed calls, the name one value.
    assert f'href="/users/{quote(USER, safe="")}"' in html
    assert f'href="/?user={quote_plus(USER)}&amp;status=error&amp;since=' in html
    assert 'href="/sessions/long"' in html
    data = dan.get("/api/findings").json()
    kinds = {e["kind"] for f in data["findings"] for e in f["evidence"]}
    assert kinds == {"calls", "user", "session", "report"}
    broken = next(f for f in data["findings"] if f["key"] == f"user_outlier:{USER}:error_rate")
    assert (
        broken["numbers"]["user_id"] == USER and broken["chart"]["points"][-1][0] == planted.TODAY.isoformat()
    )


def test_the_first_screen_is_the_findings(site: Running) -> None:
    dan = Client(site)
    signed = dan.submit("/login", {"name": "dan", "password": PASSWORD})  # no page asked for
    assert signed.status_code == 303 and signed.headers["location"] == "/findings"
    page = dan.get("/findings").text
    assert '<a class="brand" href="/findings">' in page
    nav = page[page.index("<nav>") : page.index("</nav>")]
    assert nav.index('href="/findings"') < nav.index('href="/"')
    # The unfiltered calls list says how many findings there are, and links there.
    n = len(site.app.state.web.findings.peek().findings)
    listed = dan.get("/").text
    assert f'<a href="/findings">{n} findings now → Findings</a>' in listed
    assert "findings-strip" not in dan.get("/?feature=search").text
    vera = signed_in(site, "vera")
    opened = vera.get("/", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/findings"


def test_before_the_first_evaluation_the_page_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(findings_page, "WAIT_S", 0.0)  # the page answers at once, none waited for
    with Running(SQLiteBackend(tmp_path / "calls.db")) as running:
        running.store.insert(hostile_calls())
        page = running.get("/findings")
        assert page.status_code == 200 and "being evaluated" in page.text
        assert '<meta http-equiv="refresh"' in page.text
        web = running.app.state.web
        done = web.findings.get(web.reading, wait_s=60)
        assert done is not None and done.findings
        page = running.get("/findings")
        assert "being evaluated" not in page.text and '<meta http-equiv="refresh"' not in page.text
        assert running.get("/api/findings").json()["at"] == done.at.isoformat()
