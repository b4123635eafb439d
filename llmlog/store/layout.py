"""How the SQL stores (SQLite, PostgreSQL) lay the calls out, from the one column table
(`llmlog.core.record.CALL_COLUMNS`).

A call is one row of `call_data`. Most of its columns are kept there as they are, under
their own names ("inline"). What is repeated from call to call is kept once in `content`
and named by id (the system prompt, each message, the tools, the params), and the response
is kept without what it echoes of the request: each engine says how its `calls` view puts
those back. So a column added to the table is inline on every engine, and the views, the
brief lists and the inserts follow it; each engine's migration only adds it to
`call_data` (`add_call_column`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from llmlog.core.record import COLUMNS, JSON_COLUMNS

#: The columns of `calls` an engine keeps elsewhere than in a `call_data` column of the
#: same name; its views give an expression for each.
KEPT_ELSEWHERE: tuple[str, ...] = ("system_prompt", "messages", "tools", "params", "response")
#: The rest, in the table's order: each a `call_data` column of its own name.
INLINE: tuple[str, ...] = tuple(c for c in COLUMNS if c not in KEPT_ELSEWHERE)
#: Of those, the ones written as they are (text and figures) and the ones written as JSON
#: text; `id` and `timestamp`, which every engine writes its own way, in neither.
INLINE_PLAIN: tuple[str, ...] = tuple(
    c for c in INLINE if c not in JSON_COLUMNS and c not in ("id", "timestamp")
)
INLINE_JSON: tuple[str, ...] = tuple(c for c in INLINE if c in JSON_COLUMNS)


def select_list(elsewhere: Mapping[str, str], present: Collection[str] | None = None) -> str:
    """The calls' columns in the table's order, for a view over `call_data AS d`: `d.name`
    for an inline column, `elsewhere[name] AS name` for the others. `present`: the columns
    `call_data` has now (a migration making the view before a later one adds a column
    leaves that column out); None for all."""
    missing = set(KEPT_ELSEWHERE) - set(elsewhere)
    if missing:
        raise ValueError(f"no expression for {', '.join(sorted(missing))}")
    out = []
    for name in COLUMNS:
        if name in elsewhere:
            out.append(f"{elsewhere[name]} AS {name}")
        elif present is None or name in present:
            out.append(f"d.{name}")
    return ",\n    ".join(out)
