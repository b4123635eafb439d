"""The commands that run until stopped: `llmlog serve` (the web UI, the collector, the
provider proxy and the OTLP receiver in one process, or each of N with --workers:
`llmlog.web.workers`) and `llmlog wrap` (a program run with every model call it makes
recorded)."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

import click

from llmlog.cli.core import CliError, Ctx, cli, err_console, pass_ctx, read_prices
from llmlog.core.config import ui_token
from llmlog.store import open_store, redact_url

if TYPE_CHECKING:
    from llmlog.web.workers import Served


@cli.command(creates_store=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@click.option(
    "--fake-provider",
    is_flag=True,
    help="Start the local fake provider for as long as the server runs and send replays to it"
    " (so the demo's calls can be replayed offline).",
)
@click.option(
    "--retention/--no-retention",
    "daily_retention",
    default=True,
    show_default=True,
    help="Run `llmlog retention run` a minute after starting, then once a day.",
)
@click.option(
    "--alerts-every",
    "alerts_every",
    default=300,
    show_default=True,
    type=click.IntRange(0, 86_400),
    metavar="SECONDS",
    help="Evaluate the findings and the rules this often (the first time within 30 s) and post"
    " what is new to the webhooks (`llmlog alerts`); 0: never. Nothing is evaluated while the"
    " store has no webhook and no rule.",
)
@click.option(
    "--allowed-host",
    "allowed_host",
    multiple=True,
    metavar="NAME",
    help="A name (or address) the server is reached by, beyond the one it listens on and"
    " localhost: it answers no other Host. Repeatable; `*.example.com` covers the names below it."
    " Also LLMLOG_ALLOWED_HOSTS (comma-separated).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    metavar="N",
    help="Processes serving at once on the one port, each the whole server over the same store"
    " (a SQLite file or PostgreSQL; not SQLite in memory nor chdb), for more traffic than one"
    " process takes. Retention, the alerts and the fake provider run once, in the supervising process.",
)
@pass_ctx
def serve(
    ctx: Ctx,
    host: str,
    port: int,
    fake_provider: bool,
    daily_retention: bool,
    allowed_host: tuple[str, ...],
    workers: int,
    alerts_every: int,
) -> None:
    """Serve the web UI over the store, and collect calls sent to it.

    Listens on 127.0.0.1 unless told otherwise. With accounts in the store (`llmlog accounts
    add`), everyone signs in and sees what their role allows; read tokens (`llmlog tokens
    add`) open the JSON API. Without accounts but with LLMLOG_UI_TOKEN set, every request
    must carry that token (?token=…, then a cookie; or an `Authorization: Bearer` header).

    POST /v1/calls stores records (JSON, a JSON array or NDJSON, in the record's column
    names) from any language; with LLMLOG_INGEST_TOKEN set it needs that token as a bearer
    token, which opens nothing else. Its OpenAPI description is at /v1/openapi.json.

    /anthropic/… and /openai/… forward to the providers (LLMLOG_ANTHROPIC_UPSTREAM,
    LLMLOG_OPENAI_UPSTREAM) and record every model call: point a program's
    ANTHROPIC_BASE_URL at http://HOST:PORT/anthropic and OPENAI_BASE_URL at
    http://HOST:PORT/openai/v1. Context comes in llmlog-* request headers.

    Replays go to the providers named by the server's environment (ANTHROPIC_API_KEY,
    OPENAI_API_KEY, ANTHROPIC_BASE_URL, OPENAI_BASE_URL), or with --fake-provider to a
    local fake provider started with the server.

    Calls past the store's retention window (`llmlog retention show`) are deleted once a
    day, their daily figures kept.

    Every few minutes (--alerts-every) the findings and the rules are evaluated, off the
    requests' path, and what is new is posted to the webhooks (`llmlog alerts`), once each
    until it clears; servers and cron jobs sharing the store agree through it, so none posts
    twice.

    It answers only to the names it is served as, so that no web page can reach it through
    a name of its own (DNS rebinding): the address it listens on, localhost on loopback, this
    machine's names and addresses on 0.0.0.0 or ::, and each --allowed-host (behind a reverse
    proxy or a DNS name: `--allowed-host llmlog.example.com`).

    With --workers N, N processes share the port, each the whole server with connections
    of its own to the store (more of them in all: mind PostgreSQL's max_connections), and
    each allows 1/N of the sign-in tries and password checks, so the server allows no more
    than one process did. Retention, the alerts and the fake provider run once, in the
    supervising process. A SIGTERM or Ctrl-C stops every worker as one server stops: what
    each proxied is stored first.

    \b
    Examples:
      llmlog serve                       # http://127.0.0.1:8765
      llmlog --db postgresql://localhost/llmlog serve --port 9000
      LLMLOG_UI_TOKEN=s3cret llmlog serve --host 0.0.0.0
      llmlog serve --fake-provider      # after `make demo`: replay the demo's calls offline
      llmlog serve --host 0.0.0.0 --allowed-host llmlog.internal.example.com
      llmlog --db postgresql://localhost/llmlog serve --workers 4   # four processes, one port
      curl -H 'Content-Type: application/json' \\
          -d '{"timestamp": "2026-11-30T12:00:00Z", "model": "gpt-4.1", "input_tokens": 12}' \\
          http://127.0.0.1:8765/v1/calls
    """
    import os

    import uvicorn

    from llmlog.analysis import alerts
    from llmlog.core.config import allowed_hosts as env_hosts
    from llmlog.demo.fake_provider import DEMO_SEED, FakeProvider
    from llmlog.operations import retention
    from llmlog.pipeline.processes import unshared, whole_process_gc
    from llmlog.web.guard import allowed_hosts
    from llmlog.web.workers import APP, Served

    try:
        hosts = allowed_hosts(host, [*allowed_host, *env_hosts()])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allowed-host / LLMLOG_ALLOWED_HOSTS") from None
    why = unshared(ctx.settings.db) if workers > 1 else None
    if why is not None:  # said before the store is opened: the embedded engine would lock it
        raise CliError(
            f"--workers {workers}: {why}: serve it with --workers 1, or keep the calls in a SQLite file"
            " or PostgreSQL",
            exit_code=2,
        )
    store = ctx.store  # opened now, so a bad --db fails here and not on the first request
    missing = store.reader_setup()
    if missing:
        err_console.print(f"note: the SQL console will refuse queries: {missing}")
    token = ui_token()
    ingest_token = ctx.settings.token
    accounts = bool(store.accounts())
    if accounts:
        err_console.print(
            "accounts exist: everyone signs in (`llmlog accounts list`); no shared token is taken"
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        for name, value, what in (
            ("LLMLOG_UI_TOKEN or accounts", token or accounts, "reads every call"),
            ("LLMLOG_INGEST_TOKEN", ingest_token, "stores calls"),
        ):
            if not value:
                err_console.print(
                    f"warning: serving on {host} without {name}: anyone who can reach it {what}"
                )
    fake: FakeProvider | None = None
    if fake_provider:
        fake = FakeProvider(seed=DEMO_SEED).start()
        err_console.print(f"replays and the proxy go to the fake provider on {fake.url}")
    daily = retention.Daily(lambda: open_store(ctx.settings.db)).start() if daily_retention else None
    # A store of its own for each round, as retention's: never the one the pages read.
    schedule = (
        alerts.Schedule(lambda: open_store(ctx.settings.db, ctx.settings.reader_db), every_s=alerts_every)
        if alerts_every
        else None
    )
    if schedule is not None:
        schedule.start()
    try:
        served = Served(
            db=ctx.settings.db,
            reader_db=ctx.settings.reader_db,
            token=token,
            ingest_token=ingest_token,
            allowed_hosts=tuple(hosts),
            fake=(fake.url, fake.anthropic_base_url, fake.openai_base_url) if fake else None,
            processes=workers,
            parent=os.getpid(),
        )
        if workers == 1:
            config = uvicorn.Config(served.app(store), host=host, port=port, log_level="warning")
        else:
            # Each worker builds the app itself (spawned, it shares no memory with this one).
            config = uvicorn.Config(
                APP, factory=True, host=host, port=port, log_level="warning", workers=workers
            )
        sockets = None
        if port == 0 or workers > 1:
            # Bound here, as uvicorn binds one: a free port (0) so that the URL printed is the
            # one served (left to uvicorn, it is picked once running, and printed nowhere);
            # and for workers, the one socket they all accept on.
            sockets = [_bind(config)]
            # Listening already: a client that reads the URL and connects before the server
            # has started waits in the backlog instead of being refused.
            sockets[0].listen(config.backlog)
            port = sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        processes = f"{workers} worker processes; " if workers > 1 else ""
        err_console.print(
            f"llmlog UI on http://{shown}:{port}/ (store {redact_url(store.url)}; {processes}Ctrl-C to stop)"
        )
        if "*" in hosts:
            err_console.print(
                "warning: --allowed-host '*': any page may reach this server by a name of its own"
            )
        else:
            err_console.print(f"answering to the host names {', '.join(hosts)} (more with --allowed-host)")
        if workers == 1:
            whole_process_gc()
            _run_server(config, sockets)
        else:
            assert sockets is not None
            _run_workers(config, sockets, served)
    finally:
        if schedule is not None:
            schedule.stop()
        if daily is not None:
            daily.stop()
        if fake is not None:
            fake.stop()


def _bind(config: Any) -> Any:
    """The listening socket, bound; a port that cannot be had ends the command as when
    uvicorn binds it (uvicorn has said why)."""
    try:
        return config.bind_socket()
    except SystemExit:
        sys.exit(1)


def _run_server(config: Any, sockets: list[Any] | None) -> None:
    """`uvicorn.run(app, …)` on sockets already bound (or none: uvicorn binds them)."""
    import uvicorn

    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stopped as asked
        server.run(sockets=sockets)
    if not server.started:  # the port was taken, say: uvicorn has said why
        sys.exit(1)


def _run_workers(config: Any, sockets: list[Any], served: Served) -> None:
    """`uvicorn.run("…:app", workers=N)` on the socket bound here, the workers told what to
    serve in their environment (inherited when spawned), not on their command line."""
    import os

    from llmlog.web.workers import ENV, Supervisor

    os.environ[ENV] = served.dumps()
    try:
        supervisor = Supervisor(config, sockets)
        supervisor.run()
    finally:
        os.environ.pop(ENV, None)
    if supervisor.failed():  # a worker could not start: it has said why
        sys.exit(1)


@cli.command(
    creates_store=True, context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option(
    "--server", metavar="URL", help="Go through this running `llmlog serve` instead of a proxy of our own."
)
@click.option("--session", help="Session id for every call the program makes.")
@click.option("--feature", help="Feature name for every call.")
@click.option("--user", help="User id for every call.")
@click.option("--prompt-version", help="Prompt template version for every call.")
@click.option("--tag", "tags", multiple=True, help="A tag for every call (repeatable).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def wrap(
    ctx: Ctx,
    server: str | None,
    session: str | None,
    feature: str | None,
    user: str | None,
    prompt_version: str | None,
    tags: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with its LLM calls recorded: any program, any language, no code change.

    The program gets ANTHROPIC_BASE_URL and OPENAI_BASE_URL pointed at a proxy on a free
    loopback port, for as long as it runs (or at --server, with LLMLOG_INGEST_TOKEN if that
    server wants one), which forwards to where those variables pointed before (or to the
    providers) and records every call into the store (or, with LLMLOG_URL, ships it to a
    collector). Its output, input and exit code are its own.

    \b
    Examples:
      llmlog wrap -- python summarize.py notes.txt
      llmlog wrap --feature nightly-report --tag cron -- ./report.sh
      llmlog wrap --server http://127.0.0.1:8765 --session s42 -- llm "hello"
    """
    import os
    import subprocess

    from llmlog.capture.proxy import child_base_urls, context_from, encode_context, upstreams_from_environment
    from llmlog.pipeline.writer import Writer
    from llmlog.web.local_proxy import LocalProxy

    given = {
        "llmlog-session-id": session,
        "llmlog-feature": feature,
        "llmlog-user-id": user,
        "llmlog-prompt-version": prompt_version,
        "llmlog-tags": ",".join(tags) or None,
    }
    headers: dict[str, str] = {k: v for k, v in given.items() if v}
    upstreams = upstreams_from_environment()
    env = dict(os.environ)

    def run() -> int:
        try:
            return subprocess.call(list(command), env=env)
        except FileNotFoundError:
            raise click.ClickException(f"{command[0]}: command not found") from None
        except KeyboardInterrupt:  # the program had the signal too, and has ended
            return 130

    if server:
        # The server's proxy wants the ingest token, if it has one; the program cannot send
        # it, so it rides in the path with the context.
        if ctx.settings.token:
            headers["llmlog-token"] = ctx.settings.token
        base = server.rstrip("/") + (f"/c/{encode_context(headers)}" if headers else "")
        env.update(child_base_urls(base, upstreams))
        code = run()
    else:
        read_prices(ctx.settings)
        writer = Writer(ctx.settings)
        try:
            with LocalProxy(writer.submit, upstreams, context_from(headers)) as proxy:
                env.update(child_base_urls(proxy.url, upstreams))
                code = run()
        finally:
            writer.close()
        lost = writer.stats()
        if lost.dropped or lost.failed:
            err_console.print(f"llmlog: {lost.dropped} call(s) dropped, {lost.failed} could not be recorded")
    # A program ended by a signal exits as a shell would report it.
    sys.exit(code if code >= 0 else 128 - code)


# Import, store administration (erasure, retention, keys, accounts) and investigations
# (reports, prompt versions) live in modules of their own.
