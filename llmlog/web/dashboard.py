"""Pages: the dashboard over a period of whole UTC days — cost per day by model and by
feature, calls and error rate per day, latency percentiles per model, top users and
features by cost, and the README's first queries as panels — and the same figures as JSON.

The figures come from `llmlog.analysis.dashboard`; the charts are SVG drawn here (`charts`). The
period lives in the URL (`?days=30`, and `&end=YYYY-MM-DD` to pin the last day), so a link
reproduces the view.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import dashboard
from llmlog.analysis.dashboard import Dashboard, Period, Ranked, Stack
from llmlog.operations import accounts
from llmlog.web import auth, charts
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.state import Web, web_of

PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_DAYS = 366


class BadPeriod(ValueError):
    pass


def period_of(params: dict[str, str]) -> Period:
    days_text = params.get("days") or str(DEFAULT_DAYS)
    try:
        days = int(days_text)
    except ValueError:
        raise BadPeriod(f"days must be a whole number of days, not {days_text!r}") from None
    if not 1 <= days <= MAX_DAYS:
        raise BadPeriod(f"days must be between 1 and {MAX_DAYS}")
    end = params.get("end")
    last = None
    if end:
        try:
            last = date.fromisoformat(end)
        except ValueError:
            raise BadPeriod(f"end must be a date (YYYY-MM-DD), not {end!r}") from None
    # The day after the last bounds the queries, so it must exist too.
    if last is not None and last >= date.max:
        raise BadPeriod("the period falls outside the calendar")
    try:
        return Period.ending(days, last)
    except OverflowError:
        raise BadPeriod("the period falls outside the calendar") from None


def usd(v: float) -> str:
    """A cost as a tooltip gives it: to the millionth of a dollar."""
    return f"${v:,.6f}"


def usd_short(v: float) -> str:
    return f"${v:,.2f}" if v >= 1 else f"${v:,.4f}"


def usd_tick(v: float) -> str:
    return f"${v:,g}"


def ms(v: float) -> str:
    return f"{v:,.1f} ms"


def calls_link(**filters: str) -> str:
    return "/?" + urlencode(filters)


def day_link(day: str) -> str:
    """The calls of one UTC day, on the calls page."""
    after = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return calls_link(since=day, until=after)


def sql_link(sql: str) -> str:
    return "/sql?" + urlencode({"q": sql})


def _stack_chart(stack: Stack, label: str, calls_per_day: list[int] | None) -> Markup:
    series = [charts.Series(charts.name(k), v, charts.PALETTE[i]) for i, (k, v) in enumerate(stack.series)]
    if stack.other:
        series.append(charts.Series("(other)", stack.other, charts.OTHER))
    return charts.stacked_bars(
        stack.days,
        series,
        label=label,
        fmt=usd,
        tick=usd_tick,
        hrefs=[day_link(d) for d in stack.days],
        notes=[f"{n:,} calls" for n in calls_per_day] if calls_per_day else None,
    )


def _ranked_chart(rows: list[Ranked], label: str, filter_name: str) -> Markup:
    return charts.hbars(
        [
            charts.Row(
                charts.name(r.name),
                [r.cost_usd],
                # A NULL value cannot be asked for on the calls page (empty means no filter).
                href=calls_link(**{filter_name: r.name}) if r.name is not None else None,
                note=f"{r.calls:,} calls" + ("" if r.cost_usd is not None else ", none priced"),
            )
            for r in rows
        ],
        label=label,
        fmt=usd,
        short=usd_short,
    )


def draw(d: Dashboard) -> dict[str, Markup | None]:
    """The dashboard's charts, each None when its figures are not available or empty."""
    out: dict[str, Markup | None] = {}
    days = d.calls_by_day.value
    per_day = [r.calls for r in days] if days else None
    for key, stack, label in (
        ("cost_by_model", d.cost_by_model.value, "Cost per day by model (USD)"),
        ("cost_by_feature", d.cost_by_feature.value, "Cost per day by feature (USD)"),
    ):
        out[key] = _stack_chart(stack, label, per_day) if stack and stack.series else None
    out["calls"] = (
        charts.bars_with_rate(
            [r.day for r in days],
            [r.calls for r in days],
            [r.errors for r in days],
            label="Calls and error rate per day",
            hrefs=[day_link(r.day) for r in days],
        )
        if days and any(r.calls for r in days)
        else None
    )
    latency = d.latency.value
    out["latency"] = (
        charts.hbars(
            [
                charts.Row(
                    charts.name(x.model),
                    [x.p50_ms, x.p95_ms],
                    href=calls_link(model=x.model) if x.model is not None else None,
                    note=f"{x.calls:,} calls",
                )
                for x in latency
            ],
            label="Latency per model (ms)",
            fmt=ms,
            series=["p50", "p95"],
        )
        if latency
        else None
    )
    users, features = d.top_users.value, d.top_features.value
    out["users"] = _ranked_chart(users, "Top users by cost (USD)", "user") if users else None
    out["features"] = _ranked_chart(features, "Top features by cost (USD)", "feature") if features else None
    return out


def recent_errors(d: Dashboard) -> list[dict[str, Any]]:
    result = d.recent_errors.value
    if result is None:
        return []
    rows = []
    for row in result.rows:
        r = dict(zip(result.columns, row, strict=True))
        when = str(r.get("timestamp", ""))[:19].replace("T", " ")
        rows.append({**r, "error": _error_shown(dashboard.parse_error(r.get("error"))), "when": when})
    return rows


def _error_shown(error: dict[str, Any]) -> dict[str, Any]:
    """An error as whoever asks may see it: a viewer gets its type and status, not its
    message, which can quote the prompt."""
    identity = auth.CURRENT.get()
    if identity is not None and accounts.rank(identity.role) < accounts.rank("debugger"):
        return {k: error.get(k) for k in ("type", "status")}
    return error


def figures(web: Web, period: Period) -> Dashboard:
    # One view fills the cache at a time; a second waits and then finds the days read.
    with web.day_cache_lock:
        return dashboard.dashboard(web.reading, period, web.day_cache)


def page(request: Request) -> Response:
    web = web_of(request)
    try:
        period = period_of(dict(request.query_params))
    except BadPeriod as exc:
        raise Refusal(str(exc)) from None
    d = figures(web, period)
    end = request.query_params.get("end")

    def view(days: int, pinned: str | None = end) -> str:
        return "/dashboard?" + urlencode({"days": days, **({"end": pinned} if pinned else {})})

    return web.render(
        "dashboard.html",
        d=d,
        charts=draw(d),
        errors=recent_errors(d),
        periods=[(n, view(n)) for n in PERIODS],
        permalink=view(period.days, period.last.isoformat()),
        api="/api/dashboard?" + urlencode({"days": period.days, "end": period.last.isoformat()}),
        sql_link=sql_link,
        calls_link=calls_link,
        label=charts.name,
    )


def api(request: Request) -> Response:
    web = web_of(request)
    try:
        period = period_of(dict(request.query_params))
    except BadPeriod as exc:
        raise Refusal(str(exc), 400) from None
    data = dashboard.dashboard_json(figures(web, period))
    for row in data["recent_errors"].get("rows", []):
        row["error"] = _error_shown(row["error"])
    return JSONResponse(data)


def routes() -> list[BaseRoute]:
    return [auth.Page("/dashboard", page, role="viewer"), auth.Page("/api/dashboard", api, role="viewer")]
