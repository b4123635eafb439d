"""POST /v1/calls: records of one id in one body, where the store refuses some of them as
data and the intake refuses another. Each record is counted once: rejected once by its
index, so that received = stored + duplicates + rejected."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx
import pytest

from llmlog.core.filters import CallFilter
from llmlog.core.record import Call, RecordError
from llmlog.pipeline.intake import Intake
from tests.backends import SQLiteBackend
from tests.webui import Running

TOKEN = "ingest-s3cret"


def test_a_record_the_intake_refuses_between_two_the_store_refuses_is_rejected_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = SQLiteBackend(str(tmp_path / "calls.db"))
    cid = str(uuid.uuid4())
    records = [
        {"id": cid, "timestamp": "2026-01-02T03:04:05Z", "model": "refused-by-store"},
        {"id": cid, "timestamp": "2026-01-02T03:04:05Z", "model": "refused-by-intake"},
        {"id": cid, "timestamp": "2026-01-02T03:04:05Z", "model": "refused-by-store"},
    ]
    with Running(backend, ingest_token=TOKEN) as c:
        store_type = type(c.store)
        real_insert, real_call = store_type.insert, Intake.call

        def insert(self: object, calls: Sequence[Call]) -> int:
            if any(call.model == "refused-by-store" for call in calls):
                raise ValueError("a value this store cannot keep")
            return real_insert(self, calls)  # type: ignore[arg-type]

        def call(self: Intake, item: Call) -> Call:
            if item.model == "refused-by-intake":
                raise RecordError("input_tokens: not a figure this store keeps")
            return real_call(self, item)

        monkeypatch.setattr(store_type, "insert", insert)
        monkeypatch.setattr(Intake, "call", call)
        r = httpx.post(
            c.base + "/v1/calls",
            content=json.dumps(records).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        monkeypatch.undo()
        answer = r.json()
        # Every record is refused, each once: nothing kept, so the answer is a 400.
        assert [b["index"] for b in answer["rejected"]] == [0, 1, 2], answer
        assert (answer["received"], answer["stored"], answer["duplicates"]) == (3, 0, 0), answer
        assert r.status_code == 400, answer
        assert c.store.count(CallFilter()) == 0
