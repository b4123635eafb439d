"""`llmlog query` on real stores: rows stream from the store to stdout as they arrive, a
terminal gets a table of cut values, a pipe a plain format of whole ones, and --timeout covers
the whole command."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from fcntl import ioctl
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.store import ReadOnlyError, Store, open_store
from tests.backends import ClickHouseBackend, PostgresBackend, SQLiteBackend

# A value long enough to wreck a table, with newlines and a tab in it.
LONG = "You are a careful assistant.\n\nRules:\n" + "\n".join(f"{i}.\tnever say {i * 'x'}" for i in range(60))
ERROR = {"type": "overloaded_error", "status": 529, "message": "Overloaded " + "retry later " * 40}
CALL_ID = "5e1ec700-0000-4000-8000-000000000001"
# Rows without end, one at a time: only a reader that stops early gets an answer.
ENDLESS = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"
ENDLESS_CH = "SELECT number + 1 AS x FROM system.numbers"


def run(db: str, *args: str, columns: int = 100) -> Result:
    return CliRunner().invoke(cli, ["--db", db, "query", *args], env={"COLUMNS": str(columns)})


def entry_point(db: str, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    """The real `llmlog` command, this tree's code, its stdout a pipe unless told otherwise."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    command = [sys.executable, "-c", "from llmlog.cli import cli; cli()", "--db", db, "query", *args]
    options: dict = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "env": env, **popen}
    return subprocess.Popen(command, **options)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("query") / "calls.db")
    with open_store(path) as store:
        store.insert(
            [
                Call(
                    id=CALL_ID,
                    timestamp=datetime(2026, 3, 1, 12, tzinfo=UTC),
                    provider="anthropic",
                    model="claude-sonnet-4-6",
                    feature="support-bot",
                    system_prompt=LONG,
                    messages=[{"role": "user", "content": "hi"}],
                    error=ERROR,
                )
            ]
        )
    return path


@pytest.fixture(params=["sqlite", "postgres", "clickhouse"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, str]]:
    if request.param == "sqlite":
        backend: SQLiteBackend | PostgresBackend | ClickHouseBackend = SQLiteBackend(tmp_path / "s.db")
    elif request.param == "postgres":
        backend = PostgresBackend(request.getfixturevalue("pg_url"))
    else:
        pytest.importorskip("chdb")
        backend = ClickHouseBackend(tmp_path / "ch")
    with backend.open() as opened:
        yield opened, ENDLESS_CH if request.param == "clickhouse" else ENDLESS


# ---------------------------------------------------------------- the store's rows


def test_query_rows_come_as_they_arrive(store: tuple[Store, str]) -> None:
    """`Store.query_rows` gives the rows of an endless query one by one: what is not taken is
    never read, and stopping ends the query (the store answers the next one)."""
    opened, endless = store
    started = time.monotonic()
    with opened.query_rows(endless, timeout_s=30, limit=10**9) as rows:
        assert rows.columns == ["x"]
        assert [r[0] for r in itertools.islice(rows, 3)] == [1, 2, 3]
    assert time.monotonic() - started < 10
    assert opened.query("SELECT 1 AS one").rows == [(1,)]


def test_query_rows_time_limit_covers_their_reading(store: tuple[Store, str]) -> None:
    """The time limit runs on while the caller holds rows: a row asked for past it is an
    error, however quickly the engine ran the query."""
    opened, endless = store
    with opened.query_rows(f"SELECT * FROM ({endless}) AS e LIMIT 5000", timeout_s=1) as rows:
        it = iter(rows)
        assert next(it) == (1,)
        time.sleep(1.3)
        with pytest.raises(ReadOnlyError, match=r"longer than the 1 s limit"):
            list(it)
    assert opened.query("SELECT 2 AS two").rows == [(2,)]


# ---------------------------------------------------------------- formats


def test_query_to_a_pipe_is_tsv_of_whole_values(db: str) -> None:
    """Not a terminal (CliRunner, a pipe, a file): tab-separated, a line per row, every value
    whole with its tabs and newlines escaped, NULL empty."""
    result = run(db, "SELECT id, system_prompt, session_id, error FROM calls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "id\tsystem_prompt\tsession_id\terror"
    assert len(lines) == 2
    fields = lines[1].split("\t")
    assert fields[0] == CALL_ID and fields[2] == ""
    assert fields[1].replace("\\n", "\n").replace("\\t", "\t") == LONG
    assert json.loads(fields[3]) == ERROR


def test_query_table_cuts_long_values(db: str) -> None:
    """BUG: a table squeezed every column to a few characters and folded each value over
    hundreds of lines. Now a long value is cut to a readable width with …, a row a line."""
    result = run(db, "--format", "table", "SELECT id, feature, system_prompt, error FROM calls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"id\s+feature\s+system_prompt\s+error", lines[0])
    assert all(cell_len(line) <= 100 for line in lines)
    row = lines[1]
    assert row.startswith(CALL_ID + "  support-bot  You are a careful ass")
    assert row.count("…") == 2 and "never say xxxx" not in row
    # The two long columns share what room there is.
    prompt, error = re.split(r"\s{2,}", row)[2:]
    assert abs(cell_len(prompt) - cell_len(error)) <= 1, row


def test_query_table_never_cuts_a_number(db: str) -> None:
    """Column widths come from the first rows; a later, wider number widens its column."""
    sql = ENDLESS.replace("SELECT x FROM n", "SELECT x, x * 1000 AS y FROM n")
    result = run(db, "--format", "table", "--limit", "150", sql)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"x\s+y", lines[0]) and len(lines) == 151 and "…" not in result.stdout
    assert [line.split() for line in lines[1:]] == [[str(n), str(n * 1000)] for n in range(1, 151)]


def test_query_full_and_machine_formats_show_values_whole(db: str) -> None:
    sql = "SELECT id, system_prompt, error FROM calls"
    full = run(db, "--format", "table", "--full", sql)
    assert full.exit_code == 0, full.output
    # Too wide for a table whole: a block per row, the value's own lines kept.
    assert re.sub(r"\s+", " ", LONG) in re.sub(r"\s+", " ", full.stdout) and "…" not in full.stdout
    # A value past a column's width (40) that fits the terminal: cut, unless --full.
    start = "SELECT id, substr(system_prompt, 1, 70) AS start FROM calls"
    assert "…" in run(db, "--format", "table", start, columns=200).stdout
    whole = run(db, "--format", "table", "--full", start, columns=200).stdout.splitlines()
    assert whole[1] == f"{CALL_ID}  " + LONG[:70].replace("\n", "↵").replace("\t", " ")
    as_json = json.loads(run(db, "--format", "json", sql).stdout)
    assert as_json == [
        {"id": CALL_ID, "system_prompt": LONG, "error": json.dumps(ERROR, separators=(",", ":"))}
    ]
    as_jsonl = [json.loads(line) for line in run(db, "--format", "jsonl", sql).stdout.splitlines()]
    assert as_jsonl == as_json
    as_csv = list(csv.reader(io.StringIO(run(db, "--format", "csv", sql).stdout)))
    assert as_csv == [["id", "system_prompt", "error"], [CALL_ID, LONG, as_json[0]["error"]]]


def test_query_too_wide_for_a_table_is_a_block_per_row(db: str) -> None:
    """`SELECT *` (28 columns) cannot be a readable table in 100 columns: each row is a block
    of `column value` lines, values cut to fit; with --full they are whole."""
    result = run(db, "--format", "table", "SELECT * FROM calls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("─[ row 1 ]")
    assert all(cell_len(line) <= 100 for line in lines)
    assert re.search(rf"^id\s+{CALL_ID}$", result.stdout, re.M)
    assert re.search(r"^system_prompt\s+You are a careful assistant\.↵↵Rules:↵.*…$", result.stdout, re.M)
    assert re.search(r"^session_id\s+NULL$", result.stdout, re.M)
    empty = run(db, "--format", "table", "SELECT * FROM calls WHERE id = 'none'")
    assert empty.exit_code == 0 and empty.stdout == "" and empty.stderr == "(0 rows)\n"
    full = run(db, "--format", "table", "--full", "SELECT * FROM calls").stdout
    # Whole, each line of the value under the first (tabs laid out by the terminal's rule).
    assert re.sub(r"\s+", " ", LONG) in re.sub(r"\s+", " ", full)
    assert "\n" + " " * len("prompt_template_version  ") + "Rules:\n" in full


def test_query_limit_must_be_positive(db: str) -> None:
    """BUG: --limit 0 printed nothing and said rows were cut; a negative one printed every row."""
    for limit in ("0", "-1"):
        result = run(db, "--limit", limit, "SELECT id FROM calls")
        assert result.exit_code == 2, (limit, result.output)
        assert "--limit" in result.stderr and "x>=1" in result.stderr
    result = run(db, "--format", "csv", "--limit", "1", ENDLESS)
    assert result.exit_code == 0 and result.stdout.splitlines() == ["x", "1"]
    assert "first 1 rows shown" in result.stderr


# ---------------------------------------------------------------- the real command


def test_query_into_a_closed_pipe_streams_and_stops(db: str) -> None:
    """BUG: `llmlog query "SELECT * FROM calls" | head -2` printed nothing for minutes while its
    memory grew into gigabytes: every row was read, then the whole table laid out, before the
    first line. Now the first lines come at once, memory stays flat over 100 MB of rows, and
    the command ends when its reader goes."""
    big = ENDLESS.replace("SELECT x FROM n", "SELECT x, replace(hex(zeroblob(5000)), '0', 'v') AS big FROM n")
    started = time.monotonic()
    proc = entry_point(db, "--format", "csv", "--limit", "1000000000", "--timeout", "120", big)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"x,big\r\n"
        assert proc.stdout.readline() == b"1," + b"v" * 10_000 + b"\r\n"
        assert time.monotonic() - started < 15
        for n in range(2, 10_002):  # another 100 MB
            assert proc.stdout.readline() == f"{n},".encode() + b"v" * 10_000 + b"\r\n"
        with open(f"/proc/{proc.pid}/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
        assert peak < 110_000, f"{peak} kB held"
        proc.stdout.close()  # as `head` does
        proc.wait(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_query_timeout_covers_printing(kind: str, db: str, request: pytest.FixtureRequest) -> None:
    """BUG: --timeout stopped the query but not the printing of its rows (6 minutes for 661
    rows). A reader that does not keep up makes the command pass its limit: it stops with a
    one-line error and a non-zero exit, the rows printed so far printed."""
    url = db if kind == "sqlite" else request.getfixturevalue("pg_url")
    if kind == "postgres":
        open_store(url).close()
    sql = ENDLESS.replace("FROM n)", "FROM n WHERE x < 20000)").replace(
        "SELECT x FROM n",
        "SELECT x, 'padding to fill a pipe buffer quickly, and then some more' AS pad FROM n",
    )
    proc = entry_point(url, "--format", "csv", "--timeout", "2", sql)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline() == b"x,pad\r\n"
        time.sleep(3)  # a pager waiting on its reader
        rest = proc.stdout.read()
        assert proc.wait(timeout=20) == 1
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr.read().decode().splitlines() == ["Error: query took longer than the 2 s limit"]
    assert 0 < rest.count(b"\n") < 19_999


def test_query_in_a_terminal_is_a_table_of_cut_values(db: str) -> None:
    """stdout a terminal (a pty 90 columns wide), no --format: a table, values cut to fit."""
    leader, follower = pty.openpty()
    ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 90, 0, 0))
    proc = entry_point(db, "SELECT id, system_prompt, session_id FROM calls", stdout=follower)
    os.close(follower)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command ended, its terminal closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        os.close(leader)
        proc.kill()
        proc.wait()
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode()).replace("\r\n", "\n")
    lines = text.splitlines()
    assert re.fullmatch(r"id\s+system_prompt\s+session_id", lines[0]), text
    assert "\t" not in text and all(cell_len(line) <= 90 for line in lines)
    assert re.fullmatch(rf"{CALL_ID}\s+You are a careful assistant\.↵↵Rules:↵.*…\s+NULL", lines[1]), lines[1]


def test_query_table_measures_on_few_rows_when_they_are_large() -> None:
    """A table's widths come from its first rows, held until they are printed: no more than
    about a megabyte of them, whatever the rows hold."""
    from llmlog.cli.query import _sample

    seen: list[int] = []

    def rows() -> Iterator[tuple[str]]:
        for n in range(100):
            seen.append(n)
            yield ("x" * 600_000,)

    assert len(_sample(rows())) == 2 and len(seen) == 2
    assert len(_sample(iter([("x",)] * 100))) == 50
