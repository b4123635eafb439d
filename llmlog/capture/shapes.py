"""A span's call in the shape of the provider API it was made through, as `llmlog.wrap`
stores it, where its bodies did not come as sent (`sent`): which API's shape the
conventions' content takes (`implied`), what the span's attributes said beside it
(`SpanSaid`), and the shaped messages kept for the calls that send the same ones again
(`memo_of`). How each API's shapes are made is its own (`API.request_from`, `API.answer_from`)."""

from __future__ import annotations

from typing import Any

from llmlog.capture.attributes import Shared, first_of
from llmlog.core.config import cache_bytes
from llmlog.providers import APIS
from llmlog.providers.anthropic_messages import MESSAGES
from llmlog.providers.api import API, Memo
from llmlog.providers.openai_chat import CHAT


def is_openai_chat(provider: str | None, a: dict[str, Any]) -> bool:
    return provider in ("openai", "azure.ai.openai") and a.get("gen_ai.operation.name") in (None, "chat")


def implied(provider: str | None, a: dict[str, Any]) -> tuple[API, bool]:
    """The API whose shape a span's content takes where no request came as sent, and whether
    a response body the span carried is taken as its answer: an OpenAI chat call's is Chat's
    (OpenInference's `output.value` is read as a completion where no request came as sent,
    `genai._output_content`); any other call's content is in Messages' shape, its answer
    made of the output messages alone."""
    return (CHAT, True) if is_openai_chat(provider, a) else (MESSAGES, False)


class SpanSaid:
    """What a span's attributes say beside its content, under each convention's names
    (`providers.api.Said`): read only when an API's shape asks, as most spans' do not."""

    __slots__ = ("a",)

    def __init__(self, a: dict[str, Any]) -> None:
        self.a = a

    @property
    def requested(self) -> Any:
        return first_of(self.a, "gen_ai.request.model", "llm.request.model_name")

    @property
    def streamed(self) -> bool:
        return self.a.get("gen_ai.is_streaming") is True

    @property
    def id(self) -> Any:
        return self.a.get("gen_ai.response.id")

    @property
    def model(self) -> Any:
        return first_of(self.a, "gen_ai.response.model", "gen_ai.request.model")

    @property
    def service_tier(self) -> Any:
        return first_of(self.a, "openai.response.service_tier", "gen_ai.openai.response.service_tier")

    @property
    def fingerprint(self) -> Any:
        return first_of(
            self.a, "gen_ai.openai.response.system_fingerprint", "openai.response.system_fingerprint"
        )


def _remembering(shared: Shared) -> Memo:
    get = shared.get

    def memo(values: list[Any], make: Any) -> list[Any]:
        return [get(id(v), _held, v, make)[1] for v in values]

    return memo


def _held(value: Any, make: Any) -> tuple[Any, Any]:
    # The value is held beside what was made of it, so that its id stays its own.
    return value, make(value)


# By API: id(value) → (the value, what the API's shaping made of it: a message's messages in
# Chat's shape, a tool list's). One store per API, as one value may be shaped by two.
_MEMOS: dict[str, Memo] = {name: _remembering(Shared(20_000, cache_bytes("shaped"))) for name in APIS}


def memo_of(api: API) -> Memo:
    """What `api` shapes is remembered through: its own store."""
    return _MEMOS[api.name]
