"""Hostile checks of a stored call completed by a later OTLP span (its usage, and whom and
what it was for: `Intake.complete`, `Store.update_usage`, `rollup.refile`). Each test is one
defect found in the first version of that completion; each says what went wrong."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from llmlog.capture.kept import without_content
from llmlog.capture.otlp import decode_logs
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.operations import retention
from llmlog.pipeline.intake import Intake, hash_user_id
from llmlog.pipeline.otlp import ingest_events, ingest_spans
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store
from llmlog.store.retention_policy import Policy
from tests.backends import Backend
from tests.test_otlp_processes import _attrs, _sdk, _trace, _wrapper
from tests.test_traces_agree import assert_kept_as_from_scratch
from tests.test_usage_after_content import _spans, _with_user


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    return every_engine


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def _with_feature(span: dict[str, Any], feature: str) -> dict[str, Any]:
    return {**span, "attributes": [*span["attributes"], *_attrs(metadata=json.dumps({"feature": feature}))]}


def test_a_feature_given_alone_by_a_later_span_reaches_the_traces_row(store: Store, backend: Backend) -> None:
    """The SDK's span (usage, the user and session) stores the call; the framework's LLM span
    exported later names its feature (OpenInference `metadata`) and nothing else the call
    lacks. `update_content` gave the call the feature and `rollup.refile` regrouped `daily`,
    but it summed the trace again only when the call's day, user, session or trace changed:
    a feature alone left `traces.feature` (and `feature_at`) NULL, though the trace's one
    call had the feature (`trace_rollup.from_scratch_sql` gives it)."""
    if backend.kind == "clickhouse":
        pytest.skip("ClickHouse keeps no traces table, nor a feature given later")
    intake = Intake(Settings(user_id_secret=None), Pricer())
    r = 801
    assert ingest_spans(store, _spans(_with_user(_sdk(r), "u")), intake)[1] == []
    assert ingest_spans(store, _spans(_with_feature(_wrapper(r), "support")), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert call.feature == "support"
    summary = store.trace_summary(_trace(r))
    assert summary is not None and summary.feature == "support"
    assert_kept_as_from_scratch(store, backend)


def test_a_user_given_later_keeps_the_cold_calls_people_daily_counts(store: Store, backend: Backend) -> None:
    """`people_daily` is the cold tier: retention deletes a day's calls of a feature with a
    short window and the row keeps counting them. A call of that day (another feature, kept)
    stored from the SDK's span, then given its user and session by the framework's span:
    the row (day, user, session) it joined was deleted and summed again from the calls still
    stored, so the deleted calls' counts were lost from the row: 1 call where 2 were (the
    cold call's tokens and cost gone); on ClickHouse the whole day was summed again. Joining
    it adds the call's own share."""
    intake = Intake(Settings(user_id_secret=None), Pricer())
    cold, late = 811, 812
    assert ingest_spans(store, _spans(_with_feature(_with_user(_sdk(cold), "u"), "short")), intake)[1] == []
    assert ingest_spans(store, _spans(_sdk(late)), intake)[1] == []
    day = next(iter(store.iter_calls(CallFilter()))).timestamp.date()
    gone = retention.run(store, Policy(days=60, features={"short": 1}), today=day + timedelta(days=2))
    assert gone.calls == 1
    before = store.query("SELECT calls, input_tokens FROM people_daily WHERE user_id = 'u'").rows
    assert [tuple(r) for r in before] == [(1, 11)]  # the cold call, counted
    assert ingest_spans(store, _spans(_with_user(_wrapper(late), "u")), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert (call.user_id, call.session_id) == ("u", "s-u")
    after = store.query("SELECT sum(calls), sum(input_tokens) FROM people_daily WHERE user_id = 'u'").rows
    assert tuple(after[0]) == (2, 22)


def test_a_user_from_a_kept_span_by_its_log_events_is_hashed_once(store: Store, backend: Backend) -> None:
    """With `user_id_secret` set, spans are kept with `user.id` hashed (`Intake.span`). A call
    stored from the SDK's span, with the framework's span of the same call kept beside it but
    its user not given to the call (what a store of the version before holds: a later span
    could only add content then). The framework's log events arrive (after the upgrade):
    `ingest_events` reads the kept span (`span_call`) and `Intake.complete` gave the call the
    span's user id hashed again: HMAC(HMAC(u)), a user no erasure by HMAC(u) finds."""
    intake = Intake(Settings(user_id_secret="k"), Pricer())
    r = 821
    assert ingest_spans(store, _spans(_sdk(r)), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert call.user_id is None
    (framework,) = _spans(_with_user(_wrapper(r), "u"))
    kept = intake.span(without_content(framework))
    kept.call_id = call.id
    store.insert_spans([kept])
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "traceId": _trace(r), "spanId": framework.span_id, "eventName": "gen_ai.system.message",
        "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": "be brief"}}]}},
    }]}]}]}  # fmt: skip
    events, rejected = decode_logs(json.dumps(logs).encode(), "application/json")
    assert not rejected
    assert ingest_events(store, events, intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert call.user_id in (None, hash_user_id("u", "k"))
    assert call.user_id != hash_user_id(hash_user_id("u", "k"), "k")


def test_usage_given_later_keeps_the_cold_calls_in_daily(store: Store, backend: Backend) -> None:
    """`daily` is the cold tier: retention deletes a day's calls of a feature with a short
    window and `daily` keeps counting them. A call of that day stored from the framework's
    span, then given its usage by the SDK's span: on ClickHouse `update_usage` summed the
    whole day's `daily` (and `people_daily`) again from the calls still stored (`_recount`),
    so the deleted calls were gone from the rollups: the day counted 1 call, not 2. Every
    engine now moves the rows by the difference."""
    intake = Intake(Settings(user_id_secret=None), Pricer())
    cold, late = 831, 832
    assert ingest_spans(store, _spans(_with_feature(_with_user(_sdk(cold), "u"), "short")), intake)[1] == []
    assert ingest_spans(store, _spans(_wrapper(late)), intake)[1] == []
    day = next(iter(store.iter_calls(CallFilter()))).timestamp.date()
    gone = retention.run(store, Policy(days=60, features={"short": 1}), today=day + timedelta(days=2))
    assert gone.calls == 1
    assert tuple(store.query("SELECT sum(calls) FROM daily").rows[0]) == (2,)
    assert ingest_spans(store, _spans(_sdk(late)), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert (call.input_tokens, call.output_tokens) == (11, 7)
    assert tuple(store.query("SELECT sum(calls), sum(input_tokens) FROM daily").rows[0]) == (2, 22)
    assert tuple(store.query("SELECT sum(calls) FROM people_daily").rows[0]) == (1,)
