"""The alerts' page (`/alerts`) and its JSON twin: the findings open now and where each was
posted, the rules and whether their queries run, the webhooks by name, and the history
(`llmlog.analysis.alerts`). Figures and the findings' sentences, open to viewers; a rule's
SQL to debuggers (who may run SQL), a webhook's URL to nobody (its path is often its secret).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmlog.analysis import alerts
from llmlog.store.alerts import Alert, AlertEvent
from llmlog.web.answer import JSONResponse, Refusal
from llmlog.web.auth import Page
from llmlog.web.state import may, web_of

HISTORY = 100  # lines of the history a page shows
HISTORY_MAX = 1000  # ?limit= on the JSON


def _limit(request: Request) -> int:
    given = request.query_params.get("limit", str(HISTORY))
    try:
        limit = int(given)
    except ValueError:
        raise Refusal("limit: a whole number") from None
    if not 1 <= limit <= HISTORY_MAX:
        raise Refusal(f"limit: 1 to {HISTORY_MAX}")
    return limit


def _read(request: Request, limit: int) -> tuple[alerts.Config | None, list[Alert], list[AlertEvent]]:
    with web_of(request).reading() as store:
        try:
            cfg: alerts.Config | None = alerts.config(store)
        except (ValueError, KeyError, TypeError):  # a setting changed by hand: shown as unreadable
            cfg = None
        return cfg, store.alerts(), store.alert_events(limit)


def _rules(cfg: alerts.Config | None, state: list[Alert]) -> list[dict[str, Any]]:
    by_key = {a.key: a for a in state}
    out = []
    for r in cfg.rules if cfg else []:
        a = by_key.get(r.key)
        out.append(
            {
                "name": r.name,
                "when": r.condition,
                "sql": r.sql if may("debugger") else None,
                "open": bool(a and a.open),
                "problem": a.problem if a else None,
            }
        )
    return out


def page(request: Request) -> Response:
    web = web_of(request)
    cfg, state, events = _read(request, _limit(request))
    return web.render(
        "alerts.html",
        config=cfg,
        open=[a for a in state if a.open],
        rules=_rules(cfg, state),
        events=events,
    )


def api(request: Request) -> Response:
    cfg, state, events = _read(request, _limit(request))
    return JSONResponse(
        {
            "readable": cfg is not None,
            "webhooks": [{"name": w.name, "format": w.format} for w in (cfg.webhooks if cfg else [])],
            "link_base": cfg.link_base if cfg else None,
            "rules": _rules(cfg, state),
            "open": [a.to_json() for a in state if a.open],
            "history": [e.to_json() for e in events],
        }
    )


def routes() -> list[BaseRoute]:
    return [Page("/alerts", page, role="viewer"), Page("/api/alerts", api, role="viewer")]
