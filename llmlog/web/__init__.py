"""The web UI: `llmlog serve`. Server-rendered pages and a JSON API over any store."""

from llmlog.web.app import create_app

__all__ = ["create_app"]
