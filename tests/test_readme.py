"""Every `llmlog …` command the README and docs/ show in a code block runs, against a demo store.

The commands run in the order the pages show them, through click's CliRunner, over one small
demo store made for the module; each must exit 0. The few that cannot run here are listed in
SKIP with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.store import open_store

ROOT = Path(__file__).resolve().parent.parent
# docs/cli.md is the commands' --help (tests/test_cli_docs.py); its examples are help text.
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md")]
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}

# Commands left out, by how they begin, and why.
SKIP = {
    "llmlog serve": "runs until stopped (tests/test_wheel.py and the web tests start it)",
    "llmlog wrap": "runs another program (tests/test_wrap.py)",
    "llmlog keys new >": "writes to /etc",
    "llmlog keys rotate": "seals the store: every later command would need the key (tests/test_regulated.py)",
    "llmlog copy": "needs a second store named by an environment variable (tests/test_store.py copies)",
    "llmlog check": "exits 1 when there is a finding, as on the demo's month (tests/test_findings.py)",
    "llmlog experiment show": "names an experiment made earlier, by an id each run draws anew",
    "llmlog experiment resume": "names an experiment made earlier (tests/test_cli_experiments.py resumes)",
}
# Commands the page shows failing on purpose, by how they begin, and the exit status they give.
EXITS = {
    "llmlog experiment run --feature support-bot": 1,  # the gate: support-bot@v4 declines more
}
# Whole pages written for another store than the demo's SQLite file: they set LLMLOG_DB first.
SKIP_PAGES = {
    "postgresql.md": "run on PostgreSQL by test_postgresql_page",
    "clickhouse.md": "its commands are for a ClickHouse store (LLMLOG_DB=clickhouse://…)",
}
# Stand-ins for a call id in the examples; the test puts a real one in their place.
ID_PLACEHOLDERS = {"<id>", "ID", "3f2a9c1e", "CALL_ID"}


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    command: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.command}"


def examples(page: Path) -> list[Example]:
    """The `llmlog …` commands in the page's shell code blocks, a command continued over lines
    (an open quote, a trailing backslash) read whole."""
    found: list[Example] = []
    fence: str | None = None  # the language of the code block the line is in
    pending: tuple[int, str] | None = None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        opens = re.match(r"^```(\w*)", line)
        if opens:
            fence = opens.group(1) if fence is None else None
            pending = None
            continue
        if fence not in SHELL_BLOCKS:
            continue
        if pending is None and not line.startswith("llmlog "):
            continue
        start, text = pending if pending else (number, "")
        text = f"{text}\n{line}" if text else line
        if text.endswith("\\"):
            pending = (start, text[:-1])
            continue
        try:
            shlex.split(text, comments=True)
        except ValueError:  # a quote still open: the command goes on
            pending = (start, text)
            continue
        pending = None
        found.append(Example(str(page.relative_to(ROOT)), start, text))
    return found


ALL = [e for page in PAGES for e in examples(page)]


def _skip_reason(example: Example) -> str | None:
    page = Path(example.page).name
    if page in SKIP_PAGES:
        return SKIP_PAGES[page]
    for start, reason in SKIP.items():
        if example.command.startswith(start):
            return reason
    return None


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A small demo store (the same traffic as `make demo`, fewer calls and days) and a call id."""
    db = str(tmp_path_factory.mktemp("readme") / "demo.db")
    env = {k: v for k, v in os.environ.items() if k not in ("LLMLOG_DB", "LLMLOG_URL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", "from llmlog.cli import cli; cli()", "--db", db, "demo", "--calls", "200",
         "--history", "7"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with open_store(db) as store:
        call_id = store.recent(CallFilter(), limit=1, brief=True)[0].id
    return db, call_id


def test_the_pages_have_commands() -> None:
    assert len([e for e in ALL if e.page == "README.md"]) >= 15
    # Each skip names a command some page still shows.
    for start in SKIP:
        assert any(e.command.startswith(start) for e in ALL), f"SKIP names {start!r}, which no page shows"


@pytest.mark.parametrize("example", ALL, ids=str)
def test_command_runs(example: Example, demo_store: tuple[str, str]) -> None:
    reason = _skip_reason(example)
    if reason:
        pytest.skip(reason)
    db, call_id = demo_store
    args = [call_id[:8] if a in ID_PLACEHOLDERS else a for a in shlex.split(example.command, comments=True)]
    assert args[0] == "llmlog"
    assert not {"|", ">", ">>", "<", "&&", ";"} & set(args), f"{example}: a shell pipeline; add it to SKIP"
    runner = CliRunner(env={"LLMLOG_DB": db, "LLMLOG_URL": None, "COLUMNS": "200"})
    # Commands that ask (a password) get an answer.
    result = runner.invoke(cli, args[1:], prog_name="llmlog", input="correct-horse-9\ncorrect-horse-9\n")
    expected = next((code for start, code in EXITS.items() if example.command.startswith(start)), 0)
    assert result.exit_code == expected, (
        f"{example}\nexit {result.exit_code}\n{result.output}\n{result.exception!r}"
    )


@pytest.mark.slow
def test_postgresql_page(pg_url: str, demo_store: tuple[str, str]) -> None:
    """docs/postgresql.md's commands, on a PostgreSQL store, in separate processes as a shell
    would run them (the demo configures the process it runs in). Slow: the page's demo of 500
    calls and its month of copies, into PostgreSQL (~20 s)."""
    page = [e for e in ALL if e.page == "docs/postgresql.md"]
    assert page, "docs/postgresql.md shows no llmlog command"
    sqlite_db, _ = demo_store
    # The page's default store path and $LLMLOG_DB, as a shell would have expanded them.
    expand = {"~/.local/share/llmlog/llmlog.db": sqlite_db, "$LLMLOG_DB": pg_url}
    env = {k: v for k, v in os.environ.items() if k != "LLMLOG_URL"}
    env |= {"LLMLOG_DB": pg_url, "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for example in page:
        args = [expand.get(a, a) for a in shlex.split(example.command, comments=True)]
        done = subprocess.run(
            [sys.executable, "-c", "from llmlog.cli import cli; cli()", *args[1:]],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, f"{example}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
