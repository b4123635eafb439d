"""Cost figures against hand computations from the providers' published rates."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from llmlog.pricing import RATE_CARD, PriceFileError, Pricer
from llmlog.record import Call

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
