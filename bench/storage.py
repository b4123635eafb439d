"""Storage where answers are long: the workload's calls and conversations, but their text
realistic English and the model's answers 1.5–2.2 KB of it, on each engine: bytes per call
stored against the calls' JSONL (`llmlog export`), and what reading them costs.

The standard workload's text is drawn from 35 words (the fake provider's from 40), which any
compressor shrinks to a fraction no real text reaches. Here it is drawn from the prose of the
Python documentation that ships with the interpreter (`pydoc_data.topics`): offline, and the
same from the same seed. Its ~160 KB of prose recur across calls more than real answers would,
which flatters a compressor that reads many values at once (ClickHouse's columns), not one
that reads a value alone (SQLite's, PostgreSQL's)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import cache

import orjson

from bench.pages import bench_pages
from bench.timing import timed
from llmlog.core.filters import CallFilter
from llmlog.demo.fake_provider import FakeProvider, _digest
from llmlog.demo.workload import Step, Text, generate
from llmlog.store import Store, open_store

# A word many answers hold and many do not: the free-text filter and search look for it.
WORD = "exception"


@cache
def sentences() -> list[str]:
    """The documentation's prose paragraphs cut into sentences, in order. Quotes and
    backslashes are dropped: the workload writes some text into JSON by hand."""
    from pydoc_data.topics import topics

    out: list[str] = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            if para.startswith(" "):  # code, grammar and tables are indented
                continue
            flat = re.sub(r"\s+", " ", para.replace('"', "").replace("\\", "")).strip()
            letters = sum(c.isalpha() or c == " " for c in flat)
            if len(flat) < 60 or letters < 0.9 * len(flat):
                continue
            out += [s for s in re.split(r"(?<=[.:;?!]) (?=[A-Z])", flat) if len(s) > 20]
    return out


def passage(rng: random.Random, size: int) -> str:
    """About `size` characters of consecutive sentences from a random place, in paragraphs."""
    pool = sentences()
    i = rng.randrange(len(pool))
    parts: list[str] = []
    length = 0
    while length < size:
        s = pool[i % len(pool)]
        i += 1
        sep = "\n\n" if parts and rng.random() < 0.2 else " "
        parts.append(sep + s if parts else s)
        length += len(parts[-1])
    return "".join(parts)


class English(Text):
    """The workload's text as English: what users and tools say about as many words long as
    the standard workload's, the assistant's turns as long as the provider's answers."""

    def prose(self, rng: random.Random, n_words: int) -> str:
        return " ".join(passage(rng, n_words * 7).split()[:n_words])

    def answer(self, rng: random.Random) -> str:
        return passage(rng, rng.randint(1500, 2200))


class EnglishProvider(FakeProvider):
    """The fake provider answering in English of 1.5–2.2 KB (before its system prompt's
    steering), the same for the same request as its own answers are."""

    def _answer(self, key: str, scale: float, model: str = "") -> str:
        rng = random.Random(_digest(self.seed, "english", model, key))
        return passage(rng, round(rng.randint(1500, 2200) * scale))


def steps(n: int, seed: int) -> list[Step]:
    return generate(n, seed=seed, text=English())


def _pages(url: str) -> list[tuple[str, str]]:
    from urllib.parse import urlencode

    with open_store(url) as store:
        call = next(c for c in store.recent(CallFilter(), 200, brief=True) if c.feature)
    return [
        ("one call", f"/calls/{call.id}"),
        ("calls, filter on feature", "/?" + urlencode({"feature": call.feature})),
        ("calls, free text, no time filter", "/?" + urlencode({"q": WORD})),
    ]


def response_bytes(store: Store) -> float:
    """Mean bytes of a call's response, as JSON: what the answers weigh."""
    sizes = [len(orjson.dumps(c.response)) for c in store.iter_calls(CallFilter()) if c.response]
    return sum(sizes) / max(len(sizes), 1)


def bench_storage(
    kind: str, url: str, n: int, jsonl: int, stored: int, repeats: int, row: Callable[..., None]
) -> None:
    """The `n` long-answer calls stored at `url` (`stored` bytes): bytes per call against
    `jsonl` bytes of their JSONL, then one call's detail, the newest 100 of a feature, the
    free-text filter and a search, through the store (as the CLI reads) and as pages."""
    ratio = jsonl / max(stored, 1)
    row(
        f"long answers: stored bytes per call, {kind} vs JSONL",
        f"{stored / n:,.0f} vs {jsonl / n:,.0f} B (1/{ratio:.1f})",
        "≤ 1/8",
        ratio >= 8,
    )
    label = f"{n:,}"
    with open_store(url) as store:
        recent = store.recent(CallFilter(), 200, brief=True)
        feature = next(c.feature for c in recent if c.feature)
        rng = random.Random(1)
        ids = [c.id for c in recent]
        t = timed(lambda: store.get(rng.choice(ids)), repeats * 4)
        row(f"long answers, {kind}: one call's full detail, {label} calls", f"{t * 1000:.2f} ms")
        f = CallFilter(feature=feature)
        t = timed(lambda: store.recent(f, 100, brief=True), repeats)
        row(f"long answers, {kind}: recent 100, filter on feature, {label} calls", f"{t * 1000:.2f} ms")
        text = CallFilter(text=WORD)
        found = len(store.recent(text, 100, brief=True))
        t = timed(lambda: store.recent(text, 100, brief=True), repeats)
        row(
            f"long answers, {kind}: recent 100, free text ({found} found), {label} calls",
            f"{t * 1000:.2f} ms",
        )
        hits = len(store.search(WORD, CallFilter(), 20))
        t = timed(lambda: store.search(WORD, CallFilter(), 20), repeats)
        row(f"long answers, {kind}: search, a word ({hits} shown), {label} calls", f"{t * 1000:.2f} ms")
    bench_pages(f"long answers, {kind}", url, max(3, repeats // 5), row, label, _pages)
