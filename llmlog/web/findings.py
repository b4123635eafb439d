"""Pages: the findings (`llmlog.analysis.findings`), the answer to "is anything wrong?" — ranked,
each a sentence with its numbers, a small chart and links to its evidence; the same as JSON
under /api/findings; and the line the calls list gives them.

Findings are figures, open to viewers. A link to evidence is drawn (and given in the JSON)
only for a role that may open it: a viewer sees the comparisons and the reports, not the
calls, sessions or users, which hold text. No request evaluates the findings: they come from
the latest evaluation the app keeps (`Web.findings`, `llmlog.analysis.latest`).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import findings
from llmlog.analysis.findings import Evaluation, Evidence, Finding
from llmlog.web import charts
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.state import Web, may, web_of

# The first request, with no evaluation yet, waits this long for one; then the page says it
# is under way (and reloads itself), the JSON is a 503 to ask again.
WAIT_S = 3.0
RETRY_S = 5


def latest(web: Web) -> Evaluation | None:
    return web.findings.get(web.reading, wait_s=WAIT_S)


def shown(web: Web) -> Callable[[Evidence], bool]:
    """Whether whoever asks may open a piece of evidence: by its role, and by the route it
    reaches (the routes say who opens what; the evidence's role must agree)."""
    return lambda e: may(e.role) and web.opens(urlsplit(e.path).path)


def chart_figure(f: Finding) -> Callable[[float], str]:
    """How a value of the finding's chart is said in its bars' titles."""
    metric = str(f.numbers.get("metric", ""))
    if f.kind == "drift" or (f.kind == "user_outlier" and metric == "error_rate"):
        return lambda v: findings.figure(metric, v)
    if f.kind == "error_rate":
        return lambda v: f"{v:.1%}"
    if f.kind in ("over_routing", "cost_week", "costly_session") or metric == "cost_usd":
        return findings.usd
    return lambda v: f"{v:,.4g}"


def chart(f: Finding) -> Markup | None:
    if not any(v is not None for _, v in f.chart):
        return None
    failing = f.kind in ("new_error", "error_rate") or f.numbers.get("metric") == "error_rate"
    color = charts.ERRORS if failing else charts.PALETTE[0]
    return charts.spark(
        [v for _, v in f.chart],
        label=f.chart_label,
        fmt=chart_figure(f),
        labels=[d for d, _ in f.chart],
        color=color,
    )


def findings_page(request: Request) -> Response:
    web = web_of(request)
    found = latest(web)
    allowed = shown(web)
    items = [(f, chart(f), [e for e in f.evidence if allowed(e)]) for f in found.findings] if found else []
    return web.render(
        "findings.html",
        evaluation=found,
        items=items,
        failed=web.findings.failed,
        running=web.findings.running,
        week=findings.WEEK,
        baseline=findings.BASELINE,
        every_min=round(web.findings.every_s / 60),
        refresh=RETRY_S if found is None and web.findings.failed is None else None,
    )


def api_findings(request: Request) -> Response:
    web = web_of(request)
    found = latest(web)
    if found is None:
        failed = web.findings.failed
        if failed is not None:
            raise Refusal(f"the findings could not be evaluated: {failed}", 503)
        return JSONResponse(
            {"error": "the findings are being evaluated: ask again in a few seconds"},
            status_code=503,
            headers={"Retry-After": str(RETRY_S)},
        )
    return JSONResponse(found.to_json(shown(web)))


def routes() -> list[BaseRoute]:
    return [
        # Figures, open to viewers; their links to calls, sessions and users are drawn only
        # for roles that may open them.
        Page("/findings", findings_page, role="viewer"),
        Page("/api/findings", api_findings, role="viewer"),
    ]
