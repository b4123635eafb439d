"""JSONL in and out: one call per line, in the record's column names.

`llmlog import` reads files with `llmlog.pipeline.importer`, which loosens what real logs hold before
`parse_record` validates it; the collector (`parse_batch`) takes records as they are. Both
take the minimal hand-written format people already keep in per-day files: `timestamp,
model, system_prompt, user_message, assistant_response, input_tokens, output_tokens,
latency_ms, tags` (any of the full columns may sit beside them).
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from llmlog.core.record import Call, RecordError, Span

# Ids for lines that carry none are derived from the line, so importing a file twice
# stores each call once.
_IMPORT_NAMESPACE = uuid.UUID("6f1c2d8e-3b4a-5c6d-8e9f-0a1b2c3d4e5f")
MINIMAL_KEYS = frozenset({"user_message", "assistant_response"})


def _guess_provider(model: Any) -> str | None:
    if not isinstance(model, str):
        return None
    m = model.lower()
    if m.startswith("claude"):
        return "anthropic"
    if m.startswith(("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding")):
        return "openai"
    return None


def _from_minimal(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in MINIMAL_KEYS}
    user, answer = data.get("user_message"), data.get("assistant_response")
    for name, value in (("user_message", user), ("assistant_response", answer)):
        if value is not None and not isinstance(value, str):
            raise RecordError(f"{name}: expected a string, got {type(value).__name__}")
    if user is not None and "messages" not in out:
        out["messages"] = [{"role": "user", "content": user}]
    if answer is not None and "response" not in out:
        out["response"] = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    tags = out.get("tags")
    if isinstance(tags, str):
        out["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    if "provider" not in out:
        out["provider"] = _guess_provider(out.get("model"))
    return out


def parse_line(line: str) -> Call:
    """One JSONL line → Call, or RecordError saying what is wrong with it."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:  # the parser's own limit (about a thousand levels)
        raise RecordError("invalid JSON: nested too deeply") from None
    return parse_record(data, line.strip())


def parse_record(data: Any, source: str) -> Call:
    """One decoded record → Call, or RecordError. A record without an id gets one derived
    from `source` (its text), so the same record sent twice is stored once."""
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    if MINIMAL_KEYS & data.keys():
        data = _from_minimal(data)
    if data.get("id") is None:
        data = {**data, "id": str(uuid.uuid5(_IMPORT_NAMESPACE, source))}
    return Call.from_dict(data)


@dataclass
class BadRecord:
    index: int  # the record's position in its batch, from 0
    reason: str


def parse_batch(body: bytes, max_record: int | None = None) -> Batch:
    """A request body of records: one JSON object, a JSON array of them, or NDJSON (one per
    line). Each record that cannot be read is reported with its index and reason, and the
    others are kept: a batch never fails whole for one bad record. Records over
    `max_record` bytes (of JSON) are refused as too large."""
    whole = Batch()
    for part in parse_batches(body, max_record):
        whole.calls += part.calls
        whole.bad += part.bad
        whole.too_large += part.too_large
    return whole


def parse_batches(body: bytes, max_record: int | None = None, per: int = 0) -> Iterator[Batch]:
    """`parse_batch`, `per` records at a time (0: all at once), so that a caller can store
    each part before the next is read: what a large body's calls take in memory, several
    times its JSON, is then a part's, not the body's. Indexes are the records' in the body."""
    batch = Batch()
    for index, read, size in _entries(body):
        if isinstance(read, str):
            batch.bad.append(BadRecord(index, read))
        else:
            batch.add(index, read, size, max_record)
        if per and len(batch.calls) + len(batch.bad) >= per:
            yield batch
            batch = Batch()
    if batch.calls or batch.bad or not per:
        yield batch


def _entries(body: bytes) -> Iterator[tuple[int, Callable[[], Call] | str, int]]:
    """Each record of a body in turn: its index, how to read it (or why it cannot be), and
    its size in bytes of JSON."""
    data = _LINES if _ndjson(body) else _one_value(body)
    if data is _LINES:
        for index, line in enumerate(line for line in _lines(body) if line.strip()):
            yield index, partial(parse_line, line.decode("utf-8", "replace")), len(line)
        return
    for index, item in enumerate(data if isinstance(data, list) else [data]):
        try:
            source = _source(item)
        except RecordError as exc:
            yield index, str(exc), 0
            continue
        yield index, partial(parse_record, item, source), len(source)


_LINES = object()


def _one_value(body: bytes) -> Any:
    """The body read as one JSON value, else `_LINES`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # Not strict JSON: one value still, if the lenient parser reads it whole (an array with
        # a NaN in one record is that array, not one bad line); else NDJSON, each line on its own.
        try:
            return json.loads(body)
        except UnicodeDecodeError:
            pass
        except (ValueError, RecursionError):
            return _LINES
        # A byte that is not UTF-8 in a string: replaced, as it is in an NDJSON line, so that
        # one record's bad byte does not make the whole array one bad line.
        try:
            return json.loads(body.decode("utf-8-sig", "replace"))  # a byte order mark read as one
        except (ValueError, RecursionError):
            return _LINES


def _ndjson(body: bytes) -> bool:
    """Whether a body is plainly several values, one a line: its first line is a whole JSON
    object and more follows. Told from the first line alone, because reading the body as one
    value first costs orjson a dozen times the body's size in memory before it finds the
    second line (157 MB for a 13 MB body of 500 calls), which one `llmlog serve` taking a
    few such bodies at once could not bound."""
    # Searched, not split: a split would copy the whole rest of the body.
    found = _TEXT.search(body)
    if found is None or body[found.start()] != ord("{"):
        return False
    end = body.find(b"\n", found.start())
    if end < 0 or _TEXT.search(body, end) is None:
        return False
    try:
        return isinstance(orjson.loads(body[found.start() : end]), dict)
    except orjson.JSONDecodeError:
        return False


_TEXT = re.compile(rb"\S")


def _lines(body: bytes) -> Iterator[bytes]:
    """A body's lines one at a time: a split would hold a copy of the whole body beside it
    while its records are read."""
    start = 0
    while start < len(body):
        end = body.find(b"\n", start)
        if end < 0:
            end = len(body)
        yield body[start:end]
        start = end + 1


def _source(item: Any) -> str:
    """A decoded record's text (keys sorted), from which a record without an id gets one."""
    if not isinstance(item, dict):
        return ""
    try:
        return orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:
        if str(exc) == "Recursion limit reached":
            raise RecordError("nested too deeply (at most about 250 levels)") from None
        # What orjson does not write but the lenient parser read: a NaN is written, an
        # integer over 64 bits or a lone surrogate escape goes through `json`.
        try:
            return json.dumps(item, sort_keys=True, separators=(",", ":"))
        except (ValueError, TypeError, RecursionError) as inner:
            raise RecordError(f"cannot be read: {inner}") from None


@dataclass
class Batch:
    calls: list[tuple[int, Call]] = field(default_factory=list)  # (index, call), in order
    bad: list[BadRecord] = field(default_factory=list)
    too_large: int = 0  # how many of `bad` were refused for their size

    def add(self, index: int, parse: Callable[[], Call], size: int, max_record: int | None) -> None:
        if max_record is not None and size > max_record:
            self.bad.append(BadRecord(index, f"record too large: {size:,} bytes (at most {max_record:,})"))
            self.too_large += 1
            return
        try:
            self.calls.append((index, parse()))
        except RecordError as exc:
            self.bad.append(BadRecord(index, str(exc)))


def parse_spans(body: bytes, max_record: int | None = None) -> tuple[list[tuple[int, Span]], list[BadRecord]]:
    """A request body of spans (`Span.to_dict`): NDJSON, a span a line, as remote mode sends
    them; or one JSON object, or an array of them. The spans read, by their index, and each
    that could not be, with its index and reason."""
    spans: list[tuple[int, Span]] = []
    bad: list[BadRecord] = []
    whole: Any = _LINES
    if not _ndjson(body):
        with contextlib.suppress(orjson.JSONDecodeError):
            whole = orjson.loads(body)
    if whole is _LINES:
        items: list[Any] = [line for line in _lines(body) if line.strip()]
    else:
        items = whole if isinstance(whole, list) else [whole]
    for index, item in enumerate(items):
        if isinstance(item, bytes):
            if max_record is not None and len(item) > max_record:
                bad.append(
                    BadRecord(index, f"record too large: {len(item):,} bytes (at most {max_record:,})")
                )
                continue
            try:
                item = orjson.loads(item)
            except orjson.JSONDecodeError as exc:
                bad.append(BadRecord(index, f"not JSON: {exc}"))
                continue
        try:
            spans.append((index, Span.from_dict(item)))
        except RecordError as exc:
            bad.append(BadRecord(index, str(exc)))
    return spans, bad
