"""A call's usage that arrives after its content: the framework's LLM span (the content, no
usage) in one OTLP export, the SDK's span under it (the response id and the tokens) in a later
one. The call is stored once, from the first, and the second gives it the tokens it lacked and
the cost they price to; `daily`, `people_daily` and `traces` count them as if they had come
with it. On every engine, through the pipeline the receiver runs (`ingest_spans`)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from llmlog.capture.otlp import decode_spans
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, format_timestamp
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.otlp import ingest_spans
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store
from llmlog.store.postgres.schema import m022_usage_follows
from llmlog.store.rollup import DAILY_COLUMNS, from_raw_sql
from llmlog.store.sqlite.schema import m024_usage_follows
from tests.backends import Backend
from tests.test_otlp_processes import _attrs, _sdk, _trace, _wrapper
from tests.test_traces_agree import assert_kept_as_from_scratch

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    return every_engine


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def _spans(*spans: dict[str, object]) -> list[Any]:
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}).encode()
    decoded, rejected = decode_spans(body, "application/json")
    assert not rejected
    return decoded


def _with_user(span: dict[str, object], user: str) -> dict[str, object]:
    attributes = [*span["attributes"], *_attrs(user__id=user, session__id=f"s-{user}")]  # type: ignore[misc]
    return {**span, "attributes": attributes}


def _daily(store: Store) -> list[Any]:
    return store.query(f"SELECT {', '.join(DAILY_COLUMNS[:19])} FROM daily ORDER BY 2, 3", limit=100).rows


def test_usage_arriving_after_the_content_is_counted_once_everywhere(store: Store, backend: Backend) -> None:
    intake = Intake(Settings(user_id_secret=None), Pricer())
    late, early = 301, 302  # the usage after the content; and, to compare, with it
    for r in (late, early):
        first, second = (_wrapper(r), _sdk(r)) if r == late else (_sdk(r), _wrapper(r))
        first = _with_user(first, f"u{r}")  # a later span's user is not taken: the first's
        assert ingest_spans(store, _spans(first), intake)[1] == []
        assert ingest_spans(store, _spans(second), intake)[1] == []
    calls = {c.trace_id: c for c in store.iter_calls(CallFilter())}
    assert len(calls) == 2
    got, want = calls[_trace(late)], calls[_trace(early)]
    assert got.messages == [{"role": "user", "content": f"question {late}"}]
    assert (got.input_tokens, got.output_tokens) == (11, 7) == (want.input_tokens, want.output_tokens)
    assert got.cost_usd is not None and got.cost_usd == want.cost_usd and got.rate_card == want.rate_card

    # The rollups count the late call's tokens and cost as they count the other's.
    if backend.kind == "clickhouse":
        daily = store.query("SELECT sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM daily").rows
        assert daily[0][0] == 22 and daily[0][1] == 14
        assert daily[0][2] == pytest.approx(2 * want.cost_usd)
    else:
        scratch = store.query(
            f"SELECT * FROM ({from_raw_sql(store.dialect)}) AS s ORDER BY 2, 3", limit=100
        ).rows
        kept = _daily(store)
        assert [r[:19] for r in scratch] == kept
        assert_kept_as_from_scratch(store, backend)
    people = store.query(
        "SELECT user_id, sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(priced_calls)"
        " FROM people_daily GROUP BY user_id ORDER BY user_id"
    ).rows
    assert [tuple(p[:3]) for p in people] == [(f"u{late}", 11, 7), (f"u{early}", 11, 7)]
    assert [p[3] for p in people] == pytest.approx([want.cost_usd] * 2)
    assert [p[4] for p in people] == [1, 1]
    # The rows' first and last calls are the calls' own times (not, say, a default of 1970).
    (first, last) = store.query("SELECT min(first), max(last) FROM people_daily").rows[0]
    times = sorted(c.timestamp for c in calls.values())
    assert str(first)[:19].replace("T", " ") == str(times[0])[:19].replace("T", " ")
    assert str(last)[:19].replace("T", " ") == str(times[-1])[:19].replace("T", " ")
    summary = store.trace_summary(_trace(late))
    assert summary is not None
    assert (summary.input_tokens, summary.output_tokens) == (11, 7)
    assert summary.cost_usd == pytest.approx(want.cost_usd)


def test_a_store_made_before_follows_usage_once_upgraded(backend: Backend) -> None:
    """A store of the version before (its triggers followed a new cost alone), holding a call
    stored without usage, upgraded: usage given to that call then moves the rollups as it
    would have come with the call."""
    kind = backend.kind
    if kind == "clickhouse":
        pytest.skip("ClickHouse sums its rollups again from the calls: nothing to migrate")
    backend.migrated_before(m024_usage_follows, m022_usage_follows)
    call = Call(id="late", timestamp=T0, model="gpt-4.1-mini", provider="openai", feature="f",
                user_id="u", session_id="s", trace_id=uuid.uuid4().hex)  # fmt: skip
    if kind == "postgres":
        from tests.test_store import _partitions_by_hand

        _partitions_by_hand(backend, [call])
    backend.sql(
        "INSERT INTO call_data (id, timestamp, model, provider, feature, user_id, session_id, trace_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (call.id, format_timestamp(call.timestamp), call.model, call.provider, call.feature,
         call.user_id, call.session_id, call.trace_id),
    )  # fmt: skip
    store = backend.open()  # upgraded
    try:
        usage = call.replace(
            input_tokens=11, output_tokens=7, cache_read_tokens=2, cost_usd=0.25, rate_card="c"
        )
        store.update_usage(usage)
        got = store.get("late")
        assert got is not None and (got.input_tokens, got.output_tokens, got.cost_usd) == (11, 7, 0.25)
        scratch = store.query(f"SELECT * FROM ({from_raw_sql(store.dialect)}) AS s", limit=10).rows
        assert [r[:19] for r in scratch] == _daily(store)
        assert _daily(store)[0][7:10] == (11, 7, 2)
        assert_kept_as_from_scratch(store, backend)
        people = store.query("SELECT input_tokens, output_tokens, cost_usd, priced_calls FROM people_daily")
        assert [tuple(p) for p in people.rows] == [(11, 7, 0.25, 1)]
    finally:
        store.close()


def test_who_the_call_was_for_arriving_after_its_usage_is_kept(store: Store, backend: Backend) -> None:
    """The usual order when the two spans are exported apart: the SDK's span ends first (the
    usage), the framework's LLM span around it later, with the content and who the call was
    for (`user.id`, `session.id`, set by `using_attributes` on the framework's spans only).
    The call takes both spans' columns, as when they come in one export; the rollups count
    its user and session."""
    intake = Intake(Settings(user_id_secret=None), Pricer())
    r = 501
    assert ingest_spans(store, _spans(_sdk(r)), intake)[1] == []
    wrapper = _with_user(_wrapper(r), "u")
    wrapper["attributes"] = [*wrapper["attributes"], *_attrs(metadata='{"feature": "support"}')]  # type: ignore[misc]
    assert ingest_spans(store, _spans(wrapper), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    # ClickHouse keeps a call's feature as it was stored: it leads the table's sorting key.
    assert call.feature == (None if backend.kind == "clickhouse" else "support")
    assert call.messages == [{"role": "user", "content": f"question {r}"}]
    assert (call.input_tokens, call.output_tokens) == (11, 7)
    assert (call.user_id, call.session_id) == ("u", "s-u")
    people = store.query("SELECT user_id, session_id, calls FROM people_daily").rows
    assert [tuple(p) for p in people] == [("u", "s-u", 1)]
    assert store.query("SELECT sum(users), sum(sessions) FROM daily").rows[0] == (1, 1)
    summary = store.trace_summary(_trace(r))
    assert summary is not None and (summary.user_id, summary.session_id) == ("u", "s-u")
    if backend.kind != "clickhouse":
        scratch = store.query(f"SELECT * FROM ({from_raw_sql(store.dialect)}) AS s", limit=10).rows
        assert [row[:19] for row in scratch] == _daily(store)
        assert_kept_as_from_scratch(store, backend)
    # Seen again naming someone else: what the call says already stays.
    again = _with_user(_wrapper(r), "v")
    assert ingest_spans(store, _spans(again), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert (call.user_id, call.session_id) == ("u", "s-u")
    assert [tuple(p) for p in store.query("SELECT user_id, calls FROM people_daily").rows] == [("u", 1)]
