"""Names given to `llmlog report compare` and `llmlog prompts` after a small demo: the short
version names `prompts` uses work in `report compare`, an unknown feature, prompt or version
is an error naming the known ones (never an empty answer), and the demo leaves the prompts
folder `prompts list` and `prompts diff` read, from the directory it ran in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.traffic import write_prompts
from llmlog.store import open_store


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`llmlog demo` run in an empty directory, as someone trying llmlog would: no
    LLMLOG_PROMPTS, so its prompts go to ./prompts there."""
    here = tmp_path_factory.mktemp("first-hour")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        mp.delenv("LLMLOG_PROMPTS", raising=False)
        mp.setenv("LLMLOG_PRICES", "")
        result = CliRunner().invoke(
            cli, ["--db", str(here / "demo.db"), "demo", "--calls", "120", "--history", "0"]
        )
        assert result.exit_code == 0, result.output
        yield here


def run(here: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(here / "demo.db"), *args])


def cells(table: str) -> list[tuple[str, ...]]:
    """The rows of a rich table, each as its cells' text (the header's rules are heavier)."""
    rows = [
        tuple(c.strip() for c in line.strip().strip("│").split("│"))
        for line in table.splitlines()
        if "│" in line
    ]
    return rows


def in_demo(here: Path, *args: str) -> Result:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        mp.delenv("LLMLOG_PROMPTS", raising=False)
        return run(here, *args)


def test_compare_takes_the_short_version_names(demo: Path) -> None:
    short = run(demo, "report", "compare", "code-review", "v1", "v2", "--json")
    assert short.exit_code == 0, short.output
    long = run(demo, "report", "compare", "code-review", "code-review@v1", "code-review@v2", "--json")
    assert json.loads(short.stdout) == json.loads(long.stdout)
    compared = json.loads(short.stdout)
    assert (compared["old"], compared["new"]) == ("code-review@v1", "code-review@v2")
    tokens = next(m for m in compared["metrics"] if m["metric"] == "output_tokens")
    assert tokens["n_before"] > 0 and tokens["n_after"] > 0  # calls on each side, not 0 → 0
    table = run(demo, "report", "compare", "code-review", "v1", "v2")
    assert table.exit_code == 0 and "0 calls → 0 calls" not in table.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["code-review", "v1", "v9"], ["no prompt version 'v9'", "code-review@v1, code-review@v2"]),
        (["code-review", "v0", "v2"], ["no prompt version 'v0'"]),
        (["code-reveiw", "v1", "v2"], ["no calls of feature 'code-reveiw'", "code-review", "support-bot"]),
        (["code-reveiw", "--at", "1h"], ["no calls of feature 'code-reveiw'"]),
    ],
)
def test_compare_refuses_unknown_names_naming_the_known_ones(
    demo: Path, args: list[str], said: list[str]
) -> None:
    result = run(demo, "report", "compare", *args)
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert all(s in message for s in said), message
    assert len(result.output.strip().splitlines()) == 1


def test_prompts_list_and_diff_after_the_demo(demo: Path) -> None:
    assert (demo / "prompts" / "code-review" / "current").read_text().strip() == "v2"
    listed = in_demo(demo, "prompts", "list")
    assert listed.exit_code == 0, listed.output
    rows = {
        (name, version.removesuffix(" (current)")): int(n.replace(",", ""))
        for name, version, n in cells(listed.stdout)
    }
    assert {("code-review", "v1"), ("code-review", "v2"), ("support-bot", "v4")} <= set(rows)
    with open_store(str(demo / "demo.db")) as store:
        v1 = store.count(CallFilter(prompt_template_version="code-review@v1"))
    assert rows[("code-review", "v1")] == v1 > 0
    diff = in_demo(demo, "prompts", "diff", "code-review", "v1", "v2")
    assert diff.exit_code == 0, diff.output
    assert diff.output.startswith("--- v1") or "--- code-review@v1" in diff.output
    assert any(line.startswith("+") and not line.startswith("+++") for line in diff.output.splitlines())
    same = in_demo(demo, "prompts", "diff", "code-review", "code-review@v2", "v2")
    assert same.exit_code == 0 and "same text" in same.output
    bad = in_demo(demo, "prompts", "diff", "code-review", "v1", "v9")
    assert bad.exit_code == 1 and "no version 'v9'" in bad.output and "v1, v2" in bad.output
    unknown = in_demo(demo, "prompts", "diff", "code-reveiw", "v1", "v2")
    message = " ".join(unknown.output.split())
    assert unknown.exit_code == 1 and "no prompt 'code-reveiw'" in message and "code-review" in message


def test_prompts_list_without_files_lists_the_versions_the_store_knows(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    none = str(tmp_path / "no-prompts")
    open_store(db).close()  # a store, with no calls yet
    empty = CliRunner().invoke(cli, ["--db", db, "prompts", "list", "--dir", none])
    assert empty.exit_code == 1 and "no prompts" in empty.output
    with open_store(db) as store:
        versions = ["code-review@v2"] * 3 + ["code-review@v10", "support-bot@v4", "a1b2c3d4e5f6"]
        store.insert([Call(model="m", prompt_template_version=v) for v in versions])
    listed = CliRunner().invoke(cli, ["--db", db, "prompts", "list", "--dir", none])
    assert listed.exit_code == 0, listed.output
    assert cells(listed.stdout) == [
        ("code-review", "v2", "3"),
        ("code-review", "v10", "1"),
        ("support-bot", "v4", "1"),
    ]
    assert "No prompt files in" in listed.stderr


def test_the_demo_leaves_a_prompt_folder_that_is_there_alone(tmp_path: Path) -> None:
    (tmp_path / "code-review").mkdir()
    (tmp_path / "code-review" / "v1.txt").write_text("the app's own")
    written, kept = write_prompts({("code-review", "v1"): "demo", ("summarize", "v7"): "sum"}, tmp_path)
    assert (written, kept) == (["summarize"], ["code-review"])
    assert (tmp_path / "code-review" / "v1.txt").read_text() == "the app's own"
    assert not (tmp_path / "code-review" / "current").exists()
    assert (tmp_path / "summarize" / "current").read_text() == "v7\n"
