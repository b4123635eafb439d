"""The kept calls as the reports read them: the columns a report asks for, and of each call
how many tool calls it made and whether it declined (`llmlog.analysis.refusals`).

Telling a refusal needs the response, which is the bulk of a call: only the responses that
hold one of the words a refusal is made of are sent by the store (where its engine can look
for words: PostgreSQL, ClickHouse); SQLite's may be compressed, so it sends each response and
the words are looked for here before any is parsed. The rules then decide.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from llmlog.analysis import refusals
from llmlog.core.record import parse_json
from llmlog.store import Store

# Words one of which a refusal's response holds (see `llmlog.analysis.refusals`).
REFUSAL_WORDS = (
    "sorry", "apologi", "unfortunately", "can't", "can\u2019t", "cannot", "can not", "unable", "not able",
    "won't", "won\u2019t", "will not", "decline", "refuse", "comfortable", '"refusal":"', '"refusal": "',
)  # fmt: skip


def refusal_candidate(store: Store) -> tuple[str, list[Any]]:
    """The response of a call that may be a refusal by its words, as a column, and its
    parameters: only those responses are parsed (`may_refuse` checks the words of those
    read as text); the rules (`llmlog.analysis.refusals`) then decide."""
    found = store.dialect.response_with_any(REFUSAL_WORDS)
    # SQLite's response may be compressed (`store.compression`): read once, words checked here.
    return found if found is not None else ("llmlog_text(response)", [])


def may_refuse(response: str) -> bool:
    lowered = response.lower()
    return any(w in lowered for w in REFUSAL_WORDS)


def declined(stop_reason: str | None, response: Any) -> bool:
    """Whether a call declined, by its stop reason and its response as `refusal_candidate`
    reads it (JSON text, a parsed value, or None where its words hold no refusal)."""
    if isinstance(response, str):
        response = parse_json(response) if may_refuse(response) else None
    return refusals.refused(stop_reason, *refusals.response_parts(response))


class Kept(NamedTuple):
    """One kept call as `read` gives it: the columns asked for, its tool calls (0 for none),
    and what tells whether it declined, which is looked at only when asked (`declined`)."""

    values: tuple[Any, ...]
    tools: int
    stop_reason: str | None
    response: Any  # as `refusal_candidate` reads it

    def declined(self) -> bool:
        return declined(self.stop_reason, self.response)


def read(
    store: Store,
    columns: Sequence[str],
    since: Any,
    until: Any,
    timeout_s: float,
    limit: int = 5_000_000,
) -> Iterator[Kept]:
    """The kept calls with `since` <= timestamp < `until` (bounds as `time_param` gives
    them). Raises ReadOnlyError when the store stops the read at `timeout_s`."""
    p = store.dialect.placeholder
    candidate, words = refusal_candidate(store)
    rows = store.internal_query(
        f"SELECT {', '.join(columns)}, {store.dialect.tool_count('tool_calls')}, stop_reason, {candidate}"
        f" FROM call_data WHERE timestamp >= {p} AND timestamp < {p}",
        [*words, since, until],
        timeout_s=timeout_s,
        limit=limit,
    ).rows
    width = len(columns)
    for row in rows:
        tools, stop, response = row[width:]
        yield Kept(tuple(row[:width]), int(tools or 0), stop, response)
