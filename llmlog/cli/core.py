"""What every `llmlog` command shares, whichever module defines it: --db and --reader-db
after the command's name as before it, whether a command may make the store it names, and
the one place an expected error becomes a line of text rather than a traceback."""

from __future__ import annotations

import getpass
import os
import re
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from llmlog.core.config import Settings
from llmlog.core.filters import EQUALS, BadFilter, CallFilter, parse_filter, parse_when
from llmlog.pipeline.intake import hash_user_id
from llmlog.pipeline.pricing import PriceFileError, Pricer
from llmlog.store import Store, open_store, redact_url, sqlite_path, store_missing
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


# Piped output is not cut to 80 columns: it is usually read by grep or a wider pager.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 220)


# Messages are not hard-wrapped: they hold URLs and ids people copy.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# Control characters in logged text (an ESC starting a terminal sequence, say) are shown
# escaped, never sent to the reader's terminal; tab and newline stay as they are.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def fitted(
    rows: list[dict[str, Text]],
    columns: list[str],
    drop: list[str],
    width: int | None,
    caps: dict[str, int] | None = None,
) -> tuple[dict[str, int], list[str]]:
    """The width each column needs (its header or widest cell; at most `caps` says) and the
    columns a table shows in `width`: those in `drop` are left out, in its order, until the
    rest fit whole, rather than every column cut to `…`."""
    natural = {name: max([len(name), *(r[name].cell_len for r in rows)]) for name in columns}
    for name, cap in (caps or {}).items():
        natural[name] = min(natural[name], cap)
    shown = list(columns)
    if width is not None:
        for name in drop:
            if sum(natural[n] for n in shown) + 2 * (len(shown) - 1) <= width:
                break
            shown.remove(name)
    return natural, shown


def printable(value: object) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def as_text(value: object, style: str = "") -> Text:
    """Logged content as plain text: never markup, never terminal control."""
    return Text(printable(value), style=style)


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )


class Ctx:
    def __init__(self, db: str | None, reader_db: str | None = None) -> None:
        try:
            self.settings = Settings(db=db) if db else Settings()
        except (ValueError, OSError) as exc:  # a bad key, a key file that cannot be read
            raise CliError(str(exc), exit_code=2) from None
        if reader_db:
            self.settings.reader_db = reader_db
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            command = click.get_current_context(silent=True)
            # A reading command never makes a store: a mistyped --db is said, not an empty store.
            create = bool(command and getattr(command.command, "creates_store", False))
            self._store = open_url(self.settings.db, self.settings.reader_db, create=create)
            # Regulated mode: what is sealed opens with the keys set here, each reading audited.
            self._store.keyring = self.settings.keyring
            name = " ".join(["llmlog", *(command.command_path.split()[1:] if command else [])])
            self._store.reader = f"{getpass.getuser()} ({name})"
        return self._store


def open_url(url: str, reader_url: str | None = None, *, create: bool = True) -> Store:
    """Open the store at `url`; with `create` False, one that does not exist yet is an error
    (an embedded store's file is not made; a server's database is never made by us)."""
    path = embedded_path(url)
    # An empty file is no store either (`touch calls.db`, a failed copy): a reading command
    # must not write a schema into it.
    if not create and path is not None and (not Path(path).exists() or _empty_file(path)):
        raise CliError(
            f"no store at {os.path.abspath(path)} ("
            + ("an empty file" if Path(path).exists() else "nothing recorded there yet")
            + ": check --db or LLMLOG_DB; `llmlog demo` or `llmlog import` make one)"
        )
    try:
        why = None if create else store_missing(url)
        if why is None:
            return open_store(url, reader_url)
    except ValueError as exc:  # a URL of no engine we know
        raise CliError(str(exc), exit_code=2) from None
    except Exception as exc:  # a server that is down, a database that does not exist, a file we may not write
        raise CliError(f"cannot open store {redact_url(url)}: {exc}") from None
    raise CliError(f"no store at {redact_url(url)} ({why}: check --db or LLMLOG_DB)")


def _empty_file(path: str) -> bool:
    try:
        return Path(path).is_file() and Path(path).stat().st_size == 0
    except OSError:  # not ours to say here: opening it says why
        return False


pass_ctx = click.make_pass_decorator(Ctx)


def since_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def filter_of(ctx: Ctx, **kw: Any) -> CallFilter:
    """The filter the options ask for, read by the web UI's parser (`llmlog.core.filters`): the
    same names select the same calls. A user id is hashed first where a secret is set (it is
    stored hashed)."""
    user = kw.get("user")
    if user is not None and ctx.settings.user_id_secret:
        user = hash_user_id(user, ctx.settings.user_id_secret)  # stored hashed: compare hashed
    errors = kw.get("errors")
    params = {
        **{name: kw.get(name) for name in (*EQUALS, "tag")},
        "user": user,  # after the others: hashed
        "meta": list(kw.get("meta") or ()),
        "q": kw.get("search"),
        "status": None if errors is None else "error" if errors else "ok",
        "since": kw.get("since"),
        "until": kw.get("until"),
    }
    try:
        return parse_filter(params)
    except BadFilter as exc:
        raise click.BadParameter(str(exc)) from None


def filter_options(fn: Any) -> Any:
    for opt in reversed(
        [
            click.option("--feature", help="Only calls from this feature."),
            click.option("--model", help="Only calls answered by this model."),
            click.option("--provider", help="Only calls to this provider (anthropic, openai, …)."),
            click.option("--user", help="Only this user's calls (hashed first if a secret is set)."),
            click.option("--session", help="Only calls of this session."),
            click.option("--version", help="Only calls with this prompt template version."),
            click.option("--trace", help="Only calls of this trace (its id)."),
            click.option("--tag", help="Only calls carrying this tag."),
            click.option(
                "--meta",
                multiple=True,
                metavar="KEY=VALUE",
                help="Only calls whose metadata holds this value (repeatable; a dotted key reaches"
                " nested values: llmlog.retry=1).",
            ),
            click.option(
                "--search",
                metavar="TEXT",
                help="Only calls with this text in the system prompt, a message, the response,"
                " the tool calls or the error (case-insensitive).",
            ),
            click.option("--since", help="From this time: 1h, 30m, 7d or ISO-8601."),
            click.option("--until", help="Before this time: 1h, 30m, 7d or ISO-8601."),
            click.option("--errors/--successes", default=None, help="Only failed / only successful calls."),
        ]
    ):
        fn = opt(fn)
    return fn


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="LLMLOG_DB", metavar="PATH|URL", help=DB_HELP)
@click.option("--reader-db", envvar="LLMLOG_READER_DB", metavar="URL", help=READER_DB_HELP)
@click.version_option(package_name="llmlog")
@click.pass_context
def cli(click_ctx: click.Context, db: str | None, reader_db: str | None) -> None:
    """llmlog: the flight recorder for LLM calls.

    \b
    Examples:
      llmlog demo                 # record a few thousand calls through the real SDKs
      llmlog calls --errors       # the latest failures
      llmlog show 3f2a            # one call, whole (an id prefix is enough)
      llmlog query "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model"
      llmlog --db postgresql://llmlog@db.internal/llmlog calls -n 20
      llmlog copy --from calls.db --to postgresql://llmlog@db.internal/llmlog
    """
    click_ctx.obj = Ctx(db, reader_db)
    click_ctx.call_on_close(lambda: click_ctx.obj._store and click_ctx.obj._store.close())


def fmt_cost(value: float | Decimal | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms"


def or_dash(value: object) -> str:
    """A figure or name a call may lack (a failed call has no tokens): "-", never "None"."""
    return "-" if value is None else str(value)


def fmt_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    status = f" {error['status']}" if error.get("status") else ""
    return f"{error.get('type', 'error')}{status}"


def read_prices(settings: Settings) -> None:
    """Read the price file (LLMLOG_PRICES) before recording calls: the writer reads it at the
    first call to price, and a bad one there loses every call, each with a traceback."""
    Pricer(settings.prices)
