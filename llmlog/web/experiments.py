"""Pages: the experiments (`llmlog experiment run`, `llmlog.operations.experiments`) — the list,
newest first, each with its change, how far its run got and what its comparison found; one
experiment whole: its definition, each metric before and after with its effect and
significance (`llmlog.analysis.experiments`), and the pairs that differ most, side by side
with the differences marked; the same as JSON under /api/experiments.

The figures are open to viewers, as the reports are. The pairs show what the calls said and
name them: they are drawn, and given in the JSON, only for a role that may open a call
(debugger and up), as the findings' links to calls are. Call ids (the sample, the pairs) are
a debugger's too; a viewer is told how many there are.

An unknown id, or one no experiment could have, is the site's 404. An id is one path
segment (quoted in links, whatever it holds); anything under /experiments/ is a page's, so
that even a path of several segments is that 404 and not the router's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import experiments as analysis
from llmlog.analysis.answers import Diff, diff, response_text, tool_calls_text
from llmlog.analysis.experiments import AGREEMENT, MEANS, RATES, Comparison, Metric, Pair
from llmlog.core.record import Call
from llmlog.operations.replay import error_text
from llmlog.store import ReadOnlyError
from llmlog.store.experiments import Experiment
from llmlog.web import charts, reports
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.dashboard import usd, usd_short
from llmlog.web.reports import p_value
from llmlog.web.state import Web, may, web_of
from llmlog.web.verdicts import Summary

# How long one view of the list spends comparing the experiments it has no verdict of; those
# past it say so, and the next view (the kept ones being kept) goes on from there.
LIST_BUDGET_S = 2.0
SHOWN = 5  # pairs shown whole, side by side, the most different first
LISTED = 50  # and after them, the next ones, a line each
NOT_FOUND = "no such experiment"


# ---------------------------------------------------------------- how figures are said


def figure(metric: str, value: float | None) -> str:
    """As the reports say a figure; the pairs' agreement too (a share, and a 0-to-1 score)."""
    if value is not None and metric == "tool_agreement":
        return f"{value:.1%}"
    if value is not None and metric == "similarity":
        return f"{value:.2f}"
    return reports.figure(metric, value)


def change(m: Metric) -> str:
    """The mean paired difference in the metric's unit (a rate's in points), and relative."""
    if m.change is None:
        return ""
    if m.metric in RATES:
        return f"{m.change * 100:+.1f} pts"
    sign = "+" if m.change >= 0 else "-"
    said = sign + figure(m.metric, abs(m.change))
    return said + (f" ({m.relative:+.0%})" if m.relative is not None else "")


def effect(m: Metric) -> str:
    """A mean's effect in standard deviations of the paired differences. A rate's is its
    change in points, which the change column gives already (as the CLI's table does)."""
    return "" if m.effect is None or m.metric in RATES else f"{m.effect:+.2f} sd"


def bars(m: Metric) -> Any:
    return charts.pair(
        m.before,
        m.after,
        label=f"{m.metric}: {figure(m.metric, m.before)} → {figure(m.metric, m.after)}",
        fmt=lambda v: figure(m.metric, v),
    )


def money(e: Experiment, short: bool = False) -> str:
    """What the run spent, against what it was estimated to cost and may spend."""
    fmt = usd_short if short else usd
    said = f"{fmt(e.spent_usd)} spent"
    if e.estimate_usd is not None:
        said += f" of {fmt(e.estimate_usd)} estimated"
    if e.budget_usd is not None:
        said += f", budget {fmt(e.budget_usd)}"
    return said


def definition(e: Experiment, ids: bool) -> dict[str, Any]:
    """The definition as JSON; with `ids`, the sampled calls' ids (and the fields kept for
    later, which may name calls too)."""
    out = e.to_json()
    out["sampled"] = sampled(e)
    out["change_text"] = e.describe_change()
    if not ids:
        del out["sample"], out["extra"]
    return out


def sampled(e: Experiment) -> int:
    """The calls sampled (a sample naming one twice holds it once, as its comparison does)."""
    return len(set(e.sample))


def href(e: Experiment) -> str:
    return "/experiments/" + quote(e.id, safe="")


# ---------------------------------------------------------------- reading


def find(web: Web, experiment_id: str) -> Experiment:
    """The experiment of a page's path, as a person typed it (`store.experiments.lookup_id`:
    the run's ids in any case); the site's 404 for an id no experiment can have, which the
    store never sends to its engine."""
    with web.reading() as store:
        found = store.experiment(experiment_id)
    if found is None:
        raise Refusal(NOT_FOUND, 404)
    return found


def summary(c: Comparison) -> Summary:
    return Summary(len(c.pairs), len(c.done), c.verdict, any(m.flagged for m in c.metrics))


def compared(web: Web, e: Experiment) -> Comparison:
    """The experiment's comparison, read now; what it found is kept for the list."""
    try:
        with web.reading() as store:
            comparison = analysis.load(store, e)
    except ReadOnlyError as exc:  # stopped at the store's time limit: say so, not a 500
        raise Refusal(f"the comparison could not be read: {exc}", 503) from None
    web.verdicts.put(e, summary(comparison))
    return comparison


def listed(web: Web) -> list[tuple[Experiment, Summary | None]]:
    """Each experiment, newest first, with its comparison's summary where it is kept or can
    be read within the list's budget (None: not read this time)."""
    with web.reading() as store:
        found = store.experiments()
    started = time.monotonic()
    out: list[tuple[Experiment, Summary | None]] = []
    for e in found:
        known = web.verdicts.get(e)
        if known is None and time.monotonic() - started < LIST_BUDGET_S:
            try:
                known = summary(compared(web, e))
            except Refusal:  # too slow for the store: its own page says so
                known = None
        out.append((e, known))
    return out


# ---------------------------------------------------------------- the pairs, side by side


@dataclass
class Shown:
    """One pair as its page shows it: why it is among the first to read, and its answers'
    and tool calls' differences."""

    original: Call
    replay: Call
    similarity: float | None
    why: list[str]
    text: Diff
    tools: Diff | None  # None when neither side called a tool
    errors: tuple[str | None, str | None]
    sealed: bool  # either answer sealed (regulated mode, no key here): nothing to set side by side


def one_side(what: str, sides: tuple[bool, bool]) -> str | None:
    if all(sides):
        return f"{what} on both sides"
    if any(sides):
        return f"{what} on the {'original' if sides[0] else 'replay'} only"
    return None


def reasons(p: Pair) -> list[str]:
    """Why a pair is worth reading, in words: what differs."""
    found = [
        one_side("failed", p.failed),
        one_side("declined", p.refused),
        "other tools called" if p.tools_agree is False else None,
        f"answers {p.similarity:.0%} alike" if p.similarity is not None else None,
        "answers sealed" if p.replay is not None and sealed(p) else None,
    ]
    return [w for w in found if w]


def sealed(p: Pair) -> bool:
    return analysis.sealed(p.original) or (p.replay is not None and analysis.sealed(p.replay))


def shown(p: Pair) -> Shown | None:
    if p.replay is None:
        return None
    a, b = p.original, p.replay
    tools = None
    if a.tool_calls or b.tool_calls:
        tools = diff(tool_calls_text(a), tool_calls_text(b), lines=True)
    return Shown(
        a, b, p.similarity, reasons(p), diff(response_text(a), response_text(b)), tools,
        (error_text(a), error_text(b)), sealed(p),
    )  # fmt: skip


def ordered(c: Comparison) -> list[Pair]:
    """The replayed pairs, the most different first."""
    return [p for p in c.most_different(len(c.pairs)) if p.replay is not None]


# ---------------------------------------------------------------- pages


def index(request: Request) -> Response:
    web = web_of(request)
    found = listed(web)
    return web.render(
        "experiments.html",
        experiments=found,
        unread=sum(1 for _, s in found if s is None),
        href=href,
        money=money,
        sampled=sampled,
        budget_s=LIST_BUDGET_S,
    )


def api_index(request: Request) -> Response:
    web = web_of(request)
    return JSONResponse(
        {
            "experiments": [
                {
                    **definition(e, ids=False),
                    "url": href(e),
                    "compared": s is not None,
                    "stored": s.stored if s else None,
                    "replayed": s.replayed if s else None,
                    "verdict": s.verdict if s else None,
                    "flagged": s.flagged if s else None,
                }
                for e, s in listed(web)
            ]
        }
    )


def page(request: Request) -> Response:
    web = web_of(request)
    e = find(web, request.path_params["experiment_id"])
    c = compared(web, e)
    pairs = ordered(c) if may("debugger") else []
    return web.render(
        "experiment.html",
        e=e,
        c=c,
        compared=[(m, bars(m)) for m in c.metrics if m.metric in (*MEANS, *RATES)],
        agreement=[m for m in c.metrics if m.metric in AGREEMENT],
        shown=[s for s in map(shown, pairs[:SHOWN]) if s is not None],
        more=pairs[SHOWN : SHOWN + LISTED],
        left=max(0, len(pairs) - SHOWN - LISTED),
        figure=figure,
        change=change,
        effect=effect,
        p_value=p_value,
        money=money,
        sampled=sampled(e),
        api=f"/api{href(e)}",
    )


def api(request: Request) -> Response:
    """`llmlog experiment show --json`'s comparison; to a viewer, without what names the calls."""
    web = web_of(request)
    e = find(web, request.path_params["experiment_id"])
    c = compared(web, e)
    full = may("debugger")
    body = c.to_json()
    body["experiment"] = definition(e, ids=full)
    if full:
        # Why each of the first to read is there, in the words the page gives.
        body["why"] = {p.original.id: reasons(p) for p in c.most_different()}
    else:
        del body["pairs"], body["most_different"]
        body["pairs_need"] = "debugger"  # they name the calls, and compare their text
    return JSONResponse(body)


def routes() -> list[BaseRoute]:
    return [
        # Figures, open to viewers; the pairs (the calls' text and ids) drawn only for roles
        # that may open a call.
        Page("/experiments", index, role="viewer"),
        Page("/experiments/{experiment_id:path}", page, role="viewer"),
        Page("/api/experiments", api_index, role="viewer"),
        Page("/api/experiments/{experiment_id:path}", api, role="viewer"),
    ]
