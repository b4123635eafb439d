"""What every `llmlog` command shares, whichever module defines it: --db and --reader-db
after the command's name as before it, whether a command may make the store it names, and
the one place an expected error becomes a line of text rather than a traceback."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click

from llmlog.pricing import PriceFileError
from llmlog.store import sqlite_path
from llmlog.store.errors import NewerStore


class CliError(Exception):
    """An error the person running a command can act on: said in one line, no traceback
    (exit code 2 for a setting given wrong, as click does for an option)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(exc: Exception) -> click.ClickException | None:
    """The one line an expected error is said in (None for a bug: its traceback is shown).

    The one place expected errors are turned into messages: a store that cannot be opened or
    is not there, a setting given wrong, a price file that is missing or not TOML, a file that
    cannot be read or written (no permission, no such folder)."""
    if isinstance(exc, (CliError, PriceFileError, NewerStore)):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror or exc}"
    else:
        return None
    said = click.ClickException(" ".join(message.split()))  # a server's message may span lines
    # click declares exit_code a ClassVar, but reads it from the exception it catches.
    said.exit_code = getattr(exc, "exit_code", 1)  # type: ignore[misc]
    return said


def embedded_path(url: str) -> str | None:
    """The file or folder an embedded store (SQLite, chDB) keeps its data in; None for a server."""
    if url.startswith("chdb://"):
        return urlsplit(url).path or "llmlog-chdb"  # as the embedded ClickHouse store reads it
    path = sqlite_path(url)
    return None if path in (None, ":memory:") else path


# The most a count option (-n, --limit, --batch, …) takes: more than anyone reads or copies in
# one go, and far inside what SQLite binds as a LIMIT (a 64-bit integer).
MAX_COUNT = 1_000_000
# The most days a period option takes: ten years, which every date arithmetic can reach back.
MAX_DAYS = 3660


DB_HELP = (
    "Store to use: a file path (calls.db, /data/calls.db), sqlite:///relative.db or"
    " sqlite:////absolute.db, postgresql://user@host/db or clickhouse://user@host:8123/db"
    " (default: LLMLOG_DB, else a file in the user data directory)."
)
READER_DB_HELP = (
    "PostgreSQL or ClickHouse server: the login read-only SQL (query, the SQL console) runs as,"
    " one that can read the calls and nothing else; needed where the store's user cannot create it"
    " (default: LLMLOG_READER_DB)."
)


def _set_store(click_ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--db or --reader-db given after a command's name: it wins over one given before."""
    settings = getattr(click_ctx.obj, "settings", None)  # the group's Ctx, made before this is read
    if value is None or settings is None or click_ctx.resilient_parsing:
        return
    setattr(settings, str(param.name), value)


def _store_options() -> list[click.Parameter]:
    # No envvar here: LLMLOG_DB is read once, by the group, so it never beats a --db given there.
    return [
        click.Option(["--db"], metavar="PATH|URL", expose_value=False, callback=_set_store, help=DB_HELP),
        click.Option(
            ["--reader-db"], metavar="URL", expose_value=False, callback=_set_store, help=READER_DB_HELP
        ),
    ]


class Command(click.Command):
    """Every llmlog command: --db and --reader-db are taken after its name too, as `llm` and
    `sqlite-utils` take them. `creates_store`: the command writes, and makes the store if it
    is not there yet; any other command says that it is not."""

    def __init__(self, *args: Any, creates_store: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.creates_store = creates_store
        self.params.extend(_store_options())


class CommandGroup(click.Group):
    """A group of commands under `llmlog` (retention, keys, …): its commands and groups are
    made of these classes, so each takes --db."""

    command_class = Command
    group_class = type  # groups within it are of this class too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_store_options())


class Main(click.Group):
    """`llmlog` itself: where expected errors raised by any command become one line."""

    command_class = Command
    group_class = CommandGroup

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            said = one_line(exc)
            if said is None:
                raise
            raise said from None
