"""What the web tests share: calls to fill a store with, a real uvicorn server in a thread,
and an HTML parser that sees the tags a browser would."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx2 as httpx
import uvicorn

from llmlog.capture.proxy import Upstreams
from llmlog.core.encryption import Keyring
from llmlog.core.record import Call
from llmlog.operations.replay import Providers
from llmlog.store import Store, open_store, retention_policy
from llmlog.web import create_app, guard
from tests.backends import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# A retention window that keeps calls from T0 hot whatever today is: the pages read them as
# they were stored, not from the cold tier's rollups.
KEEP_EVERYTHING = retention_policy.Policy(days=36_500)
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"id": 7}}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"}
HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)">'


def make_call(i: int, **changes: Any) -> Call:
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """`llmlog serve` over a backend, on a free loopback port, for the length of a `with`."""

    def __init__(
        self,
        backend: Backend,
        token: str | None = None,
        providers: Providers | None = None,
        ingest_token: str | None = None,
        upstreams: Upstreams | None = None,
        keyring: Keyring | None = None,
        reader_url: str | None = None,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        self.store = open_store(backend.url)
        retention_policy.set_policy(self.store, KEEP_EVERYTHING)
        self.port = free_port()

        def opened() -> Store:
            # As `llmlog serve` opens it, with LLMLOG_READER_DB when given.
            store = open_store(backend.url, reader_url) if reader_url else open_store(backend.url)
            store.keyring = keyring  # as `llmlog serve` opens it with LLMLOG_KEY set
            return store

        # The names `llmlog serve` answers to on 127.0.0.1 (and any given).
        self.app = create_app(
            opened,
            token=token,
            providers=providers,
            ingest_token=ingest_token,
            upstreams=upstreams,
            allowed_hosts=guard.allowed_hosts("127.0.0.1", allowed_hosts or ()),
        )
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
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

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=30, **kw)

    def submit(
        self, path: str, data: dict[str, str], headers: dict[str, str] | None = None, cookies: Any = None
    ) -> httpx.Response:
        """POST a form as this site's own page does: from its origin (unless `headers` say
        otherwise), with the CSRF token its pages carry (the `llmlog_csrf` cookie a first
        visit sets)."""
        jar = httpx.Cookies(cookies)
        if "llmlog_csrf" not in jar:
            jar.update(httpx.get(self.base + "/login", timeout=10, cookies=jar).cookies)
        return httpx.post(
            self.base + path,
            data={**data, "csrf": jar["llmlog_csrf"]},
            headers=headers if headers is not None else {"Origin": self.base},
            cookies=jar,
            timeout=30,
        )


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def rows(html: str) -> list[str]:
    return re.findall(r'<a href="/calls/([0-9a-f-]+)">', html)


def assert_inert(html: str, where: str = "") -> None:
    """Parsed as a browser would: no script but our own file, no img, no event handler
    attribute, no javascript: link: nothing logged can run."""
    for tag, attrs in tags(html):
        named = dict(attrs)
        if tag == "script":
            ours = set(named) <= {"src", "defer"} and (named["src"] or "").startswith("/static/")
            assert ours, (where, attrs)
        assert tag != "img", where
        assert not [a for a, _ in attrs if a.startswith("on")], (where, attrs)
        assert not (named.get("href") or "").lower().lstrip().startswith("javascript:"), (where, attrs)
