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
import math
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from operator import mul
from pathlib import Path
from typing import Any, cast

import genai_prices
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices, Usage, calc_unit_price

from llmlog.core.logs import recording_log
from llmlog.core.record import Call

log = recording_log()  # never raises: a handler of the app's cannot stop recording

RATE_CARD = f"genai-prices {genai_prices.__version__}"
PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
MTOK = 1_000_000
_MTOK_PLACES = 6
_EXACT = 10**24  # below it, a sum of lines in whole numbers is exact in a Decimal
#: The lines a call is billed in (see `breakdown`), each with the price key it is billed at.
LINES = (
    ("input", "input_mtok"),
    ("cache read", "cache_read_mtok"),
    ("cache write (5m)", "cache_write_mtok"),
    ("cache write (1h)", "cache_write_1h_mtok"),
    ("output", "output_mtok"),
)
#: `price` checks its line arithmetic against genai-prices on the first call of each price and
#: usage shape, then on every this-many-th: a difference that shows only at some token counts
#: is caught without paying the library's ~100 µs on every call.
VERIFY_EVERY = 64
#: Distinct (provider, model) names remembered; names come from traffic, so memory is bounded.
MAX_MODELS = 10_000

Rate = Decimal | TieredPrices


class PriceFileError(ValueError):
    pass


@dataclass(frozen=True)
class Override:
    match: str
    provider: str | None
    start: date | None
    prices: ModelPrice

    def names(self, provider: str | None, model: str) -> bool:
        if self.provider and provider and self.provider.lower() != provider.lower():
            return False
        return fnmatch.fnmatchcase(model.lower(), self.match.lower())

    def in_force(self, ts: datetime) -> bool:
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
                # TOML has nan and inf: either would price every call matched to nonsense.
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or value < 0
                ):
                    raise PriceFileError(f"{where}: {key} must be a finite non-negative number")
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


def _line_rates(price: ModelPrice) -> tuple[Rate | None, ...]:
    """The rate of each of `LINES`, with the card's fall-backs: a 1-hour cache write without a
    rate of its own is billed as a 5-minute one, and any input kind without a rate as plain input."""
    rates = {key: getattr(price, key, None) for _, key in LINES}
    if rates["cache_write_1h_mtok"] is None:
        rates["cache_write_1h_mtok"] = rates["cache_write_mtok"]
    for key, rate in rates.items():
        if rate is None and key != "output_mtok":
            rates[key] = rates["input_mtok"]
    return tuple(rates[key] for _, key in LINES)


def _lines(
    rates: tuple[Rate | None, ...], call: Call, five: int | None, hour: int | None
) -> list[tuple[str, int, Rate | None, Decimal]]:
    """(label, tokens, rate, cost) for each of `LINES`: what `breakdown` shows and `price` adds up.

    input_tokens includes the cached tokens; cache writes without a 5m/1h split count as 5m.
    genai-prices' own `calc_unit_price` does each line, so long-context tiers (decided by the
    call's whole input) come out as the library's."""
    inp = cast(int, call.input_tokens)
    return [
        (label, n, rate, calc_unit_price(rate, n, inp, MTOK))
        for (label, _), n, rate in zip(LINES, _tokens(call, five, hour), rates, strict=True)
    ]


def _tokens(call: Call, five: int | None, hour: int | None) -> tuple[int, int, int, int, int]:
    """The tokens of each of `LINES`."""
    # Its callers come here only for a call with both counts.
    inp, out = cast(int, call.input_tokens), cast(int, call.output_tokens)
    read = call.cache_read_tokens or 0
    write = call.cache_creation_tokens or 0
    if five is None and hour is None:
        five, hour = write, 0
    return (max(inp - read - write, 0), read, five or 0, hour or 0, out)


def _whole(rates: tuple[Rate | None, ...]) -> tuple[tuple[int, ...], int] | None:
    """The rates as whole numbers of 10**-places dollars per million tokens, and the places;
    None when one is tiered (its rate depends on the call) or not a finite number."""
    plain: list[Decimal] = []
    for rate in rates:
        if rate is None:
            rate = Decimal(0)
        if not isinstance(rate, Decimal) or not rate.is_finite():
            return None
        plain.append(rate)
    places = max(0, *(-int(rate.as_tuple().exponent) for rate in plain))
    whole = tuple(int(rate.scaleb(places)) for rate in plain)
    if any(Decimal(w).scaleb(-places) != rate for w, rate in zip(whole, plain, strict=True)):
        return None
    return whole, places


def _line_sum(state: _PriceState, call: Call, five: int | None, hour: int | None) -> Decimal:
    """The sum of the call's `_lines`: in whole numbers when the rates allow (exact, as the
    lines are, for a few operations rather than the lines' Decimal arithmetic)."""
    if state.whole is not None:
        rates, places = state.whole
        whole = sum(map(mul, _tokens(call, five, hour), rates))
        # Within Decimal's 28 digits, where the lines round nothing either.
        if whole < _EXACT:
            return Decimal(whole).scaleb(-places - _MTOK_PLACES)
    return sum((line[3] for line in _lines(state.rates, call, five, hour)), Decimal(0))


def _plain(call: Call, five: int | None, hour: int | None) -> bool:
    """Whether `_lines` bills this usage exactly as genai-prices does whatever the price: whole
    non-negative counts, cached tokens within the input, and a 5m/1h split (when reported) that
    adds up to the cache writes. Anything else goes to the library, which decides (and often
    refuses: it cannot be priced)."""
    inp, out = call.input_tokens, call.output_tokens
    read, write = call.cache_read_tokens or 0, call.cache_creation_tokens or 0
    if not (type(inp) is int and type(out) is int and type(read) is int and type(write) is int):
        return False  # bool is an int subclass; the library refuses it
    if out < 0 or read < 0 or write < 0 or read + write > inp:
        return False
    if five is None and hour is None:
        return True
    five, hour = five or 0, hour or 0
    return type(five) is int and type(hour) is int and five >= 0 and hour >= 0 and five + hour == write


class _PriceState:
    """What a Pricer has learned about one ModelPrice (of the card or of the overrides)."""

    __slots__ = ("calls", "exact", "price", "rates", "whole")

    def __init__(self, price: ModelPrice) -> None:
        self.price = price  # held, so that its id(), the key of this state, is never reused
        self.rates = _line_rates(price)
        self.whole = _whole(self.rates)
        self.calls = [0, 0]  # calls priced by the lines so far: without, with the 5m/1h split
        self.exact = False  # the lines once disagreed with the library: always ask the library


class Pricer:
    def __init__(self, overrides: str | Path | None = None) -> None:
        self.overrides: list[Override] = []
        self.rate_card = RATE_CARD
        if overrides:
            self.overrides, digest = load_overrides(overrides)
            self.rate_card = f"{RATE_CARD} + {Path(overrides).name}@{digest}"
        # (provider, model) → the overrides naming it (latest start first) and the card's entry.
        # Both are fixed while the process runs (the card is bundled data, we never auto-update);
        # what is in force at the call's timestamp is still decided per call.
        self._models: dict[tuple[str | None, str], tuple[tuple[Override, ...], ModelInfo | None]] = {}
        # id(ModelPrice) → state; bounded: get_prices hands out the card's own ModelPrice objects.
        self._states: dict[int, _PriceState] = {}

    def _lookup(self, provider: str | None, model: str) -> tuple[tuple[Override, ...], ModelInfo | None]:
        found = self._models.get((provider, model))
        if found is None:
            overrides = tuple(o for o in self.overrides if o.names(provider, model))
            try:
                snapshot = genai_prices.data_snapshot.get_snapshot()
                info: ModelInfo | None = snapshot.find_provider_model(model, None, provider, None)[1]
            except LookupError:
                info = None
            if len(self._models) >= MAX_MODELS:
                self._models.clear()
            found = self._models[provider, model] = overrides, info
        return found

    def _model_price(self, call: Call) -> tuple[ModelPrice, str] | None:
        assert call.model is not None
        overrides, info = self._lookup(call.provider, call.model)
        for o in overrides:
            if o.in_force(call.timestamp):
                return o.prices, call.model
        if info is None:
            return None
        # Per call: prices have start dates and times of day (off-peak); this costs < 2 µs.
        return info.get_prices(call.timestamp), info.id

    def _usage(self, call: Call, five: int | None, hour: int | None) -> Usage:
        values: dict[str, Any] = {
            "input_tokens": call.input_tokens or 0,
            "output_tokens": call.output_tokens or 0,
            "cache_read_tokens": call.cache_read_tokens or 0,
            "cache_write_tokens": call.cache_creation_tokens or 0,
        }
        if five is not None or hour is not None:
            values["cache_write_5m_tokens"] = five or 0
            values["cache_write_1h_tokens"] = hour or 0
        return Usage(**values)

    def _library_total(
        self, price: ModelPrice, call: Call, five: int | None, hour: int | None
    ) -> Decimal | None:
        try:
            return price.calc_price(self._usage(call, five, hour))["total_price"]
        except (ValueError, TypeError):  # usage it refuses (negative, inconsistent) or a bad price
            return None

    def breakdown(self, call: Call) -> Breakdown | None:
        """tokens × rate = cost, per kind of token; None when the call cannot be priced."""
        if not call.model or call.input_tokens is None or call.output_tokens is None:
            return None
        found = self._model_price(call)
        if found is None:
            return None
        price, model_id = found
        five, hour = _cache_write_split(call)
        total = self._library_total(price, call, five, hour)
        if total is None:
            return None
        lines = []
        for label, tokens, rate, cost in _lines(_line_rates(price), call, five, hour):
            if not tokens and label.startswith("cache"):
                continue
            effective = None
            if rate is not None:
                base = rate.base if isinstance(rate, TieredPrices) else rate  # a tiered rate's base
                effective = cost * MTOK / tokens if tokens else base
            lines.append(Line(label, tokens, effective, cost))
        rest = total - sum((line.cost for line in lines), Decimal(0))
        if rest:  # what the lines do not cover (a unit they lack, an inconsistent 5m/1h split)
            lines.append(Line("other", 0, None, rest))
        return Breakdown(tuple(lines), total, self.rate_card, model_id)

    def _total(self, call: Call) -> Decimal | None:
        """The call's cost; None when it cannot be priced. Equal to genai-prices' calc_price total.

        Ingest prices every call, and the library's generic calc_price (unit registry,
        decomposition, validation) costs ~100 µs. The sum of the breakdown's lines is the same
        for the prices and usages of typical traffic at a few µs; it is checked against the
        library (first call per price and usage shape, then 1 in VERIFY_EVERY), and a price for
        which it ever differs is left to the library from then on."""
        if not call.model or call.input_tokens is None or call.output_tokens is None:
            return None
        found = self._model_price(call)
        if found is None:
            return None
        price = found[0]
        state = self._states.get(id(price))
        if state is None:
            state = self._states[id(price)] = _PriceState(price)
        five, hour = _cache_write_split(call)
        if state.exact or not _plain(call, five, hour):
            return self._library_total(price, call, five, hour)
        split = five is not None or hour is not None
        n = state.calls[split]
        state.calls[split] = n + 1
        total = _line_sum(state, call, five, hour)
        if n % VERIFY_EVERY:
            return total
        exact = self._library_total(price, call, five, hour)
        if exact != total:
            state.exact = True
            log.debug(
                "pricing: the lines give %s but genai-prices %s for %s (%r); asking genai-prices from now on",
                total,
                exact,
                call.model,
                price,
            )
        return exact

    def price(self, call: Call) -> Call:
        """Set cost_usd and rate_card on the call (NULL cost when it cannot be priced)."""
        total = self._total(call)
        call.cost_usd = float(total) if total is not None else None
        call.rate_card = self.rate_card if total is not None else None
        return call
