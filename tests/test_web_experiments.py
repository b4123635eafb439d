"""The experiments' pages over real HTTP: the list and one experiment, to a viewer (figures,
no pair, no call id, in the page and its JSON) and to a debugger (the pairs that differ most,
side by side, linked to their calls and their replay's comparison); names, paths, values
and answers escaped wherever shown; unknown and malformed ids the site's 404; the list's
verdicts kept for ended experiments only."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from markupsafe import escape

from llmlog.analysis import experiments as analysis
from llmlog.core.config import Settings
from llmlog.core.record import Call
from llmlog.operations import accounts
from llmlog.store import Store
from llmlog.store.experiments import Experiment
from llmlog.web import experiments as pages
from tests.backends import Backend, SQLiteBackend
from tests.test_access import PASSWORD, Client
from tests.test_encryption import K1
from tests.webui import HOSTILE, T0, Running, assert_inert, make_call, tags

EXP = "exp-0a1b2c3d"  # every original replayed, the output grown: a flagged change
OTHER = "exp-99887766"  # stopped after a few, named and changed with markup
PAIRS = 40
MODEL = "claude-<script>alert(1)</script>-haiku"  # the model tried, as typed
CREATED = T0 + timedelta(days=2)
FAILED, HOSTILE_ANSWER, OTHER_TOOL = 3, 5, 7  # pairs planted to differ


def answer(text: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for n, t in enumerate(tools or []):
        blocks.append({"type": "tool_use", "id": f"toolu_r{n}", "name": t["name"], "input": t["input"]})
    return {"role": "assistant", "content": blocks}


def said(i: int, verb: str = "will") -> str:
    return f"Order {i} has shipped and {verb} arrive on Monday; the tracking number is in your email."


def original(i: int) -> Call:
    return make_call(i, feature="support-bot", response=answer(said(i)), output_tokens=20 + i % 3)


def replay_of(call: Call, i: int, experiment: str = EXP) -> Call:
    """The replay `llmlog experiment run` would have recorded: the same call with the model
    changed, an answer a word apart and longer in tokens, and its metadata naming the
    experiment and the original."""
    text = said(i, "should")  # one word other than the original's
    tools: list[dict[str, Any]] = []
    error = call.error
    if i == FAILED:
        text, error = "", {"type": "overloaded_error", "status": 529, "message": "busy " + HOSTILE}
    elif i == HOSTILE_ANSWER:
        text = HOSTILE + " nothing alike"
    elif i == OTHER_TOOL:
        text = "Let me look that order up."
        tools = [{"name": "lookup_<b>order</b>", "input": {"id": "<script>x</script>"}}]
    return call.replace(
        id=str(uuid.UUID(int=(1 << 64) + i + (0 if experiment == EXP else 1000))),
        timestamp=CREATED + timedelta(seconds=i),
        model=MODEL,
        response=answer(text, tools),
        tool_calls=[{"id": f"toolu_r{n}", **t} for n, t in enumerate(tools)] or None,
        output_tokens=55 + i % 7,
        error=error,
        metadata={"experiment": experiment, "replay_of": call.id},
    )


def plant(store: Store) -> tuple[Experiment, Experiment]:
    """Two experiments of real calls in `store`: EXP, done, every pair replayed; OTHER,
    stopped after 4 of its 10, with markup in everything typed."""
    originals = [original(i) for i in range(PAIRS)]
    store.insert(originals + [replay_of(c, i) for i, c in enumerate(originals)])
    done = Experiment(
        id=EXP, created=CREATED, feature="support-bot", version="v1",
        since=T0, until=T0 + timedelta(days=1),
        change={"model": MODEL, "system_file": "prompts/<img src=x onerror=alert(1)>.txt",
                "system_sha256": "ab" * 32, "params": {"temperature": 0, "stop": "</pre><script>"}},
        sample=[c.id for c in originals], status="done",
        budget_usd=1.0, estimate_usd=0.06, spent_usd=0.05, finished=CREATED + timedelta(minutes=3),
    )  # fmt: skip
    store.insert([replay_of(c, i, OTHER) for i, c in enumerate(originals[:4])])
    stopped = Experiment(
        id=OTHER, created=CREATED + timedelta(hours=1), feature="support-bot", version="<i>v9</i>",
        since=T0, until=T0 + timedelta(days=1),
        change={"prompt_version": "<b>support</b>@v2"},
        sample=[c.id for c in originals[:10]], status="stopped", budget_usd=0.01,
        estimate_usd=0.02, spent_usd=0.01, note="budget reached <script>alert(2)</script>",
    )  # fmt: skip
    store.save_experiment(done)
    store.save_experiment(stopped)
    return done, stopped


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Running]:
    with Running(SQLiteBackend(tmp_path / "calls.db")) as running:
        plant(running.store)
        for name, role in (("vera", "viewer"), ("dan", "debugger")):
            accounts.add_user(running.store, name, role, PASSWORD)
        yield running


def signed_in(site: Running, name: str) -> Client:
    c = Client(site)
    assert c.sign_in(name).status_code == 303
    return c


def comparison(site: Running, experiment_id: str) -> analysis.Comparison:
    e = site.store.experiment(experiment_id)
    assert e is not None
    return analysis.load(site.store, e)


def no_markup(html: str, where: str) -> None:
    """Nothing typed or logged reached the page as markup."""
    assert_inert(html, where)
    # Nor anything the content security policy would block: no inline style.
    assert "<style" not in html and not [a for _, attrs in tags(html) for a, _ in attrs if a == "style"], (
        where
    )
    for raw in (HOSTILE, MODEL, "<b>support</b>", "<i>v9</i>", "</pre><script>", "<b>order</b>"):
        assert raw not in html, (where, raw)


def main(html: str) -> str:
    return html[html.index("<main>") : html.index("</main>")]


# ---------------------------------------------------------------- each engine


@pytest.fixture
def engine_site(every_engine: Backend) -> Iterator[Running]:
    with Running(every_engine) as running:
        plant(running.store)
        yield running


def test_the_list_and_an_experiment_on_each_engine(engine_site: Running) -> None:
    site = engine_site
    html = site.get("/experiments").text
    no_markup(html, "/experiments")
    # Newest first, each linked; its change, status, note and run, escaped.
    assert html.index(f'href="/experiments/{OTHER}"') < html.index(f'href="/experiments/{EXP}"')
    assert str(escape(f"model {MODEL}")) in html and str(escape("prompt <b>support</b>@v2")) in html
    assert str(escape("budget reached <script>alert(2)</script>")) in html
    done, stopped = comparison(site, EXP), comparison(site, OTHER)
    assert len(done.done) == PAIRS and len(stopped.done) == 4
    assert f"{PAIRS} / {PAIRS}" in html and "4 / 10" in html
    assert str(escape(done.verdict)) in html and str(escape(stopped.verdict)) in html
    assert "$0.0500 spent of $0.0600 estimated, budget $1.00" in html
    listed = site.get("/api/experiments").json()["experiments"]
    assert [(x["id"], x["replayed"], x["verdict"]) for x in listed] == [
        (OTHER, 4, stopped.verdict),
        (EXP, PAIRS, done.verdict),
    ]
    assert listed[1]["change"]["model"] == MODEL and listed[1]["sampled"] == PAIRS
    assert "sample" not in listed[1]  # call ids: an experiment's own JSON, for a debugger

    page = site.get(f"/experiments/{EXP}")
    assert page.status_code == 200
    no_markup(page.text, f"/experiments/{EXP}")
    assert "$0.050000 spent of $0.060000 estimated, budget $1.000000" in page.text
    flagged = [m.metric for m in done.metrics if m.flagged]
    assert "output_tokens" in flagged
    shown = re.findall(r'<tr class="flagged"><td>(\w+)</td>', page.text)
    assert shown == [m for m in flagged if m in (*analysis.MEANS, *analysis.RATES)]
    # Each row: logged, replayed, the bars, the change, the effect (a mean's in sd; a rate's
    # is its change in points, said once), p, the pairs.
    cells = {
        name: re.findall(r'<td class="n">([^<]*)</td>', tr)
        for name, tr in re.findall(r"<tr[^>]*><td>(\w+)</td>(.*?)</tr>", page.text, re.S)
    }
    tokens = done.metric("output_tokens")
    assert cells["output_tokens"] == [
        pages.figure("output_tokens", tokens.before), pages.figure("output_tokens", tokens.after),
        pages.change(tokens), f"{tokens.effect:+.2f} sd", pages.p_value(tokens.p), str(tokens.n),
    ]  # fmt: skip
    assert 0 < tokens.n < PAIRS  # the failed pairs are in the error rate, not the means
    errors = done.metric("error_rate")
    assert cells["error_rate"][2:4] == [f"{errors.change * 100:+.1f} pts", ""]
    data = site.get(f"/api/experiments/{EXP}").json()
    assert data["verdict"] == done.verdict and data["replayed"] == PAIRS
    assert [m["metric"] for m in data["metrics"]] == [*analysis.MEANS, *analysis.RATES, *analysis.AGREEMENT]
    assert data["metrics"][0] == done.metric("output_tokens").to_json()
    assert {p["original"] for p in data["pairs"]} == set(data["experiment"]["sample"])  # open: an admin's


# ---------------------------------------------------------------- roles


def test_a_viewer_gets_the_figures_without_the_pairs_or_any_call(site: Running) -> None:
    vera = signed_in(site, "vera")
    nav = re.search(r"<nav>(.*?)</nav>", vera.get("/findings").text, re.S)
    assert nav is not None
    links = re.findall(r'href="([^"]+)"', nav.group(1))
    assert links[links.index("/reports") + 1] == "/experiments"  # just after the reports
    done = comparison(site, EXP)
    calls = [p.original.id for p in done.pairs] + [p.replay.id for p in done.done if p.replay]
    for path in ("/experiments", f"/experiments/{EXP}", f"/experiments/{OTHER}"):
        html = vera.get(path).text
        no_markup(html, path)
        assert not [c for c in calls if c in html], path  # no call named, let alone linked
        assert 'href="/calls/' not in html and "replay-sides" not in html, path
    html = vera.get(f"/experiments/{EXP}").text
    assert "they need the debugger role" in html and 'class="flagged"' in html
    assert str(escape(done.verdict)) in html
    data = vera.get(f"/api/experiments/{EXP}").json()
    assert "pairs" not in data and "most_different" not in data and data["pairs_need"] == "debugger"
    assert "sample" not in data["experiment"] and data["experiment"]["sampled"] == PAIRS
    assert data["metrics"] == [m.to_json() for m in done.metrics]
    listed = vera.get("/api/experiments").text
    assert not [c for c in calls if c in listed]
    # Nothing else is opened to a viewer by these pages: the replays' comparisons are a debugger's.
    assert vera.get(f"/calls/{calls[0]}/replay/{calls[PAIRS]}").status_code == 403


def test_a_debugger_reads_the_pairs_that_differ_most_side_by_side(site: Running) -> None:
    dan = signed_in(site, "dan")
    done = comparison(site, EXP)
    page = dan.get(f"/experiments/{EXP}")
    assert page.status_code == 200
    html = main(page.text)
    no_markup(html, f"/experiments/{EXP}")
    first = done.most_different(pages.SHOWN)
    assert len(first) == pages.SHOWN
    articles = re.findall(r'<article class="pair">(.*?)</article>', html, re.S)
    assert len(articles) == pages.SHOWN
    for p, article in zip(first, articles, strict=True):
        assert p.replay is not None
        # Both calls, and the replay's own comparison, one link each.
        links = [dict(a).get("href") for t, a in tags(article) if t == "a"]
        assert links == [
            f"/calls/{p.original.id}",
            f"/calls/{p.replay.id}",
            f"/calls/{quote(p.original.id)}/replay/{quote(p.replay.id)}",
        ]
        assert article.count('<div class="replay-sides">') == (
            2 if p.original.tool_calls or p.replay.tool_calls else 1
        )
    # The failed replay first (a failure on one side only), its error said, escaped.
    failed = original(FAILED).id
    assert first[0].original.id == failed and failed in articles[0]
    assert "failed on the replay only" in articles[0]
    assert str(escape("overloaded_error (529): busy " + HOSTILE)) in articles[0]
    # The hostile answer: the words that differ marked, as text.
    by_original = {p.original.id: a for p, a in zip(first, articles, strict=True)}
    hostile = by_original[original(HOSTILE_ANSWER).id]
    assert '<span class="ins">' in hostile and str(escape(HOSTILE)) in hostile
    # The tool called on one side only: its lines marked, escaped.
    tool = by_original[original(OTHER_TOOL).id]
    assert "other tools called" in tool
    assert str(escape('lookup_<b>order</b>({\n  "id": "<script>x</script>"\n})')) in tool
    # The next ones, a line each, in the same order.
    rest = [p.original.id for p in done.most_different(PAIRS) if p.replay is not None][pages.SHOWN :]
    table = html[html.index('<table class="figures pairs">') :]
    assert re.findall(r'<a href="/calls/([^"]+)/replay/', table) == rest
    # The JSON: every pair with its ids and similarity, in the sample's order; the first few.
    data = dan.get(f"/api/experiments/{EXP}").json()
    assert [p["original"] for p in data["pairs"]] == [original(i).id for i in range(PAIRS)]
    assert data["pairs"][HOSTILE_ANSWER]["replay"] == replay_of(original(HOSTILE_ANSWER), HOSTILE_ANSWER).id
    assert data["pairs"][HOSTILE_ANSWER]["similarity"] == done.pairs[HOSTILE_ANSWER].similarity
    assert data["most_different"] == [p.original.id for p in first]
    assert data["why"][failed][0] == "failed on the replay only"
    assert data["why"][original(OTHER_TOOL).id][0] == "other tools called"
    assert data["experiment"]["sample"] == [original(i).id for i in range(PAIRS)]
    # The links lead to pages that open.
    assert dan.get(f"/calls/{first[0].original.id}/replay/{first[0].replay.id}").status_code == 200  # type: ignore[union-attr]


def test_not_signed_in_is_sent_to_sign_in(site: Running) -> None:
    anonymous = Client(site)
    for path in ("/experiments", f"/experiments/{EXP}"):
        r = anonymous.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    for path in ("/api/experiments", f"/api/experiments/{EXP}"):
        assert anonymous.get(path).status_code == 401, path


def test_sealed_answers_read_without_the_key_are_said_sealed_not_identical(tmp_path: Path) -> None:
    """Regulated mode, the site without the key: the pairs' answers cannot be read. They are
    said to be sealed, not shown as two empty answers "identical", and no ciphertext (an
    error's sealed message) reaches the page."""
    keyring = Settings(key=K1).keyring
    assert keyring is not None
    with Running(SQLiteBackend(tmp_path / "calls.db")) as s:
        s.store.keyring = keyring  # sealed as they are stored
        plant(s.store)
        s.store.keyring = None
        accounts.add_user(s.store, "dan", "debugger", PASSWORD)
        html = main(signed_in(s, "dan").get(f"/experiments/{EXP}").text)
        articles = re.findall(r'<article class="pair">(.*?)</article>', html, re.S)
        assert len(articles) == pages.SHOWN
        assert "llmlog-enc" not in html
        for article in articles:
            assert "identical" not in article and "replay-sides" not in article
            assert "The answers are sealed (regulated mode)" in article
            assert "answers sealed" in article
        assert "replay: overloaded_error (529): (sealed)" in articles[0]


# ---------------------------------------------------------------- ids


ODD = "exp <b>1</b>/x?y#z%41"  # an id saved by hand: every character of it goes through a link


def test_unknown_and_malformed_ids_are_the_sites_404(backend: Backend) -> None:
    with Running(backend) as s:
        done, _ = plant(s.store)
        for given in ("exp-deadbeef", "exp-<script>alert(1)</script>", "%00", "exp-%00", "x" * 5000,
                      "exp-0a1b2c3d/x", "exp-0a1b2c3d%09x", "%E2%80%AE", "' OR 1=1 --", ""):  # fmt: skip
            page = s.get(f"/experiments/{given}")
            assert page.status_code == 404, given
            assert '<p class="error" role="alert">no such experiment</p>' in page.text, given
            assert "<script>alert(1)" not in page.text
            answer = s.get(f"/api/experiments/{given}")
            assert answer.status_code == 404 and answer.json() == {"error": "no such experiment"}, given
        # The run's ids as people type them, in capitals too; an id saved by hand, by its link.
        assert s.get(f"/experiments/{EXP.upper()}").status_code == 200
        s.store.save_experiment(dataclasses.replace(done, id=ODD))
        listed = s.get("/experiments").text
        link = f"/experiments/{quote(ODD, safe='')}"
        assert f'href="{link}"' in listed and str(escape(ODD)) in listed
        page = s.get(link)
        assert page.status_code == 200 and f"<h1>Experiment <code>{escape(ODD)}</code></h1>" in page.text
        assert s.get(f"/api{link}").json()["experiment"]["id"] == ODD


# ---------------------------------------------------------------- the list's verdicts


def test_the_list_keeps_an_ended_experiments_verdict_and_no_running_ones(
    site: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LIST_BUDGET_S", 0.0)  # no time to compare anything here
    vera = signed_in(site, "vera")
    html = vera.get("/experiments").text
    assert html.count("not compared yet") == 2 and "reload for the rest" in html
    assert [x["compared"] for x in vera.get("/api/experiments").json()["experiments"]] == [False, False]
    assert vera.get(f"/experiments/{EXP}").status_code == 200  # compared there, and kept
    listed = {x["id"]: x for x in vera.get("/api/experiments").json()["experiments"]}
    assert listed[EXP]["compared"] and listed[EXP]["replayed"] == PAIRS and not listed[OTHER]["compared"]
    # Resumed: its definition changed, what was kept no longer holds.
    done = site.store.experiment(EXP)
    assert done is not None
    done.status, done.note = "running", None
    site.store.save_experiment(done)
    assert vera.get(f"/experiments/{EXP}").status_code == 200  # a running one's is not kept
    listed = {x["id"]: x for x in vera.get("/api/experiments").json()["experiments"]}
    assert not listed[EXP]["compared"]
    monkeypatch.setattr(pages, "LIST_BUDGET_S", 60.0)
    # Read as it is now, while it runs: a replay recorded since is counted.
    extra = original(PAIRS)
    site.store.insert([extra, replay_of(extra, PAIRS)])
    done.sample.append(extra.id)
    site.store.save_experiment(done)
    listed = {x["id"]: x for x in vera.get("/api/experiments").json()["experiments"]}
    assert listed[EXP]["replayed"] == PAIRS + 1 and listed[EXP]["sampled"] == PAIRS + 1
    assert f"{PAIRS + 1} / {PAIRS + 1}" in vera.get("/experiments").text


def test_no_experiment_yet(tmp_path: Path) -> None:
    with Running(SQLiteBackend(tmp_path / "calls.db")) as s:
        html = s.get("/experiments").text
        assert "No experiment yet" in html and "llmlog experiment run" in html
        assert s.get("/api/experiments").json() == {"experiments": []}
