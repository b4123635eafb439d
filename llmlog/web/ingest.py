"""The collector's way in: `POST /v1/calls` takes records in the record's column names (one
JSON object, a JSON array, or NDJSON; gzip or not) from any language, and stores them priced
like every other call.

What the API promises, and why:
- Each record that cannot be read is rejected with its index and reason; the good ones are
  stored. A batch never fails whole for one bad record.
- Idempotent by `id` (a record without one gets an id derived from its text): a batch sent
  again after a lost response is stored once, so a client may always retry.
- The response comes after the batch is committed, so a 2xx means stored; a 503 (store
  unavailable) means nothing of it was, and the client keeps it to send again.
- Bodies and records over the limits get a 413 with the limit, never a crash.
- `LLMLOG_INGEST_TOKEN` guards it (`Authorization: Bearer …`). That token opens these routes
  only: it reads nothing, and the UI's token does not open them.
- Without a token, a body must say it is JSON, NDJSON or protobuf (415 otherwise): those are
  the types no web page can make a browser send here (`proxy.PROGRAM_TYPES`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from llmlog.capture import otlp as otlp_in
from llmlog.capture.proxy import Gate, allows, refused_type, sent_by_a_program, vouches
from llmlog.core.config import Settings
from llmlog.core.logs import recording_log
from llmlog.core.record import (
    COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    JSON_COLUMNS,
    MAX_REAL,
    MAX_TOKENS,
    Call,
    RecordError,
    Span,
    SpanEvent,
)
from llmlog.pipeline import otlp as otlp_ingest
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.jsonl import BadRecord, parse_batches, parse_spans
from llmlog.pipeline.pricing import Pricer
from llmlog.pipeline.writer import keep_spans
from llmlog.store.regulated import Refused
from llmlog.web.answer import JSONResponse
from llmlog.web.state import Web

log = recording_log()  # never raises: a handler of the app's cannot stop it

MAX_BODY = 64 * 2**20  # bytes of a request body, after gzip is undone
MAX_RECORD = 16 * 2**20  # bytes of one record's JSON
# Records of a `/v1/calls` body read and stored at a time: a few MB of calls, each one
# transaction (on the workload's long conversations, 100 calls take ~4 MB as objects).
PART = 100
# How much larger than sent a gzipped body is taken to be once inflated (JSON and protobuf
# of calls inflate 5 to 10 times), for its share of the bytes held (`BodyBudget`).
GZIP_RATIO = 8
# Seconds a request body may go without a byte arriving before it is refused (408): what it
# holds of the byte budget is given back.
IDLE_S = 30.0


class TooLarge(Exception):
    pass


async def read_body(
    request: Request, limit: int, started: Callable[[], Awaitable[None]] | None = None
) -> bytes:
    """The body, gunzipped when it says so; TooLarge past `limit` bytes (read no further).
    `started` is awaited once its first bytes are in (or it is known empty). TimeoutError when
    nothing more arrives for `IDLE_S`: a client that stopped sending holds nothing for long."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    parts: list[bytes] = []
    size = 0
    chunks = aiter(request.stream())
    while True:
        async with asyncio.timeout(IDLE_S):
            chunk = await anext(chunks, None)
        if started is not None:
            await started()
            started = None
        if chunk is None:
            break
        size += len(chunk)
        if size > limit:
            raise TooLarge
        parts.append(chunk)
    body = b"".join(parts)
    if gzipped(request):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflate.decompress(body, limit + 1)
        except zlib.error as exc:
            raise ValueError(f"body is not valid gzip: {exc}") from None
        if len(body) > limit or inflate.unconsumed_tail:
            raise TooLarge
    return body


def gzipped(request: Request) -> bool:
    return request.headers.get("content-encoding", "").strip().lower() in ("gzip", "x-gzip")


def bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def authorized(request: Request, token: Gate) -> bool:
    return allows(token, bearer(request))


def refusal_of(request: Request, token: Gate) -> Response | None:
    """Why a write is not taken, if it is not: no token where one is needed (401); a
    content type any web page can send, without a token to show it is not from one (415)."""
    if not authorized(request, token):
        return unauthorized()
    if not sent_by_a_program(request.headers) and not vouches(token, bearer(request)):
        return refused_type("LLMLOG_INGEST_TOKEN as a bearer token")
    return None


def unauthorized() -> Response:
    return JSONResponse(
        {"error": "a bearer token is required (LLMLOG_INGEST_TOKEN)"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def receive_spans(web: Web, intake: Intake, spans: list[Span]) -> list[Refused]:
    """One request's decoded spans into the store (`llmlog.pipeline.otlp.ingest_spans`); the spans
    refused. Under `Web.ingesting`: a span of a call another server is storing meanwhile
    finds that call, rather than storing it a second time."""
    # What the spans say of their calls is worked out before the locks are taken: another
    # request's rows (another process's too) are written meanwhile.
    prepared = otlp_ingest.prepare_spans(spans, intake)
    with web.ingesting() as writer:
        return otlp_ingest.ingest_spans(writer, spans, intake, prepared)[1]


def receive_events(web: Web, intake: Intake, events: list[SpanEvent]) -> list[Refused]:
    """One request's decoded log events into the store (`llmlog.pipeline.otlp.ingest_events`); the
    events refused. Under `Web.ingesting`, as spans are: an event and its span arriving at
    two servers at once still meet."""
    with web.ingesting() as writer:
        return otlp_ingest.ingest_events(writer, events, intake)[1]


@dataclass
class Collector:
    """What the collector's routes share, one per app (`create_app` keeps it in the app's
    state): the store (`Web.writing`), the token that opens them, and the pipeline's intake."""

    web: Web
    token: Gate
    # Calls, spans and log events alike: redacted, sealed and priced as every way in does.
    intake: Intake
    # At most this many requests are decoded and stored at once (LLMLOG_INGEST_CONCURRENCY):
    # the rest wait with their body read, not yet decoded (what takes several times the body),
    # so that memory does not grow with the clients sending. Only once the body is in: a
    # client sending slowly holds no one else up.
    admitted: asyncio.Semaphore
    # The bytes of bodies read and not yet done with (LLMLOG_INGEST_BUFFER_MB): past it,
    # requests wait for their turn unread.
    buffered: BodyBudget

    @classmethod
    def made(cls, web: Web, token: Gate = None, settings: Settings | None = None) -> Collector:
        settings = settings or Settings()  # LLMLOG_REDACT…, LLMLOG_KEY: a bad one stops the server here
        intake = Intake(settings, Pricer(settings.prices))  # LLMLOG_PRICES, as in the SDK's writer
        return cls(
            web,
            token,
            intake,
            asyncio.Semaphore(settings.ingest_concurrency),
            BodyBudget(settings.ingest_buffer_bytes),
        )


def collector_of(request: Request) -> Collector:
    return cast(Collector, request.app.state.collector)


class BodyBudget:
    """The bytes of ingest bodies a server holds at once, read and waiting for their turn
    or being handled (LLMLOG_INGEST_BUFFER_MB). A request takes its share once its body
    starts to arrive; past the budget the others wait unread (in the kernel's buffers, not
    ours), so memory does not grow with the clients sending. A body larger than the whole
    budget is read when it is alone. Shares are given in the order asked, so a large body
    is not kept waiting by small ones slipping in ahead of it. A client that sends headers
    and then nothing takes no share, and one that stops sending loses its share after
    `IDLE_S` (`read_body`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def share(self, request: Request) -> int:
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else self.limit  # chunked: the whole budget
        if gzipped(request):
            size *= GZIP_RATIO  # what it will take once inflated, as far as can be told
        return min(size, self.limit)

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    def _wake(self) -> None:
        # Synchronous (no lock to wait for): a share is given back even by a cancelled task.
        while self._waiting and self._fits(self._waiting[0][0]):
            size, granted = self._waiting.popleft()
            if not granted.done():
                self.used += size
                granted.set_result(None)

    @contextlib.asynccontextmanager
    async def held(self, size: int) -> AsyncIterator[None]:
        if not self._waiting and self._fits(size):
            self.used += size
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (size, granted)
            self._waiting.append(entry)
            try:
                await granted
            except BaseException:
                if granted.done() and not granted.cancelled():
                    self.used -= size  # given, then cancelled before it was used
                else:
                    self._waiting.remove(entry)
                self._wake()
                raise
        try:
            yield
        finally:
            self.used -= size
            self._wake()


@contextlib.asynccontextmanager
async def turn(request: Request, c: Collector) -> AsyncIterator[bytes | Response]:
    """A batch's body (every route under `/v1/`) once it is this request's turn, or the
    answer refusing it: no token, a body too large, one that cannot be read (bad gzip) or
    that stopped arriving. The body is read within the byte budget (`BodyBudget`), then
    waits for one of the LLMLOG_INGEST_CONCURRENCY turns to be decoded and stored."""
    declared = request.headers.get("content-length", "")
    refusal = refusal_of(request, c.token)
    if refusal is None and declared.isdigit() and int(declared) > MAX_BODY:
        refusal = too_large()
    if refusal is not None:
        yield refusal
        return
    async with contextlib.AsyncExitStack() as held:

        async def started() -> None:
            await held.enter_async_context(c.buffered.held(c.buffered.share(request)))

        try:
            body: bytes | Response = await read_body(request, MAX_BODY, started)
        except TooLarge:
            body = too_large()
        except TimeoutError:
            body = JSONResponse({"error": f"the body stopped arriving for {IDLE_S:g} s"}, status_code=408)
        except ValueError as exc:
            body = JSONResponse({"error": str(exc)}, status_code=400)
        if isinstance(body, Response):
            yield body
            return
        async with c.admitted:
            yield body


def too_large() -> Response:
    return JSONResponse({"error": f"body over {MAX_BODY:,} bytes"}, status_code=413)


def store_unavailable() -> Response:
    return JSONResponse(
        {"error": "the store is unavailable; nothing of this batch was stored: send it again"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def store_batch(web: Web, calls: list[tuple[int, Call]], bad: list[BadRecord]) -> int:
    """Insert the batch in one transaction; when the store refuses a record as data (not
    as being down), each goes alone so only the bad ones are rejected. Returns how many
    were new. On the collector's own store and connection (`Web.writing`), committed
    before the answer, and never behind a page's reading, which has connections of its own."""
    with web.writing() as writer:
        try:
            return writer.insert([c for _, c in calls])
        except writer.data_errors:
            pass
        new = 0
        for index, call in calls:
            try:
                new += writer.insert([call])
            except writer.data_errors as exc:
                bad.append(BadRecord(index, f"cannot be stored: {exc}"))
        return new


def _take(
    intake: Intake, index: int, call: Call, calls: list[tuple[int, Call]], bad: list[BadRecord]
) -> bool:
    """`call` through the intake into `calls`, or its reason into `bad`: whether it was taken."""
    try:
        calls.append((index, intake.call(call)))
        return True
    except RecordError as exc:  # a bad figure, or too deep to keep: this record
        bad.append(BadRecord(index, str(exc)))
    except Exception as exc:  # pricing a strange record must not lose the batch
        bad.append(BadRecord(index, f"cannot be priced: {exc}"))
    return False


async def post_calls(request: Request) -> Response:
    c = collector_of(request)
    async with turn(request, c) as body:
        if isinstance(body, Response):
            return body
        received = new = oversized = 0
        rejected: list[BadRecord] = []
        seen: set[str] = set()
        # Stored a part at a time: what the calls take in memory (several times their JSON)
        # is then a part's, whatever the body's size. A part stored before the store failed
        # is kept; the client's retry finds it stored (ids) and counts it a duplicate.
        for batch in parse_batches(body, MAX_RECORD, PART):
            received += len(batch.calls) + len(batch.bad)
            oversized += batch.too_large
            # An id again in this part waits: if the store refuses the first record of it, the
            # next (the client's fix, sent in the same body) is stored in its place; else it
            # is a duplicate. One the intake refuses leaves its id to the next at once.
            waiting: list[tuple[int, Call]] = []
            taken: set[str] = set()
            calls: list[tuple[int, Call]] = []
            for index, call in batch.calls:
                if call.id in seen:  # stored from an earlier part of this body
                    continue
                if call.id in taken:
                    waiting.append((index, call))
                elif _take(c.intake, index, call, calls, batch.bad):
                    taken.add(call.id)
            refused: list[BadRecord] = []
            unstored: set[str] = set()
            while calls:
                now: list[BadRecord] = []
                try:
                    new += await run_in_threadpool(store_batch, c.web, calls, now)
                except Exception as exc:
                    log.warning("llmlog: store unavailable for an ingested batch: %r", exc)
                    return store_unavailable()
                refused += now
                at = {b.index for b in now}
                failed = {call.id for index, call in calls if index in at}
                calls, still = [], []
                for index, call in waiting:
                    if call.id not in failed:
                        still.append((index, call))
                    elif _take(c.intake, index, call, calls, batch.bad):
                        failed.discard(call.id)
                    # else refused by the intake, once, and the next of its id is tried
                waiting = still
                unstored |= failed
            seen |= taken - unstored
            rejected += [*batch.bad, *refused]
        rejected.sort(key=lambda b: b.index)
        kept = received - len(rejected)
        status = 200
        if not kept and rejected:
            status = 413 if oversized == len(rejected) else 400
        return JSONResponse(
            {
                "received": received,
                "stored": new,
                "duplicates": kept - new,
                "rejected": [{"index": b.index, "reason": b.reason} for b in rejected],
            },
            status_code=status,
        )


def keep_app_spans(web: Web, intake: Intake, spans: list[Span]) -> list[Refused]:
    """An app's own spans into the store as its writer keeps them when it has the store
    itself (`llmlog.pipeline.writer.keep_spans`); the spans refused."""
    with web.writing() as writer:
        return keep_spans(writer, intake, spans)


async def post_spans(request: Request) -> Response:
    """Spans an app made (`llmlog.span`, `llmlog.trace`) as remote mode ships them: NDJSON
    of `Span.to_dict`, into the store as the app's writer would keep them (`keep_app_spans`: a
    span already kept is kept once). Answered as `POST /v1/calls` is."""
    c = collector_of(request)
    async with turn(request, c) as body:
        if isinstance(body, Response):
            return body
        read, bad = parse_spans(body, MAX_RECORD)
        try:
            refused = (
                await run_in_threadpool(keep_app_spans, c.web, c.intake, [s for _, s in read]) if read else []
            )
        except Exception as exc:
            log.warning("llmlog: store unavailable for an ingested batch of spans: %r", exc)
            return store_unavailable()
        rejected = sorted(
            [*bad, *(BadRecord(read[r.index][0], r.reason) for r in refused)], key=lambda b: b.index
        )
        received = len(read) + len(bad)
        status = 400 if rejected and len(rejected) == received else 200
        return JSONResponse(
            {
                "received": received,
                "stored": received - len(rejected),
                "rejected": [{"index": b.index, "reason": b.reason} for b in rejected],
            },
            status_code=status,
        )


async def otlp(request: Request, kind: str) -> Response:
    """OTLP/HTTP: protobuf or JSON (by Content-Type), gzip or not; answered in kind."""
    c = collector_of(request)
    content_type = request.headers.get("content-type", "application/x-protobuf").lower()
    async with turn(request, c) as body:
        if isinstance(body, Response):
            return body
        return await take_otlp(c, body, kind, content_type)


async def take_otlp(c: Collector, body: bytes, kind: str, content_type: str) -> Response:
    try:
        if kind == "traces":
            spans, rejected = otlp_in.decode_spans(body, content_type)
        else:
            events, rejected = otlp_in.decode_logs(body, content_type)
    except ValueError as exc:  # OTLPError
        return JSONResponse({"error": str(exc)}, status_code=400)

    def store() -> list[Refused]:
        if kind == "traces":
            return receive_spans(c.web, c.intake, spans)
        return receive_events(c.web, c.intake, events)

    try:
        refused = await run_in_threadpool(store)
    except Exception as exc:
        log.warning("llmlog: store unavailable for OTLP %s: %r", kind, exc)
        # 503 is one of the answers OTLP exporters retry.
        return JSONResponse({"error": "the store is unavailable: send again"}, status_code=503)
    # What the store refused (regulated mode, no key here) is said as a partial success:
    # sending it again would not help.
    decoded = len(spans) if kind == "traces" else len(events)
    return otlp_in.answer(kind, content_type, otlp_in.in_request(refused, decoded, rejected))


async def traces(request: Request) -> Response:
    return await otlp(request, "traces")


async def logs(request: Request) -> Response:
    return await otlp(request, "logs")


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_description())


def routes() -> list[BaseRoute]:
    """The collector's routes; its `Collector` is in the app's state."""
    return [
        Route("/v1/calls", post_calls, methods=["POST"]),
        Route("/v1/spans", post_spans, methods=["POST"]),
        Route("/v1/traces", traces, methods=["POST"]),
        Route("/v1/logs", logs, methods=["POST"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
    ]


def _column_schema(name: str) -> dict[str, Any]:
    if name == "timestamp":
        return {"type": "string", "format": "date-time", "description": "ISO-8601; UTC unless it says"}
    if name in INT_COLUMNS:
        return {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_TOKENS}
    if name in FLOAT_COLUMNS:
        return {"type": ["number", "null"], "minimum": 0, "maximum": MAX_REAL}
    if name in JSON_COLUMNS:
        kind = "object" if name in ("params", "response", "error", "metadata") else "array"
        return {"type": [kind, "null"]}
    return {"type": ["string", "null"]}


def openapi_description() -> dict[str, Any]:
    record = {
        "type": "object",
        "description": "One model call, in the column names of the `calls` relation.",
        "properties": {name: _column_schema(name) for name in COLUMNS},
        "required": ["timestamp"],
        "additionalProperties": False,
    }
    result = {
        "type": "object",
        "properties": {
            "received": {"type": "integer"},
            "stored": {"type": "integer", "description": "records new to the store"},
            "duplicates": {"type": "integer", "description": "records whose id was stored already"},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}},
                },
            },
        },
    }
    error = {"type": "object", "properties": {"error": {"type": "string"}}}
    text, nullable = {"type": "string"}, {"type": ["string", "null"]}
    span = {
        "type": "object",
        "description": "One span of a trace, as `llmlog.span` makes it.",
        "properties": {
            # Hex from OpenTelemetry and llmlog.span; any id an app named itself
            # (llmlog.context) that can name a page: no control character, not "." or "..".
            "trace_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "span_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "parent_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
            "name": text,
            "kind": text,
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": ["string", "null"], "format": "date-time"},
            "status": {"enum": ["unset", "ok", "error"]},
            "status_message": nullable,
            "attributes": {"type": "object"},
            "events": {"type": "array", "items": {"type": "object"}},
            "service": nullable,
            "call_id": nullable,
        },
        "required": ["trace_id", "span_id", "start"],
        "additionalProperties": False,
    }

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(text: str, schema: str | dict[str, Any]) -> dict[str, Any]:
        """A JSON answer: `schema` names one of the components, or is a schema itself."""
        shape = ref(schema) if isinstance(schema, str) else schema
        return {"description": text, "content": {"application/json": {"schema": shape}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "llmlog collector", "version": "1"},
        "components": {
            "schemas": {"Record": record, "Span": span, "Result": result, "Error": error},
            "securitySchemes": {"ingestToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"ingestToken": []}],
        "paths": {
            **{
                f"/v1/{kind}": {
                    "post": {
                        "summary": f"OTLP/HTTP {kind} (protobuf or JSON, gzip or not)",
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                                "application/json": {"schema": {"type": "object"}},
                            },
                        },
                        "responses": {
                            "200": {
                                "description": f"Export{kind.title()}ServiceResponse, partial success if any"
                            },
                            "400": answer("Not OTLP", "Error"),
                            "401": answer("Missing or wrong token", "Error"),
                            "415": answer("Neither protobuf nor JSON, and no token", "Error"),
                            "413": answer("Body too large", "Error"),
                            "503": answer("Store unavailable: send again", "Error"),
                        },
                    }
                }
                for kind in ("traces", "logs")
            },
            "/v1/calls": {
                "post": {
                    "summary": "Store calls: one record, an array of records, or NDJSON",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Record"},
                                        {"type": "array", "items": {"$ref": "#/components/schemas/Record"}},
                                    ]
                                }
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": answer("Stored (rejected records listed with index and reason)", "Result"),
                        "400": answer("No record could be read", "Result"),
                        "401": answer("Missing or wrong token", "Error"),
                        "415": answer("Neither JSON nor NDJSON, and no token", "Error"),
                        # The body over the limit (Error), or every record over it (Result).
                        "413": answer(
                            "Body or every record too large", {"oneOf": [ref("Error"), ref("Result")]}
                        ),
                        "503": answer("Store unavailable: send again", "Error"),
                    },
                }
            },
            "/v1/spans": {
                "post": {
                    "summary": "Store spans an app made (llmlog.span, llmlog.trace): NDJSON, a span a line",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [ref("Span"), {"type": "array", "items": ref("Span")}]}
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": answer("Stored (rejected spans listed with index and reason)", "Result"),
                        "400": answer("No span could be read", "Result"),
                        "401": answer("Missing or wrong token", "Error"),
                        "413": answer("Body too large", "Error"),
                        "503": answer("Store unavailable: send again", "Error"),
                    },
                }
            },
        },
    }
