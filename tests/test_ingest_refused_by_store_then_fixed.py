"""POST /v1/calls: a record the store refuses as data (ClickHouse keeps times from 1900 to
2299), then the client's fix of it under the same id in the same body: the fix is stored,
as it is after a record the intake refuses, not skipped as a duplicate of the refused one
and stored nowhere (answered "duplicates": 1 with nothing stored)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx2 as httpx

from llmlog.core.filters import CallFilter
from tests.backends import ClickHouseBackend
from tests.otel_programs import TOKEN
from tests.webui import Running


def test_a_fix_after_a_record_the_store_refused_is_stored(tmp_path: Path) -> None:
    cid = str(uuid.uuid4())
    records = [
        {"id": cid, "timestamp": "2400-01-02T03:04:05Z", "model": "m"},  # refused by the store
        {"id": cid, "timestamp": "2026-01-02T03:04:05Z", "model": "m"},  # the client's fix
    ]
    with Running(ClickHouseBackend(tmp_path / "ch"), ingest_token=TOKEN) as c:
        r = httpx.post(
            c.base + "/v1/calls",
            content=json.dumps(records).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert [b["index"] for b in answer["rejected"]] == [0], answer
        assert (answer["stored"], answer["duplicates"]) == (1, 0), answer
        assert [call.id for call in c.store.iter_calls(CallFilter())] == [cid]
