"""What a long-running collector keeps in memory is bounded by what it really takes: the
caches of shared content by the memory of their Python objects (several times their JSON,
many times for odd shapes), the keys remembered by their length, and the requests handled
at once by `LLMLOG_INGEST_CONCURRENCY`."""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmlog.capture import kept
from llmlog.capture.attributes import LONG_KEY, Shared
from llmlog.core.filters import CallFilter
from llmlog.core.footprint import footprint, json_footprint
from llmlog.core.record import Call, Span, json_text
from llmlog.pipeline import intake, jsonl, otlp
from llmlog.store.content import ContentIds
from tests.backends import SQLiteBackend
from tests.otel_programs import TOKEN
from tests.test_otlp import _otlp_json, post
from tests.test_otlp_hostile import _llm_span
from tests.webui import Running

# JSON whose objects take twenty times its bytes: an empty list is 3 bytes of JSON, 64 of memory.
HOSTILE = [
    lambda n: [[] for _ in range(2000)] + [n],
    lambda n: [{} for _ in range(2000)] + [n],
    lambda n: {"n": n, "texts": ["" for _ in range(2000)]},
    lambda n: [n, "a" * 5000 + "😀"],  # one emoji: every character of the string takes four bytes
]


@pytest.mark.parametrize("shape", HOSTILE)
def test_json_footprint_is_never_less_than_what_the_objects_take(shape: Any) -> None:
    text = orjson.dumps(shape(7))
    value = orjson.loads(text)
    assert json_footprint(text) >= footprint(value)
    assert json_footprint(text.decode()) >= footprint(value)


@pytest.mark.parametrize(
    "text",
    [
        '{"a":[1,2,{"b":"c,d"}],"e":"[{"}',
        '["caf\u00e9 \ud83d\ude00",{"k":"\u00e9\u00e9,\u00e9"},[]]',  # escaped: ASCII
        '["café 😀",{"k":"éé,é"},[],"{[,\\""]',  # not ASCII: four bytes a character
        '["\ud800 lone", "a"]',
        "",
    ],
)
def test_json_footprint_counts_each_mark_of_the_text_as_a_count_of_it_would(text: str) -> None:
    # What the caches' bounds were set with: each mark counted on its own over the text.
    def each(t: str | bytes) -> int:
        q, o, s, c = ('"', "{", "[", ",") if isinstance(t, str) else (b'"', b"{", b"[", b",")
        marks = t.count(q) // 2 * 80 + (t.count(o) + t.count(s)) * 184 + (t.count(c) + 1) * 60  # type: ignore[arg-type]
        return len(t) * (1 if t.isascii() else 4) + marks

    raw = text.encode("utf-8", "surrogatepass")
    assert json_footprint(text) == each(text)
    assert json_footprint(raw) == each(raw)
    lone = text + "\ud800"  # a lone surrogate, as a str may hold one
    assert json_footprint(lone) == each(lone)


@pytest.mark.parametrize("shape", HOSTILE)
def test_a_shared_cache_holds_no_more_than_its_bound_in_memory(shape: Any) -> None:
    shared = Shared(20_000, 1_000_000)
    for n in range(300):
        shared.get(("key", n), shape, n)
    held = sum(footprint(k) + footprint(v) for k, v in shared.made.items())
    assert len(shared.made) > 1 and held <= 1_000_000


def test_the_content_ids_of_a_store_hold_no_more_values_than_their_bound_in_memory() -> None:
    """The ids a store knows by the identity of values hold those values, which every other
    cache may have let go: many distinct large messages must not be held by the thousand."""
    known = ContentIds(max_bytes=1_000_000)
    for round_ in range(30):
        batch = known.batch()
        values = [shape(round_ * 10 + i) for i, shape in enumerate(HOSTILE * 2)]
        keys = batch.keys(values)
        batch.found.update((h, n) for n, h in enumerate(batch.unknown()))
        batch.ids(keys)
        batch.commit()
    held = [v for refs in known._refs.values() for v, *_ in refs.values()]
    assert len(held) > 1 and sum(footprint(v) for v in held) <= 1_000_000
    assert known.bytes == sum(size for refs in known._refs.values() for *_, size in refs.values())
    assert json_text in known._refs


def test_what_the_intake_knows_to_serialize_is_bounded_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    fit = intake._Fit(max_bytes=4_000_000)
    monkeypatch.setattr(intake, "_FIT", fit)
    for n in range(100):
        messages = [{"role": "user", "content": shape(n)} for shape in HOSTILE]
        intake.check(Call(model="m", messages=messages))
    held = list(fit.values.values())
    assert len(held) > 1 and sum(footprint(v) for v in held) <= 4_000_000


def test_what_the_intake_knows_to_serialize_is_counted_by_its_own_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A call's new message beside a large response: the cache holds the message, and counts
    # what the message takes, not the whole record (the response is not kept), so that a
    # bound in bytes holds as many messages as fit in it.
    fit = intake._Fit(max_bytes=4_000_000)
    monkeypatch.setattr(intake, "_FIT", fit)
    message = {"role": "user", "content": "hello"}
    response = {"content": [{"type": "text", "text": "x" * 50_000}]}
    intake.check(Call(model="m", messages=[message], response=response))
    assert fit.known(message)
    assert fit.bytes == json_footprint(orjson.dumps([message]))
    assert footprint([message]) <= fit.bytes < 1_000


def test_long_attribute_keys_of_spans_that_became_calls_are_not_remembered() -> None:
    before = len(kept._CALL_KEYS)
    for n in range(50):
        span = Span("t" * 32, f"{n:016x}", None, "llm", "client", datetime.now(UTC), None, call_id="c")
        span.attributes = {f"custom.{n:06d}." + "k" * 10_000: "v", "llm.model_name": "m"}
        out = kept.without_content(span)
        assert list(out.attributes) == [f"custom.{n:06d}." + "k" * 10_000]
    assert all(len(k) <= LONG_KEY for k in kept._CALL_KEYS)
    assert len(kept._CALL_KEYS) <= before + 1


def test_at_most_the_configured_number_of_ingest_requests_are_handled_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many exporters send at once, only so many requests are read, decoded and
    held at a time; the others wait, unread, and are all stored."""
    monkeypatch.setenv("LLMLOG_INGEST_CONCURRENCY", "2")
    lock, at_once, most = threading.Lock(), [0], [0]
    prepare = otlp.prepare_spans

    def slow_prepare(spans: list[Span], intake: Any) -> Any:
        with lock:
            at_once[0] += 1
            most[0] = max(most[0], at_once[0])
        time.sleep(0.2)
        with lock:
            at_once[0] -= 1
        return prepare(spans, intake)

    monkeypatch.setattr(otlp, "prepare_spans", slow_prepare)
    answers: list[int] = []
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as c:

        def send(n: int) -> None:
            body = json.dumps(_otlp_json([_llm_span(n + 1)])).encode()
            answers.append(post(c, "/v1/traces", body, "application/json").status_code)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = c.store.count(CallFilter())
    assert answers == [200] * 6 and stored == 6
    assert most[0] == 2, most


def test_bodies_waiting_for_their_turn_are_held_within_the_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exporters sending more than the server handles at once: their bodies wait unread
    past LLMLOG_INGEST_BUFFER_MB, not read and held each (memory grew with the clients
    sending); a body larger than the whole budget is still taken, alone."""
    from llmlog.web import ingest

    monkeypatch.setenv("LLMLOG_INGEST_CONCURRENCY", "1")
    monkeypatch.setenv("LLMLOG_INGEST_BUFFER_MB", "1")
    lock, held, most = threading.Lock(), [0], [0]
    read_body, take = ingest.read_body, ingest.take_otlp

    async def counted_read(request: Any, limit: int, *rest: Any) -> bytes:
        body = await read_body(request, limit, *rest)
        with lock:
            held[0] += 1
            most[0] = max(most[0], held[0])
        return body

    async def slow_take(*args: Any) -> Any:
        try:
            time.sleep(0.15)  # decoding and storing a large batch, holding the event loop as it does
            return await take(*args)
        finally:
            with lock:
                held[0] -= 1

    monkeypatch.setattr(ingest, "read_body", counted_read)
    monkeypatch.setattr(ingest, "take_otlp", slow_take)
    answers: list[int] = []
    pad = "x" * 300_000  # ~0.3 MB a body: three fit in the budget of 1 MB

    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as c:

        def send(n: int, size: str = pad) -> None:
            body = json.dumps(_otlp_json([_llm_span(n + 1, **{"llmlog.pad": size})])).encode()
            answers.append(post(c, "/v1/traces", body, "application/json").status_code)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        send(100, "y" * 1_500_000)  # over the whole budget: read when alone
        stored = c.store.count(CallFilter())
    assert answers == [200] * 9 and stored == 9
    assert most[0] <= 3, most


def test_a_client_sending_its_body_slowly_holds_no_one_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turns are taken once a body is in: an exporter on a slow link (or one that stops
    halfway) does not stop every other from being stored, even with one turn at a time."""
    monkeypatch.setenv("LLMLOG_INGEST_CONCURRENCY", "1")
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as c:
        for path in ("/v1/traces", "/v1/calls"):
            slow = socket.create_connection(("127.0.0.1", c.port))
            slow.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n{{".encode()
            )
            time.sleep(0.2)  # its request is under way, its body not in
            body = json.dumps(_otlp_json([_llm_span(len(path))])).encode()
            assert post(c, "/v1/traces", body, "application/json").status_code == 200
            slow.close()
        assert c.store.count(CallFilter()) == 2


def test_the_ingest_concurrency_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlog.core.config import Settings

    monkeypatch.setenv("LLMLOG_INGEST_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="LLMLOG_INGEST_CONCURRENCY"):
        Settings()
    monkeypatch.setenv("LLMLOG_INGEST_CONCURRENCY", "many")
    with pytest.raises(ValueError, match="LLMLOG_INGEST_CONCURRENCY"):
        Settings()


def test_the_caches_share_llmlog_cache_mb(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlog.capture.parse import Decoder
    from llmlog.core.config import CACHE_SHARES, cache_bytes

    monkeypatch.setenv("LLMLOG_CACHE_MB", "32")
    assert Decoder().max_bytes == cache_bytes("decoded") == 32 * 2**20 * CACHE_SHARES["decoded"]
    assert ContentIds().max_bytes == 32 * 2**20 * CACHE_SHARES["named"]
    # A collector's caches, two of the decoders and of the stores' ids among them, make the whole.
    assert sum(CACHE_SHARES.values()) + CACHE_SHARES["decoded"] + CACHE_SHARES["named"] == 1
    monkeypatch.setenv("LLMLOG_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="LLMLOG_CACHE_MB"):
        cache_bytes("messages")


def test_what_regulated_mode_sealed_is_remembered_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keyring remembers what it sealed by the identity of the value, holding the value
    and its sealed text: within its share of LLMLOG_CACHE_MB, however many distinct messages."""
    from llmlog.core.config import Settings

    monkeypatch.setenv("LLMLOG_CACHE_MB", "4")
    monkeypatch.setenv("LLMLOG_KEY", "k1:" + base64.b64encode(bytes(32)).decode())
    keyring = Settings().keyring  # as the application's is made: from the settings
    assert keyring is not None
    for n in range(200):
        keyring.seal_call(
            Call(model="m", messages=[{"role": "user", "content": [[] for _ in range(100)] + [n]}])
        )
    held = list(keyring._memo.values())
    assert len(held) > 1
    assert sum(footprint(value) + sys.getsizeof(sealed) for value, sealed, *_ in held) <= 4 * 2**20 * 2 / 32


def test_an_ndjson_body_is_read_line_by_line_without_reading_it_whole_first() -> None:
    # 500 calls of a long conversation each, one a line, as remote mode and `/v1/calls`
    # clients send them: the body was first read as one JSON value, which orjson does by
    # building far more than the body before it finds the second line.
    messages = [{"role": "user", "content": f"turn {i} " + "words " * 150} for i in range(30)]
    body = b"\n".join(
        orjson.dumps(
            {
                "id": str(uuid.UUID(int=i + 1)),
                "timestamp": "2026-12-01T00:00:00Z",
                "provider": "anthropic",
                "model": "m",
                "messages": messages,
            }
        )
        for i in range(500)
    )
    import tracemalloc

    tracemalloc.start()
    try:
        batch = jsonl.parse_batch(body, 4 * 2**20)
        kept_bytes, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(batch.calls) == 500 and not batch.bad
    # What is read is kept (the calls); the peak is little beyond it: not many bodies over
    # (read whole first), nor one (split into lines beside it).
    assert peak < kept_bytes + len(body) // 4, (peak, kept_bytes, len(body))


def test_a_large_batch_of_calls_is_read_and_stored_a_part_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A body's calls take several times its JSON as objects: read and stored a part at a
    # time, a body of any size costs a part's worth, and the answer counts them all.
    from llmlog.web import ingest

    sizes: list[int] = []
    store_batch = ingest.store_batch

    def counted(web: Any, calls: list[Any], bad: list[Any]) -> int:
        sizes.append(len(calls))
        return store_batch(web, calls, bad)

    monkeypatch.setattr(ingest, "store_batch", counted)
    n = 2 * ingest.PART + 50
    lines = [
        {"id": str(uuid.UUID(int=i + 1)), "timestamp": "2026-12-01T00:00:00Z", "provider": "anthropic",
         "model": "claude-haiku-4-5", "messages": [{"role": "user", "content": f"question {i}"}]}
        for i in range(n)
    ]  # fmt: skip
    lines[7]["timestamp"] = "not a time"  # one bad record, reported by its index in the body
    body = b"\n".join(orjson.dumps(line) for line in lines)
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as c:
        answer = post(c, "/v1/calls", body, "application/x-ndjson")
        again = post(c, "/v1/calls", body, "application/x-ndjson")
        stored = c.store.count(CallFilter())
    assert answer.status_code == 200 and stored == n - 1
    got = answer.json()
    assert (got["received"], got["stored"], [r["index"] for r in got["rejected"]]) == (n, n - 1, [7])
    assert again.json()["duplicates"] == n - 1
    assert max(sizes) <= ingest.PART and sum(sizes) == 2 * (n - 1)


def test_a_client_that_sends_headers_and_nothing_more_holds_up_no_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that never arrives (chunked, or declared larger than the whole byte budget)
    takes no share of it: the others are stored meanwhile; and a body that stops arriving is
    refused after `IDLE_S`, what it held given back."""
    from llmlog.web import ingest

    monkeypatch.setattr(ingest, "IDLE_S", 1.0)
    heads = (
        "Transfer-Encoding: chunked\r\n",
        f"Content-Length: {16 * 2**20}\r\n",
        "Content-Length: 3000000\r\nContent-Encoding: gzip\r\n",
    )
    with Running(SQLiteBackend(tmp_path / "calls.db"), ingest_token=TOKEN) as c:
        silent = []
        for n, head in enumerate(heads):
            s = socket.create_connection(("127.0.0.1", c.port))
            s.sendall(
                f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {TOKEN}\r\n{head}\r\n".encode()
            )
            silent.append(s)
            time.sleep(0.1)
            body = json.dumps(_otlp_json([_llm_span(n + 1)])).encode()
            assert post(c, "/v1/traces", body, "application/json").status_code == 200
        # One that starts and stops: refused once it has been quiet for IDLE_S.
        stalled = socket.create_connection(("127.0.0.1", c.port))
        stalled.sendall(
            f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {16 * 2**20}\r\n\r\n{{".encode()
        )
        stalled.settimeout(10)
        assert stalled.recv(100).startswith(b"HTTP/1.1 408")
        body = json.dumps(_otlp_json([_llm_span(9)])).encode()
        assert post(c, "/v1/traces", body, "application/json").status_code == 200
        for s in [*silent, stalled]:
            s.close()
        assert c.store.count(CallFilter()) == 4


async def test_the_byte_budget_gives_its_shares_in_the_order_asked() -> None:
    # Small bodies arriving all the time do not keep a large one waiting for ever.
    import asyncio

    from llmlog.web.ingest import BodyBudget

    budget, order = BodyBudget(100), []

    async def take(name: str, size: int, hold: float) -> None:
        async with budget.held(size):
            order.append(name)
            await asyncio.sleep(hold)

    first = asyncio.create_task(take("small 1", 30, 0.05))
    await asyncio.sleep(0.01)
    large = asyncio.create_task(take("large", 100, 0))
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(take(f"small {i}", 30, 0.05)) for i in (2, 3)]
    await asyncio.gather(first, large, *later)
    assert order == ["small 1", "large", "small 2", "small 3"] and budget.used == 0
    # A waiter cancelled gives back its place; one given its share and cancelled, the share.
    async with budget.held(100):
        waiting = asyncio.create_task(take("never", 50, 0))
        await asyncio.sleep(0.01)
        waiting.cancel()
    await asyncio.sleep(0.01)
    assert budget.used == 0 and "never" not in order
