"""OpenAI's Chat Completions API (`POST /chat/completions`): what its requests, responses
and streams say of a call, what tells its stored calls from the Responses API's, its request
again from a stored call, its messages as a conversation's turns, and a call in its shapes
from what a span said of it."""

from __future__ import annotations

import json
from typing import Any

from llmlog.core.record import Call
from llmlog.providers.api import (
    API,
    Decode,
    EventStream,
    Memo,
    Parsed,
    Part,
    Request,
    Said,
    Signs,
    Turn,
    arguments,
    as_json,
    assistant,
    blocks_text,
    decode_all,
    image_part,
    openai_usage,
    refusal_words,
    text_of,
    text_part,
    text_words,
    tool_input,
)

# Its finish reasons as stored: the deprecated `function_call` is a tool call too.
STOP = {"function_call": "tool_calls"}
# The roles of the messages its system prompt is read from (and written back into).
SYSTEM_ROLES = ("system", "developer")
# Request parameters the Responses API does not take.
PARAMS = frozenset(
    {"messages", "max_tokens", "max_completion_tokens", "n", "response_format", "logprobs", "stop",
     "presence_penalty", "frequency_penalty", "logit_bias", "seed", "functions", "function_call",
     "modalities", "audio", "prediction", "web_search_options", "reasoning_effort", "verbosity"}
)  # fmt: skip


def split(body: dict[str, Any], call: Call) -> None:
    messages = body.pop("messages", None)
    if isinstance(messages, list):
        system_parts = [
            text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") in SYSTEM_ROLES
        ]
        call.system_prompt = "\n\n".join(system_parts) if system_parts else None
    call.messages = messages if isinstance(messages, list) else None


def read_stream(events: EventStream, decode: Decode) -> Parsed:
    completion: dict[str, Any] | None = None
    finished = False
    choices: dict[int, dict[str, Any]] = {}
    first: float | None = None
    error = None
    seen = []
    for event in events:
        if finished:
            continue  # nothing follows [DONE]; read to the end all the same, to see it ended well
        if event[2].strip() == b"[DONE]":
            finished = True
        else:
            seen.append(event)
    decoded = decode_all([data for _, _, data in seen], decode)
    for (t, _name, _data), chunk in zip(seen, decoded, strict=True):
        if not isinstance(chunk, dict):
            events.unreadable += 1
            continue
        if "error" in chunk and "choices" not in chunk:
            error = chunk["error"]
            continue
        if completion is None:
            completion = {k: v for k, v in chunk.items() if k not in ("choices", "usage", "object")}
            completion["object"] = "chat.completion"
        if chunk.get("usage"):
            completion["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or []:
            i = choice.get("index", 0)
            slot = choices.setdefault(
                i,
                {"index": i, "message": {"role": "assistant", "content": None}, "finish_reason": None},
            )
            msg = slot["message"]
            delta = choice.get("delta") or {}
            if delta.get("role"):
                msg["role"] = delta["role"]
            for key in ("content", "refusal"):
                if delta.get(key):
                    first = t if first is None else first
                    msg[key] = (msg.get(key) or "") + delta[key]
            for tc in delta.get("tool_calls") or []:
                first = t if first is None else first
                calls = msg.setdefault("tool_calls", [])
                j = tc.get("index", len(calls))
                while len(calls) <= j:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                if tc.get("id"):
                    calls[j]["id"] = tc["id"]
                fn = tc.get("function") or {}
                calls[j]["function"]["name"] += fn.get("name") or ""
                calls[j]["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]
    if completion is not None:
        completion["choices"] = [choices[i] for i in sorted(choices)]
    return completion, error, first, finished


def read(response: dict[str, Any], call: Call) -> None:
    tools = _tool_calls(response)
    choices = response.get("choices") or []
    if choices and choices[0].get("finish_reason"):
        reason = choices[0]["finish_reason"]
        call.stop_reason = STOP.get(reason, reason)
    call.tool_calls = tools or None
    openai_usage(response, call, "prompt_tokens", "completion_tokens")


def _tool_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for choice in response.get("choices") or []:
        for tc in (choice.get("message") or {}).get("tool_calls") or []:
            fn = tc.get("function") or {}
            found.append(
                {"id": tc.get("id"), "name": fn.get("name"), "input": tool_input(fn.get("arguments"))}
            )
    return found


def rejoin(call: Call, body: dict[str, Any], system_prompt: str | None) -> None:
    # A copy of the list, never of the messages: they may be shared with other calls.
    messages = list(call.messages) if call.messages is not None else None
    if system_prompt is not None and messages is not None:
        messages = _with_system(messages, system_prompt)
    body["messages"] = messages


def _with_system(messages: list[Any], text: str) -> list[Any]:
    """The system/developer messages (the logged system prompt is their text, joined) replaced
    by one carrying `text`, where the first of them was and in its role."""
    found = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") in SYSTEM_ROLES]
    role = messages[found[0]]["role"] if found else "system"
    at = found[0] if found else 0
    kept = [m for i, m in enumerate(messages) if i not in found]
    if text:
        kept.insert(at, {"role": role, "content": text})
    return kept


def answers(response: dict[str, Any]) -> bool:
    return "choices" in response or str(response.get("object") or "").startswith("chat.completion")


def answer(response: dict[str, Any]) -> list[Any] | None:
    if "choices" not in response:
        return None
    return [c.get("message") for c in response.get("choices") or []]


def part(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return text_part(block)
    if kind == "image_url":
        return image_part(block)
    return None


def turn(message: dict[str, Any], turn: Turn) -> None:
    """Its tool calls (`tool_calls`, beside the content), and a tool message's call."""
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        args, name = as_json(fn.get("arguments")), str(fn.get("name"))
        turn.parts.append(Part("tool_call", args, name=name, ref=tc.get("id")))
    if turn.role == "tool":
        ref = message.get("tool_call_id")
        turn.parts.insert(0, Part("note", f"(result of {ref})", ref=ref))


def words(block: dict[str, Any]) -> tuple[str, str] | None:
    kind = block.get("type")
    # An assistant message's content parts may be a refusal, as its `refusal` may be.
    return text_words(block) if kind == "text" else refusal_words(block) if kind == "refusal" else None


def refusal(message: dict[str, Any]) -> str | None:
    said = message.get("refusal")
    return said if isinstance(said, str) else None


# Made from what a span said of a call (`API.request_from`, `API.answer_from`): the turns'
# content blocks as its messages, the conventions' tool definitions and parameter names as
# its, the answer as a completion.


def request_from(
    messages: list[Any] | None,
    system_prompt: str | None,
    tools: list[Any] | None,
    params: dict[str, Any],
    said: Said,
    memo: Memo,
) -> Request:
    messages, system_prompt = _messages_from(messages, system_prompt, memo)
    tools = memo([tools], _tools_from)[0] if tools else tools
    return messages, system_prompt, tools, _params_from(params, said)


def _messages_from(
    messages: list[Any] | None, system_prompt: str | None, memo: Memo
) -> tuple[list[Any] | None, str | None]:
    """Messages as its request sends them, system messages among them (one is put first
    when only the system prompt was said apart); the system prompt as `split` reads it from
    them."""
    if messages is None:
        return (
            (None, system_prompt)
            if system_prompt is None
            else ([{"role": "system", "content": system_prompt}], system_prompt)
        )
    out = [shaped for made in memo(messages, _message_from) for shaped in made]
    said = [m for m in out if isinstance(m, dict) and m.get("role") in SYSTEM_ROLES]
    if said:
        texts = [
            m["content"] if isinstance(m.get("content"), str) else blocks_text(m.get("content")) or ""
            for m in said
        ]
        return out, "\n\n".join(texts)
    if system_prompt is not None:
        out.insert(0, {"role": "system", "content": system_prompt})
    return out, system_prompt


def _message_from(m: Any) -> list[Any]:
    """One turn (content blocks, or already in its shape) as its messages: text as a string,
    tool calls as `tool_calls`, tool results as `tool` messages."""
    if not isinstance(m, dict):
        return [m]
    content = m.get("content")
    if not isinstance(content, list):
        out = dict(m)
        if isinstance(m.get("tool_calls"), list):
            out["tool_calls"] = [_tool_call(tc) if isinstance(tc, dict) else tc for tc in m["tool_calls"]]
        return [out]
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    others: list[Any] = []
    for b in content:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind == "tool_use":
            fn = {"name": b.get("name"), "arguments": arguments(b.get("input"))}
            calls.append({"id": b.get("id"), "type": "function", "function": fn})
        elif kind == "tool_result":
            said = b.get("content")
            said = said if isinstance(said, str) or said is None else blocks_text(said) or json.dumps(said)
            results.append({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": said})
        else:
            others.append(b)
    messages: list[Any] = list(results)
    if texts or calls or others or not results:
        msg: dict[str, Any] = {"role": m.get("role", "user")}
        if others:
            msg["content"] = [{"type": "text", "text": t} for t in texts] + others
        elif len(texts) == 1:
            msg["content"] = texts[0]
        elif texts:
            msg["content"] = [{"type": "text", "text": t} for t in texts]
        else:
            msg["content"] = None if calls else ""
        if calls:
            msg["tool_calls"] = calls
        messages.append(msg)
    return messages


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function")
    if isinstance(fn, dict):
        return {
            **call,
            "type": call.get("type", "function"),
            "function": {**fn, "arguments": arguments(fn.get("arguments"))},
        }
    return call


def _tools_from(tools: list[Any]) -> list[Any]:
    return [_tool_from(t) for t in tools]


def _tool_from(tool: Any) -> Any:
    """A tool definition in its shape (the conventions flatten `function`)."""
    if (
        isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and "function" not in tool
        and "name" in tool
    ):
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        return {"type": "function", "function": fn}
    return tool


# The conventions' request parameter names (after `gen_ai.request.`) that it names otherwise.
_PARAMS_SAID = {"stop_sequences": "stop", "choice.count": "n"}


def _params_from(params: dict[str, Any], said: Said) -> dict[str, Any]:
    """The request's parameters as it names them, the model among them (as `split` leaves
    the request body but its messages and tools)."""
    out = {_PARAMS_SAID.get(k, k): v for k, v in params.items()}
    model = said.requested
    if model is not None:
        out = {"model": model, **out}
    if said.streamed:
        out.setdefault("stream", True)
    return out


def answer_from(
    body: dict[str, Any] | None, output: list[dict[str, Any]] | None, reason: str | None, said: Said
) -> dict[str, Any] | None:
    """The response as a completion: the one the span carried whole, or one made of what it
    said (id, model, choices; usage is in the token columns)."""
    if body is not None:
        body = dict(body)
        if body.get("object") == "chat.completion.chunk":  # a stream, put together by the instrumentation
            body["object"] = "chat.completion"
        return body
    if not output:
        return None
    choices = []
    for i, m in enumerate(output):
        shaped = _message_from({**m, "role": m.get("role", "assistant")})
        message = next((x for x in shaped if isinstance(x, dict) and x.get("role") != "tool"), shaped[0])
        choices.append({"index": i, "message": message, "finish_reason": reason if i == 0 else None})
    response = {
        "id": said.id,
        "object": "chat.completion",
        "model": said.model,
        "choices": choices,
        "service_tier": said.service_tier,
        "system_fingerprint": said.fingerprint,
    }
    return {k: v for k, v in response.items() if v is not None}


SIGNS = Signs(
    answers=answers,
    params=PARAMS,
    tool=lambda tool: "function" in tool,  # {"type": "function", "function": {"name": …}}
    message=lambda m: m.get("role") == "tool" or "tool_calls" in m,
    parts=frozenset({"text", "image_url"}),
    # It takes any request of role/content messages: where nothing tells, the call was its.
    takes_any=True,
)


def takes(body: dict[str, Any]) -> bool:
    return isinstance(body.get("messages"), list)


def sent(body: dict[str, Any]) -> bool:
    return isinstance(body.get("choices"), list)


def whole(body: dict[str, Any]) -> bool:
    return bool(body.get("id")) and isinstance(body.get("usage"), dict)


CHAT = API(
    name="chat", provider="openai", path="/chat/completions", sdk_path="/chat/completions",
    split=split, read_stream=read_stream, read=read, rejoin=rejoin, needs_messages=True,
    answer=answer, part=part, items=(), turn=turn, by_model=assistant,
    words=words, refusal=refusal, answer_from=answer_from, request_from=request_from, signs=SIGNS,
    takes=takes, sent=sent, whole=whole, stop=STOP,
)  # fmt: skip
