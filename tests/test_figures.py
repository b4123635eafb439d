"""Figures that would poison the rollups: NaN, infinities and negative token counts, costs
and times. Refused per record at every way in (the SDK keeps the call and drops the figure),
and what is stored already is read without a 500 and repaired by a migration."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmlog.capture.context import CallContext
from llmlog.capture.exchange import Exchange
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import DROPPED_KEY, Call, RecordError, bad_figures
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.pricing import PriceFileError, Pricer, load_overrides
from llmlog.store import Store
from llmlog.store.postgres import schema as pg
from llmlog.store.sqlite import schema as sqlite_schema
from tests.backends import Backend
from tests.webui import Running, make_call


def _exchange(usage: dict[str, object]) -> Exchange:
    """What the SDK wrapper hands the writer for an Anthropic answer with this usage."""
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "usage": usage,
    }  # fmt: skip
    ex = Exchange(
        provider="anthropic", api="messages", url="https://api.anthropic.com/v1/messages",
        request_body=json.dumps(request).encode(), context=CallContext(feature="odd-usage"),
        started_at=time.time(), t0=time.perf_counter(), status=200,
        response_headers={"content-type": "application/json"},
    )  # fmt: skip
    ex.chunks.append((0.0, json.dumps(response).encode()))
    ex.ended_ms = 12.5
    return ex


def test_the_sdk_keeps_a_call_whose_provider_reports_a_negative_usage() -> None:
    """The call happened: it is kept, the figure that cannot be stored dropped to NULL with
    a note of what it was, and the call priced from what is left."""
    intake = Intake(Settings(), Pricer())
    call = intake.call(_exchange({"input_tokens": -7, "output_tokens": 20}))
    assert call.input_tokens is None and call.output_tokens == 20
    assert call.metadata is not None and call.metadata[DROPPED_KEY] == {"input_tokens": "-7"}
    assert call.latency_ms == 12.5


@pytest.mark.parametrize(
    ("name", "value"),
    [("cost_usd", math.nan), ("latency_ms", math.inf), ("first_token_ms", -1.0), ("cost_usd", -0.01),
     ("output_tokens", -3), ("input_tokens", 2.5)],
)  # fmt: skip
def test_every_other_way_in_refuses_the_record_naming_the_field(name: str, value: object) -> None:
    """The collector, OTLP, import, copy and replay hand the intake a `Call`; one built by
    hand (as OTLP builds them) is refused as one read from JSON is."""
    call = Call(model="claude-sonnet-4-5", **{"output_tokens": 10, name: value})  # type: ignore[arg-type]
    with pytest.raises(RecordError, match=f"^{name}: "):
        Intake(Settings(), Pricer()).call(call)
    with pytest.raises(RecordError, match=f"^{name}: "):
        Call.from_dict({"timestamp": "2026-01-01T00:00:00Z", name: value})
    kept = Intake(Settings(), Pricer(), repair=True).call(call.replace(id=call.id))
    assert getattr(kept, name) is None and kept.metadata and name in kept.metadata[DROPPED_KEY]


def test_a_price_file_with_nan_or_inf_is_refused(tmp_path: Path) -> None:
    for bad in ("nan", "inf", "-1.0"):
        path = tmp_path / f"prices-{bad}.toml"
        path.write_text(f'[[model]]\nmatch = "m"\ninput_mtok = {bad}\noutput_mtok = 1.0\n')
        with pytest.raises(PriceFileError, match="input_mtok"):
            load_overrides(path)


# ---------------------------------------------------------------- what is stored already

POISON = {"cost_usd": math.nan, "latency_ms": math.inf, "first_token_ms": -5.0, "input_tokens": -40}


def _poisoned(n: int = 6) -> list[Call]:
    """Calls as a version that checked no figure stored them: each with one bad figure,
    beside good ones on the same day and group."""
    day = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    calls = []
    for i in range(n):
        call = make_call(10_000 + i, timestamp=day + timedelta(minutes=i), model="m-odd", feature="odd",
                         cost_usd=0.25, latency_ms=100.0 + i, first_token_ms=10.0, input_tokens=100,
                         output_tokens=10)  # fmt: skip
        if i < len(POISON):
            name, value = list(POISON.items())[i]
            setattr(call, name, value)
        calls.append(call)
    return calls


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_pages_read_what_was_stored_before_figures_were_checked(ui: Running) -> None:
    """A NaN or an infinity in `calls` and `daily` made the dashboard, the cost report and
    `/api/calls` answer 500 (NaN is not JSON); they now read around it."""
    ui.store.insert(_poisoned())
    for path in ("/", "/reports/cost", "/api/reports/cost", "/api/calls?limit=50"):
        r = ui.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        if path.startswith("/api/"):
            json.loads(r.text, parse_constant=_not_json)


def _odd_daily(store: Store) -> tuple[Any, ...]:
    rows = store.query(
        "SELECT calls, input_tokens, cost_usd, priced_calls, latency_ms, first_token_ms, users"
        " FROM daily WHERE feature = 'odd'"
    ).rows
    assert len(rows) == 1
    return rows[0]


def test_a_migration_repairs_what_was_stored(backend: Backend) -> None:
    """The figures no call may have become NULL and the rollup rows they fell in are
    summed again from the calls; a cold row (its calls gone) has its bad sums set to 0."""
    poisoned = _poisoned()
    cold = make_call(20_000, timestamp=datetime(2025, 1, 2, 3, tzinfo=UTC), feature="cold", model="m",
                     user_id="old-user", cost_usd=-2.0, latency_ms=-1.0, input_tokens=5)  # fmt: skip
    with backend.open() as store:
        store.insert([*poisoned, cold])
    backend.sql("DELETE FROM call_data WHERE id = %s" if backend.kind == "postgres" else
                "DELETE FROM call_data WHERE id = ?", [cold.id])  # fmt: skip
    # The store as it was before the repair (the migrations after it run again).
    if backend.kind == "sqlite":
        backend.sql(
            f"PRAGMA user_version = {sqlite_schema.MIGRATIONS.index(sqlite_schema.m013_repair_figures)}"
        )
    else:
        backend.sql(f"UPDATE llmlog_schema SET version = {pg.MIGRATIONS.index(pg.m012_repair_figures)}")
    with backend.open() as store:
        by_id = {c.id: c for c in store.iter_calls(CallFilter(feature="odd"))}
        assert len(by_id) == len(poisoned)
        for call in poisoned[: len(POISON)]:
            (name,) = [n for n in POISON if getattr(call, n) is POISON[n]]
            assert getattr(by_id[call.id], name) is None, name
        good = [c for c in by_id.values()]
        calls, tokens, cost, priced, latency, first, users = _odd_daily(store)
        assert (calls, tokens, priced) == (6, sum(c.input_tokens or 0 for c in good), 5)
        assert cost == pytest.approx(0.25 * 5)
        assert latency == pytest.approx(sum(c.latency_ms or 0 for c in good))
        assert first == pytest.approx(sum(c.first_token_ms or 0 for c in good))
        assert users == len({c.user_id for c in good if c.user_id})
        (row,) = store.query(
            "SELECT calls, cost_usd, latency_ms, input_tokens FROM daily WHERE feature = 'cold'"
        ).rows
        assert row == (1, 0.0, 0.0, 5)
        people = store.query("SELECT cost_usd FROM people_daily WHERE user_id = 'old-user'").rows
        assert people == [(0.0,)]
        odd = store.query("SELECT sum(cost_usd) FROM people_daily").rows[0][0]
        assert math.isfinite(odd) and odd >= 0


def test_a_migration_repairs_what_clickhouse_stored(tmp_path: Path) -> None:
    """As on the other stores: the bad figures of the calls NULL, their rollup rows summed
    again from the calls (`daily` and `people_daily` as read)."""
    from llmlog.store import open_store

    url = f"chdb://{tmp_path}/ch"
    poisoned = _poisoned()
    with open_store(url) as store:
        store.insert(poisoned[:3])
        store.insert(poisoned[3:])
        finite = "SELECT isFinite(sum(latency_ms)), countIf(NOT isFinite(ifNull(latency_ms, 0))) FROM {}"
        # The infinite latency, in the calls and in `daily`.
        assert store.engine.rows(finite.format("daily WHERE feature = 'odd'"))[1] == [(0, 1)]
        assert store.engine.rows(finite.format("call_data"))[1][0][1] == 1
        store.engine.command(
            "ALTER TABLE llmlog_schema DELETE WHERE version >= 7 SETTINGS mutations_sync = 1"
        )
    with open_store(url) as store:
        assert store.engine.rows(finite.format("daily WHERE feature = 'odd'"))[1] == [(1, 0)]
        assert store.engine.rows(finite.format("call_data"))[1][0][1] == 0
        good = list(store.iter_calls(CallFilter(feature="odd")))
        assert len(good) == len(poisoned)
        assert all(not bad_figures(c) for c in good)
        calls, tokens, cost, priced, latency, first, users = _odd_daily(store)
        assert (calls, tokens, priced) == (6, sum(c.input_tokens or 0 for c in good), 5)
        assert cost == pytest.approx(0.25 * 5)
        assert latency == pytest.approx(sum(c.latency_ms or 0 for c in good))
        assert first == pytest.approx(sum(c.first_token_ms or 0 for c in good))
        assert users == len({c.user_id for c in good if c.user_id})
        (people,) = store.query("SELECT sum(cost_usd), sum(input_tokens) FROM people_daily").rows
        assert people[0] == pytest.approx(0.25 * 5) and people[1] == sum(c.input_tokens or 0 for c in good)
