"""Values past what a date, a count or a LIKE pattern can hold: refused in one line on the
command line (non-zero exit) and with a 400 in the web UI, never a traceback or a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmlog.cli.core import MAX_COUNT, MAX_DAYS
from llmlog.core.filters import MAX_TEXT, parse_when
from tests.backends import Backend
from tests.test_cli_first_hour import llmlog, said_in_one_line, small  # noqa: F401 (a fixture)
from tests.webui import Running, make_call

TOO_FAR_BACK = ["1000000d", "100000000h", "99999999999d", "9" * 400 + "d", "0001-01-01T00:00:00+01:00"]


@pytest.mark.parametrize("text", TOO_FAR_BACK)
def test_a_time_off_the_calendar_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="calendar"):
        parse_when(text)


@pytest.mark.parametrize(
    "args",
    [
        ["calls", "--since", "1000000d"],
        ["calls", "--since", "100000000h"],
        ["calls", "--since", "99999999999d"],
        ["calls", "--until", "0001-01-01T00:00:00+01:00"],
        ["export", "--since", "1000000d"],
        ["sample", "--since", "1000000d"],
        ["report", "cost", "--days", "1000000"],
        ["report", "errors", "--days", "1000000"],
        ["report", "spikes", "--days", "1000000"],
        ["report", "drift", "--days", "1000000"],
        ["report", "drift", "--baseline", "1000000"],
        ["report", "compare", "support-bot", "--at", "1000000d"],
        ["report", "compare", "support-bot", "--at", "0001-01-02"],
        ["report", "compare", "support-bot", "--at", "9999-12-30", "--days", "3"],
        ["report", "compare", "support-bot", "v1", "v2", "--days", "1000000"],
        ["calls", "-n", "99999999999999999999"],
        ["sample", "-n", "99999999999999999999"],
        ["audit", "-n", "99999999999999999999"],
        ["calls", "--search", "x" * (MAX_TEXT + 1)],
        ["export", "--search", "%" * 50_001],
    ],
    ids=lambda a: " ".join(x[:20] for x in a),
)
def test_out_of_range_options_are_said_in_one_line(args: list[str], small: str) -> None:  # noqa: F811
    result = llmlog(*args, "--db", small)
    assert result.exit_code != 0
    line = result.output.strip().splitlines()[-1]  # a usage error: click's usage lines, then this
    assert line.startswith("Error: ") and "Traceback" not in result.output, result.output


def test_the_bounds_are_in_the_help() -> None:
    assert f"1<=x<={MAX_DAYS}" in llmlog("report", "cost", "--help").output
    assert f"1<=x<={MAX_COUNT}" in llmlog("calls", "--help").output


def test_the_longest_search_text_taken_runs(small: str) -> None:  # noqa: F811
    # Every character escaped and 4 bytes long: still inside SQLite's LIKE pattern limit.
    result = llmlog("calls", "--search", "%" * (MAX_TEXT // 2) + "😀" * (MAX_TEXT // 2), "--db", small)
    assert result.exit_code == 0, result.output


def test_the_longest_period_taken_runs(small: str) -> None:  # noqa: F811
    result = llmlog("report", "cost", "--days", str(MAX_DAYS), "--db", small)
    assert result.exit_code == 0, result.output


@pytest.fixture
def ui(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        running.store.insert([make_call(i) for i in range(3)])
        yield running


def test_the_web_ui_refuses_them_with_a_400(ui: Running) -> None:
    for path, params in [
        ("/", {"since": "1000000d"}),
        ("/", {"until": "99999999999d"}),
        ("/api/calls", {"since": "100000000h"}),
        ("/sessions", {"since": "1000000d"}),
        ("/sample", {"window": "1000000d"}),
        ("/", {"q": "x" * (MAX_TEXT + 1)}),
        ("/api/calls", {"q": "_" * (MAX_TEXT + 1)}),
    ]:
        r = ui.get(path, params=params)
        assert r.status_code == 400, (path, params, r.status_code)
        assert "calendar" in r.text or "at most" in r.text, r.text
    assert ui.get("/", params={"q": "%" * MAX_TEXT}).status_code == 200
