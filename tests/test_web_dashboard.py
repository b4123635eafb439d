"""The dashboard over real HTTP on each store: its figures against sums over the stored calls,
percentiles against PostgreSQL's own percentile_cont, the per-day cache against new calls and
repricing, panels that cannot be read, and logged labels that must stay text."""

from __future__ import annotations

import math
import random
import re
import statistics
from collections import defaultdict
from contextlib import nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from markupsafe import escape

from llmlog.analysis import dashboard
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.store import retention_policy
from tests.backends import Backend, PostgresBackend, SQLiteBackend
from tests.webui import HOSTILE, KEEP_EVERYTHING, Running, assert_inert, make_call, tags

FIRST = date(2026, 3, 1)
LAST = date(2026, 3, 5)
PERIOD = {"days": "5", "end": LAST.isoformat()}


def spread(n: int = 90, start: int = 1000) -> list[Call]:
    """Calls over the period's days and just outside it, with costs, errors, NULLs and
    latencies that vary, so every figure has something to get wrong."""
    calls = []
    for k in range(n):
        i = start + k
        day = FIRST + timedelta(days=k % 7 - 1)  # one day before the period to one after
        calls.append(
            make_call(
                i,
                timestamp=datetime(day.year, day.month, day.day, (k * 7) % 24, k % 60, k % 50, tzinfo=UTC),
                model=("m-alpha", "m-beta", "m-gamma")[k % 3],
                feature=("checkout", "search")[k % 2],
                user_id=f"u{k % 7}",
                prompt_template_version=("p@1", "p@2", None)[k % 3],
                cost_usd=None if k % 11 == 0 else round(0.0007 * (k + 1), 7),
                latency_ms=100.0 + (k * 37) % 251 + k / 8,
                output_tokens=None if k % 13 == 0 else 10 + k,
                error={"type": "api_error", "status": 500, "message": f"boom {k}"} if k % 6 == 5 else None,
            )
        )
    return calls


def stored(ui: Running) -> list[Call]:
    """The calls of the period, read back from the store: what every figure must add up to."""
    since = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC)
    return list(ui.store.iter_calls(CallFilter(since=since, until=since + timedelta(days=5))))


def day(c: Call) -> str:
    return c.timestamp.astimezone(UTC).date().isoformat()


def ref_percentile(values: list[float], p: float) -> float:
    """percentile_cont by the standard library: R's type 7, 'inclusive'."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return cuts[9] if p == 0.5 else cuts[18]


def test_figures_are_the_sums_of_the_stored_calls(ui: Running) -> None:
    ui.store.insert(spread())
    calls = stored(ui)
    assert len(calls) > 200  # the fixture's 150 calls on March 1st, and most of ours
    data = ui.get("/api/dashboard", params=PERIOD).json()
    assert data["period"] == {"days": 5, "first": "2026-03-01", "last": "2026-03-05"}

    per_day: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in calls:
        per_day[day(c)][0] += 1
        per_day[day(c)][1] += c.error is not None
    got = {r["day"]: [r["calls"], r["errors"]] for r in data["calls_by_day"]["rows"]}
    assert got == {
        (FIRST + timedelta(days=i)).isoformat(): per_day[(FIRST + timedelta(days=i)).isoformat()]
        for i in range(5)
    }
    rates = {r["day"]: r["error_rate"] for r in data["calls_by_day"]["rows"]}
    assert rates["2026-03-02"] == pytest.approx(per_day["2026-03-02"][1] / per_day["2026-03-02"][0])
    totals = data["totals"]["rows"]
    assert (totals["calls"], totals["errors"]) == (len(calls), sum(c.error is not None for c in calls))
    assert totals["cost_usd"] == pytest.approx(sum(c.cost_usd or 0 for c in calls))

    for key, attr in (("cost_by_model", "model"), ("cost_by_feature", "feature")):
        expected: dict[tuple[str, str], float] = defaultdict(float)
        for c in calls:
            if c.cost_usd is not None:
                expected[(day(c), getattr(c, attr))] += c.cost_usd
        shown = {(r["day"], b["name"]): b["cost_usd"] for r in data[key]["rows"] for b in r["by"]}
        assert shown == pytest.approx(dict(expected)), key

    users: dict[str | None, list[Any]] = defaultdict(lambda: [0, 0.0])
    for c in calls:
        users[c.user_id][0] += 1
        users[c.user_id][1] += c.cost_usd or 0
    # Ties (the fixture's users cost the same) go by calls, then name, as on the page.
    top = sorted(users.items(), key=lambda kv: (-round(kv[1][1], 9), -kv[1][0], kv[0] or ""))[:10]
    assert [(u["name"], u["calls"]) for u in data["top_users"]["rows"]] == [(k, v[0]) for k, v in top]
    assert [u["cost_usd"] for u in data["top_users"]["rows"]] == pytest.approx([v[1] for _, v in top])

    features: dict[str | None, float] = defaultdict(float)
    for c in calls:
        features[c.feature] += c.cost_usd or 0
    assert {f["name"]: f["cost_usd"] for f in data["top_features"]["rows"]} == pytest.approx(features)

    latencies: dict[str | None, list[float]] = defaultdict(list)
    for c in calls:
        latencies[c.model].append(c.latency_ms or 0.0)
    for row in data["latency_by_model"]["rows"]:
        values = latencies[row["model"]]
        assert row["calls"] == len(values)
        assert row["p50_ms"] == pytest.approx(ref_percentile(values, 0.5), rel=1e-12)
        assert row["p95_ms"] == pytest.approx(ref_percentile(values, 0.95), rel=1e-12)
    assert {r["model"] for r in data["latency_by_model"]["rows"]} == set(latencies)

    errors = sorted((c for c in calls if c.error), key=lambda c: c.timestamp, reverse=True)[:10]
    assert [e["id"] for e in data["recent_errors"]["rows"]] == [c.id for c in errors]
    assert data["recent_errors"]["rows"][0]["error"]["type"] == errors[0].error["type"]  # type: ignore[index]

    # The page draws the same figures: a bar's tooltip holds its exact cost.
    html = ui.get("/dashboard", params=PERIOD).text
    cost = sum(c.cost_usd or 0 for c in calls if day(c) == "2026-03-03" and c.feature == "search")
    assert f"<title>2026-03-03 · search: ${cost:,.6f}</title>" in html
    n = per_day["2026-03-04"]
    assert f"2026-03-04: {n[0]:,} calls, {n[1]:,} errors ({n[1] / n[0]:.2%})" in html


def test_the_first_queries_are_what_their_sql_gives_in_the_console(ui: Running) -> None:
    ui.store.insert(spread())
    data = ui.get("/api/dashboard", params=PERIOD).json()
    html = ui.get("/dashboard", params=PERIOD).text
    links = [
        a.replace("&amp;", "&")
        for a in re.findall(r'<a href="(/sql\?q=[^"]+)">open in the SQL console', html)
    ]
    assert len(links) == 3
    for link in links:
        assert ui.get(link).status_code == 200

    def console(sql: str) -> list[list[Any]]:
        r = ui.get("/sql.json", params={"q": sql})
        assert r.status_code == 200, r.text
        return [list(row.values()) for row in r.json()]

    by_model = data["calls_by_model"]
    assert by_model["sql"] in [parse_qs(urlsplit(link).query)["q"][0] for link in links]
    assert "GROUP BY model" in by_model["sql"] and "timestamp >= '2026-03-01'" in by_model["sql"]
    expected = {m: (n, cost) for m, n, cost in console(by_model["sql"])}
    got = {r["model"]: (r["calls"], r["cost_usd"]) for r in by_model["rows"]}
    assert got.keys() == expected.keys() and len(got) == 5  # three of ours and the fixture's two
    for m, (n, cost) in expected.items():
        assert got[m][0] == n and got[m][1] == pytest.approx(cost, rel=1e-12)

    by_version = data["output_tokens_by_version"]
    expected_avg = {v: avg for v, avg in console(by_version["sql"])}
    assert None in expected_avg  # a NULL version is a group of its own, here and there
    got_avg = {r["prompt_template_version"]: r["avg_output_tokens"] for r in by_version["rows"]}
    assert got_avg == pytest.approx(expected_avg, rel=1e-12)

    errors = data["recent_errors"]
    assert [r[0] for r in console(errors["sql"])] == [e["id"] for e in errors["rows"]]
    assert len(errors["rows"]) == 10
    # Each error links to its call.
    assert f'href="/calls/{errors["rows"][0]["id"]}"' in html


def test_percentiles_agree_across_stores_and_with_percentile_cont(tmp_path: Path, pg_url: str) -> None:
    rng = random.Random(5)
    latencies = {
        "spread": [round(rng.uniform(5, 9000), 3) for _ in range(41)],
        "one": [123.456],
        "two": [10.0, 31.0],
        "ties": [50.0] * 7 + [70.0] * 3 + [1e-3, 1e6],
        "uneven": [1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9.9, 1000.0 / 3],
    }
    calls = []
    for model, values in latencies.items():
        for k, v in enumerate(values):
            when = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=k % 4, minutes=k)  # spread over days
            calls.append(make_call(len(calls), model=model, latency_ms=v, timestamp=when))
    results = {}
    for backend in (SQLiteBackend(tmp_path / "calls.db"), PostgresBackend(pg_url)):
        with Running(backend) as running:
            running.store.insert(calls)
            rows = running.get("/api/dashboard", params=PERIOD).json()["latency_by_model"]["rows"]
            results[backend.kind] = {r["model"]: (r["calls"], r["p50_ms"], r["p95_ms"]) for r in rows}
            if backend.kind == "postgres":
                native = running.store.query(
                    "SELECT model, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
                    " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM call_data GROUP BY model"
                )
                # The same figures as PostgreSQL's own, to the bit.
                assert results["postgres"] == {m: (n, p50, p95) for m, n, p50, p95 in native.rows}
    assert results["sqlite"] == results["postgres"]
    for model, values in latencies.items():
        n, p50, p95 = results["sqlite"][model]
        assert n == len(values)
        assert p50 == pytest.approx(ref_percentile(values, 0.5), rel=1e-12)
        assert p95 == pytest.approx(ref_percentile(values, 0.95), rel=1e-12)
    assert results["sqlite"]["two"][1:] == (20.5, 29.95)
    assert results["sqlite"]["one"][1:] == (123.456, 123.456)


def test_percentile_of_sorted_runs_equals_that_of_the_merged_values() -> None:
    rng = random.Random(11)
    for _ in range(200):
        values = [
            float(rng.choice(range(30))) if rng.random() < 0.5 else rng.uniform(0, 100)
            for _ in range(rng.randint(1, 60))
        ]
        cuts = sorted(rng.sample(range(len(values) + 1), k=min(len(values) + 1, rng.randint(0, 5))))
        pieces = [sorted(values[a:b]) for a, b in zip([0, *cuts], [*cuts, len(values)], strict=True)]
        merged = sorted(values)
        for p in (0.0, 0.05, 0.5, 0.95, 1.0):
            # The value at p·(n−1) of the merged values, between its neighbours.
            pos = p * (len(merged) - 1)
            first, second = math.floor(pos), math.ceil(pos)
            lo, hi = merged[first], merged[second]
            expected = lo if first == second else lo + (pos - first) * (hi - lo)
            assert dashboard.percentile(pieces, p) == expected


def test_the_cache_follows_new_calls_and_repricing(ui: Running) -> None:
    one_day = {"days": "1", "end": "2026-03-01"}
    before = ui.get("/api/dashboard", params=one_day).json()
    assert before["top_users"]["rows"][0]["name"] != "late"
    evening = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)
    late = make_call(
        900, user_id="late", cost_usd=5.0, latency_ms=99_999.0, model="claude-sonnet-4-6", timestamp=evening
    )
    ui.store.insert([late])
    after = ui.get("/api/dashboard", params=one_day).json()
    assert after["top_users"]["rows"][0] == {"name": "late", "calls": 1, "cost_usd": 5.0}
    assert after["totals"]["rows"]["calls"] == before["totals"]["rows"]["calls"] + 1
    sonnet = {r["model"]: r for r in after["calls_by_model"]["rows"]}["claude-sonnet-4-6"]
    assert sonnet["calls"] == 101 and sonnet["cost_usd"] == pytest.approx(0.0012 * 100 + 5.0)
    p95 = {r["model"]: r["p95_ms"] for r in after["latency_by_model"]["rows"]}["claude-sonnet-4-6"]
    assert p95 == 850.0  # one slow call of 101 moves the 95th percentile not at all…
    slow = [
        make_call(
            901 + k, latency_ms=10_000.0, model="claude-sonnet-4-6", timestamp=evening + timedelta(minutes=k)
        )
        for k in range(10)
    ]
    ui.store.insert(slow)
    later = ui.get("/api/dashboard", params=one_day).json()
    p95 = {r["model"]: r["p95_ms"] for r in later["latency_by_model"]["rows"]}["claude-sonnet-4-6"]
    assert p95 == 10_000.0  # …eleven of 111 do
    assert ui.store.update_costs([(late.id, 7.0, "test")]) == 1
    repriced = ui.get("/api/dashboard", params=one_day).json()
    assert repriced["top_users"]["rows"][0] == {"name": "late", "calls": 1, "cost_usd": 7.0}


def test_hostile_labels_stay_text_in_the_page_and_the_charts(ui: Running) -> None:
    breakout = '"><svg onload=alert(1)>'
    hostile = [
        make_call(
            700 + k,
            model=name,
            feature=name,
            user_id=name,
            prompt_template_version=name,
            cost_usd=1.0 + k,
            timestamp=datetime(2026, 3, 2, 10, k, tzinfo=UTC),
            error={"type": name, "status": 500, "message": name},
        )
        for k, name in enumerate([HOSTILE, breakout, "x' onerror='alert(1)", "javascript:alert(1)"])
    ]
    ui.store.insert(hostile)
    r = ui.get("/dashboard", params=PERIOD)
    assert r.status_code == 200
    html = r.text
    assert_inert(html, "/dashboard")
    assert len([t for t, _ in tags(html) if t == "svg"]) == 6  # no <svg> of theirs among our six charts
    # Shown, as text: in the bars' titles and in the tables.
    assert f"<title>2026-03-02 · {escape(HOSTILE)}: $1.000000</title>" in html
    assert str(escape(breakout)) in html
    for href in re.findall(r'<a href="([^"]*)"', html):
        assert href.startswith(("/", "#")), href  # every link is ours, with values encoded in it
    assert (
        'href="/?user=%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E%3Cimg+src%3Dx+onerror%3D%22alert%281%29%22%3E"'
        in html
    )
    data = ui.get("/api/dashboard", params=PERIOD).json()
    assert HOSTILE in {u["name"] for u in data["top_users"]["rows"]}


def test_periods_live_in_the_url(ui: Running) -> None:
    html = ui.get("/dashboard", params=PERIOD).text
    for days in (7, 30, 90):
        assert f'href="/dashboard?days={days}&amp;end=2026-03-05"' in html
    assert 'href="/dashboard?days=5&amp;end=2026-03-05">link to this view' in html
    assert "2026-03-01 – 2026-03-05" in html
    # Without `end`, the period ends today (UTC) and the choices keep it so.
    today = datetime.now(UTC).date()
    plain = ui.get("/dashboard").text
    assert f"{(today - timedelta(days=29)).isoformat()} – {today.isoformat()}" in plain
    assert 'href="/dashboard?days=7"' in plain
    assert "No calls in this period." in plain  # the fixture's calls are in March
    for bad in (
        {"days": "0"},
        {"days": "x"},
        {"days": "9999"},
        {"end": "yesterday"},
        {"end": "9999-12-31"},
        {"end": "0001-01-02"},
    ):
        assert ui.get("/dashboard", params=bad).status_code == 400, bad
        assert "error" in ui.get("/api/dashboard", params=bad).json()


def test_a_panel_that_cannot_be_read_says_why(ui: Running, backend: Backend) -> None:
    backend.sql("ALTER TABLE daily RENAME TO daily_away")
    try:
        r = ui.get("/dashboard", params=PERIOD)
        assert r.status_code == 200
        assert re.search(r"not available: [^<]*daily", r.text)
        # What does not depend on `daily` is still shown: the newest errors.
        assert 'href="/calls/' in r.text
        data = ui.get("/api/dashboard", params=PERIOD).json()
        assert "daily" in data["cost_by_model"]["error"] and len(data["recent_errors"]["rows"]) == 10
    finally:
        backend.sql("ALTER TABLE daily_away RENAME TO daily")
    assert "rows" in ui.get("/api/dashboard", params=PERIOD).json()["cost_by_model"]


def test_days_left_to_read_after_the_time_budget_are_named(backend: Backend) -> None:
    with backend.open() as store:
        retention_policy.set_policy(store, KEEP_EVERYTHING)
        store.insert(spread())
        period = dashboard.Period(FIRST, LAST)
        cache = dashboard.DayCache()
        d = dashboard.dashboard(lambda: nullcontext(store), period, cache, budget_s=0)
        assert d.by_model.error and "5 of 5 days of calls still to read" in d.by_model.error
        assert d.totals.value is not None and d.totals.value.calls > 0  # from `daily`, no budget needed
        full = dashboard.dashboard(lambda: nullcontext(store), period, cache)
        assert full.by_model.error is None and full.by_model.value
