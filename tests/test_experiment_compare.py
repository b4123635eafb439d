"""An experiment's comparison: the paired statistics against textbook values, McNemar's exact
test on known counts, agreement and similarity of answers, the pairs to read first, the
verdict and JSON, the `--fail-if` grammar (valid and hostile), and `load` on every engine
(duplicate replays, erased originals, other experiments' calls)."""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmlog.analysis import experiments
from llmlog.analysis.answers import MAX_WORDS, SIMILARITY_WORDS, answer_text, diff, similarity
from llmlog.analysis.experiments import (
    ALPHA,
    METRICS,
    MIN_PAIRS,
    Comparison,
    Condition,
    compare,
    load,
    mcnemar,
    paired_t,
    t_two_sided,
)
from llmlog.core.record import Call
from llmlog.store import Store
from llmlog.store.experiments import Experiment

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EXP_ID = "exp-0a1b2c3d"
SEALED = "llmlog-enc:v1:k1:c2VhbGVk"
REFUSAL = "I'm sorry, but I can't help with that request."


def text(words: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": words}]}


def call(i: int, answer: str = "The diff looks fine.", **changes: Any) -> Call:
    base = Call(
        id=f"c{i:04d}",
        timestamp=T0 + timedelta(minutes=i),
        provider="anthropic",
        model="claude-sonnet-4-6",
        feature="code-review",
        user_id="u1",
        messages=[{"role": "user", "content": f"review {i}"}],
        response=text(answer),
        stop_reason="end_turn",
        output_tokens=100,
        latency_ms=900.0,
        cost_usd=0.002,
    )
    return base.replace(**changes)


def replay_of(original: Call, answer: str | None = None, **changes: Any) -> Call:
    """A replay as an experiment stores it: a new call answering the same request."""
    if answer is not None:
        changes["response"] = text(answer)
    new = original.replace(
        id=f"r-{original.id}",
        timestamp=original.timestamp + timedelta(days=1),
        metadata={"experiment": EXP_ID, "replay_of": original.id},
    )
    return new.replace(**changes)


def experiment(sample: list[str]) -> Experiment:
    return Experiment(
        id=EXP_ID,
        created=T0 + timedelta(days=1),
        feature="code-review",
        version=None,
        since=T0 - timedelta(days=7),
        until=T0 + timedelta(days=1),
        change={"model": "claude-haiku-4-5"},
        sample=sample,
    )


def comparison(pairs: list[tuple[Call, Call | None]]) -> Comparison:
    return compare(experiment([o.id for o, _ in pairs]), pairs)


def tool(name: str, **args: Any) -> dict[str, Any]:
    return {"id": f"toolu_{name}", "name": name, "input": args}


# ---------------------------------------------------------------- Student's t, the paired t-test


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (1.0, 1, 0.5),  # Cauchy: P(|T| > 1) is a half exactly
        (2.0, 2, 1 - 2 / math.sqrt(6)),  # df 2 has a closed form: 1 - t / sqrt(2 + t²)
        # Critical values from a t table (two-sided): 0.05 and 0.01.
        (2.570582, 5, 0.05),
        (2.228139, 10, 0.05),
        (3.169273, 10, 0.01),
        (2.045230, 29, 0.05),
        (2.749996, 30, 0.01),
        (1.959988, 100_000, 0.05),  # the normal's is 1.959964
        (0.0, 7, 1.0),
    ],
)
def test_t_distribution_matches_the_table(t: float, df: int, p: float) -> None:
    assert t_two_sided(t, df) == pytest.approx(p, rel=1e-5)
    assert t_two_sided(-t, df) == pytest.approx(p, rel=1e-5)


def test_t_distribution_far_tail_is_tiny_not_zero_or_negative() -> None:
    p = t_two_sided(40.0, 9)
    assert 0 < p < 1e-10
    assert t_two_sided(math.inf, 9) == 0.0


# Student's own example (Cushny and Peebles' sleep data, R's `sleep`): extra hours of sleep
# under two drugs, the same ten patients. R: t.test(extra ~ group, paired = TRUE) gives
# t = -4.0621, df = 9, p-value = 0.002833, mean difference -1.58.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_test_gives_students_sleep_data_result() -> None:
    effect, p = paired_t([b - a for a, b in zip(SLEEP_1, SLEEP_2, strict=True)])
    assert p == pytest.approx(0.002833, abs=5e-7)
    assert effect == pytest.approx(1.58 / 1.229995, rel=1e-5)  # sd of the differences, from R


def test_means_are_paired_call_by_call() -> None:
    # Latency in ms: the sleep data moved up by 10 s so that every figure is positive; the
    # differences, hence the test, are the same.
    pairs: list[tuple[Call, Call | None]] = []
    for i, (a, b) in enumerate(zip(SLEEP_1, SLEEP_2, strict=True)):
        o = call(i, latency_ms=(a + 10) * 1000)
        pairs.append((o, replay_of(o, latency_ms=(b + 10) * 1000)))
    m = comparison(pairs).metric("latency_ms")
    assert m.n == 10
    assert m.before == pytest.approx(10_750.0)
    assert m.after == pytest.approx(12_330.0)
    assert m.change == pytest.approx(1_580.0)
    assert m.relative == pytest.approx(1580 / 10750)
    assert m.p == pytest.approx(0.002833, abs=5e-7)
    assert m.effect == pytest.approx(1.2845576, rel=1e-6)
    assert m.flagged  # p < 0.01 and over half an sd


def test_a_pair_counts_for_a_mean_only_where_both_sides_have_the_figure() -> None:
    pairs: list[tuple[Call, Call | None]] = []
    for i in range(12):
        o = call(i, output_tokens=100 + i, cost_usd=None if i < 3 else 0.002)
        pairs.append((o, replay_of(o, output_tokens=None if i == 11 else 90 + i, cost_usd=0.003)))
    pairs.append((call(99), None))  # not replayed yet: in no metric
    c = comparison(pairs)
    tokens, cost = c.metric("output_tokens"), c.metric("cost_usd")
    assert tokens.n == 11 and tokens.change == pytest.approx(-10.0)
    assert tokens.before == pytest.approx(statistics.fmean(100 + i for i in range(11)))
    assert cost.n == 9 and cost.before == pytest.approx(0.002) and cost.after == pytest.approx(0.003)


def test_a_failed_side_counts_for_the_error_rate_not_for_the_means() -> None:
    """A replay refused at once (429 in 20 ms) took no time to answer: counted in the
    latency, it would read as the change making the feature faster."""
    pairs: list[tuple[Call, Call | None]] = []
    for i in range(20):
        o = call(i, latency_ms=900.0 + i)
        if i < 8:
            error = {"type": "rate_limit_error", "status": 429, "message": "slow down"}
            new = replay_of(o, response=None, latency_ms=20.0, error=error, output_tokens=0, cost_usd=0.0)
        else:
            new = replay_of(o, latency_ms=900.0 + i + (i % 3) - 1)
        pairs.append((o, new))
    c = comparison(pairs)
    for name in ("latency_ms", "output_tokens", "cost_usd"):
        m = c.metric(name)
        assert m.n == 12 and not m.flagged, m
    assert c.metric("latency_ms").change == pytest.approx(0.0)
    assert c.metric("error_rate").change == pytest.approx(0.4) and c.metric("error_rate").flagged


def test_no_p_below_min_pairs_nor_without_spread() -> None:
    few = []
    for i in range(MIN_PAIRS - 1):
        o = call(i, output_tokens=100 + 7 * i)
        few.append((o, replay_of(o, output_tokens=300 + 11 * i)))
    m = comparison(few).metric("output_tokens")
    assert m.effect is not None and m.effect > 1
    assert m.p is None and not m.flagged
    # Every replay exactly 5 tokens longer: no spread, so no effect size and no test (a t
    # of infinity says nothing a reader can weigh).
    same = []
    for i in range(30):
        o = call(i, output_tokens=100 + 7 * i, cost_usd=0.0017 * (i + 1))
        # Every replay $0.0003 dearer: in floating point the differences vary in their last
        # bits (sd ~1e-18), which would make a t of 10^15 out of rounding.
        same.append((o, replay_of(o, output_tokens=105 + 7 * i, cost_usd=0.0017 * (i + 1) + 0.0003)))
    c = comparison(same)
    assert c.metric("output_tokens").change == pytest.approx(5)
    assert c.metric("output_tokens").p is None and c.metric("output_tokens").effect is None
    cost = c.metric("cost_usd")
    assert len({(r.cost_usd or 0) - (o.cost_usd or 0) for o, r in same if r}) > 1
    assert cost.change == pytest.approx(0.0003)
    assert cost.effect is None and cost.p is None and not cost.flagged


# ---------------------------------------------------------------- rates: McNemar's exact test


def test_mcnemar_exact_on_known_counts() -> None:
    # 9 of 10 discordant pairs one way: 2 * P(X >= 9), X ~ Binomial(10, 1/2) = 2 * 11 / 1024.
    assert mcnemar(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar(0, 5) == pytest.approx(2 / 32)
    assert mcnemar(5, 5) == 1.0
    assert mcnemar(0, 0) == 1.0


def test_refusal_rate_counts_pairs_that_disagree() -> None:
    pairs: list[tuple[Call, Call | None]] = []
    for i in range(40):
        o = call(i)
        pairs.append((o, replay_of(o, response=text(REFUSAL)) if i < 10 else replay_of(o)))
    m = comparison(pairs).metric("refusal_rate")
    assert (m.before, m.after, m.change, m.n) == (0.0, 0.25, 0.25, 40)
    assert m.relative is None  # no refusal before: no ratio
    assert m.effect == 0.25
    assert m.p == pytest.approx(2 / 1024)
    assert m.flagged


def test_errors_discordant_9_to_1_are_not_beyond_chance_at_001() -> None:
    pairs: list[tuple[Call, Call | None]] = []
    failure = {"type": "overloaded_error", "status": 529, "message": "busy"}
    for i in range(30):
        o = call(i, error=failure if i == 0 else None)
        r = replay_of(o, error=failure if 1 <= i <= 9 or i == 20 else None)
        pairs.append((o, r))
    m = comparison(pairs).metric("error_rate")
    # Original fails only in pair 0; the replay only in pairs 1-9 and 20: 1 against 10.
    assert m.before == pytest.approx(1 / 30) and m.after == pytest.approx(10 / 30)
    assert m.p == pytest.approx(2 * 12 / 2048)  # P(X >= 10 | 11) = 12 / 2048
    assert m.p > ALPHA and not m.flagged


def test_refusal_by_stop_reason_counts_when_the_answer_is_sealed() -> None:
    pairs: list[tuple[Call, Call | None]] = []
    for i in range(12):
        o = call(i, response=SEALED)
        pairs.append(
            (o, replay_of(o, response=SEALED, stop_reason="content_filter" if i < 3 else "end_turn"))
        )
    c = comparison(pairs)
    assert c.metric("refusal_rate").after == pytest.approx(3 / 12)
    assert c.metric("similarity").n == 0 and c.metric("similarity").after is None


def test_tool_call_rate() -> None:
    pairs: list[tuple[Call, Call | None]] = []
    for i in range(20):
        o = call(i, tool_calls=[tool("grep", q="x")] if i < 4 else None)
        pairs.append((o, replay_of(o, tool_calls=[tool("grep", q="x")] if i < 14 else [])))
    m = comparison(pairs).metric("tool_call_rate")
    assert (m.before, m.after) == (0.2, 0.7)
    assert m.p == pytest.approx(2 / 1024) and m.flagged


# ---------------------------------------------------------------- agreement and similarity


def test_similarity_of_texts() -> None:
    assert similarity("", "") == 1.0
    assert similarity("same words", "same words") == 1.0
    assert similarity("", "something") == 0.0
    # Units "a ", "b ", "c ", "d" against "a ", "b ", "x ", "d": 3 match of 4 a side.
    assert similarity("a b c d", "a b x d") == pytest.approx(0.75)
    # Without autojunk: a word in over 1% of a long text still counts (with the heuristic
    # every word here would be ignored, and the two read as having nothing in common).
    assert similarity("a b " * 150 + "cat", "b a " * 150 + "dog") > 0.99


def test_similarity_goes_sentence_by_sentence_past_a_few_pages() -> None:
    """Word by word grows with the square of the length (seconds a pair at 10,000 words, and
    a page scores every pair): past SIMILARITY_WORDS a side, the score is over sentences."""
    sentence = " ".join(["word"] * 9) + ". "
    long = sentence * (SIMILARITY_WORDS // 10 + 5)
    # Word by word these two are all but the same; sentence by sentence, one sentence of
    # a hundred-odd differs.
    assert similarity(long, long + "More words.") == pytest.approx(1, abs=0.01)
    assert similarity(long, long.replace("word.", "other.", 1)) < 1
    half = sentence * 60 + "Then a different ending, said once. " * 60
    assert similarity(sentence * 120, half) == pytest.approx(0.5, abs=0.01)
    short = " ".join(["word"] * 100)
    assert similarity(short, short + " more") > 0.98


def test_the_side_by_side_goes_line_by_line_past_max_words() -> None:
    words = " ".join(["word"] * (MAX_WORDS + 1))
    assert not diff(words, words + " more").same


def test_answer_text_is_the_words_then_the_tool_calls() -> None:
    c = call(1, answer="Looking.", tool_calls=[tool("grep", q="TODO")])
    assert answer_text(c) == 'Looking.\n\ngrep({\n  "q": "TODO"\n})\n'
    assert answer_text(call(2, response=None)) == ""


def test_tool_agreement_and_similarity_per_pair() -> None:
    grep, read = tool("grep", q="x"), tool("read", path="a.py")
    failure = {"type": "api_error", "status": 500, "message": "boom"}
    o = [call(i) for i in range(7)]
    pairs: list[tuple[Call, Call | None]] = [
        (o[0], replay_of(o[0])),  # neither calls a tool: they agree; same text
        (o[1].replace(tool_calls=[grep, read]), replay_of(o[1], tool_calls=[grep, read], answer="Fine.")),
        (o[2].replace(tool_calls=[grep, read]), replay_of(o[2], tool_calls=[read, grep])),  # order
        (o[3], replay_of(o[3], tool_calls=[grep], response=text("Something else entirely."))),
        (o[4], replay_of(o[4], error=failure, response=None)),  # errored: neither known
        (o[5], replay_of(o[5], response=SEALED, tool_calls=[SEALED])),  # sealed: neither known
        (o[6], None),
    ]
    c = comparison(pairs)
    assert [p.tools_agree for p in c.pairs] == [True, True, False, False, None, None, None]
    sims = [p.similarity for p in c.pairs]
    assert sims[0] == 1.0
    assert sims[1] is not None and 0 < sims[1] < 1  # the same tool calls, other words
    assert sims[4] is None and sims[5] is None and sims[6] is None
    assert c.metric("tool_agreement").after == pytest.approx(2 / 4)
    assert c.metric("tool_agreement").n == 4
    known = [s for s in sims if s is not None]
    assert c.metric("similarity").after == pytest.approx(sum(known) / len(known))
    assert c.metric("similarity").before is None and c.metric("similarity").p is None


# ---------------------------------------------------------------- what to read, verdict, JSON


def test_most_different_errors_then_refusals_then_least_similar() -> None:
    failure = {"type": "api_error", "status": 500, "message": "boom"}
    o = [call(i, answer="Looks good to me, ship it after the tests pass.") for i in range(6)]
    pairs: list[tuple[Call, Call | None]] = [
        (o[0], replay_of(o[0])),  # the same: nothing to read
        (o[1], replay_of(o[1], answer="Looks good to me, ship it.")),  # a little different
        (o[2], replay_of(o[2], answer="Rewrite the loop entirely.")),  # very different
        (o[3], replay_of(o[3], answer=REFUSAL)),  # a refusal on one side
        (o[4], replay_of(o[4], error=failure, response=None)),  # an error on one side
        (o[5], None),
    ]
    c = comparison(pairs)
    assert [p.original.id for p in c.most_different(10)] == [o[4].id, o[3].id, o[2].id, o[1].id]
    assert [p.original.id for p in c.most_different(2)] == [o[4].id, o[3].id]
    assert c.most_different(0) == []


def test_verdicts() -> None:
    pairs: list[tuple[Call, Call | None]] = []
    for i in range(40):
        o = call(i)
        pairs.append((o, replay_of(o, response=text(REFUSAL)) if i < 10 else replay_of(o)))
    unfinished = [(o, None) for o, _ in pairs[38:]]
    c = compare(experiment([o.id for o, _ in pairs] + ["c-erased"]), [*pairs[:38], *unfinished])
    assert (
        c.verdict == "38 of 41 calls replayed (1 erased since); 1 metric changed beyond chance (refusal_rate)"
    )
    few = comparison(pairs[:5])
    assert few.verdict == "5 of 5 calls replayed; too few pairs to test (at least 10)"
    calm = comparison([(o, replay_of(o)) for o in (call(i) for i in range(12))])
    assert calm.verdict == "12 of 12 calls replayed; no metric changed beyond chance"


def test_to_json_is_json_with_every_pair() -> None:
    failure = {"type": "api_error", "status": 500, "message": "boom"}
    o = [call(i) for i in range(3)]
    c = comparison(
        [(o[0], replay_of(o[0], answer=REFUSAL)), (o[1], replay_of(o[1], error=failure)), (o[2], None)]
    )
    data = json.loads(json.dumps(c.to_json()))
    assert data["experiment"]["id"] == EXP_ID and data["experiment"]["sample"] == [x.id for x in o]
    assert [m["metric"] for m in data["metrics"]] == list(METRICS)
    assert data["verdict"] == c.verdict
    assert (data["sampled"], data["replayed"], data["erased"]) == (3, 2, 0)
    assert data["pairs"][0] == {
        "original": o[0].id,
        "replay": f"r-{o[0].id}",
        "similarity": c.pairs[0].similarity,
        "tools_agree": True,
        "original_error": False,
        "replay_error": False,
        "original_refusal": False,
        "replay_refusal": True,
    }
    assert data["pairs"][1]["replay_error"] is True and data["pairs"][1]["similarity"] is None
    assert data["pairs"][2]["replay"] is None and data["pairs"][2]["replay_error"] is None
    assert data["most_different"] == [o[1].id, o[0].id]


# ---------------------------------------------------------------- --fail-if


@pytest.mark.parametrize(
    ("text", "metric", "op", "value", "unit", "change"),
    [
        ("refusal_rate > +2pts", "refusal_rate", ">", 2.0, "pts", True),
        ("  refusal_rate>=+2 pts ", "refusal_rate", ">=", 2.0, "pts", True),
        ("error_rate < -1.5pts", "error_rate", "<", -1.5, "pts", True),
        ("output_tokens > +20%", "output_tokens", ">", 20.0, "%", True),
        ("tool_call_rate <= -10%", "tool_call_rate", "<=", -10.0, "%", True),
        ("latency_ms > +150", "latency_ms", ">", 150.0, "", True),
        ("cost_usd > +0.001", "cost_usd", ">", 0.001, "", True),
        ("error_rate > 0.05", "error_rate", ">", 0.05, "", False),
        ("similarity < 0.8", "similarity", "<", 0.8, "", False),
        ("similarity < 80pts", "similarity", "<", 80.0, "pts", False),
        ("tool_agreement < .9", "tool_agreement", "<", 0.9, "", False),
        ("latency_ms > 2000", "latency_ms", ">", 2000.0, "", False),
    ],
)
def test_condition_grammar(text: str, metric: str, op: str, value: float, unit: str, change: bool) -> None:
    c = Condition.parse(text)
    assert (c.text, c.metric, c.op, c.value, c.unit, c.change) == (text, metric, op, value, unit, change)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "METRIC OP VALUE"),
        ("   ", "METRIC OP VALUE"),
        ("nan", "METRIC OP VALUE"),
        ("refusal_rate", "METRIC OP VALUE"),
        ("refusal_rate > nan", "signed change"),
        ("refusal_rate > inf", "signed change"),
        ("latency_ms > 1e3", "signed change"),
        ("latency_ms > " + "9" * 400, "over 200 characters"),
        ("error_rate > 0" + " " * 100_000 + "x", "over 200 characters"),
        ("refusal_rate > +2pts; rm -rf /", "signed change"),
        ("refusal_rate > +2pts extra", "signed change"),
        ("refusal_rate > +2pts\nerror_rate > 0", "METRIC OP VALUE"),
        ("refusal_rate > ٣", "signed change"),  # a digit, but not one of ours
        ("refusal_rate > ++2pts", "signed change"),
        ("refusal_rate > 2pt", "signed change"),
        ("refusals > +2pts", "one of output_tokens, latency_ms"),
        ("Refusal_Rate > +2pts", "unknown metric"),
        ("refusal_rate == +2pts", "one of > >= < <="),
        ("refusal_rate = +2pts", "one of > >= < <="),
        ("refusal_rate != +2pts", "one of > >= < <="),
        ("refusal_rate => +2pts", "one of > >= < <="),
        ("output_tokens > +2pts", "not points"),
        ("output_tokens > 2pts", "not points"),
        ("error_rate > +2", "+2pts (points) or +20% (relative)"),
        ("similarity > +2pts", "no before"),
        ("similarity > -10%", "no before"),
        ("similarity > 10%", "not per cent"),
        ("error_rate > 5%", "needs a sign"),
        ("error_rate > 1.5", "out of range"),
        ("similarity > 120pts", "out of range"),
    ],
)
def test_condition_rejects_with_what_is_allowed(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        Condition.parse(text)
    assert says in str(caught.value)


def test_condition_rejects_what_is_not_text() -> None:
    with pytest.raises(ValueError, match="empty condition"):
        Condition.parse(None)  # type: ignore[arg-type]


def refusals(before: int, after: int, n: int = 50) -> Comparison:
    pairs: list[tuple[Call, Call | None]] = []
    for i in range(n):
        o = call(i, answer=REFUSAL if i < before else "Fine.", output_tokens=100)
        pairs.append((o, replay_of(o, answer=REFUSAL if i < after else "Fine.", output_tokens=130)))
    return comparison(pairs)


def test_condition_met_on_changes_and_figures() -> None:
    c = refusals(before=1, after=4)  # 2% -> 8%: +6 points, +300%
    assert Condition.parse("refusal_rate > +2pts").met(c) == (True, "refusal_rate +6.0 pts (2.0% → 8.0%)")
    assert Condition.parse("refusal_rate > +6pts").met(c)[0] is False
    assert Condition.parse("refusal_rate >= +6pts").met(c)[0] is True
    assert Condition.parse("refusal_rate > +250%").met(c) == (True, "refusal_rate +300.0% (2.0% → 8.0%)")
    assert Condition.parse("refusal_rate > 0.05").met(c) == (True, "refusal_rate 0.080 (2.0% → 8.0%)")
    assert Condition.parse("refusal_rate < 10pts").met(c) == (True, "refusal_rate 8.0 pts (2.0% → 8.0%)")
    assert Condition.parse("output_tokens > +25").met(c) == (True, "output_tokens +30.0 (100.0 → 130.0)")
    assert Condition.parse("output_tokens > +30%").met(c)[0] is False
    assert Condition.parse("output_tokens <= 130").met(c)[0] is True
    # Similarity among the pairs that answered in words: every pair here, 50.
    sim = Condition.parse("similarity < 0.99").met(c)
    assert sim == (True, f"similarity {c.metric('similarity').after:.3f} (over 50 pairs)")


def test_condition_exact_change_is_not_lost_to_rounding() -> None:
    # 5 of 50 -> 6 of 50: 0.12 - 0.1 is 0.01999… in floating point; it is 2 points.
    c = refusals(before=5, after=6)
    assert Condition.parse("refusal_rate >= +2pts").met(c)[0] is True
    assert Condition.parse("refusal_rate > +2pts").met(c)[0] is False


def test_a_rise_from_none_is_past_every_percentage() -> None:
    """A gate on a relative change must not pass a feature that began refusing because it
    never refused before: from 0, any rise is past every percentage."""
    c = refusals(before=0, after=3)
    assert Condition.parse("refusal_rate > +10%").met(c) == (True, "refusal_rate up from none (0.0% → 6.0%)")
    assert Condition.parse("refusal_rate < -10%").met(c)[0] is False
    same = refusals(before=0, after=0)
    assert Condition.parse("refusal_rate > +10%").met(same)[0] is False


def test_condition_not_met_when_the_figure_is_unknown() -> None:
    empty = comparison([(call(1), None)])
    assert Condition.parse("error_rate > 0.05").met(empty) == (False, "error_rate unknown (no pairs)")
    assert Condition.parse("latency_ms > +100").met(empty) == (False, "latency_ms unknown (no pairs)")


# ---------------------------------------------------------------- load, on every engine


def test_load_pairs_replays_with_their_originals(
    engine_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(experiments, "CHUNK", 5)  # the originals read in several queries
    originals = [call(i, output_tokens=100 + i) for i in range(12)]
    originals[7] = originals[7].replace(user_id="gone")  # erased after the run
    replays = [replay_of(o, output_tokens=200 + 3 * i) for i, o in enumerate(originals) if i != 3]
    # Original 5 was replayed twice (a run stopped between storing a replay and noting it):
    # the later one is stored first, so that the order of insertion cannot pick it.
    twice = replay_of(
        originals[5], id="r-late", timestamp=originals[5].timestamp + timedelta(days=2), output_tokens=999
    )
    other = replay_of(
        originals[1], id="r-other", metadata={"experiment": "exp-ffffffff", "replay_of": originals[1].id}
    )
    stray = replay_of(call(500), id="r-stray")  # replays a call outside the sample
    # The erased original's replay belongs to a user who stays, so it is still stored.
    erased_replay = next(r for r in replays if r.id == f"r-{originals[7].id}").replace(user_id="stays")
    replays = [erased_replay if r.id == erased_replay.id else r for r in replays]
    engine_store.insert([twice, *originals, other, stray])
    engine_store.insert(replays)
    engine_store.erase(user_id="gone")

    sample = [o.id for o in reversed(originals)]  # the order the run sent them in
    c = load(engine_store, experiment(sample))
    kept = [i for i in sample if i != originals[7].id]
    assert [p.original.id for p in c.pairs] == kept
    by_original = {p.original.id: p.replay.id if p.replay else None for p in c.pairs}
    assert by_original[originals[3].id] is None
    assert by_original[originals[5].id] == f"r-{originals[5].id}"  # the earliest, not r-late
    assert by_original[originals[1].id] == f"r-{originals[1].id}"  # not the other experiment's
    assert all(v is None or v.startswith("r-c") for v in by_original.values())
    assert len(c.done) == 10 and c.gone == 1
    assert (
        c.verdict
        == "10 of 12 calls replayed (1 erased since); 1 metric changed beyond chance (output_tokens)"
    )
    tokens = c.metric("output_tokens")
    assert (tokens.n, tokens.change) == (10, pytest.approx(111.2))  # 100 + 2i over the ten
    assert c.metric("similarity").after == 1.0


def test_load_of_an_experiment_not_run_yet(engine_store: Store) -> None:
    engine_store.insert([call(1), call(2)])
    c = load(engine_store, experiment(["c0001", "c0002", "c0404"]))
    assert [p.replay for p in c.pairs] == [None, None]
    assert c.verdict == "0 of 3 calls replayed (1 erased since); too few pairs to test (at least 10)"
    assert all(m.n == 0 and m.after is None for m in c.metrics)


def test_the_cli_says_why_each_pair_is_shown() -> None:
    """Beside each pair to read, the CLI says why in the terms the pages use: a failure or a
    refusal on one side, else how alike the answers are, as a percentage like the table's."""
    from llmlog.cli.experiments import _why

    a, b, c = call(1), call(2), call(3, answer="one two three four")
    pairs = comparison(
        [
            (a, replay_of(a, error={"type": "overloaded_error", "status": 529, "message": "busy"})),
            (b, replay_of(b, answer=REFUSAL)),
            (c, replay_of(c, answer="one two three five")),
        ]
    ).pairs
    assert [_why(p) for p in pairs] == [
        "the replay failed: overloaded_error (529): busy",
        "the replay declined",
        "answers 75% alike",
    ]
