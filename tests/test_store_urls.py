"""Which store a --db names, said plainly: a sqlite:/// URL's path shown as the absolute path
it resolves to, and a reading command that finds no store (an empty file, a PostgreSQL schema
that does not exist or holds no tables) says so in one line and writes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result

from llmlog.store import open_store, redact_url
from tests.backends import admin, with_schema
from tests.test_cli_first_hour import llmlog, said_in_one_line


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(before)


def test_a_sqlite_url_is_shown_as_the_absolute_path_it_means(in_tmp: Path) -> None:
    # Three slashes, then the path as written (SQLAlchemy's form): relative to the cwd.
    assert redact_url("sqlite:///nu/rel.db") == str(in_tmp / "nu" / "rel.db")
    assert redact_url("sqlite:////tmp/abs.db") == "/tmp/abs.db"
    assert redact_url("rel.db") == str(in_tmp / "rel.db")
    assert redact_url("sqlite://") == ":memory:"


def test_no_store_names_the_resolved_path(in_tmp: Path) -> None:
    result = llmlog("calls", "--db", "sqlite:///tmp/nu/rel.db")
    assert result.exit_code == 1
    assert f"no store at {in_tmp}/tmp/nu/rel.db " in said_in_one_line(result)


def test_demo_says_where_it_wrote(in_tmp: Path) -> None:
    result = llmlog("demo", "--calls", "5", "--history", "0", "--db", "sqlite:///nu/rel.db")
    assert result.exit_code == 0, result.output
    assert (in_tmp / "nu" / "rel.db").exists()
    assert f"into {in_tmp}/nu/rel.db" in result.output


def test_the_help_shows_both_sqlite_url_forms() -> None:
    text = " ".join(llmlog("calls", "--help").output.split())
    assert "sqlite:///relative.db" in text and "sqlite:////absolute.db" in text


# ---------------------------------------------------------------- no store: said, nothing written


@pytest.mark.parametrize("args", [["calls"], ["report", "cost"], ["export"], ["query", "SELECT 1"]])
def test_an_empty_file_is_no_store_to_a_reading_command(args: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = llmlog(*args, "--db", str(empty))
    assert result.exit_code == 1
    assert f"no store at {empty} (an empty file" in said_in_one_line(result)
    assert empty.stat().st_size == 0


def test_a_writing_command_makes_a_store_in_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = llmlog("import", os.devnull, "--db", str(empty))
    assert result.exit_code == 0, result.output
    assert llmlog("calls", "--db", str(empty)).exit_code == 0


def test_copy_writes_nothing_into_an_empty_source(tmp_path: Path) -> None:
    source, target = tmp_path / "empty.db", tmp_path / "to.db"
    source.touch()
    result = llmlog("copy", "--from", str(source), "--to", str(target))
    assert result.exit_code == 1 and f"no store at {source} (an empty file" in said_in_one_line(result)
    assert source.stat().st_size == 0


def _tables(server: str, schema: str) -> int:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)).fetchone()
        return int(row[0]) if row else 0


def _said(result: Result) -> str:
    assert result.exit_code == 1, result.output
    return said_in_one_line(result)


def test_a_postgres_schema_that_does_not_exist_is_said(postgres_server: str) -> None:
    url = with_schema(postgres_server, "nu_absent_schema")
    line = _said(llmlog("calls", "--db", url))
    assert "schema nu_absent_schema does not exist" in line and "CREATE TABLE" not in line
    # A writing command cannot make it either, and says the same, not PostgreSQL's words.
    line = _said(llmlog("import", os.devnull, "--db", url))
    assert "schema nu_absent_schema does not exist" in line and "no schema has been selected" not in line


def test_a_reading_command_makes_no_tables_in_an_empty_schema(postgres_server: str) -> None:
    schema = "nu_empty_schema"
    admin(postgres_server, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin(postgres_server, f"CREATE SCHEMA {schema}")
    try:
        url = with_schema(postgres_server, schema)
        line = _said(llmlog("calls", "--db", url))
        assert f"no llmlog tables in schema {schema}" in line
        assert _tables(postgres_server, schema) == 0
    finally:
        admin(postgres_server, f"DROP SCHEMA {schema} CASCADE")


def test_a_reading_command_reads_a_postgres_store(pg_url: str) -> None:
    open_store(pg_url).close()  # made, as a writing command makes it
    result = llmlog("calls", "--db", pg_url)
    assert result.exit_code == 0 and "No calls match." in result.output
