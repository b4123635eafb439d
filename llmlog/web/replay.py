"""Pages: replay a call (a form; a POST re-sends it) and a replay beside its original.

GET never sends anything: `/calls/{id}/replay` shows the form and `/calls/{id}/replay/{new}`
compares two stored calls. Only a POST to `/calls/{id}/replay` reaches the provider, and
only from a page of this site (a cross-site form cannot make the server spend money).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from llmlog.analysis.answers import diff, response_text, tool_calls_text
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.operations.replay import ReplayError, error_text, replay, request_of, requested_model
from llmlog.web.answer import Refusal
from llmlog.web.auth import Page
from llmlog.web.state import Web, web_of

MAX_FORM_BYTES = 4 * 2**20  # a system prompt of a few hundred kB is plausible; megabytes are not
DEFAULT_BASE = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}


@dataclass
class Delta:
    label: str
    logged: str
    replayed: str
    change: str = ""
    direction: str = ""  # "up", "down" or "" (same, or not comparable)


def _delta(label: str, a: float | None, b: float | None, unit: str) -> Delta:
    def show(v: float, signed: bool = False) -> str:
        sign = ("+" if v > 0 else "−" if v < 0 else "±") if signed else ""
        v = abs(v) if signed else v
        if unit == "usd":
            return f"{sign}${v:,.6f}"
        if unit == "ms":
            return f"{sign}{v:,.0f} ms"
        return f"{sign}{v:,.0f}"

    row = Delta(label, "–" if a is None else show(a), "–" if b is None else show(b))
    if a is not None and b is not None:
        d = b - a
        row.change = show(d, signed=True)
        if a:
            pct = f"{d / a:+.0%}"
            row.change += f" ({pct.replace('-', '−')})"
        row.direction = "up" if d > 0 else "down" if d < 0 else ""
    return row


def deltas(a: Call, b: Call) -> list[Delta]:
    return [
        _delta("input tokens", a.input_tokens, b.input_tokens, "tokens"),
        _delta("output tokens", a.output_tokens, b.output_tokens, "tokens"),
        # Cache hits are part of the input and priced lower: they explain a cost that moves
        # while the input does not.
        _delta("cache read tokens", a.cache_read_tokens, b.cache_read_tokens, "tokens"),
        _delta("cache write tokens", a.cache_creation_tokens, b.cache_creation_tokens, "tokens"),
        _delta("cost", a.cost_usd, b.cost_usd, "usd"),
        _delta("first token", a.first_token_ms, b.first_token_ms, "ms"),
        _delta("latency", a.latency_ms, b.latency_ms, "ms"),
    ]


@lru_cache(maxsize=8)
def card_models(provider: str | None) -> tuple[str, ...]:
    """The models the bundled rate card prices for a provider."""
    import genai_prices

    snapshot = genai_prices.data_snapshot.get_snapshot()
    return tuple(sorted(m.id for p in snapshot.providers if p.id == provider for m in p.models))


def load(web: Web, call_id: str) -> Call:
    with web.reading() as store:
        try:
            call = store.get(call_id)
        except LookupError as exc:
            raise Refusal(str(exc)) from None
    if call is None:
        raise Refusal("no such call", 404)
    return call


def models(web: Web, call: Call) -> list[str]:
    with web.reading() as store:
        # Too slow on this store: none, and the rate card's list still helps.
        facet = store.facets(CallFilter(provider=call.provider), ["model"], limit=50)["model"]
        seen = [m for m, _ in facet.values]
    names = [requested_model(call), *seen, *card_models(call.provider)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def target(web: Web, provider: str | None) -> str:
    p = web.providers
    given = p.anthropic_base_url if provider == "anthropic" else p.openai_base_url
    env = "ANTHROPIC_BASE_URL" if provider == "anthropic" else "OPENAI_BASE_URL"
    return given or os.environ.get(env) or DEFAULT_BASE.get(provider or "", "?")


def form(web: Web, call_id: str) -> Response:
    call = load(web, call_id)
    try:
        api, body = request_of(call)
    except ReplayError as exc:
        raise Refusal(f"cannot replay this call: {exc}", exc.status) from None
    return web.render(
        "replay_form.html",
        call=call,
        api=api,
        request=body,
        model=requested_model(call) or "",
        models=models(web, call),
        system=call.system_prompt or "",
        target=target(web, call.provider),
    )


def submit(web: Web, call_id: str, fields: dict[str, list[str]]) -> Response:
    call = load(web, call_id)
    model = (fields.get("model") or [""])[0].strip() or None
    system: str | None = None
    if "system_prompt" in fields:
        # Browsers send a textarea's line breaks as CRLF: an untouched prompt is no edit.
        text = fields["system_prompt"][0].replace("\r\n", "\n")
        if text != (call.system_prompt or "").replace("\r\n", "\n"):
            system = text
    try:
        # The provider may take seconds or minutes: the store's lock is not held meanwhile.
        new = replay(call, model=model, system_prompt=system, providers=web.providers)
    except ReplayError as exc:
        raise Refusal(f"cannot replay this call: {exc}", exc.status) from None
    try:
        with web.reading() as store:
            store.insert([new])
    except Exception as exc:
        raise Refusal(f"the replay was answered but could not be stored: {exc}", 500) from None
    return RedirectResponse(f"/calls/{call.id}/replay/{new.id}", status_code=303)


async def replay_page(request: Request) -> Response:
    call_id = request.path_params["call_id"]
    if request.method != "POST":
        return await run_in_threadpool(form, web_of(request), call_id)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refusal("the form is too large", 413)
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return await run_in_threadpool(submit, web_of(request), call_id, fields)


def compare(request: Request) -> Response:
    web = web_of(request)
    original = load(web, request.path_params["call_id"])
    new = load(web, request.path_params["replay_id"])
    meta: dict[str, Any] = new.metadata if isinstance(new.metadata, dict) else {}
    ours = meta.get("llmlog")
    notes = ours if isinstance(ours, dict) else {}
    info = notes.get("replay") if isinstance(notes.get("replay"), dict) else {}
    return web.render(
        "replay.html",
        original=original,
        new=new,
        linked=meta.get("replay_of") == original.id,
        info=info,
        text=diff(response_text(original), response_text(new)),
        tools=diff(tool_calls_text(original), tool_calls_text(new), lines=True),
        system=diff(original.system_prompt or "", new.system_prompt or "", lines=True),
        deltas=deltas(original, new),
        errors=(error_text(original), error_text(new)),
    )


def routes() -> list[BaseRoute]:
    return [
        Page("/calls/{call_id}/replay", replay_page, role="debugger", methods=["GET", "POST"]),
        Page("/calls/{call_id}/replay/{replay_id}", compare, role="debugger"),
    ]
