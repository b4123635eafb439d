"""Prompt versions: files in the app's repository, `llmlog.prompt`, the version calls carry
(registered text, or a stable hash of unregistered text), and `llmlog prompts list/diff`."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest
from click.testing import CliRunner

import llmlog
from llmlog.cli import cli
from llmlog.core import prompts
from llmlog.core.config import Settings
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.pipeline.intake import prepare
from llmlog.store import open_store
from tests.conftest import Recorder

V1 = "You review code.\nBe kind.\n"
V2 = "You review code.\nBe brief.\nCite the lines.\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "prompts"
    (root / "code-review").mkdir(parents=True)
    (root / "code-review" / "v1.txt").write_text(V1)
    (root / "code-review" / "v2.txt").write_text(V2)
    (root / "code-review" / "v10.txt").write_text("ten")
    (root / "code-review" / "current").write_text("v2\n")
    (root / "summarize").mkdir()
    (root / "summarize" / "v1.md").write_text("Summarize.")
    (root / "summarize" / "notes.json").write_text("{}")  # not a version
    (root / "empty").mkdir()
    return root


def test_the_current_version_and_its_label(repo: Path) -> None:
    p = llmlog.prompt("code-review", repo)
    assert p == V2 and isinstance(p, str) and p.version == "code-review@v2" and p.name == "code-review"
    (repo / "code-review" / "current").unlink()  # without a pointer: the newest, naturally sorted
    assert llmlog.prompt("code-review", repo).version == "code-review@v10"
    assert llmlog.prompt("summarize", repo).version == "summarize@v1"
    assert [(v.name, v.versions) for v in prompts.catalog(repo)] == [
        ("code-review", ["v1", "v2", "v10"]),
        ("summarize", ["v1"]),
    ]
    (repo / "code-review" / "current").write_text("v9")
    with pytest.raises(LookupError, match="names a version that is not there"):
        llmlog.prompt("code-review", repo)
    with pytest.raises(LookupError, match="no prompt 'nope'"):
        llmlog.prompt("nope", repo)
    with pytest.raises(LookupError, match="no version 'v3'"):
        prompts.read("code-review", "v3", repo)


def test_calls_made_with_a_prompt_carry_its_version(
    repo: Path, recorder: Recorder, fake: FakeProvider
) -> None:
    sdk = anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=0)
    client = llmlog.wrap(sdk)
    system = llmlog.prompt("code-review", repo)

    def ask(**kw: object) -> None:
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=20, messages=[{"role": "user", "content": "x"}], **kw
        )

    ask(system=system)
    ask(system=str(V2))  # the same text reaching the SDK another way is the same version
    ask(system="Ad hoc prompt.")  # text that is no version: a stable hash of it
    ask(system="Ad hoc prompt.")
    ask()  # no system prompt: no version
    with llmlog.context(prompt_template_version="mine@7"):  # one given by hand wins
        ask(system=system)
    versions = [c.prompt_template_version for c in recorder.calls()]
    ad_hoc = prompts.text_hash("Ad hoc prompt.")
    assert versions == ["code-review@v2", "code-review@v2", ad_hoc, ad_hoc, None, "mine@7"]


def test_the_prompts_directory_versions_calls_by_their_text(repo: Path) -> None:
    # A writer loads the app's directory: the text of v1, sent by code that never called
    # llmlog.prompt, is v1.
    registry = prompts.Registry()
    registry.load(repo)
    assert registry.version_of(V1) == "code-review@v1"
    assert registry.version_of(V1 + " ") == prompts.text_hash(V1 + " ")  # near-miss: not v1
    settings = Settings(db=":memory:", prompts=str(repo))
    prompts.REGISTRY.load(settings.prompts)
    call = prepare(Call(model="m", system_prompt="Summarize."), settings, None)
    assert call.prompt_template_version == "summarize@v1"
    assert prepare(Call(model="m"), settings, None).prompt_template_version is None


def test_cli_lists_and_diffs(repo: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert([Call(model="m", prompt_template_version="code-review@v2") for _ in range(3)])
    runner = CliRunner()
    listed = runner.invoke(cli, ["--db", db, "prompts", "list", "--dir", str(repo)]).output
    assert "v2 (current)" in listed and "v10" in listed and "summarize" in listed
    row = next(line for line in listed.splitlines() if "v2 (current)" in line)
    assert row.split()[-2] == "3"
    diff = runner.invoke(cli, ["prompts", "diff", "code-review", "v1", "v2", "--dir", str(repo)]).output
    assert "-Be kind." in diff and "+Be brief." in diff and "+Cite the lines." in diff
    assert " You review code." in diff
    same = runner.invoke(cli, ["prompts", "diff", "code-review", "v2", "v2", "--dir", str(repo)]).output
    assert "same text" in same
    bad = runner.invoke(cli, ["prompts", "diff", "code-review", "v1", "v7", "--dir", str(repo)])
    assert bad.exit_code == 1 and "no version 'v7'" in bad.output
    # No files: the versions the calls carry (tests/test_names.py).
    filed = runner.invoke(cli, ["--db", db, "prompts", "list", "--dir", str(tmp_path / "none")])
    assert filed.exit_code == 0 and "No prompt files in" in filed.output and "code-review" in filed.output
