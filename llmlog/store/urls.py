"""Store URLs: which engine one names, a SQLite URL's file, and a URL fit to be shown."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """The URL fit for a log line or an error message: scheme, user, host, port, database;
    a password (in the user part or as ?password=) shows as ***, other parameters not at all."""
    path = sqlite_path(url)
    if path is not None:
        # The file itself, absolute: `sqlite:///x.db` is relative, which the URL hides.
        return path if path == ":memory:" else os.path.abspath(path)
    scheme = url.split("://", 1)[0]
    try:
        if scheme in ("postgresql", "postgres"):
            from psycopg.conninfo import conninfo_to_dict

            # libpq's own parsing: a password holding '#' or '?' fools urlsplit.
            d = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
        else:
            parts = urlsplit(url)
            given = {"user": parts.username, "password": parts.password, "host": parts.hostname,
                     "port": parts.port, "dbname": parts.path.lstrip("/")}  # fmt: skip
            d = {k: str(v) for k, v in given.items() if v}
    except Exception:
        return f"{scheme}://…"
    secret = ":***" if "password" in d or "sslpassword" in d else ""
    auth = f"{d.get('user', '')}{secret}@" if d.get("user") or secret else ""
    port = f":{d['port']}" if d.get("port") else ""
    return f"{scheme}://{auth}{d.get('host', '')}{port}/{d.get('dbname', '')}"


def sqlite_path(url: str) -> str | None:
    """The file path of a SQLite URL or plain path; None when the URL names another engine.
    As in SQLAlchemy, what follows `sqlite:///` is the path as written: `sqlite:///x/calls.db`
    is relative to the working directory, `sqlite:////x/calls.db` absolute."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :] or ":memory:"
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :] or ":memory:"
    if "://" in url:
        return None
    try:
        return str(Path(url).expanduser())
    except RuntimeError:  # `~name` of a user this system does not know: the path as written
        return str(Path(url))
