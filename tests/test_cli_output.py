"""What the CLI prints as a new user reads it: tables that keep what is read at a narrow
terminal, whole text in `show`, verdicts only from enough calls, commands that can be copied."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

import llmlog.cli.core as cli_module
from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.store import open_store


def llmlog(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


ERRORS = [
    ("405bd1c2-0000-4000-8000-000000000001", "rate_limit_exceeded", 429),
    ("7a11e0f3-0000-4000-8000-000000000002", "overloaded_error", 529),
    ("c0ffee00-0000-4000-8000-000000000003", "context_length_exceeded", 400),
]


@pytest.fixture
def failed_calls(tmp_path: Path) -> str:
    db = str(tmp_path / "errors.db")
    now = datetime.now(UTC)
    with open_store(db) as store:
        store.insert(
            [
                Call(
                    id=call_id,
                    timestamp=now - timedelta(minutes=i),
                    provider="openai",
                    model="claude-sonnet-4-6-20260101",
                    feature="research-agent",
                    user_id="user_0000000000007",
                    messages=[{"role": "user", "content": "hi"}],
                    error={"type": kind, "status": status},
                    input_tokens=123456,
                    output_tokens=65432,
                    latency_ms=12345.0,
                )
                for i, (call_id, kind, status) in enumerate(ERRORS)
            ]
        )
    return db


@pytest.mark.parametrize("width", [60, 80, 100])
def test_calls_at_a_narrow_terminal_keep_the_id_and_the_error(
    width: int, failed_calls: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns the ids were cut to `405bd…` and the error column to `…`: the two things
    the table is read for. The less useful columns give way instead."""
    monkeypatch.setattr(cli_module.console, "width", width)
    result = llmlog("--db", failed_calls, "calls", "--errors", "-n", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= width for line in lines), result.output
    assert "…" not in result.output
    for call_id, kind, status in ERRORS:
        row = next(line for line in lines if line.startswith(call_id[:8]))
        assert f"{kind} {status}" in row, result.output


def test_calls_at_a_wide_terminal_keep_every_column(
    failed_calls: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_module.console, "width", 200)
    header = llmlog("--db", failed_calls, "calls").output.splitlines()[0].split()
    every = ["id", "time", "(UTC)", "feature", "model", "user", "in", "out", "cost", "latency", "error"]
    assert header == every


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_calls_preview_what_was_said_and_answered_within_the_terminal(
    width: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`calls --preview`: a line each of what was said last and what was answered, as the web
    list shows them, cut to the room the other columns leave; the id and the error are kept
    whole first. Logged text stays text: no markup read, no terminal control sent."""
    db = str(tmp_path / "preview.db")
    now = datetime.now(UTC)
    said = "[bold]where\x1b[2J is\n\n my order?[/bold] " + "word " * 2000
    with open_store(db) as store:
        store.insert(
            [
                Call(
                    id=call_id,
                    timestamp=now - timedelta(minutes=i),
                    model="claude-sonnet-4-6",
                    feature="support-bot",
                    messages=[{"role": "user", "content": said}],
                    response={"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]},
                    error={"type": kind, "status": status} if i == 0 else None,
                )
                for i, (call_id, kind, status) in enumerate(ERRORS)
            ]
        )
    monkeypatch.setattr(cli_module.console, "width", width)
    result = llmlog("--db", db, "calls", "--preview")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= width for line in lines) and "\x1b" not in result.output, result.output
    header = lines[0].split()
    assert header[0] == "id" and "error" in header and "said" in header
    assert f"{ERRORS[0][1]} {ERRORS[0][2]}" in lines[1]
    for (call_id, _, _), line in zip(ERRORS, lines[1:], strict=True):
        assert line.startswith(call_id[:8]) and "[bold]where\\x1b[2J is my" in line and "…" in line
    if width >= 120:
        assert header[-2:] == ["said", "answered"] and lines[2].rstrip().endswith("answer 1")
    plain = llmlog("--db", db, "calls").output
    assert "said" not in plain and "answer 1" not in plain  # without --preview, as it was


TOKEN = "".join(f"{i:04d}" for i in range(1250))  # 5,000 characters, no space
JAPANESE = "これは空白のない長い日本語の応答です。" * 40


@pytest.mark.parametrize("width", [80, 120])
def test_show_prints_long_text_without_spaces_whole(
    width: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message or response with no spaces was cut to one line ending in `…`; `show` is "One
    call, whole": it folds onto as many lines as it takes."""
    db = str(tmp_path / "long.db")
    with open_store(db) as store:
        store.insert(
            [
                Call(
                    id="10a9c000-0000-4000-8000-000000000001",
                    timestamp=datetime.now(UTC),
                    provider="anthropic",
                    model="claude-sonnet-4-6",
                    session_id=TOKEN[:300],
                    messages=[{"role": "user", "content": TOKEN}],
                    response={"role": "assistant", "content": [{"type": "text", "text": JAPANESE}]},
                )
            ]
        )
    monkeypatch.setattr(cli_module.console, "width", width)
    result = llmlog("--db", db, "show", "10a9c000")
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    # Folded text is read back by joining what lies between each line's borders.
    flat = "".join(
        line.strip(" │").removeprefix("user").removeprefix("assistant").strip()
        for line in result.output.splitlines()
    )
    assert TOKEN in flat and JAPANESE in flat and TOKEN[:300] in flat


@pytest.fixture
def few_calls(tmp_path: Path) -> str:
    """`review`: 40 calls of v1, 5 of v2, in the last days."""
    db = str(tmp_path / "few.db")
    now = datetime.now(UTC)
    with open_store(db) as store:
        store.insert(
            [
                Call(
                    id=f"r{i}",
                    timestamp=now - timedelta(hours=i + 1),
                    feature="review",
                    prompt_template_version="v1" if i >= 5 else "v2",
                    output_tokens=100 + i,
                    latency_ms=500.0 + i,
                )
                for i in range(45)
            ]
        )
    return db


@pytest.mark.parametrize(
    "args, counts",
    [(["v1", "v2"], "40 calls → 5 calls"), (["--at", "2030-01-01"], "0 calls → 0 calls")],
    ids=["versions", "a-moment-with-no-calls"],
)
def test_compare_with_too_few_calls_gives_no_verdict(args: list[str], counts: str, few_calls: str) -> None:
    """With under 30 calls a side no test is made (effect and p blank), yet the summary said
    "no change beyond chance", even of 0 calls against 0."""
    result = llmlog("--db", few_calls, "report", "compare", "review", *args)
    assert result.exit_code == 0, result.output
    assert f"{counts}; too few calls to test (at least 30 per side)." in result.output
    assert "no change" not in result.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_demo_names_the_db_it_was_given_in_its_next_commands(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Next: llmlog serve · llmlog calls …` left out the --db the demo was given: copied, each
    read the default store, which the demo had not filled."""
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "my demo.db")  # a space: the path is quoted for the shell
    demo = ["demo", "--calls", "12", "--history", "0"]
    args = ["--db", db, *demo] if where == "before" else [*demo, "--db", db]
    result = CliRunner().invoke(cli, args, env={"LLMLOG_DB": None, "LLMLOG_PRICES": None})
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    quoted = f"'{db}'"
    assert (
        f"Next: llmlog --db {quoted} serve · llmlog --db {quoted} calls · llmlog --db {quoted} show <id>"
        in said
    )
    # The store named is the one the calls went into.
    calls = llmlog("--db", db, "calls", "--json")
    assert len(json.loads(calls.output)) == 12


def test_serve_on_port_0_prints_the_port_it_listens_on(tmp_path: Path) -> None:
    """`--port 0` printed http://127.0.0.1:0/; now the free port taken, which answers."""
    command = [sys.executable, "-c", "from llmlog.cli import cli; cli()", "--db", str(tmp_path / "x.db")]
    server = subprocess.Popen(
        [*command, "serve", "--port", "0", "--no-retention"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        found = re.match(r"llmlog UI on http://127\.0\.0\.1:(\d+)/ ", first)
        assert found and int(found.group(1)) > 0, first
        answer = httpx.get(f"http://127.0.0.1:{found.group(1)}/", timeout=10)
        assert answer.status_code == 200
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("table", ["accounts", "audit", "api_tokens", "web_sessions"])
def test_query_of_a_table_out_of_reach_says_so_on_sqlite(table: str, failed_calls: str) -> None:
    """A read of a private table was refused as "only reading queries are allowed (no writes…)",
    which it is; now it is said, as on PostgreSQL, to be a table not readable here."""
    for sql in (f"SELECT * FROM {table}", f"SELECT count(*) FROM {table}"):
        result = llmlog("--db", failed_calls, "query", sql)
        assert result.exit_code == 1
        assert result.output.strip() == f"Error: not readable here (permission denied for table {table})"
    # A write is still said to be one, whatever it reads.
    write = llmlog("--db", failed_calls, "query", f"UPDATE {table} SET rowid = 1 WHERE rowid = 2")
    assert "only reading queries are allowed" in write.output


NO_SQL = ["", "   \n\t", ";", "/* nothing */ ;", "\n-- a comment\n/* and\nanother */\n"]


@pytest.mark.parametrize("sql", NO_SQL)
def test_query_of_no_sql_is_an_error(sql: str, failed_calls: str) -> None:
    """An empty query (or one of comments only) printed a blank line and exited 0."""
    result = llmlog("--db", failed_calls, "query", "--", sql)
    assert result.exit_code == 1
    assert result.output == "Error: no SQL to run: the query is empty (or only comments)\n"


@pytest.mark.parametrize("sql", ["SELECT '--' AS x", "/* first */ SELECT '/*' AS x -- last"])
def test_query_with_comment_markers_still_runs(sql: str, failed_calls: str) -> None:
    result = llmlog("--db", failed_calls, "query", "--format", "tsv", sql)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] in ("--", "/*")
