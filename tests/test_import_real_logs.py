"""`llmlog import` of logs as they really are, through the real CLI into a real SQLite store:
bytes that are not UTF-8, nesting too deep for the parser, string errors, numbers as text,
fields we have no column for, JSON arrays and pretty-printed files, directories of files."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.store.sqlite import connect as sqlite_connect
from llmlog.store.sqlite.store import SQLiteStore


def invoke(db: str, *args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", db, *args], input=input)


def all_calls(db: str) -> list[Call]:
    with SQLiteStore(db) as store:
        return list(store.iter_calls(CallFilter()))


def count(db: str) -> int:
    with sqlite_connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


def line(model: str, hour: int = 10, **more: object) -> str:
    return json.dumps({"timestamp": f"2026-03-01T{hour:02d}:00:00Z", "model": model, **more})


def no_crash(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- bad input never crashes


def test_invalid_utf8_is_that_lines_error(tmp_path: Path) -> None:
    """BUG: the file was opened as UTF-8 text; one bad byte raised UnicodeDecodeError out of the
    loop and the import ended with a traceback, storing nothing."""
    path = tmp_path / "latin1.jsonl"
    bad = line("cafe").encode().replace(b"cafe", b"caf\xe9")  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join([line("a", 8).encode(), bad, line("b", 9).encode(), b""]))
    db = str(tmp_path / "utf8.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert result.exit_code == 1
    assert re.search(rf"{re.escape(str(path))}:2: invalid UTF-8: byte 0xe9 at column \d+", result.stderr)
    assert "Imported 2 new call(s) from 2 good line(s); 1 bad line(s) skipped" in result.stderr
    assert [c.model for c in all_calls(db)] == ["a", "b"]


def test_deep_nesting_is_that_lines_error(tmp_path: Path) -> None:
    """BUG: 5,000 levels of nesting raised RecursionError out of json.loads and the import ended
    with a traceback, storing nothing."""
    deep = '{"timestamp": "2026-03-01T10:00:00Z", "metadata": {"x": ' + "[" * 5000 + "]" * 5000 + "}}"
    for first in (False, True):  # the first line of a file also decides its format
        path = tmp_path / f"deep-{first}.jsonl"
        rows = [deep, line("a", 8), line("b", 9)] if first else [line("a", 8), deep, line("b", 9)]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        db = str(tmp_path / f"deep-{first}.db")
        result = invoke(db, "import", str(path))
        no_crash(result)
        assert result.exit_code == 1
        assert f"{path}:{1 if first else 2}: invalid JSON: nested too deeply" in result.stderr
        assert [c.model for c in all_calls(db)] == ["a", "b"]


def test_deep_nesting_in_a_json_array_is_reported_by_its_line(tmp_path: Path) -> None:
    """Only the deep record is lost: where it ends is found without the parser."""
    path = tmp_path / "deep.json"
    deep = (
        '{"timestamp": "2026-03-01T10:00:00Z", "system_prompt": "a ] in \\" text [", "metadata": {"x": '
        + "[" * 5000
        + "]" * 5000
        + "}}"
    )
    path.write_text("[\n" + line("a", 8) + ",\n" + deep + ",\n" + line("b", 9) + "\n]\n", encoding="utf-8")
    db = str(tmp_path / "deep-array.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert result.exit_code == 1
    assert f"{path}:3: invalid JSON: nested too deeply\n" in result.stderr
    assert "1 bad line(s) skipped" in result.stderr
    assert [c.model for c in all_calls(db)] == ["a", "b"]


# ---------------------------------------------------------------- what real logs hold


def test_string_error_is_taken_as_its_message(tmp_path: Path) -> None:
    """BUG: "error": "timeout" was rejected (error: expected a JSON object, got str)."""
    path = tmp_path / "errors.jsonl"
    path.write_text(
        "\n".join([line("a", 8, error="timeout"), line("b", 9, error=""), line("c", 10, error={"type": "x"})])
        + "\n",
        encoding="utf-8",
    )
    db = str(tmp_path / "errors.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert result.exit_code == 0, result.stderr
    assert [c.error for c in all_calls(db)] == [{"message": "timeout"}, None, {"type": "x"}]
    errors = invoke(db, "calls", "--errors", "--json")
    assert [c["model"] for c in json.loads(errors.stdout)] == ["c", "a"]


def test_numbers_written_as_strings_are_numbers(tmp_path: Path) -> None:
    """BUG: "input_tokens": "123" was rejected (expected a non-negative integer, got '123')."""
    rows = [
        line("a", 8, input_tokens="123", output_tokens=" 7 ", cost_usd="0.05", latency_ms="850"),
        line("b", 9, latency_ms="fast"),  # 2: not a number
        line("c", 10, input_tokens="12.5"),  # 3: a number, not a whole one
        line("d", 11, first_token_ms="1e999"),  # 4: out of range
        line("e", 12, output_tokens="1_000"),  # 5: Python reads it; no log means it
    ]
    path = tmp_path / "strings.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    db = str(tmp_path / "strings.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert result.exit_code == 1
    assert f"{path}:2: latency_ms: not a number: 'fast'" in result.stderr
    assert f"{path}:3: input_tokens: expected a non-negative integer, got '12.5'" in result.stderr
    assert f"{path}:4: first_token_ms: '1e999' is out of range" in result.stderr
    assert f"{path}:5: output_tokens: not a number: '1_000'" in result.stderr
    (call,) = all_calls(db)
    assert (call.input_tokens, call.output_tokens, call.cost_usd, call.latency_ms) == (123, 7, 0.05, 850.0)
    with sqlite_connect(db) as conn:
        assert conn.execute("SELECT typeof(input_tokens), typeof(cost_usd) FROM calls").fetchone() == (
            "integer",
            "real",
        )


def test_unknown_fields_are_kept_in_metadata_and_counted_once(tmp_path: Path) -> None:
    """BUG: a line with a field we have no column for was rejected whole (unknown field(s))."""
    rows = [
        line("a", 8, request_id="r-1", env="prod"),
        line("b", 9, metadata={"tier": "free"}, request_id="r-2"),
        line("c", 10),
        line("d", 11, metadata={"import_extra": {"old": 1}}, region="eu"),
    ]
    path = tmp_path / "extra.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    db = str(tmp_path / "extra.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("import_extra") == 1
    assert "3 line(s) had fields llmlog has no column for: kept in metadata.import_extra" in result.stderr
    assert [c.metadata for c in all_calls(db)] == [
        {"import_extra": {"request_id": "r-1", "env": "prod"}},
        {"tier": "free", "import_extra": {"request_id": "r-2"}},
        None,
        {"import_extra": {"old": 1, "region": "eu"}},
    ]
    with sqlite_connect(db) as conn:
        found = conn.execute("SELECT model FROM calls WHERE metadata->>'$.import_extra.request_id' = 'r-2'")
        assert found.fetchall() == [("b",)]


def test_import_help_documents_the_leniency() -> None:
    result = CliRunner().invoke(cli, ["import", "--help"])
    text = " ".join(result.output.split())
    assert "import_extra" in text and '"error": "timeout"' in text and "llmlog import ~/llm-logs/" in text


# ---------------------------------------------------------------- file layouts


def test_json_array_and_pretty_printed_files(tmp_path: Path) -> None:
    """BUG: a JSON array file or a pretty-printed one was read line by line: every line bad."""
    calls = [json.loads(line(m, h)) for m, h in (("a", 8), ("b", 9))]
    one_line = tmp_path / "one-line.json"
    one_line.write_text(json.dumps(calls), encoding="utf-8")
    pretty_array = tmp_path / "pretty-array.json"
    pretty_array.write_text(json.dumps([*calls, [1], json.loads(line("c", 10))], indent=2), encoding="utf-8")
    pretty_object = tmp_path / "pretty-object.json"
    pretty_object.write_text(json.dumps(calls[0], indent=4) + "\n", encoding="utf-8")
    concatenated = tmp_path / "jq.json"  # what `jq . < file.jsonl` prints
    concatenated.write_text("".join(json.dumps(c, indent=2) + "\n" for c in calls), encoding="utf-8")

    db = str(tmp_path / "arrays.db")
    result = invoke(db, "import", str(one_line))
    no_crash(result)
    assert result.exit_code == 0, result.stderr
    assert [c.model for c in all_calls(db)] == ["a", "b"]

    result = invoke(db, "import", str(pretty_array))
    no_crash(result)
    assert result.exit_code == 1
    # The array's third element starts on line 10 of the indented file.
    assert f"{pretty_array}:10: expected a JSON object, got list" in result.stderr
    # The same records laid out differently get the same ids: stored once.
    assert "Imported 1 new call(s) from 3 good line(s), 2 already stored" in result.stderr

    for path in (pretty_object, concatenated):
        result = invoke(db, "import", str(path))
        no_crash(result)
        assert result.exit_code == 0, result.stderr
        assert "Imported 0 new call(s)" in result.stderr
    assert [c.model for c in all_calls(db)] == ["a", "b", "c"]


def test_broken_json_document_reports_where_and_keeps_what_came_before(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(
        "[\n" + line("a", 8) + ",\n" + line("b", 9) + ",\n" + '{"timestamp": \n', encoding="utf-8"
    )
    db = str(tmp_path / "broken.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert result.exit_code == 1
    assert re.search(
        rf"{re.escape(str(path))}:[45]: invalid JSON: .*the rest of the file was not read", result.stderr
    )
    assert [c.model for c in all_calls(db)] == ["a", "b"]


def test_invalid_utf8_inside_a_json_array_rejects_that_record_only(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    bad = line("cafe", 9).encode().replace(b"cafe", b"caf\xe9")
    path.write_bytes(
        b"[\n" + line("a", 8).encode() + b",\n" + bad + b",\n" + line("b", 10).encode() + b"\n]\n"
    )
    db = str(tmp_path / "array-utf8.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert result.exit_code == 1
    assert f"{path}:3: invalid UTF-8 in this record" in result.stderr
    assert [c.model for c in all_calls(db)] == ["a", "b"]


def test_a_directory_of_per_day_files_in_name_order_with_one_summary(tmp_path: Path) -> None:
    """BUG: import took one file; `llmlog import ~/llm-logs/` was a usage error."""
    logs = tmp_path / "llm-logs"
    logs.mkdir()
    (logs / "2026-03-02.jsonl").write_text(line("day2") + "\n" + "{oops\n", encoding="utf-8")
    (logs / "2026-03-01.jsonl").write_text(line("day1") + "\n" + line("day1", request="x") + "\n")
    (logs / "2026-03-03.json").write_text(json.dumps([json.loads(line("day3"))]), encoding="utf-8")
    (logs / "notes.txt").write_text("not a log\n", encoding="utf-8")
    (logs / "sub").mkdir()
    (logs / "sub" / "2026-03-04.jsonl").write_text(line("nested") + "\n", encoding="utf-8")
    db = str(tmp_path / "dir.db")
    result = invoke(db, "import", str(logs))
    no_crash(result)
    assert result.exit_code == 1
    assert f"{logs / '2026-03-02.jsonl'}:2: invalid JSON" in result.stderr
    assert "Imported 4 new call(s) from 4 good line(s) in 3 files; 1 bad line(s) skipped" in result.stderr
    assert result.stderr.count("Imported") == 1
    assert result.stderr.count("importing") == 1  # one progress bar
    assert "1 line(s) had fields" in result.stderr
    assert sorted(c.model for c in all_calls(db)) == ["day1", "day1", "day2", "day3"]

    # Several files, named on the command line.
    other = str(tmp_path / "files.db")
    result = invoke(other, "import", str(logs / "2026-03-03.json"), str(logs / "2026-03-01.jsonl"))
    no_crash(result)
    assert result.exit_code == 0, result.stderr
    assert "Imported 3 new call(s) from 3 good line(s) in 2 files" in result.stderr


def test_a_directory_without_logs_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke(str(tmp_path / "x.db"), "import", str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "no .jsonl, .ndjson, .json files" in result.stderr


def test_bad_lines_listed_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "many-bad.jsonl"
    path.write_text("".join("not json\n" for _ in range(80)) + line("ok") + "\n", encoding="utf-8")
    db = str(tmp_path / "cap.db")
    result = invoke(db, "import", str(path))
    no_crash(result)
    assert len(re.findall(rf"^{re.escape(str(path))}:\d+: invalid JSON", result.stderr, flags=re.M)) == 50
    assert "… and 30 more bad line(s)" in result.stderr
    assert "Imported 1 new call(s) from 1 good line(s); 80 bad line(s) skipped" in result.stderr


def test_stdin_is_read_as_bytes_too(tmp_path: Path) -> None:
    data = b"\n".join([line("a", 8).encode(), b'{"timestamp": "\xff"}', line("b", 9).encode(), b""])
    db = str(tmp_path / "stdin.db")
    result = invoke(db, "import", "-", input=data)
    no_crash(result)
    assert "<stdin>:2: invalid UTF-8" in result.stderr
    assert [c.model for c in all_calls(db)] == ["a", "b"]
    assert count(db) == 2
