"""The writer's decoding of bodies and streams: the same values as a plain JSON parse, with what
earlier calls sent decoded once, and the same records from the whole workload either way."""

from __future__ import annotations

import gc
import json
import operator
import sys
import tracemalloc
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlog.capture import sent
from llmlog.capture.context import CallContext
from llmlog.capture.exchange import Exchange
from llmlog.capture.parse import Decoder, sse_events, to_call
from llmlog.capture.wrap import instrument
from llmlog.core.footprint import footprint
from llmlog.core.record import parse_json
from llmlog.demo.fake_provider import FakeProvider
from llmlog.demo.workload import generate, run


def conversation(turns: int) -> list[bytes]:
    """Request bodies of one conversation, each re-sending everything before it."""
    system = "You are careful. " * 200
    tools = [{"name": f"t{i}", "description": "Looks things up. " * 20, "input_schema": {}} for i in range(3)]
    history: list[dict[str, Any]] = []
    bodies = []
    for i in range(turns):
        history.append({"role": ("user", "assistant")[i % 2], "content": f"turn {i} " + "word " * 60})
        bodies.append(
            json.dumps({"model": "m", "system": system, "tools": tools, "messages": history}).encode()
        )
    return bodies


def test_values_equal_a_plain_parse_and_resent_parts_are_the_same_objects() -> None:
    decoder = Decoder()
    bodies = conversation(20)
    values = [decoder.decode(b) for b in bodies]
    assert values == [parse_json(b) for b in bodies]
    first, last = values[-8], values[-1]  # (a short message list is decoded whole)
    assert last["messages"][0] is first["messages"][0]  # decoded once, shared
    assert last["system"] is first["system"] and last["tools"] is first["tools"]
    assert last["messages"] is not first["messages"]  # each call's own list and object
    assert last is not first


def test_a_changed_part_is_decoded_again() -> None:
    decoder = Decoder()
    a, b = conversation(20)[-1], conversation(20)[-1].replace(b"turn 2 ", b"turn X ")
    va, vb = decoder.decode(a), decoder.decode(b)
    assert vb == parse_json(b) and vb["messages"][2]["content"].startswith("turn X")
    assert vb["messages"][2] is not va["messages"][2]
    assert vb["messages"][1] is va["messages"][1]


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN, "pad": "' + b"x" * 5000 + b'"}',  # not strict JSON: the lenient parser decides
        b'{"s": "\\ud800", "pad": "' + b"x" * 5000 + b'"}',  # a lone surrogate escape
        b'{"n": 123456789, "pad": "' + b"x" * 5000 + b'"}',
        b'[{"role": "user", "content": "' + b"y" * 5000 + b'"}, 1, "two", null]',
        b"\xff\xfe" + b"x" * 5000,  # not UTF-8: not JSON
        b"not json at all " * 400,
        b'{"a":1,"a":2, "pad": "' + b"x" * 5000 + b'"}',  # a repeated key: the last wins, as in parse_json
        b"  \n" + json.dumps({"u": "ünïcødé ✓", "pad": "x" * 5000}).encode() + b"\n",
    ],
)
def test_odd_bodies_decode_as_parse_json_does(body: bytes) -> None:
    got, want = Decoder().decode(body), parse_json(body)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def test_the_cache_is_bounded_by_bytes() -> None:
    decoder = Decoder(max_bytes=50_000)
    for body in conversation(60):
        decoder.decode(body)
    assert 0 < decoder._bytes <= 50_000
    assert sum(decoder._sizes.values()) == decoder._bytes >= sum(cached_footprint(decoder))


def cached_footprint(decoder: Decoder) -> list[int]:
    return [sys.getsizeof(raw) + footprint(value) for raw, value in decoder._cache.items()]


def test_the_cache_is_bounded_by_what_its_objects_take_not_their_json() -> None:
    """Parts whose objects take many times their JSON (empty lists, 3 bytes of JSON and 64 of
    memory each) are held within the bound as counted in memory, however many come."""
    decoder = Decoder(max_bytes=2_000_000)
    for n in range(300):
        part = b"[" + b",".join([b"[]"] * 2000) + f',"{n}"]'.encode()
        decoder.decode(b'{"messages": [' + part + b"]}")
    held = cached_footprint(decoder)
    assert len(held) > 1 and sum(held) <= 2_000_000


def test_a_part_larger_than_the_cache_is_not_kept_and_pushes_nothing_out() -> None:
    decoder = Decoder(max_bytes=100_000)
    for body in conversation(10):
        decoder.decode(body)
    before = dict(decoder._cache)
    value = decoder.decode(b'{"messages": [{"content": "' + b"x" * 200_000 + b'"}]}')
    assert value["messages"][0]["content"] == "x" * 200_000
    assert decoder._cache == before and 0 < decoder._bytes <= 100_000


@pytest.mark.parametrize("through", ["to_call", "span"])
def test_a_body_larger_than_the_cache_is_not_held_once_given(
    through: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body whose parts are too large to keep: once its call (or a span's request) is
    let go, the decoder holds nothing of it, as before `shared` came; not its parts and
    values until the next body comes (the writer idle after a large response, or the
    receiver's module-wide decoder after a large span)."""
    decoder = Decoder(max_bytes=100_000)
    monkeypatch.setattr(sent, "_DECODER", decoder)
    big = json.dumps({"model": "m", "a": "x" * 2_000_000, "b": ["y" * 2_000_000], "messages": []})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        if through == "span":
            value: Any = sent.sent_request(
                {"input.mime_type": "application/json", "input.value": big}, "anthropic"
            )
        else:
            answer = json.dumps({"content": [{"type": "text", "text": "z" * 3_000_000}]}).encode()
            ex = Exchange(
                provider="anthropic", api="messages", url="u", request_body=big.encode(),
                context=CallContext(), started_at=1.0, t0=0.0, status=200,
                response_headers={"content-type": "application/json"}, chunks=[(1.0, answer)],
            )  # fmt: skip
            value = to_call(ex, decoder)
            del ex, answer
        assert value is not None
        del value
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000


def _body(messages: list[Any], style: int) -> bytes:
    """A request body as different clients write JSON: compact, spaced, or indented."""
    dumps = [
        lambda v: json.dumps(v, separators=(",", ":")),
        json.dumps,
        lambda v: json.dumps(v, indent=2),
    ][style]
    return f'{{"model": "m", "messages": {dumps(messages)}}}'.encode()


_MESSAGE = st.one_of(
    st.builds(lambda n: {"role": "user", "content": f"turn {n} " + "word " * 30}, st.integers(0, 3)),
    st.sampled_from([None, 1, "short", [], {"role": "assistant", "content": "x " * 40}]),
)


@settings(max_examples=150, deadline=None)
@given(
    first=st.lists(_MESSAGE, max_size=6),
    steps=st.lists(
        st.tuples(st.sampled_from(["grow", "again", "change", "cut"]), st.lists(_MESSAGE, max_size=3)),
        max_size=8,
    ),
    style=st.integers(0, 2),
)
def test_a_list_growing_turn_by_turn_decodes_as_a_plain_parse(
    first: list[Any], steps: list[tuple[str, list[Any]]], style: int
) -> None:
    """A conversation's message list sent again with more, the same again, with an earlier
    message changed, or cut short: each turn's value is a plain parse of its body, whatever
    was remembered of the turns before (small bodies take the plain parse; the padding
    message makes each one large enough to be split)."""
    decoder = Decoder()
    pad = {"role": "user", "content": "p" * 5000}
    messages = [pad, *first]
    for kind, more in [*steps, ("grow", [])]:
        if kind == "grow":
            messages = messages + more
        elif kind == "change" and len(messages) > 1:
            messages = [pad, "changed", *messages[2:]]
        elif kind == "cut":
            messages = messages[: max(1, len(messages) - 2)]
        body = _body(messages, style)
        assert decoder.decode(body) == parse_json(body)


def test_a_next_turn_is_split_only_past_the_list_it_begins_with() -> None:
    """The earlier turns' parts are the bytes the last turn was split into, not copies."""
    decoder = Decoder()
    bodies = conversation(20)
    for body in bodies[:-1]:
        decoder.decode(body)
    (before,) = [parts for _, parts, _ in decoder._lists.values()]
    decoder.decode(bodies[-1])
    (after,) = [parts for _, parts, _ in decoder._lists.values()]
    assert len(after) == len(before) + 1 and all(map(operator.is_, after, before))


def test_the_lists_remembered_take_a_quarter_of_the_bound_at_most() -> None:
    """Many conversations at once: the lists remembered stay within a quarter of the bound,
    counted at least as what their bytes take, and the cache within the rest."""
    decoder = Decoder(max_bytes=400_000)
    for n in range(40):
        for body in conversation(16):
            decoder.decode(body.replace(b'"content": "turn', f'"content": "c{n} turn'.encode()))
    held = [sys.getsizeof(head) + sys.getsizeof(parts) + sum(map(sys.getsizeof, parts))
            for head, parts, _ in decoder._lists.values()]  # fmt: skip
    assert 1 < len(held) < 40
    assert sum(held) <= decoder._list_bytes == sum(size for _, _, size in decoder._lists.values())
    assert decoder._list_bytes <= 100_000 and decoder._bytes <= 400_000 - decoder._list_bytes


def test_a_remembered_list_is_counted_with_the_bytes_that_name_it() -> None:
    """Each remembered list is counted at least as what its bytes take: the first bytes it is
    found by and its conversation, its JSON and its parts (lists just large enough to be
    split, where what names them is the largest share)."""
    decoder = Decoder(max_bytes=10**8)
    for n in range(50):
        decoder.decode(json.dumps({"model": "m", "messages": [f"c{n} " + "w" * 4100]}).encode(), f"s{n}")
    assert len(decoder._lists) == 50
    for name, (head, parts, size) in decoder._lists.items():
        held = sum(map(sys.getsizeof, [*name, head, parts, *parts]))
        assert held <= size


def _turns(system: str, n: int) -> list[bytes]:
    """A Chat conversation's bodies: its system message first, then a turn more each time."""
    history: list[dict[str, Any]] = [{"role": "system", "content": system}]
    bodies = []
    for i in range(n):
        history.append(
            {"role": ("user", "assistant")[i % 2], "content": f"{system[-9:]} turn {i} " + "w " * 40}
        )
        bodies.append(json.dumps({"model": "m", "messages": history}).encode())
    return bodies


def test_conversations_that_begin_alike_are_remembered_apart() -> None:
    """Three sessions taking turns, their lists beginning with the same long system message:
    each turn is split only past the session's own earlier turn."""
    decoder = Decoder()
    shared = "Answer in SQL. " * 400
    sessions = {f"s{k}": _turns(shared + f"tenant {k:04d}", 8) for k in range(3)}
    for turn in range(8):
        for session, bodies in sessions.items():
            before = {name: parts for name, (_, parts, _) in decoder._lists.items()}
            value = decoder.decode(bodies[turn], session)
            assert value == parse_json(bodies[turn])
            name = (session, bodies[turn][bodies[turn].index(b"[") :][: Decoder.NAME])
            if turn:
                assert all(map(operator.is_, decoder._lists[name][1], before[name]))


def test_a_conversation_begins_from_another_that_began_so() -> None:
    """A new session whose list begins with another's (examples every conversation is sent
    first) takes that list's parts, and keeps its own from then on."""
    decoder = Decoder()
    bodies = conversation(20)
    for body in bodies[:-1]:
        decoder.decode(body, "first")
    (earlier,) = [parts for _, parts, _ in decoder._lists.values()]
    assert decoder.decode(bodies[-1], "second") == parse_json(bodies[-1])
    mine = decoder._lists[("second", next(iter(decoder._lists))[1])][1]
    assert len(mine) == len(earlier) + 1 and all(map(operator.is_, mine, earlier))
    assert len(decoder._lists) == 2


def _request(system: Any, turns: int, **params: Any) -> bytes:
    """A Messages request: `params` first, then the system prompt and a conversation."""
    messages = [{"role": "user", "content": f"turn {i} " + "w " * 40} for i in range(turns)]
    return json.dumps({**params, "system": system, "messages": messages}).encode()


def _params(decoder: Decoder, body: bytes) -> dict[str, Any]:
    """A request's params as `to_call` makes them: the fields beside its messages."""
    value = decoder.decode(body)
    return decoder.shared({k: v for k, v in value.items() if k != "messages"})


_BLOCKS = [{"type": "text", "text": "Be brief. " * 600, "cache_control": {"type": "ephemeral"}}]


def test_the_same_params_are_one_object_from_call_to_call() -> None:
    """The turns of a conversation send the same params (its system prompt in blocks among
    them): the decoder hands out one dict for them, which the stores name by identity
    rather than serializing and hashing it for each call. Params that differ in any field
    are a dict of their own, equal to a plain parse."""
    decoder = Decoder()
    first = _params(decoder, _request(_BLOCKS, 3, model="m", max_tokens=100))
    for turns in (4, 9, 9):
        assert _params(decoder, _request(_BLOCKS, turns, model="m", max_tokens=100)) is first
    for body in (
        _request(_BLOCKS, 4, model="m", max_tokens=101),
        _request(_BLOCKS, 4, model="m", max_tokens=100, stream=True),
        _request(_BLOCKS, 4, max_tokens=100, model="m"),  # the same fields, in another order
        _request([{**_BLOCKS[0], "text": "Be long. " * 600}], 4, model="m", max_tokens=100),
        _request({"blocks": _BLOCKS}, 4, model="m", max_tokens=100),
        _request({"other": _BLOCKS}, 4, model="m", max_tokens=100),
    ):
        params = _params(decoder, body)
        assert params is not first
        assert params == {k: v for k, v in parse_json(body).items() if k != "messages"}
        assert _params(decoder, body) is params  # and sent again, it is that one


def test_params_not_as_decoded_are_the_calls_own() -> None:
    """A field whose value is not the one decoded (made by the caller), or that the body
    did not have, or a body too small to be split: the dict given is given back."""
    decoder = Decoder()
    body = _request(_BLOCKS, 3, model="m", max_tokens=100)
    shared = _params(decoder, body)
    value = decoder.decode(body)
    for mine in (
        {"model": "m", "max_tokens": 100, "system": [dict(b) for b in _BLOCKS]},
        {"model": "m", "max_tokens": 100, "system": value["system"], "temperature": 0},
    ):
        assert decoder.shared(mine) is mine
    assert decoder.shared({k: v for k, v in value.items() if k != "messages"}) is shared
    decoder.decode(b'{"model": "m"}')
    small = {"model": "m"}
    assert decoder.shared(small) is small


_FIELD = st.sampled_from([1, 2, "m", "n", [1, 2], {"a": 1}, {"b": 1}, None, True])


@settings(max_examples=150, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(["model", "max_tokens", "stream", "top_k"]), _FIELD, max_size=3),
            st.sampled_from(["blocks", "other blocks", "object", "string"]),
            st.integers(0, 3),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_params_decode_as_a_plain_parse(requests: list[tuple[dict[str, Any], str, int, int]]) -> None:
    """Requests whose fields repeat and vary, in three JSON styles: the params handed out
    are always a plain parse's, and the same object whenever the fields were written alike."""
    decoder = Decoder()
    seen: dict[str, dict[str, Any]] = {}
    systems = {
        "blocks": _BLOCKS,
        "other blocks": [{**_BLOCKS[0], "text": "Be long. " * 600}],
        "object": {"blocks": _BLOCKS},
        "string": "Be brief. " * 600,
    }
    for params, system, turns, style in requests:
        value = {**params, "system": systems[system], "messages": ["w " * 40] * turns}
        body = [
            lambda v: json.dumps(v, separators=(",", ":")),
            json.dumps,
            lambda v: json.dumps(v, indent=2),
        ][style](value).encode()
        got = _params(decoder, body)
        want = {k: v for k, v in parse_json(body).items() if k != "messages"}
        assert got == want
        same = f"{style} {json.dumps(list(want.items()))}"
        if same in seen:
            assert got is seen[same]
        seen.setdefault(same, got)


def test_the_params_shared_are_counted_in_the_bound() -> None:
    """Distinct params, many of them: the cache holds them within its bound, each counted
    at least as what its JSON takes."""
    decoder = Decoder(max_bytes=200_000)
    for n in range(100):
        _params(decoder, _request([{**_BLOCKS[0], "text": f"v{n} " + "w" * 6000}], 2, model="m"))
    assert 0 < decoder._bytes <= 200_000 and sum(decoder._sizes.values()) == decoder._bytes
    held = [key for key in decoder._cache if isinstance(key, tuple)]
    assert 1 < len(held) < 100
    for key in held:
        assert decoder._sizes[key] > 2 * 6000


def test_the_workload_gives_the_same_records_with_and_without_the_decoder(fake: FakeProvider) -> None:
    """Every API, streamed or not, errors included: the decoder changes the cost, not the record."""
    exchanges: list[Exchange] = []
    a = anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
    o = openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0)
    instrument(a, exchanges.append), instrument(o, exchanges.append)
    for step in generate(150, seed=3):
        run(step, a, o)
    assert {(e.api, "event-stream" in e.response_headers.get("content-type", "")) for e in exchanges} >= {
        ("messages", True), ("messages", False), ("chat", False), ("responses", True), ("responses", False)
    }  # fmt: skip
    decoder = Decoder()
    by_json: dict[str, set[int]] = {}
    for ex in exchanges:
        plain, shared = to_call(ex), to_call(ex, decoder)
        shared.id = plain.id
        assert shared == plain
        by_json.setdefault(json.dumps(shared.params), set()).add(id(shared.params))
    # The calls that send the same params (in bodies large enough to be split) share them.
    assert sum(map(len, by_json.values())) < len(exchanges) / 2


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_a_stream_in_small_chunks_gives_the_same_events(fake: FakeProvider, size: int) -> None:
    """However the bytes of a stream were cut on the way, the same events come out of them."""
    exchanges: list[Exchange] = []
    a = anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
    o = openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0)
    instrument(a, exchanges.append), instrument(o, exchanges.append)
    for step in generate(60, seed=5):
        run(step, a, o)
    streams = [e for e in exchanges if "event-stream" in e.response_headers.get("content-type", "")]
    assert {e.api for e in streams} >= {"messages", "responses"}
    for ex in streams:
        body = b"".join(chunk for _, chunk in ex.chunks)
        cut = Exchange(**{f: getattr(ex, f) for f in ex.__dataclass_fields__ if f != "_sink"})
        cut.chunks = [(float(i), body[i : i + size]) for i in range(0, len(body), size)]
        whole = [(name, data) for _, name, data in sse_events(ex)]
        assert whole and [(name, data) for _, name, data in sse_events(cut)] == whole
