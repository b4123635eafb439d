"""Whether a model declined: rules over a response's stop reason and opening words.

A refusal is what the provider says it is (a stop reason of `content_filter`, which is what
Anthropic's `refusal` and OpenAI's `content_filter` are stored as, or OpenAI's
`message.refusal`), or a response that *opens* by declining: an apology or "I" followed by
an inability and a verb of helping ("I'm sorry, but I can't help with that", "I cannot
assist with this request", "I must decline"). Only the opening counts, so a long answer
that mentions what it cannot do later is not one, and neither is "I can't find any bugs in
this diff" or "Sorry for the wait, here is the summary": inability to *find* or *reproduce*
is an answer, not a refusal. The rules are checked against a labelled set of responses in
the tests (tests/data/refusals.jsonl); extend both together.
"""

from __future__ import annotations

import re
from typing import Any

from llmlog.core.record import Call
from llmlog.core.sealed import is_sealed
from llmlog.providers import APIS
from llmlog.providers.conversation import response_messages

# The opening looked at: enough for "I'm sorry, but as an AI language model, I can't…".
OPENING = 240

_CANNOT = (
    r"(?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to|'m not able to"
    r"|am not going to|'m not going to|must decline to|have to decline to|need to decline|must refuse to"
    r"|do not feel comfortable|don't feel comfortable|am not comfortable|'m not comfortable)"
)
_HELP = (
    r"(?:help|assist|comply|provide|fulfil|fulfill|do that|do this|support|answer|create|generate|write"
    r"|engage|share|give|produce|participate|continue|offer|process|complete|make)"
)
_RULES = [
    # "I can't help with that." / "I'm unable to provide …" / "As an AI, I cannot assist …"
    re.compile(rf"^(?:as an ai[^.]{{0,60}}?,\s*)?i\s*{_CANNOT}\s+(?:\w+\s+)?{_HELP}(?:ing)?\b"),
    # "I'm sorry, but I can't …" / "Sorry — I won't be able to write that."
    re.compile(
        r"^(?:i'm sorry|i am sorry|sorry|i apologi[sz]e|my apologies|unfortunately)\b[^.!?]{0,80}?"
        rf"\bi\s*(?:{_CANNOT}|won't be able to|will not be able to|am not permitted to|'m not allowed to)"
        rf"\s+(?:\w+\s+)?{_HELP}\b"
    ),
    # "I must decline." / "I have to refuse this request."
    re.compile(r"^i\s*(?:must|have to|need to|will have to)\s+(?:respectfully\s+)?(?:decline|refuse)\b"),
]


def opening(text: str) -> str:
    """The start of a response, lower-cased, curly apostrophes made straight, spaces single."""
    text = text.strip().lower().replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text[: OPENING * 2].split())[:OPENING]


def refused(stop_reason: str | None, text: str | None, refusal: str | None = None) -> bool:
    """The rules: the stop reason, OpenAI's refusal field, or declining opening words."""
    if stop_reason in ("content_filter", "refusal") or (refusal and refusal.strip()):
        return True
    if not text:
        return False
    start = opening(text)
    return any(rule.search(start) for rule in _RULES)


def response_parts(response: Any) -> tuple[str, str | None]:
    """A stored response's text (its first text content, where a refusal would be) and the
    refusal it says it is (OpenAI's `refusal`), each read by the API whose shape it is
    (`API.words`, `API.refusal`). Sealed responses (regulated mode) give nothing: their words
    cannot be read, so only the stop reason can tell."""
    if response is None or isinstance(response, str) or is_sealed(response):
        return "", None
    refusal = None
    for message in response_messages(Call(response=response)):
        if not isinstance(message, dict):
            continue
        refusal = next((said for api in APIS.values() if (said := api.refusal(message)) is not None), refusal)
        content = message.get("content")
        if isinstance(content, str):
            return content, refusal
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            found = next((w for api in APIS.values() if (w := api.words(block)) is not None), None)
            if found is not None:
                kind, words = found
                return (words, refusal) if kind == "text" else ("", words)
    return "", refusal
