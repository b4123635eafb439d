"""Reading the files `llmlog import` is given: the logs people really keep, not only our export.

A file is read as bytes and each record decoded on its own, so one line of invalid UTF-8,
broken JSON or nesting too deep for the parser is that line's error, reported with its file
and line, and every other record is still read. Formats:

- NDJSON (one record per line; what `llmlog export` writes) is streamed line by line, never
  held whole: it is recognised by its first non-blank line being a JSON object on its own.
- Anything else is read whole as a JSON document: one record (pretty-printed over many
  lines), an array of records, or several such values one after another (as `jq .` prints).

Records are loosened before they are validated, as real logs need (`loosen`): a string
`error` is `{"message": …}`, numbers written as strings are numbers, and fields llmlog does
not know are kept under `metadata.import_extra` instead of failing the line. The collector
(`llmlog.pipeline.jsonl.parse_batch`) stays strict: its callers are programs we can tell to fix.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from llmlog.core.record import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, Call, RecordError
from llmlog.pipeline.jsonl import MINIMAL_KEYS, parse_record

#: Where fields llmlog has no column for are kept, inside the call's metadata.
EXTRA_KEY = "import_extra"
#: What a directory given to `llmlog import` contributes: its own files with these endings.
SUFFIXES = (".jsonl", ".ndjson", ".json")
STDIN = "<stdin>"

_KNOWN = frozenset(COLUMNS) | MINIMAL_KEYS
_BOM = b"\xef\xbb\xbf"
# ASCII digits only: Python's int() and float() also take "1_000" and other scripts' digits,
# which no log means as a number.
_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_WHITESPACE = re.compile(r"[ \t\r\n]*")
# Bytes that are not UTF-8 decode (surrogateescape) to these; a JSON escape such as "\udc80"
# stays six ASCII characters in the text, so finding one in a record's text means a bad byte.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_DECODER = json.JSONDecoder()


@dataclass
class BadRecord:
    source: str  # the file's name as given, or <stdin>
    line: int
    reason: str


@dataclass
class Read:
    """A record read and validated, with where it came from."""

    source: str
    line: int
    call: Call


def sources(paths: Iterable[str]) -> list[str]:
    """The files to read, in name order: each path given, a directory's own .jsonl, .ndjson
    and .json files (not its subdirectories'). Raises ValueError when a directory has none
    or cannot be listed."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            try:
                found = [str(f) for f in p.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file()]
            except OSError as exc:
                raise ValueError(f"{path}: {exc.strerror}") from None
            if not found:
                raise ValueError(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
            files.extend(found)
        else:
            files.append(path)
    return sorted(dict.fromkeys(files))


def loosen(data: Any) -> tuple[Any, bool]:
    """A decoded record as a log writes it → the record's column names and types; True when
    it had fields llmlog does not know (kept under metadata.import_extra). Raises RecordError
    for a number written as text that is not a number."""
    if not isinstance(data, dict):
        return data, False
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _KNOWN:
            extra[name] = value
        elif name == "error" and isinstance(value, str):
            # Logs write a failed call's error as its message; an empty one means none.
            out[name] = {"message": value} if value.strip() else None
        elif isinstance(value, str) and (name in INT_COLUMNS or name in FLOAT_COLUMNS):
            out[name] = _number(name, value)
        else:
            out[name] = value
    if not extra:
        return out, False
    metadata = out.get("metadata")
    if metadata is None:
        metadata = {}
    if isinstance(metadata, dict):
        kept = metadata.get(EXTRA_KEY)
        out["metadata"] = {**metadata, EXTRA_KEY: {**(kept if isinstance(kept, dict) else {}), **extra}}
    # else: metadata that is not an object is the line's error, as it would be without extras
    return out, True


def _number(name: str, text: str) -> int | float | str:
    value = text.strip()
    if name in INT_COLUMNS and _INT_TEXT.fullmatch(value):
        try:
            return int(value)
        except ValueError:  # more digits than int() converts (4,300)
            raise RecordError(f"{name}: {value[:40]!r}… is too long for a number") from None
    if name in FLOAT_COLUMNS and _FLOAT_TEXT.fullmatch(value):
        number = float(value)
        if not math.isfinite(number):  # "1e999"
            raise RecordError(f"{name}: {text[:80]!r} is out of range")
        return number
    if name in INT_COLUMNS and _FLOAT_TEXT.fullmatch(value):
        return text  # a number but not a whole one: Call says what it expected
    raise RecordError(f"{name}: not a number: {text[:80]!r}")


class Reader:
    """Reads records from files, collecting what is wrong with the bad ones in `bad` and
    counting in `extra` the records whose unknown fields went to metadata.import_extra."""

    def __init__(self) -> None:
        self.bad: list[BadRecord] = []
        self.extra = 0

    def read(self, name: str, file: IO[bytes], advance: Callable[[int], None]) -> Iterator[Read]:
        """The good records of one file, in order. `advance` is told how many bytes were read."""
        lines = iter(file)
        head: list[bytes] = []
        number = 0
        for raw in lines:
            if not head:
                raw = raw.removeprefix(_BOM)
            head.append(raw)
            number += 1
            if raw.strip():
                break
        else:  # empty, or only blank lines
            advance(sum(len(r) for r in head))
            return
        if _is_object(head[-1]):
            yield from self._lines(name, enumerate(head, 1), advance)
            yield from self._lines(name, enumerate(lines, number + 1), advance)
            return
        content = b"".join(head) + b"".join(lines)
        yield from self._document(name, content, advance)

    # ------------------------------------------------------------------ NDJSON

    def _lines(
        self, name: str, lines: Iterable[tuple[int, bytes]], advance: Callable[[int], None]
    ) -> Iterator[Read]:
        for number, raw in lines:
            advance(len(raw))
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"invalid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
                self._bad(name, number, reason)
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                self._bad(name, number, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                self._bad(name, number, "invalid JSON: nested too deeply")
                continue
            read = self._record(name, number, data, text.strip())
            if read is not None:
                yield read

    # ------------------------------------------------------------------ JSON documents

    def _document(self, name: str, content: bytes, advance: Callable[[int], None]) -> Iterator[Read]:
        """One JSON value after another: objects are records, arrays hold records."""
        text = content.decode("utf-8", "surrogateescape")
        size, done = len(content), 0
        lines = _Lines(text)

        def progress(index: int) -> None:
            nonlocal done
            reached = size * index // max(len(text), 1)
            advance(reached - done)
            done = reached

        index = _skip(text, 0)
        first = True
        while index < len(text):
            in_array = text[index] == "["
            if in_array:
                index = _skip(text, index + 1)
                if text.startswith("]", index):
                    index = _skip(text, index + 1)
                    continue
            while True:
                data, end, error = _value(text, index)
                if error is not None and first and not in_array:
                    # Not a document at all: NDJSON whose first line is broken. Read it line
                    # by line, so the lines after are kept.
                    yield from self._lines(name, enumerate(content.split(b"\n"), 1), lambda n: None)
                    progress(len(text))
                    return
                first = False
                number = lines.number(index)
                if (
                    error is not None and end is None
                ):  # where this value ends is not known: neither is the next
                    where = lines.number(index if error.pos is None else error.pos)
                    self._bad(name, where, f"invalid JSON: {error.msg}; the rest of the file was not read")
                    progress(len(text))
                    return
                end = cast(int, end)  # `_value` leaves it unknown only with an error: that returned above
                if error is not None:
                    self._bad(name, number, f"invalid JSON: {error.msg}")
                elif _UNDECODABLE.search(text, index, end):
                    self._bad(name, number, "invalid UTF-8 in this record")
                else:
                    read = self._record(name, number, data, _canonical(data))
                    if read is not None:
                        yield read
                index = _skip(text, end)
                progress(index)
                if not in_array:
                    break
                if text.startswith(",", index):
                    index = _skip(text, index + 1)
                    continue
                if text.startswith("]", index):
                    index = _skip(text, index + 1)
                    break
                reason = "invalid JSON: expected ',' or ']'; the rest of the file was not read"
                self._bad(name, lines.number(index), reason)
                progress(len(text))
                return
        progress(len(text))

    # ------------------------------------------------------------------ records

    def _record(self, name: str, number: int, data: Any, source: str) -> Read | None:
        try:
            data, extra = loosen(data)
            call = parse_record(data, source)
        except RecordError as exc:
            self._bad(name, number, str(exc))
            return None
        except RecursionError:
            self._bad(name, number, "nested too deeply")
            return None
        self.extra += extra
        return Read(name, number, call)

    def _bad(self, name: str, number: int, reason: str) -> None:
        self.bad.append(BadRecord(name, number, reason))


@dataclass
class _Lines:
    """Line numbers of positions in a text read forward, counted as the reading goes."""

    text: str
    index: int = 0
    line: int = 1

    def number(self, index: int) -> int:
        if index < self.index:  # not expected; counted from the start
            self.index, self.line = 0, 1
        self.line += self.text.count("\n", self.index, index)
        self.index = index
        return self.line


@dataclass
class _Error:
    msg: str
    pos: int | None = None


def _value(text: str, index: int) -> tuple[Any, int | None, _Error | None]:
    """The JSON value at `index`: (value, where it ends, None), or what is wrong with it and,
    when it is only too deep, where it ends all the same (so the records after are read)."""
    try:
        data, end = _DECODER.raw_decode(text, index)
    except json.JSONDecodeError as exc:
        return None, None, _Error(exc.msg, exc.pos)
    except RecursionError:
        return None, _end_of_value(text, index), _Error("nested too deeply")
    return data, end, None


def _end_of_value(text: str, index: int) -> int | None:
    """Where the array or object at `index` ends, by counting brackets outside strings; None
    if it does not (the text is broken, not only deep)."""
    depth, in_string, escaped = 0, False, False
    for i in range(index, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif depth == 0:
            return None  # not an array or object
    return None


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _is_object(line: bytes) -> bool:
    """A line that is a JSON object on its own: the file is NDJSON."""
    text = line.strip()
    if not text.startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        # orjson refuses what the standard library reads (NaN, integers over 64 bits) and
        # nesting deeper than 1024: such a line is a bad or odd record, not a document.
        try:
            return isinstance(json.loads(text), dict)
        except (ValueError, RecursionError):
            return False


def _canonical(data: Any) -> str:
    """The text a record without an id is named by: its keys sorted, so the same record
    gives the same id however the file laid it out (the collector names records so too)."""
    if isinstance(data, dict):
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
        except (orjson.JSONEncodeError, TypeError):
            return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return ""
