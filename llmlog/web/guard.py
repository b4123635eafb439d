"""What keeps other sites from driving the server: the names it answers to, and the headers
every response carries.

DNS rebinding: a page on `evil.example` can make its own name resolve to 127.0.0.1, and then
the browser treats the local server as that page's own origin: it may read every page and
submit every form (the CSRF token included, read from a page). What gives it away is the
`Host` header, which names the attacker's domain. So the server answers only to the names it
is served as (`allowed_hosts`): the address it is bound to, the loopback names on loopback,
the machine's own names and addresses on a wildcard bind, and what `--allowed-host` /
`LLMLOG_ALLOWED_HOSTS` add. Anything else is a 400 that says which option to use.

Every response (pages, JSON, static files, errors, the collector and the proxy) carries a
strict Content-Security-Policy (scripts and styles from this site's files only, nothing
inline, no framing), `X-Frame-Options`, `X-Content-Type-Options: nosniff` and a referrer
policy (`SECURITY_HEADERS`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_HOSTS_ENV = "LLMLOG_ALLOWED_HOSTS"
# A DNS name or an IPv4 address, maybe after `*.`: labels of letters, digits, - and _.
_HOST = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("", "0.0.0.0", "::", "[::]")

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # the page's icon is a data: URL (no request for /favicon.ico)
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with a
    # same-site form POST, and the CSRF check (`auth.same_origin`) needs the real origin.
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)
_NAMES = frozenset(name.encode() for name, _ in SECURITY_HEADERS)
_ENCODED = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS]


class SecurityHeaders:
    """Sets `SECURITY_HEADERS` on every response, replacing any the answer had (the proxy
    relays a provider's headers: ours are the ones that hold on this origin)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message = {**message, "headers": kept + _ENCODED}
            await send(message)

        await self.app(scope, receive, with_headers)


def server_error_headers() -> dict[str, str]:
    """The headers for the 500 page, which Starlette answers outside the middleware."""
    return dict(SECURITY_HEADERS)


class AllowedHosts:
    """Answers only requests whose `Host` is one of `hosts`, with Starlette's own matching
    (TrustedHostMiddleware: the port is not compared; `*.example.com` matches below it; `*`
    matches anything). A refusal says what to do about it."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = list(hosts)
        self.check = TrustedHostMiddleware(self._passed, allowed_hosts=self.hosts, www_redirect=False)

    async def _passed(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["llmlog.host_allowed"] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def answer(message: Message) -> None:
            nonlocal refused
            if scope.get("llmlog.host_allowed"):
                await send(message)
            elif message["type"] == "http.response.start":
                refused = True  # TrustedHostMiddleware's own answer: ours is sent instead

        await self.check(scope, receive, answer)
        if refused:
            await self.refusal(scope)(scope, receive, send)

    def refusal(self, scope: Scope) -> Response:
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        shown = host[:100].encode("ascii", "backslashreplace").decode() or "(none)"
        return PlainTextResponse(
            f"llmlog does not answer to the host {shown!r}: it answers to {', '.join(self.hosts)}.\n"
            "If this server is meant to be reached by that name, start it with"
            f" `llmlog serve --allowed-host NAME` (or set {ALLOWED_HOSTS_ENV}=NAME,...).\n",
            status_code=400,
        )


def host_pattern(text: str) -> str:
    """A name as `--allowed-host` takes it, as the Host header shows it: lower case, without
    a port (a port is not compared), an IPv6 address in brackets; `*.example.com` for the
    names below example.com, `*` for any name (no check at all). ValueError if it is none."""
    name = text.strip().lower()
    if name == "*":
        return name
    if name.startswith("["):
        inner, closed, port = name[1:].partition("]")
        if not closed or (port and not re.fullmatch(r":\d+", port)):
            raise ValueError(f"{text!r}: an IPv6 address in brackets, as in a URL")
        return f"[{ipaddress.IPv6Address(inner)}]"  # ValueError: not an address
    if name.count(":") > 1:
        return f"[{ipaddress.IPv6Address(name)}]"
    host, _, port = name.partition(":")
    if not _HOST.fullmatch(host) or (port and not port.isdigit()):
        raise ValueError(
            f"{text!r}: an allowed host is a name or an address (as in a URL, without scheme or path)"
        )
    return host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _own_names() -> list[str]:
    """This machine's names and the addresses they resolve to, as far as it knows them."""
    names: list[str] = []
    for name in {socket.gethostname(), socket.getfqdn()}:
        if not name:
            continue
        names.append(name)
        try:
            infos = socket.getaddrinfo(name, None)
        except OSError:
            continue
        names.extend(str(info[4][0]) for info in infos)
    return names


def allowed_hosts(bind: str = "127.0.0.1", extra: Iterable[str] = ()) -> list[str]:
    """The Host names a server bound to `bind` answers to: the bound address; on loopback
    the loopback names; on a wildcard bind (0.0.0.0, ::) the loopback names and this machine's
    own names and addresses; and `extra` (`--allowed-host`). Never a name the machine does
    not know itself by, unless given: that is what a rebinding page would send."""
    given = list(extra)
    found: list[str] = []
    bind = bind.strip()
    if bind in WILDCARD_BINDS:
        found += [*LOOPBACK_NAMES, *_own_names()]
    else:
        found.append(bind)
        if _is_loopback(bind):
            found += LOOPBACK_NAMES
    out: list[str] = []
    for name in [*found, *given]:
        try:
            pattern = host_pattern(name)
        except ValueError:
            if name in given:
                raise
            continue  # one of our own names that is not a plain name: left out
        if pattern not in out:
            out.append(pattern)
    return out
