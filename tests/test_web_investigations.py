"""The Reports pages over real HTTP on each store: each shows the finding planted in its
calls (the generators of tests/test_investigate.py), each JSON report is the report itself,
bad parameters are a 400 that says why, logged names stay text, and a viewer gets the
figures without links to the calls."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from markupsafe import Markup, escape

from llmlog.analysis import reports
from llmlog.analysis.dashboard import Period
from llmlog.core.record import Call
from llmlog.operations import accounts
from llmlog.store import ReadOnlyError, Store
from llmlog.web.headlines import Headlines
from tests.backends import Backend
from tests.test_access import PASSWORD, Client
from tests.test_investigate import NOW, calls_with_errors, drifting_calls, people_calls, routed_calls
from tests.webui import HOSTILE, Running, assert_inert, tags

WEEK = Period.ending(7)


def planted() -> list[Call]:
    """Every report's planted finding in one store. `routed_calls` and `drifting_calls` both
    name calls c0, c1, …: the routed ones are renamed, so that none is lost."""
    routed = [c.replace(id="route-" + c.id) for c in routed_calls()]
    return [*calls_with_errors(), *routed, *drifting_calls(), *people_calls()]


@pytest.fixture
def ui(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        running.store.insert(planted())
        yield running


@pytest.fixture
def bare(backend: Backend) -> Iterator[Running]:
    """A server over an empty store: for what is refused before anything is read."""
    with Running(backend) as running:
        yield running


def row(html: str, *needles: str) -> str:
    """The one table row holding every needle."""
    found = [tr for tr in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if all(n in tr for n in needles)]
    assert len(found) == 1, (needles, len(found))
    return found[0]


def hrefs(html: str) -> list[str]:
    return [str(dict(attrs).get("href")) for tag, attrs in tags(html) if tag == "a"]


def svgs(html: str) -> int:
    return len([t for t, _ in tags(html) if t == "svg"])


def test_the_index_lists_every_report_and_the_nav_leads_there(ui: Running) -> None:
    html = ui.get("/reports").text
    for name, what in reports.REPORTS.items():
        assert f'href="/reports/{name}"' in html and str(escape(what)) in html
    nav = re.search(r"<nav>(.*?)</nav>", html, re.S)
    assert nav is not None
    links = re.findall(r'href="([^"]+)"', nav.group(1))
    assert links[links.index("/dashboard") + 1] == "/reports"  # just after the dashboard
    listed = ui.get("/api/reports").json()
    assert list(listed) == list(reports.REPORTS)
    assert listed["drift"]["url"] == "/api/reports/drift"
    assert ui.get("/api/reports/nope").status_code == 404


def settled(running: Running) -> Headlines:
    """The server's headlines, waited for whole by the pages (by default a page waits a
    moment, and shows the names of the reports not done by then)."""
    kept: Headlines = running.app.state.web.headlines
    kept.wait_s = 300
    return kept


def headlines_shown(html: str) -> dict[str, str]:
    found = re.findall(r'<dt><a href="/reports/(\w+)">\w+</a></dt><dd><p class="headline">([^<]*)</p>', html)
    return {name: str(Markup(sentence).unescape()) for name, sentence in found}


def test_the_index_gives_each_reports_headline(ui: Running) -> None:
    settled(ui)
    shown = headlines_shown(ui.get("/reports").text)
    assert shown == {
        "errors": "3 error types in the last 7 days, 2 new: 99 errors, 3.9% of 2,570 calls.",
        "cost": (
            "$7.01 over the last 30 days, 5,782 calls, 49% of it on gpt-4.1; 1 feature sends short"
            " calls to a pricier model ($0.27 to save)."
        ),
        "drift": (
            "7 changes beyond chance in the last 7 days against the 28 before, in 5 features:"
            " chat, search, summarize and 2 more."
        ),
        "compare": (
            "2 features have several prompt versions to compare: review (2 versions), triage (2 versions)."
        ),
        "spikes": (
            "The costliest session of the last 7 days cost $0.80 over 400 turns; 3 users far above"
            " their peers."
        ),
    }
    # Each from its report, over the period its page opens on.
    groups = reports.errors_report(ui.store, WEEK)
    assert sum(g.errors for g in groups) == 99 and len({g.error_type for g in groups}) == 3
    assert f"{reports.cost_report(ui.store, Period.ending(30)).total_usd:.2f}" == "7.01"
    drifted = {c.feature for c in reports.drift_report(ui.store)}
    assert drifted == {"chat", "search", "summarize", "support-bot", "triage"}
    listed = ui.get("/api/reports").json()
    assert {name: r["headline"] for name, r in listed.items()} == shown


def test_a_report_that_fails_or_is_slow_shows_its_name_only(bare: Running) -> None:
    """Computed off the request's path: a page shows what is known, a report that failed (its
    time limit, say) or is not done shows its name; a refresh's findings are kept for the
    next page, and not asked again while fresh."""
    reached, release = threading.Event(), threading.Event()
    asked: list[datetime] = []

    def failing(store: Store, now: datetime) -> str:
        raise ReadOnlyError("query took longer than the 5 s limit")

    def quick(store: Store, now: datetime) -> str:
        asked.append(now)
        return f"{len(asked)} quick sentence."

    def slow(store: Store, now: datetime) -> str:
        reached.set()
        assert release.wait(60)
        return "1 slow sentence."

    web = bare.app.state.web
    web.headlines = Headlines({"errors": failing, "cost": quick, "drift": slow}, wait_s=0)
    bare.get("/reports")  # starts the refresh, and waits for none of it
    assert reached.wait(60)  # errors and cost are done, drift under way
    html = bare.get("/reports").text
    assert headlines_shown(html) == {"cost": "1 quick sentence."}
    assert all(f'<a href="/reports/{name}">{name}</a>' in html for name in reports.REPORTS)
    listed = {name: r["headline"] for name, r in bare.get("/api/reports").json().items()}
    assert listed == dict.fromkeys(reports.REPORTS) | {"cost": "1 quick sentence."}
    release.set()
    web.headlines.wait_s = 300  # counted from the refresh's start: drift is waited for
    assert headlines_shown(bare.get("/reports").text) == {
        "cost": "1 quick sentence.",
        "drift": "1 slow sentence.",
    }
    assert len(asked) == 1  # fresh: not computed again


def test_headlines_of_a_store_that_cannot_be_read_are_none_until_the_next_refresh() -> None:
    tried: list[int] = []

    @contextlib.contextmanager
    def broken() -> Iterator[Store]:
        tried.append(1)
        raise RuntimeError("the store is closed")
        yield  # never reached

    kept = Headlines({"errors": lambda store, now: "never"}, wait_s=300)
    assert kept.current(broken) == {"errors": None}
    assert kept.current(broken) == {"errors": None} and len(tried) == 1


def test_the_errors_page_shows_the_new_error_type(ui: Running) -> None:
    html = ui.get("/reports/errors", params={"days": "7"}).text
    new = row(html, "tool_schema_error", "support-bot")
    assert ">new<" in new and "10.7%" in new and ">15<" in new
    steady = row(html, "rate_limit_error")
    assert ">new<" not in steady and "10.0%" in steady
    # The examples are the newest failed calls, linked; the count links to them on the list.
    examples = re.findall(r'href="/calls/([^"]+)"', new)
    assert len(examples) == 3 and all(e.startswith("b-0-") for e in examples)
    assert any(h.startswith("/?") and "status=error" in h and "feature=support-bot" in h for h in hrefs(new))
    # The chart: errors per day stacked by type, one bar a day, each day linking to its errors.
    today = WEEK.last.isoformat()
    assert f"<title>{today} · tool_schema_error: 5 errors</title>" in html
    assert svgs(html) == 1 + html.count('class="spark"')
    expected = [g.to_json() for g in reports.errors_report(ui.store, WEEK)]
    assert ui.get("/api/reports/errors", params={"days": "7"}).json() == expected


def test_the_cost_page_shows_the_over_routing(ui: Running) -> None:
    html = ui.get("/reports/cost", params={"days": "7"}).text
    routed = row(html, "classify", "gpt-4.1-mini")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", routed)
    assert cells == ["classify", "gpt-4.1", "gpt-4.1-mini", "30", "12", "$0.01000", "$0.00100", "$0.2700"]
    # Cost per day, and the bars by model, feature and user.
    assert svgs(html) == 4
    for name in ("essay", "gpt-4.1", "u-heavy"):
        assert f">{name}</text>" in html
    expected = reports.cost_report(ui.store, WEEK).to_json()
    got = ui.get("/api/reports/cost", params={"days": "7"}).json()
    assert got == expected and got["over_routing"][0]["savings_usd"] == pytest.approx(0.27)


def test_the_drift_page_names_what_changed(ui: Running) -> None:
    html = ui.get("/reports/drift", params={"days": "7", "baseline": "28"}).text
    essays = row(html, ">summarize<", "output_tokens")
    assert ">v1<" in essays and "<svg" in essays  # its before/after bars
    assert re.search(r">\+[3-9]\.\d\d sd<", essays)  # the answers doubled: several sd
    assert "(all versions)" in row(html, ">triage<", "output_tokens")
    assert row(html, ">chat<", "refusal_rate")
    data = ui.get("/api/reports/drift", params={"days": "7", "baseline": "28"}).json()
    found = {(c["feature"], c["version"], c["metric"]) for c in data}
    assert {("summarize", "v1", "output_tokens"), ("search", "v3", "error_rate")} <= found
    assert ("triage", reports.ALL_VERSIONS, "output_tokens") in found
    assert all(c["flagged"] and c["p"] < reports.ALPHA for c in data)


def test_where_nothing_drifted_the_page_says_so(backend: Backend) -> None:
    with Running(backend) as running:
        running.store.insert(drifting_calls(plant=False))
        html = running.get("/reports/drift").text
        assert "Nothing changed beyond chance" in html and "<table" not in html
        assert running.get("/api/reports/drift").json() == []


def test_compare_two_versions_and_a_moment(ui: Running) -> None:
    asked = {"feature": "review", "old": "v1", "new": "v2", "days": "28"}
    html = ui.get("/reports/compare", params=asked).text
    flagged = re.findall(r'<tr class="flagged"><td>(\w+)</td>', html)
    assert flagged == ["output_tokens"]
    assert ">changed<" in row(html, "output_tokens") and ">changed<" not in row(html, ">latency_ms<")
    assert "0.0%" in row(html, ">error_rate<")  # rates as percentages
    pairs = re.search(r'<section class="panel wide" id="pairs">(.*?)</section>', html, re.S)
    assert pairs is not None
    ids = re.findall(r'href="/calls/([^"]+)"', pairs.group(1))
    assert len(ids) == 6 and all(i.startswith("r") for i in ids)
    assert ui.get(f"/calls/{ids[0]}").status_code == 200
    # The form offers the feature's versions, chosen as asked.
    assert '<option value="v2" selected>v2 (' in html
    assert '<option value="review" selected>review</option>' in html
    data = ui.get("/api/reports/compare", params=asked).json()
    assert [c["metric"] for c in data["metrics"] if c["flagged"]] == ["output_tokens"]
    assert data["pairs"] == [ids[i : i + 2] for i in (0, 2, 4)]  # as the page pairs them

    # Before and after a deploy, given as an ISO time; the cost per call shows in dollars.
    moment = {"feature": "triage", "at": (NOW - timedelta(days=3)).isoformat()}
    html = ui.get("/reports/compare", params=moment).text
    assert set(re.findall(r'<tr class="flagged"><td>(\w+)</td>', html)) == {"output_tokens", "cost_usd"}
    assert re.search(r"\$0\.00[0-9]+", row(html, ">cost_usd<"))
    data = ui.get("/api/reports/compare", params={**moment, "at": "3d"}).json()
    assert data["old"].startswith("before ") and {c["metric"] for c in data["metrics"] if c["flagged"]} == {
        "output_tokens",
        "cost_usd",
    }
    # A feature alone: the form, its versions offered, nothing compared yet.
    chosen = ui.get("/reports/compare", params={"feature": "review"})
    assert chosen.status_code == 200 and "Choose two of its versions" in chosen.text
    assert 'id="comparison"' not in chosen.text


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"feature": "triage", "at": "last tuesday"}, "neither a duration"),
        ({"feature": "triage", "at": "99999999999d"}, "further back than the calendar"),
        ({"feature": "triage", "at": "0001-01-01"}, "outside the calendar"),
        ({"feature": "review", "old": "v1"}, "both versions"),
        ({"feature": "review", "old": "v1", "new": "v2", "at": "3d"}, "not both"),
        ({"feature": "review", "old": "v1", "new": "v2", "days": "0"}, "days must be between"),
        ({"old": "v1", "new": "v2"}, "feature"),
    ],
)
def test_a_bad_comparison_is_a_400_that_says_why(bare: Running, params: dict[str, str], said: str) -> None:
    r = bare.get("/reports/compare", params=params)
    assert r.status_code == 400, r.text
    alert = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text)
    assert alert is not None and said in alert.group(1)
    assert 'class="compare-form"' in r.text  # the form, to put it right
    api = bare.get("/api/reports/compare", params=params)
    assert api.status_code == 400 and said in api.json()["error"]


@pytest.mark.parametrize("name", ["errors", "cost", "spikes", "drift"])
@pytest.mark.parametrize("days", ["0", "x", "9999"])
def test_a_bad_period_is_a_400_that_says_why(bare: Running, name: str, days: str) -> None:
    r = bare.get(f"/reports/{name}", params={"days": days})
    assert r.status_code == 400 and "days must be" in r.text
    api = bare.get(f"/api/reports/{name}", params={"days": days})
    assert api.status_code == 400 and "days must be" in api.json()["error"]


def test_bad_baseline_and_end(bare: Running) -> None:
    r = bare.get("/reports/drift", params={"baseline": "-1"})
    assert r.status_code == 400 and "baseline must be between" in r.text
    assert bare.get("/reports/errors", params={"end": "yesterday"}).status_code == 400


def test_the_spikes_page_shows_the_session_and_the_users(ui: Running) -> None:
    html = ui.get("/reports/spikes").text
    long = row(html, 'href="/sessions/long"')
    assert 'href="/users/u-heavy"' in long and ">400<" in long and "$0.8000" in long
    outliers = re.search(r'id="outliers">(.*?)</section>', html, re.S)
    assert outliers is not None
    assert "50.0%" in row(outliers.group(1), 'href="/users/u-broken"', "error_rate")
    assert row(outliers.group(1), 'href="/users/u-heavy"', ">calls<")
    assert '<a href="/sessions/long">' in html  # the chart's bar label links there too
    expected = reports.spikes_report(ui.store, WEEK).to_json()
    assert ui.get("/api/reports/spikes").json() == expected


def hostile_calls() -> list[Call]:
    """The planted findings, under hostile names: each report shows one."""

    def rename(c: Call, **names: Any) -> Call:
        return c.replace(**{k: v for k, v in names.items() if getattr(c, k) is not None})

    out: list[Call] = []
    for c in drifting_calls():
        out.append(rename(c, feature=HOSTILE) if c.feature == "summarize" else c)
    for c in calls_with_errors():
        if c.feature == "support-bot":
            c = rename(c, feature=HOSTILE, model=HOSTILE, error={"type": HOSTILE, "message": "x"})
        out.append(c)
    for c in routed_calls():
        out.append(rename(c, id="route-" + c.id, feature=HOSTILE if c.feature == "classify" else c.feature))
    for c in people_calls():
        out.append(rename(c, user_id=HOSTILE, session_id=HOSTILE) if c.user_id == "u-heavy" else c)
    return out


def test_logged_names_stay_text_on_every_report(backend: Backend) -> None:
    with Running(backend) as running:
        running.store.insert(hostile_calls())
        shown = str(escape(HOSTILE))
        pages: list[tuple[str, dict[str, str], int]] = [
            ("/reports/errors", {}, 2),  # in the chart's legend, and in a row
            ("/reports/cost", {}, 2),
            ("/reports/drift", {}, 1),
            ("/reports/spikes", {}, 2),
            ("/reports/compare", {"feature": HOSTILE, "at": "7d"}, 2),
        ]
        for path, params, at_least in pages:
            r = running.get(path, params=params)
            assert r.status_code == 200, path
            assert_inert(r.text, path)
            assert r.text.count(shown) >= at_least, path
            assert HOSTILE not in r.text, path
            for href in hrefs(r.text):
                assert href.startswith("/"), (path, href)  # ours, with the value encoded in it
        spikes = running.get("/reports/spikes").text
        assert "/sessions/%3Cscript%3Ealert%28%22x%22%29" in spikes
        drift = running.get("/reports/drift").text
        assert row(drift, shown, ">v1<", "output_tokens")
        # The headlines name features cut, as text.
        settled(running)
        index = running.get("/reports").text
        assert_inert(index, "/reports")
        assert HOSTILE not in index and str(escape(HOSTILE[:39] + "…")) in index
        groups = running.get("/api/reports/errors").json()
        # SQLite's rollup keys lose `"` (its JSON paths cannot hold one): see
        # llmlog.store.sqlite.SQLITE.error_type_of.
        unquoted = HOSTILE.replace('"', "")
        assert any(
            g["feature"] == g["model"] == HOSTILE
            and g["error_type"].replace('"', "") == unquoted
            and g["new"]
            for g in groups
        )


def test_a_viewer_sees_the_figures_without_links_to_the_calls(ui: Running) -> None:
    for name, role in (("vera", "viewer"), ("dan", "debugger")):
        accounts.add_user(ui.store, name, role, PASSWORD)
    anonymous = Client(ui)
    assert anonymous.get("/reports/cost").status_code == 303
    assert anonymous.get("/api/reports/cost").status_code == 401
    viewer, debugger = Client(ui), Client(ui)
    viewer.sign_in("vera")
    debugger.sign_in("dan")
    compare = "/reports/compare?feature=review&old=v1&new=v2"
    for path in (
        "/reports",
        "/reports/cost",
        "/reports/errors",
        "/reports/drift",
        "/reports/spikes",
        compare,
    ):
        r = viewer.get(path)
        assert r.status_code == 200, path
        links = hrefs(r.text)
        assert not [h for h in links if h.startswith(("/calls/", "/sessions/", "/users/", "/?"))], path
        assert 'href="/reports"' in r.text
    # The headlines too: figures, for viewers as for anyone.
    settled(ui)
    assert (
        headlines_shown(viewer.get("/reports").text) == headlines_shown(debugger.get("/reports").text) != {}
    )
    # The ids are there, as text: a debugger can open them.
    errors = viewer.get("/reports/errors").text
    assert '<code title="b-0-' in errors and 'href="/calls/' in debugger.get("/reports/errors").text
    pairs = viewer.get(compare).text
    assert re.search(r'<code title="r\d+">r\d+</code>', pairs)
    assert 'href="/calls/r' in debugger.get(compare).text
    assert 'href="/sessions/long"' in debugger.get("/reports/spikes").text
    assert viewer.get("/api/reports/errors").status_code == 200
    assert viewer.get("/calls/b-0-0").status_code == 403


def test_compare_with_too_few_calls_gives_no_verdict(ui: Running) -> None:
    """Under 30 calls a side (none at all, past the last call) is not "no change beyond
    chance": the page says, in the words the CLI uses, that there is too little to test."""
    far = ui.get("/reports/compare", params={"feature": "triage", "at": "2030-01-01"}).text
    count = re.search(r'<p class="count">(.*?)</p>', far, re.S)
    assert count is not None and "no change" not in count.group(1)
    assert "0 calls → 0 calls" in count.group(1)
    assert "too few calls to test (at least 30 per side)." in count.group(1)
