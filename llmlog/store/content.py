"""Content stored once: how the stores name a system prompt, tool list, params or message.

Every store keeps each distinct piece of content in one `content` row, keyed by a hash of
its text, and a call points at its pieces by id. Finding those ids is most of a store's
Python work per call, so it is done a batch at a time: each piece of a batch is named by its
content id when that is already known, else by its hash; the store then looks up (or
inserts) every unknown hash of the batch at once, and names the rest by the ids it got.

A piece known by identity needs neither serializing nor hashing: the writer's decoder hands
every call that re-sends a system prompt, tool list or message the same object.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from sys import getsizeof
from typing import Any

from llmlog.core.config import cache_bytes
from llmlog.core.footprint import json_footprint
from llmlog.core.record import json_text

Key = bytes | int  # a content id, or the hash of content whose id is not known yet


def digest(text: str) -> bytes:
    """The content key: the first 16 bytes of SHA-256 of the text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


class ContentIds:
    """What a store knows of its `content` ids: by hash, and by the identity of values."""

    LIMIT = 50_000  # entries per cache; old ones go first

    def __init__(self, max_bytes: int | None = None) -> None:
        # hash → id; content rows are immutable, so a cached id stays right.
        self._ids: OrderedDict[bytes, int] = OrderedDict()
        # serializer → id(value) → (value, content id, what the value takes). The entry
        # holds the value, so its id() cannot be reused by another object while cached; and
        # so it may hold what every other cache has let go: bounded by what the values take
        # in memory (`json_footprint`), not only in entries. One string may be stored as plain
        # text (a system prompt) or as JSON: each serializer has its own.
        self._refs: dict[Callable[[Any], str], OrderedDict[int, tuple[Any, int, int]]] = {}
        self.max_bytes = cache_bytes("named") if max_bytes is None else max_bytes
        self.bytes = 0  # what the values of `_refs` take

    def batch(self, by_identity: bool = True) -> ContentBatch:
        return ContentBatch(self, by_identity)


class ContentBatch:
    """The content of one batch of calls. `key` each piece, `resolve` the unknown hashes
    with the store, `id` each key; `commit` once the transaction holding new rows has."""

    def __init__(self, known: ContentIds, by_identity: bool) -> None:
        self._known = known
        self._by_identity = by_identity
        self.bodies: dict[bytes, str] = {}  # hash → text, for every piece named by hash
        self.found: dict[bytes, int] = {}  # hash → id, once resolved
        # serializer → id(value) → (value, hash, what the value takes), for the values named by hash
        self._seen: dict[Callable[[Any], str], dict[int, tuple[Any, bytes, int]]] = {}

    def key(self, value: Any, serialize: Callable[[Any], str] = json_text) -> Key:
        if self._by_identity:  # as `keys` does first, for one value
            refs = self._known._refs.get(serialize)
            hit = refs.get(id(value)) if refs is not None else None
            if hit is not None and hit[0] is value:
                return hit[1]
        return self.keys([value], serialize)[0]

    def keys(self, values: list[Any], serialize: Callable[[Any], str] = json_text) -> list[Key]:
        """The keys of many values of one kind (a call's messages), in order."""
        refs: dict[int, tuple[Any, int, int]] = {}
        if self._by_identity:
            refs = self._known._refs.get(serialize) or self._known._refs.setdefault(serialize, OrderedDict())
        seen = self._seen.get(serialize)
        if seen is None:
            seen = self._seen[serialize] = {}
        get = refs.get
        out: list[Key] = []
        for value in values:
            hit = get(id(value))
            if hit is not None and hit[0] is value:
                out.append(hit[1])
                continue
            # The calls of the batch hold the value, so its id() is stable until commit.
            known = seen.get(id(value))
            if known is not None:
                out.append(known[1])
                continue
            text = serialize(value)
            h = digest(text)
            self.bodies.setdefault(h, text)
            seen[id(value)] = (value, h, getsizeof(value) if type(value) is str else json_footprint(text))
            out.append(h)
        return out

    def unknown(self) -> list[bytes]:
        """The hashes whose ids are not cached, sorted (one lock order for every writer)."""
        ids = self._known._ids
        missing = []
        for h in self.bodies:
            cached = ids.get(h)
            if cached is None:
                missing.append(h)
            else:
                self.found[h] = cached
        return sorted(missing)

    def id(self, key: Key) -> int:
        return key if isinstance(key, int) else self.found[key]

    def ids(self, keys: list[Key]) -> list[int]:
        found = self.found
        return [key if isinstance(key, int) else found[key] for key in keys]

    def commit(self) -> None:
        """Remember the ids: only once the rows holding them are certain to exist."""
        ids, limit = self._known._ids, ContentIds.LIMIT
        for h in self.bodies:
            ids[h] = self.found[h]
            ids.move_to_end(h)
        while len(ids) > limit:
            ids.popitem(last=False)
        if self._by_identity:
            known = self._known
            room = known.max_bytes
            for serialize, seen in self._seen.items():
                cache = known._refs[serialize]
                for ref, (value, h, held) in seen.items():
                    size = held + _ENTRY
                    if size > room:
                        continue
                    # Not cached yet: a value cached by this id is alive (held), so it is this one,
                    # and `keys` found it there rather than naming it by hash.
                    cache[ref] = (value, self.found[h], size)
                    known.bytes += size
                while len(cache) > limit:
                    known.bytes -= cache.popitem(last=False)[1][2]
                while known.bytes > room:  # the oldest go, of this serializer's first
                    oldest = cache or next(c for c in known._refs.values() if c)
                    known.bytes -= oldest.popitem(last=False)[1][2]


# What an entry of `ContentIds._refs` takes beyond its value: the table's slot, its key, the
# tuple and the id's integer.
_ENTRY = 200
