"""`llmlog wrap -- COMMAND`: real programs, unchanged, recorded through the proxy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from llmlog.capture.proxy import Upstreams
from llmlog.core.filters import CallFilter
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import open_store
from tests.backends import SQLiteBackend
from tests.webui import Running

LLMLOG = str(Path(sys.executable).parent / "llmlog")

# A program in another language: the shell and curl, reading the base URLs it is given.
CURL_SCRIPT = textwrap.dedent(
    """\
    set -e
    curl -sS "$OPENAI_BASE_URL/chat/completions" -H "Authorization: Bearer sk-test" \\
        -H "Content-Type: application/json" \\
        -d '{"model": "gpt-4.1", "messages": [{"role": "user", "content": "hello from curl"}]}'
    echo
    curl -sS "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: sk-test" \\
        -H "anthropic-version: 2023-06-01" -H "Content-Type: application/json" \\
        -d '{"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}'
    echo
    echo "done, to stderr" >&2
    exit 3
    """
)


def wrap(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLMLOG, *args], env=env, capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload]


def environment(fake: FakeProvider, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMLOG_", "ANTHROPIC_", "OPENAI_"))}
    # Where the program's calls would have gone without llmlog: the fake provider.
    env.update(LLMLOG_DB=db, ANTHROPIC_BASE_URL=fake.anthropic_base_url, OPENAI_BASE_URL=fake.openai_base_url)
    return env


def test_a_curl_script_is_recorded_and_its_output_and_exit_code_are_its_own(
    fake: FakeProvider, tmp_path: Path
) -> None:
    db = str(tmp_path / "wrapped.db")
    script = tmp_path / "calls.sh"
    script.write_text(CURL_SCRIPT)
    r = wrap(["wrap", "--feature", "nightly", "--tag", "cron", "--tag", "curl", "--", "sh", str(script)],
             environment(fake, db))  # fmt: skip
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()
    assert '"chat.completion"' in lines[0] and '"type":"message"' in lines[1].replace(" ", "")
    assert "done, to stderr" in r.stderr
    with open_store(db) as store:
        calls = list(store.iter_calls(CallFilter()))
    assert sorted(c.provider or "" for c in calls) == ["anthropic", "openai"]
    assert all(c.feature == "nightly" and c.tags == ["cron", "curl"] and c.input_tokens for c in calls)
    assert all(c.cost_usd for c in calls)


def test_a_python_program_streaming_through_the_sdk(fake: FakeProvider, tmp_path: Path) -> None:
    db = str(tmp_path / "wrapped.db")
    program = textwrap.dedent(
        """\
        import openai
        client = openai.OpenAI(api_key="sk-test", max_retries=0)  # base URL from the environment
        stream = client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "stream please"}], stream=True,
            stream_options={"include_usage": True})
        print(sum(1 for _ in stream), "chunks")
        """
    )
    r = wrap(["wrap", "--session", "s-9", "--", sys.executable, "-c", program], environment(fake, db))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("chunks")
    with open_store(db) as store:
        (call,) = list(store.iter_calls(CallFilter()))
    assert call.session_id == "s-9" and call.output_tokens and call.first_token_ms is not None


def test_through_a_running_server(fake: FakeProvider, tmp_path: Path) -> None:
    script = tmp_path / "calls.sh"
    script.write_text(CURL_SCRIPT)
    upstreams = Upstreams(anthropic=fake.url, openai=fake.url)
    with Running(SQLiteBackend(tmp_path / "server.db"), upstreams=upstreams, ingest_token="tok") as server:
        env = environment(fake, str(tmp_path / "unused.db"))
        refused = wrap(["wrap", "--server", server.base, "--", "sh", str(script)], env)
        assert refused.returncode == 3 and "llmlog-token header is required" in refused.stdout
        env["LLMLOG_INGEST_TOKEN"] = "tok"
        r = wrap(
            ["wrap", "--server", server.base, "--session", "s-srv", "--user", "u1", "--", "sh", str(script)],
            env,
        )
        assert r.returncode == 3, r.stderr
        server.store.close()
    with open_store(str(tmp_path / "server.db")) as store:
        calls = list(store.iter_calls(CallFilter()))
    assert len(calls) == 2 and {(c.session_id, c.user_id) for c in calls} == {("s-srv", "u1")}
    assert not (tmp_path / "unused.db").exists()


def test_input_signals_and_missing_commands(fake: FakeProvider, tmp_path: Path) -> None:
    env = environment(fake, str(tmp_path / "w.db"))
    r = wrap(["wrap", "--", "cat"], env, input="piped in\n")
    assert r.returncode == 0 and r.stdout == "piped in\n"
    r = wrap(["wrap", "--", "sh", "-c", "kill -TERM $$"], env)
    assert r.returncode == 128 + 15
    r = wrap(["wrap", "--", "no-such-program-here"], env)
    assert r.returncode != 0 and "not found" in r.stderr
