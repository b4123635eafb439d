"""The Search page and "calls like this one" in the UI, over both stores: planted words are
found and marked, filters apply, hostile text stays inert, bad parameters are refused; the
JSON twins; a viewer cannot search the text of calls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends import Backend
from tests.webui import HOSTILE, Running, assert_inert, make_call


@pytest.fixture
def ui(backend: Backend) -> Iterator[Running]:
    with Running(backend) as running:
        calls = [make_call(i) for i in range(40)]
        said = {
            7: "my order went to the wrong narwhal depot",
            8: f"narwhal {HOSTILE}",
            9: "The package I ordered never arrived; please refund my money.",
            10: "My parcel never arrived: I want a refund of my money.",
            11: "My parcel never arrived and I want my money back.",
        }
        for i, text in said.items():
            message = [{"role": "user", "content": text}]
            calls[i] = make_call(i, messages=message, **({"feature": "other"} if i == 8 else {}))
        running.store.insert(calls)
        yield running


def test_search_finds_and_marks_the_words(ui: Running) -> None:
    page = ui.get("/search", params={"q": "narwhal"})
    assert page.status_code == 200
    assert page.text.count("<mark>narwhal</mark>") == 2
    assert_inert(page.text, "search results")
    assert "&lt;script&gt;" in page.text
    one = ui.get("/search", params={"q": "narwhal", "feature": "other"}).text
    assert one.count("<mark>narwhal</mark>") == 1 and "wrong" not in one
    assert "No calls match." in ui.get("/search", params={"q": "zebu"}).text
    assert "No calls match." not in ui.get("/search").text  # nothing asked, nothing said
    api = ui.get("/api/search", params={"q": "narwhal depot"}).json()
    assert [c["id"] for c in api["calls"]] == [make_call(7).id]
    assert {"text": "narwhal", "match": True} in api["calls"][0]["snippet"]


def test_bad_parameters_are_refused(ui: Running) -> None:
    assert ui.get("/search", params={"q": "x", "since": "soon"}).status_code == 400
    assert ui.get("/search", params={"q": "x", "n": "0"}).status_code == 400
    assert ui.get("/api/search", params={"q": "x", "n": "lots"}).json()["error"].startswith("n must")


def test_calls_like_this_one(ui: Running) -> None:
    parcel = make_call(10).id
    before = ui.get(f"/calls/{parcel}/similar")
    assert before.status_code == 200 and "llmlog similar --enable" in before.text
    ui.store.enable_vectors()
    page = ui.get(f"/calls/{parcel}/similar", params={"feature": "summarize"})
    assert page.status_code == 200 and "Calls like" in page.text
    assert_inert(page.text, "similar")
    found = ui.get(f"/api/calls/{parcel}/similar", params={"n": "2"}).json()
    assert {c["id"] for c in found["calls"]} == {make_call(9).id, make_call(11).id}  # the other lost parcels
    assert ui.get("/calls/nope/similar").status_code == 404
    assert f'href="/calls/{parcel}/similar"' in ui.get(f"/calls/{parcel}").text
