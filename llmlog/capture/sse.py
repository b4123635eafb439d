"""An incremental server-sent events parser, by the line rules of the WHATWG EventSource spec.

Lines end with CRLF, LF or CR, and a network read may cut anywhere, between the CR and the LF
of one line end included (servers built on sse-starlette send CRLF). A blank line dispatches
the event; `data:` lines are joined with LF; one space after the colon is dropped; a line
starting with a colon is a comment; a line without a colon is a field with an empty value.

Why not the SDKs' own decoders: they are private modules of each SDK, decode every line to
`str`, and give no arrival time per event; ours works on the recorded bytes, leaves data as
bytes for the JSON decoder, and says when the stream ended inside an event.

Data stay bytes and, for the usual event (an `event:` line and a `data:` line, or a `data:`
line alone), are slices of the chunk they came in: no per-line work.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate

_BOM = b"\xef\xbb\xbf"


class SSEParser:
    """Feed it the body chunk by chunk; each call returns the events that chunk completed.

    `close()` ends the stream: an event begun and never ended by a blank line is discarded,
    as the spec says, and `truncated` tells the caller that something was lost.
    """

    __slots__ = ("_cr", "_head", "_pending", "last_event_id", "truncated")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        # The last chunk ended with a CR, already taken as a line end: an LF that opens the
        # next chunk is the rest of that CRLF, not a line end of its own. Remembering this is
        # the spec's "wait for the next byte" without holding the line back.
        self._cr = False
        self._head: bytes | None = b""  # the stream's first bytes until we know there is no BOM
        self.truncated = False
        self.last_event_id = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        if self._head is not None:
            head = self._head + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._head = head  # a BOM cut short, or not: the next bytes tell
                return []
            self._head = None
            chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if b"\r" in chunk:
            self._cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pending = self._pending
        if pending:
            # A blank line may be cut in two: the LF ending the last line, then the empty line's.
            if b"\n\n" not in chunk and not (pending[-1][-1:] == b"\n" and chunk[:1] == b"\n"):
                pending.append(chunk)  # joined once the event is whole: no quadratic copying
                return []
            pending.append(chunk)
            chunk = b"".join(pending)
        if chunk.find(b"\n\n") == len(chunk) - 2 >= 0:  # one whole event, as most chunks are
            blocks, self._pending = [chunk[:-2]], []
        else:
            blocks = chunk.split(b"\n\n")
            last = blocks.pop()  # what follows the last blank line: empty, or an event begun
            self._pending = [last] if last else []
        return [event for raw in blocks if (event := self._event(raw)) is not None]

    def feed_all(self, chunks: Sequence[tuple[float, bytes]]) -> list[tuple[float, str, bytes]]:
        """A whole stream, as (arrival time, chunk): (time, name, data) of each of its events,
        the time that of the chunk that completed it, as `feed` chunk by chunk and `close`
        give them. A stream in LF line ends with no byte order mark (as the APIs send it) is
        split once, not chunk by chunk: a recorded stream is a few dozen chunks, and its events
        are what the writer reads of it."""
        body = b"".join([chunk for _, chunk in chunks])
        if self._head != b"" or self._pending or b"\r" in body or body[:1] == _BOM[:1]:
            events = [(t, *event) for t, chunk in chunks for event in self.feed(chunk)]
            self.close()
            return events
        self._head = None
        blocks = body.split(b"\n\n")
        last = blocks.pop()
        self._pending = [last] if last else []
        ends = list(accumulate([len(chunk) for _, chunk in chunks]))
        timed: list[tuple[float, str, bytes]] = []
        at = i = 0
        for raw in blocks:
            at += len(raw) + 2  # past the blank line's LF, the event's last byte
            while ends[i] < at:
                i += 1
            event = self._event(raw)
            if event is not None:
                timed.append((chunks[i][0], *event))
        self.close()
        return timed

    def _event(self, raw: bytes) -> tuple[str, bytes] | None:
        """The event of one block of lines (no blank line inside), or None if it has no data.
        Nearly every event is one `event:` line and one `data:` line, or a `data:` line alone:
        those take a few slices; anything else, the general reading."""
        if raw.startswith(b"event: "):
            nl = raw.find(b"\n")
            if nl > 0 and raw.startswith(b"data: ", nl + 1) and raw.find(b"\n", nl + 1) < 0:
                return _event_name(raw[7:nl]), raw[nl + 7 :]
        elif raw.startswith(b"data: ") and b"\n" not in raw:
            return "", raw[6:]
        return self._read(raw)

    def _read(self, raw: bytes) -> tuple[str, bytes] | None:
        # The general reading of a block, line by line.
        name, data = "", []
        for line in raw.split(b"\n"):
            if not line or line[:1] == b":":
                continue  # the empty line before a split "\n\n\n", or a comment (keep-alive)
            field, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = _event_name(value)
            elif field == b"id" and b"\0" not in value:
                self.last_event_id = value
            # `retry:` and unknown fields are ignored, as the spec says.
        if not data:
            return None
        return name, b"\n".join(data)

    def close(self) -> list[tuple[str, bytes]]:
        """End of stream. Returns no events (an unended one is discarded) but notes the loss."""
        rest = b"".join(self._pending)
        if self._head:  # fewer bytes than a BOM in the whole stream
            rest += self._head
        self._pending, self._head, self._cr = [], None, False
        if any(line and line[:1] != b":" for line in rest.replace(b"\r", b"\n").split(b"\n")):
            self.truncated = True
        return []


@lru_cache(maxsize=256)
def _event_name(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
