"""One filter parser (llmlog.core.filters) for the web UI and the CLI: the same query selects the
same calls on the calls page's JSON twin and in `llmlog calls` / `llmlog export`, over both
stores, by tag, metadata, provider and free text as by the rest; a bad value is refused by
both, saying why."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from llmlog.cli import cli
from llmlog.core.filters import BadFilter, parse_filter
from tests.backends import Backend
from tests.webui import Running, make_call

# (UI query parameters, the same as CLI options)
QUERIES: list[tuple[list[tuple[str, str]], list[str]]] = [
    ([("tag", "beta")], ["--tag", "beta"]),
    ([("meta", "tier=pro")], ["--meta", "tier=pro"]),
    ([("meta", "tier=pro"), ("meta", "region=eu")], ["--meta", "tier=pro", "--meta", "region=eu"]),
    ([("meta", "llmlog.retry=1")], ["--meta", "llmlog.retry=1"]),
    ([("provider", "openai")], ["--provider", "openai"]),
    ([("q", "narwhal")], ["--search", "narwhal"]),
    ([("q", "narwhal"), ("provider", "anthropic")], ["--search", "narwhal", "--provider", "anthropic"]),
    ([("tag", "beta"), ("status", "error")], ["--tag", "beta", "--errors"]),
    ([("tag", "beta"), ("status", "ok"), ("feature", "support-bot")], ["--tag", "beta", "--successes",
                                                                         "--feature", "support-bot"]),
]  # fmt: skip


@pytest.fixture
def ui(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        calls = []
        for i in range(24):
            changes: dict = {
                "provider": "openai" if i % 3 == 0 else "anthropic",
                "tags": ["beta"] if i % 2 else ["stable"],
                "metadata": {"tier": "pro" if i % 4 == 1 else "free", "region": "eu" if i % 5 else "us"},
            }
            if i % 6 == 1:
                changes["metadata"]["llmlog"] = {"retry": 1}
            if i in (3, 5, 10):
                changes["messages"] = [{"role": "user", "content": f"the narwhal depot lost parcel {i}"}]
            if i % 7 == 0:
                changes["error"] = {"type": "overloaded_error", "status": 529}
                changes["response"] = None
            calls.append(make_call(i, **changes))
        running.store.insert(calls)
        yield running


def cli_run(backend: Backend, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", backend.url, *args], catch_exceptions=False)


@pytest.mark.parametrize(("params", "options"), QUERIES)
def test_the_cli_selects_the_calls_the_ui_does(
    ui: Running, backend: Backend, params: list[tuple[str, str]], options: list[str]
) -> None:
    page = ui.get("/api/calls", params=params)
    assert page.status_code == 200, page.text
    expected = [c["id"] for c in page.json()["calls"]]
    assert expected  # each query selects some calls, and not all of them
    assert len(expected) < 24
    listed = cli_run(backend, "calls", "--json", *options)
    assert listed.exit_code == 0, listed.output
    assert [c["id"] for c in json.loads(listed.stdout)] == expected
    exported = cli_run(backend, "export", *options)
    assert exported.exit_code == 0, exported.output
    assert sorted(json.loads(line)["id"] for line in exported.stdout.splitlines()) == sorted(expected)


def test_search_and_people_pages_take_every_meta(ui: Running, backend: Backend) -> None:
    """Two metadata conditions, both applied: the Search page and the people pages as the
    calls page (they read the query string through the same parser)."""
    both = [("meta", "region=eu"), ("meta", "tier=free")]
    found = ui.get("/api/search", params=[("q", "narwhal"), *both])
    assert found.status_code == 200, found.text
    ids = sorted(c["id"] for c in found.json()["calls"])
    assert ids == ["00000000-0000-0000-0000-000000000004"]  # call 3: not 5 (pro), not 10 (us)
    searched = cli_run(backend, "search", "narwhal", "--meta", "region=eu", "--meta", "tier=free", "--json")
    assert sorted(c["id"] for c in json.loads(searched.stdout)) == ids
    since = [("since", "2026-01-01")]
    calls = ui.get("/api/calls", params=[*since, *both]).json()["calls"]
    per_user: dict[str, int] = {}
    for c in calls:
        per_user[c["user_id"]] = per_user.get(c["user_id"], 0) + 1
    users = ui.get("/api/users", params=[*since, *both])
    assert users.status_code == 200, users.text
    assert {u["user_id"]: u["calls"] for u in users.json()["users"]} == per_user


def test_a_bad_filter_is_refused_by_both(ui: Running, backend: Backend) -> None:
    for params, options, said in [
        ({"meta": "tier"}, ["--meta", "tier"], "'tier' is not key=value"),
        ({"meta": "ti er=1"}, ["--meta", "ti er=1"], "letters, digits"),
        ({"since": "lately"}, ["--since", "lately"], "neither a duration"),
    ]:
        page = ui.get("/api/calls", params=params)
        assert page.status_code == 400 and said in page.json()["error"]
        result = CliRunner().invoke(cli, ["--db", backend.url, "calls", *options])
        assert result.exit_code == 2 and said in result.output


def test_the_parser_reads_one_value_or_many() -> None:
    f = parse_filter({"meta": ["a=1", "b.c=x=y"], "tag": "t", "q": "", "provider": None, "status": "ok"})
    assert f.metadata == [("a", "1"), ("b.c", "x=y")] and f.tag == "t" and f.text is None
    assert f.provider is None and f.errors is False
    assert parse_filter({"meta": "a=1"}).metadata == [("a", "1")]
    with pytest.raises(BadFilter, match="status must be"):
        parse_filter({"status": "maybe"})
