"""What a value really costs in memory: the bytes of its Python objects, which is several
times its JSON (a dict of two short strings is a few hundred bytes, an empty list 56), and
how the caches of shared content measure what they hold (`llmlog.core.config.cache_bytes`
says how much each may).

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


# Every byte but the four that mark strings, containers and items: what `json_footprint`
# deletes (one pass in C), so that it counts the marks in the few bytes left.
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"{[,')))


def json_footprint(text: bytes | str) -> int:
    """At least what the value decoded from JSON `text` takes (`footprint`): a text character
    is one byte when the whole is ASCII, else up to four (one emoji makes its string's every
    character four)."""
    # One pass over the text, not one a mark: the caches measure every new piece of content
    # (the decoder its bytes, the check and the stores their JSON), most of a call's text.
    # A character outside ASCII is never one of these bytes in UTF-8, so the counts are the
    # text's own.
    size = len(text) * (1 if text.isascii() else 4)
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    marks = text.translate(None, _NOT_MARKS)
    quotes, commas = marks.count(b'"'), marks.count(b",")
    containers = len(marks) - quotes - commas
    return size + quotes // 2 * _STRING + containers * _CONTAINER + (commas + 1) * _ITEM
