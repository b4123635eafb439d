"""Drift over time (`llmlog.analysis.drift`) on every store: each feature's figures per UTC day
on a store built by hand, the days its versions and models first appeared, the rates kept
between views while a day's calls stay the same and read again when they change, the days
left unread past the time limit, and the days retention dropped; on the demo's month,
code-review's answers growing longer on the day its v2 appeared."""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog.analysis import drift
from llmlog.analysis.dashboard import Period
from llmlog.analysis.days import DayCache
from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.operations import retention
from llmlog.store import Store, retention_policy
from tests.backends import Backend

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY = NOW.date()
PERIOD = Period.ending(5, TODAY)
SORRY = "I'm sorry, but I can't help with that."


@pytest.fixture
def backend(every_engine: Backend) -> Backend:
    return every_engine


def answer(text: str) -> dict[str, object]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def day(d: int) -> str:
    return (TODAY - timedelta(days=d)).isoformat()


def chat_calls() -> list[Call]:
    """Ten days of `chat`, ten calls a day at 100 output tokens on model m-old, version
    chat@v1. From two days ago, half are chat@v2 at 300; from yesterday, every other call
    goes to m-new. Four days ago one more call has no token count; three days ago four calls
    make a tool call (and one sends an empty list: none); yesterday two decline in words and
    one by its stop reason; today one says what it cannot find (no refusal). `search` has
    two calls a day, one with a tool call; two calls a day have no feature."""
    out = []
    for d in range(10):
        when = NOW - timedelta(days=d)
        for i in range(10):
            v2 = d <= 2 and i % 2 == 0
            text = "Here you go."
            stop = "end_turn"
            if d == 1 and i in (1, 3):
                text = SORRY
            if d == 1 and i == 5:
                stop = "content_filter"
            if d == 0 and i == 0:
                text = "I can't find any bugs in this diff."
            tools = (
                [{"id": f"t{i}", "name": "lookup"}] if d == 3 and i < 4 else [] if d == 3 and i == 4 else None
            )
            out.append(
                Call(id=f"chat-{d}-{i}", timestamp=when + timedelta(minutes=i), feature="chat",
                     model="m-new" if d <= 1 and i % 2 else "m-old",
                     prompt_template_version="chat@v2" if v2 else "chat@v1",
                     output_tokens=300 if v2 else 100, response=answer(text), stop_reason=stop,
                     tool_calls=tools)
            )  # fmt: skip
        if d == 4:
            out.append(Call(id="chat-4-x", timestamp=when, feature="chat", model="m-old",
                            prompt_template_version="chat@v1", response=answer("No count.")))  # fmt: skip
        for i in range(2):
            tools = [{"id": "s"}] if i else None
            out.append(Call(id=f"search-{d}-{i}", timestamp=when + timedelta(minutes=i), feature="search",
                            model="m-old", output_tokens=50, tool_calls=tools))  # fmt: skip
            out.append(Call(id=f"none-{d}-{i}", timestamp=when, model="m-old", output_tokens=10))
    return out


def of(store: Store, period: Period = PERIOD, **kw: object) -> drift.DriftByDay:
    return drift.drift_by_day(lambda: nullcontext(store), period, **kw)  # type: ignore[arg-type]


def figures(f: drift.Feature) -> list[tuple[object, ...]]:
    return [(d.day, d.calls, d.output_tokens, d.calls_read, d.refusal_rate, d.tool_call_rate) for d in f.days]


def test_each_day_of_each_feature(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(chat_calls())
        r = of(store)
        assert [f.feature for f in r.features] == ["chat", "search", None]  # most calls first
        chat, search, none = r.features
        assert figures(chat) == [
            (day(4), 11, 100.0, 11, 0.0, 0.0),  # the call without a count is not in the mean
            (day(3), 10, 100.0, 10, 0.0, 0.4),  # an empty list of tool calls is none
            (day(2), 10, 200.0, 10, 0.0, 0.0),
            (day(1), 10, 200.0, 10, 0.3, 0.0),  # two in words, one by its stop reason
            (day(0), 10, 200.0, 10, 0.0, 0.0),  # "I can't find any bugs" answers
        ]
        assert figures(search) == [(day(d), 2, 50.0, 2, 0.0, 0.5) for d in range(4, -1, -1)]
        assert [(d.calls, d.output_tokens, d.calls_read) for d in none.days] == [(2, 10.0, 2)] * 5
        assert (chat.calls, r.more, r.unread) == (51, 0, [])
        # Each version and model by its first day, the whole store's (not the period's).
        assert [(a.kind, a.name, a.day) for a in chat.appeared] == [
            ("version", "chat@v1", day(9)),
            ("model", "m-old", day(9)),
            ("version", "chat@v2", day(2)),
            ("model", "m-new", day(1)),
        ]
        assert [(a.name, a.day) for a in chat.marks(PERIOD)] == [("chat@v2", day(2)), ("m-new", day(1))]
        assert [a.name for a in chat.marks(Period.ending(10, TODAY))] == [
            "chat@v1",
            "m-old",
            "chat@v2",
            "m-new",
        ]
        assert [(a.kind, a.name) for a in search.appeared] == [("model", "m-old")]  # no version
        data = json.loads(json.dumps(r.to_json()))
        assert data["period"] == {"days": 5, "first": day(4), "last": day(0)}
        assert data["features"][0]["days"][3] == {
            "day": day(1), "calls": 10, "output_tokens": 200.0, "calls_read": 10, "refusals": 3,
            "refusal_rate": 0.3, "tool_calls": 0, "tool_call_rate": 0.0,
        }  # fmt: skip
        assert data["features"][0]["appeared"][2] == {"kind": "version", "name": "chat@v2", "day": day(2)}


def test_one_feature_the_top_and_a_period_with_no_calls(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(chat_calls())
        (search,) = of(store, feature="search").features
        assert search.feature == "search" and [d.tool_call_rate for d in search.days] == [0.5] * 5
        assert of(store, feature="nothing").features == []
        top = of(store, top=1)
        assert [f.feature for f in top.features] == ["chat"] and top.more == 2
        assert top.others == ["search", None] and top.to_json()["other_features"] == ["search", None]
        # Before the first call: no feature has a call to show.
        assert of(store, Period.ending(7, TODAY - timedelta(days=20))).features == []


def test_the_rates_are_kept_until_a_days_calls_change(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(chat_calls())
        cache: DayCache[drift.DayRates] = DayCache()
        first = of(store, cache=cache)
        assert of(store, cache=cache).features == first.features  # from the cache
        # A call stored today changes today's `daily` sums: today is read again, with it.
        store.insert([Call(id="late", timestamp=NOW + timedelta(minutes=30), feature="chat", model="m-old",
                           output_tokens=100, response=answer(SORRY))])  # fmt: skip
        today = of(store, cache=cache).features[0].days[-1]
        assert (today.calls, today.calls_read, today.refusals) == (11, 11, 1)


def test_past_the_time_limit_the_days_left_have_no_rates(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(chat_calls())
        cache: DayCache[drift.DayRates] = DayCache()
        r = of(store, cache=cache, budget_s=0.0)
        assert r.unread == [day(d) for d in range(4, -1, -1)]
        chat = r.features[0]
        assert [d.output_tokens for d in chat.days] == [100.0, 100.0, 200.0, 200.0, 200.0]  # from `daily`
        assert {(d.calls_read, d.refusal_rate, d.tool_call_rate) for d in chat.days} == {(0, None, None)}
        assert of(store, cache=cache).unread == []  # the next view reads on


def test_the_days_retention_dropped_keep_their_output_tokens(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(chat_calls())
        retention.run(store, retention_policy.Policy(days=2), today=TODAY)
        chat = of(store).features[0]
        kept = [d.day for d in chat.days if d.calls_read]
        assert kept and day(4) not in kept and day(0) in kept
        assert [d.output_tokens for d in chat.days] == [100.0, 100.0, 200.0, 200.0, 200.0]
        assert all(d.refusal_rate is None for d in chat.days if d.day not in kept)
        assert [a.day for a in chat.appeared][:2] == [day(9), day(9)]  # from `daily`: still known


def test_the_demo_month_shows_code_review_growing_on_v2s_day(tmp_path: Path) -> None:
    """The demo's code-review@v2 answers three times as long as v1 (llmlog.demo.traffic):
    its output tokens per call rise on the day v2 first appeared, three days ago (four, when
    the copies of that day, an hour either side of now, fall before midnight)."""
    db = str(tmp_path / "demo.db")
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db, "demo", "--calls", "800"], catch_exceptions=False).exit_code == 0
    data = json.loads(runner.invoke(cli, ["--db", db, "report", "drift", "--by-day", "--json"]).output)
    review = next(f for f in data["features"] if f["feature"] == "code-review")
    (v2,) = [a["day"] for a in review["appeared"] if a["name"] == "code-review@v2"]
    assert v2 in (day(3), day(4))
    days = {d["day"]: d for d in review["days"] if d["calls"]}
    before = [d for k, d in days.items() if k < v2]
    since = [d for k, d in days.items() if k >= v2]

    def mean(ds: list[dict[str, float]]) -> float:
        return sum(d["output_tokens"] * d["calls"] for d in ds) / sum(d["calls"] for d in ds)

    assert len(before) >= 20 and mean(since) > 1.5 * mean(before)
    assert days[v2]["output_tokens"] > 1.3 * mean(before)
    # The rates are there too: support-bot@v4 declines now and then; code-review uses no tool.
    support = next(f for f in data["features"] if f["feature"] == "support-bot")
    assert sum(d["refusals"] for d in support["days"]) > 0
    assert {d["tool_call_rate"] for d in review["days"] if d["calls_read"]} == {0.0}


def test_random_days_sum_as_the_calls_do(backend: Backend) -> None:
    """Figures of a random mix agree with counting the calls here, day by day."""
    rng = random.Random(3)
    calls = []
    for n in range(300):
        when = NOW - timedelta(hours=rng.randrange(0, 5 * 24))
        calls.append(Call(id=f"r{n}", timestamp=when, feature=rng.choice(["a", "b"]), model="m",
                          output_tokens=rng.choice([None, rng.randrange(1, 500)]),
                          tool_calls=[{"id": "x"}] if rng.random() < 0.3 else None,
                          response=answer(SORRY if rng.random() < 0.1 else "Sure.")))  # fmt: skip
    with backend.open() as store:
        store.insert(calls)
        got = {(f.feature, d.day): d for f in of(store, Period.ending(6, TODAY)).features for d in f.days}
    for (feature, d), figures_ in got.items():
        mine = [c for c in calls if c.feature == feature and c.timestamp.date().isoformat() == d]
        counted = [c.output_tokens for c in mine if c.output_tokens is not None]
        assert figures_.calls == figures_.calls_read == len(mine)
        assert figures_.output_tokens == (pytest.approx(sum(counted) / len(counted)) if counted else None)
        assert figures_.refusals == sum(c.response == answer(SORRY) for c in mine)
        assert figures_.tool_calls == sum(c.tool_calls is not None for c in mine)


def test_the_cli_by_day(tmp_path: Path) -> None:
    from llmlog.store import open_store

    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert(chat_calls())
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", db, "report", "drift", "--by-day", "--days", "5", "--feature", "chat"])
    assert out.exit_code == 0, out.output
    assert "chat: 51 calls" in out.output and "search" not in out.output
    (yesterday,) = [line for line in out.output.splitlines() if day(1) in line]
    assert "30.0%" in yesterday and "200.0" in yesterday and "model m-new" in yesterday
    assert "version chat@v2" in next(line for line in out.output.splitlines() if day(2) in line)
    data = json.loads(runner.invoke(cli, ["--db", db, "report", "drift", "--by-day", "--json"]).output)
    assert data["period"]["days"] == 30 and [f["feature"] for f in data["features"]] == [
        "chat",
        "search",
        None,
    ]
    none = runner.invoke(cli, ["--db", db, "report", "drift", "--by-day", "--feature", "nothing"])
    assert "No calls of nothing in the last 30 day(s)." in none.output
    for wrong in (["--by-day", "--baseline", "14"], ["--feature", "chat"]):
        assert runner.invoke(cli, ["--db", db, "report", "drift", *wrong]).exit_code == 2


def test_a_day_the_time_limit_stops_is_left_unread(backend: Backend) -> None:
    """A day whose read the limit stops is left for the next view, unless it is the first
    one read: then no day fits, and the store's reason is given (the dashboard's), or it is
    left too (drift per day's, which reads on after the view)."""
    from llmlog.analysis.days import cached_days
    from llmlog.store import ReadOnlyError

    stopped = {day(1)}

    def read(store: Store, d: object, timeout_s: float) -> drift.DayRates:
        if str(d) in stopped:
            raise ReadOnlyError("stopped at its time limit")
        return drift.read_rates(store, d, timeout_s)  # type: ignore[arg-type]

    with backend.open() as store:
        store.insert(chat_calls())
        prints = {day(d): (d,) for d in range(3)}
        cache: DayCache[drift.DayRates] = DayCache()
        parts, unread = cached_days(lambda: nullcontext(store), prints, cache, 60.0, read)
        assert [d for d, _ in parts] == [day(0)] and unread == [day(1), day(2)]
        stopped.add(day(0))
        changed = {**prints, day(0): (9,)}
        with pytest.raises(ReadOnlyError, match="time limit"):
            cached_days(lambda: nullcontext(store), changed, cache, 60.0, read)
        assert cached_days(lambda: nullcontext(store), changed, cache, 60.0, read, raise_first=False)[1] == [
            day(0), day(1), day(2)
        ]  # fmt: skip


def test_a_refusal_in_any_case_is_read_on_every_store(backend: Backend) -> None:
    """The store sends only the responses holding a refusal's words (`kept_calls`), in
    whatever case they are written; the rules then decide."""
    from llmlog.analysis import kept_calls
    from llmlog.analysis.dashboard import time_param

    said = {
        "shout": "I CANNOT HELP WITH THAT.",
        "curly": "Sorry, I Can\u2019t Assist With That.",
        "answer": "CANNOT REPRODUCE. Here is the fix.",
        "filter": "",
    }
    with backend.open() as store:
        store.insert(
            [Call(id=k, timestamp=NOW, feature="f", response=answer(text) if text else None,
                  stop_reason="content_filter" if k == "filter" else "end_turn") for k, text in said.items()]
        )  # fmt: skip
        bounds = time_param(store, TODAY), time_param(store, TODAY + timedelta(days=1))
        found = {k.values[0]: k.declined() for k in kept_calls.read(store, ["id"], *bounds, timeout_s=30.0)}
    assert found == {"shout": True, "curly": True, "answer": False, "filter": True}
