"""The web UI over real HTTP: a uvicorn server in a thread, each store kind, hostile content."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx2 as httpx
import pytest
import uvicorn

from llmlog.record import Call
from llmlog.store import CallFilter, open_store
from llmlog.web import create_app
from tests.backends import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"id": 7}}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"}
HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)">'


def _call(i: int, **changes: Any) -> Call:
    base = Call(
        id=str(uuid.UUID(int=i + 1)),
        timestamp=T0 + timedelta(minutes=i),
        provider="anthropic",
        model="claude-sonnet-4-6" if i % 3 else "claude-haiku-4-5",
        feature="support-bot" if i % 2 else "summarize",
        user_id=f"user_{i % 4}",
        session_id=f"sess_{i // 10}",
        prompt_template_version="v1",
        system_prompt="You are helpful.",
        messages=[
            {"role": "user", "content": f"question {i}"},
            {
                "role": "assistant",
                "content": [TOOL_USE],
            },
            {"role": "user", "content": [TOOL_RESULT]},
        ],
        response={"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]},
        input_tokens=100 + i,
        output_tokens=20,
        latency_ms=850.0,
        cost_usd=0.0012,
        error={"type": "overloaded_error", "status": 529, "message": "busy"} if i % 10 == 9 else None,
    )
    return base.replace(**changes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(self, backend: Backend, token: str | None = None) -> None:
        self.store = open_store(backend.url)
        self.port = _free_port()
        app = create_app(lambda: open_store(backend.url), token=token)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10, **kw)


@pytest.fixture
def ui(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        running.store.insert([_call(i) for i in range(150)])
        yield running


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, [name for name, _ in attrs]))


def _tags(html: str) -> list[tuple[str, list[str]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def _rows(html: str) -> list[str]:
    return re.findall(r'<a href="/calls/([0-9a-f-]+)">', html)


def test_calls_page_lists_newest_first_with_facets_and_paging(ui: Running) -> None:
    r = ui.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    ids = _rows(r.text)
    assert ids == [str(uuid.UUID(int=i + 1)) for i in range(149, 49, -1)]
    # Facet counts over the whole selection, beside each value, as links that add the filter.
    assert re.search(r'href="/\?feature=summarize">summarize</a> <span class="count">75</span>', r.text)
    assert re.search(r'href="/\?status=error">error</a> <span class="count">15</span>', r.text)
    older = re.search(r'<a class="older" href="([^"]+)">', r.text)
    assert older is not None
    page2 = ui.get(older.group(1).replace("&amp;", "&"))
    assert _rows(page2.text) == [str(uuid.UUID(int=i + 1)) for i in range(49, -1, -1)]


def test_filters_combine_and_live_in_the_url(ui: Running) -> None:
    r = ui.get("/", params={"feature": "support-bot", "status": "error", "model": "claude-sonnet-4-6"})
    expected = [i for i in range(150) if i % 2 and i % 10 == 9 and i % 3]
    assert _rows(r.text) == [str(uuid.UUID(int=i + 1)) for i in reversed(expected)]
    assert 'value="support-bot"' in r.text  # the form shows the filter in force
    since = ui.get("/", params={"since": (T0 + timedelta(minutes=140)).isoformat()})
    assert len(_rows(since.text)) == 10
    ok = ui.get("/api/calls", params={"status": "ok", "user": "user_1"}).json()
    assert {c["user_id"] for c in ok["calls"]} == {"user_1"} and all(c["error"] is None for c in ok["calls"])


@pytest.mark.parametrize(
    "params", [{"feature": "x' OR '1'='1"}, {"user": "1; DROP TABLE call_data; --"}, {"model": '" OR 1=1 --'}]
)
def test_filter_values_are_only_ever_parameters(ui: Running, params: dict[str, str]) -> None:
    r = ui.get("/", params=params)
    assert r.status_code == 200 and _rows(r.text) == []
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
    assert 'href="/?session=sess_0"' in html and 'href="/?user=user_1"' in html
    assert ui.get(f"/api/calls/{uuid.UUID(int=10)}").json()["messages"][0]["content"] == "question 9"
    assert ui.get("/calls/not-an-id").status_code == 404
    assert ui.get("/api/calls/not-an-id").status_code == 404


def test_hostile_content_is_shown_as_text(ui: Running) -> None:
    hostile = _call(
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
    for path, params in (("/", {}), (f"/calls/{hostile.id}", {}), ("/", {"feature": HOSTILE})):
        html = ui.get(path, params=params).text
        assert HOSTILE.split(">")[0] in html.replace("&lt;", "<") or path == "/", path  # it is there, as text
        # Parsed as a browser would: no script element, no img, no event handler attribute.
        tags = _tags(html)
        assert not {"script", "img"} & {tag for tag, _ in tags}, path
        assert not [a for _, attrs in tags for a in attrs if a.startswith("on")], path
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in ui.get(f"/calls/{hostile.id}").text


def test_a_token_is_required_when_configured(backend: Backend) -> None:
    with Running(backend, token="s3cret") as running:
        assert running.get("/").status_code == 401
        assert running.get("/api/calls").status_code == 401
        assert running.get("/?token=wrong").status_code == 401
        r = running.get("/?token=s3cret")
        assert r.status_code == 200 and "llmlog_token" in r.headers["set-cookie"]
        assert running.get("/api/calls", cookies={"llmlog_token": "s3cret"}).status_code == 200
        assert running.get("/api/calls", headers={"Authorization": "Bearer s3cret"}).status_code == 200
