"""Calls like this one, on both stores, with the real embedding model of the semantic extra:
a store embeds once asked to (calls stored before, then new ones); paraphrases of a call rank
above unrelated calls; filters apply; sealed calls are never embedded; vectors go with
their calls."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.encryption import Keyring
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.workload import prose
from llmlog.operations.sealing import rotate
from llmlog.store import open_store, vectors
from tests.backends import Backend
from tests.test_encryption import K1

NOW = datetime.now(UTC).replace(microsecond=0)

# The same complaint in other words, and calls about other things.
LIKE = [
    "My package never arrived and I want my money back.",
    "The parcel I ordered did not show up; please refund me.",
    "Order 5521 was never delivered. Can I get a refund?",
    "I paid two weeks ago and the delivery still hasn't come, I'd like a refund.",
]
UNLIKE = [
    "Summarize the quarterly revenue report for the board.",
    "Write a SQL query that counts active users per day.",
    "Review this diff: the cache key ignores the locale.",
    "Translate this paragraph about alpine hiking into French.",
]


REPLY = {"role": "assistant", "content": [{"type": "text", "text": "Let me look into that."}]}


def said(text: str, i: int, feature: str = "support", user: str = "u") -> Call:
    return Call(id=f"c{i}", timestamp=NOW - timedelta(minutes=i), feature=feature, user_id=user,
                messages=[{"role": "user", "content": text}], response=REPLY)  # fmt: skip


def calls() -> list[Call]:
    rng = random.Random(1)
    out = [said(t, i) for i, t in enumerate(LIKE)]
    out += [said(t, 10 + i, feature="other") for i, t in enumerate(UNLIKE)]
    out += [said(prose(rng, 20), 100 + i, feature="noise") for i in range(40)]
    return out


def test_paraphrases_rank_first_once_the_store_embeds(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(calls()[:6])  # before: stored without vectors
        assert backend.sql("SELECT count(*) FROM call_data WHERE embedding IS NOT NULL") == [(0,)]
        assert store.enable_vectors() == 6
        store.insert(calls()[6:])  # after: embedded as stored
        assert backend.sql("SELECT count(*) FROM call_data WHERE embedding IS NULL") == [(0,)]
        found = store.similar("c0", CallFilter(), limit=3)
        assert {c.id for c, _ in found} == {"c1", "c2", "c3"}  # the paraphrases, before anything else
        scores = [s for _, s in found]
        assert scores == sorted(scores, reverse=True) and min(scores) > 0.3
        unrelated = dict((c.id, s) for c, s in store.similar("c0", CallFilter(feature="other"), limit=10))
        assert set(unrelated) == {"c10", "c11", "c12", "c13"} and max(unrelated.values()) < min(scores)
        # Vectors go with their calls.
        store.erase(user_id="u")
        assert backend.sql("SELECT count(*) FROM call_data WHERE embedding IS NOT NULL") == [(0,)]
        with pytest.raises(LookupError, match="no call"):
            store.similar("c0", CallFilter())


def test_a_store_that_did_not_ask_embeds_nothing(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(calls())
        assert backend.sql("SELECT count(*) FROM call_data WHERE embedding IS NOT NULL") == [(0,)]
        assert store.similar("c0", CallFilter()) == []  # nothing to compare with yet
        store.enable_vectors()
        store.disable_vectors()
    with backend.open() as store:
        store.insert([said("My order never came, refund please.", 999)])
        assert backend.sql("SELECT count(*) FROM call_data WHERE id = 'c999' AND embedding IS NULL") == [(1,)]


def test_sealed_calls_are_never_embedded(backend: Backend) -> None:
    with backend.open() as store:
        store.enable_vectors()
        store.keyring = Keyring.parse(K1)
        store.insert([said(LIKE[0], 1)])
        assert backend.sql("SELECT count(*) FROM call_data WHERE embedding IS NOT NULL") == [(0,)]


def test_the_model_runs_offline_from_the_package() -> None:
    (v,) = vectors.embed(["a refund for a missing parcel"])
    assert len(v) == vectors.DIM * 2  # float16
    assert vectors.nearest(v, [("a", v)], 5) == [("a", pytest.approx(1.0, abs=1e-3))]


def test_the_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    with open_store(db) as store:
        store.insert(calls())
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db, "similar", "c0"]).output.strip().startswith("No call to compare")
    enabled = runner.invoke(cli, ["--db", db, "similar", "--enable"])
    assert enabled.exit_code == 0 and "Embedded 48 calls" in enabled.output
    found = json.loads(runner.invoke(cli, ["--db", db, "similar", "c0", "-n", "3", "--json"]).output)
    assert {f["id"] for f in found} == {"c1", "c2", "c3"}
    table = runner.invoke(cli, ["--db", db, "similar", "c0", "--feature", "support"]).output
    assert "parcel" in table
    missing = runner.invoke(cli, ["--db", db, "similar", "nope"])
    assert missing.exit_code == 1 and "no call" in missing.output
    assert runner.invoke(cli, ["--db", db, "similar"]).exit_code == 2


def test_rotation_leaves_no_vector_of_the_text_it_seals(backend: Backend) -> None:
    # A vector is the text's words, averaged: once `llmlog keys rotate` seals a call, the
    # vector of its clear text must go too, or the store still holds what the call said.
    with backend.open() as store:
        store.enable_vectors()
        store.insert(calls()[:6])
        assert backend.sql("SELECT count(*) FROM call_data WHERE embedding IS NOT NULL") == [(6,)]
        rotate(store, Keyring.parse(K1), "test")
        assert backend.sql("SELECT count(*) FROM call_data WHERE embedding IS NOT NULL") == [(0,)]


def test_a_call_whose_text_changes_gets_the_vector_of_its_new_text(backend: Backend) -> None:
    # A call's text joined later (an OTLP span's content) is compared by what it says now.
    with backend.open() as store:
        store.enable_vectors()
        store.insert([said(UNLIKE[0], 1), said(LIKE[1], 2)])

        def likeness() -> float:
            (score,) = [s for c, s in store.similar("c2", CallFilter(), limit=5) if c.id == "c1"]
            return score

        before = likeness()
        store.update_content(said(LIKE[0], 1))
        assert likeness() > max(0.3, before + 0.2)


def test_a_call_sent_again_keeps_the_vector_of_its_stored_text(backend: Backend) -> None:
    # Calls are idempotent by id: a second record of the same id is not stored, and neither
    # is a vector of its text (anyone who can write calls could otherwise steer "calls like
    # this one", or put a vector of text never stored beside a stored call).
    with backend.open() as store:
        store.enable_vectors()
        store.insert([said(LIKE[0], 1), said(LIKE[1], 2)])
        before = backend.sql("SELECT embedding FROM call_data WHERE id = 'c1'")
        assert store.insert([said(UNLIKE[0], 1)]) == 0
        assert backend.sql("SELECT embedding FROM call_data WHERE id = 'c1'") == before
