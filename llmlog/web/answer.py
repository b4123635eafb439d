"""The JSON answers of the web UI: Starlette's, with figures JSON cannot hold sent as null.

A NaN or an infinity stored before figures were checked (or made by SQL a person wrote)
is not JSON: Starlette refuses to render it and the request becomes a 500. Such a figure
has no meaning to send, so it goes as null, as a missing figure does.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSON


def finite(value: Any) -> Any:
    """`value` with every non-finite float in it, however deep, as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class JSONResponse(_StarletteJSON):
    def render(self, content: Any) -> bytes:
        return super().render(finite(content))


class Refusal(Exception):
    """What a page or an API route answers instead of what was asked: `message`, with its
    HTTP `status`. Raised where the route finds it; the app's one handler says it as the
    page's error, or as JSON on the JSON API (`llmlog.web.app`)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
