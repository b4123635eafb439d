"""A webhook receiver for the alerts' tests: a real HTTP server on loopback, in a thread,
that keeps what it was posted and answers as told (a status; or never, holding the
connection until it is closed)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(
        self, status: int = 200, hang: bool = False, trickle: bool = False, raw: bytes = b""
    ) -> None:
        # trickle: the answer's head a byte at a time, each well within a read's time limit;
        # raw: these bytes for an answer, HTTP or not.
        self.status, self.hang, self.trickle, self.raw = status, hang, trickle, raw
        self.posts: list[dict[str, Any]] = []  # each: path, headers, body (parsed JSON)
        self._posted = threading.Condition()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"null")
                with receiver._posted:
                    receiver.posts.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    receiver._posted.notify_all()
                if receiver.hang:
                    receiver._closing.wait(60)
                    return
                if receiver.raw:
                    self.wfile.write(receiver.raw)
                    self.close_connection = True
                    return
                if receiver.trickle:
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 600:
                        if receiver._closing.wait(0.1):
                            return
                        try:
                            self.wfile.write(bytes([byte]))
                        except OSError:  # the client gave up
                            return
                    return
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/SECRET-PATH"

    @property
    def bodies(self) -> list[Any]:
        return [p["body"] for p in self.posts]

    def wait_posts(self, n: int, timeout_s: float = 60.0) -> bool:
        with self._posted:
            return self._posted.wait_for(lambda: len(self.posts) >= n, timeout_s)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


def closed_url() -> str:
    """A loopback address nothing listens on: a post to it is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
