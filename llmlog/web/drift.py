"""Pages: drift over time (`llmlog.analysis.drift`; `llmlog report drift --by-day`) — per
feature, output tokens per call, the refusal rate and the tool-call rate per UTC day, as three
small SVG charts with the days each prompt version and model of the feature first appeared
marked on them — at /reports/drift-by-day, and as JSON at /api/reports/drift-by-day.

The period lives in the URL as on the dashboard (`?days=30`, `&end=YYYY-MM-DD` to pin the last
day), with `&feature=NAME` for one feature. The figures are open to viewers; a day links to
that day's calls of the feature only for a role that may open them.

The kept calls' rates are read a day at a time and kept between views (`Web.drift_cache`), as
the dashboard's days are. A view reads for `VIEW_BUDGET_S` at most and shows the days it could;
the days left are read on off the request's path, by one thread at a time (`read_on`), while
views show what is read so far: a month of a million calls, first opened, is whole some
seconds later, and fast from then on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import drift
from llmlog.analysis.dashboard import Period
from llmlog.analysis.drift import DriftByDay, Feature
from llmlog.store import ReadOnlyError, Store
from llmlog.web import charts
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.dashboard import BadPeriod, calls_link, period_of
from llmlog.web.state import Web, may, web_of

log = logging.getLogger(__name__)

PATH = "/reports/drift-by-day"
API = "/api/reports/drift-by-day"
PERIODS = (7, 30, 90)
VIEW_BUDGET_S = 1.5  # reading kept calls in one view; the rest is read on after it (`read_on`)
READ_ON_S = 300.0
# The marks' colours: the line is PALETTE[0]; the page's legend (style.css) uses the same.
VERSION_COLOR, MODEL_COLOR = charts.PALETTE[1], charts.PALETTE[3]


def asked(params: dict[str, str]) -> tuple[Period, str | None]:
    """The period (as the dashboard's) and the one feature asked for, if any."""
    try:
        period = period_of(params)
    except BadPeriod as exc:
        raise Refusal(str(exc)) from None
    feature = params.get("feature") or None
    if feature is not None and "\x00" in feature:  # no feature holds one (PostgreSQL refuses it outright)
        raise Refusal("feature: a NUL character matches nothing stored")
    return period, feature


def figures(web: Web, period: Period, feature: str | None) -> DriftByDay:
    # One view reads at a time; a second waits and then finds the days read. While the days
    # a view left are read on, views read none themselves: they show what is read so far.
    with web.drift_cache_lock:
        reading_on = web.drift_reader is not None and web.drift_reader.is_alive()
        budget = 0.0 if reading_on else VIEW_BUDGET_S
        try:
            r = drift.drift_by_day(web.reading, period, web.drift_cache, budget, feature)
        except ReadOnlyError as exc:  # `daily` not read within its time limit: say so, not a 500
            raise Refusal(f"{exc}; choose a shorter period", 503) from None
        if r.unread and not reading_on and not web.closed:
            # Off the request's path, one thread at a time; it shares the cache, not this lock.
            reader = threading.Thread(
                target=read_on, args=(web, period), name="llmlog-drift-days", daemon=True
            )
            web.drift_reader = reader
            reader.start()
    return r


class Closed(Exception):
    pass


def read_on(web: Web, period: Period) -> None:
    """Read the days of `period` a view left into the cache, within `READ_ON_S`; stopped
    when the app closes (at its next day)."""

    @contextlib.contextmanager
    def reading() -> Iterator[Store]:
        if web.closed:
            raise Closed
        with web.reading() as store:
            yield store

    try:
        drift.drift_by_day(reading, period, web.drift_cache, READ_ON_S)
    except Closed:
        pass
    except Exception:  # the store failing: the next view says what it can
        log.warning("llmlog: reading the days of drift per day failed", exc_info=True)


def short(feature: str | None, name: str) -> str:
    """A version as its feature's chart labels it: "v2" for "code-review@v2"."""
    prefix = f"{feature}@" if feature is not None else None
    return name[len(prefix) :] if prefix and name.startswith(prefix) and len(name) > len(prefix) else name


def marks(period: Period, f: Feature) -> list[charts.Mark]:
    index = {d: i for i, d in enumerate(period.dates())}
    return [
        charts.Mark(
            index[a.day],
            short(f.feature, a.name),
            f"{'prompt version' if a.kind == 'version' else 'model'} {a.name}: first call on {a.day}",
            VERSION_COLOR if a.kind == "version" else MODEL_COLOR,
        )
        for a in f.marks(period)
    ]


def _rate(v: float) -> str:
    return f"{v:.1%}"


def _percent_tick(v: float) -> str:
    return f"{v * 100:g}%"


def day_calls(feature: str, day: str) -> str:
    after = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return calls_link(feature=feature, since=day, until=after)


def draw(period: Period, f: Feature, linked: bool) -> dict[str, Markup]:
    """The feature's three charts; a day links to its calls of the feature when `linked`."""
    dates = period.dates()
    name = charts.name(f.feature)
    hrefs = [day_calls(f.feature, d) for d in dates] if linked and f.feature is not None else None
    drawn = marks(period, f)
    read = [f"{d.calls:,} calls, {d.calls_read:,} read" for d in f.days]
    return {
        "output_tokens": charts.days_line(
            dates,
            [d.output_tokens for d in f.days],
            label=f"{name}: output tokens per call, per day",
            fmt=lambda v: f"{v:,.1f} tokens",
            tick=lambda v: f"{v:,g}",
            marks=drawn,
            notes=[f"{d.calls:,} calls" for d in f.days],
            hrefs=hrefs,
        ),
        "refusal_rate": charts.days_line(
            dates,
            [d.refusal_rate for d in f.days],
            label=f"{name}: refusal rate per day",
            fmt=_rate,
            tick=_percent_tick,
            marks=drawn,
            notes=read,
            hrefs=hrefs,
            color=charts.ERRORS,
        ),
        "tool_call_rate": charts.days_line(
            dates,
            [d.tool_call_rate for d in f.days],
            label=f"{name}: tool-call rate per day",
            fmt=_rate,
            tick=_percent_tick,
            marks=drawn,
            notes=read,
            hrefs=hrefs,
            color=charts.PALETTE[2],
        ),
    }


def page(request: Request) -> Response:
    web = web_of(request)
    period, feature = asked(dict(request.query_params))
    r = figures(web, period, feature)
    end = request.query_params.get("end")

    def view(
        days: int | None = None, pinned: str | None = end, one: str | None = feature, base: str = PATH
    ) -> str:
        params: dict[str, Any] = {"days": days or period.days}
        if pinned:
            params["end"] = pinned
        if one is not None:
            params["feature"] = one
        return f"{base}?{urlencode(params)}"

    linked = may("debugger")
    return web.render(
        "report_drift_by_day.html",
        period=period,
        feature=feature,
        r=r,
        features=[(f, draw(period, f, linked), f.marks(period)) for f in r.features],
        periods=[(n, view(n)) for n in PERIODS],
        view=view,
        version_label=short,
        permalink=view(pinned=period.last.isoformat()),
        api=view(pinned=period.last.isoformat(), base=API),
        compare_href=lambda **p: "/reports/compare?" + urlencode(p),
        calls_link=calls_link,
        label=charts.name,
    )


def api(request: Request) -> Response:
    period, feature = asked(dict(request.query_params))
    return JSONResponse(figures(web_of(request), period, feature).to_json())


def routes() -> list[BaseRoute]:
    # Figures, open to viewers; the links to the calls are drawn only for roles that may open them.
    return [Page(PATH, page, role="viewer"), Page(API, api, role="viewer")]
