"""The `llmlog` command: read, query, import, export and reprice the calls a store holds.

The group and what every command shares are `llmlog.cli.core`'s; each module of this package
adds its commands to the group, and is imported here so that they are all there.
"""

from llmlog.cli import (  # noqa: F401
    admin,
    alerts,
    calls,
    experiments,
    findings,
    importing,
    investigate,
    query,
    serve,
    stores,
    traces,
)
from llmlog.cli.core import cli

__all__ = ["cli"]
