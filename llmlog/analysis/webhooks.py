"""Webhooks: where alerts (`llmlog.analysis.alerts`) post a finding, and what they post.

What leaves the store is the finding's sentence, its figures and a link to its evidence on
the UI (under the link base the store is configured with, e.g. the server's public URL),
nothing else: no text of any call, no setting, no secret. The sentence is cut, its control
characters dropped, and for Slack its `&`, `<` and `>` escaped, so that a name in it (a
feature, a user id, taken from the calls) cannot mention `<!channel>` or draw a link.

Two formats: `json`, a small object of its own (`payload`), for anything that takes JSON;
and `slack`, `{"text": …}`, which Slack's incoming webhooks take (and Mattermost's, Discord's
`/slack` endpoints, Teams' workflows).

A post never raises: what went wrong comes back as a line (`post`), which names neither the
URL (its path is often the webhook's secret) nor anything the receiver answered but its status.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from llmlog.store.alerts import Alert

FORMATS = ("json", "slack")
TIMEOUT_S = 10.0  # to connect, to send, and between the bytes of the answer
SENTENCE_MAX = 500
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r}: letters, digits, '.', '_' and '-', 64 at most, beginning with a letter"
            " or digit"
        )
    return name


def check_url(url: str, what: str) -> str:
    """An http(s) URL with a host; ValueError otherwise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (a port out of range raises here, not later where it is shown)
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host or _CONTROL.search(url):
        raise ValueError(f"{what}: an http:// or https:// URL with a host")
    return url


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    format: str = "json"

    def __post_init__(self) -> None:
        check_name(self.name, "webhook")
        check_url(self.url, f"webhook {self.name}")
        if self.format not in FORMATS:
            raise ValueError(f"webhook {self.name}: format {self.format!r}, not one of {', '.join(FORMATS)}")

    @property
    def shown(self) -> str:
        """The URL as lists show it: scheme and host, not the path (often its secret)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}/…"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "format": self.format}

    @classmethod
    def from_json(cls, value: Any) -> Webhook:
        return cls(str(value["name"]), str(value["url"]), str(value.get("format", "json")))


def sentence(text: str) -> str:
    """One line, cut: as a finding's sentence leaves the store."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= SENTENCE_MAX else line[: SENTENCE_MAX - 1] + "…"


def figures(numbers: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a finding's figures (a name among them, which a finding may
    carry, stays in the store)."""
    return {
        str(k)[:64]: v
        for k, v in numbers.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def link(base: str | None, path: str) -> str | None:
    """The page under the link base; None without a base (there is no address to give)."""
    if not base or not path.startswith("/"):
        return None
    return base.rstrip("/") + path


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(format: str, alert: Alert, url: str | None) -> dict[str, Any]:
    """What is posted for an alert that opened, in a webhook's format."""
    said = sentence(alert.sentence)
    if format == "slack":
        text = _slack_escape(said)
        if url:
            text += f" <{_slack_escape(url).replace('|', '%7C')}|Open in llmlog>"
        return {"text": text}
    return {
        "source": "llmlog",
        "event": "finding",
        "kind": alert.kind,
        "key": sentence(alert.key),
        "sentence": said,
        "numbers": figures(alert.numbers),
        "link": url,
        "opened": alert.to_json()["opened"],
    }


class Client(httpx2.Client):
    """What a round posts with: one client, so that its TLS set-up is made once and a
    connection to a host is used again, closed after the round. Redirects are not followed.
    It keeps the sockets it opened, so that a post past its time can be cut (`post`)."""

    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        super().__init__(timeout=timeout_s, follow_redirects=False)
        self.sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def cut(self) -> None:
        """Shut its connections: a read waiting on one ends at once (closing a socket would
        not wake it). One idle in the pool is dropped, and the next post opens another."""
        for sock in list(self.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def client(timeout_s: float = TIMEOUT_S) -> Client:
    return Client(timeout_s)


def post(
    webhook: Webhook, body: dict[str, Any], timeout_s: float = TIMEOUT_S, http: Client | None = None
) -> str | None:
    """POST `body` as JSON to the webhook (with `http`, else a client of its own); None when
    it took it (a 2xx), else what went wrong, in a line. The answer's body is never read.

    The client's time limits are each one read's or write's: a receiver sending its answer a
    byte at a time would hold a post as long as it liked, past the round's lease (and another
    evaluator would post the same again). So the whole post has `timeout_s`, then its
    connections are cut."""
    data = json.dumps(body, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "llmlog"}
    with contextlib.ExitStack() as stack:
        sender = http if http is not None else stack.enter_context(client(timeout_s))
        late = threading.Event()

        def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
                sock = info["return_value"].get_extra_info("socket")
                if isinstance(sock, socket.socket):
                    sender.sockets.add(sock)
                    if late.is_set():  # connected after the time was up
                        sender.cut()

        def cut() -> None:
            late.set()
            sender.cut()

        timer = threading.Timer(timeout_s, cut)
        timer.daemon = True
        timer.start()
        stack.callback(timer.cancel)
        try:
            response = stack.enter_context(
                sender.stream("POST", webhook.url, content=data, headers=headers, extensions={"trace": trace})
            )
            status = response.status_code
        except httpx2.TimeoutException:
            return f"no answer within {timeout_s:g} s"
        except httpx2.ProtocolError as exc:
            if late.is_set():
                return f"no answer within {timeout_s:g} s"
            # Its message quotes what the receiver sent, which the history (read by viewers)
            # does not keep: only that it was not an HTTP answer.
            return f"{type(exc).__name__}: not an HTTP answer"
        except Exception as exc:  # a URL the client cannot use, say: the round goes on
            if late.is_set():
                return f"no answer within {timeout_s:g} s"
            return _said(webhook, exc)
    if 200 <= status < 300:
        return None
    return f"HTTP {status}"


def _said(webhook: Webhook, exc: Exception) -> str:
    """An exception as a line that names neither the URL nor its path."""
    text = str(exc)
    parts = urlsplit(webhook.url)
    for secret in (webhook.url, parts.path, parts.query):
        if secret and secret != "/":
            text = text.replace(secret, "…")
    text = " ".join(text.split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
