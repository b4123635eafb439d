"""The experiments' pages in a real browser (Debian's Chromium under Playwright, as
tests/test_browser.py drives it, whose `Tab` this uses): from the navigation to the list, to
one experiment's comparison and its pairs side by side, to a pair's replay comparison; with
markup in the model tried, the feature's version, the note and an answer, none of which runs,
and nothing the strict content security policy blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from llmlog.analysis import experiments as analysis
from llmlog.demo.fake_provider import FakeProvider
from llmlog.web import experiments as pages
from tests.backends import Backend
from tests.test_browser import WATCH_CSP, Site, Tab
from tests.test_browser import artifacts as artifacts
from tests.test_browser import chromium as chromium
from tests.test_web_experiments import EXP, HOSTILE_ANSWER, MODEL, OTHER, PAIRS, original, plant, said
from tests.webui import HOSTILE, Running


@pytest.fixture
def experimented(backend: Backend, fake: FakeProvider, chromium: Browser, artifacts: Path) -> Iterator[Tab]:
    """A server over a store holding two experiments of real calls (`plant`), and a tab on
    it that records every violation of the page's policy."""
    with Running(backend) as running:
        plant(running.store)
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
        context.set_default_timeout(10_000)
        tab = Tab(context.new_page(), Site(backend, running, fake), artifacts)
        tab.page.add_init_script(WATCH_CSP)
        try:
            yield tab
            assert not tab.dialogs, tab.dialogs  # an alert() of the hostile text would be one
            assert not tab.problems, tab.problems
            assert tab.js("window.__csp || []") == []
            assert all(p.stat().st_size > 1000 for p in tab.shots)
        finally:
            context.close()


def test_from_the_list_to_the_pairs_side_by_side(experimented: Tab) -> None:
    tab = experimented
    store = tab.site.store
    done = store.experiment(EXP)
    assert done is not None
    comparison = analysis.load(store, done)
    tab.open("/findings")
    tab.follow(tab.page.locator("header nav a", has_text="Experiments"))
    assert tab.path == "/experiments"
    rows = tab.table("table.experiments")
    assert [r["experiment"] for r in rows] == [OTHER, EXP]
    assert rows[1]["change"].startswith(f"model {MODEL}")  # shown as typed, as text
    assert rows[1]["replayed"] == f"{PAIRS} / {PAIRS}" and rows[1]["verdict"] == comparison.verdict
    assert "budget reached <script>alert(2)</script>" in rows[0]["status"]
    tab.shot("experiments")

    tab.follow(tab.page.locator("table.experiments a", has_text=EXP))
    assert tab.path == f"/experiments/{EXP}"
    metrics = tab.table("table.comparison")
    assert [r["metric"] for r in metrics] == [*analysis.MEANS, *analysis.RATES]
    assert [r["metric"] for r in metrics if "flagged" in r.classes] == [
        m.metric for m in comparison.metrics if m.flagged and m.metric in (*analysis.MEANS, *analysis.RATES)
    ]
    flagged = tab.page.locator("table.comparison tr.flagged").first
    expect(flagged).to_contain_text("changed")
    expect(flagged.locator("svg.spark")).to_be_visible()
    agreement = tab.table("table.agreement")
    assert len(agreement) == len(analysis.AGREEMENT)

    # The pairs, side by side: the words that differ marked on each side, the text as text.
    articles = tab.page.locator("article.pair")
    expect(articles).to_have_count(pages.SHOWN)
    hostile = articles.filter(has=tab.page.locator(f"a[href='/calls/{original(HOSTILE_ANSWER).id}']"))
    expect(hostile).to_have_count(1)
    sides = hostile.locator(".replay-sides").first.locator("pre")
    assert sides.nth(0).inner_text() == said(HOSTILE_ANSWER)
    assert sides.nth(1).inner_text() == HOSTILE + " nothing alike"
    assert hostile.locator(".ins").first.inner_text().startswith(HOSTILE)
    expect(hostile.locator(".del").first).to_be_visible()
    tab.shot("experiment")

    # A pair's own comparison, whole, from its link.
    tab.follow(hostile.locator("a.side-by-side"))
    assert tab.path.startswith(f"/calls/{original(HOSTILE_ANSWER).id}/replay/")
    deltas = {r[""]: r for r in tab.table("table.replay-deltas")}
    assert deltas["model"]["replay"] == MODEL
