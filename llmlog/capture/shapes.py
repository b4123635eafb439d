"""A call's content in the shape of the provider API it was made through, as `llmlog.wrap`
stores it: an OpenAI Chat call's messages, tools, params and response as that API sends
them, an Anthropic call's in Messages' shape, a Responses call's answer as that API's; made
from what spans said of the call where its bodies did not come as sent (`sent`)."""

from __future__ import annotations

import json
from typing import Any

from llmlog.capture.attributes import Shared, first_of
from llmlog.core.config import cache_bytes


def is_openai_chat(provider: str | None, a: dict[str, Any]) -> bool:
    return provider in ("openai", "azure.ai.openai") and a.get("gen_ai.operation.name") in (None, "chat")


def leading_system(messages: list[Any]) -> int:
    n = 0
    while (
        n < len(messages)
        and isinstance(messages[n], dict)
        and messages[n].get("role") in ("system", "developer")
    ):
        n += 1
    return n


def arguments(value: Any) -> Any:
    """Tool call arguments as the Chat API sends them: JSON text (compact, as OpenAI writes it)."""
    if value is None or isinstance(value, str):
        return value if value is not None else "{}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _openai_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function")
    if isinstance(fn, dict):
        return {
            **call,
            "type": call.get("type", "function"),
            "function": {**fn, "arguments": arguments(fn.get("arguments"))},
        }
    return call


def _openai_message(m: Any) -> list[Any]:
    """One message of ours (content blocks, or already in OpenAI's shape) as the Chat API's:
    text as a string, tool calls as `tool_calls`, tool results as `tool` messages."""
    if not isinstance(m, dict):
        return [m]
    content = m.get("content")
    if not isinstance(content, list):
        out = dict(m)
        if isinstance(m.get("tool_calls"), list):
            out["tool_calls"] = [
                _openai_tool_call(tc) if isinstance(tc, dict) else tc for tc in m["tool_calls"]
            ]
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


# id(message) → (the message, held so that its id stays its own; its Chat shape)
_SHAPED = Shared(20_000, cache_bytes("shaped"))


def _shaped(m: Any) -> tuple[Any, list[Any]]:
    return m, _openai_message(m)


def openai_messages(
    messages: list[Any] | None, system_prompt: str | None
) -> tuple[list[Any] | None, str | None]:
    """Messages as an OpenAI Chat request sends them, system messages among them (one is
    put first when only the system prompt was said apart); the system prompt as wrap
    reads it from them."""
    if messages is None:
        return (
            (None, system_prompt)
            if system_prompt is None
            else ([{"role": "system", "content": system_prompt}], system_prompt)
        )
    out = [shaped for m in messages for shaped in _SHAPED.get(id(m), _shaped, m)[1]]
    said = [m for m in out if isinstance(m, dict) and m.get("role") in ("system", "developer")]
    if said:
        texts = [
            m["content"] if isinstance(m.get("content"), str) else blocks_text(m.get("content")) or ""
            for m in said
        ]
        return out, "\n\n".join(texts)
    if system_prompt is not None:
        out.insert(0, {"role": "system", "content": system_prompt})
    return out, system_prompt


def _shaped_tools(tools: list[Any]) -> tuple[list[Any], list[Any]]:
    return tools, [_openai_tool(t) for t in tools]


def _openai_tool(tool: Any) -> Any:
    """A tool definition in the Chat API's shape (the conventions flatten `function`)."""
    if (
        isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and "function" not in tool
        and "name" in tool
    ):
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        return {"type": "function", "function": fn}
    return tool


# The conventions' request attribute names (after `gen_ai.request.`) that the Chat API names otherwise.
_OPENAI_PARAMS = {"stop_sequences": "stop", "choice.count": "n"}


def openai_params(a: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters as the Chat API names them, the model among them (as wrap
    keeps the request body but its messages and tools)."""
    out = {_OPENAI_PARAMS.get(k, k): v for k, v in params.items()}
    model = first_of(a, "gen_ai.request.model", "llm.request.model_name")
    if model is not None:
        out = {"model": model, **out}
    if a.get("gen_ai.is_streaming") is True:
        out.setdefault("stream", True)
    return out


def openai_response(
    a: dict[str, Any], body: dict[str, Any] | None, output: list[dict[str, Any]] | None, reason: str | None
) -> dict[str, Any] | None:
    """The response as a Chat completion: the one the instrumentation carried whole, or one
    made of what it said (id, model, choices; usage is in the token columns)."""
    if body is not None:
        body = dict(body)
        if body.get("object") == "chat.completion.chunk":  # a stream, put together by the instrumentation
            body["object"] = "chat.completion"
        return body
    if not output:
        return None
    choices = []
    for i, m in enumerate(output):
        shaped = _openai_message({**m, "role": m.get("role", "assistant")})
        message = next((x for x in shaped if isinstance(x, dict) and x.get("role") != "tool"), shaped[0])
        choices.append({"index": i, "message": message, "finish_reason": reason if i == 0 else None})
    response = {
        "id": a.get("gen_ai.response.id"),
        "object": "chat.completion",
        "model": first_of(a, "gen_ai.response.model", "gen_ai.request.model"),
        "choices": choices,
        "service_tier": first_of(a, "openai.response.service_tier", "gen_ai.openai.response.service_tier"),
        "system_fingerprint": first_of(
            a, "gen_ai.openai.response.system_fingerprint", "openai.response.system_fingerprint"
        ),
    }
    return {k: v for k, v in response.items() if v is not None}


def anthropic_response(output: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not output:
        return None
    blocks: list[Any] = []
    for m in output:
        body = m.get("content")
        blocks.extend(
            body if isinstance(body, list) else ([{"type": "text", "text": str(body)}] if body else [])
        )
    return {"role": "assistant", "content": blocks}


def responses_response(output: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A Responses API answer made of what a span said of it (its text and tool calls),
    where the response did not come whole."""
    if not output:
        return None
    items: list[dict[str, Any]] = []
    for m in output:
        body = m.get("content")
        blocks = body if isinstance(body, list) else ([{"type": "text", "text": str(body)}] if body else [])
        texts = [
            {"type": "output_text", "text": b.get("text", "")} for b in blocks if b.get("type") == "text"
        ]
        if texts:
            items.append({"type": "message", "role": "assistant", "content": texts})
        items += [
            {"type": "function_call", "call_id": b.get("id"), "name": b.get("name"),
             "arguments": arguments(b.get("input"))}
            for b in blocks
            if b.get("type") == "tool_use"
        ]  # fmt: skip
    return {"object": "response", "output": items}


def blocks_text(content: Any) -> str | None:
    if not isinstance(content, list):
        return None
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def openai_tools(tools: list[Any]) -> list[Any]:
    """Tool definitions in the Chat API's shape, shaped once for the calls that send the same list."""
    return _SHAPED.get(id(tools), _shaped_tools, tools)[1]
