"""Replay: re-sending logged requests through the real SDKs to the fake provider over HTTP,
recording the answer linked to the original, and the web pages around it, on each store."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

import llmlog
from llmlog.capture.exchange import Exchange
from llmlog.capture.wrap import instrument
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.prompts import text_hash
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations.replay import NotSent, Providers, ReplayError, api_of, replay, request_of
from llmlog.pipeline.intake import prepare
from llmlog.pipeline.pricing import Pricer
from llmlog.store import Store
from llmlog.web.replay import diff, response_text
from tests.backends import Backend
from tests.webui import HOSTILE, Running, assert_inert, free_port, make_call

SYSTEM = "You are a careful support agent.\nAnswer in two sentences."
ANTHROPIC_TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "lookup_order",
        "description": "Find an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
]
CONTEXT = {"feature": "support-bot", "user_id": "u_42", "session_id": "s_7", "tags": ["beta"]}


def anthropic_tools(fake: FakeProvider, sink: Callable[[Exchange], object]) -> None:
    client = instrument(anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url), sink)
    client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=400,
        system=SYSTEM,
        tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        stop_sequences=["END"],
        messages=[{"role": "user", "content": "Where is order 42?"}],
    )


def chat_streamed(fake: FakeProvider, sink: Callable[[Exchange], object]) -> None:
    client = instrument(openai.OpenAI(api_key="sk-test", base_url=fake.openai_base_url), sink)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "How do refunds work?"}],
        max_completion_tokens=300,
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in stream:
        pass


def responses_tools(fake: FakeProvider, sink: Callable[[Exchange], object]) -> None:
    client = instrument(openai.OpenAI(api_key="sk-test", base_url=fake.openai_base_url), sink)
    client.responses.create(
        model="gpt-4o-mini",
        instructions=SYSTEM,
        input=[{"role": "user", "content": "Find order 42."}],
        tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
        max_output_tokens=500,
    )


def anthropic_blocks(fake: FakeProvider, sink: Callable[[Exchange], object]) -> None:
    client = instrument(anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url), sink)
    client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=300,
        system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=[{"role": "user", "content": "Summarize my last order."}],
    )


Scenario = Callable[[FakeProvider, Callable[[Exchange], object]], None]
# (scenario, API, streamed, answers with a tool call)
SCENARIOS: list[tuple[Scenario, str, bool, bool]] = [
    (anthropic_tools, "messages", False, True),
    (chat_streamed, "chat", True, False),
    (responses_tools, "responses", False, True),
]


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeProvider) -> Iterator[None]:
    fake.reset()  # no queued failure or cache state from other tests
    yield
    fake.reset()


def providers(fake: FakeProvider) -> Providers:
    return Providers.fake(fake.anthropic_base_url, fake.openai_base_url)


def record(fake: FakeProvider, scenario: Scenario) -> Call:
    """A real call through the SDK, recorded as the writer records it (parse, price)."""
    exchanges: list[Exchange] = []
    with llmlog.context(**CONTEXT):  # type: ignore[arg-type]
        scenario(fake, exchanges.append)
    assert len(exchanges) == 1
    return prepare(exchanges[0], Settings(), Pricer())


def stored(store: Store, call: Call) -> Call:
    """The call as the store gives it back (PostgreSQL: jsonb), which is what replay reads."""
    store.insert([call])
    back = store.get(call.id)
    assert back is not None
    return back


def tool_calls(call: Call) -> list[tuple[Any, Any]]:
    return [(t["name"], t["input"]) for t in call.tool_calls or []]


# ---------------------------------------------------------------- core


@pytest.mark.parametrize(
    ("scenario", "api", "streamed", "uses_tool"), SCENARIOS, ids=lambda s: getattr(s, "__name__", None)
)
def test_replay_resends_the_logged_request_exactly_and_records_the_answer(
    backend: Backend, fake: FakeProvider, scenario: Scenario, api: str, streamed: bool, uses_tool: bool
) -> None:
    original_request = len(fake.requests)
    logged = record(fake, scenario)
    sent = fake.requests[original_request]
    with backend.open() as store:
        original = stored(store, logged)
        assert api_of(original) == api
        n = len(fake.requests)
        new = replay(original, providers=providers(fake))
        assert len(fake.requests) == n + 1
        again = fake.requests[n]
        # The same path and the same body, parameter for parameter (stream flag included).
        assert (again.path, again.body) == (sent.path, sent.body)
        assert again.body["stream"] is True if streamed else "stream" not in again.body

        assert new.id != original.id and new.error is None
        assert new.metadata is not None and new.metadata["replay_of"] == original.id
        assert new.metadata["llmlog"]["replay"] == {"api": api, "stream": streamed}
        assert new.metadata["llmlog"]["request_id"].startswith("req_")
        assert (new.provider, new.model) == (original.provider, original.model)
        assert (new.feature, new.user_id, new.session_id, new.tags) == (
            "support-bot",
            "u_42",
            "s_7",
            ["beta"],
        )
        assert new.prompt_template_version == original.prompt_template_version == text_hash(SYSTEM)
        assert new.system_prompt == SYSTEM and new.messages == original.messages
        # The fake answers the same request with the same text and tool call, and counts alike.
        assert response_text(new) == response_text(original)
        assert tool_calls(new) == tool_calls(original) and bool(new.tool_calls) is uses_tool
        assert (new.input_tokens, new.output_tokens) == (original.input_tokens, original.output_tokens)
        assert new.output_tokens and new.output_tokens > 0
        assert new.cost_usd is not None and new.cost_usd > 0 and new.rate_card
        assert new.cost_usd == pytest.approx(original.cost_usd)
        assert new.latency_ms is not None and new.first_token_ms is not None
        assert new.timestamp > original.timestamp

        back = stored(store, new)
        assert back.metadata is not None and back.metadata["replay_of"] == original.id
        assert store.count(CallFilter()) == 2


def test_a_model_override_changes_only_the_model_and_is_priced_for_it(
    backend: Backend, fake: FakeProvider
) -> None:
    with backend.open() as store:
        original = stored(store, record(fake, anthropic_tools))
        logged_body = fake.requests[-1].body
        new = replay(original, model="claude-haiku-4-5", providers=providers(fake))
        body = fake.requests[-1].body
    assert body == {**logged_body, "model": "claude-haiku-4-5"}
    assert (
        new.model == "claude-haiku-4-5"
        and new.params is not None
        and new.params["model"] == "claude-haiku-4-5"
    )
    assert new.metadata is not None and new.metadata["llmlog"]["replay"]["model"] == "claude-haiku-4-5"
    # Same tokens (the fake counts the same prompt alike), cheaper model: a smaller cost.
    assert new.input_tokens == original.input_tokens
    assert original.cost_usd is not None and new.cost_usd is not None
    assert 0 < new.cost_usd < original.cost_usd
    # Naming the logged model is no override.
    same = replay(original, model="claude-sonnet-4-6", providers=providers(fake))
    assert same.metadata is not None and "model" not in same.metadata["llmlog"]["replay"]


def test_an_edited_system_prompt_replaces_the_logged_one_in_each_api(fake: FakeProvider) -> None:
    chat = record(fake, chat_streamed)
    new = replay(chat, system_prompt="Be terse.", providers=providers(fake))
    body = fake.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "How do refunds work?"},
    ]
    assert new.system_prompt == "Be terse."
    assert new.prompt_template_version == text_hash("Be terse.") != chat.prompt_template_version
    assert new.metadata is not None and new.metadata["llmlog"]["replay"]["system_prompt"] == "edited"

    responses = record(fake, responses_tools)
    replay(responses, system_prompt="Be terse.", providers=providers(fake))
    assert fake.requests[-1].body["instructions"] == "Be terse."
    replay(responses, system_prompt="", providers=providers(fake))  # "" sends none
    assert "instructions" not in fake.requests[-1].body

    # Anthropic block form: re-sent as logged, or edited keeping the last block's cache marker.
    blocks = record(fake, anthropic_blocks)
    logged_system = fake.requests[-1].body["system"]
    assert request_of(blocks)[1]["system"] == logged_system
    replay(blocks, providers=providers(fake))
    assert fake.requests[-1].body["system"] == logged_system
    replay(blocks, system_prompt="Be terse.", providers=providers(fake))
    marker = {"type": "ephemeral", "ttl": "1h"}
    assert fake.requests[-1].body["system"] == [
        {"type": "text", "text": "Be terse.", "cache_control": marker}
    ]


def test_the_api_is_told_from_the_request_when_there_is_no_response(fake: FakeProvider) -> None:
    for scenario, api, _, _ in SCENARIOS:
        call = record(fake, scenario)
        assert api_of(call) == api
        failed = call.replace(response=None, error={"type": "api_error", "status": 500, "message": "x"})
        assert api_of(failed) == api, scenario.__name__
    # Nothing but plain messages and instructions: the system prompt came from `instructions`.
    bare = Call(
        provider="openai",
        params={"model": "m"},
        system_prompt="s",
        messages=[{"role": "user", "content": "q"}],
    )
    assert api_of(bare) == "responses"
    assert (
        api_of(bare.replace(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]))
        == "chat"
    )
    assert api_of(bare.replace(system_prompt=None)) == "chat"
    with pytest.raises(ReplayError, match="not None"):
        api_of(bare.replace(provider=None))


def test_a_provider_error_is_a_recorded_call_not_an_exception(fake: FakeProvider) -> None:
    original = record(fake, anthropic_tools)
    fake.fail_next("529")
    n = len(fake.requests)
    new = replay(original, providers=providers(fake))
    assert len(fake.requests) == n + 1  # no retry: one replay, one request, one row
    assert new.error is not None and new.error["status"] == 529 and new.error["type"] == "overloaded_error"
    assert "Injected failure" in new.error["message"]
    assert new.metadata is not None and new.metadata["replay_of"] == original.id
    assert new.cost_usd is None and new.response is None

    refused = Providers(anthropic_api_key="sk-test", anthropic_base_url=f"http://127.0.0.1:{free_port()}")
    down = replay(original, providers=refused)
    assert down.error is not None and down.error["type"] == "connection_error"
    assert down.metadata is not None and down.metadata["replay_of"] == original.id


def test_nothing_is_sent_without_a_key_or_a_request(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, chat = record(fake, anthropic_tools), record(fake, chat_streamed)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    n = len(fake.requests)
    with pytest.raises(NotSent, match="ANTHROPIC_API_KEY"):
        replay(original, providers=Providers(anthropic_base_url=fake.anthropic_base_url))
    with pytest.raises(NotSent, match="OPENAI_API_KEY"):
        replay(chat, providers=Providers(openai_base_url=fake.openai_base_url))
    with pytest.raises(ReplayError, match="no request parameters"):
        replay(original.replace(params=None), providers=providers(fake))
    assert len(fake.requests) == n


def test_word_diff_marks_what_changed_on_each_side() -> None:
    d = diff("the order shipped today", "the order left today")
    assert d.left == [("", "the order "), ("del", "shipped "), ("", "today")]
    assert d.right == [("", "the order "), ("ins", "left "), ("", "today")]
    assert not d.same and diff("a b", "a b").same
    lines = diff('x({\n  "id": 1\n})\n', 'x({\n  "id": 2\n})\n', lines=True)
    assert lines.left[1] == ("del", '  "id": 1\n') and lines.right[1] == ("ins", '  "id": 2\n')


# ---------------------------------------------------------------- web


def count(running: Running) -> int:
    return running.store.count(CallFilter())


def post_replay(running: Running, call_id: str, **fields: str) -> Any:
    return running.submit(f"/calls/{call_id}/replay", fields)


def new_id(response: Any, call_id: str) -> str:
    assert response.status_code == 303, response.text
    m = re.fullmatch(rf"/calls/{call_id}/replay/([0-9a-f-]{{36}})", response.headers["location"])
    assert m, response.headers["location"]
    return m.group(1)


def test_replay_from_the_form_to_the_side_by_side_page(backend: Backend, fake: FakeProvider) -> None:
    with Running(backend, providers=providers(fake)) as ui:
        original = stored(ui.store, record(fake, anthropic_tools))
        logged_body = fake.requests[-1].body
        detail = ui.get(f"/calls/{original.id}").text
        assert f'href="/calls/{original.id}/replay"' in detail

        form = ui.get(f"/calls/{original.id}/replay")
        assert form.status_code == 200
        assert 'name="model"' in form.text and 'value="claude-sonnet-4-6"' in form.text
        assert '<option value="claude-haiku-4-5">' in form.text  # from the rate card
        assert f'name="system_prompt" rows="12" spellcheck="false">\n{SYSTEM}</textarea>' in form.text

        before = count(ui)
        # A browser sends the untouched textarea with CRLF line breaks: that is no edit.
        r = post_replay(ui, original.id, model="claude-haiku-4-5", system_prompt=SYSTEM.replace("\n", "\r\n"))
        replay_id = new_id(r, original.id)
        assert count(ui) == before + 1
        assert fake.requests[-1].body == {**logged_body, "model": "claude-haiku-4-5"}
        new = ui.store.get(replay_id)
        assert new is not None and new.metadata is not None
        assert new.metadata["replay_of"] == original.id and new.model == "claude-haiku-4-5"
        assert "system_prompt" not in new.metadata["llmlog"]["replay"]

        page = ui.get(f"/calls/{original.id}/replay/{replay_id}")
        assert page.status_code == 200
        html = page.text
        assert "claude-sonnet-4-6" in html and "claude-haiku-4-5" in html
        # Both sides' tool calls, and the deltas computed from the stored values.
        assert html.count("lookup_order(") == 2
        assert original.cost_usd is not None and new.cost_usd is not None
        change = new.cost_usd - original.cost_usd
        assert change < 0
        percent = f"{change / original.cost_usd:+.0%}".replace("-", "−")
        expected = f"−${-change:,.6f} ({percent})"
        cost_row = re.search(r'<tr class="delta-cost">(.*?)</tr>', html, re.S)
        assert cost_row is not None
        assert f"${original.cost_usd:,.6f}" in cost_row.group(
            1
        ) and f"${new.cost_usd:,.6f}" in cost_row.group(1)
        assert f'<td class="change down">{expected}</td>' in cost_row.group(1)
        tokens_row = re.search(r'<tr class="delta-input-tokens">(.*?)</tr>', html, re.S)
        assert tokens_row is not None and '<td class="change ">±0 (+0%)</td>' in tokens_row.group(1)
        assert "with model <b>claude-haiku-4-5</b>" in html
        assert "Response text" in html

        # The replay's own page says what it replays.
        replayed = ui.get(f"/calls/{replay_id}").text
        assert f'replay of <a href="/calls/{original.id}">{original.id}</a>' in replayed


def test_get_never_replays(backend: Backend, fake: FakeProvider) -> None:
    with Running(backend, providers=providers(fake)) as ui:
        original = stored(ui.store, record(fake, chat_streamed))
        replay_id = new_id(post_replay(ui, original.id), original.id)
        calls, requests = count(ui), len(fake.requests)
        for path in (
            f"/calls/{original.id}/replay",
            f"/calls/{original.id}/replay?model=gpt-4o&system_prompt=x",
            f"/calls/{original.id}/replay/{replay_id}",
            f"/calls/{original.id}/replay/{replay_id}?model=gpt-4o",
            f"/calls/{replay_id}",
            f"/calls/{replay_id}/replay",
        ):
            assert ui.get(path).status_code == 200, path
        assert httpx2.head(f"{ui.base}/calls/{original.id}/replay").status_code == 200
        csrf = httpx2.get(f"{ui.base}/login").cookies["llmlog_csrf"]
        for method in ("PUT", "DELETE", "PATCH"):
            # Without the form's token: refused as any unsafe method is; with it: no such method.
            r = httpx2.request(method, f"{ui.base}/calls/{original.id}/replay", headers={"Origin": ui.base})
            assert r.status_code == 403, method
            r = httpx2.request(
                method,
                f"{ui.base}/calls/{original.id}/replay",
                headers={"Origin": ui.base, "X-CSRF-Token": csrf},
                cookies={"llmlog_csrf": csrf},
            )
            assert r.status_code == 405, method
        assert (count(ui), len(fake.requests)) == (calls, requests)


def test_a_cross_site_post_is_refused(backend: Backend, fake: FakeProvider) -> None:
    with Running(backend, providers=providers(fake)) as ui:
        original = stored(ui.store, record(fake, anthropic_tools))
        calls, requests = count(ui), len(fake.requests)
        path = f"/calls/{original.id}/replay"
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": f"http://127.0.0.1:{ui.port + 1}"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            r = ui.submit(path, {"model": "claude-haiku-4-5"}, headers=headers)
            assert r.status_code == 403 and "refused" in r.text, headers
        # From this site, but without the form's token (or with another's): refused too.
        assert ui.post(path, data={}, headers={"Origin": ui.base}).status_code == 403
        r = ui.post(
            path, data={"csrf": "guess"}, headers={"Origin": ui.base}, cookies={"llmlog_csrf": "other"}
        )
        assert r.status_code == 403 and "token" in r.text
        assert (count(ui), len(fake.requests)) == (calls, requests)
        assert new_id(ui.submit(path, {}), original.id)


def test_the_diff_page_escapes_hostile_text(backend: Backend, fake: FakeProvider) -> None:
    with Running(backend, providers=providers(fake)) as ui:
        # A logged call full of hostile text, replayed for real: the fake answers plain text.
        hostile = make_call(
            700,
            system_prompt=HOSTILE,
            params={"model": "claude-sonnet-4-6", "max_tokens": 200},
            messages=[{"role": "user", "content": HOSTILE}],
            response={"role": "assistant", "content": [{"type": "text", "text": "Sure: " + HOSTILE}]},
            tool_calls=[{"id": "t1", "name": HOSTILE, "input": {"q": HOSTILE}}],
            error=None,
        )
        ui.store.insert([hostile])
        form = ui.get(f"/calls/{hostile.id}/replay").text
        assert_inert(form, "form")
        assert "&lt;script&gt;" in form
        replay_id = new_id(post_replay(ui, hostile.id, system_prompt=HOSTILE), hostile.id)
        page = ui.get(f"/calls/{hostile.id}/replay/{replay_id}").text
        assert_inert(page, "replay page")
        assert "Sure: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=" in page
        assert fake.requests[-1].body["messages"] == [{"role": "user", "content": HOSTILE}]
        assert "<h2>System prompt</h2>" not in page  # re-sent as logged: nothing to compare

        edited_id = new_id(post_replay(ui, hostile.id, system_prompt="Be <b>brief</b>"), hostile.id)
        assert fake.requests[-1].body["system"] == "Be <b>brief</b>"
        page = ui.get(f"/calls/{hostile.id}/replay/{edited_id}").text
        assert_inert(page, "edited replay page")
        assert '<span class="ins">Be &lt;b&gt;brief&lt;/b&gt;</span>' in page
        assert '<span class="del">&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;' in page

        # Two stored answers that differ, hostile on both sides: marked and escaped.
        a = make_call(
            701,
            response={"role": "assistant", "content": [{"type": "text", "text": "<b>old</b> " + HOSTILE}]},
        )
        b = make_call(
            702,
            response={"role": "assistant", "content": [{"type": "text", "text": "<i>new</i> " + HOSTILE}]},
            metadata={"replay_of": a.id},
        )
        ui.store.insert([a, b])
        page = ui.get(f"/calls/{a.id}/replay/{b.id}").text
        assert_inert(page, "diff page")
        assert '<span class="del">&lt;b&gt;old&lt;/b&gt; </span>' in page
        assert '<span class="ins">&lt;i&gt;new&lt;/i&gt; </span>' in page
        assert "not a replay of the logged one" not in page


def test_a_provider_failure_is_recorded_and_shown(backend: Backend, fake: FakeProvider) -> None:
    with Running(backend, providers=providers(fake)) as ui:
        original = stored(ui.store, record(fake, responses_tools))
        fake.fail_next("500")
        replay_id = new_id(post_replay(ui, original.id), original.id)
        new = ui.store.get(replay_id)
        assert new is not None and new.error is not None and new.error["status"] == 500
        assert new.metadata is not None and new.metadata["replay_of"] == original.id
        page = ui.get(f"/calls/{original.id}/replay/{replay_id}")
        assert page.status_code == 200
        assert "server_error (500): Injected failure (500) from the fake provider." in page.text

    refused = Providers(openai_api_key="sk-test", openai_base_url=f"http://127.0.0.1:{free_port()}/v1")
    with Running(backend, providers=refused) as ui:
        replay_id = new_id(post_replay(ui, original.id), original.id)
        page = ui.get(f"/calls/{original.id}/replay/{replay_id}").text
        assert "connection_error: " in page


def test_a_call_that_cannot_be_replayed_says_why(backend: Backend, fake: FakeProvider) -> None:
    with Running(backend, providers=providers(fake)) as ui:
        imported = make_call(800, provider=None)
        no_params = make_call(801)  # shaped as an import: no request parameters
        ui.store.insert([imported, no_params])
        calls, requests = count(ui), len(fake.requests)
        for call, reason in ((imported, "not None"), (no_params, "no request parameters")):
            for r in (ui.get(f"/calls/{call.id}/replay"), post_replay(ui, call.id)):
                assert r.status_code == 400 and reason in r.text
        assert post_replay(ui, str(uuid.UUID(int=999_999))).status_code == 404
        assert (count(ui), len(fake.requests)) == (calls, requests)
