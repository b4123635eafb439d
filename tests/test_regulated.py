"""Regulated mode cannot be bypassed: once `llmlog keys rotate` has run, the store itself
refuses clear text, whoever writes and whenever they opened it — a `llmlog serve` and a
writer started before the rotation, a writer racing it, on SQLite, PostgreSQL and ClickHouse
— and the metadata whose values are sealed is the store's own list, applied by every writer
(with or without LLMLOG_SENSITIVE_METADATA) and sealed by rotation where it is still clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from llmlog.core.config import Settings
from llmlog.core.encryption import Keyring, sealed_key_ids
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.core.sealed import is_sealed
from llmlog.operations.sealing import rotate
from llmlog.pipeline.writer import Writer
from llmlog.store import Store, open_store
from llmlog.store.clickhouse.engine import EmbeddedEngine
from llmlog.store.clickhouse.store import ClickHouseStore
from tests.backends import Backend
from tests.test_encryption import K1, raw_bytes
from tests.webui import free_port

NOW = datetime.now(UTC).replace(microsecond=0)
MARK = "CLEAR-TEXT-marker"  # in the text of every call written clear here
PATIENT = "PATIENT-ID-marker"  # in the value of a metadata name the store lists


def clear_call(name: str, **changes: Any) -> Call:
    return Call(
        id=name,
        timestamp=NOW - timedelta(seconds=len(name)),
        provider="anthropic",
        model="claude-sonnet-4-6",
        feature="triage",
        system_prompt=f"{MARK} system",
        messages=[{"role": "user", "content": f"{MARK} {name}"}],
        response={"content": [{"type": "text", "text": f"{MARK} answer"}]},
        input_tokens=12,
        output_tokens=3,
        metadata={"patient_id": f"{PATIENT} {name}", "ward": "B"},
    ).replace(**changes)


def uid(name: str) -> str:
    """The collector takes UUIDs for ids: one per name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def record(name: str, **more: Any) -> dict[str, Any]:
    """A call as the collector takes it (`POST /v1/calls`), its id `uid(name)`."""
    return {
        "id": uid(name),
        "timestamp": NOW.isoformat(),
        "model": "claude-sonnet-4-6",
        "input_tokens": 5,
        "messages": [{"role": "user", "content": f"{MARK} {name}"}],
        "metadata": {"patient_id": f"{PATIENT} {name}"},
        **more,
    }


def environment(key: str | None) -> dict[str, str]:
    """This environment without llmlog's own settings (no LLMLOG_SENSITIVE_METADATA), and
    with `key` as LLMLOG_KEY when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMLOG_")}
    return {**env, "LLMLOG_KEY": key} if key else env


def llmlog_process(db: str, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """`llmlog --db DB ARGS…` in a process of its own."""
    command = [sys.executable, "-c", "from llmlog.cli import cli; cli()", "--db", db, *args]
    return subprocess.run(command, env=environment(key), capture_output=True, text=True, timeout=120)


class Serve:
    """`llmlog serve` in a process of its own, on a free loopback port."""

    def __init__(self, db: str, key: str | None = None) -> None:
        self.port = free_port()
        command = [sys.executable, "-c", "from llmlog.cli import cli; cli()", "--db", db, "serve"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--no-retention"],
            env=environment(key),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Serve:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.base + "/v1/openapi.json", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                assert self.process.poll() is None, self.process.communicate()[1]
                assert time.monotonic() < deadline, "llmlog serve did not start"
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.communicate(timeout=30)

    def post(self, records: list[dict[str, Any]]) -> httpx.Response:
        return httpx.post(self.base + "/v1/calls", json=records, timeout=30)


def writer(db: str, key: str | None = None, **more: Any) -> Writer:
    """The SDK's writer to `db`, with `key` or none, and no LLMLOG_SENSITIVE_METADATA."""
    return Writer(Settings(db=db, url=None, key=key, key_file=None, sensitive_metadata=[], **more))


def clear_ids(store: Store, sensitive: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """The calls stored with clear text, or a clear value of a metadata name in `sensitive`."""
    store.keyring = None
    found = []
    for c in store.iter_calls(CallFilter()):
        meta = c.metadata or {}
        if "" in sealed_key_ids(c) or any(
            v is not None and not is_sealed(v) for k, v in meta.items() if k in sensitive
        ):
            found.append(c.id)
    return found


# ---------------------------------------------------------------- SQLite and PostgreSQL


def test_processes_opened_before_a_rotation_elsewhere_store_no_clear_text(backend: Backend) -> None:
    """A `llmlog serve` and a writer, both without a key and both started before another
    process ran `llmlog keys rotate`: the 20 clear calls each sends after it are refused,
    and nothing written clear is left in the store's files."""
    early = writer(backend.url, flush_interval_s=0.01)
    assert early.submit(Call(id="figures", timestamp=NOW, model="m", input_tokens=1))
    assert early.flush(10)  # its store is open now, taking clear text
    with Serve(backend.url) as server:
        before = server.post([record("sent-before")])
        assert before.status_code == 200 and before.json()["stored"] == 1  # not regulated yet
        rotated = llmlog_process(backend.url, "keys", "rotate", key=K1)
        assert rotated.returncode == 0, rotated.stderr
        after = server.post([record(f"sent-after-{i}") for i in range(20)])
        assert after.status_code == 400, after.text
        assert after.json()["stored"] == 0 and len(after.json()["rejected"]) == 20
        assert "no key is set here" in after.json()["rejected"][0]["reason"]
    for i in range(20):
        assert early.submit(clear_call(f"written-after-{i}"))
    early.close()
    assert (early.stats().recorded, early.stats().failed, early.stats().dropped) == (1, 20, 0)
    raw = raw_bytes(backend)
    assert MARK.encode() not in raw  # the call sent before was sealed by the rotation
    with backend.open() as store:
        assert sorted(c.id for c in store.iter_calls(CallFilter())) == sorted(["figures", uid("sent-before")])
        assert clear_ids(store) == []


def test_a_writer_racing_a_rotation_stores_nothing_clear_and_loses_nothing(backend: Backend) -> None:
    """A writer without a key writes all the while `llmlog keys rotate` runs in another
    process (and on after it): every call it was given is stored sealed (by the rotation)
    or counted failed (refused after the store turned sealed-only); none is left clear."""
    with backend.open() as store:
        store.insert([clear_call(f"old-{i:03d}") for i in range(300)])  # for the sweep to take a while
    racing = writer(backend.url, flush_interval_s=0.005, batch_size=20)
    stop = threading.Event()
    submitted = 0

    def write() -> None:
        nonlocal submitted
        while not stop.is_set():
            assert racing.submit(clear_call(f"racing-{submitted:05d}"))
            submitted += 1
            time.sleep(0.001)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        rotated = llmlog_process(backend.url, "keys", "rotate", key=K1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    racing.close()
    assert rotated.returncode == 0, rotated.stderr
    stats = racing.stats()
    assert stats.dropped == 0 and stats.recorded + stats.failed == submitted
    assert stats.failed > 0  # it did meet the sealed-only store
    with backend.open() as store:
        assert clear_ids(store) == []
        assert store.count(CallFilter()) == 300 + stats.recorded
    assert MARK.encode() not in raw_bytes(backend)


def test_the_sensitive_metadata_list_is_the_stores_own(backend: Backend) -> None:
    """Named in the store (not in LLMLOG_SENSITIVE_METADATA, which no process here sets):
    a writer with a key seals the values, the rotation seals those stored clear before,
    a writer without a key is refused a call bringing one clear (its other call is stored),
    and the collector, which has the key, seals them on arrival."""
    url = backend.url
    shown = llmlog_process(url, "keys", "sensitive-metadata", "set", "patient_id,mrn")
    assert shown.returncode == 0 and "mrn, patient_id" in shown.stdout, shown.stderr
    assert "ward" in llmlog_process(url, "keys", "sensitive-metadata", "add", "ward").stdout
    assert "ward" not in llmlog_process(url, "keys", "sensitive-metadata", "remove", "ward").stdout
    with backend.open() as store:
        assert store.sensitive_metadata == {"patient_id", "mrn"}
        store.insert([Call(id="clear-before", timestamp=NOW, model="m", metadata={"patient_id": PATIENT})])

    keyed = writer(url, key=K1)
    assert keyed.submit(clear_call("keyed"))
    keyed.close()
    assert keyed.stats().recorded == 1
    with backend.open() as store:
        store.keyring = None
        stored = store.get("keyed")
        assert stored is not None and stored.metadata is not None
        assert is_sealed(stored.metadata["patient_id"]) and stored.metadata["ward"] == "B"
        assert clear_ids(store, {"patient_id"}) == ["clear-before"]

    rotated = llmlog_process(url, "keys", "rotate", key=K1)
    assert rotated.returncode == 0 and "Sealed 1 call(s)" in rotated.stdout, rotated.stderr
    assert PATIENT.encode() not in raw_bytes(backend)
    status = llmlog_process(url, "keys", "status").stdout
    assert "sealed text only" in status and "mrn, patient_id" in status

    keyless = writer(url)
    assert keyless.submit(
        Call(id="figures-and-patient", timestamp=NOW, model="m", metadata={"patient_id": "p"})
    )
    assert keyless.submit(Call(id="figures-and-ward", timestamp=NOW, model="m", metadata={"ward": "C"}))
    keyless.close()
    assert (keyless.stats().recorded, keyless.stats().failed) == (1, 1)

    with Serve(url, key=K1) as server:
        r = server.post([record("collected", metadata={"patient_id": f"{PATIENT} collected", "mrn": 1234})])
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert PATIENT.encode() not in raw_bytes(backend) and MARK.encode() not in raw_bytes(backend)
    with backend.open() as store:
        assert clear_ids(store, {"patient_id", "mrn"}) == []
        assert store.get("figures-and-patient") is None and store.get("figures-and-ward") is not None
        store.keyring = Keyring.parse(K1)
        collected = store.get(uid("collected"))
        assert collected is not None and collected.metadata == {
            "patient_id": f"{PATIENT} collected",
            "mrn": 1234,
        }


def test_text_that_only_begins_like_a_sealed_value_is_clear_text(backend: Backend) -> None:
    disguised = "llmlog-enc:v1: but clear, PATIENT-ID-marker"
    with backend.open() as store:
        rotate(store, Keyring.parse(K1), "admin")
        with pytest.raises(ValueError, match="no key is set here"):
            store.insert([Call(id="disguised", timestamp=NOW, model="m", system_prompt=disguised)])
        store.keyring = Keyring.parse(K1)
        store.insert([Call(id="sealed", timestamp=NOW, model="m", system_prompt=disguised)])
        assert (got := store.get("sealed")) is not None and got.system_prompt == disguised
    assert PATIENT.encode() not in raw_bytes(backend)


def test_postgres_marks_sealed_only_only_once_the_inserts_under_way_commit(pg_url: str) -> None:
    """The lock order rotation relies on: an insert holds the content epoch's row for share
    from its first statement (before it reads the settings) to its commit, and the mark takes
    it for update, so the mark cannot commit while an insert that found the store taking
    clear text is still open; that insert is in the store when the sweep reads it."""
    import psycopg

    with open_store(pg_url) as store, psycopg.connect(pg_url) as insert_under_way:
        insert_under_way.execute("SELECT value FROM settings WHERE key = 'content_epoch' FOR SHARE")
        marked = threading.Event()
        thread = threading.Thread(target=lambda: (store.require_sealed("k1"), marked.set()))
        thread.start()
        assert not marked.wait(0.5)
        insert_under_way.commit()
        assert marked.wait(10)
        thread.join()
        assert store.sealing_policy().required


# ---------------------------------------------------------------- ClickHouse (embedded)


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[ClickHouseStore, ClickHouseStore]]:
    """Two stores over one ClickHouse: as two processes using one server (the embedded
    engine takes a directory once per process, so they share it)."""
    path = str(tmp_path / "ch")
    engine = EmbeddedEngine(path)
    try:
        yield ClickHouseStore(f"chdb://{path}", engine), ClickHouseStore(f"chdb://{path}", engine)
    finally:
        engine.close()


def clickhouse_raw(store: ClickHouseStore) -> str:
    return json.dumps(store.engine.rows("SELECT * FROM call_data")[1], default=str)


def test_clickhouse_refuses_clear_text_once_another_store_rotated(
    two_stores: tuple[ClickHouseStore, ClickHouseStore],
) -> None:
    writing, admin = two_stores
    writing.insert([clear_call("before")])
    rotate(admin, Keyring.parse(K1), "admin", settle_s=0)
    with pytest.raises(ValueError, match="no key is set here"):
        writing.insert([clear_call(f"after-{i}") for i in range(20)])
    assert writing.insert([Call(id="figures", timestamp=NOW, model="m", input_tokens=1)]) == 1
    assert MARK not in clickhouse_raw(admin) and clear_ids(admin) == []
    assert admin.count(CallFilter()) == 2


def test_clickhouse_writes_racing_a_rotation_are_sealed_or_refused(
    two_stores: tuple[ClickHouseStore, ClickHouseStore],
) -> None:
    writing, admin = two_stores
    admin.insert([clear_call(f"old-{i:03d}") for i in range(30)])
    stop = threading.Event()
    counts = {"submitted": 0, "stored": 0, "failed": 0}

    def write() -> None:  # as the writer does: a batch, and each call alone when one is refused
        n = 0
        while not stop.is_set():
            batch = [clear_call(f"racing-{n + i:05d}") for i in range(5)]
            n += 5
            counts["submitted"] += 5
            try:
                counts["stored"] += writing.insert(batch)
            except ValueError:
                for call in batch:
                    try:
                        counts["stored"] += writing.insert([call])
                    except ValueError:
                        counts["failed"] += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        time.sleep(0.1)
        rotate(admin, Keyring.parse(K1), "admin", settle_s=0.2)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert counts["failed"] > 0 and counts["stored"] + counts["failed"] == counts["submitted"]
    assert clear_ids(admin) == [] and MARK not in clickhouse_raw(admin)
    assert admin.count(CallFilter()) == 30 + counts["stored"]


def test_clickhouse_applies_the_stores_sensitive_metadata(
    two_stores: tuple[ClickHouseStore, ClickHouseStore],
) -> None:
    from llmlog.operations.sealing import set_sensitive_metadata

    writing, admin = two_stores
    writing.insert([Call(id="clear-before", timestamp=NOW, model="m", metadata={"patient_id": PATIENT})])
    set_sensitive_metadata(admin, ["patient_id"])
    writing.keyring = Keyring.parse(K1)  # a key, and no sensitive names of its own
    writing.insert(
        [Call(id="keyed", timestamp=NOW, model="m", metadata={"patient_id": PATIENT, "ward": "B"})]
    )
    assert clear_ids(admin, {"patient_id"}) == ["clear-before"]
    assert rotate(admin, Keyring.parse(K1), "admin", settle_s=0).calls == 1
    assert PATIENT not in clickhouse_raw(admin) and clear_ids(admin, {"patient_id"}) == []
    writing.keyring = None
    with pytest.raises(ValueError, match="metadata 'patient_id'"):
        writing.insert([Call(id="keyless", timestamp=NOW, model="m", metadata={"patient_id": "p"})])
