"""Where calls go and how they are recorded: one place reads the settings.

`LLMLOG_DB` (a file path, `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://…`),
`llmlog.configure(db=...)`, or `--db` on the CLI;
by default a SQLite file in the user's data directory. With `LLMLOG_URL` (remote mode), calls
go to that collector instead, through a spool on disk (`LLMLOG_SPOOL`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from llmlog.core.encryption import Keyring
from llmlog.core.redact import FIELDS as REDACT_FIELDS
from llmlog.core.redact import Redactor


def default_db() -> str:
    return str(Path(platformdirs.user_data_dir("llmlog")) / "llmlog.db")


def default_spool() -> str:
    return str(Path(platformdirs.user_data_dir("llmlog")) / "spool")


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _env_list(name: str, default: tuple[str, ...] = ()) -> list[str]:
    value = os.environ.get(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else list(default)


def _env_int(name: str, default: int, least: int = 0) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}: a whole number, not {value!r}") from None
    if number < least:
        raise ValueError(f"{name}: {least} or more, not {number}")
    return number


def prompts_dir() -> str:
    """`LLMLOG_PROMPTS`: the folder of the application's prompt versions (`llmlog.core.prompts`),
    `prompts` (beside the working directory) unless set."""
    return _env("LLMLOG_PROMPTS") or "prompts"


def upstream(provider: str) -> str | None:
    """`LLMLOG_ANTHROPIC_UPSTREAM`, `LLMLOG_OPENAI_UPSTREAM`: where the provider proxy forwards
    that provider's calls (`llmlog.capture.proxy.Upstreams`), if not to the provider."""
    return _env(f"LLMLOG_{provider.upper()}_UPSTREAM")


def allowed_hosts() -> list[str]:
    """`LLMLOG_ALLOWED_HOSTS`: the names, besides loopback's, `llmlog serve` answers to
    (separated by commas or spaces), as `--allowed-host` gives them."""
    return os.environ.get("LLMLOG_ALLOWED_HOSTS", "").replace(",", " ").split()


def ui_token() -> str | None:
    """`LLMLOG_UI_TOKEN`: the one token that opens the web UI and its API on a server without
    accounts."""
    return _env("LLMLOG_UI_TOKEN")


def clickhouse_cluster() -> str | None:
    """`LLMLOG_CLICKHOUSE_CLUSTER`: the ClickHouse cluster whose nodes each hold the tables
    (`ON CLUSTER`), for a store on a cluster."""
    return _env("LLMLOG_CLICKHOUSE_CLUSTER")


def cache_max_bytes() -> int:
    """`LLMLOG_CACHE_MB`: the memory (MiB, as Python objects, not JSON) the caches of shared
    content of one process may hold in all: what was decoded, built, checked and named once
    for the calls that re-send it (`CACHE_SHARES`). Read once, when they are
    made; 0 keeps nothing."""
    return _env_int("LLMLOG_CACHE_MB", 64) * 2**20


# How `LLMLOG_CACHE_MB` (`config.cache_max_bytes`) is shared out, per cache; a collector
# (`llmlog serve`) has one of each, and two of those marked so (its OTLP intake's and its
# proxy's writer's), which together make the whole. What one holds another may hold too (the
# same message, decoded once, is named and checked by identity): counted by each, never more
# than the whole is held.
CACHE_SHARES = {
    "decoded": 6 / 32,  # JSON parts decoded once (`capture.parse.Decoder`); two
    "messages": 6 / 32,  # OpenInference messages built once (`capture.genai`)
    "tools": 1 / 32,  # tool lists built once (`capture.genai`)
    "texts": 1 / 32,  # system prompts (`capture.genai`)
    "shaped": 2 / 32,  # messages in OpenAI's shape (`capture.shapes`)
    "checked": 2 / 32,  # messages and tools known to serialize (`intake`)
    "named": 3 / 32,  # content ids by the identity of values (`store.content`); two
    "sealed": 2 / 32,  # what regulated mode sealed, by the identity of values (`encryption`)
}


def cache_bytes(name: str) -> int:
    """The bytes (as `json_footprint` counts them) the cache `name` of `CACHE_SHARES` may hold."""
    return int(cache_max_bytes() * CACHE_SHARES[name])


def _env_patterns() -> dict[str, str]:
    value = os.environ.get("LLMLOG_REDACT_PATTERNS")
    if not value:
        return {}
    try:
        patterns = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"LLMLOG_REDACT_PATTERNS: not JSON ({exc})") from None
    if not isinstance(patterns, dict):
        raise ValueError('LLMLOG_REDACT_PATTERNS: a JSON object, {"NAME": "regex"}')
    return patterns


@dataclass
class Settings:
    db: str = field(default_factory=lambda: os.environ.get("LLMLOG_DB") or default_db())
    # PostgreSQL or a ClickHouse server: the login read-only SQL (the console, `llmlog query`)
    # runs as, where the store could not make its own (it refuses such SQL without one).
    reader_db: str | None = field(default_factory=lambda: _env("LLMLOG_READER_DB"), repr=False)
    # Records waiting for the writer; past this, records are dropped (counted) or the caller blocks.
    queue_size: int = 10_000
    # ... and past this many bytes of requests and responses waiting, whichever comes first.
    queue_max_bytes: int = 64 * 2**20
    on_full: str = "drop"  # or "block"
    batch_size: int = 500
    flush_interval_s: float = 0.2
    # How long the exit hook waits for the writer to drain before reporting what it loses.
    exit_timeout_s: float = 10.0
    user_id_secret: str | None = field(
        default_factory=lambda: os.environ.get("LLMLOG_USER_ID_SECRET") or None
    )
    prices: str | None = field(default_factory=lambda: os.environ.get("LLMLOG_PRICES") or None)
    # Remote mode: a collector (`llmlog serve`) to ship calls to instead of writing `db`, the
    # token it asks for, and the on-disk spool where calls wait for it.
    url: str | None = field(default_factory=lambda: _env("LLMLOG_URL"))
    token: str | None = field(default_factory=lambda: _env("LLMLOG_INGEST_TOKEN"))
    spool: str = field(default_factory=lambda: _env("LLMLOG_SPOOL") or default_spool())
    spool_max_bytes: int = 512 * 2**20
    # Redaction before storage (`llmlog.core.redact`): built-in rules by name ("email", "phone",
    # "card", "secret" or "all"), patterns of your own by placeholder name, and the fields.
    redact: list[str] = field(default_factory=lambda: _env_list("LLMLOG_REDACT"))
    redact_patterns: dict[str, str] = field(default_factory=_env_patterns)
    redact_fields: list[str] = field(default_factory=lambda: _env_list("LLMLOG_REDACT_FIELDS", REDACT_FIELDS))
    # Regulated mode (`llmlog.core.encryption`): the keys that seal the text of every call before
    # it is stored (`ID:BASE64`, the first seals), or a file of them; and the metadata keys
    # whose values are sealed too.
    key: str | None = field(default_factory=lambda: _env("LLMLOG_KEY"), repr=False)
    # Where the app's prompt versions are (`llmlog.core.prompts`): name/v1.txt, name/current.
    prompts: str = field(default_factory=prompts_dir)
    key_file: str | None = field(default_factory=lambda: _env("LLMLOG_KEY_FILE"))
    sensitive_metadata: list[str] = field(default_factory=lambda: _env_list("LLMLOG_SENSITIVE_METADATA"))
    # The collector: how many ingest requests (OTLP, `/v1/calls`) are read, decoded and
    # stored at once; the others wait their turn, unread, so that what requests hold in
    # memory (a body, its decoded spans or records) is bounded however many clients send.
    ingest_concurrency: int = field(default_factory=lambda: _env_int("LLMLOG_INGEST_CONCURRENCY", 2, least=1))
    # … and how many bytes of their bodies it holds at once, read and not yet done with;
    # past it, requests wait unread. A body larger than this is read when it is alone.
    ingest_buffer_bytes: int = field(
        default_factory=lambda: _env_int("LLMLOG_INGEST_BUFFER_MB", 16, least=1) * 2**20
    )

    # The writer's work (parse, check, redact, seal, price, store) in this many processes of
    # its own (`llmlog.pipeline.processes`); 0: on a thread of the app's process.
    writer_processes: int = field(default_factory=lambda: _env_int("LLMLOG_WRITER_PROCESSES", 0, least=0))

    def __post_init__(self) -> None:
        if not self.db.strip():
            # SQLite would take it as the working directory, and fail on every batch.
            raise ValueError("db must name a store: a file path or a URL")
        if self.on_full not in ("drop", "block"):
            raise ValueError("on_full must be 'drop' or 'block'")
        if self.queue_size < 1 or self.batch_size < 1:
            raise ValueError("queue_size and batch_size must be positive")
        if self.writer_processes < 0:
            raise ValueError("writer_processes must be 0 or more")
        if self.ingest_concurrency < 1:
            raise ValueError("ingest_concurrency must be positive")
        # Read now: a bad key is an error when configured, never a call stored clear.
        self._keyring = Keyring.from_environment(
            self.key, self.key_file, self.sensitive_metadata, memo_bytes=cache_bytes("sealed")
        )
        # And the redaction rules: a misspelled one (`emial`) is an error wherever settings
        # are read (configure, every CLI command, serve), never a call stored unredacted.
        self.redactor()

    def redactor(self) -> Redactor:
        """The redaction these settings ask for (LLMLOG_REDACT, …_PATTERNS, …_FIELDS)."""
        return Redactor(self.redact, self.redact_patterns, self.redact_fields)

    @property
    def keyring(self) -> Keyring | None:
        """The keys of regulated mode, if any are set."""
        return self._keyring
