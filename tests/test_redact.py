"""Redaction before storage: the rules and their near-misses, and every way in."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx2 as httpx
import pytest

import llmlog
from llmlog.core.config import Settings
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.core.redact import Redactor, luhn
from llmlog.demo.fake_provider import FakeProvider
from llmlog.store import open_store
from tests.backends import SQLiteBackend, stored_bytes
from tests.webui import T0, Running

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [
        ("email", "write to jane.doe+x@example.co.uk today", "write to [EMAIL] today"),
        ("email", "a.b@sub.example.org, c@d.io", "[EMAIL], [EMAIL]"),
        ("email", "user@localhost and foo@bar and @handle and a@b.c", None),  # near misses
        ("phone", "call +1 415-555-0134 now", "call [PHONE] now"),
        ("phone", "(020) 7946 0958 or 415.555.0134 or +44 20 7946 0958", "[PHONE] or [PHONE] or [PHONE]"),
        ("phone", "on 2026-11-30T12:00:00 v1.2.3.4 id 123456789012 ip 192.168.100.200", None),
        ("phone", "pi is 3.14159265358 and the order 2026-1130", None),
        (
            "card",
            "visa 4111 1111 1111 1111, amex 378282246310005, mc 5500-0000-0000-0004",
            "visa [CARD], amex [CARD], mc [CARD]",
        ),
        ("card", "not Luhn: 4111 1111 1111 1112; too short: 4111 1111 111; ts 1732960000000", None),
        ("secret", "anthropic sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 end", "anthropic [SECRET] end"),
        (
            "secret",
            "openai sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX, aws AKIAIOSFODNN7EXAMPLE",
            "openai [SECRET], aws [SECRET]",
        ),
        ("secret", "gh ghp_" + "a1" * 18 + " slack xoxb-123456789012-abcdef", "gh [SECRET] slack [SECRET]"),
        (
            "secret",
            "jwt " + JWT,
            "jwt [SECRET]",
        ),
        (
            "secret",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY----- done",
            "[SECRET] done",
        ),
        ("secret", "task-ant-xyz, skeleton-key, sk-short, AKIA123, desk-anteater-1234567890123456789", None),
    ],
)
def test_rules_and_near_misses(rule: str, text: str, expected: str | None) -> None:
    out, counts = Redactor([rule]).text(text)
    assert out == (text if expected is None else expected)
    assert sum(counts.values()) == out.count("[")


def test_luhn() -> None:
    assert luhn("4111111111111111") and luhn("378282246310005") and not luhn("4111111111111112")


def test_a_call_is_redacted_in_its_chosen_fields_and_the_counts_kept() -> None:
    call = Call(
        timestamp=T0,
        system_prompt="Support for ACME. Escalate to ops@acme.example.",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "my card 4111 1111 1111 1111"}]},
            {"role": "user", "content": "key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123, E123456"},
        ],
        response={"content": [{"type": "text", "text": "Call +1 415-555-0134"}]},
        params={"note": "ops@acme.example"},
        metadata={"tier": "pro"},
    )
    narrowed = call.replace(params=dict(call.params or {}))
    Redactor(["all"], {"EMPLOYEE": r"\bE\d{6}\b"}).call(call)
    assert call.system_prompt == "Support for ACME. Escalate to [EMAIL]."
    assert call.messages and call.messages[0]["content"][0]["text"] == "my card [CARD]"
    assert call.messages[1]["content"] == "key [SECRET], [EMPLOYEE]"
    assert call.response == {"content": [{"type": "text", "text": "Call [PHONE]"}]}
    assert call.params == {"note": "[EMAIL]"}
    assert call.metadata == {"tier": "pro", "llmlog": {"redactions": {"CARD": 1, "EMAIL": 2, "EMPLOYEE": 1,
                                                                      "PHONE": 1, "SECRET": 1}}}  # fmt: skip
    Redactor(["all"], fields=["system_prompt"]).call(narrowed)  # LLMLOG_REDACT_FIELDS narrows it
    assert narrowed.system_prompt == call.system_prompt and narrowed.params == {"note": "ops@acme.example"}
    clean = Call(timestamp=T0, system_prompt="nothing here")
    Redactor(["all"]).call(clean)
    assert clean.metadata is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rules": ["emails"]}, "unknown redaction rule"),
        ({"patterns": {"lower": "x"}}, "capitals"),
        ({"patterns": {"BAD": "("}}, "BAD"),
        ({"fields": ["timestamp"]}, "cannot redact field"),
    ],
)
def test_bad_configuration_is_an_error_at_configure_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Redactor(**kwargs)  # type: ignore[arg-type]
    settings = {"rules": "redact", "patterns": "redact_patterns", "fields": "redact_fields"}
    ((key, value),) = kwargs.items()
    with pytest.raises(ValueError, match=message):
        llmlog.configure(db=":memory:", **{settings[key]: value})


def test_nothing_unredacted_reaches_the_store_from_the_sdk(fake: FakeProvider, tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    llmlog.configure(db=db, redact=["email", "secret"])
    try:
        client = llmlog.wrap(
            anthropic.Anthropic(api_key="sk-test", base_url=fake.anthropic_base_url, max_retries=0)
        )
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=40, system="Reply to bob@example.com",
            messages=[{"role": "user", "content": "my key is sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123"}],
        )  # fmt: skip
        assert llmlog.flush(10)
    finally:
        llmlog.configure(db=db)
    with open_store(db) as store:
        (call,) = list(store.iter_calls(CallFilter()))
    assert call.system_prompt == "Reply to [EMAIL]"
    assert call.messages == [{"role": "user", "content": "my key is [SECRET]"}]
    assert call.metadata and call.metadata["llmlog"]["redactions"] == {"EMAIL": 1, "SECRET": 1}
    raw = stored_bytes(tmp_path / "r.db")
    assert b"bob@example.com" not in raw and b"abcdefghijklmnopqrstuvwxyz0123" not in raw


def test_the_collector_redacts_what_it_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLOG_REDACT", "card")
    assert Settings().redact == ["card"]
    with Running(SQLiteBackend(tmp_path / "c.db")) as c:
        record = {"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1",
                  "messages": [{"role": "user", "content": "card 4111-1111-1111-1111"}]}  # fmt: skip
        r = httpx.post(c.base + "/v1/calls", json=record)
        assert r.json()["stored"] == 1
        (call,) = list(c.store.iter_calls(CallFilter()))
    assert call.messages == [{"role": "user", "content": "card [CARD]"}]


MAIL = "grace.hopper@example.com"


def test_by_default_every_text_field_is_redacted_before_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLMLOG_REDACT=email and no LLMLOG_REDACT_FIELDS: an address in the tool definitions,
    the request's parameters or the metadata is not stored either."""
    from llmlog.pipeline.writer import Writer

    monkeypatch.setenv("LLMLOG_REDACT", "email")
    monkeypatch.delenv("LLMLOG_REDACT_FIELDS", raising=False)
    db = str(tmp_path / "r.db")
    writer = Writer(Settings(db=db, url=None, key=None, key_file=None))
    assert writer.submit(
        Call(
            id="c1",
            timestamp=T0,
            model="claude-sonnet-4-6",
            messages=[{"role": "user", "content": "hello"}],
            tools=[
                {"name": "notify", "description": f"Writes to {MAIL}", "input_schema": {"type": "object"}}
            ],
            params={"max_tokens": 10, "metadata": {"user_id": MAIL}, "stop_sequences": [MAIL]},
            metadata={"customer": MAIL, "nested": {"cc": [MAIL]}, "tier": "pro"},
        )
    )
    writer.close()
    assert writer.stats().recorded == 1
    raw = stored_bytes(tmp_path / "r.db")
    assert MAIL.encode() not in raw and b"[EMAIL]" in raw
    with open_store(db) as store:
        call = store.get("c1")
    assert call is not None and call.tools and call.tools[0]["description"] == "Writes to [EMAIL]"
    assert call.params == {
        "max_tokens": 10,
        "metadata": {"user_id": "[EMAIL]"},
        "stop_sequences": ["[EMAIL]"],
    }
    assert call.metadata == {
        "customer": "[EMAIL]",
        "nested": {"cc": ["[EMAIL]"]},
        "tier": "pro",
        "llmlog": {"redactions": {"EMAIL": 5}},
    }


# A call id the phone rule takes part of (a run of digits in it reads as a phone number), and
# a span id the card rule would take whole (16 digits that pass the Luhn check).
PHONE_LIKE_ID = "bb6cbac7-0072-4767-9229-fc88b17bfcc9"
CARD_LIKE_SPAN = "4111111111111111"


def test_redacting_the_metadata_keeps_llmlogs_own_bookkeeping(tmp_path: Path) -> None:
    """The ids and counts llmlog keeps in a call's metadata are left as they are whatever
    the rules (a replay still names its original, and is found by it); its other notes, such
    as a response it could not parse, are redacted as every text is."""
    redactor = Redactor(["all"])
    assert redactor.text(PHONE_LIKE_ID)[0] != PHONE_LIKE_ID  # as text, the rule takes part of it
    assert redactor.text(CARD_LIKE_SPAN)[0] == "[CARD]"
    bookkeeping = {
        "replay_of": PHONE_LIKE_ID,
        "llmlog": {
            "request_id": f"req_{CARD_LIKE_SPAN}",
            "retry": 2,
            "incomplete": True,
            "replay": {"api": "messages", "stream": False, "model": "claude-sonnet-4-6"},
            "unparsed_response": f"<html>write to {MAIL}</html>",
        },
        "otel": {"span_id": CARD_LIKE_SPAN, "span": f"notify {MAIL}"},
        "ticket": PHONE_LIKE_ID,  # an app's own: searched as any text
    }
    call = Call(id="replay-1", timestamp=T0, model="m", metadata=json.loads(json.dumps(bookkeeping)))
    redactor.call(call)
    assert call.metadata is not None
    assert call.metadata["replay_of"] == PHONE_LIKE_ID
    ours = call.metadata["llmlog"]
    assert ours["request_id"] == f"req_{CARD_LIKE_SPAN}" and ours["retry"] == 2 and ours["incomplete"] is True
    assert ours["replay"] == bookkeeping["llmlog"]["replay"]  # type: ignore[index]
    assert ours["unparsed_response"] == "<html>write to [EMAIL]</html>"
    assert call.metadata["otel"] == {"span_id": CARD_LIKE_SPAN, "span": "notify [EMAIL]"}
    assert call.metadata["ticket"] != PHONE_LIKE_ID
    assert ours["redactions"] == {"EMAIL": 2, "PHONE": 1}
    # Redacted again (a copy, an import of an export): the counts stay those of the first time.
    redactor.call(call)
    assert call.metadata["llmlog"]["redactions"] == {"EMAIL": 2, "PHONE": 1}

    # And in a store: the replay is found by its original's id.
    from llmlog.pipeline.writer import Writer

    db = str(tmp_path / "b.db")
    writer = Writer(Settings(db=db, url=None, key=None, key_file=None, redact=["all"]))
    assert writer.submit(Call(id="replay-2", timestamp=T0, model="m", metadata={"replay_of": PHONE_LIKE_ID}))
    writer.close()
    with open_store(db) as store:
        (found,) = store.recent(CallFilter(metadata=[("replay_of", PHONE_LIKE_ID)]))
    assert found.id == "replay-2"
