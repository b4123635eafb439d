"""The `llmlog` command as a new user meets it: --db wherever it is typed, a mistyped store
said rather than made, expected errors in one line, odd values refused, no `None` shown."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.core.record import Call
from llmlog.store import open_store
from tests.test_cli import ERROR_ID, MAIN_ID, build_small


def llmlog(*args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
    # Exceptions are not caught: a traceback the CLI would print fails the test.
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_small(tmp_path_factory.mktemp("small") / "small.db")


def said_in_one_line(result: Result) -> str:
    """The one line an expected error is said in: `Error: …`, no usage text, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# ---------------------------------------------------------------- --db after the command's name


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command and group under `llmlog`."""
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


ALL_COMMANDS = sorted(commands())


def test_the_tree_is_walked() -> None:
    assert {("calls",), ("retention", "show"), ("keys", "sensitive-metadata", "add")} <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_takes_db_and_shows_it(path: tuple[str, ...], tmp_path: Path) -> None:
    # --help is acted on after every option is read: an unknown --db would be refused first.
    db = str(tmp_path / "any.db")
    result = llmlog(*path, "--db", db, "--reader-db", "postgresql://reader@127.0.0.1/x", "--help")
    assert result.exit_code == 0, result.output
    assert "--db PATH|URL" in result.output and "--reader-db URL" in result.output
    assert not Path(db).exists()


def test_a_command_added_later_takes_db_too(small: str) -> None:
    @cli.command(name="test-added")
    @click.pass_obj
    def added(ctx: object) -> None:
        click.echo(ctx.settings.db)  # type: ignore[attr-defined]

    try:
        result = llmlog("test-added", "--db", small)
        assert result.exit_code == 0 and result.output.strip() == small
    finally:
        del cli.commands["test-added"]


def test_db_after_the_command_is_used_and_wins(small: str, tmp_path: Path) -> None:
    elsewhere = str(tmp_path / "elsewhere.db")
    open_store(elsewhere).close()  # an empty store: "No calls match."
    ids = [c["id"] for c in json.loads(llmlog("calls", "--db", small, "--json").stdout)]
    assert MAIN_ID in ids
    # The command's --db wins over the group's, and over LLMLOG_DB.
    result = llmlog("--db", elsewhere, "calls", "--db", small, "--json", env={"LLMLOG_DB": elsewhere})
    assert MAIN_ID in [c["id"] for c in json.loads(result.stdout)]
    result = llmlog("--db", small, "calls", "--db", elsewhere, "--json")
    assert json.loads(result.stdout) == []
    # LLMLOG_DB alone still names the store.
    result = llmlog("calls", "--json", env={"LLMLOG_DB": small})
    assert MAIN_ID in [c["id"] for c in json.loads(result.stdout)]
    # In a group of groups, too.
    result = llmlog("retention", "show", "--db", small)
    assert result.exit_code == 0 and "calls" in result.output
    result = llmlog("keys", "sensitive-metadata", "show", "--db", small)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- a store that is not there

READING = [
    ["calls"],
    ["sample"],
    ["show", "3f2a"],
    ["export"],
    ["reprice"],
    ["delete", "--user", "u1", "--yes"],
    ["audit"],
    ["retention", "show"],
    ["retention", "run"],
    ["report", "errors"],
    ["report", "cost"],
    ["search", "refund"],
    ["accounts", "list"],
    ["tokens", "list"],
    ["keys", "status"],
    ["keys", "sensitive-metadata", "show"],
]


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_reading_command_says_the_store_is_not_there(command: list[str], tmp_path: Path) -> None:
    typo = tmp_path / "no-such-folder" / "calls.db"
    for args in (["--db", str(typo), *command], [*command, "--db", str(typo)]):
        result = llmlog(*args)
        assert result.exit_code != 0
        assert f"no store at {typo}" in said_in_one_line(result)
    assert not typo.parent.exists()  # neither the store nor its folder was made


def test_an_embedded_clickhouse_store_that_is_not_there_is_said(tmp_path: Path) -> None:
    typo = tmp_path / "no-such-folder" / "chdb"
    result = llmlog("calls", "--db", f"chdb://{typo}")
    assert result.exit_code == 1 and f"no store at {typo}" in said_in_one_line(result)
    assert not typo.parent.exists()


def test_writing_commands_make_the_store(tmp_path: Path) -> None:
    records = tmp_path / "calls.jsonl"
    records.write_text(json.dumps({"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1"}) + "\n")
    for command in (
        ["migrate"],
        ["import", str(records)],
        ["retention", "set", "--days", "30"],
        ["accounts", "add", "ann", "--role", "admin", "--password-stdin"],
    ):
        db = tmp_path / command[0] / "new.db"
        result = llmlog("--db", str(db), *command, input="correct horse battery\n")
        assert result.exit_code == 0, (command, result.output)
        assert db.exists()


def test_a_postgres_database_that_is_not_there_is_one_line(postgres_server: str) -> None:
    url = f"{postgres_server.rsplit('/', 1)[0]}/llmlog_no_such_database"
    for command in (["calls"], ["migrate"]):
        result = llmlog("--db", url, *command)
        assert result.exit_code == 1
        assert "does not exist" in said_in_one_line(result)


# ---------------------------------------------------------------- expected errors in one line


@pytest.mark.parametrize("command", [["reprice"], ["show", MAIN_ID]], ids=" ".join)
def test_a_bad_or_missing_price_file_is_one_line(command: list[str], small: str, tmp_path: Path) -> None:
    not_toml = tmp_path / "prices.toml"
    not_toml.write_text("[[model]\nmatch = ")
    for prices, said in (
        (not_toml, "prices.toml"),
        (tmp_path / "missing.toml", "missing.toml: No such file or directory"),
        (tmp_path, "Is a directory"),
    ):
        result = llmlog("--db", small, *command, env={"LLMLOG_PRICES": str(prices)})
        assert result.exit_code == 1
        assert said in said_in_one_line(result)


def test_a_bad_price_file_given_to_reprice_is_one_line(small: str, tmp_path: Path) -> None:
    not_toml = tmp_path / "prices.toml"
    not_toml.write_text("[[model]]\nmatch = 'x'\ninput_mtok = 'cheap'\n")
    result = llmlog("--db", small, "reprice", "--prices", str(not_toml))
    assert result.exit_code == 1 and "prices.toml" in said_in_one_line(result)


def test_a_price_file_being_read_import_fails_in_one_line(tmp_path: Path) -> None:
    records = tmp_path / "calls.jsonl"
    records.write_text(json.dumps({"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1"}) + "\n")
    missing = tmp_path / "missing.toml"
    result = llmlog(
        "--db", str(tmp_path / "s.db"), "import", str(records), env={"LLMLOG_PRICES": str(missing)}
    )
    assert result.exit_code == 1 and "missing.toml" in said_in_one_line(result)


def test_a_file_that_cannot_be_written_is_one_line(small: str, tmp_path: Path) -> None:
    result = llmlog("--db", small, "export", "-o", str(tmp_path / "no-such-folder" / "out.jsonl"))
    assert result.exit_code == 1 and "No such file or directory" in said_in_one_line(result)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_price_file_that_may_not_be_read_is_one_line(small: str, tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text("")
    prices.chmod(0)
    result = llmlog("--db", small, "reprice", env={"LLMLOG_PRICES": str(prices)})
    assert result.exit_code == 1 and "Permission denied" in said_in_one_line(result)


def test_a_bad_store_url_or_setting_is_one_line(tmp_path: Path) -> None:
    result = llmlog("--db", "mysql://localhost/calls", "calls")
    assert result.exit_code == 2 and "unsupported store URL scheme 'mysql'" in said_in_one_line(result)
    result = llmlog("calls", "--db", str(tmp_path / "s.db"), env={"LLMLOG_REDACT": "emial"})
    assert result.exit_code == 2 and "unknown redaction rule 'emial'" in said_in_one_line(result)


def test_a_bug_still_shows_its_traceback() -> None:
    @cli.command(name="test-bug")
    def bug() -> None:
        raise KeyError("a bug")

    try:
        with pytest.raises(KeyError, match="a bug"):
            llmlog("test-bug")
    finally:
        del cli.commands["test-bug"]


# ---------------------------------------------------------------- odd values


@pytest.mark.parametrize(
    "args",
    [
        ["calls", "-n", "-5"],
        ["calls", "-n", "0"],
        ["sample", "-n", "0"],
        ["audit", "-n", "-1"],
        ["report", "errors", "--days", "0"],
        ["report", "cost", "--days", "-3"],
        ["report", "spikes", "--days", "0"],
        ["report", "drift", "--days", "0"],
        ["report", "drift", "--baseline", "-1"],
        ["report", "compare", "math", "math@v1", "math@v2", "--days", "0"],
        ["report", "compare", "math", "math@v1", "math@v2", "--pairs", "-1"],
        ["demo", "--calls", "0"],
        ["demo", "--history", "-1"],
        ["serve", "--port", "70000"],
        ["query", "--limit", "-5", "SELECT id FROM calls"],
        ["query", "--limit", "0", "SELECT id FROM calls"],
        ["query", "--timeout", "-1", "SELECT id FROM calls"],
    ],
    ids=" ".join,
)
def test_counts_and_day_windows_must_make_sense(args: list[str], small: str) -> None:
    result = llmlog("--db", small, *args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


# ---------------------------------------------------------------- show


def test_show_of_a_failed_call_shows_no_none(small: str) -> None:
    result = llmlog("--db", small, "show", ERROR_ID)
    assert result.exit_code == 0
    assert "None" not in result.stdout
    assert "in - (cache read -, cache write -), out -" in result.stdout


def test_show_of_tools_and_tool_calls_without_names_shows_no_none(tmp_path: Path) -> None:
    db = str(tmp_path / "tools.db")
    call = Call(
        id="70010000-1111-4222-8333-000000000001",
        model="gpt-4.1",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "web_search"}],
        tool_calls=[{"input": {"city": "Oslo"}}],
    )
    with open_store(db) as store:
        store.insert([call])
    result = llmlog("--db", db, "show", call.id)
    assert result.exit_code == 0 and "None" not in result.stdout, result.stdout


def test_copy_from_a_store_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    result = llmlog("copy", "--from", str(typo), "--to", str(tmp_path / "to.db"))
    assert result.exit_code == 2 and "--from: no such file" in said_in_one_line(result)
    assert not typo.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_file_import_may_not_read_is_one_line(tmp_path: Path) -> None:
    records = tmp_path / "calls.jsonl"
    records.write_text(json.dumps({"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1"}) + "\n")
    records.chmod(0)
    result = llmlog("--db", str(tmp_path / "s.db"), "import", str(records))
    assert result.exit_code == 1 and "Permission denied" in said_in_one_line(result)


@pytest.mark.parametrize("command", [["demo", "--calls", "5", "--history", "0"], ["wrap", "--", "true"]])
def test_commands_recording_calls_read_the_price_file_first(command: list[str], tmp_path: Path) -> None:
    # Read at the first call to price, a bad file lost every call, a traceback each, and exit 0.
    not_toml = tmp_path / "prices.toml"
    not_toml.write_text("[[model]\nmatch = ")
    db = tmp_path / "calls.db"
    result = llmlog("--db", str(db), *command, env={"LLMLOG_PRICES": str(not_toml)})
    assert result.exit_code == 1 and "prices.toml" in said_in_one_line(result)
    assert not db.exists()
