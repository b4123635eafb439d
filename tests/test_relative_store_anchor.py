"""A relative SQLite path is the file in the directory the app was in when it configured
llmlog: an app (a daemon) that configures, then changes directory before its first call,
still writes there, not to a file of the same name in its new directory."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

import llmlog
from llmlog.core.filters import CallFilter
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import open_store


@pytest.mark.parametrize("db", ["calls.db", "sqlite:///calls.db"])
def test_a_relative_store_is_where_the_app_configured_it(
    tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, db: str
) -> None:
    configured, later = tmp_path / "configured", tmp_path / "later"
    configured.mkdir()
    later.mkdir()
    monkeypatch.chdir(configured)
    llmlog.configure(db=db)
    monkeypatch.chdir(later)  # a daemon's chdir, before its first call
    client = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert llmlog.flush(timeout=20)
    llmlog.configure(db=str(tmp_path / "other.db"))
    assert not (later / "calls.db").exists(), "written where the app went, not where it configured"
    with open_store(str(configured / "calls.db")) as store:
        assert store.count(CallFilter()) == 1


@pytest.mark.parametrize("db", ["", " ", ".", "sqlite:///.", "{tmp}"])
def test_a_store_that_is_no_file_is_an_error_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str
) -> None:
    # Each was taken as the working directory (or the directory named), and every batch
    # then failed to open it: the calls waited, retried, and were lost at exit.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="db"):
        llmlog.configure(db=db.format(tmp=tmp_path))
