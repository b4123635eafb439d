"""Pages: the investigation reports (`llmlog.analysis.reports`; `llmlog report …` on the command
line) — errors, cost, drift, compare, spikes — as tables and SVG charts drawn here, and each
report as JSON under /api/reports/NAME, with the same parameters as its page.

The reports are aggregates, open to viewers (each route says so); what they point at is not
always: a call, a session or a user's page is linked only for a role that can open it
(`may("debugger")`) and shown as a plain id otherwise. Parameters that cannot be run are a
400 that says which and why; a report the store stops at its time limit is a 503.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import reports
from llmlog.analysis.dashboard import Period
from llmlog.analysis.reports import Change, Comparison, CostReport, ErrorGroup, Spend, Spikes
from llmlog.core.filters import parse_when
from llmlog.store import ReadOnlyError, Store
from llmlog.web import charts
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.dashboard import (
    MAX_DAYS,
    BadPeriod,
    calls_link,
    day_link,
    period_of,
    usd,
    usd_short,
    usd_tick,
)
from llmlog.web.state import may, web_of

# Each period report's default days (the CLI's) and the choices offered beside it.
PERIODS: dict[str, tuple[int, tuple[int, ...]]] = {
    "errors": (7, (1, 7, 30)),
    "cost": (30, (7, 30, 90)),
    "spikes": (7, (1, 7, 30)),
}
DRIFT_DAYS, DRIFT_BASELINE, DRIFT_PERIODS = 7, 28, (1, 7, 14)
COMPARE_DAYS, MOMENT_DAYS = 28, 7
TOP = 10  # lines in each ranked chart, as in the CLI's tables


class BadParams(ValueError):
    pass


REFUSED = (BadPeriod, BadParams)


def whole_days(params: dict[str, str], name: str, default: int) -> int:
    text = params.get(name) or str(default)
    try:
        days = int(text)
    except ValueError:
        raise BadParams(f"{name} must be a whole number of days, not {text!r}") from None
    if not 1 <= days <= MAX_DAYS:
        raise BadParams(f"{name} must be between 1 and {MAX_DAYS}")
    return days


def period(params: dict[str, str], report: str) -> Period:
    return period_of({**params, "days": params.get("days") or str(PERIODS[report][0])})


@dataclass
class CompareAsk:
    feature: str
    old: str | None
    new: str | None
    at: datetime | None  # a moment, instead of two versions
    days: int


def compare_ask(params: dict[str, str]) -> CompareAsk | None:
    """What the compare page is asked; None: no feature yet (the form alone)."""
    feature = params.get("feature") or ""
    old, new, moment = params.get("old") or None, params.get("new") or None, params.get("at") or None
    if not feature:
        if old or new or moment:
            raise BadParams("feature: which feature's calls to compare is missing")
        return None
    if moment and (old or new):
        raise BadParams("give two versions (old and new), or a moment (at), not both")
    if bool(old) != bool(new):
        raise BadParams("give both versions, old and new")
    at = None
    if moment:
        try:
            at = parse_when(moment)
        except ValueError as exc:  # a moment off the calendar too
            raise BadParams(f"at: {exc}") from None
    days = whole_days(params, "days", MOMENT_DAYS if at else COMPARE_DAYS)
    return CompareAsk(feature, old, new, at, days)


def compare(store: Store, ask: CompareAsk | None) -> Comparison | None:
    if ask is None or (ask.at is None and ask.old is None):
        return None
    try:
        if ask.at is not None:
            return reports.compare_moment(store, ask.feature, ask.at, ask.days)
        return reports.compare_versions(store, ask.feature, ask.old or "", ask.new or "", ask.days)
    except OverflowError:  # a moment near the ends of the calendar, once its days are added
        raise BadParams("at: the moment and its days fall outside the calendar") from None


@dataclass(frozen=True)
class Report:
    ask: Callable[[dict[str, str]], Any]  # the parameters, checked (raises one of REFUSED)
    read: Callable[[Store, Any], Any]
    as_json: Callable[[Any], Any]


def _needs_comparison(ask: CompareAsk | None) -> CompareAsk:
    if ask is None or (ask.at is None and ask.old is None):
        raise BadParams("give a feature, and two versions (old, new) or a moment (at)")
    return ask


RUNS: dict[str, Report] = {
    "errors": Report(
        lambda p: period(p, "errors"), reports.errors_report, lambda r: [g.to_json() for g in r]
    ),
    "cost": Report(lambda p: period(p, "cost"), reports.cost_report, lambda r: r.to_json()),
    "drift": Report(
        lambda p: (whole_days(p, "days", DRIFT_DAYS), whole_days(p, "baseline", DRIFT_BASELINE)),
        lambda store, a: reports.drift_report(store, *a),
        lambda r: [c.to_json() for c in r],
    ),
    "compare": Report(lambda p: _needs_comparison(compare_ask(p)), compare, lambda r: r.to_json()),
    "spikes": Report(lambda p: period(p, "spikes"), reports.spikes_report, lambda r: r.to_json()),
}


# ---------------------------------------------------------------- how figures are shown


def figure(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric in reports.RATES:
        return f"{value:.1%}"
    if metric == "cost_usd":
        return usd(value)
    return f"{value:,.0f} ms" if metric == "latency_ms" else f"{value:,.1f}"


def effect(c: Change) -> str:
    if c.effect is None:
        return ""
    # A rate's effect is a difference of two rates: points, not a percentage of either.
    return f"{c.effect * 100:+.1f} pts" if c.metric in reports.RATES else f"{c.effect:+.2f} sd"


def p_value(p: float | None) -> str:
    if p is None:
        return ""
    return f"{p:.1e}" if p > 0 else "< 1e-300"  # below what a float holds


def version(v: str | None) -> str:
    return "(all versions)" if v == reports.ALL_VERSIONS else charts.name(v)


def outlier_figure(metric: str, value: float) -> str:
    if metric == "error_rate":
        return f"{value:.1%}"
    return usd_short(value) if metric == "cost_usd" else f"{value:,.4g}"


def call_href(call_id: str) -> str:
    return "/calls/" + quote(call_id, safe="")


def session_href(session_id: str) -> str:
    return "/sessions/" + quote(session_id, safe="")


def user_href(user_id: str) -> str:
    return "/users/" + quote(user_id, safe="")


def compare_href(**params: Any) -> str:
    return "/reports/compare?" + urlencode(params)


def in_period(p: Period, **filters: str) -> str:
    """The calls list over the period, with `filters`."""
    return calls_link(**filters, since=p.first.isoformat(), until=p.end.isoformat())


def count(v: float) -> str:
    return f"{v:,.0f}"


# ---------------------------------------------------------------- charts


def errors_chart(p: Period, groups: list[ErrorGroup], linked: bool) -> Markup | None:
    """Errors per day, stacked by error type (the most at the bottom), over the groups listed."""
    by_type: dict[str, list[int]] = {}
    for g in groups:
        days = by_type.setdefault(g.error_type, [0] * p.days)
        for i, k in enumerate(g.per_day):
            days[i] += k
    if not by_type:
        return None
    ranked = sorted(by_type.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    fits = len(charts.PALETTE) if len(ranked) <= len(charts.PALETTE) else len(charts.PALETTE) - 1
    series = [charts.Series(t, v, charts.PALETTE[i]) for i, (t, v) in enumerate(ranked[:fits])]
    if ranked[fits:]:
        rest = [sum(v[i] for _, v in ranked[fits:]) for i in range(p.days)]
        series.append(charts.Series("(other)", rest, charts.OTHER))
    return charts.stacked_bars(
        p.dates(),
        series,
        label="Errors per day by error type",
        fmt=lambda v: f"{v:,.0f} errors",
        tick=lambda v: f"{v:,g}",
        hrefs=[day_link(d) + "&status=error" for d in p.dates()] if linked else None,
    )


def spend_chart(rows: list[Spend], label: str, href: Callable[[str], str] | None) -> Markup | None:
    if not rows:
        return None
    return charts.hbars(
        [
            charts.Row(
                charts.name(s.name),
                [s.cost_usd],
                # A NULL value cannot be asked for by a link (empty means no filter).
                href=href(s.name) if href and s.name is not None else None,
                note=f"{s.calls:,} calls",
            )
            for s in rows[:TOP]
        ],
        label=label,
        fmt=usd,
        short=usd_short,
    )


def cost_charts(p: Period, r: CostReport, linked: bool) -> dict[str, Markup | None]:
    dates = p.dates()
    spent = any(d.calls for d in r.by_day)
    return {
        "by_day": charts.stacked_bars(
            dates,
            [charts.Series("cost", [d.cost_usd for d in r.by_day], charts.PALETTE[0])],
            label="Cost per day (USD)",
            fmt=usd,
            tick=usd_tick,
            hrefs=[day_link(d) for d in dates] if linked else None,
            notes=[f"{d.calls:,} calls" for d in r.by_day],
        )
        if spent
        else None,
        "by_model": spend_chart(
            r.by_model, "Cost by model (USD)", (lambda m: in_period(p, model=m)) if linked else None
        ),
        "by_feature": spend_chart(
            r.by_feature, "Cost by feature (USD)", (lambda f: in_period(p, feature=f)) if linked else None
        ),
        "by_user": spend_chart(r.by_user, "Cost by user (USD)", user_href if linked else None),
    }


def sessions_chart(r: Spikes, linked: bool) -> Markup | None:
    if not r.sessions:
        return None
    return charts.hbars(
        [
            charts.Row(
                s.session_id,
                [s.cost_usd],
                href=session_href(s.session_id) if linked else None,
                note=f"{charts.name(s.user_id)} · {s.calls:,} turns",
            )
            for s in r.sessions
        ],
        label="Costliest sessions (USD)",
        fmt=usd,
        short=usd_short,
    )


def change_pair(c: Change) -> Markup:
    return charts.pair(
        c.before,
        c.after,
        label=f"{c.metric}: {figure(c.metric, c.before)} → {figure(c.metric, c.after)}",
        fmt=lambda v: figure(c.metric, v),
    )


def error_spark(p: Period, g: ErrorGroup) -> Markup:
    return charts.spark(g.per_day, label=f"{g.error_type} per day", fmt=count, labels=p.dates())


# ---------------------------------------------------------------- pages


def day_choices(path: str, days: tuple[int, ...], **kept: Any) -> list[tuple[int, str]]:
    """The period choices as links, keeping the other parameters (a pinned `end`)."""
    return [(n, f"{path}?" + urlencode({"days": n, **{k: v for k, v in kept.items() if v}})) for n in days]


def known_versions(store: Store) -> dict[str, list[tuple[str, int]]]:
    """Each feature's prompt versions, with their calls; none when that is too slow to read:
    they are choices offered, a form works without them."""
    try:
        return reports.known_versions(store)
    except ReadOnlyError:
        return {}


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return web_of(request).render(
        name,
        status,
        call_href=call_href,
        session_href=session_href,
        user_href=user_href,
        compare_href=compare_href,
        label=charts.name,
        **context,
    )


def read(request: Request, report: str, asked: Any) -> Any:
    with web_of(request).reading() as store:
        return RUNS[report].read(store, asked)


# Drift over time (`llmlog.web.drift`): a page of its own, beside the reports.
BY_DAY = (
    "/reports/drift-by-day",
    "each feature's output tokens per call, refusal and tool-call rates day by day, new versions marked",
)


def by_day_href(feature: str, days: int) -> str:
    """A feature's days on the drift-per-day page: those a drift comparison covers, say."""
    return BY_DAY[0] + "?" + urlencode({"days": min(days, MAX_DAYS), "feature": feature})


def headlines(request: Request) -> dict[str, str | None]:
    """Each report's headline, None where it failed or is not known yet (`web.headlines`)."""
    web = web_of(request)
    return web.headlines.current(web.reading)


def index(request: Request) -> Response:
    return render(
        request, "reports.html", reports=reports.REPORTS, headlines=headlines(request), by_day=BY_DAY[1]
    )


def errors(request: Request, p: Period, groups: list[ErrorGroup]) -> Response:
    end = request.query_params.get("end")
    return render(
        request,
        "report_errors.html",
        period=p,
        groups=[(g, error_spark(p, g)) for g in groups],
        chart=errors_chart(p, groups, may("debugger")),
        periods=day_choices("/reports/errors", PERIODS["errors"][1], end=end),
        api="/api/reports/errors?" + urlencode({"days": p.days, "end": p.last.isoformat()}),
        group_link=lambda g: in_period(p, model=g.model, feature=g.feature, status="error"),
    )


def cost(request: Request, p: Period, r: CostReport) -> Response:
    end = request.query_params.get("end")
    return render(
        request,
        "report_cost.html",
        period=p,
        report=r,
        calls=sum(d.calls for d in r.by_day),
        charts=cost_charts(p, r, may("debugger")),
        short_output=reports.SHORT_OUTPUT,
        pricier=f"{reports.PRICIER:g}",
        periods=day_choices("/reports/cost", PERIODS["cost"][1], end=end),
        api="/api/reports/cost?" + urlencode({"days": p.days, "end": p.last.isoformat()}),
    )


def drift(request: Request, asked: tuple[int, int], changes: list[Change]) -> Response:
    days, baseline = asked
    return render(
        request,
        "report_drift.html",
        days=days,
        baseline=baseline,
        changes=[(c, change_pair(c)) for c in changes],
        figure=figure,
        effect=effect,
        p_value=p_value,
        version=version,
        periods=day_choices("/reports/drift", DRIFT_PERIODS, baseline=baseline),
        api="/api/reports/drift?" + urlencode({"days": days, "baseline": baseline}),
        by_day_href=lambda feature: by_day_href(feature, days + baseline),
        by_day_metrics=("output_tokens", "refusal_rate", "tool_call_rate"),
    )


def spikes(request: Request, p: Period, r: Spikes) -> Response:
    end = request.query_params.get("end")
    return render(
        request,
        "report_spikes.html",
        period=p,
        report=r,
        chart=sessions_chart(r, may("debugger")),
        outlier_figure=outlier_figure,
        periods=day_choices("/reports/spikes", PERIODS["spikes"][1], end=end),
        api="/api/reports/spikes?" + urlencode({"days": p.days, "end": p.last.isoformat()}),
    )


# Each report's page, by name.
VIEWS: dict[str, Callable[[Request, Any, Any], Response]] = {
    "errors": errors,
    "cost": cost,
    "drift": drift,
    "spikes": spikes,
}


def page(report: str) -> Callable[[Request], Response]:
    def answer(request: Request) -> Response:
        try:
            asked = RUNS[report].ask(dict(request.query_params))
            result = read(request, report, asked)
        except REFUSED as exc:
            raise Refusal(str(exc)) from None
        except ReadOnlyError as exc:  # stopped at its time limit: say so, not a 500
            raise Refusal(f"{exc}; choose a shorter period", 503) from None
        return VIEWS[report](request, asked, result)

    return answer


def compare_page(request: Request) -> Response:
    web = web_of(request)
    params = dict(request.query_params)
    ask, result, problem, status = None, None, None, 200
    try:
        ask = compare_ask(params)
        with web.reading() as store:
            result = compare(store, ask)
    except REFUSED as exc:
        problem, status = str(exc), 400
    except ReadOnlyError as exc:
        problem, status = f"{exc}; choose fewer days", 503
    with web.reading() as store:
        versions = known_versions(store)
    feature = params.get("feature") or ""
    features = list(versions)
    if feature and feature not in versions:
        features.append(feature)  # asked for, though none of its calls is known
    return render(
        request,
        "report_compare.html",
        status,
        problem=problem,
        params=params,
        feature=feature,
        features=features,
        versions=versions,
        # Every feature's versions, the chosen one's first: without a script the choices
        # cannot follow a feature changed in the form.
        version_groups=sorted(versions.items(), key=lambda kv: kv[0] != feature),
        moment=ask is not None and ask.at is not None,
        days=ask.days if ask else None,
        result=result,
        pairs=[(c, change_pair(c)) for c in result.metrics] if result else [],
        figure=figure,
        effect=effect,
        p_value=p_value,
        api="/api/reports/compare?" + urlencode(params) if result else None,
    )


def api_index(request: Request) -> Response:
    known = headlines(request)
    return JSONResponse(
        {
            name: {"about": what, "url": f"/api/reports/{name}", "headline": known.get(name)}
            for name, what in reports.REPORTS.items()
        }
    )


def api(request: Request) -> Response:
    name = request.path_params["name"]
    report = RUNS.get(name)
    if report is None:
        raise Refusal(f"no report {name!r}: one of {', '.join(RUNS)}", 404)
    try:
        return JSONResponse(report.as_json(read(request, name, report.ask(dict(request.query_params)))))
    except REFUSED as exc:
        raise Refusal(str(exc), 400) from None
    except ReadOnlyError as exc:
        raise Refusal(str(exc), 503) from None


def routes() -> list[BaseRoute]:
    return [
        # The reports are aggregates, open to viewers; their links to calls are drawn only
        # for roles that may open them.
        Page("/reports", index, role="viewer"),
        *(Page(f"/reports/{name}", page(name), role="viewer") for name in VIEWS),
        Page("/reports/compare", compare_page, role="viewer"),
        Page("/api/reports", api_index, role="viewer"),
        Page("/api/reports/{name}", api, role="viewer"),
    ]
