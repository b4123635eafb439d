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

from functools import lru_cache

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
        events = []
        for raw in blocks:
            # Nearly every event is one `event:` line and one `data:` line, or a `data:` line
            # alone: those take a few slices; anything else, the general reading.
            if raw.startswith(b"event: "):
                nl = raw.find(b"\n")
                if nl > 0 and raw.startswith(b"data: ", nl + 1) and raw.find(b"\n", nl + 1) < 0:
                    events.append((_event_name(raw[7:nl]), raw[nl + 7 :]))
                    continue
            elif raw.startswith(b"data: ") and b"\n" not in raw:
                events.append(("", raw[6:]))
                continue
            event = self._read(raw)
            if event is not None:
                events.append(event)
        return events

    def _read(self, raw: bytes) -> tuple[str, bytes] | None:
        """The event of one block of lines (no blank line inside), or None if it has no data."""
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
