"""Replay: re-send a logged request to its provider and record the answer as a new call.

A stored call keeps its request whole: `params` holds every request parameter but the
messages, the tools and the system prompt (the model and `stream` included), which have
columns of their own. `request_of` puts them back together as the call's API does (its
`API.rejoin`); `replay` sends that body with the provider's own SDK client (its auth, base
URL and version headers) through `llmlog.capture.wrap.instrument`, so the replay is parsed,
priced and turned into a `Call` exactly as any recorded call is (`llmlog.pipeline.intake`).

Which API a call went to is not stored as such; `llmlog.providers.api_of` derives it (see
there for the rule).

What cannot be re-sent exactly:
- Request headers are not logged, so an Anthropic beta feature enabled by an `anthropic-beta`
  header (the SDK's `client.beta…`) is re-sent without it; the provider's answer (often an
  error naming the parameter) is recorded as usual.
- A Responses `input` given as one string is logged as one user message and re-sent so.
- PostgreSQL stores NUL characters as U+FFFD; a request that held one is re-sent with it.

Prompt template versions have no registry yet, so there is no "current text of the prompt
template" to fetch: a replay may instead carry an edited system prompt (`system_prompt=`),
which the web UI prefills with the logged one, and name its version (`prompt_version=`, as an
experiment trying a version from the prompts folder does).

Request parameters may be set over the logged ones (`params=`, temperature, max_tokens, …; a
None removes one). Not those a replay is made of: the messages and the model (`model=`), the
system prompt (`system_prompt=`), nor the streaming switches, which are re-sent as logged so
that first-token times and the usage of a stream compare.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import httpx2

from llmlog import providers
from llmlog.capture.context import CallContext
from llmlog.capture.exchange import Exchange
from llmlog.capture.parse import to_call
from llmlog.capture.wrap import instrument
from llmlog.core.config import Settings
from llmlog.core.record import Call
from llmlog.core.sealed import is_sealed
from llmlog.pipeline.intake import Intake
from llmlog.pipeline.pricing import Pricer
from llmlog.providers import APIS

log = logging.getLogger("llmlog")


class ReplayError(Exception):
    """The call cannot be replayed; nothing was sent and nothing recorded."""

    status = 400


class NotSent(ReplayError):
    """The request was built but could not be handed to the provider (no API key, say)."""

    status = 502


@dataclass(frozen=True)
class Providers:
    """Where replays go. A None leaves the SDK to read its environment: ANTHROPIC_API_KEY,
    ANTHROPIC_BASE_URL, OPENAI_API_KEY, OPENAI_BASE_URL (and the rest each SDK reads)."""

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    timeout_s: float = 600.0  # the SDKs' own default: a long generation is not cut short

    @classmethod
    def fake(cls, anthropic_base_url: str, openai_base_url: str) -> Providers:
        """Both providers answered by a local fake (`llmlog.demo.fake_provider`), which takes any key."""
        return cls("fake", anthropic_base_url, "fake", openai_base_url)


def api_of(call: Call) -> str:
    """The name of the API the logged call was made to ("messages", "chat" or "responses"),
    as `llmlog.providers.api_of` tells it from the call's provider and shapes."""
    api = providers.api_of(call)
    if api is None:
        known = " and ".join(sorted({a.provider for a in APIS.values()}))
        raise ReplayError(f"replay knows the {known} providers, not {call.provider!r}")
    return api.name


def requested_model(call: Call) -> str | None:
    """The model the request named (the `model` column holds the one that answered)."""
    model = (call.params or {}).get("model")
    return model if isinstance(model, str) and model else call.model


def request_of(
    call: Call, *, model: str | None = None, system_prompt: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(API, request body) of the logged call, as it was sent, but for the overrides.

    `model` replaces the model; `system_prompt` replaces the system prompt's text ("" sends
    none). None keeps what was logged, exactly (Anthropic system blocks, with their cache
    markers, included)."""
    api = APIS[api_of(call)]
    if _sealed(call, system_prompt is None):
        raise ReplayError("the logged request is sealed (regulated mode) and no key here opens it")
    if not isinstance(call.params, dict):
        raise ReplayError("the logged call has no request parameters to re-send (imported, or unparsed)")
    if call.messages is None and api.needs_messages:
        raise ReplayError("the logged call has no messages to re-send")
    body = dict(call.params)
    chosen = model or requested_model(call)
    if not chosen:
        raise ReplayError("the logged call names no model; choose one")
    body["model"] = chosen
    if call.tools is not None:
        body["tools"] = call.tools
    api.rejoin(call, body, system_prompt)
    return api.name, body


# Parameters `params=` may not set: what the replay is made of, each with how to change it.
NOT_PARAMS = {
    "messages": "the logged messages are what is re-sent",
    "input": "the logged input is what is re-sent",
    "model": "use the model override",
    "system": "use the system prompt override",
    "instructions": "use the system prompt override",
    "stream": "re-sent as logged, so that first-token times compare",
    "stream_options": "re-sent as logged: a stream's usage depends on it",
}
# Metadata keys a replay sets itself: `metadata=` may not give them.
OWN_METADATA = ("replay_of", "llmlog")


def check_params(params: dict[str, Any] | None) -> None:
    """Raises ReplayError when `params` sets a parameter a replay may not (NOT_PARAMS)."""
    for key in params or {}:
        if not isinstance(key, str) or not key:
            raise ReplayError(f"a request parameter's name must be text, not {key!r}")
        if key in NOT_PARAMS:
            raise ReplayError(f"the request parameter {key!r} cannot be set: {NOT_PARAMS[key]}")
        if not _finite((params or {})[key]):
            # No JSON carries NaN or infinity: the SDK would refuse to send it, or a provider to read it.
            raise ReplayError(f"the request parameter {key!r} holds NaN or infinity, which JSON cannot carry")


def _finite(value: Any) -> bool:
    """Whether `value` holds no NaN or infinity, at any depth."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def _sealed(call: Call, system: bool) -> bool:
    """Whether what a replay re-sends of `call` is still sealed: read without the key."""
    parts: list[Any] = [call.params, call.messages, call.tools, call.system_prompt if system else None]
    for many in (call.messages, call.tools):
        if isinstance(many, list):  # sealed one by one
            parts += many
    return any(is_sealed(p) for p in parts)


def _client(provider: str, providers: Providers) -> Any:
    # No retries: each SDK retry would be a recorded call of its own, and a replay is one call.
    if provider == "anthropic":
        import anthropic

        return anthropic.Anthropic(
            api_key=providers.anthropic_api_key,
            base_url=providers.anthropic_base_url,
            max_retries=0,
            timeout=providers.timeout_s,
        )
    import openai

    return openai.OpenAI(
        api_key=providers.openai_api_key,
        base_url=providers.openai_base_url,
        max_retries=0,
        timeout=providers.timeout_s,
    )


def replay(
    call: Call,
    *,
    model: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
    prompt_version: str | None = None,
    metadata: dict[str, Any] | None = None,
    providers: Providers | None = None,
    settings: Settings | None = None,
) -> Call:
    """Re-send `call`'s request to its provider; the answer as a new, priced `Call`.

    The new call has `metadata.replay_of = call.id`, the original's feature, user, session,
    tags and metadata, and its prompt version unless the system prompt was edited (then the
    version is the new prompt's hash, as for any unversioned prompt). It is not put in the
    original's trace: it is not a step of that work. `metadata.llmlog.replay` says which API,
    model and system prompt overrides were used and whether it streamed (as the original did:
    the `stream` parameter is re-sent as logged, so first-token times compare) and which
    request parameters were set (`params`, None for one removed).

    `params` are set over the logged request parameters (a None value removes one; see
    NOT_PARAMS for those refused). `prompt_version` is the new call's prompt version, where
    `system_prompt` replaces the logged one (as read from the prompts folder: "name@v2").
    `metadata` is added to the new call's (an experiment's id, say).

    A provider error (an HTTP error, a refused connection, a timeout) is the new call's
    `error`, not an exception. Nothing is stored here: the caller inserts the call.
    Raises ReplayError when the call cannot be replayed, NotSent when nothing could be sent.
    """
    providers = providers or Providers()
    settings = settings or Settings()
    check_params(params)
    if prompt_version is not None and system_prompt is None:
        raise ReplayError("a prompt version names the system prompt sent instead of the logged one: give it")
    for key in metadata or {}:
        if key in OWN_METADATA:
            raise ReplayError(f"the metadata key {key!r} is the replay's own")
    model = model if model and model != requested_model(call) else None
    api, body = request_of(call, model=model, system_prompt=system_prompt)
    for key, value in (params or {}).items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    assert call.provider is not None  # api_of accepted it
    exchanges: list[Exchange] = []
    failure: Exception | None = None
    key = "ANTHROPIC_API_KEY" if call.provider == "anthropic" else "OPENAI_API_KEY"
    hint = f" (keys come from the server's environment: {key})"
    try:
        client = instrument(_client(call.provider, providers), exchanges.append)
    except Exception as exc:  # e.g. the SDK refusing to start without an API key
        raise NotSent(f"cannot reach {call.provider}: {exc}{hint}") from None
    with client:
        try:
            # The SDK's own request path (auth, base URL, version headers), the body as is;
            # the response is read whole and left unparsed: the capture parses it.
            client.post(APIS[api].sdk_path, cast_to=httpx2.Response, body=body)
        except Exception as exc:  # the provider's error: recorded by the capture below
            failure = exc
    if not exchanges:
        raise NotSent(f"the request could not be sent to {call.provider}: {failure}{hint}")
    ex = exchanges[-1]
    kept = {k: v for k, v in (call.metadata or {}).items() if k != "llmlog"}
    kept.update(metadata or {})
    kept["replay_of"] = call.id
    # The original's context, exactly, whatever context the caller runs in. No user id here:
    # the stored one is already hashed when a secret is set, and must not be hashed again.
    ex.context = CallContext(
        session_id=call.session_id,
        feature=call.feature,
        prompt_template_version=call.prompt_template_version if system_prompt is None else prompt_version,
        metadata=kept,
        tags=tuple(call.tags or ()),
    )
    new = to_call(ex)
    details: dict[str, Any] = {"api": api, "stream": body.get("stream") is True}
    if model is not None:
        details["model"] = model
    if system_prompt is not None:
        details["system_prompt"] = "edited"
    if params:
        details["params"] = dict(params)
    new.metadata = {**(new.metadata or {})}
    new.metadata["llmlog"] = {**new.metadata.get("llmlog", {}), "replay": details}
    if failure is not None and new.error is None:  # the SDK refused what the capture took for fine
        new.error = {"type": type(failure).__name__, "status": None, "message": str(failure)}
    # Whole before it goes through the way in, so all of it is redacted and sealed as any call.
    new = Intake(settings, _pricer(settings)).call(new)
    new.user_id = call.user_id  # after: hashed already when a secret is set
    return new


def _pricer(settings: Settings) -> Pricer | None:
    try:
        return Pricer(settings.prices)
    except Exception:  # a bad price file: the replay is still worth keeping, unpriced
        log.exception("llmlog: cannot load prices; the replay is stored without a cost")
        return None


def error_text(call: Call) -> str | None:
    """A call's error in one line, for people: "overloaded_error (529): busy"."""
    err = call.error
    if not err:
        return None
    status = f" ({err.get('status')})" if err.get("status") else ""
    message = err.get("message")
    if is_sealed(message):  # regulated mode, read without the key: not its ciphertext
        message = "(sealed)"
    return f"{err.get('type') or 'error'}{status}: {message or ''}".rstrip(": ")
