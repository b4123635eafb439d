"""The refusal rules against a labelled set of responses (tests/data/refusals.jsonl):
refusals by stop reason, by OpenAI's refusal field and by their opening words; answers that
merely mention not being able to find or do something are not refusals."""

from __future__ import annotations

import json
from pathlib import Path

from llmlog.analysis import refusals

LABELLED = [json.loads(line) for line in (Path(__file__).parent / "data" / "refusals.jsonl").open()]


def test_the_rules_agree_with_every_label() -> None:
    assert sum(r["refusal"] for r in LABELLED) >= 20 and sum(not r["refusal"] for r in LABELLED) >= 20
    wrong = [r for r in LABELLED if refusals.refused(r["stop_reason"], r["text"]) != r["refusal"]]
    assert wrong == []


def test_the_text_is_read_from_each_api_shape() -> None:
    sorry = "I'm sorry, but I can't help with that."
    anthropic = {"role": "assistant", "content": [{"type": "text", "text": sorry}]}
    chat = {"choices": [{"message": {"role": "assistant", "content": sorry, "refusal": None}}]}
    chat_refusal = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "No."}}]}
    responses = {
        "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": sorry}]}
        ]
    }
    responses_refusal = {"output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}]}
    for response in (anthropic, chat, chat_refusal, responses, responses_refusal):
        assert refusals.refused("stop", *refusals.response_parts(response)), response
    fine = {"role": "assistant", "content": [{"type": "text", "text": "Here you go."}]}
    assert not refusals.refused("stop", *refusals.response_parts(fine))
    # Sealed text (regulated mode) cannot be read: only the stop reason tells.
    assert refusals.response_parts("llmlog-enc:v1:k1:AAAA") == ("", None)
    assert refusals.refused("content_filter", *refusals.response_parts("llmlog-enc:v1:k1:AAAA"))
