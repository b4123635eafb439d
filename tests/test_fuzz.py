"""The collector's ingestion routes under generated, malformed input: never a server error,
never a good record lost beside a bad one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from llmlog.core.filters import CallFilter
from llmlog.web.ingest import openapi_description
from tests.backends import SQLiteBackend
from tests.webui import Running

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    with Running(SQLiteBackend(path), ingest_token=TOKEN) as running:
        yield running


schema = schemathesis.openapi.from_dict(openapi_description())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_get_a_server_error(case: schemathesis.Case, collector: Running) -> None:
    case.call_and_validate(base_url=collector.base, headers=AUTH, checks=[not_a_server_error])


def _good(i: int) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1",
            "feature": "fuzz", "input_tokens": i}  # fmt: skip


JUNK = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.sampled_from(["id", "timestamp", "model", "input_tokens", "bogus", "tags", "cost_usd"]),
        # Finite floats: JSON has no infinity (json.dumps would write a bare `Infinity`).
        st.one_of(st.none(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                  st.text(max_size=10), st.lists(st.integers(), max_size=2)),
        max_size=4,
    ),
)  # fmt: skip


@given(st.lists(st.one_of(st.integers(0, 10**6).map(_good), JUNK), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_good_record_beside_junk_is_stored(collector: Running, items: list[Any]) -> None:
    good = [i for i, x in enumerate(items) if isinstance(x, dict) and x.get("feature") == "fuzz"]
    r = httpx.post(collector.base + "/v1/calls", content=json.dumps(items), headers=AUTH, timeout=30)
    assert r.status_code in (200, 400), r.text
    body = r.json()
    assert body["received"] == len(items)
    rejected = {x["index"] for x in body["rejected"]}
    assert not rejected & set(good)  # no good record is refused
    assert body["stored"] + body["duplicates"] + len(rejected) == len(items)
    ids = [items[i]["id"] for i in good]
    assert collector.store.count(CallFilter(ids=ids)) == len(ids) if ids else True


@given(st.binary(max_size=300), st.sampled_from(["application/x-protobuf", "application/json"]))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_otlp_garbage_is_a_clear_refusal(collector: Running, body: bytes, content_type: str) -> None:
    for path in ("/v1/traces", "/v1/logs"):
        r = httpx.post(collector.base + path, content=body, headers={**AUTH, "Content-Type": content_type})
        assert r.status_code in (200, 400), (path, r.status_code, r.text)
