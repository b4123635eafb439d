"""The drift-per-day page and its JSON over real HTTP on each store (no browser): three charts a
feature with the days new versions and models came marked, the JSON the analysis itself,
the period and feature in the URL, links from the Reports pages, bad parameters a 400;
logged names stay text; a viewer gets the figures without links to the calls."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest
from markupsafe import escape

from llmlog.analysis import drift
from llmlog.core.record import Call
from llmlog.operations import accounts
from tests.backends import Backend
from tests.test_access import PASSWORD, Client
from tests.test_drift_by_day import PERIOD, chat_calls, day
from tests.test_investigate import drifting_calls
from tests.test_web_investigations import row
from tests.webui import HOSTILE, Running, assert_inert, tags

PAGE = "/reports/drift-by-day"
FIVE = {"days": "5", "end": day(0)}


@pytest.fixture
def ui(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        running.store.insert(chat_calls())
        yield running


def hrefs(html: str) -> list[str]:
    return [str(dict(attrs).get("href")) for tag, attrs in tags(html) if tag == "a"]


def charts_of(html: str) -> list[dict[str, Any]]:
    return [dict(attrs) for tag, attrs in tags(html) if tag == "svg" and dict(attrs).get("class") == "chart"]


def test_three_charts_a_feature_with_the_new_days_marked(ui: Running) -> None:
    r = ui.get(PAGE, params=FIVE)
    assert r.status_code == 200
    labels = [c["aria-label"] for c in charts_of(r.text)]
    assert labels == [
        f"{f}: {what}"
        for f in ("chat", "search", "(none)")
        for what in ("output tokens per call, per day", "refusal rate per day", "tool-call rate per day")
    ]
    chat = r.text.split('id="feature-2"')[0]
    # chat@v2 (as "v2") and m-new, each marked on its day in each of chat's three charts.
    assert chat.count(f"<title>prompt version chat@v2: first call on {day(2)}</title>") == 3
    assert chat.count(f"<title>model m-new: first call on {day(1)}</title>") == 3
    assert chat.count(">v2</text>") == 3 and chat.count(">m-new</text>") == 3
    assert "chat@v1" not in chat  # it came before the period
    assert f"<title>{day(1)}: 30.0% · 10 calls, 10 read</title>" in chat  # the refusal rate
    assert f"/reports/compare?feature=chat&amp;at={day(2)}&amp;days=7" in chat
    # Each feature alone, by its name; the period and the feature kept by the period links.
    assert f"{PAGE}?days=5&amp;end={day(0)}&amp;feature=chat" in r.text
    one = ui.get(PAGE, params={**FIVE, "feature": "chat"}).text
    assert len(charts_of(one)) == 3 and f"{PAGE}?days=30&amp;end={day(0)}&amp;feature=chat" in one
    assert "No calls of <span" in ui.get(PAGE, params={"feature": "nothing"}).text


def test_the_json_is_the_analysis(ui: Running) -> None:
    data = ui.get("/api" + PAGE, params=FIVE).json()
    store = ui.store
    assert data == drift.drift_by_day(lambda: nullcontext(store), PERIOD).to_json()
    one = ui.get("/api" + PAGE, params={**FIVE, "feature": "search"}).json()
    assert [f["feature"] for f in one["features"]] == ["search"]


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"days": "0"}, "days must be between 1 and 366"),
        ({"days": "x"}, "days must be a whole number"),
        ({"end": "soon"}, "end must be a date"),
        ({"feature": "a\x00b"}, "NUL"),
    ],
)
def test_bad_parameters_are_a_400_that_says_why(ui: Running, params: dict[str, str], said: str) -> None:
    page = ui.get(PAGE, params=params)
    assert page.status_code == 400 and said in page.text
    api = ui.get("/api" + PAGE, params=params)
    assert api.status_code == 400 and said in api.json()["error"]


def test_the_reports_pages_lead_there(backend: Backend) -> None:
    with Running(backend) as running:
        running.store.insert(drifting_calls())
        assert PAGE in hrefs(running.get("/reports").text)
        drifted = running.get("/reports/drift").text
        assert PAGE in hrefs(drifted)
        # A change in a figure drawn per day opens its feature's days, those the report covers.
        essays = row(drifted, ">summarize<", ">v1<", "output_tokens")
        assert f'href="{PAGE}?days=35&amp;feature=summarize"' in essays
        assert PAGE not in row(drifted, ">search<", "error_rate")  # not drawn per day


def test_logged_names_stay_text(backend: Backend) -> None:
    def hostile(c: Call) -> Call:
        v2 = c.prompt_template_version == "chat@v2"
        return c.replace(
            feature=HOSTILE if c.feature == "chat" else c.feature,
            model=HOSTILE if c.model == "m-new" else c.model,
            prompt_template_version=f"{HOSTILE}@{HOSTILE}" if v2 else None,
        )

    with Running(backend) as running:
        running.store.insert([hostile(c) for c in chat_calls()])
        shown = str(escape(HOSTILE))
        for params in (FIVE, {**FIVE, "feature": HOSTILE}):
            r = running.get(PAGE, params=params)
            assert r.status_code == 200
            assert_inert(r.text, PAGE)
            assert HOSTILE not in r.text
            assert r.text.count(shown) >= 6  # the heading, the marks (model and version), the list
            assert all(h.startswith("/") for h in hrefs(r.text))
            # The version as the feature's chart labels it: its part after "FEATURE@", cut.
            assert f"<title>prompt version {shown}@{shown}: first call on {day(2)}</title>" in r.text
        data = running.get("/api" + PAGE, params={**FIVE, "feature": HOSTILE}).json()
        assert data["features"][0]["feature"] == HOSTILE
        assert {a["name"] for a in data["features"][0]["appeared"]} >= {HOSTILE, f"{HOSTILE}@{HOSTILE}"}


def test_a_viewer_sees_the_figures_without_links_to_the_calls(ui: Running) -> None:
    for name, role in (("vera", "viewer"), ("dan", "debugger")):
        accounts.add_user(ui.store, name, role, PASSWORD)
    anonymous = Client(ui)
    assert anonymous.get(PAGE).status_code == 303
    assert anonymous.get("/api" + PAGE).status_code == 401
    viewer, debugger = Client(ui), Client(ui)
    viewer.sign_in("vera")
    debugger.sign_in("dan")
    seen = viewer.get(PAGE, params=FIVE)
    assert seen.status_code == 200 and len(charts_of(seen.text)) == 9
    assert not [h for h in hrefs(seen.text) if h.startswith(("/calls/", "/sessions/", "/users/", "/?"))]
    assert viewer.get("/api" + PAGE, params=FIVE).status_code == 200
    # A debugger's days open that day's calls of the feature.
    links = hrefs(debugger.get(PAGE, params=FIVE).text)
    assert f"/?feature=chat&since={day(1)}&until={day(0)}" in links
    assert re.search(r"/\?feature=chat&since=\d{4}-\d\d-\d\d&until=", " ".join(links))


def test_the_days_a_view_leaves_are_read_on_after_it(ui: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlog.web import drift as page

    monkeypatch.setattr(page, "VIEW_BUDGET_S", 0.0)  # a view reads no day itself
    first = ui.get(PAGE, params=FIVE).text
    assert "are still being read" in first or "is still being read" in first
    deadline = time.monotonic() + 60
    while (left := ui.get("/api" + PAGE, params=FIVE).json()["unread_days"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
    assert "still being read" not in ui.get(PAGE, params=FIVE).text
    data = ui.get("/api" + PAGE, params=FIVE).json()
    assert data["features"][0]["days"][3]["refusal_rate"] == 0.3
