"""Full-text search: what a call is found by, and a search box's words as each engine's query.

A call is indexed by what it *newly* said and heard: its last message unless it is the
model's own (the user's words, or the tool results sent back), the response (text and tool
calls) and its error. Earlier messages of a conversation were indexed with the call that
sent them, and the system prompt is the app's template (found by its version): indexing
either again with every turn would grow the index with the square of a conversation's
length, for no new words. Sealed text (regulated mode) is never indexed: an index of its words would undo the
sealing.

The engines: SQLite's FTS5 (`call_text`, porter stemming) and PostgreSQL's `tsvector`
(`call_data.search`, the `english` configuration): both stem, both rank (bm25;
`ts_rank_cd`), among the newest `RANKED` matches. The search box reads the same way on
both, as PostgreSQL's `websearch_to_tsquery` does: words must all occur, "a phrase" in
order, -word must not occur, OR between two terms takes either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmlog.core.record import Call
from llmlog.core.sealed import PREFIX as SEALED
from llmlog.core.sealed import is_sealed
from llmlog.providers.conversation import by_model, message_turn, response_messages
from llmlog.store import compression

# What one call contributes at most to PostgreSQL's index, which refuses a tsvector over
# 1 MB: a pasted 1 MB document is found there by its first 100 KB.
MAX_TEXT = 100_000
# PostgreSQL's text search configuration, in the index and in every query.
PG_CONFIG = "english"
# Matches are ranked among the newest this many (as facets count among the latest calls):
# a word most calls hold would otherwise have every one of them scored, for the first page.
RANKED = 10_000


def _parts_text(message: Any) -> list[str]:
    if message is None or is_sealed(message):
        return []
    out = []
    for part in message_turn(message).parts:
        if is_sealed(part.text):
            continue
        if part.kind in ("text", "tool_result"):
            out.append(part.text)
        elif part.kind == "tool_call":
            out.append(f"{part.name} {part.text}")
    return out


def document(call: Call) -> str:
    """The text a call is found by (see the module's docstring); "" when it has none.
    SQLite's index reads a stored row's own way (`sqlite_document`)."""
    messages = call.messages or []
    last = messages[-1] if messages and not by_model(messages[-1]) else None
    pieces = _parts_text(last)
    if not is_sealed(call.response):
        pieces += [t for m in response_messages(call) for t in _parts_text(m)]
    if isinstance(call.error, dict):
        pieces += [str(v) for k in ("type", "message") if (v := call.error.get(k)) and not is_sealed(v)]
    return "\n".join(p for p in pieces if p)


# Keys whose string values are identifiers, kinds, settings or encoded data: not words.
NOT_WORDS = frozenset(
    {
        "type", "role", "id", "tool_use_id", "call_id", "object", "status", "model", "stop_reason",
        "finish_reason", "signature", "encrypted_content", "data", "url", "media_type", "service_tier",
        "system_fingerprint", "truncation", "tool_choice", "effort",
    }
)  # fmt: skip


# How deep `_leaf_words` recurses; deeper, it walks with a stack of its own (`_deep_words`),
# so that the words are the same whatever the stack it is called from: the writer's thread
# and a trigger's deletion call it from stacks of different depths, and a contentless index
# must be given back exactly the words it took. (JSON the writer stores can be deeper than
# orjson writes, about 250 levels: it falls back to the standard library.)
DEEPEST = 200


def _leaf_words(value: Any, out: list[str], depth: int = DEEPEST) -> None:
    """The string leaves of a JSON value, in document order, but those under `NOT_WORDS`
    keys and sealed ones. Recursive (the fastest walk in Python) to `DEEPEST` levels."""
    kind = type(value)
    if kind is dict:
        for key, v in value.items():
            if type(v) is str:
                if key not in NOT_WORDS and not v.startswith(SEALED):
                    out.append(v)
            elif v is not None:
                if depth > 1:
                    _leaf_words(v, out, depth - 1)
                else:
                    _deep_words(v, out)
    elif kind is list:
        for v in value:
            if type(v) is str:
                if not v.startswith(SEALED):
                    out.append(v)
            elif v is not None:
                if depth > 1:
                    _leaf_words(v, out, depth - 1)
                else:
                    _deep_words(v, out)
    elif kind is str and not value.startswith(SEALED):
        out.append(value)


def _deep_words(value: Any, out: list[str]) -> None:
    """`_leaf_words` of a value however deep, the same words in the same order, on a stack
    of its own (a dict's items or a list's, each with whether it is a dict's)."""
    kind = type(value)
    if kind is not dict and kind is not list:
        _leaf_words(value, out)
        return
    stack: list[tuple[bool, Iterator[Any]]] = [
        (True, iter(value.items())) if kind is dict else (False, iter(value))
    ]
    while stack:
        in_dict, items = stack[-1]
        for item in items:
            if in_dict:
                key, v = item
                if type(v) is str:
                    if key not in NOT_WORDS and not v.startswith(SEALED):
                        out.append(v)
                    continue
            else:
                v = item
                if type(v) is str:
                    if not v.startswith(SEALED):
                        out.append(v)
                    continue
            if type(v) is dict:
                stack.append((True, iter(v.items())))
                break
            if type(v) is list:
                stack.append((False, iter(v)))
                break
        else:
            stack.pop()


def _stored_json(value: str | bytes | None) -> Any:
    text = compression.unpack(value)
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # not JSON (SQL by hand): its words are the text's
        return text


def sqlite_document(last_message: str | bytes | None, response: str | bytes | None, error: str | None) -> str:
    """The words SQLite's index (`call_text`) holds for a stored call, from its row as
    stored: its last message (unless it is the model's), its response and its error. The
    string leaves of each, but identifiers and kinds (`NOT_WORDS`) and sealed text. SQL's
    `llmlog_document`, which the triggers that index and unindex a row both call, so that
    they give the index back exactly the words they put in it."""
    out: list[str] = []
    try:
        last = _stored_json(last_message)
        if not by_model(last):
            _leaf_words(last, out)
        _leaf_words(_stored_json(response), out)
        failed = _stored_json(error)
        if isinstance(failed, dict):
            _leaf_words([failed.get("type"), failed.get("message")], out)
    except Exception:  # whatever the row holds, the same row gives the same words: none
        return ""
    return "\n".join(out)


def pg_document(call: Call) -> str | None:
    """`document` for PostgreSQL's parser, which reads `<tag>` as markup and skips what a
    `<script>` or `<style>` holds: logged prompts are full of HTML whose words must be found
    like any other. Without a `<`, nothing is markup. None when there is nothing to index."""
    return document(call)[:MAX_TEXT].replace("<", " ") or None


# ---------------------------------------------------------------- the search box


@dataclass
class Term:
    words: list[str]  # one word, or a phrase's words in order
    negated: bool = False


@dataclass
class Query:
    """A search box's text, parsed: groups that must all match, each any one of its terms
    (OR); and terms that must not match."""

    groups: list[list[Term]] = field(default_factory=list)
    excluded: list[Term] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to find: no words, or only words to leave out."""
        return not self.groups


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w+")


def parse(text: str) -> Query:
    """Words, "phrases", -excluded and OR, as websearch_to_tsquery reads them. Punctuation
    separates words (as both engines' tokenizers do), so nothing typed is an operator of
    the engine's own syntax."""
    q = Query()
    join_next = False
    for m in _TOKEN.finditer(text):
        if m.group(3) is not None:
            raw = m.group(3)
            if raw == "OR":
                join_next = bool(q.groups)
                continue
            negated = raw.startswith("-") and len(raw) > 1
            words = _WORD.findall(raw[1:] if negated else raw)
        else:
            negated, words = bool(m.group(1)), _WORD.findall(m.group(2))
        if not words:
            continue
        term = Term([w.lower() for w in words], negated)
        if negated:
            q.excluded.append(term)
        elif join_next:
            q.groups[-1].append(term)
        else:
            q.groups.append([term])
        join_next = False
    return q


def fts5(q: Query) -> str:
    """The query in FTS5's syntax: every word quoted, so none is read as an operator."""

    def phrase(t: Term) -> str:
        return '"' + " ".join(w.replace('"', '""') for w in t.words) + '"'

    groups = [phrase(g[0]) if len(g) == 1 else "(" + " OR ".join(map(phrase, g)) + ")" for g in q.groups]
    return " AND ".join(groups) + "".join(f" NOT {phrase(t)}" for t in q.excluded)


def tsquery_text(q: Query) -> str:
    """The query again as websearch_to_tsquery's input, from the parsed terms (so both
    engines search for exactly the same thing)."""

    def term(t: Term) -> str:
        words = '"' + " ".join(t.words) + '"' if len(t.words) > 1 else t.words[0]
        return ("-" if t.negated else "") + words

    groups = [" OR ".join(map(term, g)) for g in q.groups]
    return " ".join([*groups, *map(term, q.excluded)])


# ---------------------------------------------------------------- results


@dataclass
class Hit:
    """A call found, its score (higher is better) and where its text matched: pieces of
    text, each with whether it is a match, for the renderer to escape and mark."""

    call: Call
    score: float
    snippet: list[tuple[str, bool]]


def snippet(text: str, q: Query, width: int = 200) -> list[tuple[str, bool]]:
    """A window of `text` around the first match of the query's words (a longer word that
    starts like a searched one counts: the engines stem, "refunds" finds "refund"), matches
    marked.
    Without a visible match (a stemmed form this does not see), the text's start."""
    words = sorted({w for g in q.groups for t in g for w in t.words}, key=len, reverse=True)
    text = " ".join(text.split())
    if not words:
        return [(text[:width], False)]
    forms = [re.escape(w) + r"\b" if len(w) < 5 else re.escape(w[:-2]) + r"\w*" for w in words]
    found = re.compile(r"\b(?:" + "|".join(forms) + ")", re.I)
    first = found.search(text)
    start = 0 if first is None else max(0, first.start() - width // 3)
    window = text[start : start + width]
    out: list[tuple[str, bool]] = [("…", False)] if start else []
    at = 0
    for m in found.finditer(window):
        if m.start() > at:
            out.append((window[at : m.start()], False))
        out.append((m.group(0), True))
        at = m.end()
    out.append((window[at:], False))
    if start + width < len(text):
        out.append(("…", False))
    return [piece for piece in out if piece[0]]
