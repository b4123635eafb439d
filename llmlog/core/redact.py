"""Redaction before storage: personal data and secrets replaced by typed placeholders.

    llmlog.configure(redact=["email", "phone", "card", "secret"])       # or LLMLOG_REDACT=all
    llmlog.configure(redact_patterns={"EMPLOYEE": r"\\bE\\d{6}\\b"})       # yours, as [EMPLOYEE]

Every string inside the chosen fields of a call is searched: by default every field that
holds text (the system prompt, messages, tool definitions, the request's other parameters,
the response, tool calls, the error and the metadata; LLMLOG_REDACT_FIELDS narrows it). Each
match becomes `[EMAIL]`, `[PHONE]`, `[CARD]`, `[SECRET]` or the name of your pattern, and the
counts per kind are kept in `metadata.llmlog.redactions`. What llmlog itself keeps in the
metadata to keep track of a call (`BOOKKEEPING`: ids, counts) is left as it is. Every text
of an OTLP span or log event is searched too. It runs where every way in makes a record
(`llmlog.pipeline.intake`), so nothing unredacted reaches a store, the spool or a collector.

The rules lean towards precision: a payment card number must pass the Luhn check, a phone
number must look like one (10 to 15 digits, with a `+` or the usual separators), and secrets
are matched by their providers' published key formats.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from llmlog.core.record import Call
from llmlog.core.sealed import is_sealed

# The fields redaction searches unless told otherwise (`llmlog.core.redact`): every field of a
# call that holds text a user, an app or a model wrote. LLMLOG_REDACT_FIELDS narrows it.
FIELDS = (
    "system_prompt",
    "messages",
    "tools",
    "params",
    "response",
    "tool_calls",
    "error",
    "metadata",
)

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
# A run of digits with phone-like separators; checked further by `_phone`.
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{7,22}\d(?![\w])|(?<![\w+])\(\d{2,5}\)[\d .-]{6,18}\d(?!\w)")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SECRETS = [
    r"sk-ant-[A-Za-z0-9_-]{20,}",  # Anthropic
    r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key ids
    r"gh[pousr]_[A-Za-z0-9]{36,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
    r"xox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"glpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JSON Web Tokens
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----",
]
_SECRET = re.compile(r"(?<![A-Za-z0-9_-])(?:" + "|".join(_SECRETS) + r")(?![A-Za-z0-9_-])")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and luhn(digits)


def _phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if not 10 <= len(digits) <= 15:
        return False
    # A plain run of digits is an id or an amount, not a phone number: it needs a + or the
    # separators people write numbers with. A date-time or a version string is not one either.
    separated = match.startswith("+") or bool(re.search(r"[ ().-]", match))
    if not separated or re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", match):  # a date or a time stamp
        return False
    if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", match):  # an IPv4 address
        return False
    # Dots: 415.555.0134 is a number, 3.14159265358 or 10.0.0.1.2 is not.
    return "." not in match or bool(re.fullmatch(r"\+?\d{1,4}(?:\.\d{2,4}){2,4}", match))


# (placeholder, pattern, check of a match): the built-in rules by name.
BUILT_IN: dict[str, tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = {
    "secret": ("SECRET", _SECRET, None),  # first: a key may hold digits that look like a card
    "email": ("EMAIL", _EMAIL, None),
    "card": ("CARD", _CARD, _card),
    "phone": ("PHONE", _PHONE, _phone),
}


# What llmlog writes into a call's metadata to keep track of it, by path: ids and counts,
# not what a user, an app or a model wrote. A rule could break them (the phone rule takes
# part of some UUIDs, so a replayed call would lose the link to its original), and they hold
# nothing a rule is for. Everything else in the metadata is searched, llmlog's own notes too
# (the text of a response that could not be parsed may quote the user).
BOOKKEEPING: dict[str, frozenset[str] | None] = {
    "replay_of": None,  # the whole value: the id of the call a replay repeats
    "llmlog": frozenset(
        {"redactions", "retry", "incomplete", "request_id", "replay", "cut_tool_inputs", "requested_model"}
    ),
    "otel": frozenset({"span_id"}),
}


class Redactor:
    """Applies the chosen rules to the chosen fields of calls."""

    def __init__(
        self,
        rules: Iterable[str] = (),
        patterns: Mapping[str, str] | None = None,
        fields: Iterable[str] = FIELDS,
    ) -> None:
        names = list(rules)
        if "all" in names:
            names = list(BUILT_IN)
        unknown = [n for n in names if n not in BUILT_IN]
        if unknown:
            choices = ", ".join(BUILT_IN)
            raise ValueError(f"unknown redaction rule {unknown[0]!r}: choose from {choices} or all")
        self.rules = [BUILT_IN[n] for n in BUILT_IN if n in names]  # in the built-in order
        for name, pattern in (patterns or {}).items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(
                    f"redaction pattern name {name!r}: capitals, digits and _ (it shows as [NAME])"
                )
            try:
                self.rules.append((name, re.compile(pattern), None))
            except re.error as exc:
                raise ValueError(f"redaction pattern {name}: {exc}") from None
        self.fields = [f for f in fields]
        bad = [f for f in self.fields if f not in FIELDS]
        if bad:
            raise ValueError(f"cannot redact field {bad[0]!r}")
        # A conversation re-sends its earlier messages with every call: each text is searched
        # once, then looked up.
        self._seen: dict[str, tuple[str, Counter[str]]] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def text(self, text: str) -> tuple[str, Counter[str]]:
        """`text` with every match replaced, and the count of each kind. A sealed value is
        left as it is: it was redacted before it was sealed, and a match inside its
        ciphertext would only break it."""
        if is_sealed(text):
            return text, Counter()
        cached = self._seen.get(text)
        if cached is not None:
            return cached
        counts: Counter[str] = Counter()
        out = text
        for placeholder, pattern, check in self.rules:

            def replace(m: re.Match[str], placeholder: str = placeholder, check: Any = check) -> str:
                if check is not None and not check(m.group(0)):
                    return m.group(0)
                counts[placeholder] += 1
                return f"[{placeholder}]"

            out = pattern.sub(replace, out)
        if len(self._seen) > 20_000:
            self._seen.clear()
        self._seen[text] = (out, counts)
        return out, counts

    def _value(self, value: Any, counts: Counter[str]) -> Any:
        if isinstance(value, str):
            out, found = self.text(value)
            counts.update(found)
            return out
        if isinstance(value, dict):
            return {k: self._value(v, counts) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v, counts) for v in value]
        return value

    def _metadata(self, metadata: Any, counts: Counter[str]) -> Any:
        """A call's metadata with every text in it redacted but `BOOKKEEPING`'s."""
        if not isinstance(metadata, dict):
            return self._value(metadata, counts)
        out = {}
        for key, value in metadata.items():
            kept = BOOKKEEPING.get(key, frozenset())
            if kept is None:
                out[key] = value
            elif kept and isinstance(value, dict):
                out[key] = {k: v if k in kept else self._value(v, counts) for k, v in value.items()}
            else:
                out[key] = self._value(value, counts)
        return out

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like value (text, list, object) with every text in it redacted."""
        return self._value(value, Counter()) if self.rules else value

    def call(self, call: Call) -> Call:
        """Redact `call` in place (its chosen fields); the counts go to its metadata."""
        if not self.rules:
            return call
        counts: Counter[str] = Counter()
        for name in self.fields:
            value = getattr(call, name)
            if value is not None:
                redact = self._metadata if name == "metadata" else self._value
                setattr(call, name, redact(value, counts))
        if counts:
            meta = dict(call.metadata or {})
            ours = dict(meta.get("llmlog") or {})
            ours["redactions"] = dict(sorted(counts.items()))
            meta["llmlog"] = ours
            call.metadata = meta
        return call
