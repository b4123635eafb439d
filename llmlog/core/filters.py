"""The filters on calls, by the names the web UI's query strings and the CLI's options share,
read into a `CallFilter` by one parser, so that a filter selects the same calls wherever it is
typed: `?tag=beta&meta=tier=pro` on a page, `--tag beta --meta tier=pro` on the command line.

    feature, model, provider, user, session, version   one column equal to the value
    tag                                                 the call carries this tag
    meta                                                key=value, repeatable (a dotted key
                                                        reaches nested values)
    q                                                   free text (see CallFilter.text)
    status                                              "error" or "ok"
    since, until                                        1h, 30m, 7d or ISO-8601

The web reads them from the query string; the CLI gives --search for q and --errors /
--successes for status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmlog.store.base import CallFilter, parse_when

# Name → CallFilter field, for the filters that are one column equal to a value.
EQUALS = {
    "feature": "feature",
    "model": "model",
    "user": "user_id",
    "session": "session_id",
    "version": "prompt_template_version",
    "provider": "provider",
}
NAMES = (*EQUALS, "tag", "meta", "q", "status", "since", "until")


# The longest free text (q, --search) taken: SQLite refuses a LIKE pattern past 50,000 bytes,
# and this many characters stay inside it even at 4 bytes each with every one escaped.
MAX_TEXT = 10_000


class BadFilter(ValueError):
    pass


def _values(params: Any, name: str) -> list[str]:
    """Every value given for `name`: a query string's repeated parameter (anything with
    `getlist`), a list or tuple, or one value."""
    getlist = getattr(params, "getlist", None)
    if getlist is not None:
        return [v for v in getlist(name) if v]
    value = params.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v]


def _one(params: Any, name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):  # a list: its last word counts
        value = value[-1] if value else None
    return value or None


def parse_filter(params: Mapping[str, str | Sequence[str] | None] | Any) -> CallFilter:
    """The filter `params` (by the names in NAMES; others are not this parser's) asks for.
    Raises BadFilter, saying which name and why, on a value it cannot read."""
    f = CallFilter()
    for name, field in EQUALS.items():
        setattr(f, field, _one(params, name))
    f.tag = _one(params, "tag")
    f.text = _one(params, "q")
    if f.text is not None and len(f.text) > MAX_TEXT:
        raise BadFilter(f"search text of {len(f.text):,} characters: at most {MAX_TEXT:,} are taken")
    for meta in _values(params, "meta"):
        key, eq, value = meta.partition("=")
        if not eq:
            raise BadFilter(f"meta: {meta!r} is not key=value")
        f.metadata.append((key.strip(), value))
    try:
        f.__post_init__()  # checks the metadata keys
    except ValueError as exc:
        raise BadFilter(str(exc)) from None
    status = _one(params, "status") or ""
    if status not in ("", "error", "ok"):
        raise BadFilter(f"status must be 'error' or 'ok', not {status!r}")
    f.errors = {"error": True, "ok": False}.get(status)
    for name in ("since", "until"):
        when = _one(params, name)
        if when:
            try:
                setattr(f, name, parse_when(when))
            except ValueError as exc:
                raise BadFilter(f"{name}: {exc}") from None
    return f
