"""A JSON array body that begins with a UTF-8 byte order mark is read as the array it is
(each record on its own); one record's byte that is not UTF-8 must not change that: the
byte is replaced and the other records kept, as without the mark."""

from __future__ import annotations

from llmlog.pipeline.jsonl import parse_batches

BOM = b"\xef\xbb\xbf"
GOOD = b'{"timestamp": "2026-01-02T03:04:05Z", "model": "m", "feature": "ok"}'
BAD_BYTE = b'{"timestamp": "2026-01-02T03:04:05Z", "model": "m", "feature": "x\xffy"}'


def _read(body: bytes) -> tuple[int, list[str]]:
    calls, bad = 0, []
    for batch in parse_batches(body):
        calls += len(batch.calls)
        bad += [b.reason for b in batch.bad]
    return calls, bad


def test_an_array_with_a_byte_order_mark_is_read_record_by_record() -> None:
    assert _read(BOM + b"[" + GOOD + b"," + GOOD + b"]") == (2, [])


def test_a_bad_byte_in_one_record_of_an_array_with_a_byte_order_mark_keeps_the_others() -> None:
    assert _read(b"[" + BAD_BYTE + b"," + GOOD + b"]") == (2, [])  # without the mark
    assert _read(BOM + b"[" + BAD_BYTE + b"," + GOOD + b"]") == (2, [])
