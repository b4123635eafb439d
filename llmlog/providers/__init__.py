"""Each provider API in a module of its own (`anthropic_messages`, `openai_chat`,
`openai_responses`): its path, how its requests and responses read into a call's columns,
and how its stream is put back together (`api.API`). Capture (the SDK wrapper, the proxy,
OTLP) finds them here by name or by path; `conversation` shows any API's messages as turns.

To support another API: a module here with its `API`, added to `APIS`, and its tests."""

from __future__ import annotations

from typing import Any

from llmlog.core.record import Call
from llmlog.providers.anthropic_messages import MESSAGES
from llmlog.providers.api import API
from llmlog.providers.openai_chat import CHAT
from llmlog.providers.openai_responses import RESPONSES

APIS: dict[str, API] = {api.name: api for api in (MESSAGES, CHAT, RESPONSES)}


def api_named(name: str) -> API:
    """The API of that name; the Responses API for a name none has (a record's `api` as
    OTLP guesses it)."""
    return APIS.get(name, RESPONSES)


def api_at(provider: str, path: str) -> API | None:
    """The API of `provider` a request to `path` (its URL's path) is a model call to."""
    path = path.rstrip("/")
    return next((a for a in APIS.values() if a.provider == provider and path.endswith(a.path)), None)


def split_request(api: str, req: dict[str, Any], call: Call) -> None:
    """Set a call's model, system prompt, messages, tools and params from its request body
    (`api`: an `APIS` name), as every way in that has the body reads it."""
    body = dict(req)
    call.model = body.get("model") if isinstance(body.get("model"), str) else None
    tools = body.pop("tools", None)
    call.tools = tools if isinstance(tools, list) else None
    api_named(api).split(body, call)
    call.params = body


def read_response(api: str, response: dict[str, Any], call: Call) -> None:
    """Set a call's model, tool calls, stop reason and usage from its response body (the
    non-streamed shape), as every way in that has the body reads it."""
    if isinstance(response.get("model"), str) and response["model"]:
        call.model = response["model"]
    api_named(api).read(response, call)
