"""`llmlog export` and `llmlog import` on real SQLite files: round trips, filters, bad lines,
the minimal hand-written format, idempotent re-import and stdin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import COLUMNS, Call
from llmlog.store.sqlite import connect as sqlite_connect
from llmlog.store.sqlite.store import SQLiteStore

DEMO_CALLS = 150


def run(db: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", db, *args], input=input, catch_exceptions=False)


def invoke(db: str, *args: str, input: str | None = None) -> Result:
    """Like run(), but an exception inside the command is kept on the result, not raised."""
    return CliRunner().invoke(cli, ["--db", db, *args], input=input)


def all_calls(db: str) -> list[Call]:
    with SQLiteStore(db) as store:
        return list(store.iter_calls(CallFilter()))


def count(db: str) -> int:
    with sqlite_connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("demo") / "demo.db")
    script = shutil.which("llmlog") or str(Path(sys.executable).parent / "llmlog")
    proc = subprocess.run(
        [script, "--db", path, "demo", "--calls", str(DEMO_CALLS), "--history", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LLMLOG_DB": "", "LLMLOG_PRICES": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert count(path) == DEMO_CALLS
    return path


T0 = datetime(2026, 1, 10, 8, 0, 0, 123456, tzinfo=UTC)


def exotic_calls() -> list[Call]:
    return [
        Call(
            id="c0ffee00-0000-4000-8000-000000000001",
            session_id="s-1",
            user_id="ü-1",
            timestamp=T0,
            provider="anthropic",
            model="claude-sonnet-4-5",
            feature="support-bot",
            prompt_template_version="support@v4",
            system_prompt=(
                'Line one\nLine two\twith tab, NUL \x00, LS \u2028, emoji 🧪, quote " and \\ backslash'
            ),
            messages=[
                {"role": "user", "content": "Größe? 尺寸? \r\n CRLF inside"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"x": [1, 2.5]}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            ],
            tools=[{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            params={"max_tokens": 100, "temperature": 0.0, "stream": False, "metadata": {"user_id": "x"}},
            response={"content": [{"type": "text", "text": "fin ✓"}], "usage": {"input_tokens": 12}},
            tool_calls=[{"id": "t1", "name": "f", "input": {"x": [1, 2.5]}}],
            stop_reason="tool_calls",
            input_tokens=12,
            output_tokens=7,
            cache_read_tokens=0,
            cache_creation_tokens=3,
            cost_usd=0.000123456789,
            rate_card="custom card",
            first_token_ms=0.5,
            latency_ms=1e-3,
            error=None,
            metadata={"tier": "free", "nested": {"deep": [None, True, {"k": "v"}]}},
            tags=["a", "b,c", ""],
            trace_id="trace-1",
            parent_id="parent-1",
        ),
        Call(id="c0ffee00-0000-4000-8000-000000000002", timestamp=T0 + timedelta(days=1)),
        Call(
            id="c0ffee00-0000-4000-8000-000000000003",
            timestamp=T0 + timedelta(days=2),
            model="my-own-model",
            feature="summarize",
            input_tokens=5,
            output_tokens=5,
            error={"type": "api_error", "status": 500},
        ),
        Call(
            id="c0ffee00-0000-4000-8000-000000000004",
            timestamp=T0 + timedelta(days=3, microseconds=1),
            provider="openai",
            model="gpt-4.1",
            feature="summarize",
            messages=[],
            tools=[],
            tags=[],
            cost_usd=0.0,
        ),
    ]


@pytest.fixture
def exotic_db(tmp_path: Path) -> str:
    path = str(tmp_path / "exotic.db")
    with SQLiteStore(path) as store:
        store.insert(exotic_calls())
    return path


# ---------------------------------------------------------------- export → import


def test_demo_store_round_trips_through_export_and_import(demo_db: str, tmp_path: Path) -> None:
    exported = run(demo_db, "export")
    assert exported.exit_code == 0
    lines = exported.stdout.splitlines()
    assert len(lines) == DEMO_CALLS
    stamps = [json.loads(line)["timestamp"] for line in lines]
    assert stamps == sorted(stamps)  # oldest first
    assert all(list(json.loads(line)) == list(COLUMNS) for line in lines)

    fresh = str(tmp_path / "fresh.db")
    imported = run(fresh, "import", "-", input=exported.stdout)
    assert imported.exit_code == 0, imported.output
    assert f"Imported {DEMO_CALLS} new call(s) from {DEMO_CALLS} good line(s)" in imported.stderr
    assert [c.to_dict() for c in all_calls(fresh)] == [c.to_dict() for c in all_calls(demo_db)]
    # And the SQL view agrees column by column.
    with sqlite_connect(demo_db) as a, sqlite_connect(fresh) as b:
        q = "SELECT * FROM calls ORDER BY timestamp, id"
        assert a.execute(q).fetchall() == b.execute(q).fetchall()


def test_every_column_round_trips_through_a_file(exotic_db: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    exported = run(exotic_db, "export", "-o", str(out))
    assert exported.exit_code == 0
    assert "Exported 4 call(s)" in exported.stderr
    text = out.read_text(encoding="utf-8")
    assert text == run(exotic_db, "export").stdout  # same bytes to a file and to stdout
    assert len(text.split("\n")) == 5 and text.endswith("\n")  # (U+2028 inside is not a line break)

    fresh = str(tmp_path / "fresh.db")
    result = run(fresh, "import", str(out))
    assert result.exit_code == 0, result.output
    got = [c.to_dict() for c in all_calls(fresh)]
    assert got == [c.to_dict() for c in exotic_calls()]
    assert got[0]["system_prompt"].count("\x00") == 1
    assert got[2]["cost_usd"] is None and got[2]["rate_card"] is None  # unknown model stays unpriced
    assert got[3]["messages"] == [] and got[3]["cost_usd"] == 0.0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "2026-01-11"], [2, 3, 4]),
        (["--since", "2026-01-11T08:00:00.123456Z"], [2, 3, 4]),
        (["--since", "2026-01-11T08:00:00.123457Z"], [3, 4]),
        (["--until", "2026-01-12"], [1, 2]),
        (["--feature", "summarize"], [3, 4]),
        (["--feature", "summarize", "--since", "2026-01-13"], [4]),
        (["--errors"], [3]),
        (["--model", "claude-sonnet-4-5"], [1]),
        (["--feature", "nope"], []),
    ],
)
def test_export_filters(exotic_db: str, tmp_path: Path, args: list[str], expected: list[int]) -> None:
    result = run(exotic_db, "export", *args)
    assert result.exit_code == 0
    lines = result.stdout.split("\n")[:-1]
    assert [int(json.loads(line)["id"][-1]) for line in lines] == expected
    out = tmp_path / "f.jsonl"
    to_file = run(exotic_db, "export", *args, "-o", str(out))
    assert f"Exported {len(expected)} call(s)" in to_file.stderr
    assert out.read_text(encoding="utf-8") == result.stdout


def test_export_since_relative(tmp_path: Path) -> None:
    db = str(tmp_path / "rel.db")
    now = datetime.now(UTC)
    with SQLiteStore(db) as store:
        store.insert([Call(timestamp=now - timedelta(hours=h), model=f"m{h}") for h in (0, 2, 30)])
    result = run(db, "export", "--since", "3h")
    assert [json.loads(line)["model"] for line in result.stdout.splitlines()] == ["m2", "m0"]
    result = run(db, "export", "--since", "2d")
    assert len(result.stdout.splitlines()) == 3


# ---------------------------------------------------------------- import: bad lines


GOOD_FULL = json.dumps(
    {"id": "0a0a0a0a-0000-4000-8000-000000000001", "timestamp": "2026-02-01T10:00:00Z", "model": "gpt-4.1",
     "input_tokens": 10, "output_tokens": 2, "feature": "f"}
)  # fmt: skip
GOOD_MINIMAL = json.dumps(
    {"timestamp": "2026-02-01T11:00:00", "model": "claude-haiku-4-5", "user_message": "hi",
     "assistant_response": "hello", "input_tokens": 3, "output_tokens": 4}
)  # fmt: skip
GOOD_LAST = json.dumps({"timestamp": 1767225600, "model": "x", "tags": ["t"]})


def test_import_reports_bad_lines_and_keeps_good_ones(tmp_path: Path) -> None:
    lines = [
        GOOD_FULL,  # 1
        '{"timestamp": "2026-02-01T10:00:00Z", "model": ',  # 2 invalid JSON
        "[1, 2, 3]",  # 3 not an object
        '{"timestamp": "last tuesday", "model": "m"}',  # 4 bad timestamp
        '{"timestamp": "2026-02-01T10:00:00Z", "input_tokens": -5}',  # 5 negative tokens
        '{"timestamp": "2026-02-01T10:00:00Z", "model": "m", "input_tokens": "many"}',  # 6 not a number
        '{"id": "not-a-uuid", "timestamp": "2026-02-01T10:00:00Z"}',  # 7 bad UUID
        GOOD_MINIMAL,  # 8
        "",  # 9 blank: skipped, not reported
        '{"model": "m"}',  # 10 no timestamp
        GOOD_LAST,  # 11
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = str(tmp_path / "mixed.db")
    result = run(db, "import", str(path))
    assert result.exit_code == 1
    err = result.stderr
    expected = {
        2: "invalid JSON",
        3: "expected a JSON object, got list",
        4: "timestamp: Invalid isoformat string: 'last tuesday'",
        5: "input_tokens: expected a non-negative integer, got -5",
        6: "input_tokens: not a number: 'many'",
        7: "id: not a UUID: 'not-a-uuid'",
        10: "timestamp: required",
    }
    for number, reason in expected.items():
        assert f"{path}:{number}: {reason}" in err, (number, err)
    reported = sorted(int(n) for n in re.findall(r"^.*mixed\.jsonl:(\d+):", err, flags=re.M))
    assert reported == sorted(expected)
    assert "Imported 3 new call(s) from 3 good line(s); 7 bad line(s) skipped" in err
    calls = all_calls(db)
    assert [c.model for c in calls] == ["x", "gpt-4.1", "claude-haiku-4-5"]  # oldest first
    assert calls[0].timestamp == datetime(2026, 1, 1, tzinfo=UTC)  # epoch seconds
    assert calls[1].id == "0a0a0a0a-0000-4000-8000-000000000001"
    assert calls[2].messages == [{"role": "user", "content": "hi"}]
    assert "Traceback" not in result.output


def test_import_of_only_good_lines_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "good.jsonl"
    path.write_text(GOOD_FULL + "\n\n" + GOOD_LAST + "\n", encoding="utf-8")
    result = run(str(tmp_path / "g.db"), "import", str(path))
    assert result.exit_code == 0
    assert "Imported 2 new call(s) from 2 good line(s)" in result.stderr
    assert "bad line" not in result.stderr


def test_import_huge_token_count_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    """BUG: Call.from_dict accepts any non-negative int, but SQLite INTEGER is 64-bit: the insert
    raises OverflowError, the whole batch (up to 1000 good lines) is rolled back and `import`
    dies with a traceback instead of reporting the line."""
    path = tmp_path / "huge.jsonl"
    huge = '{"timestamp": "2026-02-01T10:00:00Z", "model": "m", "input_tokens": 99999999999999999999}'
    path.write_text("\n".join([GOOD_FULL, huge, GOOD_LAST]) + "\n", encoding="utf-8")
    db = str(tmp_path / "huge.db")
    result = invoke(db, "import", str(path))
    assert not isinstance(result.exception, OverflowError), "import crashed on a huge integer"
    assert result.exit_code == 1
    assert f"{path}:2: input_tokens" in result.stderr
    assert count(db) == 2


def test_import_lone_surrogate_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    r"""BUG: a JSON string escape like "\ud800" (a lone surrogate, valid JSON) decodes to text
    SQLite cannot encode; the insert raises UnicodeEncodeError, the batch is lost and `import`
    dies with a traceback."""
    path = tmp_path / "surrogate.jsonl"
    bad = '{"timestamp": "2026-02-01T10:00:00Z", "system_prompt": "broken \\ud800 emoji"}'
    path.write_text("\n".join([GOOD_FULL, bad, GOOD_LAST]) + "\n", encoding="utf-8")
    db = str(tmp_path / "surrogate.db")
    result = invoke(db, "import", str(path))
    assert not isinstance(result.exception, UnicodeError), "import crashed on a lone surrogate"
    assert result.exit_code in (0, 1)
    assert count(db) in (2, 3)  # reported as bad (2) or stored with a replacement character (3)
    assert {c.model for c in all_calls(db)} >= {"gpt-4.1", "x"}


def test_import_of_an_early_year_does_not_poison_the_store(tmp_path: Path) -> None:
    """BUG: a timestamp before year 1000 is accepted, stored as '999-01-01T…' (format_timestamp
    does not zero-pad %Y), and then every read — `calls`, `export`, `show` — fails with
    'Invalid isoformat string'. Either reject the line or store '0999-…'."""
    path = tmp_path / "old.jsonl"
    old = '{"timestamp": "0999-01-01T00:00:00Z", "model": "ancient"}'
    path.write_text("\n".join([GOOD_FULL, old]) + "\n", encoding="utf-8")
    db = str(tmp_path / "old.db")
    invoke(db, "import", str(path))
    listed = invoke(db, "calls", "--json")
    assert listed.exception is None or isinstance(listed.exception, SystemExit), repr(listed.exception)
    assert listed.exit_code == 0
    exported = invoke(db, "export")
    assert exported.exit_code == 0, repr(exported.exception)
    assert len(exported.stdout.splitlines()) == count(db)


# ---------------------------------------------------------------- import: the minimal format


def test_minimal_hand_written_format(tmp_path: Path) -> None:
    lines = [
        {
            "timestamp": "2026-11-20T09:15:00",
            "model": "claude-haiku-4-5",
            "system_prompt": "You summarize tickets.",
            "user_message": "Summarize: the printer is on fire.",
            "assistant_response": "Printer fire; urgent.",
            "input_tokens": 1200,
            "output_tokens": 300,
            "latency_ms": 850,
            "tags": ["prod", "summaries"],
        },
        {
            "timestamp": "2026-11-20T10:16:00+01:00",
            "model": "acme-internal-llm",
            "system_prompt": "Be kind.",
            "user_message": "Hello?",
            "assistant_response": "Hi!",
            "input_tokens": 10,
            "output_tokens": 3,
            "latency_ms": 12.5,
            "tags": "prod, experiment ,, x",
            "feature": "greeter",
        },
        {"timestamp": "2026-11-20T09:17:00Z", "model": "gpt-4.1", "user_message": "only a question"},
    ]
    path = tmp_path / "calls-2026-11-20.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in lines), encoding="utf-8")
    db = str(tmp_path / "minimal.db")
    result = run(db, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Imported 3 new call(s) from 3 good line(s)" in result.stderr
    known, unknown, question = all_calls(db)

    assert known.timestamp == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
    assert known.provider == "anthropic" and known.model == "claude-haiku-4-5"
    assert known.system_prompt == "You summarize tickets."
    assert known.messages == [{"role": "user", "content": "Summarize: the printer is on fire."}]
    assert known.response == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Printer fire; urgent."}],
    }
    assert (known.input_tokens, known.output_tokens, known.latency_ms) == (1200, 300, 850.0)
    assert known.tags == ["prod", "summaries"]
    # claude-haiku-4-5: $1 / MTok in, $5 / MTok out.
    assert known.cost_usd == pytest.approx(1200 * 1 / 1e6 + 300 * 5 / 1e6)
    assert known.rate_card and known.rate_card.startswith("genai-prices")

    assert unknown.timestamp == datetime(2026, 11, 20, 9, 16, tzinfo=UTC)
    assert unknown.provider is None
    assert unknown.cost_usd is None and unknown.rate_card is None
    assert unknown.tags == ["prod", "experiment", "x"]
    assert unknown.feature == "greeter"
    assert unknown.response == {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]}

    assert question.provider == "openai"
    assert question.messages == [{"role": "user", "content": "only a question"}]
    assert question.response is None
    assert question.cost_usd is None  # no token counts: cannot be priced

    # It reads like any other call afterwards.
    shown = run(db, "show", known.id[:8])
    assert "Summarize: the printer is on fire." in shown.stdout and "Printer fire; urgent." in shown.stdout
    with sqlite_connect(db) as conn:
        texts = conn.execute(
            "SELECT json_extract(response, '$.content[0].text') FROM calls"
            " WHERE model IN ('gpt-4.1', 'acme-internal-llm') ORDER BY timestamp"
        ).fetchall()
    assert texts == [("Hi!",), (None,)]


def test_minimal_format_bad_values_are_reported(tmp_path: Path) -> None:
    lines = [
        '{"timestamp": "2026-11-20T09:15:00", "model": "m", "user_message": 42}',
        '{"timestamp": "2026-11-20T09:15:00", "model": "m", "user_message": "q", "tags": 7}',
        '{"timestamp": "2026-11-20T09:15:00", "model": "m", "user_message": "q", "output_tokens": "12.5"}',
    ]
    path = tmp_path / "bad-minimal.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = str(tmp_path / "bad-minimal.db")
    result = run(db, "import", str(path))
    assert result.exit_code == 1
    assert f"{path}:1: user_message: expected a string, got int" in result.stderr
    assert f"{path}:2: tags: expected an array of strings" in result.stderr
    assert f"{path}:3: output_tokens: expected a non-negative integer, got '12.5'" in result.stderr
    assert count(db) == 0


# ---------------------------------------------------------------- import: idempotence and stdin


def test_importing_the_same_file_twice_stores_each_call_once(tmp_path: Path) -> None:
    path = tmp_path / "twice.jsonl"
    path.write_text("\n".join([GOOD_FULL, GOOD_MINIMAL, GOOD_LAST]) + "\n", encoding="utf-8")
    db = str(tmp_path / "twice.db")
    first = run(db, "import", str(path))
    assert "Imported 3 new call(s) from 3 good line(s)" in first.stderr
    ids = sorted(c.id for c in all_calls(db))
    second = run(db, "import", str(path))
    assert second.exit_code == 0
    assert "Imported 0 new call(s) from 3 good line(s), 3 already stored" in second.stderr
    assert sorted(c.id for c in all_calls(db)) == ids
    assert count(db) == 3
    # Lines without an id get the same derived id even with other line endings or indentation.
    third = run(db, "import", "-", input="  " + GOOD_MINIMAL + "\r\n" + GOOD_LAST + "\r\n")
    assert "Imported 0 new call(s) from 2 good line(s), 2 already stored" in third.stderr
    assert count(db) == 3
    # A duplicate line inside one file is stored once as well.
    fresh = str(tmp_path / "dup.db")
    dup = run(fresh, "import", "-", input=GOOD_MINIMAL + "\n" + GOOD_MINIMAL + "\n")
    assert "Imported 1 new call(s) from 2 good line(s), 1 already stored" in dup.stderr
    assert count(fresh) == 1


def test_import_from_stdin(exotic_db: str, tmp_path: Path) -> None:
    exported = run(exotic_db, "export", "--feature", "summarize").stdout
    db = str(tmp_path / "stdin.db")
    result = run(db, "import", "-", input=exported + GOOD_MINIMAL + "\n")
    assert result.exit_code == 0, result.output
    assert "Imported 3 new call(s) from 3 good line(s)" in result.stderr
    models = [c.model for c in all_calls(db)]
    assert models == ["my-own-model", "gpt-4.1", "claude-haiku-4-5"]


def test_import_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "x.db"), "import", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "nope.jsonl" in result.stderr
