"""Each provider API in a module of its own (`anthropic_messages`, `openai_chat`,
`openai_responses`), behind one registry (`APIS`). Capture (the SDK wrapper, the proxy,
OTLP) finds an API here by name or by path; replay asks which API a stored call was made to
(`api_of`) and has it rebuild the request; `conversation`, the refusal rules and search
read stored messages and responses through each API's shapes.

To support another API: a module here whose `api.API` gives its name, provider, path and
SDK path, and its functions: `split` (a request into the call's columns), `read` (a
response into them), `read_stream` (its stream back into the response), `rejoin` (a stored
call's request again, for replay), and the readings of its stored shapes (`answer`, `part`,
`items`, `turn`, `by_model`, `words`, `refusal`), and its shapes made from what a span
said of a call whose bodies did not come as sent (`answer_from`: its response of the span's
output blocks; `request_from`: its request of the conventions' turns, or None when no span
is read in its shape); the bodies a span carried as sent (`takes`: a request of its;
`sent`: its answer; `whole`: not a stream's parts); its own stop reasons in the shared
words (`stop`); `signs` when its provider has another API its calls must be told from.
Then add it to `APIS`, and its tests to tests/test_providers.py (and
tests/test_search.py, where its stored shapes are indexed)."""

from __future__ import annotations

from typing import Any

from llmlog.core.record import Call
from llmlog.providers.anthropic_messages import MESSAGES
from llmlog.providers.api import API
from llmlog.providers.openai_chat import CHAT
from llmlog.providers.openai_responses import RESPONSES

# In the order stored responses are read in, where a response could be read as more than
# one API's (`api_of`, `conversation`): Chat's `choices` before Responses' `output` before
# Messages' `content`.
APIS: dict[str, API] = {api.name: api for api in (CHAT, RESPONSES, MESSAGES)}


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


def api_of(call: Call) -> API | None:
    """The API a stored call was made to, which no column says; None for a provider none of
    the APIs is of.

    The rule: a provider with one API made its calls to it (Anthropic: Messages). Between a
    provider's APIs (OpenAI's Chat Completions and Responses), each API's `Signs`: the
    response tells when there is one; else the request: a parameter only one API takes, a
    function tool in one API's shape, the first message or content part only one API sends,
    a system prompt sent apart from the messages. The API that takes any request is asked
    last, and a request that fits every API (plain role/content messages, no system prompt)
    is its: Chat Completions, which takes every such request."""
    apis = [a for a in APIS.values() if a.provider == call.provider]
    told = [(a, a.signs) for a in apis if a.signs is not None]
    if len(apis) <= 1 or len(told) < len(apis):
        # One API, or APIs that give no signs to be told apart by: the first of them.
        return apis[0] if apis else None
    response = call.response if isinstance(call.response, dict) else {}
    for api, signs in told:
        if signs.answers(response):
            return api
    told.sort(key=lambda t: t[1].takes_any)  # the others' signs first
    keys = set(call.params or {})
    for api, signs in told:
        if keys & signs.params:
            return api
    for tool in call.tools or []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            return next((api for api, signs in told if signs.tool(tool)), told[-1][0])
    for m in (m for m in call.messages or [] if isinstance(m, dict)):
        for api, signs in told:
            if signs.message(m):
                return api
        content = m.get("content")
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            for api, signs in told:
                if kind in signs.parts:
                    return api
    for api, signs in told:
        if signs.system(call):
            return api
    return told[-1][0]


def api_taking(provider: str | None, body: dict[str, Any]) -> API | None:
    """The API of `provider` a request body, as sent, is one of (each API's requests hold
    what the others' do not); None when none of its APIs takes it."""
    return next((a for a in APIS.values() if a.provider == provider and a.takes(body)), None)


def shared_stop(raw: str) -> str | None:
    """A stop reason in the words every API's calls share, whichever API's own words it is
    in (they do not overlap); None when it is in none."""
    for api in APIS.values():
        if raw in api.stop:
            return api.stop[raw]
    return None
