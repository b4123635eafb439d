"""Train the zstd dictionary the embedded store compresses text with (`llmlog.store.compression`).

    python -m bench.text_dictionary OUT.zdict

The samples are the demo workload's calls, made through the real SDKs against the fake
provider: each response, system prompt, tool list, parameter set and message, as the store
keeps them, reduced to its skeleton (every string longer than a word blanked), so that the
dictionary holds the providers' structure and no one's text. A shipped dictionary never
changes (stored values name it): a new one is added under the next number."""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import zstandard

import llmlog
from bench.run import _contexts, capture, ingest
from llmlog.demo.fake_provider import FakeProvider
from llmlog.demo.workload import generate
from llmlog.store import open_store

SIZE = 16_384
CALLS = 3_000


def skeleton(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: skeleton(v) for k, v in value.items()}
    if isinstance(value, list):
        return [skeleton(v) for v in value]
    if isinstance(value, str) and len(value) > 12:
        return ""
    return value


def samples(db: str) -> list[bytes]:
    out: list[bytes] = []
    with open_store(db) as store:
        rows = store.query_rows("SELECT messages, tools, params, response FROM calls", limit=10**9)
        for messages, tools, params, response in rows:
            values = [json.loads(v) for v in (tools, params, response) if v is not None]
            values += json.loads(messages or "[]")
            out += [json.dumps(skeleton(v), separators=(",", ":")).encode() for v in values]
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    with tempfile.TemporaryDirectory() as tmp:
        llmlog.configure(db=str(Path(tmp) / "unused.db"))
        with FakeProvider(latency_ms=0, first_token_ms=0, chunk_ms=0, seed=11) as fake:
            steps = generate(CALLS, seed=11)
            exchanges = capture(fake, steps)
        _contexts(steps, exchanges)
        db = str(Path(tmp) / "train.db")
        ingest(db, exchanges, CALLS)
        found = samples(db)
    random.Random(11).shuffle(found)
    trained = zstandard.train_dictionary(SIZE, found, level=6)
    out.write_bytes(trained.as_bytes())
    print(f"{len(found):,} skeletons; {out} ({len(trained.as_bytes()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
