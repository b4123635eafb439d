"""The web UI in a real browser: Debian's Chromium, driven by Playwright, on each store kind.

The store holds demo traffic — a few hundred calls recorded through the real SDKs against
the fake provider by `llmlog.demo.traffic` — served by a real uvicorn server (`tests.webui.Running`).
Every test gets a `Tab`: a fresh page that fails the test on a script error, a console error,
a dialog, a failed request or a request that leaves the local server. `tab.shot(name)`
saves a full-page screenshot as `<backend>-<name>.png` in $LLMLOG_TEST_ARTIFACTS, else in
artifacts/screenshots/.

Chromium is `LLMLOG_CHROMIUM`, else /usr/bin/chromium (never a downloaded browser). Where it
is missing or does not start the tests are skipped, except with LLMLOG_REQUIRE_BROWSER=1
(set by CI), where that is a failure.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Request as PwRequest
from rich.console import Console

import llmlog
from llmlog.analysis import reports
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.demo.fake_provider import FakeProvider
from llmlog.demo.traffic import run_demo
from llmlog.operations.replay import Providers
from llmlog.providers.conversation import conversation
from llmlog.store import Store
from llmlog.web import guard
from llmlog.web.replay import response_text
from tests.backends import Backend, PostgresBackend, SQLiteBackend, admin, new_schema
from tests.test_investigate import drifting_calls
from tests.traced import traced_agent
from tests.webui import Running, make_call

ROOT = Path(__file__).resolve().parents[1]
DEMO_CALLS = 300
PAGE = 100  # rows on one page of the calls list
# Headless as root, and nothing but the page under test on the network: without the
# background-networking switches Chromium tries to reach Google's services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PWNED = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'


def no_browser(reason: str) -> NoReturn:
    """Skip, unless a browser is required (in CI), where a skip would hide a failure."""
    if os.environ.get("LLMLOG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"Chromium required (LLMLOG_REQUIRE_BROWSER=1) but unavailable: {reason}")
    pytest.skip(f"no browser: {reason}")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, for this module only (its event loop stays here)."""
    path = os.environ.get("LLMLOG_CHROMIUM") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        no_browser(f"no Chromium at {path} (apt-get install chromium, or set LLMLOG_CHROMIUM)")
    playwright: Playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=30_000)
    except PlaywrightError as exc:
        playwright.stop()
        no_browser(f"Chromium at {path} did not start: {exc.message.splitlines()[0]}")
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: $LLMLOG_TEST_ARTIFACTS, else artifacts/screenshots/."""
    env = os.environ.get("LLMLOG_TEST_ARTIFACTS")
    path = Path(env) if env else ROOT / "artifacts" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_demo(db: str, n_calls: int = DEMO_CALLS) -> None:
    """`llmlog demo` into `db`, quietly; llmlog's configuration is put back afterwards."""
    previous = llmlog._settings  # what configure() last set (None: the defaults)
    try:
        run_demo(Settings(db=db), n_calls=n_calls, seed=11, console=Console(file=io.StringIO()))
    finally:
        # Drains and stops the demo's writer, and brings back the settings from before.
        if previous is None:
            llmlog.configure()
        else:
            llmlog.configure(**dataclasses.asdict(previous))


@dataclass
class Site:
    """The UI under test: the backend (`kind` is "sqlite" or "postgres"), its server, the
    store the server reads, open for the test to look at or add to, and the fake provider
    that replays are sent to."""

    backend: Backend
    running: Running
    fake: FakeProvider

    @property
    def kind(self) -> str:
        return self.backend.kind

    @property
    def base(self) -> str:
        return self.running.base

    @property
    def store(self) -> Store:
        return self.running.store

    def count(self, where: str = "TRUE", params: tuple[Any, ...] = ()) -> int:
        """Calls matching an SQL condition (`?` placeholders), counted by the database."""
        return int(self.backend.sql(f"SELECT count(*) FROM calls WHERE {where}", params)[0][0])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Each store kind in turn, filled once per module with demo calls, behind `llmlog serve`
    (replays going to the session's fake provider)."""
    server: str | None = None
    schema = ""
    backend: Backend
    if request.param == "sqlite":
        backend = SQLiteBackend(tmp_path_factory.mktemp("browser") / "calls.db")
    else:
        server = request.getfixturevalue("postgres_server")
        schema, url = new_schema(server)
        backend = PostgresBackend(url)
    try:
        record_demo(backend.url)
        fake: FakeProvider = request.getfixturevalue("fake")
        providers = Providers.fake(fake.anthropic_base_url, fake.openai_base_url)  # where replays go
        with Running(backend, providers=providers) as running:
            yield Site(backend, running, fake)
    finally:
        if server:
            admin(server, f"DROP SCHEMA {schema} CASCADE")


@dataclass
class Row:
    """One row of an HTML table: cell texts by column heading, its first link, its classes."""

    cells: dict[str, str]
    href: str | None
    classes: list[str]

    def __getitem__(self, column: str) -> str:
        return self.cells[column]


READ_TABLE = """(table) => {
  const head = table.tHead ? table.tHead.rows[0] : table.rows[0];
  const names = head ? Array.from(head.cells).map((c) => c.innerText.trim()) : [];
  return {
    names,
    rows: Array.from(table.rows)
      .filter((tr) => tr !== head && tr.parentElement !== table.tHead && tr.cells.length === names.length)
      .map((tr) => ({
        cells: Array.from(tr.cells).map((c) => c.innerText.trim()),
        href: tr.querySelector("a[href]")?.getAttribute("href") ?? null,
        classes: Array.from(tr.classList),
      })),
  };
}"""


@dataclass
class Tab:
    """A fresh browser page on the site, with what it saw go wrong."""

    page: Page
    site: Site
    artifacts: Path
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # URLs opened expecting an error status

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)
        self.page.on("request", self._request)
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))

    def _console(self, message: ConsoleMessage) -> None:
        # The browser asks for /favicon.ico on its own, and reports the 404 as an error; so is
        # an error page the test asked for.
        url = message.location.get("url", "")
        if message.type == "error" and not url.endswith("/favicon.ico") and url not in self.refused:
            self.problems.append(f"console error: {message.text} at {url}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _request(self, request: PwRequest) -> None:
        self.requests.append(request.url)
        if not request.url.startswith(self.site.base + "/"):
            self.problems.append(f"request off the local server: {request.url}")

    # -- navigation

    def open(self, path: str, status: int = 200) -> Page:
        """Go to a path of the site; the page must answer with `status`."""
        if status != 200:
            self.refused.add(self.site.base + path)
        response = self.page.goto(self.site.base + path)
        assert response is not None and response.status == status, (path, response and response.status)
        return self.landed()

    def follow(self, link: Locator | str) -> Page:
        """Click a link or button (a locator, or a CSS selector: its first match) and wait for
        the page it opens, which must answer 200."""
        target = self.page.locator(link).first if isinstance(link, str) else link
        with self.page.expect_navigation() as navigation:
            target.click()
        response = navigation.value
        assert response is not None and response.status == 200, (self.page.url, response and response.status)
        return self.landed()

    def landed(self) -> Page:
        """Checks made on every page opened: nothing logged ran there (see PWNED). `open`
        and `follow` call it; call it after a navigation of your own."""
        assert self.js("typeof window.__pwned") == "undefined", f"logged content ran on {self.page.url}"
        return self.page

    def submit(self, form: str = "form", **fields: str) -> Page:
        """Fill a form's fields by name (inputs, textareas, selects) and submit it."""
        for name, value in fields.items():
            control = self.page.locator(f"{form} [name='{name}']")
            if control.evaluate("(el) => el.tagName") == "SELECT":
                control.select_option(value)
            else:
                control.fill(value)
        return self.follow(self.page.locator(f"{form} [type=submit]").first)

    # -- reading the page

    @property
    def path(self) -> str:
        return urlsplit(self.page.url).path

    def params(self) -> dict[str, str]:
        """The current URL's query parameters that have a value."""
        return {k: v for k, v in parse_qsl(urlsplit(self.page.url).query) if v}

    def table(self, selector: str = "table") -> list[Row]:
        """The rows of the first table matching `selector`, by column heading (from its thead,
        else its first row; a "no rows" line spanning the table is no row)."""
        read = self.page.locator(selector).first.evaluate(READ_TABLE)
        names = read["names"]
        return [Row(dict(zip(names, r["cells"], strict=True)), r["href"], r["classes"]) for r in read["rows"]]

    def text(self, selector: str) -> str:
        """The visible text of the first element matching `selector`."""
        return self.page.locator(selector).first.inner_text()

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def clipboard(self) -> str:
        """What the page last copied."""
        return str(self.js("navigator.clipboard.readText()"))

    def key(self, *keys: str) -> None:
        """Press keys with the focus on the page itself, not in a form field."""
        self.js("document.activeElement && document.activeElement.blur()")
        for k in keys:
            self.page.keyboard.press(k)

    # -- artifacts

    def shot(self, name: str) -> Path:
        """A full-page PNG of the page as it is now: `<backend>-<name>.png`."""
        path = self.artifacts / f"{self.site.kind}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path


@pytest.fixture
def tab(chromium: Browser, site: Site, artifacts: Path) -> Iterator[Tab]:
    """A new page (its own context: no cookies or storage shared between tests). After the
    test: no script errors, console errors, dialogs or requests that left the local server.
    After every page it opens: nothing logged ran there (`window.__pwned` is never set)."""
    context = chromium.new_context(
        viewport={"width": 1280, "height": 900},
        color_scheme="light",
        permissions=["clipboard-read", "clipboard-write"],  # for the copy buttons
    )
    context.set_default_timeout(10_000)
    tab = Tab(context.new_page(), site, artifacts)
    try:
        yield tab
        assert not tab.dialogs, tab.dialogs
        assert not tab.problems, tab.problems
        assert all(p.stat().st_size > 1000 for p in tab.shots)
    finally:
        context.close()


# ---------------------------------------------------------------------------- the calls list


def facet(tab: Tab, name: str, value: str) -> Locator:
    """The link of one value in one facet of the calls list."""
    return tab.page.locator(f"[data-facet={name}] li a", has_text=value).first


def money(text: str) -> float:
    """A cell such as "$1,234.5678" as a number; an empty cell is 0."""
    return float(text.replace("$", "").replace(",", "") or 0)


def number(text: str) -> int:
    """A cell such as "12,345" as a number; an empty cell is 0."""
    return int(text.replace(",", "") or 0)


def test_filter_the_calls_list_and_open_a_call(tab: Tab) -> None:
    site = tab.site
    tab.open("/")
    rows = tab.table("table.calls")
    assert len(rows) == PAGE and site.count() >= DEMO_CALLS
    assert rows == sorted(rows, key=lambda r: r["time (UTC)"], reverse=True)
    tab.shot("calls")

    # Older calls: the next page starts where this one ends.
    tab.follow("a.older")
    assert "until" in tab.params()
    older = tab.table("table.calls")
    assert older and older[0]["time (UTC)"] <= rows[-1]["time (UTC)"]
    assert not {r.href for r in older} & {r.href for r in rows}

    # The filter form: a feature typed, a status chosen, the page's `until` cleared; the
    # filter lands in the URL.
    tab.submit("form.filters", feature="support-bot", status="ok", until="")
    assert tab.params() == {"feature": "support-bot", "status": "ok"}
    matching = site.count("feature = ? AND error IS NULL", ("support-bot",))
    rows = tab.table("table.calls")
    assert 0 < len(rows) == min(matching, PAGE)
    assert all(r["feature"] == "support-bot" and r["error"] == "" and "failed" not in r.classes for r in rows)
    assert tab.page.locator("form.filters [name=feature]").input_value() == "support-bot"
    feature_facet = tab.page.locator("[data-facet=feature] li").all_text_contents()
    assert [li.split() for li in feature_facet] == [["support-bot", f"{matching:,}"]]

    # A facet link narrows further, keeping the filters already set.
    models = tab.page.locator("[data-facet=model] li a")
    model = models.first.inner_text()
    tab.follow(models.first)
    assert tab.params() == {"feature": "support-bot", "status": "ok", "model": model}
    rows = tab.table("table.calls")
    matching = site.count("feature = ? AND error IS NULL AND model = ?", ("support-bot", model))
    assert len(rows) == min(matching, PAGE)
    assert all((r["feature"], r["model"], r["error"]) == ("support-bot", model, "") for r in rows)

    # Open a call: the page shows that call, whole.
    first = tab.page.locator("table.calls tbody tr a").first
    call_id = (first.get_attribute("href") or "").removeprefix("/calls/")
    tab.follow(first)
    assert tab.path == f"/calls/{call_id}"
    call = site.store.get(call_id)
    assert call is not None and call.system_prompt and call.feature == "support-bot"
    assert call_id in tab.text("h1")
    assert tab.text("pre.prompt") == call.system_prompt
    summary = dict(zip(tab.page.locator(".summary dt").all_inner_texts(),
                       tab.page.locator(".summary dd").all_inner_texts(), strict=True))  # fmt: skip
    assert summary["provider / model"] == f"{call.provider} / {call.model}"
    assert summary["feature"] == "support-bot"
    turns = conversation(call)
    assert tab.text(".conversation h2") == f"Messages ({len(turns)})"
    assert tab.page.locator(".conversation .turn").count() == len(turns)
    first_question = call.messages[0]["content"]
    assert isinstance(first_question, str) and first_question in tab.text(".conversation .turn")
    tab.shot("call")

    # Copy buttons: the system prompt exactly, and the raw record (folded away) as JSON.
    button = tab.page.locator("button[data-copy=system-prompt]")
    button.click()
    expect(button).to_have_text("copied")
    assert tab.clipboard() == call.system_prompt
    tab.page.locator("button[data-copy=raw-json]").click()
    expect(tab.page.locator("button[data-copy=raw-json]")).to_have_text("copied")
    assert json.loads(tab.clipboard())["id"] == call_id


def test_errors_only(tab: Tab) -> None:
    site = tab.site
    tab.open("/")
    tab.follow(facet(tab, "status", "error"))
    assert tab.params() == {"status": "error"}
    rows = tab.table("table.calls")
    assert 0 < len(rows) == min(site.count("error IS NOT NULL"), PAGE)  # the demo fails ~2% on purpose
    assert all("failed" in r.classes and r["error"] for r in rows)
    tab.shot("calls-errors")


# ---------------------------------------------------------------------------- sessions and users


def test_open_a_session_and_step_through_its_turns(tab: Tab) -> None:
    site = tab.site
    tab.open("/sessions")
    sessions = tab.table("table.calls")
    assert sessions, "the demo records sessions"
    costs = [money(r["cost"]) for r in sessions]
    assert costs == sorted(costs, reverse=True)  # the costliest first
    tab.shot("sessions")

    # The longest session on the list, opened from it.
    longest = max(sessions, key=lambda r: number(r["turns"]))
    session_id, n = longest["session"], number(longest["turns"])
    assert n >= 3
    tab.follow(tab.page.locator("table.calls tbody a", has_text=session_id).first)
    assert session_id in tab.text("h1")
    turns = tab.table("table.session")
    assert len(turns) == n == site.count("session_id = ?", (session_id,))
    assert [number(t["#"]) for t in turns] == list(range(1, n + 1))
    assert [t["time (UTC)"] for t in turns] == sorted(t["time (UTC)"] for t in turns)
    so_far = [number(t["tokens so far"]) for t in turns]
    assert so_far == sorted(so_far) and so_far[-1] == sum(number(t["in"]) + number(t["out"]) for t in turns)
    assert turns[-1]["cost so far"] == tab.text(".summary .total-cost")
    tab.shot("session")

    # A turn opens its call, which links the turns before and after it.
    tab.follow(tab.page.locator("table.session tbody tr").nth(1).locator("a").first)
    assert tab.path == turns[1].href
    assert tab.page.locator(".turn-nav a[rel=prev]").get_attribute("href") == turns[0].href
    assert tab.page.locator(".turn-nav a[rel=next]").get_attribute("href") == turns[2].href
    tab.follow(".turn-nav a[rel=next]")
    assert tab.path == turns[2].href


def test_users_and_one_user(tab: Tab) -> None:
    tab.open("/users")
    users = tab.table("table.calls")
    assert users
    costs = [money(r["cost"]) for r in users]
    assert costs == sorted(costs, reverse=True)
    tab.shot("users")

    top = users[0]
    tab.follow(tab.page.locator("table.calls tbody tr").first.locator("a").first)
    assert top["user"] in tab.text("h1")
    summary = dict(zip(tab.page.locator(".summary dt").all_inner_texts(),
                       tab.page.locator(".summary dd").all_inner_texts(), strict=True))  # fmt: skip
    assert summary["calls"] == f"{top['calls']} in {top['sessions']} sessions"
    assert summary["cost"] == top["cost"]
    assert len(tab.table("table.calls")) == number(top["sessions"])
    tab.shot("user")


# ---------------------------------------------------------------------------- the random sample


def test_pull_a_random_sample_and_step_through_it_with_the_keyboard(tab: Tab) -> None:
    site = tab.site
    tab.open("/sample")
    items = tab.page.locator("ol.sample > li[data-step-item]")
    hrefs = [h.get_attribute("href") for h in items.locator(".head > a:first-child").all()]
    assert len(hrefs) == 20 == len(set(hrefs))  # 20 by default, each once
    tab.shot("sample")

    # Filtered and smaller, from the form; every call shown matches.
    tab.submit("form.filters", n="5", feature="summarize")
    assert tab.params() == {"n": "5", "window": "1h", "feature": "summarize"}
    assert items.count() == 5
    picked = [h.get_attribute("href") or "" for h in items.locator(".head > a:first-child").all()]
    for href in picked:
        call = site.store.get(href.removeprefix("/calls/"))
        assert call is not None and call.feature == "summarize"

    # The permalink brings back exactly these calls.
    tab.follow(tab.page.get_by_role("link", name="Link to exactly these calls"))
    assert [v for k, v in parse_qsl(urlsplit(tab.page.url).query) if k == "id"] == [
        p.removeprefix("/calls/") for p in picked
    ]
    assert [h.get_attribute("href") for h in items.locator(".head > a:first-child").all()] == picked

    # j/k step through the list; typing in a field does not; Enter opens the current call.
    tab.page.locator("form.filters [name=feature]").press("j")
    assert tab.page.locator("[data-step-item].current").count() == 0
    tab.key("j")
    expect(items.nth(0)).to_have_class(re.compile(r"\bcurrent\b"))
    tab.key("j", "j", "k")
    expect(items.nth(1)).to_have_class(re.compile(r"\bcurrent\b"))
    assert tab.page.locator("[data-step-item].current").count() == 1
    with tab.page.expect_navigation():
        tab.key("Enter")
    tab.landed()
    assert tab.path == picked[1]


# ---------------------------------------------------------------------------- replay


def test_replay_a_call_with_another_model_and_prompt_and_see_the_diff(tab: Tab) -> None:
    site = tab.site
    tab.open("/?feature=summarize&status=ok")
    tab.follow("table.calls tbody tr a")
    original = site.store.get(tab.path.removeprefix("/calls/"))
    assert original is not None and original.system_prompt and original.model != "claude-sonnet-4-6"
    tab.follow(tab.page.locator(".call-actions a", has_text="Replay"))
    assert tab.path == f"/calls/{original.id}/replay"
    assert tab.page.locator("[name=model]").input_value() == original.model
    assert tab.page.locator("[name=system_prompt]").input_value() == original.system_prompt
    tab.shot("replay-form")

    # Another model and one more line of prompt; the browser sends the textarea with CRLF.
    edited = original.system_prompt + "\nAnswer in one sentence."
    site.fake.reset()  # no failure another test queued
    sent = len(site.fake.requests)
    tab.submit("form.replay-form", model="claude-sonnet-4-6", system_prompt=edited)
    assert len(site.fake.requests) == sent + 1
    body = site.fake.requests[-1].body
    assert (body["model"], body["system"]) == ("claude-sonnet-4-6", edited)
    prefix = f"/calls/{original.id}/replay/"
    assert tab.path.startswith(prefix)
    new = site.store.get(tab.path.removeprefix(prefix))
    assert new is not None and new.metadata is not None and new.metadata["replay_of"] == original.id
    assert (new.model, new.system_prompt) == ("claude-sonnet-4-6", edited)

    # Side by side: the deltas, and the differences marked on each side.
    deltas = {r[""]: r for r in tab.table("table.replay-deltas")}
    assert (deltas["model"]["logged"], deltas["model"]["replay"]) == (original.model, "claude-sonnet-4-6")
    assert original.cost_usd is not None and new.cost_usd is not None
    cost = tab.page.locator("tr.delta-cost td.change")
    expect(cost).to_have_class("change " + ("up" if new.cost_usd > original.cost_usd else "down"))
    system = tab.page.locator("section", has=tab.page.locator("h2", has_text="System prompt"))
    assert [t.strip() for t in system.locator(".ins").all_inner_texts()] == ["Answer in one sentence."]
    assert system.locator(".del").count() == 0
    sides = tab.page.locator("section", has=tab.page.locator("h2", has_text="Response text")).locator("pre")
    shown = (sides.nth(0).inner_text(), sides.nth(1).inner_text())
    assert shown == (response_text(original), response_text(new))
    tab.shot("replay")


# ---------------------------------------------------------------------------- hostile content


def test_logged_content_never_runs_in_the_browser(tab: Tab) -> None:
    site = tab.site
    hostile = make_call(
        0,
        id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC) + timedelta(minutes=1),  # the newest: first on the list
        feature=PWNED,
        user_id=PWNED,
        system_prompt=PWNED,
        messages=[{"role": "user", "content": PWNED}],
        response={"role": "assistant", "content": [{"type": "text", "text": PWNED}]},
        metadata={"note": PWNED},
        error={"type": PWNED, "status": 500, "message": PWNED},
    )
    # And a call whose text is one word of 20,000 letters, line breaks, and a right-to-left
    # override: its preview stays one line within the table.
    wide = make_call(
        1,
        id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC) + timedelta(seconds=30),
        feature="wide",
        messages=[{"role": "user", "content": "\u202e" + "W" * 20_000 + "\n\nend"}],
        response={"role": "assistant", "content": [{"type": "text", "text": "line\n" * 5_000}]},
    )
    site.store.insert([hostile, wide])

    def inert(where: str) -> None:
        assert tab.js("typeof window.__pwned") == "undefined", where
        assert tab.page.locator("main img, main script").count() == 0, where
        assert site.base + "/x" not in tab.requests, where

    tab.open("/")
    top = tab.table("table.calls")[0]
    assert (top["feature"], top["user"], top["error"]) == (PWNED, PWNED, PWNED)  # shown as text
    previews = tab.page.locator("table.calls tr.preview")
    assert previews.first.locator(".said").inner_text() == PWNED
    assert previews.first.locator(".answered").inner_text() == PWNED
    inert("calls list")
    heights = [previews.nth(i).evaluate("tr => tr.getBoundingClientRect().height") for i in range(3)]
    assert heights[1] == heights[0] == heights[2]  # the wide call's (the second) is one line too
    # The previews add nothing to the table's width: the columns above decide it.
    widths = tab.js(
        """(() => {
        const table = document.querySelector("table.calls");
        const width = () => table.getBoundingClientRect().width;
        const shown = width();
        table.querySelectorAll("tr.preview").forEach((tr) => { tr.style.display = "none"; });
        const hidden = width();
        table.querySelectorAll("tr.preview").forEach((tr) => { tr.style.display = ""; });
        return [shown, hidden];
    })()"""
    )
    assert widths[0] == widths[1], widths

    # The hostile feature's facet link, followed: the value reaches the URL intact.
    tab.follow(facet(tab, "feature", "<script>"))
    assert tab.params()["feature"] == PWNED
    assert [r.href for r in tab.table("table.calls")] == [f"/calls/{hostile.id}"]
    inert("filtered list")
    tab.shot("hostile-calls")

    tab.follow("table.calls tbody tr a")
    assert tab.text("pre.prompt") == PWNED
    assert PWNED in tab.text(".conversation")
    assert PWNED in tab.text(".response")
    assert "<script>window.__pwned=1</script>" in tab.text("section.error")  # as JSON
    inert("call page")
    tab.shot("hostile-call")

    # The user's page, reached by its link: the id goes through the path and back, as text.
    tab.follow(".summary a[href^='/users/']")
    assert tab.text("h1 code") == PWNED
    assert tab.page.locator(".summary dd").first.inner_text() == "1 in 1 sessions"
    inert("user page")
    tab.shot("hostile-user")


def test_a_missing_call_is_a_page_that_says_so(tab: Tab) -> None:
    tab.open(f"/calls/{uuid.uuid4()}", status=404)
    assert tab.text("[role=alert]") == "no such call"
    assert tab.page.locator("header nav a", has_text="Calls").get_attribute("href") == "/"
    tab.shot("not-found")


def test_run_a_sql_query(tab: Tab) -> None:
    tab.open("/sql")
    by_model = "SELECT model, count(*) AS n, sum(cost_usd) AS cost FROM calls GROUP BY model"
    tab.submit("form.sql-form", q=by_model)
    assert tab.params()["q"] == by_model  # the query lives in the URL
    rows = tab.table("table.results")
    assert rows and sum(number(r["n"]) for r in rows) == tab.site.count()
    tab.shot("sql")
    # The examples run as written.
    tab.open("/sql")
    tab.follow("ul.examples a")
    assert tab.table("table.results")


def test_the_dashboard_draws_its_charts(tab: Tab) -> None:
    tab.open("/dashboard")
    for panel in ("cost-by-model", "cost-by-feature", "calls", "latency", "top-users", "top-features"):
        assert tab.page.locator(f"#{panel}").count() == 1, panel
    # Charts are SVG drawn by the server, with a tooltip holding each exact value.
    assert tab.page.locator("#cost-by-model svg rect").count() > 3
    assert tab.page.locator("#cost-by-model svg title").count() > 3
    assert tab.page.locator("#recent-errors a[href^='/calls/']").count() > 0
    tab.shot("dashboard")


def test_open_a_trace_open_a_call_from_it_and_come_back(tab: Tab) -> None:
    # An agent's request traced with llmlog.span around the wrapped SDK: retrieve, a model
    # call, a tool that fails, a model call refused by the provider.
    site = tab.site
    trace = traced_agent(site.backend.url, site.fake, fail=True)
    plan, answer = sorted(site.store.recent(CallFilter(trace_id=trace), limit=10), key=lambda c: c.timestamp)
    # The recent traces, from the navigation; those with errors; the newest opened.
    tab.open("/dashboard")
    tab.follow(tab.page.locator("header nav a", has_text="Traces"))
    tab.submit("form.filters", status="error")
    assert tab.path == "/traces" and tab.params() == {"status": "error"}
    listed = tab.table("table.traces")
    assert listed[0].href == f"/traces/{trace}" and all("failed" in r.classes for r in listed)
    assert (listed[0]["name"], listed[0]["spans"], listed[0]["calls"]) == ("agent run", "3", "2")
    assert listed[0]["errors"] == "1 call, 1 span"
    tab.shot("traces")
    tab.follow("table.traces tbody tr a")
    assert tab.path == f"/traces/{trace}"
    figures = dict(zip(tab.page.locator(".kpis dt").all_inner_texts(),
                       tab.page.locator(".kpis dd").all_inner_texts(), strict=True))  # fmt: skip
    assert (figures["spans"], figures["calls"], figures["errors"]) == ("3", "2", "1 call, 1 span")
    rows = tab.table("table.waterfall")
    assert tab.page.locator("table.waterfall .name").all_inner_texts() == [
        "agent run", "retrieve", "claude-sonnet-4-6", "tool lookup_order", "claude-sonnet-4-6",
    ]  # fmt: skip
    assert rows[2]["model"] == "claude-sonnet-4-6" and rows[2]["tokens in / out"] == (
        f"{plan.input_tokens:,} / {plan.output_tokens:,}"
    )
    assert "failed" in rows[3].classes and "LookupError: order 7 not found" in rows[3]["span"]
    assert "failed" in rows[4].classes and "overloaded_error" in rows[4]["span"]
    # Nested: each child indented past its parent; every node a bar on the time axis, the
    # root's the widest.
    names = tab.page.locator("table.waterfall .name")
    assert names.nth(1).bounding_box()["x"] > names.nth(0).bounding_box()["x"]  # type: ignore[index]
    bars = tab.page.locator("table.waterfall .bar")
    widths = [bars.nth(i).bounding_box()["width"] for i in range(bars.count())]  # type: ignore[index]
    assert len(widths) == 5 and widths[0] == max(widths) and min(widths) > 0
    tab.shot("trace")
    # A call opened from the trace, and back.
    tab.follow(tab.page.locator("table.waterfall a", has_text="claude-sonnet-4-6").nth(1))
    assert tab.path == f"/calls/{answer.id}"
    assert "overloaded_error" in tab.text("section.error")
    with tab.page.expect_navigation():
        tab.page.go_back()
    tab.landed()
    assert tab.path == f"/traces/{trace}" and len(tab.table("table.waterfall")) == 5
    # From a call's page to its trace.
    tab.open(f"/calls/{plan.id}")
    assert "agent run › claude-sonnet-4-6 (this call)" in tab.text(".summary .in-trace")
    tab.follow(".summary a.trace-link")
    assert tab.path == f"/traces/{trace}"


# ---------------------------------------------------------------------------- the content security policy

# Every violation of the page's policy, as the page reports it.
WATCH_CSP = """document.addEventListener("securitypolicyviolation", (e) => {
  (window.__csp = window.__csp || []).push(`${e.effectiveDirective} ${e.blockedURI}`);
});"""


def test_the_pages_work_under_the_strict_content_security_policy(tab: Tab) -> None:
    """Each page with the policy on: nothing it needs is blocked (no violation reported, and
    the Tab fails on any console error, which is where browsers report them), the charts draw,
    app.js runs, forms submit. Then the policy is shown to hold: inline script and style
    added to the page are refused."""
    site = tab.site
    tab.page.add_init_script(WATCH_CSP)
    call = site.store.recent(CallFilter(feature="summarize", errors=False), limit=50)[-1]  # a demo call
    session = next(
        c.session_id for c in site.store.recent(CallFilter(), limit=500, brief=True) if c.session_id
    )
    pages = [
        "/", f"/calls/{call.id}", f"/calls/{call.id}/replay", "/sample", "/sessions",
        f"/sessions/{quote(session)}", "/users", "/dashboard", "/reports", "/reports/errors",
        "/reports/drift", "/reports/drift-by-day", "/reports/cost", "/search?q=order",
        "/sql?q=SELECT+model+FROM+calls",
        f"/traces/{traced_agent(site.backend.url, site.fake)}", "/traces",
    ]  # fmt: skip
    for path in pages:
        response = tab.page.goto(site.base + path)
        assert response is not None and response.status == 200, path
        assert response.headers["content-security-policy"] == guard.CSP, path
        assert response.headers["x-frame-options"] == "DENY"
        assert tab.js("window.__csp || []") == [], path
    # The charts are drawn (server-side SVG, styled by the stylesheet).
    tab.open("/dashboard")
    assert tab.page.locator("#cost-by-model svg rect").count() > 3
    assert (
        tab.js("getComputedStyle(document.querySelector('header')).display") != "inline"
    )  # style.css applies
    # app.js runs: j marks the first of the sample.
    tab.open("/sample")
    tab.key("j")
    expect(tab.page.locator("[data-step-item].current")).to_have_count(1)
    # Forms submit: a GET form, and a POST form (form-action 'self'), which replays the call.
    tab.open("/sql")
    tab.submit("form.sql-form", q="SELECT count(*) AS n FROM calls")
    assert tab.table("table.results")
    tab.open(f"/calls/{call.id}/replay")
    site.fake.reset()
    tab.submit("form.replay-form", model="claude-sonnet-4-6")
    assert tab.path.startswith(f"/calls/{call.id}/replay/")
    assert tab.js("window.__csp || []") == []
    # The policy holds: what is added inline is refused, and reported.
    ran = tab.js(
        """(() => {
          const s = document.createElement("script");
          s.textContent = "window.__ran = 1";
          document.body.append(s);
          document.body.setAttribute("style", "background: red");
          return typeof window.__ran;
        })()"""
    )
    assert ran == "undefined"
    assert tab.js("getComputedStyle(document.body).backgroundColor") != "rgb(255, 0, 0)"
    tab.page.wait_for_function("(window.__csp || []).length >= 2")
    reported = {v.split(" ")[0] for v in tab.js("window.__csp")}
    assert reported == {"script-src-elem", "style-src-attr"}, reported
    # Those refusals were meant: they are not the test's problems.
    tab.problems[:] = [p for p in tab.problems if "Content Security Policy" not in p]


# ---------------------------------------------------------------------------- reports


@pytest.fixture
def drifted(backend: Backend, fake: FakeProvider, chromium: Browser, artifacts: Path) -> Iterator[Tab]:
    """A server over a store holding the drift tests/test_investigate.py plants (the demo's
    few hundred calls hold none), and a tab on it."""
    with Running(backend) as running:
        running.store.insert(drifting_calls())
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
        context.set_default_timeout(10_000)
        tab = Tab(context.new_page(), Site(backend, running, fake), artifacts)
        try:
            yield tab
            assert not tab.dialogs, tab.dialogs
            assert not tab.problems, tab.problems
            assert all(p.stat().st_size > 1000 for p in tab.shots)
        finally:
            context.close()


def test_reports_from_drift_to_a_comparison_of_versions(drifted: Tab) -> None:
    tab = drifted
    tab.open("/dashboard")
    tab.follow(tab.page.locator("header nav a", has_text="Reports"))
    assert tab.path == "/reports"
    assert tab.page.locator(".report-list dt a").all_inner_texts() == [
        "errors", "cost", "drift", "compare", "spikes",
    ]  # fmt: skip
    tab.shot("reports")

    # Drift: the week's changes, each with its before/after bars.
    tab.follow(tab.page.locator(".report-list a", has_text="drift"))
    assert tab.path == "/reports/drift"
    rows = tab.table("table.report")
    found = {(r["feature"], r["version"], r["metric"]): r for r in rows}
    assert len(found) == len(rows)  # each change once
    assert "flagged" in found[("summarize", "v1", "output_tokens")].classes
    assert ("triage", "(all versions)", "output_tokens") in found
    bars = tab.page.locator("table.report tr", has_text="summarize").locator("svg.spark rect")
    expect(bars.first).to_be_visible()
    assert bars.count() == 2  # before and after
    tab.shot("report-drift")

    # Its feature's name: the calls before and after the week, compared, every metric.
    tab.follow(tab.page.locator("table.report a", has_text="summarize").first)
    assert tab.path == "/reports/compare"
    assert tab.params() == {"feature": "summarize", "at": "7d", "days": "7"}
    flagged = tab.page.locator("table.comparison tr.flagged")
    expect(flagged.first).to_be_visible()
    assert "output_tokens" in flagged.all_inner_texts()[0]

    # The versions form: review's v1 against its v2.
    tab.submit("form.compare-form", feature="review", old="v1", new="v2")
    assert tab.params() == {"feature": "review", "old": "v1", "new": "v2", "days": "28"}
    assert tab.text("#comparison h2") == "review: v1 → v2"
    metrics = tab.table("table.comparison")
    assert [r["metric"] for r in metrics] == [*reports.MEANS, *reports.RATES]
    assert [r["metric"] for r in metrics if "flagged" in r.classes] == ["output_tokens"]
    changed = tab.page.locator("table.comparison tr.flagged")
    expect(changed).to_contain_text("changed")
    expect(changed.locator("svg.spark")).to_be_visible()
    assert "1 metric changed beyond chance" in tab.text("#comparison .count")
    tab.shot("report-compare")

    # A pair of calls to read, one from each side: each opens.
    pair = tab.page.locator("table.pairs tbody tr").first.locator("a")
    assert pair.count() == 2
    tab.follow(pair.nth(1))
    call = tab.site.store.get(tab.path.removeprefix("/calls/"))
    assert call is not None and (call.feature, call.prompt_template_version) == ("review", "v2")

    # The errors report draws its chart (search fails more this week).
    tab.open("/reports/errors")
    expect(tab.page.locator("#errors-per-day svg.chart")).to_be_visible()
    assert tab.page.locator("#errors-per-day svg.chart rect").count() > 7


# ---------------------------------------------------------------------------- accounts, roles, regulated mode


@pytest.fixture
def guarded(backend: Backend, fake: FakeProvider, chromium: Browser, artifacts: Path) -> Iterator[Tab]:
    """A server with accounts over a store in regulated mode (its text sealed, the server
    holding the key), and a tab on it, signed in as no one."""
    from llmlog.core.encryption import Keyring
    from llmlog.operations import accounts

    ring = Keyring.parse("k1:" + "B" * 43 + "=")
    with Running(backend) as setup:
        setup.store.keyring = ring
        setup.store.insert([make_call(i, system_prompt=f"Sealed prompt {i} <b>bold</b>") for i in range(12)])
        for name, role in (("vera", "viewer"), ("dan", "debugger"), ("ada", "admin")):
            accounts.add_user(setup.store, name, role, "correct horse battery")
    with Running(backend, keyring=ring) as running:
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
        context.set_default_timeout(10_000)
        tab = Tab(context.new_page(), Site(backend, running, fake), artifacts)
        try:
            yield tab
            assert not tab.dialogs, tab.dialogs
            assert not tab.problems, tab.problems
        finally:
            context.close()


def sign_in(tab: Tab, name: str, then: str = "/") -> None:
    tab.open(then)  # not signed in: the sign-in page, which comes back here after
    assert tab.path == "/login" and tab.params()["next"] == then
    tab.submit("form.login", name=name, password="correct horse battery")


def sign_out(tab: Tab) -> None:
    tab.follow("form.signed-in [type=submit]")
    assert tab.path == "/login"


def test_each_role_sees_what_it_may_in_the_browser(guarded: Tab) -> None:
    tab = guarded
    call = make_call(4)
    # A viewer: figures only. No link to calls, the sample or the console; a call is refused.
    sign_in(tab, "vera")
    assert tab.path == "/findings"  # the first screen, whatever the site's root is
    nav = tab.text("nav")
    assert nav.split()[0] == "Findings"
    assert "Dashboard" in nav and "Sessions" in nav and "Calls" not in nav and "SQL" not in nav
    assert "vera · viewer" in tab.text("form.signed-in")
    tab.shot("viewer-findings")
    page = tab.open(f"/calls/{call.id}", status=403)
    assert "needs debugger" in page.inner_text("main") and "Sealed prompt" not in page.content()
    tab.open("/api/calls", status=403)
    tab.open("/sessions")
    sign_out(tab)
    # A debugger: every call whole, its sealed text opened with the server's key, and audited.
    sign_in(tab, "dan", f"/calls/{call.id}")
    assert tab.path == f"/calls/{call.id}"
    assert "Sealed prompt 4 <b>bold</b>" in tab.page.inner_text("main")  # opened, shown as text
    tab.shot("debugger-sealed-call")
    entries = tab.site.store.audit_log()
    assert any(e.who == "dan (web, session)" and call.id in e.call_ids for e in entries)
    tab.open("/admin", status=403)
    sign_out(tab)
    # An admin: adds an account on the Admin page, which can then sign in.
    sign_in(tab, "ada", "/admin")
    assert [r["name"] for r in tab.table()] == ["ada", "dan", "vera"]
    tab.submit("form[action='/admin/add-user']", name="olga", role="viewer", password="another good one")
    assert "olga" in [r["name"] for r in tab.table()]
    tab.submit("form[action='/admin/add-token']", name="grafana", scope="read")
    token = tab.text("#new-token")
    assert token.startswith("llmlog_read_")
    tab.shot("admin")
    sign_out(tab)
    tab.open("/dashboard")
    tab.submit("form.login", name="olga", password="another good one")
    assert tab.path == "/dashboard"
