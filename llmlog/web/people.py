"""Pages: people."""

from __future__ import annotations

from starlette.routing import BaseRoute

from llmlog.web.app import Web


def routes(web: Web) -> list[BaseRoute]:
    return []
