"""The collector's `POST /v1/calls` over real HTTP, into each store kind."""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import uuid
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from llmlog.core.filters import CallFilter
from llmlog.web.ingest import MAX_BODY, MAX_RECORD
from tests.backends import Backend, PostgresBackend
from tests.conftest import temp_postgres
from tests.test_writer import Raising
from tests.webui import Running

TOKEN = "ingest-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def collector(backend: Backend) -> Iterator[Running]:
    with Running(backend, ingest_token=TOKEN) as running:
        yield running


def record(i: int, **more: object) -> dict[str, object]:
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "timestamp": f"2026-11-30T12:{i % 60:02d}:00Z",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "feature": "ingest-test",
        "input_tokens": 1000 + i,
        "output_tokens": 50,
        "messages": [{"role": "user", "content": f"question {i}"}],
        **more,
    }


def post(c: Running, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(c.base + "/v1/calls", content=body, headers={**AUTH, **(headers or {})}, timeout=30)


def test_a_batch_is_stored_priced_and_idempotent(collector: Running) -> None:
    batch = json.dumps([record(i) for i in range(20)])
    r = post(collector, batch, {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 20, "stored": 20, "duplicates": 0, "rejected": []}
    stored = collector.store.recent(CallFilter(feature="ingest-test"), limit=50)
    assert len(stored) == 20
    # Priced at ingest from the rate card, like a call the SDK recorded.
    assert all(c.cost_usd is not None and c.cost_usd > 0 and c.rate_card for c in stored)
    assert {c.messages[0]["content"] for c in stored if c.messages} == {f"question {i}" for i in range(20)}
    # Sent again (a lost response, a retry): stored once.
    again = post(collector, batch)
    assert again.json() == {"received": 20, "stored": 0, "duplicates": 20, "rejected": []}
    assert collector.store.count(CallFilter(feature="ingest-test")) == 20


def test_ndjson_one_record_and_records_without_ids(collector: Running) -> None:
    lines = "\n".join(json.dumps(record(i)) for i in range(3)) + "\n\n"
    r = post(collector, lines, {"Content-Type": "application/x-ndjson"})
    assert r.json()["stored"] == 3
    one = post(collector, json.dumps(record(7)))
    assert one.status_code == 200 and one.json()["stored"] == 1
    # No id: one is derived from the record, so sending it twice stores it once.
    bare = {"timestamp": "2026-11-30T13:00:00Z", "model": "gpt-4.1", "feature": "bare"}
    assert post(collector, json.dumps(bare)).json()["stored"] == 1
    assert post(collector, json.dumps(bare)).json()["duplicates"] == 1
    assert collector.store.count(CallFilter(feature="bare")) == 1


def test_bad_records_are_rejected_by_index_and_the_good_ones_kept(collector: Running) -> None:
    good = [record(i) for i in range(4)]
    batch = [good[0], {"timestamp": "yesterday-ish"}, good[1], 42, {**good[2], "input_tokens": -5},
             {"bogus": 1, "timestamp": "2026-11-30T12:00:00Z"}, good[3]]  # fmt: skip
    r = post(collector, json.dumps(batch))
    assert r.status_code == 200
    body = r.json()
    assert body["received"] == 7 and body["stored"] == 3
    assert [x["index"] for x in body["rejected"]] == [1, 3, 4, 5]
    reasons = {x["index"]: x["reason"] for x in body["rejected"]}
    assert "timestamp" in reasons[1] and "object" in reasons[3]
    assert "input_tokens" in reasons[4] and "bogus" in reasons[5]
    assert collector.store.count(CallFilter(feature="ingest-test")) == 3
    # NDJSON: a line that is not JSON is one bad record, by its index among the records.
    lines = [json.dumps(record(10)), "{not json", json.dumps(record(11))]
    r = post(collector, "\n".join(lines))
    assert r.json()["stored"] == 2 and r.json()["rejected"][0]["index"] == 1
    # Nothing readable at all: 400, with the reasons.
    r = post(collector, "[1, 2]")
    assert r.status_code == 400 and len(r.json()["rejected"]) == 2
    assert post(collector, "").json()["received"] == 0


def test_figures_that_would_poison_the_rollups_are_rejected(collector: Running) -> None:
    """NaN, infinities and negative costs and times used to be kept, and stayed in `daily`
    for ever (a sum with one NaN is NaN). Each such record is refused, naming its field."""
    bad = {1: ("cost_usd", "NaN"), 2: ("latency_ms", "Infinity"), 3: ("cost_usd", "-0.5"),
           4: ("first_token_ms", "-Infinity"), 5: ("latency_ms", "-3")}  # fmt: skip
    lines = [json.dumps(record(20))]
    for i, (name, value) in bad.items():
        lines.append(json.dumps(record(20 + i))[:-1] + f', "{name}": {value}}}')
    r = post(collector, "\n".join(lines), {"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] == 1
    assert {x["index"]: x["reason"].split(":")[0] for x in body["rejected"]} == {
        i: name for i, (name, _) in bad.items()
    }
    (kept,) = collector.store.recent(CallFilter(feature="ingest-test"), limit=10)
    assert kept.latency_ms is None and kept.cost_usd is not None and kept.cost_usd >= 0


def test_an_ndjson_line_too_deep_for_the_parser_is_one_bad_record(collector: Running) -> None:
    """BUG: json.loads raised RecursionError on 5,000 levels of nesting, out of the batch: the
    request failed whole instead of rejecting that record."""
    deep = '{"timestamp": "2026-11-30T12:00:00Z", "metadata": {"x": ' + "[" * 5000 + "]" * 5000 + "}}"
    r = post(collector, "\n".join([json.dumps(record(20)), deep, json.dumps(record(21))]))
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 2
    assert r.json()["rejected"] == [{"index": 1, "reason": "invalid JSON: nested too deeply"}]


def test_hostile_records_are_data(collector: Running) -> None:
    nasty = "'); DROP TABLE call_data; -- <script>alert(1)</script>"
    r = post(collector, json.dumps(record(1, user_id=nasty, feature=nasty, system_prompt=nasty)))
    assert r.json()["stored"] == 1
    (c,) = collector.store.recent(CallFilter(user_id=nasty))
    assert c.feature == nasty and c.system_prompt == nasty


def test_the_token_opens_ingestion_only(backend: Backend) -> None:
    with Running(backend, token="ui-token", ingest_token=TOKEN) as c:
        body = json.dumps(record(1))
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer ui-token"}):
            r = httpx.post(c.base + "/v1/calls", content=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.store.count(CallFilter()) == 0
        assert post(c, body).status_code == 200
        # Write-only: the ingest token reads nothing.
        for path in ("/", "/api/calls", f"/api/calls/{uuid.UUID(int=2)}", "/sql?q=select+1"):
            assert c.get(path, headers=AUTH).status_code == 401, path
        assert c.get("/api/calls", headers={"Authorization": "Bearer ui-token"}).status_code == 200


def test_gzip_bodies(collector: Running) -> None:
    batch = json.dumps([record(i) for i in range(5)]).encode()
    r = post(collector, gzip.compress(batch), {"Content-Encoding": "gzip"})
    assert r.json()["stored"] == 5
    r = post(collector, b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"]


def test_oversized_bodies_and_records_get_413(collector: Running) -> None:
    # Declared too large: refused before the body is read (only 1 KB of it is ever sent).
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        head = (
            f"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {MAX_BODY + 1}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"[" + b" " * 1024)
        assert sock.recv(100).startswith(b"HTTP/1.1 413")
    # A gzip bomb: small on the wire, over the limit unpacked.
    bomb = gzip.compress(b" " * (MAX_BODY + 10))
    assert len(bomb) < 200_000
    r = post(collector, bomb, {"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]
    # One record over the record limit: rejected as too large, the others kept.
    big = record(2, system_prompt="x" * (MAX_RECORD + 1))
    r = post(collector, json.dumps([record(1), big]))
    assert r.status_code == 200 and r.json()["stored"] == 1
    assert "too large" in r.json()["rejected"][0]["reason"]
    r = post(collector, json.dumps(big))
    assert r.status_code == 413 and r.json()["rejected"][0]["index"] == 0


def test_openapi_description(collector: Running) -> None:
    spec = httpx.get(collector.base + "/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    post_op = spec["paths"]["/v1/calls"]["post"]
    assert {"200", "400", "401", "413", "503"} <= set(post_op["responses"])
    record_schema = spec["components"]["schemas"]["Record"]
    assert "timestamp" in record_schema["required"] and "input_tokens" in record_schema["properties"]
    # Every reference names a schema the description defines (a client generator follows them).
    refs = re.findall(r'"\$ref": "([^"]*)"', json.dumps(spec))
    assert refs and all(r.startswith("#/components/schemas/") for r in refs), refs
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(spec["components"]["schemas"])


def test_store_down_is_a_503_and_nothing_of_the_batch_is_lost() -> None:
    server = temp_postgres()
    try:
        with Running(PostgresBackend(server.url), ingest_token=TOKEN) as c:
            assert post(c, json.dumps([record(i) for i in range(3)])).json()["stored"] == 3
            c.store.close()
            server.stop()
            batch = json.dumps([record(i) for i in range(3, 8)])
            # An app's log handler that raises does not make the store's outage a 500.
            raising = Raising(OSError("the log sink is down"))
            logging.getLogger("llmlog").addHandler(raising)
            try:
                r = post(c, batch)
            finally:
                logging.getLogger("llmlog").removeHandler(raising)
            assert raising.lines == 1
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "send it again" in r.json()["error"]
            server.start()
            r = post(c, batch)  # the client's retry, once the store is back
            assert r.status_code == 200 and r.json()["stored"] == 5
            assert c.store.count(CallFilter(feature="ingest-test")) == 8
    finally:
        server.destroy()
