"""JSONL in and out: one call per line, in the record's column names.

Import also takes the minimal hand-written format people already keep in per-day files:
`timestamp, model, system_prompt, user_message, assistant_response, input_tokens,
output_tokens, latency_ms, tags` (any of the full columns may sit beside them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from llmlog.record import Call, RecordError

# Ids for lines that carry none are derived from the line, so importing a file twice
# stores each call once.
_IMPORT_NAMESPACE = uuid.UUID("6f1c2d8e-3b4a-5c6d-8e9f-0a1b2c3d4e5f")
_MINIMAL_KEYS = {"user_message", "assistant_response"}


@dataclass
class BadLine:
    number: int
    reason: str


def _guess_provider(model: Any) -> str | None:
    if not isinstance(model, str):
        return None
    m = model.lower()
    if m.startswith("claude"):
        return "anthropic"
    if m.startswith(("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding")):
        return "openai"
    return None


def _from_minimal(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in _MINIMAL_KEYS}
    user, answer = data.get("user_message"), data.get("assistant_response")
    for name, value in (("user_message", user), ("assistant_response", answer)):
        if value is not None and not isinstance(value, str):
            raise RecordError(f"{name}: expected a string, got {type(value).__name__}")
    if user is not None and "messages" not in out:
        out["messages"] = [{"role": "user", "content": user}]
    if answer is not None and "response" not in out:
        out["response"] = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    tags = out.get("tags")
    if isinstance(tags, str):
        out["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    if "provider" not in out:
        out["provider"] = _guess_provider(out.get("model"))
    return out


def parse_line(line: str) -> Call:
    """One JSONL line → Call, or RecordError saying what is wrong with it."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    if _MINIMAL_KEYS & data.keys():
        data = _from_minimal(data)
    if data.get("id") is None:
        data = {**data, "id": str(uuid.uuid5(_IMPORT_NAMESPACE, line.strip()))}
    return Call.from_dict(data)


def read_calls(lines: Iterable[str], bad: list[BadLine]) -> Iterator[Call]:
    """Good calls, in order; each bad line is appended to `bad` with its number and reason."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield parse_line(line)
        except RecordError as exc:
            bad.append(BadLine(number, str(exc)))
