"""`llmlog serve --workers 2` given hostile batches: each bad record refused by name (never a
500 nor a 503 that says the store is down), each good record of the same request kept, each
call stored once. One server per store kind for the module; each test uses calls and traces
of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from llmlog.core.filters import CallFilter
from llmlog.store import open_store
from tests.backends import drop_schema, new_schema
from tests.test_otlp_processes import _attrs, _sdk, _wrapper
from tests.test_serve_workers import Serving


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    if request.param == "sqlite":
        url, schema = str(tmp_path_factory.mktemp("hostile") / "calls.db"), None
    else:
        server = request.getfixturevalue("postgres_server")
        schema, url = new_schema(server)
    running = Serving(url, "--fake-provider")
    running.url = url  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()
        if schema is not None:
            drop_schema(server, schema)


def _id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def record(n: int, **more: object) -> dict[str, object]:
    return {
        "id": _id(n),
        "timestamp": "2026-11-30T12:00:00Z",
        "provider": "openai",
        "model": "gpt-4.1",
        "feature": f"hostile-{n}",
        "input_tokens": 5,
        **more,
    }


def post(s: Serving, path: str, body: bytes | str, content_type: str) -> httpx.Response:
    return httpx.post(s.base + path, content=body, headers={"Content-Type": content_type}, timeout=60)


def post_spans(s: Serving, *spans: dict[str, object]) -> httpx.Response:
    """OTLP/JSON spans in one export."""
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})
    return post(s, "/v1/traces", body, "application/json")


def good_kept_beside(s: Serving, good: dict[str, object], bad: dict[str, object]) -> None:
    """`good` and `bad` in one export: answered 200, and `good` kept whatever became of `bad`."""
    r = post_spans(s, good, bad)
    assert r.status_code == 200, r.text
    with open_store(s.url) as store:  # type: ignore[attr-defined]
        assert store.traces([good["traceId"]]), "the good span is not stored"  # type: ignore[list-item]


def stored(s: Serving, call_id: str) -> bool:
    with open_store(s.url) as store:  # type: ignore[attr-defined]
        return store.get(call_id) is not None


def test_a_good_record_after_a_refused_one_with_the_same_id_is_stored(served: Serving) -> None:
    """A record refused when it is checked (its messages nested too deeply to keep), then the
    same id again, good (the client fixed the record and resent it in the batch): the good one
    was skipped as a duplicate of the refused one, counted in `duplicates`, and stored nowhere."""
    deep = json.loads("[" * 300 + "]" * 300)
    body = json.dumps(record(1, messages=deep)) + "\n" + json.dumps(record(1)) + "\n"
    r = post(served, "/v1/calls", body, "application/x-ndjson")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [b["index"] for b in answer["rejected"]] == [0], answer
    assert (answer["stored"], answer["duplicates"]) == (1, 0), answer
    assert stored(served, _id(1))


def test_a_json_array_with_a_byte_that_is_not_utf8_keeps_its_good_records(served: Serving) -> None:
    """A JSON array of two records, the second with a byte that is not UTF-8 in one string: the
    body was read as one NDJSON line, and the batch refused whole as one record, "expected a
    JSON object, got list" (received 1). The first record is good; the second is either kept
    (as an NDJSON line with such a byte is, the byte replaced) or refused by its index."""
    body = json.dumps([record(2), record(3, feature="BAD")]).encode().replace(b"BAD", b"\xff\xfe")
    r = post(served, "/v1/calls", body, "application/json")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["received"] == 2, answer
    assert all(b["index"] == 1 for b in answer["rejected"]), answer
    assert stored(served, _id(2))


def test_a_call_with_the_most_tokens_a_record_allows_does_not_refuse_its_group(served: Serving) -> None:
    """input_tokens may be any integer under 2**63 (larger is refused by name). On PostgreSQL,
    a call with 2**63 - 1 is stored, and its day's rollup of its group (day, feature, model)
    then holds the most a bigint can: every later call of that group, 5 tokens or 1, is refused
    ("bigint out of range", the rollup's SQL quoted), by the collector and by the proxy's
    writer alike, for the rest of the day."""
    huge = record(4, input_tokens=2**63 - 1)
    r = post(served, "/v1/calls", json.dumps(huge), "application/json")
    assert r.status_code in (200, 400), r.text  # stored, or refused by name: either will do
    later = record(5, feature=huge["feature"])
    r = post(served, "/v1/calls", json.dumps(later), "application/json")
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [] and r.json()["stored"] == 1, r.text
    assert stored(served, _id(5))


def test_a_figure_whose_sum_would_be_infinite_is_refused_by_name(served: Serving) -> None:
    """Two calls of a group whose latencies are each near the largest float: their rollup's
    sum was infinite, and an infinite sum stays (taking a call away leaves infinity, or NaN)."""
    body = json.dumps(
        [record(6, latency_ms=1.7e308, feature="vast"), record(7, latency_ms=1.7e308, feature="vast")]
    )
    r = post(served, "/v1/calls", body, "application/json")
    assert r.status_code == 400, r.text
    assert [b["index"] for b in r.json()["rejected"]] == [0, 1]
    assert all("latency_ms" in b["reason"] for b in r.json()["rejected"])


def test_an_otlp_span_with_a_nul_in_its_name_is_not_the_store_being_down(served: Serving) -> None:
    """A GenAI span whose name holds a NUL, beside a good one: on PostgreSQL the spans' insert
    fails as data, and the request was answered 503 "the store is unavailable: send again", which
    an exporter retries for ever, for a request that can never be stored. The span is to be
    kept (as SQLite keeps it, as a call's text with a NUL is kept) or refused as a partial
    success; the good span's call stored either way."""
    good, bad = _sdk(101), _sdk(102)
    bad["name"] = "chat\x00x"
    bad["attributes"] = [*bad["attributes"], *_attrs(note="a\x00b")]  # type: ignore[misc]
    good_kept_beside(served, good, bad)


def test_an_otlp_span_the_store_cannot_write_is_refused_alone(served: Serving) -> None:
    """A root span whose name is too long for PostgreSQL's index of trace names (past ~2.7 kB
    of text that does not compress), beside a good span of another trace: the spans' insert
    failed as data, and the whole request was answered 503, the store "unavailable", which an
    exporter retries for ever. The spans go again one by one: the bad one refused (a partial
    success), the good one kept."""
    good, bad = _sdk(111), _wrapper(112)
    bad["name"] = "".join(f"{i * 7919 % 100_003:x}" for i in range(3000))  # ~15 kB, no repeats
    good_kept_beside(served, good, bad)


def test_the_same_batch_sent_to_both_workers_at_once_is_stored_once(served: Serving) -> None:
    """A client's retries, racing: the same batch on several connections at once (the workers
    take turns accepting them). Every call stored once, and the answers agree: as many stored
    in all as the batch holds, the rest duplicates."""
    batch = json.dumps([record(1000 + i, feature="race") for i in range(150)])
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(served, "/v1/calls", batch, "application/json"), range(6)))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert sum(a.json()["stored"] for a in answers) == 150
    assert sum(a.json()["duplicates"] for a in answers) == 5 * 150
    with open_store(served.url) as store:  # type: ignore[attr-defined]
        assert store.count(CallFilter(feature="race")) == 150


def test_a_calls_usage_arriving_after_its_content_at_another_worker_is_kept(served: Serving) -> None:
    """One call as two spans exported apart, each to whichever worker takes it: the framework's
    LLM span (the content, no usage) first, then the SDK's span under it (the response id, 11
    and 7 tokens). The call was stored once with the content, but without the tokens and
    unpriced: the later span could only add content (`Intake.complete`), so what a call's
    figures were depended on which request arrived first. It now has them either way."""
    r = 201
    for span in (_wrapper(r), _sdk(r)):
        answer = post_spans(served, span)
        assert answer.status_code == 200 and answer.json() == {}, answer.text
    with open_store(served.url) as store:  # type: ignore[attr-defined]
        (call,) = [c for c in store.iter_calls(CallFilter()) if c.trace_id == f"{r + 1:032x}"]
    assert call.messages == [{"role": "user", "content": f"question {r}"}]
    assert (call.input_tokens, call.output_tokens) == (11, 7)
    assert call.cost_usd is not None and call.cost_usd > 0


@pytest.mark.parametrize("depth", [300, 3000])
def test_proxy_metadata_nested_too_deeply_is_bad_context(served: Serving, depth: int) -> None:
    """The proxy's `llmlog-metadata` header nested too deeply to keep. 3,000 levels: the
    header's JSON parser raises RecursionError, which is not caught: an HTTP 500 and a
    traceback. 300 levels: the request is forwarded and answered (the provider bills it), then
    the call cannot be stored ("metadata: nested too deeply") and is lost, with only a line in
    the server's log. Bad context is a 400 naming the header, and nothing is sent."""
    metadata = '{"k": ' + "[" * depth + "]" * depth + "}"
    r = httpx.post(
        served.base + "/openai/v1/chat/completions",
        json={"model": "gpt-4.1", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer sk-x", "llmlog-metadata": metadata},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    assert "llmlog-metadata" in r.json()["error"]
