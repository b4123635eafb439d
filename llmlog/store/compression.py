"""Text stored once per call, compressed: the embedded store's responses and content bodies.

A call's response and each new message are a few hundred bytes to a few KB of JSON, too
small for a compressor to find much to reuse inside one value; most of their bytes are the
provider's structure (`"type":"text"`, `"usage":{"input_tokens":…`, `"role":"assistant"`),
the same in every call. A zstd dictionary of that structure lets each value be compressed on
its own (so any row can be read, rewritten or erased alone) at about a quarter of its size.

The dictionary ships with llmlog (`text-1.zdict`) and holds no one's text: it was trained on
the skeletons of the demo workload's requests and responses (every string longer than a
word blanked out; `bench/text_dictionary.py` made it). A dictionary trained on a store's own
calls would compress better, but would keep pieces of what people said in a place that
erasure (`llmlog delete`) and retention cannot reach.

A compressed value is a BLOB: one byte naming the dictionary, then a zstd frame. Anything
else (text, NULL) is stored and read as it is, so stores written before this, values too
small to gain, and sealed text (random, see `llmlog.core.encryption`) need nothing. SQLite reads
them back through `llmlog_text(x)`, which every connection the store opens defines, and
which the `calls` view and the search index's triggers use.

A dictionary, once shipped, never changes: stored values name it. A better one is added
beside it under the next number."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from importlib import resources

import zstandard

# The dictionaries by the byte that names them; the last is the one new values use.
_FILES = {1: "text-1.zdict"}
# SHA-256 of each, so that a rebuilt file (which would make every stored value unreadable)
# is caught by the tests, not by a user.
DIGESTS = {1: "85793064852a61afd16cd8374b65e1dbc601aa92779cf93c09340c8c7119e8b3"}
CURRENT = max(_FILES)
# Below this many bytes a value gains too little to pay for a BLOB and a function call.
MIN_BYTES = 96
# zstd's level: on the workload's calls, 4 stores a response and a message in ~790 bytes
# together (from ~1,770) for ~12 µs; 6 in ~600, but for ~50 µs, a tenth of what the whole
# of a call's ingest costs.
LEVEL = 4

_local = threading.local()
_lock = threading.Lock()
_dicts: dict[int, zstandard.ZstdCompressionDict] = {}


def dictionary_bytes(number: int) -> bytes:
    return resources.files("llmlog.store").joinpath(_FILES[number]).read_bytes()


def _dictionary(number: int) -> zstandard.ZstdCompressionDict:
    found = _dicts.get(number)
    if found is None:
        with _lock:
            found = _dicts.get(number)
            if found is None:
                found = zstandard.ZstdCompressionDict(dictionary_bytes(number))
                _dicts[number] = found
    return found


def _compressor() -> zstandard.ZstdCompressor:
    # zstd's (de)compressors are not safe to share between threads; each thread has its own.
    c: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if c is None:
        c = _local.compressor = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=_dictionary(CURRENT), write_checksum=False, write_dict_id=False
        )
    return c


def _decompressor(number: int) -> zstandard.ZstdDecompressor:
    by_number: dict[int, zstandard.ZstdDecompressor] | None = getattr(_local, "decompressors", None)
    if by_number is None:
        by_number = _local.decompressors = {}
    d = by_number.get(number)
    if d is None:
        d = by_number[number] = zstandard.ZstdDecompressor(dict_data=_dictionary(number))
    return d


def pack(text: str) -> str | bytes:
    """`text` as it is best stored: compressed when that makes it smaller, else unchanged."""
    packed = pack_all([text])[0]
    assert packed is not None
    return packed


def pack_all(texts: Sequence[str | None]) -> list[str | bytes | None]:
    """What `pack` gives of each text (None stays None), compressed in one call to zstd.

    zstd lets go of the interpreter lock while it compresses, and taking it back waits
    behind the app's threads (up to the switch interval, 5 ms, when one is busy): a store's
    batch is compressed in one go, not value by value (the same frames either way)."""
    out: list[str | bytes | None] = list(texts)
    raws: list[bytes | bytearray | memoryview] = []
    at: list[int] = []
    for i, text in enumerate(texts):
        if text is None or len(text) < MIN_BYTES:
            continue
        try:
            raws.append(text.encode())
        except UnicodeEncodeError:  # a lone surrogate: stored (or refused) as the text it is
            continue
        at.append(i)
    if not raws:
        return out
    frames = _compressor().multi_compress_to_buffer(raws)
    made = getattr(_local, "made", None)
    name = bytes((CURRENT,))
    for n, i in enumerate(at):
        packed = frames[n].tobytes()
        if len(packed) + 1 < len(raws[n]):
            value = out[i] = name + packed
            if made is not None:
                made[value] = texts[i]
    return out


@contextlib.contextmanager
def recalling() -> Iterator[None]:
    """Within it, this thread's `unpack` gives back what its `pack` made without decompressing
    it: a store's insert, whose triggers read the values it has just packed (the search
    index's words of a row's response and last message). A value always unpacks to the one
    text, so what is recalled is what decompressing would give."""
    _local.made = {}
    try:
        yield
    finally:
        _local.made = None


class TooLarge(ValueError):
    """A value would unpack to more than the reader may hold."""


def check_size(value: object, max_bytes: int) -> None:
    """Refuse (`TooLarge`) a value `pack` made that would unpack to more than `max_bytes`,
    before any of it is made: anyone who may run SQL can hand `llmlog_text` a BLOB of their
    own, and a few KB of zstd can declare (and hold) gigabytes."""
    if isinstance(value, bytes) and value[:1] and value[0] in _FILES:
        # The size the frame declares is what is allocated, and all it may decompress to;
        # `pack`'s frames always declare it (-1: not declared).
        size = zstandard.frame_content_size(value[1:])
        if size < 0 or size > max_bytes:
            raise TooLarge(f"unpacks to more than {max_bytes} bytes")


def unpack(value: str | bytes | None, max_bytes: int | None = None) -> str | None:
    """What `pack` was given; text and NULL pass through. SQLite's `llmlog_text`. With
    `max_bytes`, a value that would unpack to more is refused (`check_size`)."""
    if not isinstance(value, bytes):
        return value
    made = getattr(_local, "made", None)
    if made is not None and max_bytes is None and (text := made.get(value)) is not None:
        return text
    if not value or value[0] not in _FILES:
        # A BLOB llmlog did not write (SQL by hand): shown as SQLite would cast it.
        return value.decode(errors="replace")
    if max_bytes is not None:
        check_size(value, max_bytes)
    return _decompressor(value[0]).decompress(value[1:]).decode()


def digest(number: int) -> str:
    return hashlib.sha256(dictionary_bytes(number)).hexdigest()
