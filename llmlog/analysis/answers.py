"""What a call answered, as text to read and compare: its response's words, its tool calls as
`name({input})` lines, the differences between two answers (the replay page's side by side)
and how alike two answers read (an experiment's `similarity`).

Below the web pages, so that the comparison of an experiment (`llmlog.analysis.experiments`)
measures the answers exactly as the pages show them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from llmlog.core.record import Call
from llmlog.providers.conversation import response_turns

# Past this many words a side, the text is compared line by line: SequenceMatcher without its
# "junk" heuristic (which would ignore common words) grows quadratically on long texts.
MAX_WORDS = 12_000
_WORDS = re.compile(r"\S+\s*|\s+")


@dataclass
class Diff:
    """Two texts as runs of (class, text): class "" is common to both, "del" only in the
    left (logged), "ins" only in the right (replay). Text is plain: the template escapes it."""

    left: list[tuple[str, str]] = field(default_factory=list)
    right: list[tuple[str, str]] = field(default_factory=list)
    same: bool = True


def _add(runs: list[tuple[str, str]], kind: str, text: str) -> None:
    if not text:
        return
    if runs and runs[-1][0] == kind:
        runs[-1] = (kind, runs[-1][1] + text)
    else:
        runs.append((kind, text))


def _tokens(a: str, b: str, lines: bool) -> tuple[list[str], list[str]]:
    """The units two texts are compared in: words (with the space after each), or lines
    when asked or when either side is past MAX_WORDS words."""
    ta, tb = ([], []) if lines else (_WORDS.findall(a), _WORDS.findall(b))
    if lines or len(ta) > MAX_WORDS or len(tb) > MAX_WORDS:
        ta, tb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    return ta, tb


def diff(a: str, b: str, *, lines: bool = False) -> Diff:
    """Word-level (or line-level) differences between the logged text `a` and the new `b`."""
    ta, tb = _tokens(a, b, lines)
    result = Diff(same=a == b)
    for op, i1, i2, j1, j2 in SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        left, right = "".join(ta[i1:i2]), "".join(tb[j1:j2])
        _add(result.left, "" if op == "equal" else "del", left)
        _add(result.right, "" if op == "equal" else "ins", right)
    return result


SIMILARITY_WORDS = 1_000
_SENTENCES = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)\s*")


def similarity(a: str, b: str) -> float:
    """How alike two texts read, 0 (nothing in common) to 1 (the same): the share of their
    words that match in order (SequenceMatcher's ratio over the units `diff` uses, so a
    score and the side by side it summarises agree). Two empty texts are the same."""
    if a == b:
        return 1.0
    ta, tb = _tokens(a, b, lines=False)
    if len(ta) > SIMILARITY_WORDS or len(tb) > SIMILARITY_WORDS:
        # A score, not a picture: past a few pages, sentence by sentence. Word by word grows
        # with the square of the length (seconds a pair at 10,000 words), and an experiment's
        # page scores every pair it shows.
        ta, tb = _SENTENCES.findall(a), _SENTENCES.findall(b)
    return SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def response_text(call: Call) -> str:
    """The text of a call's response (every text part, in order), without tool calls."""
    return "\n\n".join(p.text for turn in response_turns(call) for p in turn.parts if p.kind == "text")


def tool_calls_text(call: Call) -> str:
    """A call's tool calls as `name({input})` lines. Ids are left out: every call has new ones."""
    out = []
    for tc in call.tool_calls or []:
        tc = tc if isinstance(tc, dict) else {"name": None, "input": tc}
        args = json.dumps(tc.get("input"), ensure_ascii=False, indent=2, sort_keys=True, default=str)
        out.append(f"{tc.get('name')}({args})\n")
    return "".join(out)


def answer_text(call: Call) -> str:
    """What a call answered, as one text: its response's words, then its tool calls."""
    return "\n\n".join(t for t in (response_text(call), tool_calls_text(call)) if t)
