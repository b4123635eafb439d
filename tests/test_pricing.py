"""Cost figures against hand computations from the providers' published rates."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices.types import ModelPrice, TieredPrices, Usage
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlog.core.record import Call
from llmlog.pipeline import pricing
from llmlog.pipeline.pricing import RATE_CARD, PriceFileError, Pricer

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def anthropic_call(**kw: object) -> Call:
    base: dict[str, object] = dict(provider="anthropic", model="claude-sonnet-4-5-20250929", timestamp=NOW)
    return Call(**{**base, **kw})  # type: ignore[arg-type]


def test_anthropic_cache_reads_and_both_write_ttls() -> None:
    # 100 uncached + 5,000 cache read + 1,500 written for 5 minutes + 500 written for 1 hour; 300 out.
    call = anthropic_call(
        input_tokens=7100,
        output_tokens=300,
        cache_read_tokens=5000,
        cache_creation_tokens=2000,
        response={
            "usage": {"cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500}}
        },
    )
    # Sonnet 4.5: $3 input, $0.30 cache read, $3.75 5m write, $6 1h write, $15 output per MTok.
    expected = (100 * 3 + 5000 * 0.30 + 1500 * 3.75 + 500 * 6 + 300 * 15) / 1e6
    b = Pricer().breakdown(call)
    assert b is not None and float(b.total) == pytest.approx(expected) == 0.014925
    lines = {line.label: line for line in b.lines}
    assert lines["input"].tokens == 100 and lines["input"].rate_mtok == 3
    assert lines["cache read"].cost == Decimal("0.0015")
    assert lines["cache write (5m)"].tokens == 1500 and lines["cache write (1h)"].rate_mtok == 6
    assert sum(line.cost for line in b.lines) == b.total
    priced = Pricer().price(call)
    assert priced.cost_usd == pytest.approx(expected) and priced.rate_card == RATE_CARD


def test_openai_cached_input() -> None:
    call = Call(
        provider="openai",
        model="gpt-4o-2024-08-06",
        timestamp=NOW,
        input_tokens=2000,
        output_tokens=100,
        cache_read_tokens=1024,
        cache_creation_tokens=0,
    )
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per MTok; input_tokens includes the cached.
    assert Pricer().price(call).cost_usd == pytest.approx((976 * 2.5 + 1024 * 1.25 + 100 * 10) / 1e6)


def test_long_context_tier() -> None:
    # Above 200k input tokens Sonnet 4.5 bills every token at the long-context rate: $6 in, $22.50 out.
    call = anthropic_call(
        input_tokens=250_000, output_tokens=1000, cache_read_tokens=0, cache_creation_tokens=0
    )
    assert Pricer().price(call).cost_usd == pytest.approx((250_000 * 6 + 1000 * 22.5) / 1e6)


def test_historic_prices_follow_the_timestamp() -> None:
    # OpenAI cut o3 from $10/$40 to $2/$8 per MTok on 2025-06-10.
    before = Call(
        provider="openai",
        model="o3",
        timestamp=datetime(2025, 5, 1, tzinfo=UTC),
        input_tokens=1000,
        output_tokens=1000,
    )
    after = before.replace(timestamp=datetime(2025, 7, 1, tzinfo=UTC))
    assert Pricer().price(before).cost_usd == pytest.approx((1000 * 10 + 1000 * 40) / 1e6)
    assert Pricer().price(after).cost_usd == pytest.approx((1000 * 2 + 1000 * 8) / 1e6)


def test_unknown_model_or_missing_usage_is_null() -> None:
    assert (
        Pricer()
        .price(Call(provider="openai", model="my-own-model", input_tokens=5, output_tokens=5))
        .cost_usd
        is None
    )
    assert Pricer().price(anthropic_call(input_tokens=None, output_tokens=None)).cost_usd is None
    assert Pricer().price(anthropic_call(input_tokens=10, output_tokens=10)).rate_card == RATE_CARD


def test_override_file_adds_and_corrects_prices(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        """
        [[model]]
        match = "acme-ft-*"
        input_mtok = 1.0
        output_mtok = 4.0

        [[model]]
        match = "acme-ft-*"
        start = 2026-06-01
        input_mtok = 0.5
        output_mtok = 2.0
        cache_read_mtok = 0.1

        [[model]]
        provider = "anthropic"
        match = "claude-sonnet-4-5*"
        input_mtok = 2.0
        output_mtok = 10.0
        """
    )
    pricer = Pricer(prices)
    old = Call(
        provider="openai",
        model="acme-ft-v1",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        input_tokens=1_000_000,
        output_tokens=1_000_000,
    )
    assert pricer.price(old).cost_usd == pytest.approx(5.0)
    new = old.replace(timestamp=datetime(2026, 7, 1, tzinfo=UTC), cache_read_tokens=500_000)
    assert pricer.price(new).cost_usd == pytest.approx(0.5 * 0.5 + 0.5 * 0.1 + 2.0)
    corrected = pricer.price(anthropic_call(input_tokens=1_000_000, output_tokens=0))
    assert corrected.cost_usd == pytest.approx(2.0)
    assert corrected.rate_card is not None and "prices.toml@" in corrected.rate_card


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[model]]\ninput_mtok = 1\noutput_mtok = 1\n", "'match'"),
        ('[[model]]\nmatch = "x"\ninput_mtok = 1\n', "required"),
        ('[[model]]\nmatch = "x"\ninput_mtok = -1\noutput_mtok = 1\n', "non-negative"),
        ('[[model]]\nmatch = "x"\ninput_mtok = 1\noutput_mtok = 1\nbogus = 2\n', "bogus"),
        ("[[model]\n", "prices.toml"),
    ],
)
def test_override_file_errors_are_clear(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=message):
        Pricer(path)


# ---------------------------------------------------------------- the fast total is the library's

# Real rate-card entries: long-context tiers (sonnet 4.5 at 200k, gpt-5.6-luna at 272k), price
# changes (opus 4.6 drops its tiers on 2026-03-13, o3 is cut on 2025-06-10, luna on 2026-07-30,
# gpt-5.5-cyber gains a cache-read rate on 2026-10-19), no 1h cache-write rate (gpt-6-cyber),
# off-peak hours (deepseek-chat, 16:30-00:30 UTC).
MODELS = [
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-6"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4.1-mini"),
    ("openai", "o3"),
    ("openai", "gpt-5.6-luna"),
    ("openai", "gpt-5.5-cyber"),
    ("openai", "gpt-6-cyber"),
    ("deepseek", "deepseek-chat"),
]
TIMESTAMPS = [
    datetime(2025, 5, 1, 3, tzinfo=UTC),
    datetime(2025, 7, 1, 17, tzinfo=UTC),
    datetime(2026, 3, 12, 23, 59, tzinfo=UTC),
    datetime(2026, 3, 13, 0, 1, tzinfo=UTC),
    datetime(2026, 7, 29, 12, tzinfo=UTC),
    datetime(2026, 7, 31, 12, tzinfo=UTC),
    datetime(2026, 10, 18, 20, tzinfo=UTC),
    datetime(2026, 10, 20, 8, tzinfo=UTC),
]
THRESHOLDS = [1_000, 199_999, 200_000, 200_001, 271_999, 272_000, 272_001]


def usages(n: int) -> list[tuple[int, int, int, int | None, int | None, int]]:
    """(input, cache read, cache write, 5m, 1h, output) around an input count of n."""
    q = n // 4
    return [
        (n, 0, 0, None, None, 777),
        (n, n // 2, 0, None, None, 0),  # cache reads, no output
        (n, q, q, None, None, 777),  # cache writes without the 5m/1h split
        (n, q, q, q - 100, 100, 777),  # with the split
        (n, 0, 300, 300, 0, 5),
        (n, 0, 300, None, 300, 5),  # only the 1h count reported
        (n, q, q, q - 300, 100, 777),  # a split that does not add up: the library decides
        (100, 80, 80, None, None, 1),  # more cached than input: the library decides
        (0, 0, 0, None, None, 0),
    ]


def grid_call(provider: str, model: str, ts: datetime, usage: tuple[Any, ...]) -> Call:
    inp, read, write, five, hour, out = usage
    split = {k: v for k, v in (("ephemeral_5m_input_tokens", five), ("ephemeral_1h_input_tokens", hour))}
    split = {k: v for k, v in split.items() if v is not None}
    return Call(
        provider=provider,
        model=model,
        timestamp=ts,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_creation_tokens=write,
        response={"usage": {"cache_creation": split}} if split else None,
    )


def library_usage(call: Call) -> Usage:
    """The call's usage as genai-prices takes it."""
    values = dict(
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cache_read_tokens=call.cache_read_tokens,
        cache_write_tokens=call.cache_creation_tokens,
    )
    split = ((call.response or {}).get("usage") or {}).get("cache_creation")
    if split:
        values["cache_write_5m_tokens"] = split.get("ephemeral_5m_input_tokens", 0)
        values["cache_write_1h_tokens"] = split.get("ephemeral_1h_input_tokens", 0)
    return Usage(**values)


def library_cost(call: Call) -> float | None:
    """genai-prices' own total for the call, straight from its top-level API."""
    assert call.model is not None
    try:
        priced = genai_prices.calc_price(
            library_usage(call), call.model, provider_id=call.provider, genai_request_timestamp=call.timestamp
        )
    except ValueError:
        return None
    return float(priced.total_price)


def model_price_cost(price: ModelPrice, call: Call) -> float | None:
    """A given ModelPrice's total for the call, by genai-prices."""
    try:
        return float(price.calc_price(library_usage(call))["total_price"])
    except ValueError:
        return None


GRID = [
    grid_call(provider, model, ts, usage)
    for (provider, model), ts, n in itertools.product(MODELS, TIMESTAMPS, THRESHOLDS)
    for usage in usages(n)
]


def test_grid_prices_as_the_library() -> None:
    pricer = Pricer()  # one Pricer: later calls of a price take the fast path unverified
    mismatches = [
        (c.model, c.timestamp, c.input_tokens, c.cache_read_tokens, c.cache_creation_tokens, c.response)
        for c in GRID
        if pricer.price(c.replace()).cost_usd != library_cost(c)
    ]
    assert not mismatches
    assert sum(library_cost(c) is None for c in GRID) < len(GRID) // 5  # the grid is mostly priced


def test_grid_lines_never_disagree_with_the_library(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every call that the lines price is also checked, so any disagreement at all is logged.
    monkeypatch.setattr(pricing, "VERIFY_EVERY", 1)
    fast = 0
    line_sum = pricing._line_sum

    def counted(*args: Any) -> Any:
        nonlocal fast
        fast += 1
        return line_sum(*args)

    monkeypatch.setattr(pricing, "_line_sum", counted)
    pricer = Pricer()
    with caplog.at_level(logging.DEBUG, logger="llmlog"):
        for c in GRID:
            pricer.price(c)
    assert not [r.getMessage() for r in caplog.records if "asking genai-prices" in r.getMessage()]
    assert fast > len(GRID) * 3 // 4  # most of the grid went through the lines


def test_a_price_the_lines_do_not_cover_goes_to_the_library(caplog: pytest.LogCaptureFixture) -> None:
    # Perplexity charges per request as well ($12 per 1,000 for sonar): a unit the lines lack.
    pricer = Pricer()
    calls = [
        Call(provider="perplexity", model="sonar", timestamp=NOW, input_tokens=n, output_tokens=n // 3)
        for n in range(1000, 200_000, 997)
    ]
    with caplog.at_level(logging.DEBUG, logger="llmlog"):
        costs = [pricer.price(c).cost_usd for c in calls]
    assert costs == [library_cost(c) for c in calls]
    assert costs[0] == pytest.approx((1000 * 1 + 333 * 1) / 1e6 + 12 / 1000)
    assert sum("asking genai-prices" in r.getMessage() for r in caplog.records) == 1


def wrong_when(condition: Any) -> Any:
    """`pricing._line_sum`, but one cent too much when condition(call)."""
    line_sum = pricing._line_sum

    def wrong(state: Any, call: Call, five: Any, hour: Any) -> Any:
        total = line_sum(state, call, five, hour)
        return total + Decimal("0.01") if condition(call) else total

    return wrong


def test_first_call_of_each_usage_shape_is_verified(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Wrong only when the 5m/1h split is reported: the first such call is checked and caught.
    monkeypatch.setattr(pricing, "_line_sum", wrong_when(lambda call: call.response is not None))
    split = {
        "usage": {"cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 100}}
    }
    plain = [
        anthropic_call(input_tokens=5000 + n, output_tokens=300, cache_creation_tokens=200) for n in range(5)
    ]
    calls = [
        *plain,
        anthropic_call(input_tokens=5000, output_tokens=300, cache_creation_tokens=200, response=split),
    ]
    pricer = Pricer()
    with caplog.at_level(logging.DEBUG, logger="llmlog"):
        costs = [pricer.price(c.replace()).cost_usd for c in [*calls, *calls]]
    assert costs == [library_cost(c) for c in [*calls, *calls]]
    assert sum("asking genai-prices" in r.getMessage() for r in caplog.records) == 1


def test_a_difference_at_some_counts_is_caught_by_the_sample(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Wrong only at 777 output tokens; the first call (100) passes its check. The sample is
    # deterministic: the 64th call of the price is checked, the lines are wrong until then
    # (63 calls, the amortization's price) and never after.
    monkeypatch.setattr(pricing, "_line_sum", wrong_when(lambda call: call.output_tokens == 777))
    calls = [anthropic_call(input_tokens=1000, output_tokens=100)]
    calls += [anthropic_call(input_tokens=1000 + n, output_tokens=777) for n in range(200)]
    pricer = Pricer()
    with caplog.at_level(logging.DEBUG, logger="llmlog"):
        wrong = [pricer.price(c.replace()).cost_usd != library_cost(c) for c in calls]
    assert wrong == [False] + [True] * (pricing.VERIFY_EVERY - 1) + [False] * (
        len(calls) - pricing.VERIFY_EVERY
    )
    assert sum("asking genai-prices" in r.getMessage() for r in caplog.records) == 1


_RATE = st.one_of(
    st.none(),
    st.decimals(min_value=0, max_value=1000, places=4),
    st.sampled_from([Decimal("3"), Decimal("0.3"), Decimal("3.75"), Decimal("1.5E+1"), Decimal("0.0000001")]),
)


@settings(max_examples=300, deadline=None)
@given(
    rates=st.tuples(*[_RATE] * 5),
    tokens=st.tuples(*[st.integers(0, 10**7)] * 4, st.integers(0, 10**32)),
    split=st.booleans(),
)
def test_a_sum_in_whole_numbers_is_the_lines_sum(
    rates: tuple[Decimal | None, ...], tokens: tuple[int, ...], split: bool
) -> None:
    """Rates that are plain numbers are summed in whole numbers: the same total as the lines
    give, at any token counts (past Decimal's digits, by the lines themselves)."""
    fresh, read, five, hour, out = tokens
    keys = ("input_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok", "output_mtok")
    state = pricing._PriceState(
        ModelPrice(**{k: r for k, r in zip(keys, rates, strict=True) if r is not None})
    )
    assert state.whole is not None
    call = Call(
        input_tokens=fresh + read + five + hour, output_tokens=out, cache_read_tokens=read,
        cache_creation_tokens=five + hour,
    )  # fmt: skip
    five_hour = (five, hour) if split else (None, None)
    lines = sum((line[3] for line in pricing._lines(state.rates, call, *five_hour)), Decimal(0))
    assert pricing._line_sum(state, call, *five_hour) == lines


def test_the_cards_rates_sum_as_their_lines() -> None:
    """Every price the grid meets: those of plain numbers are summed in whole numbers, to the
    lines' total; tiered ones by the lines."""
    pricer = Pricer()
    for c in GRID:
        pricer.price(c.replace())
    states = list(pricer._states.values())
    assert sum(s.whole is not None for s in states) > len(states) // 2
    for state in states:
        assert (state.whole is None) == any(isinstance(r, TieredPrices) for r in state.rates)
        for c in GRID[:: len(GRID) // 50]:
            if pricing._plain(c, None, None):
                lines = sum((line[3] for line in pricing._lines(state.rates, c, None, None)), Decimal(0))
                assert pricing._line_sum(state, c, None, None) == lines


def test_breakdown_other_line_carries_what_the_lines_miss() -> None:
    # 1,500 + 300 reported by TTL but 2,000 written: genai-prices bills the 1,700 not written for
    # 1h as 5m writes; the lines bill what was reported and "other" makes up the difference.
    split = {
        "usage": {"cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 300}}
    }
    call = anthropic_call(input_tokens=10_000, output_tokens=100, cache_creation_tokens=2000, response=split)
    b = Pricer().breakdown(call)
    assert b is not None and float(b.total) == library_cost(call) == Pricer().price(call).cost_usd
    assert b.lines[-1].label == "other" and b.lines[-1].cost == 200 * Decimal("3.75") / 1_000_000
    assert sum(line.cost for line in b.lines) == b.total


def test_overrides_price_as_their_model_price(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        """
        [[model]]
        match = "acme-*"
        input_mtok = 0.3
        output_mtok = 1.2

        [[model]]
        match = "acme-*"
        start = 2026-06-01
        input_mtok = 0.25
        output_mtok = 1.0
        cache_read_mtok = 0.025
        cache_write_mtok = 0.3125
        cache_write_1h_mtok = 0.5

        [[model]]
        provider = "openai"
        match = "gpt-4o"
        start = 2026-06-01
        input_mtok = 2.0
        output_mtok = 8.0
        """
    )
    by_start = {
        False: ModelPrice(input_mtok=Decimal("0.3"), output_mtok=Decimal("1.2")),
        True: ModelPrice(
            input_mtok=Decimal("0.25"),
            output_mtok=Decimal("1.0"),
            cache_read_mtok=Decimal("0.025"),
            cache_write_mtok=Decimal("0.3125"),
            cache_write_1h_mtok=Decimal("0.5"),
        ),
    }
    gpt4o = ModelPrice(input_mtok=Decimal("2.0"), output_mtok=Decimal("8.0"))
    pricer = Pricer(prices)
    for ts, n in itertools.product([datetime(2026, 5, 31, tzinfo=UTC), NOW], [1000, 250_000]):
        for usage in usages(n):
            call = grid_call("openai", "acme-ft-1", ts, usage)
            assert pricer.price(call).cost_usd == model_price_cost(by_start[ts >= NOW.replace(month=6)], call)
            # Before its start the gpt-4o override is not in force: the card's price applies.
            call = grid_call("openai", "gpt-4o", ts, usage)
            if ts < NOW.replace(month=6):
                assert pricer.price(call).cost_usd == library_cost(call)
            else:
                assert pricer.price(call).cost_usd == model_price_cost(gpt4o, call)
            if call.cost_usd is not None:
                assert call.rate_card is not None and "prices.toml@" in call.rate_card
