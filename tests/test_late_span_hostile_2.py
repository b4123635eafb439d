"""A second hostile pass over a stored call completed by a later OTLP span (`Intake.complete`,
`Store.update_usage`, `rollup.refile`, ClickHouse `_attributed`). Each test is one defect
found; each says what went wrong (two are still so, marked)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.operations import retention
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.otlp import ingest_spans
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store
from llmlog.store.retention_policy import Policy
from llmlog.store.rollup import people_sql
from tests.backends import Backend
from tests.test_otlp_processes import _attrs, _sdk, _wrapper
from tests.test_usage_after_content import _spans, _with_user


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    return every_engine


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def _intake() -> Intake:
    return Intake(Settings(user_id_secret=None), Pricer())


def _with(span: dict[str, Any], **attrs: str) -> dict[str, Any]:
    return {**span, "attributes": [*span["attributes"], *_attrs(**attrs)]}


def _with_feature(span: dict[str, Any], feature: str) -> dict[str, Any]:
    return _with(span, metadata=json.dumps({"feature": feature}))


def _with_system(span: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The framework's span with a system message before the user's (a real agent's)."""
    attrs = []
    for a in span["attributes"]:
        key = a["key"]
        if key.startswith("llm.input_messages.0."):
            key = key.replace("llm.input_messages.0.", "llm.input_messages.1.")
        attrs.append({**a, "key": key})
    attrs += _attrs(llm__input_messages__0__message__role="system",
                    llm__input_messages__0__message__content=prompt)  # fmt: skip
    return {**span, "attributes": attrs}


def _people(store: Store) -> list[tuple[Any, ...]]:
    rows = store.query(
        "SELECT user_id, session_id, calls, errors, input_tokens, output_tokens, priced_calls"
        " FROM people_daily ORDER BY user_id, session_id",
        limit=100,
    ).rows
    return [tuple(r) for r in rows]


def test_clickhouse_keeps_a_people_daily_row_of_no_calls_when_a_session_gains_its_user(
    store: Store, backend: Backend
) -> None:
    """The SDK's span names the call's session only (`session.id`); the framework's span,
    exported later, names its user. SQLite and PostgreSQL move the call's share from the
    row (day, NULL, s) to (day, u, s) and delete the row left without calls. ClickHouse's
    `_attributed` adds a row of -1 call to (day, NULL, s): `people_daily` (a view summing
    `people_parts`, with no HAVING then) kept a row of session s with 0 calls, 0 tokens,
    that no call gives (and that the sessions pages list)."""
    intake = _intake()
    r = 901
    assert ingest_spans(store, _spans(_with(_sdk(r), session__id="s")), intake)[1] == []
    assert _people(store) == [(None, "s", 1, 0, 11, 7, 1)]
    assert ingest_spans(store, _spans(_with(_wrapper(r), user__id="u")), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert (call.user_id, call.session_id) == ("u", "s")
    assert _people(store) == [("u", "s", 1, 0, 11, 7, 1)]


def test_clickhouse_a_prompt_version_given_later_loses_the_cold_calls(
    store: Store, backend: Backend, request: pytest.FixtureRequest
) -> None:
    """A day with a call of a feature retention keeps one day (the cold call, deleted, that
    `daily` and `people_daily` keep counting), and a call stored from the SDK's span; the
    framework's span exported later carries the system prompt (as an agent's does), so the
    call gains its prompt version (and its user). ClickHouse's `update_content` sums the
    whole day again from the calls (`_recount`) when the prompt version (or tool calls)
    moves the call: the cold call is gone from `daily` and `people_daily` (1 call where 2
    were). `update_usage` and `_attributed` were made to move the rows by the difference
    for this reason; this path was left re-summing."""
    if backend.kind == "clickhouse":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="ClickHouse sums a day again from the calls when a call is given a prompt version"
                " later: the old group's distinct users cannot be taken out of a uniqExact state",
            )
        )
    intake = _intake()
    cold, late = 911, 912
    assert ingest_spans(store, _spans(_with_feature(_with_user(_sdk(cold), "u"), "short")), intake)[1] == []
    assert ingest_spans(store, _spans(_sdk(late)), intake)[1] == []
    day = next(iter(store.iter_calls(CallFilter()))).timestamp.date()
    gone = retention.run(store, Policy(days=60, features={"short": 1}), today=day + timedelta(days=2))
    assert gone.calls == 1
    wrapper = _with_system(_with_user(_wrapper(late), "u"), "You are terse.")
    assert ingest_spans(store, _spans(wrapper), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert call.prompt_template_version is not None
    assert (call.user_id, call.session_id) == ("u", "s-u")
    assert tuple(store.query("SELECT sum(calls), sum(input_tokens) FROM daily").rows[0]) == (2, 22)
    people = store.query("SELECT sum(calls), sum(input_tokens) FROM people_daily WHERE user_id = 'u'").rows
    assert tuple(people[0]) == (2, 22)


def test_the_row_a_call_leaves_keeps_its_time_as_first_and_last(store: Store, backend: Backend) -> None:
    """Two calls of session s stored from the SDK's spans (the session, no user); the first
    call's framework span, exported later, names its user. The call moves to (day, u, s),
    and the row (day, NULL, s) it left kept it as its `first` (`_people_take`: "first and
    last stay"): the row said its session began with a call it does not count, where
    `people_sql` (the rows from the calls, no call deleted) gives the other call's time.
    (ClickHouse's `_attributed` still does: min/max over parts.)"""
    if backend.kind == "clickhouse":
        pytest.skip("compared with people_sql: SQLite and PostgreSQL")
    intake = _intake()
    a, b = 921, 922
    for r in (a, b):
        assert ingest_spans(store, _spans(_with(_sdk(r), session__id="s")), intake)[1] == []
    assert ingest_spans(store, _spans(_with(_wrapper(a), user__id="u")), intake)[1] == []
    columns = "day, user_id, session_id, calls, errors, input_tokens, output_tokens, cost_usd, priced_calls"
    kept = store.query(
        f"SELECT {columns}, first, last FROM people_daily ORDER BY user_id, session_id", limit=100
    ).rows
    scratch_sql = people_sql(store.dialect, "WHERE user_id IS NOT NULL OR session_id IS NOT NULL")
    scratch_sql = scratch_sql.removeprefix("INSERT INTO people_daily ")
    scratch = store.query(f"SELECT * FROM ({scratch_sql}) AS s ORDER BY 2, 3", limit=100).rows
    assert [tuple(r[:9]) for r in kept] == [tuple(r[:9]) for r in scratch]  # the sums agree
    assert [tuple(r) for r in kept] == [tuple(r) for r in scratch]  # and first, last


@pytest.mark.xfail(
    strict=True,
    reason="`regroup` knows a group's sessions by its stored calls: an erased call's session, which"
    " `daily` keeps counting, is taken out with the last stored call of it",
)
def test_a_version_given_later_drops_an_erased_calls_session_from_its_old_group(
    store: Store, backend: Backend
) -> None:
    """Two calls of one day and group (no feature, no prompt version), both in session s:
    x's call, then erased (`erase(user_id="x")`: `daily` keeps counting it, its user and its
    session, as the cold tier; `daily_seen` loses only who = x), and a call stored from the
    SDK's span. The framework's span of the second, exported later, carries the system
    prompt: the call gains its prompt version and `regroup` moves it to the group (…, v).
    `_take` asks whether another *stored* call of the old group has session s; none is (the
    erased one is gone), so it deletes `daily_seen`'s (session, s) and takes 1 from the old
    group's `sessions`: the group still counts the erased call (calls 1, users 1) but says
    it had no session (sessions 0; before the move it said 1). ClickHouse sums the day
    again and loses the erased call altogether (see the prompt-version test above)."""
    if backend.kind == "clickhouse":
        pytest.skip(
            "ClickHouse re-sums the day: test_clickhouse_a_prompt_version_given_later_loses_the_cold_calls"
        )
    intake = _intake()
    gone, late = 941, 942
    assert ingest_spans(store, _spans(_with(_sdk(gone), user__id="x", session__id="s")), intake)[1] == []
    assert ingest_spans(store, _spans(_with(_sdk(late), session__id="s")), intake)[1] == []
    store.erase(user_id="x")
    before = store.query("SELECT calls, users, sessions FROM daily").rows
    assert [tuple(r) for r in before] == [(2, 1, 1)]  # the erased call still counted
    assert ingest_spans(store, _spans(_with_system(_wrapper(late), "Be terse.")), intake)[1] == []
    (call,) = store.iter_calls(CallFilter())
    assert call.prompt_template_version is not None
    old = store.query("SELECT calls, users, sessions FROM daily WHERE prompt_template_version IS NULL").rows
    assert [tuple(r) for r in old] == [(1, 1, 1)]  # the erased call, its user and its session
