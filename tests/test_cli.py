"""The `llmlog` command on real stores: calls, show, sample, query, reprice, demo, --help.

The reading commands run against a small store of each kind (SQLite file, PostgreSQL schema);
the demo-based tests on a SQLite file (tests/test_postgres.py runs the demo into PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import COLUMNS, Call
from llmlog.pipeline.pricing import Pricer
from llmlog.store import open_store
from llmlog.store.sqlite import connect as sqlite_connect
from llmlog.store.sqlite.store import SQLiteStore
from tests.backends import PostgresBackend, SQLiteBackend, admin, new_schema

DEMO_CALLS = 150


def llmlog_script() -> str:
    found = shutil.which("llmlog") or str(Path(sys.executable).parent / "llmlog")
    assert os.path.exists(found), "the llmlog console script is not installed"
    return found


def run(db: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", db, *args], input=input, catch_exceptions=False)


def rows_of(output: str) -> list[list[str]]:
    """The data rows of a `calls` table: the header line is dropped, cells split on 2+ spaces."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and lines[0].split()[:2] == ["id", "time"], output
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


# ---------------------------------------------------------------- stores


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`llmlog demo --calls 150` through the installed console script (end to end)."""
    path = str(tmp_path_factory.mktemp("demo") / "demo.db")
    proc = subprocess.run(
        [llmlog_script(), "--db", path, "demo", "--calls", str(DEMO_CALLS), "--history", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LLMLOG_DB": "", "LLMLOG_PRICES": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Recorded {DEMO_CALLS} calls" in proc.stderr
    return path


def test_demo_history_copies_sessions_over_the_days_before(tmp_path: Path) -> None:
    path = str(tmp_path / "history.db")
    result = run(path, "demo", "--calls", "40", "--history", "6")
    assert result.exit_code == 0, result.output
    db = sqlite_connect(path)
    live = db.execute("SELECT count(*) FROM calls WHERE tags NOT LIKE '%history%'").fetchone()[0]
    copies = db.execute(
        "SELECT count(*), count(DISTINCT id), count(DISTINCT substr(timestamp, 1, 10)) FROM calls"
        " WHERE EXISTS (SELECT 1 FROM json_each(tags) WHERE value = 'history')"
    ).fetchone()
    assert live == 40 and copies[0] == copies[1] > 0 and copies[2] >= 5  # spread over the days before
    assert f"{copies[0]:,} copies over the 6 days before" in " ".join(result.output.split())
    # A copied session keeps its calls together, one day earlier each time, and its costs.
    rows = db.execute(
        "SELECT c.session_id, o.session_id, julianday(o.timestamp) - julianday(c.timestamp),"
        " c.cost_usd, o.cost_usd"
        " FROM calls c JOIN calls o ON o.session_id = substr(c.session_id, 1, length(c.session_id) - 3)"
        " AND o.messages = c.messages WHERE c.session_id LIKE '%-1d' LIMIT 50"
    ).fetchall()
    assert rows and all(0.95 < r[2] < 1.05 and r[3] == r[4] for r in rows)
    # The daily rollup sees them: several days of cost.
    assert db.execute("SELECT count(DISTINCT day) FROM daily").fetchone()[0] >= 5


def test_the_demo_holds_findings_the_reports_find(tmp_path: Path) -> None:
    """The planted regression, refusals and failing user (see llmlog.demo.traffic) are found."""
    path = str(tmp_path / "demo.db")
    assert run(path, "demo", "--calls", "800").exit_code == 0
    drift = json.loads(run(path, "report", "drift", "--json").stdout)
    assert ("code-review", "*", "output_tokens") in {(c["feature"], c["version"], c["metric"]) for c in drift}
    compared = json.loads(
        run(path, "report", "compare", "code-review", "code-review@v1", "code-review@v2", "--json").stdout
    )
    tokens = next(c for c in compared["metrics"] if c["metric"] == "output_tokens")
    assert tokens["flagged"] and tokens["after"] > 2 * tokens["before"]
    support = json.loads(
        run(path, "report", "compare", "support-bot", "support-bot@v3", "support-bot@v4", "--json").stdout
    )
    assert [c["metric"] for c in support["metrics"] if c["flagged"]] == ["refusal_rate"]
    spikes = json.loads(run(path, "report", "spikes", "--json").stdout)
    assert "user_013" in {o["user_id"] for o in spikes["outliers"] if o["metric"] == "error_rate"}


# The small store is built relative to the time it is built (see build_small).
CLOCK: dict[str, datetime] = {}
MAIN_ID = "5e1f0000-1111-4222-8333-000000000001"
OPENAI_ID = "abce0000-1111-4222-8333-000000000002"
ERROR_ID = "e4404000-1111-4222-8333-000000000003"
OLD_ID = "abcd0000-1111-4222-8333-000000000004"
MARKUP_ID = "3a4b0000-1111-4222-8333-000000000005"

MARKUP_SYSTEM = "[bold red]x[/] <script>alert(1)</script>"
MARKUP_USER_MSG = "[link=https://evil.example]click[/link] and [/]"
MARKUP_ANSWER = "[/bold] :smile: <b>hi</b> [red]not red[/red]"


def small_calls(now: datetime) -> list[Call]:
    pricer = Pricer()
    calls = [
        Call(
            id=MAIN_ID,
            timestamp=now - timedelta(minutes=5),
            provider="anthropic",
            model="claude-sonnet-4-5",
            feature="math",
            prompt_template_version="math@v1",
            session_id="sess_math",
            user_id="user_1",
            system_prompt="You are a terse assistant.",
            messages=[{"role": "user", "content": "What is 2+2?"}],
            response={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "The answer is 4."}],
            },
            stop_reason="end_turn",
            input_tokens=1000,
            output_tokens=200,
            cache_read_tokens=300,
            cache_creation_tokens=100,
            latency_ms=1234.0,
            first_token_ms=210.0,
            tags=["t1"],
        ),
        Call(
            id=OPENAI_ID,
            timestamp=now - timedelta(minutes=30),
            provider="openai",
            model="gpt-4.1",
            feature="math",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
            response={"choices": [{"index": 0, "message": {"role": "assistant", "content": "Four."}}]},
            input_tokens=50,
            output_tokens=5,
            latency_ms=80.0,
        ),
        Call(
            id=ERROR_ID,
            timestamp=now - timedelta(minutes=10),
            provider="anthropic",
            model="claude-haiku-4-5",
            feature="support-bot",
            messages=[{"role": "user", "content": "help"}],
            error={"type": "rate_limit_error", "status": 429, "message": "slow down"},
            latency_ms=12.0,
        ),
        Call(
            id=OLD_ID,
            timestamp=now - timedelta(hours=3),
            provider="anthropic",
            model="claude-haiku-4-5",
            feature="support-bot",
            messages=[{"role": "user", "content": "old"}],
            response={"role": "assistant", "content": [{"type": "text", "text": "old answer"}]},
            input_tokens=10,
            output_tokens=10,
        ),
        Call(
            id=MARKUP_ID,
            timestamp=now - timedelta(minutes=1),
            provider="openai",
            model="gpt-4.1",
            feature="[bold red]x[/]",
            user_id="<script>alert(1)</script>",
            system_prompt=MARKUP_SYSTEM,
            messages=[{"role": "user", "content": MARKUP_USER_MSG}],
            response={"choices": [{"message": {"role": "assistant", "content": MARKUP_ANSWER}}]},
            tags=["[b]tag[/b]"],
            metadata={"note": "[blink]m[/blink]"},
            error={"type": "[red]boom[/]", "status": 500},
        ),
    ]
    return [pricer.price(c) for c in calls]


def build_small(path: Path | str) -> str:
    CLOCK["now"] = datetime.now(UTC)
    with open_store(str(path)) as store:
        store.insert(small_calls(CLOCK["now"]))
    return str(path)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def small_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield build_small(tmp_path_factory.mktemp("small") / "small.db")
        return
    server = request.getfixturevalue("postgres_server")
    schema, url = new_schema(server)
    yield build_small(url)
    admin(server, f"DROP SCHEMA {schema} CASCADE")


def raw(db: str, sql: str) -> list[tuple]:
    """Rows of SQL run on the store's database directly, not through llmlog."""
    backend = PostgresBackend(db) if db.startswith("postgresql://") else SQLiteBackend(Path(db))
    return backend.sql(sql)


def stored(db: str, call_id: str) -> Call:
    with open_store(db) as store:
        call = store.get(call_id)
    assert call is not None
    return call


# ---------------------------------------------------------------- calls


def test_calls_lists_recent_rows_newest_first(small_db: str) -> None:
    result = run(small_db, "calls")
    assert result.exit_code == 0, result.output
    rows = rows_of(result.stdout)
    assert [r[0] for r in rows] == [i[:8] for i in (MARKUP_ID, MAIN_ID, ERROR_ID, OPENAI_ID, OLD_ID)]
    main = rows[1]
    assert main[1] == (CLOCK["now"] - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    assert main[2:9] == ["math", "claude-sonnet-4-5", "user_1", "1000", "200", "$0.005265", "1.23s"]
    err = rows[2]
    assert err[-1] == "rate_limit_error 429"
    assert err[5:7] == ["-", "-"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--feature", "math"], [MAIN_ID, OPENAI_ID]),
        (["--model", "claude-haiku-4-5"], [ERROR_ID, OLD_ID]),
        (["--errors"], [MARKUP_ID, ERROR_ID]),
        (["--successes"], [MAIN_ID, OPENAI_ID, OLD_ID]),
        (["--since", "1h"], [MARKUP_ID, MAIN_ID, ERROR_ID, OPENAI_ID]),
        (["--since", "20m", "--successes"], [MAIN_ID]),
        (["--until", "2h"], [OLD_ID]),
        (["--limit", "2"], [MARKUP_ID, MAIN_ID]),
        (["-n", "1", "--feature", "support-bot"], [ERROR_ID]),
        (["--user", "user_1"], [MAIN_ID]),
        (["--session", "sess_math"], [MAIN_ID]),
        (["--version", "math@v1"], [MAIN_ID]),
        (["--feature", "math", "--model", "gpt-4.1"], [OPENAI_ID]),
    ],
)
def test_calls_filters(small_db: str, args: list[str], expected: list[str]) -> None:
    result = run(small_db, "calls", *args)
    assert result.exit_code == 0, result.output
    assert [r[0] for r in rows_of(result.stdout)] == [i[:8] for i in expected]
    as_json = run(small_db, "calls", "--json", *args)
    assert [c["id"] for c in json.loads(as_json.stdout)] == expected


def test_calls_since_iso_and_bad_since(small_db: str) -> None:
    since = (CLOCK["now"] - timedelta(minutes=7)).strftime("%Y-%m-%dT%H:%M:%S")
    result = run(small_db, "calls", "--since", since, "--json")
    assert [c["id"] for c in json.loads(result.stdout)] == [MARKUP_ID, MAIN_ID]
    bad = run(small_db, "calls", "--since", "yesterday-ish")
    assert bad.exit_code == 2
    assert "neither a duration" in bad.stderr


def test_calls_no_match(small_db: str) -> None:
    result = run(small_db, "calls", "--feature", "nope")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No calls match" in result.stderr
    assert json.loads(run(small_db, "calls", "--feature", "nope", "--json").stdout) == []


def test_calls_json_has_every_column(small_db: str) -> None:
    result = run(small_db, "calls", "--json", "--feature", "math")
    data = json.loads(result.stdout)
    assert [list(d) for d in data] == [list(COLUMNS)] * 2
    main = data[0]
    assert main == stored(small_db, MAIN_ID).to_dict()
    assert main["cost_usd"] == pytest.approx(0.005265)
    assert main["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert main["timestamp"].endswith("Z") and len(main["timestamp"]) == 27


# ---------------------------------------------------------------- show


def _cost_lines(output: str) -> tuple[list[tuple[str, str]], str]:
    """(label, $amount) of each breakdown line, and the total, from the cost panel."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "─ cost (" in line)
    lines = lines[start + 1 :]
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("╰"))]
    items, total = [], None
    for line in lines:
        m = re.match(r"│\s*(.+?)\s{2,}.*\$([0-9.]+)\s*│$", line)
        if not m:
            continue
        if m.group(1).strip() == "total":
            total = m.group(2)
        else:
            items.append((m.group(1).strip(), m.group(2)))
    assert total is not None, output
    return items, total


@pytest.mark.parametrize("ref", [MAIN_ID, MAIN_ID[:6], MAIN_ID[:13]])
def test_show_prints_the_whole_call(small_db: str, ref: str) -> None:
    result = run(small_db, "show", ref)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert MAIN_ID in out
    assert "You are a terse assistant." in out
    assert re.search(r"│ user\s+What is 2\+2\?", out)
    assert re.search(r"│ assistant\s+The answer is 4\.", out)
    assert "claude-sonnet-4-5" in out and "math@v1" in out and "sess_math" in out
    call = stored(small_db, MAIN_ID)
    items, total = _cost_lines(out)
    assert [label for label, _ in items] == ["input", "cache read", "cache write (5m)", "output"]
    assert total == f"{call.cost_usd:.6f}" == "0.005265"
    assert sum(float(amount) for _, amount in items) == pytest.approx(call.cost_usd, abs=1e-9)
    assert re.search(r"│\s*input\s+600\s+3\s+\$0\.001800", out)  # 1000 in - 300 read - 100 written
    assert re.search(r"│\s*output\s+200\s+15\s+\$0\.003000", out)


def test_show_cost_breakdown_of_demo_calls_adds_up(demo_db: str) -> None:
    db = sqlite_connect(demo_db)
    picks = (
        db.execute(
            "SELECT id, cost_usd FROM calls WHERE cost_usd IS NOT NULL AND provider = ?"
            " ORDER BY cache_read_tokens DESC LIMIT 3",
            ("anthropic",),
        ).fetchall()
        + db.execute(
            "SELECT id, cost_usd FROM calls WHERE cost_usd IS NOT NULL AND provider = 'openai' LIMIT 3"
        ).fetchall()
    )
    db.close()
    assert len(picks) == 6
    for call_id, cost in picks:
        result = run(demo_db, "show", call_id[:10])
        assert result.exit_code == 0, result.output
        items, total = _cost_lines(result.stdout)
        assert float(total) == pytest.approx(cost, abs=5e-7 if cost < 0.01 else 5e-5)
        step = 5e-7 if all(float(a) < 0.01 for _, a in items) else 5e-5
        assert sum(float(a) for _, a in items) == pytest.approx(cost, abs=step * len(items) + 1e-12)


def test_show_openai_response(small_db: str) -> None:
    out = run(small_db, "show", OPENAI_ID[:8]).stdout
    assert re.search(r"│ system\s+Be brief\.", out)
    assert re.search(r"│ assistant\s+Four\.", out)


def test_show_error_call(small_db: str) -> None:
    out = run(small_db, "show", ERROR_ID).stdout
    assert "rate_limit_error" in out and "slow down" in out
    assert "not priced" in out


def test_show_json(small_db: str) -> None:
    result = run(small_db, "show", MAIN_ID[:8], "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data == stored(small_db, MAIN_ID).to_dict()
    assert data["response"]["content"][0]["text"] == "The answer is 4."


def test_show_unknown_and_ambiguous_ids(small_db: str) -> None:
    result = run(small_db, "show", "deadbeef")
    assert result.exit_code == 1
    assert "no call with id 'deadbeef'" in result.stderr
    assert result.stdout == ""
    result = run(small_db, "show", "abc")  # abcd… and abce…
    assert result.exit_code == 1
    assert "ambiguous" in result.stderr
    result = run(small_db, "show", "abcd")
    assert result.exit_code == 0 and OLD_ID in result.stdout


# ---------------------------------------------------------------- untrusted text


def test_markup_in_logged_text_is_printed_literally(small_db: str) -> None:
    shown = run(small_db, "show", MARKUP_ID)
    assert shown.exit_code == 0, shown.output
    for text in (
        MARKUP_SYSTEM,
        MARKUP_USER_MSG,
        MARKUP_ANSWER,
        "[b]tag[/b]",
        "[blink]m[/blink]",
        "[red]boom[/]",
    ):
        assert text in shown.stdout, text
    listed = run(small_db, "calls", "--since", "1h")
    assert listed.exit_code == 0, listed.output
    row = rows_of(listed.stdout)[0]
    assert row[0] == MARKUP_ID[:8]
    assert row[2] == "[bold red]x[/]"
    assert row[4] == "<script>alert(1)"  # the user column shows 16 characters
    assert row[-1] == "[red]boom[/] 500"
    queried = run(
        small_db, "query", "SELECT feature, system_prompt FROM calls WHERE id = '" + MARKUP_ID + "'"
    )
    assert queried.exit_code == 0
    assert "[bold red]x[/]" in queried.stdout and MARKUP_SYSTEM in queried.stdout


def test_terminal_escape_sequences_in_logged_text_are_not_emitted(tmp_path: Path) -> None:
    """BUG: logged text goes to the terminal through rich `Text`, which drops BEL/BS/CR but keeps
    ESC, so a prompt or response can carry ANSI/OSC sequences (clear screen, set title, fake
    hyperlinks, hide text) straight into the reader's terminal via `show` and `calls`."""
    db = str(tmp_path / "ansi.db")
    evil = "before\x1b[2J\x1b]0;pwned\x07\x1b[8mhidden\x1b[0m after"
    call = Call(
        id="e5c00000-0000-4000-8000-000000000001",
        feature="\x1b[31mred-feature",
        model="gpt-4.1",
        system_prompt=evil,
        messages=[{"role": "user", "content": evil}],
        response={"choices": [{"message": {"role": "assistant", "content": evil}}]},
    )
    with SQLiteStore(db) as store:
        store.insert([call])
    for args in (["show", call.id], ["calls"]):
        result = run(db, *args)
        assert result.exit_code == 0
        assert "\x1b" not in result.stdout, args


# ---------------------------------------------------------------- sample


def test_sample_returns_distinct_recent_calls(demo_db: str) -> None:
    result = run(demo_db, "sample", "-n", "5", "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data) == 5
    assert len({c["id"] for c in data}) == 5
    with SQLiteStore(demo_db) as store:
        for c in data:
            got = store.get(c["id"])
            assert got is not None and got.to_dict() == c
    table = run(demo_db, "sample", "-n", "5", "--since", "1h")
    rows = rows_of(table.stdout)
    assert len(rows) == 5 and len({r[0] for r in rows}) == 5


def test_sample_window_and_feature(small_db: str) -> None:
    result = run(small_db, "sample", "-n", "10", "--since", "1h", "--feature", "support-bot", "--json")
    assert [c["id"] for c in json.loads(result.stdout)] == [ERROR_ID]  # OLD_ID is outside the hour
    result = run(small_db, "sample", "-n", "10", "--since", "1d", "--json")
    assert len(json.loads(result.stdout)) == 5


# ---------------------------------------------------------------- query


BY_MODEL = "SELECT model, COUNT(*) AS n, SUM(cost_usd) AS cost FROM calls GROUP BY model ORDER BY model"


def _expected_by_model(db: str) -> list[tuple]:
    with sqlite_connect(db) as conn:
        rows = conn.execute(BY_MODEL).fetchall()
    assert len(rows) >= 4
    return rows


def test_query_json(demo_db: str) -> None:
    result = run(demo_db, "query", "--format", "json", BY_MODEL)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(d["model"], d["n"], d["cost"]) for d in data] == _expected_by_model(demo_db)
    assert sum(d["n"] for d in data) == DEMO_CALLS


def test_query_csv(demo_db: str) -> None:
    result = run(demo_db, "query", "--format", "csv", BY_MODEL)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["model", "n", "cost"]
    expected = _expected_by_model(demo_db)
    assert [(m, int(n), float(c) if c else None) for m, n, c in rows[1:]] == expected


def test_query_csv_opens_as_text_in_a_spreadsheet(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    with open_store(db) as store:
        store.insert(
            [Call(timestamp=datetime(2026, 1, 1, tzinfo=UTC), model="=cmd|' /C calc'!A0", feature="@x")]
        )
    result = run(db, "query", "--format", "csv", 'SELECT model AS "+m", feature, -5 AS n FROM calls')
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["'+m", "feature", "n"],
        ["'=cmd|' /C calc'!A0", "'@x", "-5"],
    ]


def test_query_table(demo_db: str) -> None:
    result = run(demo_db, "query", "--format", "table", BY_MODEL)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"model\s+n\s+cost", lines[0])
    expected = _expected_by_model(demo_db)
    assert len(lines) == 1 + len(expected)
    for line, (model, n, _cost) in zip(lines[1:], expected, strict=True):
        assert re.match(rf"{re.escape(model)}\s+{n}\s+", line), line
    # Columns aligned: each starts where its header does.
    starts = [lines[0].index(" n ") + 1, lines[0].index("cost")]
    for line in lines[1:]:
        assert line[starts[0] - 1] == " " and line[starts[0]] != " " and line[starts[1] - 1] == " "


def test_query_table_shows_null(small_db: str) -> None:
    sql = f"SELECT cost_usd, 1 AS one FROM calls WHERE id = '{ERROR_ID}'"
    out = run(small_db, "query", "--format", "table", sql).stdout
    assert re.search(r"^NULL\s+1$", out, re.MULTILINE), out


def test_query_the_documented_examples(demo_db: str) -> None:
    errors = run(
        demo_db,
        "query",
        "--format",
        "json",
        "SELECT * FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC",
    )
    data = json.loads(errors.stdout)
    assert data and all(d["error"] is not None for d in data)
    assert [d["timestamp"] for d in data] == sorted((d["timestamp"] for d in data), reverse=True)
    tiers = run(
        demo_db,
        "query",
        "--format",
        "csv",
        "SELECT metadata->>'$.tier' AS tier, COUNT(*) FROM calls GROUP BY 1 ORDER BY 1",
    )
    rows = list(csv.reader(io.StringIO(tiers.stdout)))
    assert rows[0] == ["tier", "COUNT(*)"]
    assert [r[0] for r in rows[1:]] == ["enterprise", "free"]
    assert sum(int(r[1]) for r in rows[1:]) == DEMO_CALLS


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM call_data",
        "DROP TABLE content",
        "UPDATE call_data SET cost_usd = 0",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "PRAGMA journal_mode=DELETE",
    ],
)
def test_query_refuses_writes(small_db: str, sql: str) -> None:
    before = raw(small_db, "SELECT COUNT(*), SUM(cost_usd) FROM call_data")
    result = run(small_db, "query", sql)
    assert result.exit_code == 1
    assert "only reading queries are allowed" in result.stderr
    assert "Traceback" not in result.output
    after = raw(small_db, "SELECT COUNT(*), SUM(cost_usd) FROM call_data")
    assert after == before == [(5, pytest.approx(before[0][1]))]
    if not small_db.startswith("postgresql://"):
        assert raw(small_db, "PRAGMA journal_mode") == [("wal",)]


def test_query_time_limit_and_sql_errors(small_db: str) -> None:
    sql = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000)"
        " SELECT COUNT(*) FROM n"
    )
    result = run(small_db, "query", "--timeout", "0.5", sql)
    assert result.exit_code == 1
    assert "longer than the 0.5 s limit" in result.stderr
    result = run(small_db, "query", "SELECT nope FROM calls")
    assert result.exit_code == 1
    assert re.search(r"no such column: nope|column \"nope\" does not exist", result.stderr), result.stderr


def test_query_limit_reports_truncation(small_db: str) -> None:
    result = run(small_db, "query", "--format", "csv", "--limit", "2", "SELECT id FROM calls ORDER BY id")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [["id"], [MARKUP_ID], [MAIN_ID]]
    assert "first 2 rows shown" in result.stderr


def test_query_json_with_a_blob_column(small_db: str) -> None:
    """BUG: `query --format json` crashes (TypeError: bytes is not JSON serializable) on any
    BLOB value, e.g. `SELECT * FROM content` (content.hash is a BLOB) or randomblob()."""
    result = CliRunner().invoke(
        cli,
        ["--db", small_db, "query", "--format", "json", "SELECT id, hash FROM content ORDER BY id LIMIT 1"],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert len(data) == 1 and data[0]["id"] == 1 and data[0]["hash"]


# ---------------------------------------------------------------- reprice


def test_reprice_with_override_file(tmp_path: Path) -> None:
    db = build_small(tmp_path / "reprice.db")
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[model]]\nmatch = "claude-haiku-4-5"\ninput_mtok = 100\noutput_mtok = 200\n\n'
        '[[model]]\nprovider = "anthropic"\nmatch = "claude-sonnet-*"\nstart = 2020-01-01\n'
        "input_mtok = 10\noutput_mtok = 20\ncache_read_mtok = 1\ncache_write_mtok = 12.5\n"
    )
    conn = sqlite_connect(db)
    before = dict((i, (c, r)) for i, c, r in conn.execute("SELECT id, cost_usd, rate_card FROM calls"))
    assert before[OLD_ID][0] == pytest.approx(10 * 1 / 1e6 + 10 * 5 / 1e6)  # genai-prices: $1 / $5

    result = run(db, "reprice", "--prices", str(prices))
    assert result.exit_code == 0, result.output
    after = dict((i, (c, r)) for i, c, r in conn.execute("SELECT id, cost_usd, rate_card FROM calls"))
    changed = [i for i in before if before[i] != after[i]]
    assert f"Repriced {len(changed)} call(s)" in result.stderr
    # Costs from the override file, and its name in rate_card.
    assert after[OLD_ID][0] == pytest.approx((10 * 100 + 10 * 200) / 1e6)
    assert after[MAIN_ID][0] == pytest.approx((600 * 10 + 300 * 1 + 100 * 12.5 + 200 * 20) / 1e6)
    assert "prices.toml@" in after[OLD_ID][1] and "prices.toml@" in after[MAIN_ID][1]
    # Not covered by the file: same cost; unpriceable (no usage): still NULL.
    assert after[OPENAI_ID][0] == pytest.approx(before[OPENAI_ID][0])
    assert after[ERROR_ID] == (None, None)
    assert {OLD_ID, MAIN_ID} <= set(changed)
    assert ERROR_ID not in changed
    # A second run has nothing left to change.
    again = run(db, "reprice", "--prices", str(prices))
    assert "Repriced 0 call(s)" in again.stderr
    # `show` prices from the file given in the environment, and agrees with the stored figure.
    shown = CliRunner(env={"LLMLOG_PRICES": str(prices)}).invoke(cli, ["--db", db, "show", MAIN_ID])
    items, total = _cost_lines(shown.stdout)
    assert after[MAIN_ID][0] >= 0.01  # shown with 4 decimals
    assert float(total) == pytest.approx(after[MAIN_ID][0], abs=5e-5)
    assert sum(float(a) for _, a in items) == pytest.approx(after[MAIN_ID][0], abs=5e-5 * len(items))


def test_reprice_since_only_touches_recent_calls(tmp_path: Path) -> None:
    db = build_small(tmp_path / "since.db")
    prices = tmp_path / "p.toml"
    prices.write_text('[[model]]\nmatch = "claude-haiku-4-5"\ninput_mtok = 100\noutput_mtok = 200\n')
    conn = sqlite_connect(db)
    old_before = conn.execute("SELECT cost_usd FROM calls WHERE id = ?", (OLD_ID,)).fetchone()
    result = run(db, "reprice", "--since", "1h", "--prices", str(prices))
    assert result.exit_code == 0
    assert conn.execute("SELECT cost_usd FROM calls WHERE id = ?", (OLD_ID,)).fetchone() == old_before


def test_reprice_bad_price_file(tmp_path: Path) -> None:
    db = build_small(tmp_path / "bad.db")
    prices = tmp_path / "bad.toml"
    prices.write_text('[[model]]\nmatch = "x"\ninput_mtok = 1\n')
    result = CliRunner().invoke(cli, ["--db", db, "reprice", "--prices", str(prices)])
    assert result.exit_code != 0
    assert "input_mtok and output_mtok are required" in (result.output + repr(result.exception))


# ---------------------------------------------------------------- help and demo


@pytest.mark.parametrize("command", sorted(name for name, c in cli.commands.items() if not c.hidden))
def test_every_command_has_help_with_examples(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert f"llmlog {command}" in result.output or command == "import"


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("calls", "show", "sample", "query", "import", "export", "reprice", "demo"):
        assert re.search(rf"^\s+{name}\s", result.output, re.M), name


def test_demo_fills_the_store(demo_db: str) -> None:
    db = sqlite_connect(demo_db)
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    assert one("SELECT COUNT(*) FROM calls") == DEMO_CALLS
    assert {r[0] for r in db.execute("SELECT DISTINCT provider FROM calls")} == {"anthropic", "openai"}
    assert one("SELECT COUNT(*) FROM calls WHERE json_extract(params, '$.stream')") > 0
    assert one("SELECT COUNT(*) FROM calls WHERE NOT coalesce(json_extract(params, '$.stream'), 0)") > 0
    assert one("SELECT COUNT(*) FROM calls WHERE tool_calls IS NOT NULL") > 0
    assert one("SELECT COUNT(*) FROM calls WHERE error IS NOT NULL") > 0
    assert one("SELECT COUNT(DISTINCT prompt_template_version) FROM calls") >= 5
    assert one("SELECT COUNT(*) FROM (SELECT session_id FROM calls WHERE session_id IS NOT NULL"
               " GROUP BY 1 HAVING COUNT(*) > 1)") >= 1  # fmt: skip
    # A multi-turn session: each later call carries the earlier messages again.
    sid = one(
        "SELECT session_id FROM calls WHERE feature = 'support-bot' AND session_id IS NOT NULL"
        " GROUP BY 1 ORDER BY COUNT(*) DESC LIMIT 1"
    )
    sql = (
        "SELECT json_array_length(messages) FROM calls"
        " WHERE session_id = ? AND error IS NULL ORDER BY timestamp"
    )
    lengths = [r[0] for r in db.execute(sql, (sid,))]
    assert len(lengths) >= 2 and lengths == sorted(lengths) and lengths[-1] > lengths[0]
    assert one("SELECT COUNT(*) FROM calls WHERE cost_usd IS NOT NULL") > DEMO_CALLS * 0.9
    assert one("SELECT COUNT(*) FROM calls WHERE cache_read_tokens > 0") > 0

    listed = run(demo_db, "calls", "-n", str(DEMO_CALLS))
    assert listed.exit_code == 0
    rows = rows_of(listed.stdout)
    assert len(rows) == DEMO_CALLS
    features = {r[2] for r in rows}
    assert {"support-bot", "code-review", "summarize", "research-agent", "sql-assistant"} <= features


def test_console_script_end_to_end(demo_db: str) -> None:
    env = {**os.environ, "LLMLOG_DB": demo_db}
    proc = subprocess.run(
        [llmlog_script(), "query", "--format", "csv", "SELECT COUNT(*) AS n FROM calls"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["n", str(DEMO_CALLS)]
    proc = subprocess.run(
        [llmlog_script(), "calls", "--errors", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout)
    assert errors and all(e["error"] for e in errors)
    proc = subprocess.run(
        [llmlog_script(), "show", "not-an-id"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1
    assert "no call with id 'not-an-id'" in proc.stderr


WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_delete_erases_a_user_after_asking(tmp_path: Path) -> None:
    db = str(tmp_path / "erase.db")
    with open_store(db) as store:
        store.insert([Call(timestamp=WHEN, user_id="alice", messages=[{"role": "user", "content": "mine"}]),
                      Call(timestamp=WHEN, user_id="bob", session_id="s1")])  # fmt: skip
    no = run(db, "delete", "--user", "alice", input="n\n")
    assert no.exit_code != 0 and "Erase 1 call(s) of user alice?" in no.output
    yes = run(db, "delete", "--user", "alice", input="y\n")
    assert yes.exit_code == 0 and "Erased 1 call(s) of user alice, 1 piece(s) of content" in yes.output
    assert run(db, "delete", "--session", "s1", "--yes").output.startswith("Erased 1 call(s) of session s1")
    assert "No calls of user alice" in run(db, "delete", "--user", "alice").output
    assert run(db, "delete", "--user", "a", "--session", "b").exit_code == 2
    with open_store(db) as store:
        assert store.count(CallFilter()) == 0
