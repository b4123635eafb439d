"""The web UI over real HTTP: a uvicorn server in a thread, each store kind, hostile content."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from llmlog.core.encryption import Keyring
from llmlog.core.filters import CallFilter
from tests.backends import Backend
from tests.webui import HOSTILE, T0, Running, assert_inert, make_call, rows


def test_calls_page_lists_newest_first_with_facets_and_paging(ui: Running) -> None:
    r = ui.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    ids = rows(r.text)
    assert ids == [str(uuid.UUID(int=i + 1)) for i in range(149, 49, -1)]
    # Facet counts over the whole selection, beside each value, as links that add the filter.
    assert re.search(r'href="/\?feature=summarize">summarize</a> <span class="count">75</span>', r.text)
    assert re.search(r'href="/\?status=error">error</a> <span class="count">15</span>', r.text)
    older = re.search(r'<a class="older" href="([^"]+)">', r.text)
    assert older is not None
    page2 = ui.get(older.group(1).replace("&amp;", "&"))
    assert rows(page2.text) == [str(uuid.UUID(int=i + 1)) for i in range(49, -1, -1)]


def test_filters_combine_and_live_in_the_url(ui: Running) -> None:
    r = ui.get("/", params={"feature": "support-bot", "status": "error", "model": "claude-sonnet-4-6"})
    expected = [i for i in range(150) if i % 2 and i % 10 == 9 and i % 3]
    assert rows(r.text) == [str(uuid.UUID(int=i + 1)) for i in reversed(expected)]
    assert 'value="support-bot"' in r.text  # the form shows the filter in force
    since = ui.get("/", params={"since": (T0 + timedelta(minutes=140)).isoformat()})
    assert len(rows(since.text)) == 10
    ok = ui.get("/api/calls", params={"status": "ok", "user": "user_1"}).json()
    assert {c["user_id"] for c in ok["calls"]} == {"user_1"} and all(c["error"] is None for c in ok["calls"])


@pytest.mark.parametrize(
    "params", [{"feature": "x' OR '1'='1"}, {"user": "1; DROP TABLE call_data; --"}, {"model": '" OR 1=1 --'}]
)
def test_filter_values_are_only_ever_parameters(ui: Running, params: dict[str, str]) -> None:
    r = ui.get("/", params=params)
    assert r.status_code == 200 and rows(r.text) == []
    assert ui.store.count(CallFilter()) == 150


def test_bad_filters_are_refused_with_a_reason(ui: Running) -> None:
    r = ui.get("/", params={"status": "maybe"})
    assert r.status_code == 400 and "status must be" in r.text
    r = ui.get("/api/calls", params={"since": "last tuesday"})
    assert r.status_code == 400 and "since" in r.json()["error"]


def test_call_detail_shows_the_call_whole(ui: Running) -> None:
    r = ui.get(f"/calls/{uuid.UUID(int=10)}")
    assert r.status_code == 200
    html = r.text
    for text in ("You are helpful.", "question 9", "answer 9", "lookup_order", "shipped", "overloaded_error"):
        assert text in html, text
    assert 'href="/sessions/sess_0"' in html and 'href="/users/user_1"' in html
    assert ui.get(f"/api/calls/{uuid.UUID(int=10)}").json()["messages"][0]["content"] == "question 9"
    page, api = ui.get("/calls/not-an-id"), ui.get("/api/calls/not-an-id")
    # One handler says a route's refusal: as the error page, or as JSON on the API.
    assert (
        page.status_code == 404
        and "text/html" in page.headers["content-type"]
        and "no such call" in page.text
    )
    assert api.status_code == 404 and api.json() == {"error": "no such call"}


def test_hostile_content_is_shown_as_text(ui: Running) -> None:
    hostile = make_call(
        500,
        feature=HOSTILE,
        user_id=HOSTILE,
        system_prompt=HOSTILE,
        messages=[{"role": "user", "content": [{"type": "text", "text": HOSTILE}]}],
        response={"role": "assistant", "content": [{"type": "text", "text": HOSTILE}]},
        metadata={"note": HOSTILE},
        error={"type": HOSTILE, "message": HOSTILE},
    )
    ui.store.insert([hostile])
    # Its preview: text, cut, in the list's line and its title alike.
    assert previews(ui.get("/").text)[0] == (HOSTILE, HOSTILE)
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;"
        in ui.get("/").text
    )
    for path, params in (("/", {}), (f"/calls/{hostile.id}", {}), ("/", {"feature": HOSTILE})):
        html = ui.get(path, params=params).text
        assert HOSTILE.split(">")[0] in html.replace("&lt;", "<") or path == "/", path  # it is there, as text
        # Parsed as a browser would: no script element, no img, no event handler attribute.
        assert_inert(html, path)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in ui.get(f"/calls/{hostile.id}").text


def previews(html: str) -> list[tuple[str, str]]:
    """Each call's preview line in the list: (what was said, what was answered), as text."""
    found = re.findall(
        r'<tr class="preview"><td colspan="10"><div><span class="said" title="([^"]*)">([^<]*)</span>'
        r'<span class="answered" title="([^"]*)">([^<]*)</span></div></td></tr>',
        html,
    )
    assert all(
        said == said_title and answered == answered_title
        for said_title, said, answered_title, answered in found
    )
    return [(html_text(said), html_text(answered)) for _, said, _, answered in found]


def html_text(escaped: str) -> str:
    return (
        escaped.replace("&#34;", '"')
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )


def test_each_call_in_the_list_shows_what_was_said_and_answered(ui: Running) -> None:
    # What the session page shows of each turn: the last message sent (here a tool result)
    # and the answer.
    r = ui.get("/")
    assert previews(r.text) == [("← shipped", f"answer {i}") for i in range(149, 49, -1)]
    session = ui.get("/sessions/sess_14").text
    assert re.findall(r'<td class="gist">([^<]*)</td>', session)[-2:] == ["← shipped", "answer 149"]
    listed = ui.get("/api/calls", params={"user": "user_1"}).json()["calls"]
    assert [(c["said"], c["answered"]) for c in listed[:2]] == [
        ("← shipped", "answer 149"),
        ("← shipped", "answer 145"),
    ]
    # One line of at most PREVIEW characters however long the text; a call with nothing said
    # or answered has none.
    words = "lorem\n\n ipsum\t" * 200_000
    ui.store.insert(
        [
            make_call(
                500,
                messages=[{"role": "user", "content": words}],
                response={"content": [{"type": "text", "text": "x" * 10**6}]},
            ),
            make_call(501, messages=[], response=None, error={"type": "api_error"}),
        ]
    )
    r = ui.get("/")
    said, answered = previews(r.text)[0]
    assert said == ("lorem ipsum " * 9)[:99] + "…" and answered == "x" * 99 + "…"
    assert len(rows(r.text)) == 100 and len(previews(r.text)) == 99 and len(r.text) < 200_000
    assert rows(r.text)[0] == make_call(501).id and '<tr data-step-item class="failed">' in r.text


def test_previews_of_sealed_calls_are_read_as_the_session_page_reads_them(backend: Backend) -> None:
    """Regulated mode: a server with the key shows what was said and answered (each reading
    in the audit log, as the session page's); one without shows that it is sealed, never
    the cipher text."""
    ring = Keyring.parse("k1:" + "A" * 43 + "=")
    with Running(backend) as running:
        running.store.keyring = ring
        running.store.insert([make_call(i) for i in range(3)])
    with Running(backend) as running:
        html = running.get("/").text
        assert previews(html) == [("(sealed)", "(sealed)")] * 3 and "llmlog-enc:" not in html
        session = running.get("/sessions/sess_0").text
        assert re.findall(r'<td class="gist">([^<]*)</td>', session) == ["(sealed)"] * 6
        listed = running.get("/api/calls").json()["calls"]
        assert {(c["said"], c["answered"]) for c in listed} == {("(sealed)", "(sealed)")}
    with Running(backend, keyring=ring) as running:
        assert previews(running.get("/").text) == [("← shipped", f"answer {i}") for i in (2, 1, 0)]
        read = [e.call_ids for e in running.store.audit_log() if e.action == "read"]
        assert sorted(read[0]) == sorted(make_call(i).id for i in range(3))


def test_a_token_is_required_when_configured(backend: Backend) -> None:
    with Running(backend, token="s3cret") as running:
        assert running.get("/").status_code == 401
        assert running.get("/api/calls").status_code == 401
        assert running.get("/?token=wrong").status_code == 401
        r = running.get("/?token=s3cret")
        assert r.status_code == 200 and "llmlog_token" in r.headers["set-cookie"]
        assert running.get("/api/calls", cookies={"llmlog_token": "s3cret"}).status_code == 200
        assert running.get("/api/calls", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_tag_metadata_and_text_filters(ui: Running) -> None:
    ui.store.insert(
        [
            make_call(200, tags=["beta"], metadata={"tier": "pro", "plan": {"seats": 5}}),
            make_call(201, tags=["beta"], metadata={"tier": "free"}, system_prompt="Mention the Zebra."),
            make_call(202, response={"role": "assistant", "content": [{"type": "text", "text": "100% ok"}]}),
        ]
    )
    ids = {i: str(uuid.UUID(int=i + 1)) for i in (200, 201, 202)}
    assert rows(ui.get("/", params={"tag": "beta"}).text) == [ids[201], ids[200]]
    assert rows(ui.get("/", params=[("tag", "beta"), ("meta", "tier=pro")]).text) == [ids[200]]
    assert rows(ui.get("/", params=[("meta", "tier=pro"), ("meta", "plan.seats=5")]).text) == [ids[200]]
    assert rows(ui.get("/", params=[("meta", "tier=pro"), ("meta", "plan.seats=6")]).text) == []
    assert rows(ui.get("/", params={"q": "zebra"}).text) == [ids[201]]
    assert rows(ui.get("/", params={"q": "100% ok"}).text) == [ids[202]]
    r = ui.get("/", params=[("q", "zebra"), ("meta", "tier=free")])
    assert rows(r.text) == [ids[201]]
    # The view is a link: the form shows the filters in force and facet links keep them.
    assert 'name="q" type="search" value="zebra"' in r.text and 'value="tier=free"' in r.text
    assert 'href="/?q=zebra&amp;meta=tier%3Dfree&amp;feature=' in r.text
    api = ui.get("/api/calls", params={"tag": "beta", "q": "zebra"}).json()
    assert [c["id"] for c in api["calls"]] == [ids[201]]
    for bad in ({"meta": "tier"}, {"meta": "a b=c"}, {"meta": "=x"}):
        assert ui.get("/", params=bad).status_code == 400, bad
    # Injection through the new filters stays a value.
    assert rows(ui.get("/", params={"q": "' OR 1=1 --", "tag": "x' OR '1'='1"}).text) == []
    assert rows(ui.get("/", params={"meta": "tier=' OR '1'='1"}).text) == []


def test_session_page_runs_totals_turn_by_turn(ui: Running) -> None:
    # sess_3 holds calls 30..39, one minute apart; each costs 0.0012 and uses 120+i tokens.
    r = ui.get("/sessions/sess_3")
    assert r.status_code == 200
    turns = rows(r.text)
    assert turns == [str(uuid.UUID(int=i + 1)) for i in range(30, 40)]  # oldest first
    running = re.findall(r'<td class="n running">\$([0-9.]+)</td>', r.text)
    assert [float(x) for x in running] == [round(0.0012 * k, 4) for k in range(1, 11)]
    assert "← shipped" in r.text and "answer 39" in r.text  # what was sent last, what came back
    assert 'href="/users/user_2"' in r.text
    api = ui.get("/api/sessions/sess_3").json()
    assert [c["running_tokens"] for c in api["calls"]] == [
        sum(120 + j for j in range(30, k + 1)) for k in range(30, 40)
    ]
    assert api["calls"][-1]["running_cost_usd"] == pytest.approx(0.012)
    assert ui.get("/sessions/nope").status_code == 404
    assert ui.get("/api/sessions/nope").status_code == 404


def test_costliest_sessions_of_a_period_with_their_users(ui: Running) -> None:
    expensive = [
        make_call(
            300 + k, session_id="sess_big", user_id="whale", cost_usd=0.5, timestamp=T0 + timedelta(days=1)
        )
        for k in range(80)
    ]
    ui.store.insert(expensive)
    since = {"since": (T0 - timedelta(hours=1)).isoformat()}
    r = ui.get("/sessions", params=since)
    assert r.status_code == 200
    first = re.search(r'<a href="/sessions/([^"]+)">', r.text)
    assert first is not None and first.group(1) == "sess_big"
    api = ui.get("/api/sessions", params=since).json()["sessions"]
    top = api[0]
    assert (top["session_id"], top["user_id"], top["calls"]) == ("sess_big", "whale", 80)
    assert top["cost_usd"] == pytest.approx(40.0)
    assert len(api) == 16 and {s["calls"] for s in api[1:]} == {10}
    # The period bounds what counts: only sess_big lies after T0 + 1 day.
    later = ui.get("/api/sessions", params={"since": (T0 + timedelta(hours=20)).isoformat()}).json()
    assert [s["session_id"] for s in later["sessions"]] == ["sess_big"]
    # The default period is the last 7 days; these calls are older.
    assert ui.get("/api/sessions").json()["sessions"] == []
    assert "No sessions in this period" in ui.get("/sessions").text


def test_users_page_and_one_user(ui: Running) -> None:
    since = {"since": (T0 - timedelta(hours=1)).isoformat()}
    users = ui.get("/api/users", params=since).json()["users"]
    assert {u["user_id"] for u in users} == {"user_0", "user_1", "user_2", "user_3"}
    by_id = {u["user_id"]: u for u in users}
    # user_1 makes calls i % 4 == 1; errors are i % 10 == 9: 9, 29, 49, …
    mine = [i for i in range(150) if i % 4 == 1]
    assert by_id["user_1"]["calls"] == len(mine)
    assert by_id["user_1"]["errors"] == len([i for i in mine if i % 10 == 9])
    assert by_id["user_1"]["sessions"] == len({i // 10 for i in mine})
    assert by_id["user_1"]["cost_usd"] == pytest.approx(0.0012 * len(mine))
    html = ui.get("/users", params=since).text
    assert 'href="/users/user_1?since=' in html
    page = ui.get("/users/user_1", params=since)
    assert page.status_code == 200
    assert re.findall(r'<a href="/sessions/([^"]+)">', page.text)  # their conversations
    assert "overloaded_error" in page.text  # their latest errors
    assert "No calls from this user" in ui.get("/users/nobody", params=since).text


def test_people_pages_escape_and_bind_what_they_show(ui: Running) -> None:
    ui.store.insert([make_call(400, session_id=HOSTILE, user_id=HOSTILE, timestamp=T0 + timedelta(days=1))])
    since = {"since": (T0 - timedelta(hours=1)).isoformat()}
    for path in ("/sessions", "/users", f"/sessions/{HOSTILE}", f"/users/{HOSTILE}"):
        r = ui.get(path, params=since)
        assert r.status_code == 200, path
        assert_inert(r.text, path)
    assert ui.get("/sessions/x' OR '1'='1").status_code == 404
    assert ui.get("/sessions", params={"since": "yesterday-ish"}).status_code == 400


def test_random_sample_from_a_window(ui: Running) -> None:
    now = datetime.now(UTC)
    recent = [make_call(600 + k, timestamp=now - timedelta(minutes=1 + k), feature="new") for k in range(30)]
    old = make_call(700, timestamp=now - timedelta(hours=3), feature="new")
    ui.store.insert([*recent, old])
    recent_ids = {c.id for c in recent}
    r = ui.get("/sample")
    assert r.status_code == 200
    picked = rows(r.text)
    assert len(picked) == 20 and len(set(picked)) == 20 and set(picked) <= recent_ids  # last hour only
    assert "data-step" in r.text and "answer 6" in r.text
    # Size and window adjustable; filters apply; a second pull differs (30 choose 20).
    wide = ui.get("/api/sample", params={"window": "4h", "n": 200, "feature": "new"}).json()
    assert {c["id"] for c in wide["calls"]} == recent_ids | {old.id}
    pulls = {tuple(rows(ui.get("/sample", params={"n": 5}).text)) for _ in range(5)}
    assert len(pulls) > 1
    # A sample can be linked to: the link names its calls.
    link = re.search(r'<a href="(/sample\?id=[^"]+)">Link to exactly these calls', r.text)
    assert link is not None
    again = ui.get(link.group(1).replace("&amp;", "&"))
    assert sorted(rows(again.text)) == sorted(picked)
    assert ui.get("/sample", params={"window": "soon"}).status_code == 400
    assert ui.get("/api/sample", params={"n": "lots"}).status_code == 400
    assert "No calls in the last 1h" in ui.get("/sample", params={"feature": "none-such"}).text


def test_call_detail_links_turns_prices_and_traces_tools(ui: Running) -> None:
    ids = {i: str(uuid.UUID(int=i + 1)) for i in range(150)}
    html = ui.get(f"/calls/{ids[15]}").text
    assert f'rel="prev" href="/calls/{ids[14]}"' in html and f'rel="next" href="/calls/{ids[16]}"' in html
    assert (
        "first turn" in ui.get(f"/calls/{ids[10]}").text and "last turn" in ui.get(f"/calls/{ids[19]}").text
    )
    # Cost: tokens × rate = cost per kind of token, from the rate card.
    assert re.search(
        r"<td>input</td><td class=\"n\">115</td><td class=\"n\">1</td><td class=\"n\">\$0\.000115</td>", html
    )
    assert re.search(
        r"<td>output</td><td class=\"n\">20</td><td class=\"n\">5</td><td class=\"n\">\$0\.000100</td>", html
    )
    assert "$0.000215" in html and "claude-haiku-4-5 on genai-prices" in html  # claude-haiku-4-5: $1 / $5
    unpriced = ui.get(f"/calls/{ids[16]}", params={}).text
    assert "Not priced" not in unpriced
    ui.store.insert([make_call(800, model="home-made-model", session_id=None)])
    assert "Not priced" in ui.get(f"/calls/{uuid.UUID(int=801)}").text
    # Tool calls with their results, found in the next turn of the session.
    asks = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "refund", "input": {"n": 1}}],
    }
    answer = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "refunded 1"}],
    }
    first = make_call(900, session_id="tools", response=asks)
    second = make_call(901, session_id="tools", messages=[{"role": "user", "content": "hi"}, asks, answer])
    lonely = make_call(
        902,
        session_id="alone",
        response={"role": "assistant", "content": [{**asks["content"][0], "id": "toolu_x"}]},
    )
    ui.store.insert([first, second, lonely])
    trace = ui.get(f"/calls/{first.id}").text
    section = trace[trace.index('<section class="trace">') :]
    assert "<b>refund</b>" in section and "refunded 1" in section and f'href="/calls/{second.id}"' in section
    assert "no later call of this session carried its result" in ui.get(f"/calls/{lonely.id}").text
    # Copy buttons name elements that exist.
    for target in re.findall(r'data-copy="([^"]+)"', trace):
        assert f'id="{target}"' in trace


def test_pages_say_how_long_they_took(ui: Running) -> None:
    timing = ui.get("/").headers["server-timing"]
    assert re.fullmatch(r"app;dur=[0-9]+\.[0-9]", timing) and float(timing.split("=")[1]) > 0
