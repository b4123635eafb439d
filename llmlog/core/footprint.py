"""What a value really costs in memory: the bytes of its Python objects, which is several
times its JSON (a dict of two short strings is a few hundred bytes, an empty list 56), and
how the caches of shared content are bounded by it.

`footprint` walks the objects (exact, and slow: a few microseconds a message);
`json_footprint` bounds it from the JSON a cache has at hand anyway (the bytes it decoded,
the text it stored or checked), counting a few characters in C: what the caches use."""

from __future__ import annotations

from sys import getsizeof
from typing import Any


def footprint(value: Any) -> int:
    """The bytes of `value`'s objects: itself, and the keys, values and items of the dicts,
    lists and tuples it holds, each counted every time it is reached (never less than what
    it holds alone). For values decoded from JSON, which never hold themselves."""
    total = 0
    stack = [value]
    pop, push, size = stack.pop, stack.extend, getsizeof
    while stack:
        v = pop()
        total += size(v)
        t = type(v)
        if t is dict:
            push(v.keys())
            push(v.values())
        elif t is list or t is tuple:
            push(v)
    return total


# The most an object decoded from JSON takes beyond its characters, by what marks it in the
# JSON (CPython 3.11+, 64-bit): a string (two quotes) up to 80 bytes (76 when it is not
# ASCII); a dict or list (a brace or bracket) 184 up to its fifth item; each further item
# (a comma) up to 60 more: its slot and a number (an int past 2**60 is 40 bytes), or its
# share of a dict's table (under 60 bytes a key), beside its key (a string).
_STRING, _CONTAINER, _ITEM = 80, 184, 60


def json_footprint(text: bytes | str) -> int:
    """At least what the value decoded from JSON `text` takes (`footprint`): a text character
    is one byte when the whole is ASCII, else up to four (one emoji makes its string's every
    character four)."""
    if isinstance(text, str):
        marks = text.count('"') // 2 * _STRING
        marks += (text.count("{") + text.count("[")) * _CONTAINER
        marks += (text.count(",") + 1) * _ITEM
    else:
        marks = text.count(b'"') // 2 * _STRING
        marks += (text.count(b"{") + text.count(b"[")) * _CONTAINER
        marks += (text.count(b",") + 1) * _ITEM
    return len(text) * (1 if text.isascii() else 4) + marks


# How `LLMLOG_CACHE_MB` (`config.cache_max_bytes`) is shared out, per cache; a collector
# (`llmlog serve`) has one of each, and two of those marked so (its OTLP intake's and its
# proxy's writer's), which together make the whole. What one holds another may hold too (the
# same message, decoded once, is named and checked by identity): counted by each, never more
# than the whole is held.
CACHE_SHARES = {
    "decoded": 6 / 32,  # JSON parts decoded once (`capture.parse.Decoder`); two
    "messages": 6 / 32,  # OpenInference messages built once (`capture.genai`)
    "tools": 1 / 32,  # tool lists built once (`capture.genai`)
    "texts": 1 / 32,  # system prompts (`capture.genai`)
    "shaped": 2 / 32,  # messages in OpenAI's shape (`capture.shapes`)
    "checked": 2 / 32,  # messages and tools known to serialize (`intake`)
    "named": 3 / 32,  # content ids by the identity of values (`store.content`); two
    "sealed": 2 / 32,  # what regulated mode sealed, by the identity of values (`encryption`)
}


def cache_bytes(name: str) -> int:
    """The bytes (as `json_footprint` counts them) the cache `name` of `CACHE_SHARES` may hold."""
    from llmlog.core.config import cache_max_bytes  # config imports what reads its settings

    return int(cache_max_bytes() * CACHE_SHARES[name])
