"""Calls like this one: each call's text as a vector, compared by cosine.

The vectors come from a small embedding model run here: WordLlama's `l2_supercat` (256
dimensions; token embeddings averaged), whose weights and tokenizer ship inside the
`wordllama` package, so nothing is downloaded, ever. It is an optional extra
(llmlog installed with `[semantic]`): nothing else in llmlog imports it.

A store embeds only once asked to (`llmlog similar --enable`, a setting of the store, so
every process writing to it does the same); the calls stored before are embedded then.
The text embedded is what full-text search indexes (`search.document`: what the call newly
said and heard), so sealed text (regulated mode) is never embedded either: a vector gives
away what a text is about.

Vectors are stored beside the call, as 256 float16 (512 bytes), and compared by a scan with
numpy of the newest `SCAN` calls the filter selects: a few tens of milliseconds per
100,000. An index for nearest neighbours (sqlite-vec, pgvector) would need an extension
loaded into the database, which this Python's sqlite3 cannot load, and pays off only far
beyond the calls one debugs among.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from llmlog.core.record import Call
from llmlog.store import search

DIM = 256
SCAN = 100_000  # the newest calls a "like this one" compares with
MAX_CHARS = 4_000  # a mean of token vectors: the start of a long text says what it is about

_lock = threading.Lock()
_model: Any = None


class Unavailable(RuntimeError):
    """The extra is not installed."""


def model() -> Any:
    """The model, loaded once per process from the package's own files."""
    global _model
    with _lock:
        if _model is None:
            try:
                import wordllama
                from safetensors import safe_open
                from wordllama import WordLlama
                from wordllama.inference import WordLlamaInference
            except ImportError:
                raise Unavailable(
                    "calls like this one need the semantic extra: install llmlog with it,"
                    " e.g. pip install '/path/to/llmlog[semantic]' from a checkout"
                ) from None
            # From the package's own files: WordLlama.load() looks for the tokenizer in a folder
            # the package does not have, and would download it.
            root = Path(wordllama.__file__).parent
            tokenizer = WordLlama.load_tokenizer(root / "tokenizers" / "l2_supercat_tokenizer_config.json")
            with safe_open(str(root / "weights" / "l2_supercat_256.safetensors"), "np") as f:
                weights = f.get_tensor("embedding.weight")
            _model = WordLlamaInference(weights, tokenizer)
        return _model


def embed(texts: list[str]) -> list[bytes]:
    """Unit vectors of the texts, as float16 bytes."""
    import numpy as np

    vectors = model().embed([t[:MAX_CHARS] for t in texts], norm=True)
    return [row.tobytes() for row in np.asarray(vectors, dtype=np.float16)]


def of_calls(calls: list[Call]) -> list[tuple[str, bytes]]:
    """(call id, vector) for the calls that have text to embed."""
    docs = [(c.id, d) for c in calls if (d := search.document(c))]
    return list(zip([i for i, _ in docs], embed([d for _, d in docs]), strict=True)) if docs else []


def nearest(target: bytes, candidates: list[tuple[str, bytes]], limit: int) -> list[tuple[str, float]]:
    """The `limit` candidates most like `target`, with their cosine similarity, best first."""
    import numpy as np

    if not candidates:
        return []
    matrix = np.frombuffer(b"".join(v for _, v in candidates), dtype=np.float16).reshape(-1, DIM)
    scores = matrix.astype(np.float32) @ np.frombuffer(target, dtype=np.float16).astype(np.float32)
    best = np.argsort(-scores, kind="stable")[:limit]
    return [(candidates[i][0], float(scores[i])) for i in best]
