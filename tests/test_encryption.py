"""Regulated mode: sealed values, no plaintext in the store's files, figures still clear,
reading with the key (audited) and without it, rotation to a new key (and from clear text),
a store that takes sealed text only, and the audit log out of reach of read-only SQL."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import pytest
from click.testing import CliRunner

import llmlog
from llmlog.cli import cli
from llmlog.core.config import Settings
from llmlog.core.encryption import KeyProblem, Keyring, new_key, sealed_key_ids
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.core.sealed import is_sealed
from llmlog.demo.fake_provider import FakeProvider
from llmlog.operations.sealing import rotate
from llmlog.pipeline.intake import prepare
from llmlog.pipeline.writer import Writer
from llmlog.store import ReadOnlyError, open_store
from tests.backends import Backend, stored_bytes

K1 = "k1:" + base64.b64encode(bytes(range(32))).decode()
K2 = "k2:" + base64.b64encode(bytes(range(32, 64))).decode()
NOW = datetime.now(UTC).replace(microsecond=0)

# Text that must never be found in the store as it is written.
SECRETS = {
    "system": "SYSTEM-PROMPT-marker-Ω",
    "user": "USER-MESSAGE-marker-42",
    "answer": "ANSWER-TEXT-marker",
    "tool": "TOOL-ARGUMENT-marker",
    "tools": "TOOL-LIST-marker",
    "error": "ERROR-MESSAGE-marker",
    "patient": "PATIENT-ID-marker",
    "param": "STOP-SEQUENCE-marker",
}


def sensitive_call(i: int = 0, **kw: Any) -> Call:
    return Call(
        id=f"call-{i}",
        timestamp=NOW - timedelta(minutes=i),
        provider="anthropic",
        model="claude-sonnet-4-6",
        feature="triage",
        user_id=f"user-{i % 3}",
        session_id="s1",
        system_prompt=f"{SECRETS['system']} v{i % 2}",
        messages=[
            {"role": "user", "content": f"{SECRETS['user']} first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": f"{SECRETS['user']} turn {i}"},
        ],
        tools=[{"name": "lookup", "description": SECRETS["tools"]}],
        params={"max_tokens": 100, "stop_sequences": [SECRETS["param"]]},
        response={"content": [{"type": "text", "text": f"{SECRETS['answer']} {i}"}]},
        tool_calls=[
            {"id": "t1", "name": "lookup", "input": {"q": SECRETS["tool"]}},
            {"id": "t2", "name": "x"},
        ],
        input_tokens=100 + i,
        output_tokens=20,
        cost_usd=0.001,
        latency_ms=300.0 + i,
        error={"type": "overloaded_error", "status": 529, "message": SECRETS["error"]}
        if i % 4 == 3
        else None,
        metadata={"patient_id": SECRETS["patient"], "ward": "B"},
        **kw,
    )


def keyring(text: str = K1) -> Keyring:
    return Keyring.parse(text, sensitive_metadata=["patient_id"])


def raw_bytes(backend: Backend) -> bytes:
    """Everything the store holds, as bytes: the SQLite files, or every PostgreSQL table's rows."""
    if backend.kind == "sqlite":
        return stored_bytes(backend.url)
    rows = backend.sql(
        "SELECT string_agg(t::text, '|') FROM (SELECT row_to_json(c)::text AS t FROM content AS c"
        " UNION ALL SELECT row_to_json(d)::text FROM call_data AS d) AS x"
    )
    return (rows[0][0] or "").encode()


def test_a_value_seals_and_opens() -> None:
    ring = keyring(f"{K2},{K1}")
    sealed = ring.seal("hello ✓")
    assert sealed.startswith("llmlog-enc:v1:k2:") and "hello" not in sealed
    assert ring.seal("hello ✓") == sealed  # the same text, the same value: stored once
    assert ring.seal("hello ✓!") != sealed
    assert ring.open(sealed) == "hello ✓"
    assert keyring(K1).seal("hello ✓") != sealed  # another key, another value
    assert keyring(f"{K1},{K2}").open(sealed) == "hello ✓"  # an older key still opens
    with pytest.raises(KeyProblem, match="no key k2"):
        keyring(K1).open(sealed)
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(KeyProblem, match="altered"):
        ring.open(tampered)
    with pytest.raises(KeyProblem, match="damaged"):
        ring.open("llmlog-enc:v1:k2:abcde")
    # Another key that calls itself k2 does not open it either.
    impostor = "k2:" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(KeyProblem):
        keyring(impostor).open(sealed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("k1", "ID:BASE64"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(bytes(16)).decode(), "32 bytes"),
        (f"{K1},{K1}", "twice"),
        ("bad id:" + base64.b64encode(bytes(32)).decode(), "letters, digits"),
    ],
)
def test_a_bad_key_is_an_error_when_configured(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(KeyProblem, match=message):
        Keyring.parse(text)
    monkeypatch.setenv("LLMLOG_KEY", text or ",")
    with pytest.raises(KeyProblem, match=message):
        Settings()


def test_new_keys_parse() -> None:
    a, b = new_key(), new_key()
    assert a != b
    assert Keyring.parse(f"{a}\n# retired soon\n{b}\n").ids == [a.split(":")[0], b.split(":")[0]]


def test_a_sealed_store_holds_no_plaintext_and_clear_figures(backend: Backend) -> None:
    calls = [sensitive_call(i) for i in range(8)]
    with backend.open() as store:
        store.keyring = keyring()
        store.insert(calls)
    raw = raw_bytes(backend)
    for marker in SECRETS.values():
        assert marker.encode() not in raw, marker
    assert b"claude-sonnet-4-6" in raw and b"triage" in raw  # summary columns stay clear
    with backend.open() as store:
        # Without the key: the figures and the rollups work; the text reads sealed.
        plain = store.get("call-3")
        assert plain is not None and is_sealed(plain.system_prompt)
        assert all(is_sealed(m) for m in plain.messages or [])
        assert plain.error is not None and plain.error["type"] == "overloaded_error"
        assert is_sealed(plain.error["message"]) and plain.metadata is not None
        assert is_sealed(plain.metadata["patient_id"]) and plain.metadata["ward"] == "B"
        assert (plain.input_tokens, plain.latency_ms, plain.model) == (103, 303.0, "claude-sonnet-4-6")
        (row,) = store.query(
            "SELECT sum(calls), sum(tool_calls), sum(input_tokens), sum(users) FROM daily"
        ).rows
        assert tuple(int(v) for v in row) == (8, 16, sum(c.input_tokens or 0 for c in calls), 3)
        assert "overloaded_error" in str(store.query("SELECT error_types FROM daily").rows)
        assert store.audit_log() == []  # nothing was opened
        # With it: whole, and the reading audited.
        store.keyring, store.reader = keyring(), "alice (test)"
        got = store.get("call-3")
        assert got is not None
        expected = calls[3]
        for field in (
            "system_prompt",
            "messages",
            "tools",
            "params",
            "response",
            "tool_calls",
            "error",
            "metadata",
        ):
            assert getattr(got, field) == getattr(expected, field), field
        listed = store.recent(CallFilter(), brief=True)
        assert listed[0].messages == [
            expected.messages[-1] if listed[0].id == "call-3" else calls[0].messages[-1]
        ]
        log = store.audit_log()
        assert [(e.who, e.action, e.call_ids) for e in log[::-1]] == [
            ("alice (test)", "read", ["call-3"]),
            ("alice (test)", "read", [c.id for c in calls]),
        ]
        assert log[0].time > NOW - timedelta(minutes=5)


def test_content_sealed_the_same_is_stored_once(backend: Backend) -> None:
    with backend.open() as store:
        store.keyring = keyring()
        store.insert([sensitive_call(i) for i in range(20)])
        # Two system prompts, the shared first turns, one last turn per call, one tool list
        # and one params: as many pieces as without encryption.
        (n,) = store.query("SELECT count(*) FROM content").rows[0]
        assert n == 2 + 2 + 20 + 1 + 1


def test_the_sdk_path_seals_before_the_store(fake: FakeProvider, tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    llmlog.configure(db=db, key=K1)
    try:
        client = llmlog.wrap(
            anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=0)
        )
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=40, system=SECRETS["system"],
            messages=[{"role": "user", "content": SECRETS["user"]}],
        )  # fmt: skip
        assert llmlog.flush(10)
    finally:
        llmlog.configure(db=db)
    raw = stored_bytes(tmp_path / "r.db")
    assert SECRETS["system"].encode() not in raw and SECRETS["user"].encode() not in raw
    with open_store(db) as store:
        store.keyring = keyring()
        (call,) = list(store.iter_calls(CallFilter()))
    assert call.system_prompt == SECRETS["system"]
    assert call.messages == [{"role": "user", "content": SECRETS["user"]}]
    assert call.response is not None and call.output_tokens


def test_rotation_to_a_new_key_and_from_clear_text(backend: Backend) -> None:
    with backend.open() as store:
        store.insert([sensitive_call(i) for i in range(4)])  # clear, before regulated mode
        store.keyring = keyring(K1)
        store.insert([sensitive_call(i) for i in range(4, 8)])
        store.keyring = None
        assert {k for c in store.iter_calls(CallFilter()) for k in sealed_key_ids(c)} == {"", "k1"}

        # A key missing for what is stored: stopped before anything changes.
        with pytest.raises(KeyProblem, match="k1"):
            rotate(store, keyring(K2), "admin")
        done = rotate(store, keyring(f"{K2},{K1}"), "admin")
        assert done.calls == 8 and done.contents > 0
        assert {k for c in store.iter_calls(CallFilter()) for k in sealed_key_ids(c)} == {"k2"}
        assert store.sealed_only and store.audit_log()[0].action.startswith("rotate to key k2: 8 call(s)")
    raw = raw_bytes(backend)
    for marker in SECRETS.values():
        assert marker.encode() not in raw, marker
    with backend.open() as store:
        assert store.sealed_only  # every process opening it now knows
        store.keyring = keyring(K2)  # k1 retired: k2 alone opens everything
        for c in store.iter_calls(CallFilter()):
            assert c.system_prompt is not None and c.system_prompt.startswith(SECRETS["system"])
            assert c.metadata is not None and c.metadata["patient_id"] == SECRETS["patient"]
        # Rotating again does nothing.
        assert rotate(store, keyring(K2), "admin").calls == 0


def test_a_sealed_only_store_refuses_clear_text(backend: Backend, tmp_path: Path) -> None:
    with backend.open() as store:
        store.keyring = keyring()
        rotate(store, keyring(), "admin")
    with backend.open() as store:
        with pytest.raises(ValueError, match="LLMLOG_KEY"):
            store.insert([sensitive_call(1)])
        store.insert([Call(id="figures-only", timestamp=NOW, model="m", input_tokens=3)])  # no text: fine
        store.keyring = keyring()
        assert store.insert([sensitive_call(2)]) == 1
    # The writer counts such a call as failed, and says why; none is stored clear.
    writer = Writer(Settings(db=backend.url, key=None, key_file=None))
    assert writer.submit(sensitive_call(9))
    writer.close()
    assert (writer.stats().failed, writer.stats().recorded) == (1, 0)
    with backend.open() as store:
        assert store.get("call-9") is None


def test_read_only_sql_cannot_read_the_audit_log(backend: Backend) -> None:
    with backend.open() as store:
        store.audit("alice", "read", ["x"])
        for sql in ("SELECT * FROM audit", "SELECT who FROM audit", "SELECT count(*) FROM calls, audit"):
            with pytest.raises(ReadOnlyError):
                store.query(sql)
        assert store.query("SELECT count(*) FROM calls").rows == [(0,)]


def test_cli_keys_and_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.insert([sensitive_call(i) for i in range(3)])
    runner = CliRunner()

    def llmlog_cli(*args: str, key: str | None = None) -> Any:
        env = {"LLMLOG_KEY": key} if key else {}
        if not key:
            monkeypatch.delenv("LLMLOG_KEY", raising=False)
        return runner.invoke(cli, ["--db", db, *args], env=env, catch_exceptions=False)

    assert llmlog_cli("keys", "new").output.count(":") == 1
    assert llmlog_cli("keys", "rotate").exit_code == 2
    r = llmlog_cli("keys", "rotate", key=K1)
    assert r.exit_code == 0 and "Sealed 3 call(s) again with key k1" in r.output
    assert SECRETS["user"].encode() not in stored_bytes(db)
    status = llmlog_cli("keys", "status", key=K1).output
    assert "k1" in status and "sealed text only" in status
    shown = llmlog_cli("show", "call-1", key=K1).output
    assert SECRETS["system"] in shown
    assert SECRETS["system"] not in llmlog_cli("show", "call-1").output  # no key: sealed
    entries = llmlog_cli("audit").output
    assert "llmlog show" in entries and "call-1" in entries and "rotate to key k1" in entries
    q = llmlog_cli("query", "SELECT * FROM audit")
    assert q.exit_code != 0


def test_prepare_seals_for_the_spool_too() -> None:
    settings = Settings(db=":memory:", key=K1, sensitive_metadata=["patient_id"])
    call = prepare(sensitive_call(3), settings, None)
    assert is_sealed(call.system_prompt) and is_sealed(call.response)
    text = json.dumps(dataclasses.asdict(call), default=str)
    for marker in SECRETS.values():
        assert marker not in text, marker
