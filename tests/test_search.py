"""Full-text search on both stores: planted needles are found among ordinary calls, ranked,
filtered, by words, phrases, exclusions and OR; what a call re-sends is not indexed again;
erasure, redaction and regulated mode leave no searchable words behind; a store made before
search is indexed when opened."""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmlog.cli import cli
from llmlog.core.encryption import Keyring
from llmlog.core.filters import CallFilter
from llmlog.core.record import Call
from llmlog.demo.fake_provider import FakeProvider
from llmlog.demo.workload import prose
from llmlog.store import open_store
from llmlog.store import search as text_search
from llmlog.store.sqlite import connect as sqlite_connect
from llmlog.store.sqlite.schema import migrate
from tests.backends import Backend, stored_bytes
from tests.test_encryption import K1, raw_bytes
from tests.test_replay import SCENARIOS, anthropic_blocks, record

NOW = datetime.now(UTC).replace(microsecond=0)


def said(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


def answer(text: str) -> dict[str, object]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


REFUND = {"type": "tool_use", "id": "t2", "name": "issue_refund", "input": {"reason": "marmalade stain"}}


def haystack(n: int = 300) -> list[Call]:
    """Ordinary calls, and among them the needles: a rare word said once, said three times,
    in a tool result, in a response's tool call, in an error; a phrase."""
    rng = random.Random(3)
    out = [
        Call(id=f"hay{i}", timestamp=NOW - timedelta(minutes=i), feature=rng.choice(["chat", "search"]),
             user_id=f"u{i % 7}", messages=said(prose(rng, 30)), response=answer(prose(rng, 40)))
        for i in range(n)
    ]  # fmt: skip
    out += [
        Call(id="once", timestamp=NOW, feature="chat", user_id="u1",
             messages=said("My xylophone arrived broken."), response=answer(prose(rng, 40))),
        Call(id="thrice", timestamp=NOW - timedelta(hours=1), feature="search", user_id="u2",
             messages=said("Xylophone, xylophone: which xylophone do you sell?"), response=answer("Some.")),
        Call(id="tool-result", timestamp=NOW, feature="chat", messages=[
            {"role": "user", "content": "Where is order 77?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup_order",
                                               "input": {"order_id": "77"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": "carrier: quokkaexpress, delayed"}]},
        ], response=answer("It is on its way.")),
        Call(id="tool-call", timestamp=NOW, feature="chat", messages=said("Refund it."),
             response={"role": "assistant", "content": [REFUND]}),
        Call(id="failed", timestamp=NOW, feature="chat", messages=said("hi"),
             error={"type": "overloaded_error", "message": "the gryphon cluster is overloaded"}),
        Call(id="phrase", timestamp=NOW, feature="chat", messages=said("the blue whale sings"),
             response=answer("The whale is blue, yes.")),
        Call(id="html", timestamp=NOW, feature="chat",
             messages=said("<script>alert('nebula')</script> DROP TABLE calls; --"), response=answer("ok")),
    ]  # fmt: skip
    return out


def ids(hits: list[text_search.Hit]) -> list[str]:
    return [h.call.id for h in hits]


def test_needles_are_found_ranked_and_filtered(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(haystack())
        everything = CallFilter()
        assert ids(store.search("xylophone", everything)) == ["thrice", "once"]  # said thrice ranks first
        assert ids(store.search("XYLOPHONES", everything)) == ["thrice", "once"]  # case and stem
        assert ids(store.search("xylophone", CallFilter(feature="chat"))) == ["once"]
        assert ids(store.search("xylophone", CallFilter(user_id="u2"))) == ["thrice"]
        assert ids(store.search("xylophone -broken", everything)) == ["thrice"]
        assert ids(store.search("quokkaexpress", everything)) == ["tool-result"]
        assert ids(store.search("marmalade", everything)) == ["tool-call"]
        assert ids(store.search("issue_refund", everything)) == ["tool-call"]
        assert ids(store.search("gryphon", everything)) == ["failed"]
        assert ids(store.search('"blue whale"', everything)) == ["phrase"]
        assert ids(store.search('"whale blue"', everything)) == []  # a phrase is in order
        assert set(ids(store.search("gryphon OR marmalade", everything))) == {"failed", "tool-call"}
        assert ids(store.search("xylophone", CallFilter(since=NOW + timedelta(hours=1)))) == []
        assert len(store.search("the", everything, limit=5)) <= 5
        # Whatever is typed, no engine syntax gets through, and nothing raises.
        for typed in [
            '"',
            "NEAR(a b)",
            "a*",
            "-",
            "-nebula",
            "OR",
            "col:x",
            "'); DROP TABLE calls; --",
            "\\",
        ]:
            store.search(typed, everything)
        assert store.search("-nebula", everything) == []  # nothing to find, only to leave out
        assert ids(store.search("nebula", everything)) == ["html"]
        (hit,) = store.search("quokkaexpress", everything)
        assert ("quokkaexpress", True) in hit.snippet and hit.score > 0


def test_only_the_newest_matches_are_ranked(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A word in every call: the best of the newest RANKED, not of all of them."""
    monkeypatch.setattr(text_search, "RANKED", 5)
    with backend.open() as store:
        store.insert([
            Call(id=f"w{i}", timestamp=NOW - timedelta(minutes=i),
                 messages=said("walrus " * (1 if i < 10 else 9)), feature="f" if i % 2 else "g")
            for i in reversed(range(30))  # stored as they happened: oldest first
        ])  # fmt: skip
        # The older calls say it nine times, but only the newest five are ranked.
        assert sorted(ids(store.search("walrus", CallFilter()))) == ["w0", "w1", "w2", "w3", "w4"]
        assert sorted(ids(store.search("walrus", CallFilter(feature="f")))) == ["w1", "w3", "w5", "w7", "w9"]


def test_a_conversation_is_indexed_by_what_each_turn_adds(backend: Backend) -> None:
    first = said("Tell me about the pangolin.")
    reply = {"role": "assistant", "content": "It has scales."}
    with backend.open() as store:
        store.insert([
            Call(id="turn1", timestamp=NOW, messages=first, response=answer("It has scales.")),
            Call(id="turn2", timestamp=NOW, messages=[*first, reply, *said("And the armadillo?")],
                 response=answer("Also armoured.")),
        ])  # fmt: skip
        assert ids(store.search("pangolin", CallFilter())) == ["turn1"]
        assert ids(store.search("armadillo", CallFilter())) == ["turn2"]


def test_erasure_and_redaction_leave_no_searchable_words(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(haystack(50))
        store.insert(
            [
                Call(
                    id="secret",
                    user_id="leaver",
                    timestamp=NOW,
                    messages=said("my codeword is flamingoquartz"),
                )
            ]
        )
        assert ids(store.search("flamingoquartz", CallFilter())) == ["secret"]
        store.erase(user_id="leaver")
        assert store.search("flamingoquartz", CallFilter()) == []
        # A stored call whose content changes (a redaction) is found by its new words only.
        call = store.get("once")
        assert call is not None
        store.update_content(call.replace(messages=said("My [REDACTED] arrived broken.")))
        assert store.search("xylophone", CallFilter(ids=["once"])) == []
        assert ids(store.search("redacted", CallFilter())) == ["once"]
        store.reclaim()
    assert b"flamingoquartz" not in raw_bytes(backend)
    if backend.kind == "sqlite":  # nor in the index's own tables, in the file
        with open_store(backend.url) as store:
            store.reclaim(thorough=True)
        data = stored_bytes(backend.url)
        assert b"flamingoquartz" not in data and b"flamingoquartz"[:10] not in data


def test_sealed_calls_are_not_indexed(backend: Backend) -> None:
    with backend.open() as store:
        store.keyring = Keyring.parse(K1)
        store.insert(
            [Call(id="sealed", timestamp=NOW, messages=said("the okapi password"), response=answer("okapi"))]
        )
        assert store.search("okapi", CallFilter()) == []
    if backend.kind == "sqlite":
        data = stored_bytes(backend.url)
        assert b"okapi" not in data
    else:
        assert backend.sql("SELECT count(*) FROM call_data WHERE search IS NOT NULL") == [(0,)]


def test_a_store_made_before_search_is_indexed_when_opened(backend: Backend) -> None:
    with backend.open() as store:
        store.insert(haystack(20))
    # Back to the schema before search, as a store made by the previous version would be.
    if backend.kind == "sqlite":
        db = sqlite_connect(backend.url)
        db.executescript(
            "DROP TRIGGER call_text_insert; DROP TRIGGER call_text_delete; DROP TRIGGER call_text_update;"
            " DROP TABLE call_text; ALTER TABLE call_data DROP COLUMN embedding; DROP TABLE web_sessions;"
            " PRAGMA user_version = 9;"
        )
        db.close()
    else:
        backend.sql("DROP INDEX call_data_search")
        backend.sql("ALTER TABLE call_data DROP COLUMN search, DROP COLUMN embedding")
        backend.sql("DROP TABLE web_sessions")
        backend.sql("UPDATE llmlog_schema SET version = 7")
    with backend.open() as store:
        assert ids(store.search("xylophone", CallFilter())) == ["thrice", "once"]
        assert ids(store.search("gryphon", CallFilter())) == ["failed"]


def test_parsing_the_search_box() -> None:
    q = text_search.parse('refund "order 77" -cancelled gryphon OR marmalade')
    assert text_search.fts5(q) == '"refund" AND "order 77" AND ("gryphon" OR "marmalade") NOT "cancelled"'
    assert text_search.tsquery_text(q) == 'refund "order 77" gryphon OR marmalade -cancelled'
    assert text_search.parse("-x").empty and text_search.parse(' " * ').empty
    assert text_search.fts5(text_search.parse('say "hi""')) == '"say" AND "hi"'
    piece = text_search.snippet("a " * 200 + "the Refunds were sent " + "b " * 200, q, width=60)
    assert ("Refunds", True) in piece and piece[0] == ("…", False) and piece[-1] == ("…", False)


def test_the_cli_searches(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    with open_store(db) as store:
        store.insert(haystack(30))
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", db, "search", "xylophone"])
    assert out.exit_code == 0 and "thrice" in out.output and "once" in out.output
    found = json.loads(
        runner.invoke(cli, ["--db", db, "search", "xylophone", "--feature", "chat", "--json"]).output
    )
    assert [h["id"] for h in found] == ["once"] and found[0]["snippet"]
    none = runner.invoke(cli, ["--db", db, "search", "--", "-nebula"])  # only words to leave out
    assert none.exit_code == 0 and "No calls" in none.output
    bad = runner.invoke(cli, ["--db", db, "search", "x", "--limit", "0"])
    assert bad.exit_code == 2


def _terms(db: Any) -> int:
    """How many distinct terms SQLite's index holds."""
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.call_terms USING fts5vocab(main, call_text, 'row')")
    return int(db.execute("SELECT count(*) FROM temp.call_terms").fetchone()[0])


def test_sqlite_unindexes_exactly_what_it_indexed(tmp_path: Path) -> None:
    # A contentless FTS5 index is told the words to take out: a row whose deletion gave other
    # words than its insertion left terms behind (or broke the index).
    with open_store(str(tmp_path / "s.db")) as store:
        calls = haystack(200)
        store.insert(calls)
        # Again with new ids: their last messages are stored already, named by id (the
        # insert reads their words from their values, the delete trigger from the rows).
        store.insert([c.replace(id=f"again-{c.id}") for c in calls])
        assert _terms(store.db) > 50
        # Changed content (a redaction) takes out the old words and puts in the new.
        call = store.get("once")
        assert call is not None
        store.update_content(call.replace(messages=said("My [REDACTED] arrived broken.")))
        for user in {c.user_id for c in calls if c.user_id}:
            store.erase(user_id=user)
        store.db.execute("DELETE FROM call_data")  # the rest, as retention deletes
        assert _terms(store.db) == 0
        store.db.execute("INSERT INTO call_text (call_text, rank) VALUES ('integrity-check', 0)")


def test_sqlite_indexes_rows_it_did_not_write(tmp_path: Path) -> None:
    # Rows put there by SQL written by hand: JSON nested past any parser's limit, text that
    # is not JSON. Each is stored (the index never refuses a row) and unindexed cleanly.
    deep = "[" * 5000 + '"abyssword"' + "]" * 5000
    with open_store(str(tmp_path / "s.db")) as store:
        store.insert(haystack(5))
        by_hand = [deep, "not JSON: slatework", '"plinthword"', '{"text": "cornicework"}']
        for n, response in enumerate(by_hand):
            store.db.execute(
                "INSERT INTO call_data (id, timestamp, response) VALUES (?, ?, ?)",
                (f"by-hand-{n}", "2026-11-02T09:00:00.000000Z", response),
            )
        assert ids(store.search("plinthword", CallFilter())) == ["by-hand-2"]
        assert ids(store.search("cornicework", CallFilter())) == ["by-hand-3"]
        store.db.execute("DELETE FROM call_data")
        assert _terms(store.db) == 0


def test_a_store_indexed_in_sql_is_indexed_again_when_opened(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    conn = sqlite_connect(db)
    assert migrate(conn, target=15) == 15  # the triggers read the words in SQL
    conn.close()
    with open_store(db) as store:
        store.insert(haystack(30))
        assert ids(store.search("gryphon", CallFilter())) == ["failed"]
        assert ids(store.search("quokkaexpress", CallFilter())) == ["tool-result"]
        store.db.execute("DELETE FROM call_data")
        assert _terms(store.db) == 0


# ---------------------------------------------------------------- one call, two readings

ASKED = {"role": "user", "content": "Where is order 77?"}
# A call of each API whose last message is a tool's result and whose response thinks,
# answers, refuses and calls a tool, each in that API's shape; and the words that only one
# of the two readings finds in it (see the test).
SHAPES: list[tuple[Call, set[str], set[str]]] = [
    (
        Call(id="messages", provider="anthropic", messages=[
            ASKED,
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "lookup_order", "input": {"order_id": "77"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": "carrier quokkaexpress"}]}]},
        ], response={"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [
            {"type": "thinking", "thinking": "pondering", "signature": "c2ln"},
            {"type": "text", "text": "It is on its way."},
            {"type": "tool_use", "id": "t2", "name": "issue_refund",
             "input": {"reason": "marmalade", "cents": 5}},
        ], "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 9}}),
        # Python: a tool's input and a result's blocks as JSON text, keys and numbers too.
        {"reason", "cent", "5", "type", "text"},
        # SQLite: thinking.
        {"ponder"},
    ),
    (
        Call(id="chat", provider="openai", messages=[
            ASKED,
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
             "function": {"name": "lookup_order", "arguments": '{"order_id": "77"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "carrier quokkaexpress"},
        ], response={"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt", "choices": [
            {"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
                "role": "assistant", "content": "It is on its way.", "refusal": "No refunds today.",
                "tool_calls": [{"id": "call_2", "type": "function", "function": {
                    "name": "issue_refund", "arguments": '{"reason": "marmalade", "cents": 5}'}}]}},
        ], "usage": {"prompt_tokens": 9, "completion_tokens": 9}}),
        set(),
        # SQLite: the refusal, and the id of the call a tool message answers.
        {"no", "todai", "call", "1"},
    ),
    (
        Call(id="responses", provider="openai", messages=[
            ASKED,
            {"type": "function_call", "call_id": "call_1", "name": "lookup_order",
             "arguments": '{"order_id": "77"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "carrier quokkaexpress"},
        ], response={"id": "resp_1", "object": "response", "status": "completed", "model": "gpt",
                     "instructions": "Be brief.", "tools": [],
                     "text": {"format": {"type": "text"}, "verbosity": "low"},
                     "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "pondering"}]},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
                {"type": "output_text", "text": "It is on its way.", "annotations": []},
                {"type": "refusal", "refusal": "No refunds today."}]},
            {"type": "function_call", "call_id": "call_2", "name": "issue_refund",
             "arguments": '{"reason": "marmalade", "cents": 5}'},
        ]}),
        set(),
        # SQLite: the reasoning summary, the refusal, the text settings.
        {"ponder", "no", "todai", "low"},
    ),
    (Call(id="failed", provider="anthropic", messages=[ASKED],
          error={"type": "overloaded_error", "status": 529, "message": "the gryphon cluster is overloaded"}),
     set(), set()),
]  # fmt: skip


def _row_terms(db: Any, vocabulary: str, rowid: int) -> set[str]:
    return {term for (term,) in db.execute(f"SELECT term FROM {vocabulary} WHERE doc = ?", (rowid,))}


def test_sqlite_indexes_a_call_by_the_words_python_reads_in_it(tmp_path: Path, fake: FakeProvider) -> None:
    """A call's words are read twice: in Python from the call (`search.document`: what
    PostgreSQL indexes, snippets show and vectors embed, through each API's shapes) and by
    SQLite's index triggers from the stored row (`search.sqlite_document`: every string
    leaf). For the calls the APIs make, both find the same words, in the same tokenizer's
    terms. Where they part is written here: a change of either reading shows."""
    recorded = [record(fake, scenario) for scenario, *_ in SCENARIOS] + [record(fake, anthropic_blocks)]
    assert {c.provider for c in recorded} == {"anthropic", "openai"}
    with open_store(str(tmp_path / "s.db")) as store:
        store.insert([*recorded, *(c for c, _, _ in SHAPES)])
        # The Python document, through the index's own tokenizer (a table like it, in temp).
        (made,) = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'call_text'").fetchone()
        store.db.execute(made.replace("CREATE VIRTUAL TABLE call_text", "CREATE VIRTUAL TABLE temp.doc_text"))
        store.db.execute("CREATE VIRTUAL TABLE temp.doc_terms USING fts5vocab(temp, doc_text, 'instance')")
        store.db.execute("CREATE VIRTUAL TABLE temp.index_terms USING fts5vocab(main, call_text, 'instance')")
        expected = {c.id: (set(), set()) for c in recorded} | {c.id: (py, sql) for c, py, sql in SHAPES}
        for call_id, (only_python, only_sqlite) in expected.items():
            call = store.get(call_id)
            assert call is not None
            (rowid,) = store.db.execute("SELECT rowid FROM call_data WHERE id = ?", (call_id,)).fetchone()
            store.db.execute(
                "INSERT INTO temp.doc_text (rowid, doc) VALUES (?, ?)", (rowid, text_search.document(call))
            )
            python, sqlite = (
                _row_terms(store.db, "doc_terms", rowid),
                _row_terms(store.db, "index_terms", rowid),
            )
            assert len(python) > 3, call_id
            assert (python - sqlite, sqlite - python) == (only_python, only_sqlite), call_id


def _unindexed_cleanly(store: Any) -> None:
    store.db.execute("DELETE FROM call_data")
    assert _terms(store.db) == 0
    store.db.execute("INSERT INTO call_text (call_text, rank) VALUES ('integrity-check', 0)")


def test_a_message_changed_after_it_was_stored_leaves_no_words_behind(tmp_path: Path) -> None:
    # The content cache knows a message by the identity of its object: changed since it was
    # stored, it still names what was stored. The words indexed are the stored text's, as the
    # delete trigger reads them back, not the object's as it is now.
    with open_store(str(tmp_path / "s.db")) as store:
        message = {"role": "user", "content": "zebra okapi"}
        store.insert([Call(id="first", messages=[message])])
        message["content"] = "walrus narwhal"  # e.g. a cache_control breakpoint moved, text edited
        store.insert([Call(id="second", messages=[message])])
        stored = store.get("second")
        assert stored is not None and stored.messages is not None
        hits = [h.call.id for h in store.search("walrus", CallFilter())]
        # A hit must hold the word: "second" is stored with the text it was named by.
        assert all("walrus" in str((store.get(i) or Call()).messages) for i in hits), hits
        _unindexed_cleanly(store)


def test_ids_python_and_sqlite_compare_differently_leave_no_words_behind(tmp_path: Path) -> None:
    # Ids that are not text (a caller of the store's own): Python takes 1.0 for 1, SQLite
    # stores 1.0 as '1.0', a row of its own, and drops the call with the text id '1.0'. Each
    # row is indexed with its own words.
    with open_store(str(tmp_path / "s.db")) as store:
        store.insert(
            [
                Call(id=1, messages=[{"role": "user", "content": "alpha"}]),  # type: ignore[arg-type]
                Call(id=1.0, messages=[{"role": "user", "content": "bravo"}]),  # type: ignore[arg-type]
                Call(id="1.0", messages=[{"role": "user", "content": "charlie"}]),
            ]
        )
        assert [h.call.id for h in store.search("charlie", CallFilter())] == []
        _unindexed_cleanly(store)


def test_messages_not_a_list_are_stored_again(tmp_path: Path) -> None:
    # Messages given as one dict, not a list of them, stored as it is each time (its keys
    # are content the store knows by identity the second time).
    with open_store(str(tmp_path / "s.db")) as store:
        for _ in range(2):
            assert store.insert([Call(messages={"role": "user", "content": "hello"})]) == 1  # type: ignore[arg-type]


def _deeper(levels: int, then: Any) -> Any:
    return then() if levels == 0 else _deeper(levels - 1, then)


def test_the_words_of_deep_json_do_not_depend_on_the_stack(tmp_path: Path) -> None:
    # `sqlite_document` walks JSON past `DEEPEST` levels on a stack of its own, not up to the
    # interpreter's recursion limit (it gave "" past it): a message nested ~950 levels
    # (`store.insert` takes it) indexed from one stack is unindexed from a deeper one
    # (retention, the web) with the same words.
    with open_store(str(tmp_path / "s.db")) as store:
        depth, frame = 0, sys._getframe()
        while frame is not None:
            depth, frame = depth + 1, frame.f_back
        value: Any = "abyssword"
        for _ in range(sys.getrecursionlimit() - depth - 30):  # as deep as the insert takes
            value = [value]
        store.insert([Call(id="deep", messages=[{"role": "user", "content": value}])])
        indexed = _terms(store.db)
        _deeper(60, lambda: store.db.execute("DELETE FROM call_data"))
        assert _terms(store.db) == 0, indexed


def _leaf_words_before(value: Any, out: list[str]) -> None:
    """`search._leaf_words` as every release before had it: recursive all the way down."""
    kind = type(value)
    if kind is dict:
        for key, v in value.items():
            if type(v) is str:
                if key not in text_search.NOT_WORDS and not v.startswith(text_search.SEALED):
                    out.append(v)
            elif v is not None:
                _leaf_words_before(v, out)
    elif kind is list:
        for v in value:
            if type(v) is str:
                if not v.startswith(text_search.SEALED):
                    out.append(v)
            elif v is not None:
                _leaf_words_before(v, out)
    elif kind is str and not value.startswith(text_search.SEALED):
        out.append(value)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def test_rows_indexed_by_the_recursive_walk_are_unindexed_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer stores JSON deeper than orjson writes (~254 levels: `json_text` falls back to
    # the standard library). A store indexed by the recursive walk of every release before
    # is given back every word of such a call when it is deleted, however deep.
    path = str(tmp_path / "s.db")
    call = Call(
        id="deep",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        messages=[{"role": "user", "content": _nested(300, "abyssalword")}],
        response={"content": [{"type": "text", "text": "surfaceword"}, _nested(300, "trenchword")]},
    )
    with monkeypatch.context() as m:  # the store as the release before wrote it
        m.setattr(text_search, "_leaf_words", _leaf_words_before)
        with open_store(path) as store:
            assert store.insert([call]) == 1
            assert _terms(store.db) == 3
    with open_store(path) as store:  # this change: the same store, opened and cleared
        store.db.execute("DELETE FROM call_data")
        assert _terms(store.db) == 0
