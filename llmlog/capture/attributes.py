"""OTLP attribute values as data: JSON held as text, whole numbers, the first of several
names a value goes by, and the flattened lists some conventions send (OpenInference's
`llm.input_messages.0.message.role`, the deprecated GenAI `gen_ai.prompt.0.content`) back
as the lists they were; and `Shared`, which gives the same content the same object across
calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from sys import getsizeof
from typing import Any

import orjson

from llmlog.core.footprint import json_footprint


def json_value(value: Any) -> Any:
    """Attribute values that hold JSON as text (messages, tool definitions) as data."""
    if isinstance(value, str) and value[:1] in "[{":
        try:  # orjson first (fast); what it refuses (NaN, lone surrogates, huge integers) json may read
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # too deep to read is text too
            return value
    return value


def int_value(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    return None


def first_of(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        if attrs.get(name) is not None:
            return attrs[name]
    return None


def str_value(value: Any) -> str | None:
    return None if value is None else str(value)


# The flattened lists a span may carry, by the prefix before their index.
FLATTENED = (
    "llm.input_messages.",
    "llm.output_messages.",
    "llm.tools.",
    "gen_ai.prompt.",
    "gen_ai.completion.",
)


Items = dict[int, list[tuple[str, Any]]]  # a flattened list: each item's (path, value) pairs by index


def flattened(attrs: dict[str, Any]) -> tuple[dict[str, Items], set[tuple[str, int]]]:
    """The flattened lists (`FLATTENED`) among `attrs`, in one pass (a span has a hundred
    attributes, and each list is asked for): by prefix, each item's (path below the index,
    value) pairs by index, in the order the span has them; and which items hold a value
    that is not text."""
    lists: dict[str, Items] = {}
    mixed: set[tuple[str, int]] = set()
    known = _KEYS
    for key, value in attrs.items():
        where = known.get(key)
        long = False
        if where is None:
            where = _key_place(key)
            long = len(key) > LONG_KEY
        if where:
            prefix, i, rest = where
            items = lists.get(prefix)
            if items is None:
                items = lists[prefix] = {}
            pairs = items.get(i)
            if pairs is None:
                items[i] = [(rest, value)]
            else:
                pairs.append((rest, value))
            if type(value) is not str or long:  # a long path is not kept as what content is shared by
                mixed.add((prefix, i))
    return lists, mixed


def _key_place(key: str) -> tuple[str, int, str] | tuple[()]:
    """Where an attribute's key puts its value in a flattened list: (prefix, index, path
    below the index); () for any other key. Remembered for the keys spans keep sending."""
    where: tuple[str, int, str] | tuple[()] = ()
    if key.startswith(FLATTENED):
        end = key.index(".", key.index(".") + 1) + 1
        index, _, rest = key[end:].partition(".")
        if index.isdigit() and rest:
            where = (key[:end], int(index), rest)
    if len(_KEYS) < 50_000 and len(key) <= LONG_KEY:  # the keys instrumentations send (a hundred
        _KEYS[key] = where  # indexes of a few shapes), not what a client makes up
    return where


_KEYS: dict[str, tuple[str, int, str] | tuple[()]] = {}
# Keys longer than this are not remembered, nor paths shared by: the memory kept for what spans
# send stays bounded in bytes, not only in entries, whatever keys a client sends.
LONG_KEY = 200


def nest(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One flattened item (`message.role`, `message.contents.0.message_content.text` …) as
    the dict it was."""
    node_top: dict[str, Any] = {}
    for rest, value in pairs:
        split = _PATHS.get(rest)
        if split is None:
            *path, last = rest.split(".")
            split = (tuple(path), last)
            if len(_PATHS) < 10_000 and len(rest) <= LONG_KEY:  # the few shapes instrumentations use
                _PATHS[rest] = split
        node = node_top
        for part in split[0]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif type(child) is not dict:  # `…message` sent as a value and as a prefix: the value
                break
            node = child
        else:
            if type(node.get(split[1])) is not dict:
                node[split[1]] = value
    return node_top


def obj(value: Any) -> dict[str, Any]:
    """A part of a flattened item that should be an object: {} when a span sent a value there."""
    return value if isinstance(value, dict) else {}


def listed(items: Items) -> list[dict[str, Any]]:
    """A flattened list (`gen_ai.prompt.0.role`, …) back as a list of dicts."""
    return [nest(items[i]) for i in sorted(items)]


# A flattened key's path below its index (`message.contents.0.message_content.text`), split.
_PATHS: dict[str, tuple[tuple[str, ...], str]] = {}


class Shared:
    """What was made of content a span sent, kept by what it was made from, so that the
    calls of a conversation (each re-sends every earlier message, the system prompt and the
    tools) are given the same objects for the same content: made once, and recognized by
    identity further on (`llmlog.store.content`), as the SDK path's decoder hands them out.
    Nothing downstream changes such a value in place. Bounded in entries and in the memory
    its keys and values take (`json_footprint`: several times their JSON): emptied when
    full; a value that is not JSON is not kept."""

    def __init__(self, limit: int, max_bytes: int, key_size: Callable[[Any], int] | None = None) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        # What a key takes beyond what its value holds too; by default, all of it.
        self.key_size = key_size
        self.made: dict[Any, Any] = {}
        self.bytes = 0

    def get(self, key: Any, make: Any, *args: Any) -> Any:
        hit = self.made.get(key)
        if hit is None:
            hit = make(*args)
            try:
                size = _size(hit)
                if key is not hit:
                    size += self.key_size(key) if self.key_size is not None else _size(key)
            except (TypeError, orjson.JSONEncodeError):
                return hit
            if len(self.made) >= self.limit or self.bytes + size > self.max_bytes:
                self.made.clear()
                self.bytes = 0
            if size <= self.max_bytes:
                self.made[key] = hit
                self.bytes += size
        return hit


def _size(value: Any) -> int:
    """What `value` takes in memory, at most (`json_footprint`); raises for what is not JSON."""
    return getsizeof(value) if type(value) is str else json_footprint(orjson.dumps(value))
