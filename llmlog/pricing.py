"""Cost at ingest: token counts × the rate card in force at the call's timestamp.

The rate card is the maintained `genai-prices` package (bundled data, used offline: we never
call its auto-update). It knows cache reads and 5-minute/1-hour cache writes, long-context
tiers and historic prices. A user override file (TOML) adds models it lacks or corrects it:

    [[model]]
    provider = "openai"              # optional
    match = "ft:gpt-4o-mini:acme*"   # model name, shell-style wildcards, case-insensitive
    start = 2026-01-01               # optional: in force from this UTC date (entries make a history)
    input_mtok = 0.30                # USD per million tokens
    output_mtok = 1.20
    cache_read_mtok = 0.15           # also cache_write_mtok, cache_write_1h_mtok
"""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices.types import ModelPrice, Usage, calc_unit_price

from llmlog.record import Call

RATE_CARD = f"genai-prices {genai_prices.__version__}"
PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
MTOK = 1_000_000


class PriceFileError(ValueError):
    pass


@dataclass(frozen=True)
class Override:
    match: str
    provider: str | None
    start: date | None
    prices: ModelPrice

    def applies(self, provider: str | None, model: str, ts: datetime) -> bool:
        if self.provider and provider and self.provider.lower() != provider.lower():
            return False
        if not fnmatch.fnmatchcase(model.lower(), self.match.lower()):
            return False
        return self.start is None or ts.date() >= self.start


@dataclass(frozen=True)
class Line:
    label: str
    tokens: int
    rate_mtok: Decimal | None  # USD per million tokens; None when the card has no such rate
    cost: Decimal


@dataclass(frozen=True)
class Breakdown:
    lines: tuple[Line, ...]
    total: Decimal
    rate_card: str
    model: str  # the rate card's name for the model


def load_overrides(path: str | Path) -> tuple[list[Override], str]:
    raw = Path(path).read_bytes()
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PriceFileError(f"{path}: {exc}") from None
    entries = doc.get("model", [])
    if not isinstance(entries, list):
        raise PriceFileError(f"{path}: expected [[model]] tables")
    out: list[Override] = []
    for n, entry in enumerate(entries, 1):
        where = f"{path}: [[model]] #{n}"
        if not isinstance(entry.get("match"), str):
            raise PriceFileError(f"{where}: 'match' (the model name) is required")
        unknown = set(entry) - {"match", "provider", "start", *PRICE_KEYS}
        if unknown:
            raise PriceFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        start = entry.get("start")
        if isinstance(start, datetime):
            start = start.date()
        if start is not None and not isinstance(start, date):
            raise PriceFileError(f"{where}: 'start' must be a date like 2026-01-01")
        prices: dict[str, Decimal] = {}
        for key in PRICE_KEYS:
            if key in entry:
                value = entry[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise PriceFileError(f"{where}: {key} must be a non-negative number")
                prices[key] = Decimal(str(value))
        if "input_mtok" not in prices or "output_mtok" not in prices:
            raise PriceFileError(f"{where}: input_mtok and output_mtok are required")
        out.append(Override(entry["match"], entry.get("provider"), start, ModelPrice(**prices)))
    # Latest start first, so the first that applies is the one in force.
    out.sort(key=lambda o: o.start or date.min, reverse=True)
    return out, hashlib.sha256(raw).hexdigest()[:8]


def _cache_write_split(call: Call) -> tuple[int | None, int | None]:
    """Anthropic reports cache writes per TTL (5m/1h); they are priced differently."""
    usage = (call.response or {}).get("usage") if isinstance(call.response, dict) else None
    split = usage.get("cache_creation") if isinstance(usage, dict) else None
    if not isinstance(split, dict):
        return None, None
    five, hour = split.get("ephemeral_5m_input_tokens"), split.get("ephemeral_1h_input_tokens")
    return (five if isinstance(five, int) else None), (hour if isinstance(hour, int) else None)


class Pricer:
    def __init__(self, overrides: str | Path | None = None) -> None:
        self.overrides: list[Override] = []
        self.rate_card = RATE_CARD
        if overrides:
            self.overrides, digest = load_overrides(overrides)
            self.rate_card = f"{RATE_CARD} + {Path(overrides).name}@{digest}"

    def _model_price(self, call: Call) -> tuple[ModelPrice, str] | None:
        assert call.model is not None
        for o in self.overrides:
            if o.applies(call.provider, call.model, call.timestamp):
                return o.prices, call.model
        try:
            snapshot = genai_prices.data_snapshot.get_snapshot()
            _provider, model = snapshot.find_provider_model(call.model, None, call.provider, None)
        except LookupError:
            return None
        return model.get_prices(call.timestamp), model.id

    def _usage(self, call: Call) -> Usage:
        values: dict[str, Any] = {
            "input_tokens": call.input_tokens or 0,
            "output_tokens": call.output_tokens or 0,
            "cache_read_tokens": call.cache_read_tokens or 0,
            "cache_write_tokens": call.cache_creation_tokens or 0,
        }
        five, hour = _cache_write_split(call)
        if five is not None or hour is not None:
            values["cache_write_5m_tokens"] = five or 0
            values["cache_write_1h_tokens"] = hour or 0
        return Usage(**values)

    def _price_and_total(self, call: Call) -> tuple[ModelPrice, str, Decimal] | None:
        if not call.model or call.input_tokens is None or call.output_tokens is None:
            return None
        found = self._model_price(call)
        if found is None:
            return None
        price, model_id = found
        try:
            total = price.calc_price(self._usage(call))["total_price"]
        except (ValueError, TypeError):
            return None
        return price, model_id, total

    def breakdown(self, call: Call) -> Breakdown | None:
        """tokens × rate = cost, per kind of token; None when the call cannot be priced."""
        priced = self._price_and_total(call)
        if priced is None:
            return None
        price, model_id, total = priced
        read = call.cache_read_tokens or 0
        write = call.cache_creation_tokens or 0
        five, hour = _cache_write_split(call)
        if five is None and hour is None:
            five, hour = write, 0
        parts = [
            ("input", max(call.input_tokens - read - write, 0), "input_mtok"),
            ("cache read", read, "cache_read_mtok"),
            ("cache write (5m)", five or 0, "cache_write_mtok"),
            ("cache write (1h)", hour or 0, "cache_write_1h_mtok"),
            ("output", call.output_tokens, "output_mtok"),
        ]
        lines = []
        for label, tokens, key in parts:
            rate = getattr(price, key, None)
            if rate is None and key == "cache_write_1h_mtok":
                rate = getattr(price, "cache_write_mtok", None)
            if rate is None and key != "output_mtok":
                rate = getattr(price, "input_mtok", None)  # the card bills it as plain input
            if not tokens and label.startswith("cache"):
                continue
            cost = calc_unit_price(rate, tokens, call.input_tokens, MTOK)
            effective = None
            if rate is not None:
                effective = cost * MTOK / tokens if tokens else getattr(rate, "base", rate)
            lines.append(Line(label, tokens, effective, cost))
        rest = total - sum((line.cost for line in lines), Decimal(0))
        if rest:
            lines.append(Line("other", 0, None, rest))
        return Breakdown(tuple(lines), total, self.rate_card, model_id)

    def price(self, call: Call) -> Call:
        """Set cost_usd and rate_card on the call (NULL cost when it cannot be priced)."""
        # Only the total: the per-line breakdown costs as much again, and ingest prices every call.
        priced = self._price_and_total(call)
        call.cost_usd = float(priced[2]) if priced is not None else None
        call.rate_card = self.rate_card if priced is not None else None
        return call
