"""The SSE parser shared by `wrap` and the proxy: the spec's line rules, and real streams of both
SDKs re-encoded with LF, CRLF and CR line endings and cut at any byte boundary."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmlog
from llmlog.capture.exchange import Exchange
from llmlog.capture.parse import sse_events, to_call
from llmlog.capture.proxy import Upstreams
from llmlog.capture.sse import SSEParser
from llmlog.capture.wrap import instrument
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from tests.backends import SQLiteBackend
from tests.conftest import Recorder
from tests.test_proxy import claude, gpt
from tests.test_proxy import recorded as proxy_recorded
from tests.webui import Running

ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
A_TOOLS = [{"name": "lookup_order", "description": "Find an order.", "input_schema": {
    "type": "object", "properties": {"order_id": {"type": "string"}, "notes": {"type": "string"}},
    "required": ["order_id"]}}]  # fmt: skip
O_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
            "parameters": t["input_schema"]}} for t in A_TOOLS]  # fmt: skip
O_RESP_TOOLS = [{"type": "function", "name": t["name"], "parameters": t["input_schema"]} for t in A_TOOLS]


def parse(chunks: list[bytes]) -> tuple[list[tuple[str, bytes]], SSEParser]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.close()
    return events, parser


# ---------------------------------------------------------------- the spec's rules


@pytest.mark.parametrize("ending", ENDINGS.values())
def test_line_rules(ending: bytes) -> None:
    body = (
        b": a comment, then a field without a colon\n"
        b"data\n\n"
        b"event: named\nid: 7\nretry: 100\nunknown: x\ndata:  two spaces keep one\ndata:no space\n\n"
        b"data: [DONE]\n\n"
        b"event: no data, no event\n\n"
        b"\n\n\n"
        b"data: last"  # never ended by a blank line: discarded, and said so
    ).replace(b"\n", ending)
    events, parser = parse([body])
    assert events == [("", b""), ("named", b" two spaces keep one\nno space"), ("", b"[DONE]")]
    assert parser.last_event_id == b"7" and parser.truncated
    for cut in range(len(body) + 1):
        assert parse([body[:cut], body[cut:]])[0] == events, cut


def test_a_cr_at_the_end_of_a_chunk_waits_for_the_next() -> None:
    # CR then LF in the next chunk is one line end; CR CR is two (a blank line).
    assert parse([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])[0] == [("", b"a\nb")]
    assert parse([b"data: a\r", b"\r", b"\ndata: b\r\r"])[0] == [("", b"a"), ("", b"b")]
    # The stream's last byte a CR: it ends the line, and the blank line after it dispatches.
    events, parser = parse([b"data: a\r\r"])
    assert events == [("", b"a")] and not parser.truncated


def test_a_byte_order_mark_is_dropped_even_cut_in_pieces() -> None:
    body = b"\xef\xbb\xbfdata: x\n\n"
    for cut in range(len(body) + 1):
        assert parse([body[:cut], body[cut:]])[0] == [("", b"x")]
    assert parse([b"\xef\xbb", b"data: x\n\n"])[0] == []  # half a BOM is not one: a bad field name


def test_a_stream_of_comments_and_blank_lines_is_not_truncated() -> None:
    events, parser = parse([b": ping\r\n\r\n\r: ping"])
    assert events == [] and not parser.truncated


_LINES = [
    b"data: {}", b"event: delta", b"data: x", b"data:y", b"data", b": ping", b"id: 3", b"retry: 9",
    b"event: named", b"", b"data: two\r", b"\xef\xbb\xbfdata: bom",
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.sampled_from(_LINES), max_size=30),
    end=st.sampled_from([b"\n", b"\n\n", b""]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_a_whole_stream_reads_as_its_chunks_one_by_one(
    lines: list[bytes], end: bytes, cuts: list[int]
) -> None:
    """`feed_all` (a recorded stream at once) gives what feeding its chunks one by one gives:
    the events, each at the time of the chunk that completed it, the last id, and whether the
    stream ended inside an event. Mostly LF streams, split at once; a CR or a byte order mark
    takes the chunk-by-chunk reading."""
    body = b"\n".join(lines) + end
    # The cuts drawn, and each cut in two alone (the blank line's two LFs apart among them).
    for at in [[c for c in cuts if c <= len(body)], *([c] for c in range(len(body) + 1))]:
        chunks = [(float(i), chunk) for i, chunk in enumerate(cut(body, at))]
        one_by_one = SSEParser()
        expected = [(t, *event) for t, chunk in chunks for event in one_by_one.feed(chunk)]
        one_by_one.close()
        whole = SSEParser()
        assert whole.feed_all(chunks) == expected, at
        assert (whole.truncated, whole.last_event_id) == (one_by_one.truncated, one_by_one.last_event_id)


# ---------------------------------------------------------------- real streams


@pytest.fixture(scope="module")
def recorded(fake: FakeProvider) -> list[Exchange]:
    """Real stream bodies from the fake provider, through the real SDKs: Anthropic Messages with text
    and a tool call, and without tools; Chat Completions with tool calls and with usage; Responses."""
    exchanges: list[Exchange] = []
    a = anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
    o = openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0)
    instrument(a, exchanges.append), instrument(o, exchanges.append)
    for prompt in ("Find order 42", "Where is order 7?", "order 19 please"):
        msgs = [{"role": "user", "content": prompt}]
        list(a.messages.create(model="claude-sonnet-4-6", max_tokens=300, tools=A_TOOLS, messages=msgs,  # type: ignore[arg-type]
                               stream=True))  # fmt: skip
        list(o.chat.completions.create(model="gpt-4.1", messages=msgs, tools=O_TOOLS, stream=True,  # type: ignore[arg-type]
                                       stream_options={"include_usage": True}))  # fmt: skip
        list(o.responses.create(model="gpt-4.1", input=prompt, tools=O_RESP_TOOLS, stream=True))  # type: ignore[arg-type]
    msgs = [{"role": "user", "content": "tell me a story"}]
    list(a.messages.create(model="claude-haiku-4-5", max_tokens=400, messages=msgs, stream=True))  # type: ignore[arg-type]
    list(o.chat.completions.create(model="gpt-4.1", messages=msgs, stream=True,  # type: ignore[arg-type]
                                   stream_options={"include_usage": True}))  # fmt: skip
    list(o.responses.create(model="gpt-4.1", input="tell me a story", stream=True))
    assert all("event-stream" in e.response_headers.get("content-type", "") for e in exchanges)
    calls = [to_call(e) for e in exchanges]
    # What the streams hold: text beside a tool call, tool arguments, usage, each stop reason.
    assert any(c.tool_calls and any(b.get("text") for b in c.response["content"])  # type: ignore[index]
               for c in calls if c.provider == "anthropic")  # fmt: skip
    assert {(c.provider, c.stop_reason) for c in calls} >= {
        ("anthropic", "tool_calls"), ("anthropic", "stop"), ("openai", "tool_calls"), ("openai", "stop")
    }  # fmt: skip
    assert all(c.input_tokens and c.output_tokens for c in calls)
    return exchanges


def body_of(ex: Exchange) -> bytes:
    return b"".join(chunk for _, chunk in ex.chunks)


def with_chunks(ex: Exchange, chunks: list[bytes]) -> Exchange:
    """The same exchange, its body arriving in these chunks (all at the same time, so the
    first-token time cannot tell one cut from another)."""
    fields = {f.name: getattr(ex, f.name) for f in dataclasses.fields(ex) if f.name != "_sink"}
    return Exchange(**fields | {"chunks": [(1.0, c) for c in chunks if c], "incomplete": False})


def cut(body: bytes, at: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(at)), len(body)]
    return [body[i:j] for i, j in itertools.pairwise(edges)]


def call_of(ex: Exchange) -> Call:
    call = to_call(ex)
    call.id = ""
    return call


def events_of(ex: Exchange) -> list[tuple[str, bytes]]:
    return [(name, data) for _, name, data in sse_events(ex)]


@pytest.fixture(scope="module")
def references(recorded: list[Exchange]) -> list[tuple[Exchange, list[tuple[str, bytes]], Call]]:
    """Each stream whole, with LF endings, and what it parses to: what every re-encoding and cut must give."""
    out = []
    for ex in recorded:
        whole = with_chunks(ex, [body_of(ex)])
        events, call = events_of(whole), call_of(whole)
        assert events and call.response and not (call.metadata or {}).get("llmlog", {}).get("incomplete")
        out.append((whole, events, call))
    return out


def first_of(references: list[tuple[Exchange, list, Call]], api: str) -> Exchange:
    return next(ex for ex, _, call in references if ex.api == api and call.tool_calls)


def test_every_boundary_in_every_ending(references: list[tuple[Exchange, list, Call]]) -> None:
    """Cut in two at each byte, for one stream of each API; every stream cut at every byte at once."""
    for ex, events, call in references:
        every = ex is first_of(references, ex.api)
        for name, ending in ENDINGS.items():
            body = body_of(ex).replace(b"\n", ending)
            for i in range(1, len(body)) if every else ():
                assert events_of(with_chunks(ex, [body[:i], body[i:]])) == events, (ex.api, name, i)
            assert call_of(with_chunks(ex, [body[i : i + 1] for i in range(len(body))])) == call, (
                ex.api,
                name,
            )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_cuts_in_any_ending_give_the_same_call(
    references: list[tuple[Exchange, list, Call]], data: st.DataObject
) -> None:
    ex, events, call = data.draw(st.sampled_from(references))
    ending = data.draw(st.sampled_from(list(ENDINGS.values())))
    body = body_of(ex).replace(b"\n", ending)
    at = data.draw(st.lists(st.integers(1, len(body) - 1), max_size=60))
    cut_ex = with_chunks(ex, cut(body, at))
    assert events_of(cut_ex) == events
    got = call_of(cut_ex)
    assert (got.response, got.tool_calls, got.stop_reason) == (
        call.response,
        call.tool_calls,
        call.stop_reason,
    )
    assert (got.input_tokens, got.output_tokens, got.cache_read_tokens) == (
        call.input_tokens, call.output_tokens, call.cache_read_tokens
    )  # fmt: skip
    assert got == call


# ---------------------------------------------------------------- what cannot be read


def incomplete(call: Call) -> bool:
    return bool((call.metadata or {}).get("llmlog", {}).get("incomplete"))


@pytest.mark.parametrize("api", ["messages", "chat", "responses"])
def test_a_stream_cut_inside_an_event_is_incomplete(
    references: list[tuple[Exchange, list, Call]], api: str
) -> None:
    ex = first_of(references, api)
    body = body_of(ex)
    # Cut just before the blank line that ends the first event (message_start, response.created,
    # the first chunk): the rest never came.
    end = body.index(b"\n\n")
    call = call_of(with_chunks(ex, [body[:end]]))
    assert incomplete(call)
    # Cut inside the last event: everything before it was read, but the call did not finish.
    last = body.rstrip(b"\n").rindex(b"\n\n") + 2
    assert incomplete(call_of(with_chunks(ex, [body[: last + 8]])))


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_an_event_with_unreadable_data_marks_the_call_incomplete(
    references: list[tuple[Exchange, list, Call]], api: str
) -> None:
    ex = first_of(references, api)
    body = body_of(ex)
    blocks = body.split(b"\n\n")
    # A delta in the middle with its JSON broken: its piece of the text or arguments is lost.
    i = len(blocks) // 2
    blocks[i] = blocks[i][: len(blocks[i]) - 5]
    call = call_of(with_chunks(ex, [b"\n\n".join(blocks)]))
    assert incomplete(call)
    assert call.stop_reason == call_of(ex).stop_reason  # what the other events said is kept


def test_responses_rebuilt_from_deltas_notes_unreadable_ones(
    references: list[tuple[Exchange, list, Call]],
) -> None:
    ex = next(ex for ex, _, call in references if ex.api == "responses" and not call.tool_calls)
    blocks = body_of(ex).split(b"\n\n")
    ending = max(i for i, b in enumerate(blocks) if b.startswith(b"event: response.completed"))
    del blocks[ending:]  # no final response: it is rebuilt from the deltas
    i = next(i for i, b in enumerate(blocks) if b.startswith(b"event: response.output_text.delta"))
    blocks[i] = blocks[i][:-3]
    call = call_of(with_chunks(ex, [b"\n\n".join(blocks) + b"\n\n"]))
    assert incomplete(call) and call.response


# ---------------------------------------------------------------- through the SDKs, end to end

CUT = {"x-fake-line-ending": "crlf", "x-fake-split-bytes": "7"}  # sse-starlette's endings, small reads
PROMPT = "Find order 42"  # the fake's seeded answer to this: a line of text, then the tool call


def drive(a: anthropic.Anthropic, o: openai.OpenAI) -> list[Callable[[Call], None]]:
    """A stream of each API through the real SDKs, with CRLF cut in 7-byte pieces; for each, a check
    that the call stored for it says what the SDK itself made of the stream."""
    msgs: Any = [{"role": "user", "content": PROMPT}]
    with a.messages.stream(model="claude-sonnet-4-6", max_tokens=300, tools=A_TOOLS,  # type: ignore[arg-type]
                           messages=msgs, extra_headers=CUT) as s:  # fmt: skip
        message = s.get_final_message()
    chunks = list(o.chat.completions.create(model="gpt-4.1", messages=msgs, tools=O_TOOLS,  # type: ignore[arg-type]
                  stream=True, stream_options={"include_usage": True}, extra_headers=CUT))  # fmt: skip
    with o.responses.stream(model="gpt-4.1", input="tell me a story", extra_headers=CUT) as r:
        story = r.get_final_response()
    with o.responses.stream(model="gpt-4.1", input=PROMPT, tools=O_RESP_TOOLS, extra_headers=CUT) as r:  # type: ignore[arg-type]
        lookup = r.get_final_response()

    def anthropic_call(c: Call) -> None:
        text, tool = message.content
        assert text.type == "text" and tool.type == "tool_use" and message.usage.output_tokens > 1
        assert c.response is not None and c.response["content"][0]["text"] == text.text
        assert c.tool_calls == [{"id": tool.id, "name": tool.name, "input": tool.input}]
        assert (c.input_tokens, c.output_tokens) == (message.usage.input_tokens, message.usage.output_tokens)
        assert c.stop_reason == "tool_calls"

    def chat_call(c: Call) -> None:
        pieces = [
            tc.function.arguments or ""
            for k in chunks
            if k.choices
            for tc in k.choices[0].delta.tool_calls or []
        ]
        usage = chunks[-1].usage
        assert usage is not None and len(pieces) > 2
        assert c.tool_calls is not None and c.tool_calls[0]["input"] == json.loads("".join(pieces))
        assert (c.input_tokens, c.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
        assert c.stop_reason == "tool_calls"

    def story_call(c: Call) -> None:
        assert c.response is not None and story.usage is not None
        assert c.response["output"][0]["content"][0]["text"] == story.output_text
        assert (c.input_tokens, c.output_tokens) == (story.usage.input_tokens, story.usage.output_tokens)
        assert c.stop_reason == "stop"

    def lookup_call(c: Call) -> None:
        fn = next(item for item in lookup.output if item.type == "function_call")
        assert c.tool_calls == [{"id": fn.call_id, "name": fn.name, "input": json.loads(fn.arguments)}]
        assert c.stop_reason == "tool_calls"

    return [anthropic_call, chat_call, story_call, lookup_call]


def check(calls: list[Call], checks: list[Callable[[Call], None]]) -> None:
    assert len(calls) == len(checks)
    for call, checked in zip(sorted(calls, key=lambda c: c.timestamp), checks, strict=True):
        assert call.error is None and not incomplete(call)
        checked(call)


def test_wrap_records_crlf_streams_cut_in_7_byte_pieces(recorder: Recorder, fake: FakeProvider) -> None:
    a = llmlog.wrap(anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0))
    o = llmlog.wrap(openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0))
    check(recorder.calls() if (checks := drive(a, o)) else [], checks)


def test_the_proxy_records_crlf_streams_cut_in_7_byte_pieces(tmp_path: Path, fake: FakeProvider) -> None:
    upstreams = Upstreams(anthropic=fake.url, openai=fake.url)
    with Running(SQLiteBackend(tmp_path / "proxy.db"), upstreams=upstreams) as p:
        checks = drive(claude(p), gpt(p))
        check(proxy_recorded(p, len(checks)), checks)
