"""The embedded store keeps each response and content body compressed (`llmlog.store.compression`),
and every reader — the `calls` view, the store's API, search, the text filter, reports,
erasure, `llmlog query` — sees the text as it was."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from llmlog.analysis import reports
from llmlog.cli import cli
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.workload import prose
from llmlog.store import compression, open_store
from llmlog.store.sqlite.store import SQLiteStore

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def answer(text: str) -> dict[str, object]:
    return {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 120, "output_tokens": 80, "cache_read_input_tokens": 0},
    }  # fmt: skip


def calls(n: int = 40) -> list[Call]:
    rng = random.Random(3)
    return [
        Call(
            timestamp=T0 + timedelta(seconds=i), provider="anthropic", model="claude-sonnet-4-6",
            feature="support", user_id=f"u{i % 4}", system_prompt="You answer questions about orders.",
            messages=[{"role": "user", "content": [{"type": "text", "text": f"{prose(rng, 60)} zebra{i}"}]}],
            response=answer(f"{prose(rng, 120)} marmoset{i}"),
        )
        for i in range(n)
    ]  # fmt: skip


def test_the_shipped_dictionary_is_the_one_stored_values_name() -> None:
    # A changed file would leave every stored value unreadable: a new one takes a new number.
    for number, digest in compression.DIGESTS.items():
        assert compression.digest(number) == digest


def test_pack_gives_back_what_it_was_given() -> None:
    long = json.dumps(answer("The order shipped on Tuesday and arrives Friday. " * 8))
    packed = compression.pack(long)
    assert isinstance(packed, bytes) and len(packed) < len(long) / 3
    assert compression.unpack(packed) == long
    for kept in (
        "short",
        "",
        "ünïcödé ✓ " * 30,
        "\ud800 lone surrogate" * 10,
        "llmlog-enc:v1:k1:" + "Zm9v" * 5,
    ):
        assert compression.unpack(compression.pack(kept)) == kept
    # Never stored larger than the text itself.
    rng = random.Random(1)
    for text in [base64.b64encode(rng.randbytes(n)).decode() for n in (72, 80, 300)] + ["x" * 96]:
        packed = compression.pack(text)
        assert len(packed if isinstance(packed, bytes) else packed.encode()) <= len(text)
        assert compression.unpack(packed) == text
    assert compression.unpack(None) is None and compression.unpack(b"not ours") == "not ours"


def test_responses_and_messages_are_stored_compressed_and_read_whole(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    stored = calls()
    with SQLiteStore(db) as store:
        store.insert(stored)
        raw = store.db.execute(
            "SELECT response, typeof(response) FROM call_data ORDER BY timestamp"
        ).fetchall()
        assert {t for _, t in raw} == {"blob"}
        kinds = store.db.execute("SELECT typeof(body), count(*) FROM content GROUP BY 1").fetchall()
        assert dict(kinds)["blob"] == len(stored)  # each message; the short system prompt is text
        for (blob, _), c in zip(raw, stored, strict=True):
            assert len(blob) * 2 < len(json.dumps(c.response))
        for c in stored:
            got = store.get(c.id)
            assert got is not None
            assert (got.response, got.messages, got.system_prompt) == (
                c.response,
                c.messages,
                c.system_prompt,
            )
        # The view, as SQL written by hand reads it, and the lists' brief form.
        text, messages = store.query(
            "SELECT response, messages FROM calls WHERE id = ?", (stored[3].id,)
        ).rows[0]
        assert json.loads(text) == stored[3].response and json.loads(messages) == stored[3].messages
        brief = store.recent(CallFilter(), limit=5, brief=True)
        assert brief[0].response == stored[-1].response and brief[0].messages == stored[-1].messages
        # Search indexes the words of both; the substring filter reads them too.
        assert [h.call.id for h in store.search("marmoset7", CallFilter())] == [stored[7].id]
        assert [h.call.id for h in store.search("zebra9", CallFilter())] == [stored[9].id]
        assert [c.id for c in store.recent(CallFilter(text="marmoset11"))] == [stored[11].id]
        assert [c.id for c in store.recent(CallFilter(text="zebra12"))] == [stored[12].id]
        # Erasure takes the words out of the index with the rows.
        store.erase(user_id="u1")
        assert store.search("marmoset5", CallFilter()) == [] and store.search("zebra5", CallFilter()) == []
        assert len(store.search("marmoset6", CallFilter())) == 1
    # Read-only SQL, as a person writes it.
    out = CliRunner().invoke(
        cli,
        ["query", "--db", db, "--format", "json", "SELECT response FROM calls ORDER BY timestamp"],
    )
    assert out.exit_code == 0, out.output
    assert [json.loads(r["response"]) for r in json.loads(out.output)] == [
        c.response for c in stored if c.user_id != "u1"
    ]


def test_an_insert_indexes_what_it_packed_without_unpacking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search index's triggers read each row's response and last message, which the
    insert has just compressed: they are given the text it was made from, not decompressed.
    Outside an insert, and where a size is bounded (`llmlog_text` in a query), values are
    decompressed as ever."""
    unpacked: list[bytes] = []
    decompressor = compression._decompressor

    def counted(number: int) -> zstandard.ZstdDecompressor:
        unpacked.append(bytes([number]))
        return decompressor(number)

    monkeypatch.setattr(compression, "_decompressor", counted)
    stored = calls()
    with SQLiteStore(str(tmp_path / "c.db")) as store:
        store.insert(stored)
        assert unpacked == []
        assert [h.call.id for h in store.search("marmoset7", CallFilter())] == [stored[7].id]
        assert [h.call.id for h in store.search("zebra9", CallFilter())] == [stored[9].id]
        assert store.get(stored[3].id).response == stored[3].response  # type: ignore[union-attr]
        assert unpacked
    with compression.recalling():
        value = compression.pack(json.dumps(answer("a longer answer " * 20)))
        unpacked.clear()
        assert compression.unpack(value) == json.dumps(answer("a longer answer " * 20)) and unpacked == []
        assert compression.unpack(value, max_bytes=10**6) and unpacked  # bounded: decompressed, checked
        with pytest.raises(compression.TooLarge):
            compression.unpack(value, max_bytes=10)
    unpacked.clear()
    assert compression.unpack(value) and unpacked


def test_the_store_is_smaller_for_it(tmp_path: Path) -> None:
    sizes = {}
    for name in ("plain", "packed"):
        db = tmp_path / f"{name}.db"
        with pytest.MonkeyPatch.context() as m:
            if name == "plain":
                m.setattr(compression, "pack_all", lambda texts: list(texts))
            with SQLiteStore(db) as store:
                store.insert(calls(400))
                # The pages in use: each holds a page the insert's words took for a moment
                # (`call_words`), which the next insert takes again.
                ((pages,),) = store.db.execute(
                    "SELECT page_count - freelist_count FROM pragma_page_count, pragma_freelist_count"
                )
        sizes[name] = pages
    assert sizes["packed"] < sizes["plain"] * 0.85, sizes


def test_a_store_from_before_reads_its_text_and_compresses_what_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "old.db")
    old, new = calls(6)[:3], calls(6)[3:]
    # What a version before compression wrote: its rows as text, under schema 14.
    with monkeypatch.context() as m:
        m.setattr(compression, "pack_all", lambda texts: list(texts))
        with SQLiteStore(db) as store:
            store.insert(old)
            store.db.execute("PRAGMA user_version = 14")
    with SQLiteStore(db) as store:
        assert store.schema_found == 14 and store.schema_version >= 15
        store.insert(new)
        kinds = dict(
            store.db.execute("SELECT typeof(response), count(*) FROM call_data GROUP BY 1").fetchall()
        )
        assert kinds == {"text": 3, "blob": 3}
        for c in old + new:
            got = store.get(c.id)
            assert got is not None and got.response == c.response and got.messages == c.messages
        assert len(store.search("marmoset1", CallFilter())) == 1
        assert len(store.search("marmoset4", CallFilter())) == 1
        store.erase(user_id="u1")  # an old row and a new one, unindexed alike
        assert store.search("marmoset1", CallFilter()) == [] and store.search("marmoset5", CallFilter()) == []


def test_refusals_are_counted_from_compressed_responses(tmp_path: Path) -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    sorry = (
        "I'm sorry, but I can't help with that request; it falls outside what I am allowed to discuss here."
    )
    rows = []
    for h in range(14 * 24):
        refused = h < 7 * 24 and h % 5 == 0
        text = (
            sorry
            if refused
            else f"Here is the summary you asked for, with {h} items listed in the order given."
        )
        rows.append(Call(id=f"c{h}", timestamp=now - timedelta(hours=h, minutes=1), feature="chat",
                         prompt_template_version="v1", output_tokens=40, response=answer(text)))  # fmt: skip
    with SQLiteStore(tmp_path / "r.db") as store:
        store.insert(rows)
        assert store.db.execute(
            "SELECT count(*) FROM call_data WHERE typeof(response) = 'text'"
        ).fetchone() == (0,)
        found = {(d.feature, d.version, d.metric): d for d in reports.drift_report(store, now=now)}
        refusing = found[("chat", "v1", "refusal_rate")]
        assert refusing.before == 0 and refusing.after == pytest.approx(34 / 168)


def test_a_value_that_unpacks_past_the_bound_of_a_query_is_refused_before_it_is_made(
    tmp_path: Path,
) -> None:
    """Anyone who may run read-only SQL can hand `llmlog_text` (or `llmlog_document`, which
    reads a row's words for the search index) a small BLOB of their own that unpacks to far
    more than a query may hold (600 MB of one letter packs into 18 KB): it is refused from
    the size the frame declares, so the process (a fresh one, measured whole) never holds it."""
    db = tmp_path / "calls.db"
    open_store(str(db)).close()
    # Packed a piece at a time, the frame declaring its whole size as `pack`'s do.
    packer = zstandard.ZstdCompressor().compressobj(size=600 * 2**20)
    piece = b"a" * 2**20
    bomb = b"".join([*(packer.compress(piece) for _ in range(600)), packer.flush()])
    script = textwrap.dedent(
        """
        import json, re, sys
        from llmlog.store import compression, open_store
        from llmlog.store.readonly import ReadOnlyError

        store, bomb = open_store(sys.argv[1]), sys.argv[2]
        said = []
        for read in ("llmlog_text({})", "llmlog_document({}, NULL, NULL)", "llmlog_document(NULL, {}, NULL)"):
            try:
                store.query("SELECT length(" + read.format(f"x'{bomb}'") + ")", timeout_s=30).rows
                said.append(None)
            except ReadOnlyError as exc:
                said.append(str(exc))
        peak = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) // 1024
        # A value within the bound reads as ever.
        small = compression.pack("{}" + " and more" * 100).hex()
        (got,), = store.query(f"SELECT llmlog_text(x'{small}')").rows
        print(json.dumps([said, peak, got]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(db), "01" + bomb.hex()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    said, peak_mb, small = json.loads(out.stdout)
    assert len(said) == 3 and all(s is not None and "64 MB a query may hold" in s for s in said), said
    assert peak_mb < 300, f"peak RSS {peak_mb} MB"
    assert small == "{}" + " and more" * 100


def test_the_free_text_filter_finds_content_stored_after_it_first_looked(tmp_path: Path) -> None:
    # The content matching a filter is kept per pattern and only newer content read again;
    # content deleted (whose ids a later body may take) makes it look at everything again.
    def said(call_id: str, user: str, text: str) -> Call:
        return Call(id=call_id, timestamp=T0, user_id=user, messages=[{"role": "user", "content": text}])

    with SQLiteStore(tmp_path / "f.db") as store:
        store.insert([said("a", "u1", "the okapi " * 20), said("b", "u2", "a heron " * 20)])
        assert [c.id for c in store.recent(CallFilter(text="okapi"))] == ["a"]
        store.insert([said("c", "u2", "another okapi " * 20)])
        assert sorted(c.id for c in store.recent(CallFilter(text="okapi"))) == ["a", "c"]
        store.erase(user_id="u2")  # "c" and "b", and their content
        store.reclaim()
        assert [c.id for c in store.recent(CallFilter(text="okapi"))] == ["a"]
        assert store.recent(CallFilter(text="heron")) == []
        store.insert([said("d", "u3", "a third okapi " * 20), said("e", "u3", "heron again " * 20)])
        assert sorted(c.id for c in store.recent(CallFilter(text="okapi"))) == ["a", "d"]
        assert [c.id for c in store.recent(CallFilter(text="heron"))] == ["e"]
        assert store.count(CallFilter(text="okapi")) == 2


def test_a_batch_packs_to_the_frames_each_value_packs_to() -> None:
    # One call to zstd for a store's batch (`pack_all`): the values zstd gives one at a time.
    texts: list[str | None] = [json.dumps({"text": f"reply {n} " * (n + 20)}) for n in range(40)]
    texts += [None, "short", "lone \udc80 surrogate " * 20, "x" * 200]

    def alone(text: str | None) -> str | bytes | None:
        if text is None or len(text) < compression.MIN_BYTES:
            return text
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            return text
        packed = bytes((compression.CURRENT,)) + compression._compressor().compress(raw)
        return packed if len(packed) < len(raw) + 1 else text

    one_by_one = [alone(t) for t in texts]
    assert compression.pack_all(texts) == one_by_one
    assert [compression.pack(t) for t in texts if t is not None] == [v for v in one_by_one if v is not None]
    assert sum(isinstance(v, bytes) for v in one_by_one) == 41
    assert [compression.unpack(v) for v in one_by_one] == texts
