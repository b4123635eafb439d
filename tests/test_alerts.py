"""Alerts (`llmlog.analysis.alerts`) against real webhook receivers on loopback: a finding
posted once until it clears, in each format, with nothing but its sentence, figures and a
link; receivers that fail, refuse or never answer (recorded, tried again later, never
raised); rules, hostile ones included; two evaluators at once posting once; the schedule
going on through failures. The state on each store: SQLite, PostgreSQL, ClickHouse."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmlog.analysis import alerts
from llmlog.analysis.alerts import Rule, Schedule, notify, run_rule
from llmlog.analysis.findings import Evaluation, Evidence, Finding
from llmlog.analysis.webhooks import Webhook
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.store import Store, open_store
from llmlog.store.clickhouse.engine import EmbeddedEngine
from llmlog.store.clickhouse.store import ClickHouseStore
from tests.receiver import Receiver, closed_url

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LONGER = Finding(
    kind="drift",
    key="drift:code-review:v2:output_tokens",
    score=3.2,
    sentence="code-review v2 answers with 410 output tokens per call, 3.4× v1's 120.",
    numbers={"before": 120, "after": 410.5, "ratio": 3.4, "feature": "code-review", "nan": float("nan")},
    evidence=[Evidence("v1 against v2", "compare", {"feature": "code-review", "a": "v1", "b": "v2"})],
)
FAILING_USER = Finding(
    kind="user_outlier",
    key="user:user_013:error_rate",
    score=2.0,
    sentence="user_013's calls fail 41% of the time, against 3% for their peers.",
    numbers={"error_rate": 0.41, "peers": 0.03},
    evidence=[Evidence("the user", "user", {"user_id": "user_013"})],
)


def store_of(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    if kind == "clickhouse-server":
        engine = EmbeddedEngine(str(tmp_path / "ch"))
        try:
            yield ClickHouseStore(f"chdb://{tmp_path}/ch", engine)
        finally:
            engine.close()
        return
    url = {"sqlite": str(tmp_path / "calls.db"), "chdb": f"chdb://{tmp_path}/ch"}.get(kind)
    with open_store(url or request.getfixturevalue("pg_url")) as store:
        yield store


@pytest.fixture(params=["sqlite", "postgres", "chdb", "clickhouse-server"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store kind: the state of alerts on each."""
    yield from store_of(request.param, tmp_path, request)


@pytest.fixture(params=["sqlite", "postgres", "chdb"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store kind that runs read-only SQL here (a ClickHouse server needs its reader user)."""
    yield from store_of(request.param, tmp_path, request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(str(tmp_path / "calls.db")) as s:
        yield s


@pytest.fixture
def hooks() -> Iterator[tuple[Receiver, Receiver]]:
    with Receiver() as json_hook, Receiver() as slack_hook:
        yield json_hook, slack_hook


def configure(store: Store, *webhooks: Webhook, link_base: str | None = "https://llmlog.example.com") -> None:
    for w in webhooks:
        alerts.add_webhook(store, w)
    alerts.set_link_base(store, link_base)


def events(store: Store) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.key, e.webhook) for e in reversed(store.alert_events(1000))]


def test_a_finding_is_posted_once_until_it_clears(any_store: Store, hooks: tuple[Receiver, Receiver]) -> None:
    store, (json_hook, slack_hook) = any_store, hooks
    configure(store, Webhook("ops", json_hook.url), Webhook("chat", slack_hook.url, "slack"))
    first = notify(store, [LONGER, FAILING_USER], now=NOW)
    assert first.opened == [LONGER.key, FAILING_USER.key] and not first.failed
    assert len(json_hook.posts) == len(slack_hook.posts) == 2
    # Found again, by another server or a cron job on the same store: not posted again.
    again = notify(store, [FAILING_USER, LONGER], now=NOW + timedelta(minutes=5))
    assert (again.opened, again.posted) == ([], [])
    assert len(json_hook.posts) == 2
    # One clears; back later, it is posted again. The other stays, posted once.
    cleared = notify(store, [FAILING_USER], now=NOW + timedelta(minutes=10))
    assert cleared.cleared == [LONGER.key] and cleared.posted == []
    back = notify(store, [FAILING_USER, LONGER], now=NOW + timedelta(minutes=15))
    assert back.opened == [LONGER.key]
    assert sorted(back.posted) == [(LONGER.key, "chat"), (LONGER.key, "ops")]
    assert [b["key"] for b in json_hook.bodies] == [LONGER.key, FAILING_USER.key, LONGER.key]
    assert events(store) == [
        ("opened", LONGER.key, None), ("opened", FAILING_USER.key, None),
        ("posted", LONGER.key, "ops"), ("posted", FAILING_USER.key, "ops"),
        ("posted", LONGER.key, "chat"), ("posted", FAILING_USER.key, "chat"),
        ("cleared", LONGER.key, None),
        ("opened", LONGER.key, None), ("posted", LONGER.key, "ops"), ("posted", LONGER.key, "chat"),
    ]  # fmt: skip
    state = {a.key: a for a in store.alerts()}
    assert state[LONGER.key].open and state[LONGER.key].opened == NOW + timedelta(minutes=15)
    user = state[FAILING_USER.key]
    assert user.opened == NOW and set(user.deliveries) == {"ops", "chat"}


def test_a_key_of_any_length_is_kept(any_store: Store) -> None:
    """A key naming a long (logged) name: kept by its start and a hash, the same each time,
    where an index of PostgreSQL's would refuse it whole."""
    with Receiver() as hook:
        configure(any_store, Webhook("ops", hook.url))
        name = "".join(uuid.uuid4().hex for _ in range(300))  # 9,600 characters that do not compress
        long = Finding("user_outlier", f"user:{name}", 1.0, f"{name} fails.", {"rate": 0.5})
        assert len(notify(any_store, [long], now=NOW).opened) == 1
        assert notify(any_store, [long], now=NOW + timedelta(minutes=5)).posted == []
    (posted,) = hook.bodies
    assert len(posted["key"]) == alerts.KEY_MAX and posted["key"].startswith(f"user:{name[:100]}")
    assert len(posted["sentence"]) == 500


def test_what_is_posted_is_the_sentence_figures_and_a_link(
    store: Store, hooks: tuple[Receiver, Receiver]
) -> None:
    json_hook, slack_hook = hooks
    configure(store, Webhook("ops", json_hook.url), Webhook("chat", slack_hook.url, "slack"))
    hostile = Finding(
        kind="error_rate",
        key="errors:<!channel>",
        score=1.0,
        sentence="Feature <!channel> & <https://evil.example|click>\x1b[31m fails\nnow: 12% of calls.",
        numbers={"rate": 0.12, "feature": "<!channel>", "secret": "sk-live-123"},
    )
    notify(store, [LONGER, hostile], now=NOW)
    (longer, bad) = json_hook.bodies
    assert longer == {
        "source": "llmlog",
        "event": "finding",
        "kind": "drift",
        "key": LONGER.key,
        "sentence": LONGER.sentence,
        "numbers": {"before": 120, "after": 410.5, "ratio": 3.4},  # names and NaN stay home
        "link": "https://llmlog.example.com/reports/compare?feature=code-review&a=v1&b=v2",
        "opened": "2026-11-30T12:00:00.000000Z",
    }
    assert (
        bad["sentence"] == "Feature <!channel> & <https://evil.example|click> [31m fails now: 12% of calls."
    )
    assert bad["numbers"] == {"rate": 0.12} and bad["link"] == "https://llmlog.example.com/findings"
    assert "sk-live" not in str(json_hook.posts) + str(slack_hook.posts)
    slack_longer, slack_bad = slack_hook.bodies
    assert slack_longer == {
        "text": LONGER.sentence
        + " <https://llmlog.example.com/reports/compare?feature=code-review&amp;a=v1&amp;b=v2"
        "|Open in llmlog>"
    }
    assert slack_bad["text"].startswith("Feature &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;")
    assert "<!channel>" not in slack_bad["text"] and "\x1b" not in slack_bad["text"]
    assert json_hook.posts[0]["headers"]["Content-Type"] == "application/json"


def test_without_a_link_base_no_link_is_posted(store: Store, hooks: tuple[Receiver, Receiver]) -> None:
    json_hook, slack_hook = hooks
    configure(store, Webhook("ops", json_hook.url), Webhook("chat", slack_hook.url, "slack"), link_base=None)
    notify(store, [LONGER], now=NOW)
    assert json_hook.bodies[0]["link"] is None and slack_hook.bodies[0] == {"text": LONGER.sentence}


def test_a_failing_webhook_is_recorded_and_retried_never_raised(store: Store) -> None:
    with Receiver(status=500) as broken, Receiver() as healthy:
        configure(store, Webhook("broken", broken.url), Webhook("refused", closed_url()),
                  Webhook("healthy", healthy.url))  # fmt: skip
        done = notify(store, [LONGER, FAILING_USER], now=NOW)
        # The failing ones are tried once each this round; the healthy one has both.
        assert sorted(done.failed) == [("broken", "HTTP 500"), ("refused", done.failed[1][1])]
        assert done.failed[1][1].startswith("ConnectError") and "hook" not in done.failed[1][1]
        assert len(broken.posts) == 1 and len(healthy.posts) == 2
        state = {a.key: a for a in store.alerts()}
        waiting = state[FAILING_USER.key].deliveries["broken"]
        assert (waiting.sent, waiting.failures, waiting.error) == (None, 1, "HTTP 500")
        assert waiting.retry == NOW + timedelta(minutes=1)
        failed = [e for e in store.alert_events() if e.event == "failed"]
        assert {e.webhook for e in failed} == {"broken", "refused"}
        assert all("2 waiting" in e.detail for e in failed)
        # Before its time, not tried again; after it, tried once more and failing longer.
        assert notify(store, [LONGER, FAILING_USER], now=NOW + timedelta(seconds=30)).failed == []
        assert len(broken.posts) == 1
        later = notify(store, [LONGER, FAILING_USER], now=NOW + timedelta(minutes=1))
        assert [w for w, _ in later.failed] == ["broken", "refused"] and len(broken.posts) == 2
        assert store.alerts()[0].deliveries["broken"].retry == NOW + timedelta(minutes=3)
        # Answering again, it takes everything that waited for it, each once.
        broken.status = 200
        healed = notify(store, [LONGER, FAILING_USER], now=NOW + timedelta(minutes=3))
        assert sorted(k for k, w in healed.posted if w == "broken") == sorted([LONGER.key, FAILING_USER.key])
        assert len(broken.posts) == 4 and len(healthy.posts) == 2
        notify(store, [LONGER, FAILING_USER], now=NOW + timedelta(minutes=30))
        assert len(broken.posts) == 4


def test_a_webhook_that_never_answers_is_given_up_on_in_time(store: Store) -> None:
    with Receiver(hang=True) as silent:
        configure(store, Webhook("silent", silent.url))
        done = notify(store, [LONGER], now=NOW, post_timeout_s=0.5)
    assert done.failed == [("silent", "no answer within 0.5 s")]


def test_a_webhook_that_answers_a_byte_at_a_time_is_given_up_on_in_time(store: Store) -> None:
    """Each byte within a read's time limit, the whole answer far past it: a post that took as
    long as the receiver liked would outlast the round's lease, and another evaluator would
    post the same findings again."""
    with Receiver(trickle=True) as slow:
        configure(store, Webhook("slow", slow.url))
        done = notify(store, [LONGER], now=NOW, post_timeout_s=0.5)
    assert done.failed == [("slow", "no answer within 0.5 s")] and done.posted == []


def test_nothing_a_webhook_answers_but_its_status_is_kept(store: Store) -> None:
    """An answer that is not HTTP: what it said stays out of the history, which viewers read."""
    with Receiver(raw=b"XTTP/1.1 200 OK <!channel> call +1 555 0100 now\r\n\r\n") as odd:
        configure(store, Webhook("odd", odd.url))
        done = notify(store, [LONGER], now=NOW)
    assert [w for w, _ in done.failed] == ["odd"]
    kept = [
        done.failed[0][1],
        *(e.detail for e in store.alert_events()),
        store.alerts()[0].deliveries["odd"].error,
    ]
    assert not [line for line in kept if line and ("555" in line or "channel" in line)]


def test_a_finding_that_clears_before_its_delivery_is_not_posted(store: Store) -> None:
    with Receiver(status=503) as hook:
        configure(store, Webhook("ops", hook.url))
        notify(store, [LONGER], now=NOW)
        notify(store, [], now=NOW + timedelta(minutes=2))
        hook.status = 200
        notify(store, [], now=NOW + timedelta(minutes=10))
    assert len(hook.posts) == 1 and store.alerts()[0].status == "cleared"


def test_a_round_posts_a_hundred_to_a_webhook_at_most(store: Store) -> None:
    """Many findings at once (a first round over a month of trouble): a round's time stays
    bounded, and the next takes the rest, oldest first."""
    many = [Finding("drift", f"drift:f{i:03d}", 1.0, f"finding {i}") for i in range(150)]
    with Receiver() as hook:
        configure(store, Webhook("ops", hook.url))
        assert len(notify(store, many, now=NOW).posted) == alerts.POSTS_PER_ROUND == 100
        assert len(notify(store, many, now=NOW + timedelta(minutes=5)).posted) == 50
        assert notify(store, many, now=NOW + timedelta(minutes=10)).posted == []
    assert sorted(b["key"] for b in hook.bodies) == [f.key for f in many]


def test_evidence_without_its_page_links_to_the_findings(store: Store) -> None:
    no_id = [Evidence("the session", "session")]  # a session's page needs its id
    notify(store, [Finding("costly_session", "session:?", 1.0, "A costly session.", evidence=no_id)], now=NOW)
    assert store.alerts()[0].link == "/findings"


def test_kinds_not_evaluated_do_not_clear(store: Store) -> None:
    notify(store, [LONGER, FAILING_USER], now=NOW)
    assert notify(store, [FAILING_USER], now=NOW, unsure=["drift"]).cleared == []
    assert notify(store, [], now=NOW, unsure=["*"]).cleared == []
    assert notify(store, [], now=NOW).cleared == [LONGER.key, FAILING_USER.key]


# ---------------------------------------------------------------------------- rules


def calls(n: int, errors: int) -> list[Call]:
    return [
        Call(id=f"c{i}", timestamp=NOW - timedelta(minutes=i), model="m", feature="f", input_tokens=10,
             error={"type": "overloaded_error", "message": "busy"} if i < errors else None)
        for i in range(n)
    ]  # fmt: skip


ERRORS = "SELECT count(*) FROM calls WHERE error IS NOT NULL"


def test_a_rule_that_trips_is_a_finding(sql_store: Store) -> None:
    store = sql_store
    store.insert(calls(10, errors=3))
    with Receiver() as hook:
        configure(store, Webhook("ops", hook.url))
        alerts.add_rule(store, Rule("errors", ERRORS, ">", 2))
        alerts.add_rule(store, Rule("quiet", ERRORS, ">=", 100))
        done = notify(store, [LONGER], now=NOW)
        assert [f.key for f in done.findings] == ["rule:errors", LONGER.key]  # a rule ranks first
        assert [(r.rule.name, r.value, r.tripped) for r in done.rules] == [
            ("errors", 3, True),
            ("quiet", 3, False),
        ]
        body = next(b for b in hook.bodies if b["kind"] == "rule")
        assert body["sentence"] == "Rule errors: its query gives 3, above 2."
        assert body["numbers"] == {"value": 3, "threshold": 2}
        assert body["link"] == "https://llmlog.example.com/alerts"
        # Below the threshold again, it clears; the finding given stays open.
        alerts.remove_rule(store, "quiet")
        alerts.remove_rule(store, "errors")
        alerts.add_rule(store, Rule("errors", ERRORS, ">", 5))
        assert notify(store, [LONGER], now=NOW + timedelta(minutes=5)).cleared == ["rule:errors"]
        assert len(hook.posts) == 2


HOSTILE_RULES = {
    "write": ("DELETE FROM calls", "its query was refused or failed"),
    "drop": ("DROP TABLE call_data", "its query was refused or failed"),
    "two": ("SELECT 1; DELETE FROM calls", "its query was refused or failed"),
    "settings": ("SELECT count(*) FROM settings", "its query was refused or failed"),
    "text": ("SELECT model FROM calls LIMIT 1", "its query returned text, not a number"),
    "nothing": ("SELECT 1 FROM calls WHERE model = 'none'", "its query returned no rows, not one number"),
    "rows": ("SELECT 1 FROM calls", "its query returned more than one row, not one number"),
    "columns": ("SELECT 1, 2", "its query returned 2 columns, not one number"),
    "null": ("SELECT max(cost_usd) FROM calls", "its query returned NULL, not a number"),
    "slow": (
        "WITH RECURSIVE r AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
        "its query took longer than 1 s",
    ),
}


def test_hostile_rules_are_refused_or_reported(sql_store: Store) -> None:
    store = sql_store
    store.insert(calls(10, errors=3))
    for name, (sql, problem) in HOSTILE_RULES.items():
        if name == "slow" and store.dialect.name == "clickhouse":  # its recursion stops at 1,000 steps
            sql = "SELECT sum(number) FROM numbers(100000000000)"
        run = run_rule(store, Rule(name, sql, ">", 0), timeout_s=1)
        assert (run.value, run.problem) == (None, problem), name
    assert store.count(CallFilter()) == 10  # nothing written


def test_a_number_too_large_for_a_float_is_reported_not_raised(pg_url: str) -> None:
    """PostgreSQL's numeric gives whole numbers of any size: one past a float's range is the
    rule's problem, not an error that stops every round (and every other rule and post)."""
    with open_store(pg_url) as store:
        rule = Rule("huge", "SELECT (10::numeric ^ 400)::numeric(1000, 0)", ">", 0)
        run = run_rule(store, rule, timeout_s=5)
        assert (run.value, run.problem) == (None, "its query returned a number that is not finite")
        alerts.add_rule(store, rule)
        assert [r.problem for r in notify(store, [LONGER], now=NOW).problems] == [run.problem]


def test_a_value_past_the_size_limit_is_said_so(sql_store: Store) -> None:
    store = sql_store
    sql = {"sqlite": "SELECT hex(zeroblob(50000))"}.get(store.dialect.name, "SELECT repeat('x', 100000)")
    run = run_rule(store, Rule("big", sql, ">", 0), timeout_s=5)
    assert (run.value, run.problem) == (None, "its query returned a value past 65,536 bytes, not one number")


def test_a_failing_rule_is_reported_once_and_neither_opens_nor_clears(store: Store) -> None:
    store.insert(calls(10, errors=3))
    alerts.add_rule(store, Rule("errors", ERRORS, ">", 2))
    assert notify(store, [], now=NOW).opened == ["rule:errors"]
    # Its query now fails (the rule replaced by one that writes): the finding stays open.
    alerts.remove_rule(store, "errors")
    alerts.add_rule(store, Rule("errors", "DELETE FROM calls", ">", 2))
    for minutes in (5, 10):
        done = notify(store, [], now=NOW + timedelta(minutes=minutes))
        assert done.cleared == [] and [r.problem for r in done.problems] == [
            "its query was refused or failed"
        ]
        assert done.problems[0].detail  # what the engine said, for the terminal
    (state,) = store.alerts()
    assert state.open and state.problem == "its query was refused or failed"
    assert [e.event for e in store.alert_events()].count("rule_failed") == 1  # said once
    alerts.remove_rule(store, "errors")
    alerts.add_rule(store, Rule("errors", ERRORS, ">", 5))
    done = notify(store, [], now=NOW + timedelta(minutes=15))
    assert done.cleared == ["rule:errors"] and store.alerts()[0].problem is None
    assert [e.event for e in store.alert_events(3)] == ["cleared", "rule_recovered", "rule_failed"]


def test_rules_are_checked_when_configured() -> None:
    for bad in (
        lambda: Rule("a b", "SELECT 1", ">", 1),
        lambda: Rule("r", "  ", ">", 1),
        lambda: Rule("r", "SELECT 1", "=>", 1),
        lambda: Rule("r", "SELECT 1", ">", float("inf")),
        lambda: Webhook("w", "file:///etc/passwd"),
        lambda: Webhook("w", "http://"),
        lambda: Webhook("w", "https://hooks.example.com:99999/x"),  # no such port: lists would fail
        lambda: Webhook("w", "https://hooks.example.com/x", "xml"),
        lambda: Webhook("-w", "https://hooks.example.com/x"),
    ):
        with pytest.raises(ValueError):
            bad()
    assert Webhook("w", "https://hooks.slack.com/services/T0/B0/SECRET").shown == "https://hooks.slack.com/…"


# ---------------------------------------------------------------------------- several at once


def test_evaluators_on_one_store_post_each_finding_once(any_store: Store, tmp_path: Path) -> None:
    """Servers and cron jobs sharing a store, all at once: each finding reaches the webhook once."""
    first = any_store
    if isinstance(first, ClickHouseStore) and not hasattr(first, "_private"):
        others = [ClickHouseStore(first.url, first.engine) for _ in range(3)]
    elif hasattr(first, "_private"):  # the embedded engine: one process, one store
        pytest.skip("chdb opens its folder in one process; the state is in its private SQLite file")
    else:
        others = [open_store(first.url) for _ in range(3)]
    with Receiver() as hook:
        configure(first, Webhook("ops", hook.url))
        found = [Finding("drift", f"drift:f{i}", 1.0, f"finding {i}") for i in range(5)]
        stores = [first, *others]
        barrier = threading.Barrier(len(stores))
        rounds: list[alerts.Round] = []

        def run(s: Store) -> None:
            barrier.wait()
            for _ in range(3):
                rounds.append(notify(s, found, now=NOW))

        threads = [threading.Thread(target=run, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    for s in others:
        if not isinstance(s, ClickHouseStore):
            s.close()
    assert sorted(b["key"] for b in hook.bodies) == [f"drift:f{i}" for i in range(5)]
    assert sum(len(r.opened) for r in rounds) == 5


def test_a_busy_lease_leaves_the_round_to_its_holder(store: Store) -> None:
    with Receiver() as hook:
        configure(store, Webhook("ops", hook.url))
        assert store.take_alert_lease("another-server", 60)
        done = notify(store, [LONGER], now=NOW)
        assert done.busy and done.findings == [LONGER] and hook.posts == [] and store.alerts() == []
        store.drop_alert_lease("another-server")
        assert notify(store, [LONGER], now=NOW).posted == [(LONGER.key, "ops")]


# ---------------------------------------------------------------------------- the schedule


def test_the_schedule_goes_on_through_failures(tmp_path: Path) -> None:
    url = str(tmp_path / "calls.db")
    with open_store(url) as s:
        s.insert(calls(10, errors=3))
        alerts.add_rule(s, Rule("errors", ERRORS, ">", 2))
    opened = evaluated = 0

    def flaky_open() -> Store:
        nonlocal opened
        opened += 1
        if opened == 2:
            raise OSError("the store is down")
        return open_store(url)

    def evaluate(store: Store) -> tuple[list[Finding], tuple[str, ...]]:
        nonlocal evaluated
        evaluated += 1
        if evaluated == 1:
            raise RuntimeError("a bug in the findings")
        if evaluated == 2:
            return [], ("*",)  # not evaluated: nothing of theirs clears, the rules go on
        return [LONGER], ()

    with Receiver() as hook:
        with open_store(url) as s:
            configure(s, Webhook("ops", hook.url))
        schedule = Schedule(flaky_open, every_s=0.05, first_s=0, evaluate=evaluate).start()
        try:
            assert schedule.wait_rounds(6, timeout_s=60)
        finally:
            schedule.stop()
    # A round raised, the store failed once, the findings once: each posted once all the same.
    assert sorted(b["key"] for b in hook.bodies) == [LONGER.key, "rule:errors"]
    assert schedule.last is not None and not schedule.last.busy


def test_findings_that_fail_leave_the_rules(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    def broken(store: Store, now: datetime | None = None) -> Evaluation:
        raise NotImplementedError

    monkeypatch.setattr(alerts.findings_module, "evaluation", broken)
    assert alerts.evaluate_findings(store) == ([], ("*",))


def test_the_schedule_evaluates_nothing_without_webhooks_or_rules(tmp_path: Path) -> None:
    evaluated: list[int] = []

    def evaluate(store: Store) -> tuple[list[Finding], tuple[str, ...]]:
        evaluated.append(1)
        return [LONGER], ()

    url = str(tmp_path / "calls.db")
    open_store(url).close()
    schedule = Schedule(lambda: open_store(url), every_s=0.05, first_s=0, evaluate=evaluate).start()
    try:
        assert schedule.wait_rounds(2, timeout_s=60)
    finally:
        schedule.stop()
    assert evaluated == [] and schedule.last is None
