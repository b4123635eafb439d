"""Pages: a read-only SQL console over the store, with the rules of `llmlog query`: the store
runs it as a reader that can read the calls and nothing else (`Store.query`), stops a query at
a time limit and returns at most a number of rows and of bytes. A query lives in the URL
(`/sql?q=…`): reading cannot change anything, so a link to a query is safe to follow and
reproduces its result; `/sql.csv` and `/sql.json` download it.
"""

from __future__ import annotations

import io
import time
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis.dashboard import (
    CONSOLE_ROW_LIMIT,
    CONSOLE_TIMEOUT_S,
    DOWNLOAD_ROW_LIMIT,
    FIRST_QUERIES,
    result_json,
    write_csv,
)
from llmlog.core.record import COLUMNS
from llmlog.store import QueryResult, ReadOnlyError
from llmlog.web.answer import Refusal
from llmlog.web.auth import Page
from llmlog.web.state import Web, web_of

# A cell shows this much of a long value (a whole conversation, say); downloads have it all.
CELL_CHARS = 2_000
EXAMPLES = [
    *FIRST_QUERIES,
    "SELECT day, model, SUM(calls), SUM(cost_usd) FROM daily GROUP BY 1, 2 ORDER BY 1, 2",
]


def cell(value: Any) -> str | None:
    """A value as the table shows it: None stays None (shown as NULL), a BLOB as hex, and
    text (JSON columns included, as the store gives them: text) cut at CELL_CHARS."""
    if value is None:
        return None
    text = value.hex() if isinstance(value, bytes) else str(value)
    if len(text) > CELL_CHARS:
        return text[:CELL_CHARS] + f"… ({len(text):,} characters)"
    return text


def run(web: Web, sql: str, limit: int) -> tuple[QueryResult, float]:
    started = time.perf_counter()
    with web.reading() as store:
        result = store.query(sql, timeout_s=CONSOLE_TIMEOUT_S, limit=limit)
    return result, (time.perf_counter() - started) * 1000


def links(sql: str) -> dict[str, str]:
    q = urlencode({"q": sql})
    return {"page": f"/sql?{q}", "csv": f"/sql.csv?{q}", "json": f"/sql.json?{q}"}


def page(request: Request) -> Response:
    web = web_of(request)
    sql = request.query_params.get("q", "").strip()
    context: dict[str, Any] = {
        "sql": sql,
        "examples": [(e, "/sql?" + urlencode({"q": e})) for e in EXAMPLES],
        "columns": COLUMNS,
        "limit": CONSOLE_ROW_LIMIT,
        "download_limit": DOWNLOAD_ROW_LIMIT,
        "timeout": CONSOLE_TIMEOUT_S,
        "links": links(sql) if sql else None,
        "result": None,
        "error": None,
    }
    if not sql:
        return web.render("sql.html", **context)
    try:
        result, elapsed = run(web, sql, CONSOLE_ROW_LIMIT)
    except ReadOnlyError as exc:
        return web.render("sql.html", 400, **{**context, "error": str(exc)})
    id_column = result.columns.index("id") if "id" in result.columns else None
    return web.render(
        "sql.html",
        **{**context, "result": result},
        rows=[[cell(v) for v in row] for row in result.rows],
        # A column named id links each row to its call (whatever the id looks like).
        id_column=id_column,
        call_href=lambda v: "/calls/" + quote(str(v), safe=""),
        elapsed=elapsed,
    )


def download(request: Request, kind: str) -> Response:
    web = web_of(request)
    sql = request.query_params.get("q", "").strip()
    if not sql:
        raise Refusal("no query: pass it as ?q=", 400)
    try:
        result, _ = run(web, sql, DOWNLOAD_ROW_LIMIT)
    except ReadOnlyError as exc:
        raise Refusal(str(exc), 400) from None
    headers = {"Content-Disposition": f'attachment; filename="llmlog-query.{kind}"'}
    if result.truncated:
        # Said where a script can see it without parsing the body.
        headers["X-Llmlog-Truncated"] = result.note or f"first {DOWNLOAD_ROW_LIMIT} rows"
    if kind == "json":
        return Response(result_json(result), media_type="application/json", headers=headers)
    out = io.StringIO()
    write_csv(result, out)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def csv_download(request: Request) -> Response:
    return download(request, "csv")


def json_download(request: Request) -> Response:
    return download(request, "json")


def routes() -> list[BaseRoute]:
    return [
        Page("/sql", page, role="debugger"),
        Page("/sql.csv", csv_download, role="debugger"),
        Page("/sql.json", json_download, role="debugger"),
    ]
