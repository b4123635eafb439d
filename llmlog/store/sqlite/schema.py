"""The embedded store's schema: the `calls` view and the numbered migrations that build
and change the tables (`llmlog.store.sqlite.store` applies them on open)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator

from llmlog.core.record import KIND
from llmlog.store import experiments, migrations
from llmlog.store.alerts import SQLITE_TABLES
from llmlog.store.layout import select_list
from llmlog.store.rollup import (
    DAILY_COLUMNS,
    GROUP,
    bucket_sql,
    cold_columns,
    from_raw_sql,
    repair_sql,
)
from llmlog.store.sqlite import SQLITE
from llmlog.store.sqlite.trace_schema import (
    changed_sql,
    m017_traces,
    m018_trace_values_by_time,
    usage_follows,
)
from llmlog.store.traces import SPANS_CALL_INDEX

# Responses and content bodies are read through `llmlog_text`, which gives back what
# `llmlog.store.compression` compressed and text as it is. Migrations written before
# compression (m002, m004, m010) use it too: harmless on text, and a store is only ever
# migrated by the code that defines it.


# What the response echoed of the request (m004) is put back in place from `content`.
def _echoed_response() -> str:
    response, instructions = "llmlog_text(d.response)", "llmlog_text(ri.body)"
    tools = "json(llmlog_text(rt.body))"
    return f"""CASE
        WHEN ri.id IS NULL AND rt.id IS NULL THEN {response}
        WHEN rt.id IS NULL THEN json_set({response}, '$.instructions', {instructions})
        WHEN ri.id IS NULL THEN json_set({response}, '$.tools', {tools})
        ELSE json_set({response}, '$.instructions', {instructions}, '$.tools', {tools})
    END"""


_ECHO_JOINS = """
LEFT JOIN content AS ri ON ri.id = d.response_instructions_id
LEFT JOIN content AS rt ON rt.id = d.response_tools_id"""


def calls_view(db: sqlite3.Connection) -> str:
    """The `calls` view over the `call_data` `db` has now: before migration 4 it has no
    echoed response to put back, and a column added later is not there yet."""
    present = {row[1] for row in db.execute("PRAGMA table_info(call_data)")}
    echo = "response_instructions_id" in present
    body = "llmlog_text({}.body)"
    elsewhere = {
        "system_prompt": body.format("s"),
        "messages": f"""CASE WHEN d.message_ids IS NULL THEN NULL ELSE (
        SELECT json_group_array(json({body.format("m")}))
        FROM json_each(d.message_ids) AS j CROSS JOIN content AS m ON m.id = j.value
    ) END""",
        "tools": body.format("t"),
        "params": body.format("p"),
        "response": _echoed_response() if echo else "llmlog_text(d.response)",
    }
    return f"""
CREATE VIEW calls AS
SELECT
    {select_list(elsewhere, present)}
FROM call_data AS d
LEFT JOIN content AS s ON s.id = d.system_id
LEFT JOIN content AS t ON t.id = d.tools_id
LEFT JOIN content AS p ON p.id = d.params_id{_ECHO_JOINS if echo else ""}
"""


def remake_calls_view(db: sqlite3.Connection) -> None:
    db.execute("DROP VIEW IF EXISTS calls")
    db.execute(calls_view(db))


# Each kind of the column table (`llmlog.core.record.Column.kind`) as `call_data` holds it.
_TYPES = {
    "id": "TEXT",
    "text": "TEXT",
    "timestamp": "TEXT",
    "json": "TEXT",
    "integer": "INTEGER",
    "real": "REAL",
}


def add_call_column(db: sqlite3.Connection, name: str) -> None:
    """A column of the table added to `call_data` and the view: a migration adding a
    column to `llmlog.core.record.CALL_COLUMNS` calls this."""
    db.execute(f"ALTER TABLE call_data ADD COLUMN {name} {_TYPES[KIND[name]]}")
    remake_calls_view(db)


# ------------------------------------------------------------------ migrations
# Numbered functions, applied in order on open; PRAGMA user_version records the last one.


def _run(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must be one transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_initial(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
        CREATE TABLE content (
            id INTEGER PRIMARY KEY,
            hash BLOB NOT NULL UNIQUE,  -- first 16 bytes of SHA-256 of body
            body TEXT NOT NULL
        );
        CREATE TABLE call_data (
            rowid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            session_id TEXT, user_id TEXT, timestamp TEXT NOT NULL,
            provider TEXT, model TEXT, feature TEXT, prompt_template_version TEXT,
            system_id INTEGER REFERENCES content(id),
            message_ids TEXT,
            tools_id INTEGER REFERENCES content(id),
            params_id INTEGER REFERENCES content(id),
            response TEXT, tool_calls TEXT, stop_reason TEXT,
            input_tokens INTEGER, output_tokens INTEGER,
            cache_read_tokens INTEGER, cache_creation_tokens INTEGER,
            cost_usd REAL, first_token_ms REAL, latency_ms REAL,
            error TEXT, metadata TEXT, tags TEXT, trace_id TEXT, parent_id TEXT
        );
        CREATE INDEX call_data_timestamp ON call_data(timestamp);
        """,
    )


def m002_rate_card_and_filters(db: sqlite3.Connection) -> None:
    # Which rate card priced each call, so a repricing can be told from the original.
    db.execute("ALTER TABLE call_data ADD COLUMN rate_card TEXT")
    # Indexes for the filters people use most: each ends in timestamp so "newest 100 of X"
    # is an index range scan.
    for col in ("feature", "model", "user_id", "session_id", "prompt_template_version"):
        db.execute(f"CREATE INDEX call_data_{col} ON call_data({col}, timestamp)")
    db.execute("CREATE INDEX call_data_errors ON call_data(timestamp) WHERE error IS NOT NULL")
    remake_calls_view(db)


def m003_daily(db: sqlite3.Connection) -> None:
    """`daily`: the calls rolled up per UTC day, feature, model, provider and prompt version,
    kept by the database itself (triggers), so reports over days read a few hundred rows
    instead of every call, and stay exact whoever inserts (the store, INSERT … SELECT by
    hand, `llmlog copy`).

    No DELETE trigger, on purpose: deleting calls is retention's business, which deletes old
    calls and keeps their rollup rows (the cold tier). Besides inserts, only what the store
    changes in a stored call is followed: its cost (`update_costs`, `llmlog reprice`). An
    UPDATE of other columns, or INSERT OR REPLACE of a stored id (a delete, which nothing
    follows, then an insert, which is counted), leaves the rollup off."""
    group = ("feature", "model", "provider", "prompt_template_version")
    # NULL is one value of a group, as in GROUP BY: the unique index maps it to a zero-length
    # BLOB, which equals no text (not even ''), so the mapping merges nothing. The table keeps
    # the NULL itself. Led by day, the index also serves "the days from … to …".
    key = "day, " + ", ".join(f"ifnull({c}, x'')" for c in group)
    sums = (
        "calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_creation_tokens", "cost_usd", "priced_calls", "latency_ms", "first_token_ms",
    )  # fmt: skip
    db.execute(
        """
        CREATE TABLE daily (
            day TEXT NOT NULL,  -- the UTC date, 'YYYY-MM-DD' (the start of the stored timestamp)
            feature TEXT, model TEXT, provider TEXT, prompt_template_version TEXT,
            calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,  -- calls whose error is not NULL
            input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,  -- sums; NULL counts as 0
            cache_read_tokens INTEGER NOT NULL, cache_creation_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,  -- sum of the known costs; 0 when none
            priced_calls INTEGER NOT NULL,  -- calls whose cost_usd is not NULL
            latency_ms REAL NOT NULL, first_token_ms REAL NOT NULL  -- sums, for averages
        )
        """
    )
    db.execute(f"CREATE UNIQUE INDEX daily_key ON daily ({key})")
    # The calls already stored, in one pass (the migration holds the write lock: none arrive).
    db.execute(
        """
        INSERT INTO daily
        SELECT substr(timestamp, 1, 10), feature, model, provider, prompt_template_version,
            count(*), count(error), ifnull(sum(input_tokens), 0), ifnull(sum(output_tokens), 0),
            ifnull(sum(cache_read_tokens), 0), ifnull(sum(cache_creation_tokens), 0),
            total(cost_usd), count(cost_usd), total(latency_ms), total(first_token_ms)
        FROM call_data GROUP BY 1, 2, 3, 4, 5
        """
    )
    # Row triggers: an insert skipped by ON CONFLICT(id) DO NOTHING fires none.
    db.execute(
        f"""
        CREATE TRIGGER call_data_daily_insert AFTER INSERT ON call_data BEGIN
            INSERT INTO daily VALUES (
                substr(NEW.timestamp, 1, 10), NEW.feature, NEW.model, NEW.provider,
                NEW.prompt_template_version, 1, NEW.error IS NOT NULL, ifnull(NEW.input_tokens, 0),
                ifnull(NEW.output_tokens, 0), ifnull(NEW.cache_read_tokens, 0),
                ifnull(NEW.cache_creation_tokens, 0), ifnull(NEW.cost_usd, 0.0),
                NEW.cost_usd IS NOT NULL, ifnull(NEW.latency_ms, 0.0), ifnull(NEW.first_token_ms, 0.0)
            ) ON CONFLICT ({key}) DO UPDATE SET {", ".join(f"{c} = {c} + excluded.{c}" for c in sums)};
        END
        """
    )
    # A new cost moves the group's sum by the difference; with no priced call left it is 0
    # exactly, not the rounding left over from adding and taking away.
    priced = "priced_calls + (NEW.cost_usd IS NOT NULL) - (OLD.cost_usd IS NOT NULL)"
    old_key = "substr(OLD.timestamp, 1, 10), " + ", ".join(f"ifnull(OLD.{c}, x'')" for c in group)
    db.execute(
        f"""
        CREATE TRIGGER call_data_daily_cost AFTER UPDATE OF cost_usd ON call_data
        WHEN OLD.cost_usd IS NOT NEW.cost_usd BEGIN
            UPDATE daily SET
                cost_usd = CASE WHEN {priced} = 0 THEN 0.0
                    ELSE cost_usd + ifnull(NEW.cost_usd, 0.0) - ifnull(OLD.cost_usd, 0.0) END,
                priced_calls = {priced}
            WHERE ({key}) = ({old_key});
        END
        """
    )


def m004_response_echo(db: sqlite3.Connection) -> None:
    # The OpenAI Responses API echoes the request's instructions and tool list (several KB)
    # in every response; kept in `content` like the request's own, they are stored once.
    db.execute("ALTER TABLE call_data ADD COLUMN response_instructions_id INTEGER REFERENCES content(id)")
    db.execute("ALTER TABLE call_data ADD COLUMN response_tools_id INTEGER REFERENCES content(id)")
    remake_calls_view(db)


def m005_people_daily(db: sqlite3.Connection) -> None:
    """`people_daily`: the calls rolled up per UTC day, user and session, kept by triggers as
    `daily` is, so the sessions and users pages over a week or a month read a row per
    session and day instead of every call. Calls with neither a user nor a session are left
    out. No DELETE trigger, for the reason `daily` has none."""
    key = "day, ifnull(user_id, x''), ifnull(session_id, x'')"
    db.execute(
        """
        CREATE TABLE people_daily (
            day TEXT NOT NULL,  -- the UTC date, as in `daily`
            user_id TEXT, session_id TEXT,
            calls INTEGER NOT NULL, errors INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,  -- sums; NULL counts as 0
            cost_usd REAL NOT NULL, priced_calls INTEGER NOT NULL,  -- as in `daily`
            first TEXT NOT NULL, last TEXT NOT NULL  -- the earliest and latest call's timestamp
        )
        """
    )
    db.execute(f"CREATE UNIQUE INDEX people_daily_key ON people_daily ({key})")
    db.execute(
        """
        INSERT INTO people_daily
        SELECT substr(timestamp, 1, 10), user_id, session_id, count(*), count(error),
            ifnull(sum(input_tokens), 0), ifnull(sum(output_tokens), 0), total(cost_usd),
            count(cost_usd), min(timestamp), max(timestamp)
        FROM call_data WHERE user_id IS NOT NULL OR session_id IS NOT NULL GROUP BY 1, 2, 3
        """
    )
    db.execute(
        f"""
        CREATE TRIGGER call_data_people_insert AFTER INSERT ON call_data
        WHEN NEW.user_id IS NOT NULL OR NEW.session_id IS NOT NULL BEGIN
            INSERT INTO people_daily VALUES (
                substr(NEW.timestamp, 1, 10), NEW.user_id, NEW.session_id, 1,
                NEW.error IS NOT NULL, ifnull(NEW.input_tokens, 0), ifnull(NEW.output_tokens, 0),
                ifnull(NEW.cost_usd, 0.0), NEW.cost_usd IS NOT NULL, NEW.timestamp, NEW.timestamp
            ) ON CONFLICT ({key}) DO UPDATE SET
                calls = calls + 1, errors = errors + excluded.errors,
                input_tokens = input_tokens + excluded.input_tokens,
                output_tokens = output_tokens + excluded.output_tokens,
                cost_usd = cost_usd + excluded.cost_usd, priced_calls = priced_calls + excluded.priced_calls,
                first = min(first, excluded.first), last = max(last, excluded.last);
        END
        """
    )
    priced = "priced_calls + (NEW.cost_usd IS NOT NULL) - (OLD.cost_usd IS NOT NULL)"
    old_key = "substr(OLD.timestamp, 1, 10), ifnull(OLD.user_id, x''), ifnull(OLD.session_id, x'')"
    db.execute(
        f"""
        CREATE TRIGGER call_data_people_cost AFTER UPDATE OF cost_usd ON call_data
        WHEN OLD.cost_usd IS NOT NEW.cost_usd
            AND (OLD.user_id IS NOT NULL OR OLD.session_id IS NOT NULL) BEGIN
            UPDATE people_daily SET
                cost_usd = CASE WHEN {priced} = 0 THEN 0.0
                    ELSE cost_usd + ifnull(NEW.cost_usd, 0.0) - ifnull(OLD.cost_usd, 0.0) END,
                priced_calls = {priced}
            WHERE ({key}) = ({old_key});
        END
        """
    )


def m006_spans(db: sqlite3.Connection) -> None:
    """`spans`: every span received over OTLP, a model call or not, so a call's trace can be
    shown as a tree; `span_events`: log events carrying a span's content, kept until (and
    after) their span arrives, whichever comes first."""
    _run(
        db,
        """
        CREATE TABLE spans (
            trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT,
            name TEXT NOT NULL, kind TEXT, start_time TEXT NOT NULL, end_time TEXT,
            status TEXT, status_message TEXT, attributes TEXT, events TEXT, service TEXT,
            call_id TEXT,  -- the call this span became, if it was a model call
            PRIMARY KEY (trace_id, span_id)
        );
        CREATE TABLE span_events (
            key BLOB PRIMARY KEY,  -- a hash of the event: the same event sent twice is kept once
            trace_id TEXT NOT NULL, span_id TEXT NOT NULL, name TEXT NOT NULL,
            attributes TEXT, body TEXT, received INTEGER NOT NULL
        );
        CREATE INDEX span_events_span ON span_events(trace_id, span_id, received)
        """,
    )


def _counted(column: str, key: str, when: str) -> str:
    # One more in a {key: count} JSON object, when `when` holds.
    path = f"""'$."' || {key} || '"'"""
    return (
        f"{column} = CASE WHEN {when} THEN json_set({column}, {path},"
        f" ifnull(json_extract({column}, {path}), 0) + 1) ELSE {column} END"
    )


# `daily_seen`'s key: NULL groups mapped as in `daily`'s, led by who (erasure deletes by it).
_SEEN_KEY = "who, kind, day, " + ", ".join(f"ifnull({c}, x'')" for c in GROUP)


def m007_cold_figures(db: sqlite3.Connection) -> None:
    """What `daily` needs to stand for the calls once retention has deleted them: calls with
    an output count (for averages), tool calls, distinct users and sessions, errors by type
    and latency histograms (`llmlog.store.rollup`). The insert trigger keeps them from now
    on; the calls already stored fill them in. `daily_seen` remembers which users and
    sessions each day and group has counted already (a lookup in its index per call, where
    asking the calls themselves could read a whole day of them). And `settings`, the store's
    own settings (its retention policy), so every process using the store applies the same."""
    for column, kind in cold_columns(SQLITE):
        db.execute(f"ALTER TABLE daily ADD COLUMN {column} {kind}")
    db.execute(
        """
        CREATE TABLE daily_seen (
            day TEXT NOT NULL, feature TEXT, model TEXT, provider TEXT, prompt_template_version TEXT,
            kind TEXT NOT NULL,  -- 'user' or 'session'
            who TEXT NOT NULL  -- the user or session id
        )
        """
    )
    db.execute(f"CREATE UNIQUE INDEX daily_seen_key ON daily_seen ({_SEEN_KEY})")
    db.execute("DROP TRIGGER call_data_daily_insert")
    _daily_insert_trigger(db)
    # The calls already stored, in one pass. A group whose calls were deleted by hand keeps
    # the zeros it has: the new figures are only known from the calls.
    db.execute(f"CREATE TEMP TABLE daily_raw AS {from_raw_sql(SQLITE)}")
    new = DAILY_COLUMNS[15:]
    same = " AND ".join(f"r.{c} IS daily.{c}" for c in ("day", *GROUP))
    db.execute(
        f"UPDATE daily SET ({', '.join(new)}) = (SELECT {', '.join(f'r.{c}' for c in new)}"
        f" FROM daily_raw AS r WHERE {same}) WHERE EXISTS (SELECT 1 FROM daily_raw AS r WHERE {same})"
    )
    db.execute("DROP TABLE temp.daily_raw")
    for column, kind in (("user_id", "user"), ("session_id", "session")):
        db.execute(
            f"INSERT OR IGNORE INTO daily_seen SELECT DISTINCT substr(timestamp, 1, 10), {', '.join(GROUP)},"
            f" '{kind}', {column} FROM call_data WHERE {column} IS NOT NULL"
        )
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)  -- JSON values")
    # Counts the deletions of content (`Store.erase`, retention), so writers that cache
    # content ids know when to forget them.
    db.execute("INSERT INTO settings VALUES ('content_epoch', '0')")


def _daily_insert_trigger(db: sqlite3.Connection) -> None:
    """`daily`'s insert trigger, as it is now (`m007_cold_figures` made it; `m022` remade it).

    A call's user and session go into `daily_seen` first, and what the group's distinct
    counts gain is `changes()`: how many rows the trigger's statement before inserted, 0 when
    the day and group had counted them already or the call has none. The user's
    goes into the `daily` row's insert; the session's, inserted after it, into an update of
    that row. Asking `daily_seen` first (NOT EXISTS) and inserting after made SQLite write each
    INSERT … SELECT through a temporary table, as for an insert into a table its own program
    read before: two made and dropped a call."""
    key = "day, " + ", ".join(f"ifnull({c}, x'')" for c in GROUP)
    new_key = "substr(NEW.timestamp, 1, 10), " + ", ".join(f"ifnull(NEW.{c}, x'')" for c in GROUP)
    sums = (
        "calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_creation_tokens", "cost_usd", "priced_calls", "latency_ms", "first_token_ms",
        "output_calls", "tool_calls", "users", "sessions",
    )  # fmt: skip
    etype = SQLITE.error_type("NEW.error")
    latency, first = bucket_sql(SQLITE, "NEW.latency_ms"), bucket_sql(SQLITE, "NEW.first_token_ms")

    def one(value: str) -> str:
        return f"CASE WHEN {value} IS NULL THEN '{{}}' ELSE json_object(CAST({value} AS TEXT), 1) END"

    def seen(column: str, kind: str) -> str:
        # DO NOTHING, not OR IGNORE: an INSERT OR REPLACE (or OR ABORT …) by hand would
        # impose its own way on OR IGNORE, replacing a row seen before (counted again) or
        # failing on it; an upsert's is its own.
        return (
            "INSERT INTO daily_seen SELECT substr(NEW.timestamp, 1, 10), NEW.feature,"
            f" NEW.model, NEW.provider, NEW.prompt_template_version, '{kind}', NEW.{column}"
            f" WHERE NEW.{column} IS NOT NULL ON CONFLICT DO NOTHING;"
        )

    db.execute(
        f"""
        CREATE TRIGGER call_data_daily_insert AFTER INSERT ON call_data BEGIN
            {seen("user_id", "user")}
            INSERT INTO daily VALUES (
                substr(NEW.timestamp, 1, 10), NEW.feature, NEW.model, NEW.provider,
                NEW.prompt_template_version, 1, NEW.error IS NOT NULL, ifnull(NEW.input_tokens, 0),
                ifnull(NEW.output_tokens, 0), ifnull(NEW.cache_read_tokens, 0),
                ifnull(NEW.cache_creation_tokens, 0), ifnull(NEW.cost_usd, 0.0),
                NEW.cost_usd IS NOT NULL, ifnull(NEW.latency_ms, 0.0), ifnull(NEW.first_token_ms, 0.0),
                NEW.output_tokens IS NOT NULL, {SQLITE.tool_count("NEW.tool_calls")}, changes(), 0,
                CASE WHEN NEW.error IS NULL THEN '{{}}' ELSE json_object({etype}, 1) END,
                {one(latency)}, {one(first)}
            ) ON CONFLICT ({key}) DO UPDATE SET
                {", ".join(f"{c} = {c} + excluded.{c}" for c in sums)},
                {_counted("error_types", etype, "NEW.error IS NOT NULL")},
                {_counted("latency_hist", latency, f"{latency} IS NOT NULL")},
                {_counted("first_token_hist", first, f"{first} IS NOT NULL")};
            {seen("session_id", "session")}
            UPDATE daily SET sessions = sessions + 1 WHERE ({key}) = ({new_key}) AND changes();
        END
        """
    )


def m008_audit(db: sqlite3.Connection) -> None:
    """`audit`: who read (or exported, or re-encrypted) which calls' text, and when. The
    store writes it; the read-only SQL of the console and `llmlog query` cannot read it."""
    db.execute(
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,  -- as call_data.timestamp
            who TEXT NOT NULL, action TEXT NOT NULL,
            call_ids TEXT NOT NULL  -- a JSON array
        )
        """
    )


def m009_accounts(db: sqlite3.Connection) -> None:
    """Accounts of the web UI and the API tokens `llmlog serve` takes (`llmlog.operations.accounts`);
    private, as `audit` is. Passwords and tokens are kept hashed only."""
    _run(
        db,
        """
        CREATE TABLE accounts (
            name TEXT PRIMARY KEY, role TEXT NOT NULL,  -- viewer, debugger or admin
            password TEXT NOT NULL,  -- scrypt, as llmlog.operations.accounts.hash_password writes it
            created TEXT NOT NULL
        );
        CREATE TABLE api_tokens (
            hash BLOB PRIMARY KEY,  -- SHA-256 of the token
            name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL,  -- ingest or read
            created TEXT NOT NULL
        )
        """,
    )


# Keys whose string values are identifiers, kinds, settings or encoded data: not words.
_NOT_WORDS = (
    "type", "role", "id", "tool_use_id", "call_id", "object", "status", "model", "stop_reason",
    "finish_reason", "signature", "encrypted_content", "data", "url", "media_type", "service_tier",
    "system_fingerprint", "truncation", "tool_choice", "effort",
)  # fmt: skip


def _words(json_sql: str) -> str:
    """The words of a stored JSON value: its string leaves but `_NOT_WORDS`, and never a
    sealed one (regulated mode)."""
    keys = ", ".join(f"'{k}'" for k in _NOT_WORDS)
    return (
        f"(SELECT group_concat(j.value, ' ') FROM json_tree({json_sql}) AS j WHERE j.type = 'text'"
        f" AND (j.key IS NULL OR j.key NOT IN ({keys})) AND j.value NOT LIKE 'llmlog-enc:%')"
    )


def document_sql(row: str) -> str:
    """`llmlog.store.search.document` in SQL, from a stored row (`new`, `old` in a trigger):
    the last message unless it is the model's, the response, the error's type and message.
    Written in SQL so that the triggers index and unindex exactly the same words."""
    last_id = f"json_extract({row}.message_ids, '$[#-1]')"
    last = f"(SELECT llmlog_text(m.body) FROM content AS m WHERE m.id = {last_id})"
    said = (
        f"CASE WHEN json_extract({last}, '$.role') = 'assistant'"
        f" OR json_extract({last}, '$.type') IN ('function_call', 'reasoning') THEN NULL"
        f" ELSE {_words(last)} END"
    )
    error = (
        f"CASE WHEN json_extract({row}.error, '$.message') LIKE 'llmlog-enc:%'"
        f" THEN json_extract({row}.error, '$.type')"
        f" ELSE json_extract({row}.error, '$.type') || ' ' || json_extract({row}.error, '$.message') END"
    )
    parts = [said, _words(f"llmlog_text({row}.response)"), error]
    return " || char(10) || ".join(f"ifnull({p}, '')" for p in parts)


def m010_search(db: sqlite3.Connection) -> None:
    """`call_text`: full-text search over what each call newly said and heard
    (`llmlog.store.search`), one FTS5 row per call with the call's rowid, kept by triggers.
    Contentless: the index holds the words' places, not a second copy of the text (which
    would double the file); the delete and update triggers give back the words they index,
    from the row itself and its content, which never change while the row exists. So
    erasure and retention leave no words behind (the store merges the index afterwards so
    that deleted words leave the file too). Existing calls are indexed here."""
    db.execute(
        "CREATE VIRTUAL TABLE call_text USING fts5(doc, content = '',"
        " tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    _search_triggers(db, document_sql)
    db.execute(f"INSERT INTO call_text (rowid, doc) SELECT rowid, {document_sql('call_data')} FROM call_data")


def _search_triggers(db: sqlite3.Connection, document: Callable[[str], str]) -> None:
    """The triggers that index a stored row's words (`document` of the row) and unindex them."""
    new, old = document("new"), document("old")
    add = f"INSERT INTO call_text (rowid, doc) VALUES (new.rowid, {new});"
    remove = f"INSERT INTO call_text (call_text, rowid, doc) VALUES ('delete', old.rowid, {old});"
    db.execute(f"CREATE TRIGGER call_text_insert AFTER INSERT ON call_data BEGIN {add} END")
    db.execute(f"CREATE TRIGGER call_text_delete AFTER DELETE ON call_data BEGIN {remove} END")
    db.execute(
        "CREATE TRIGGER call_text_update AFTER UPDATE OF message_ids, response, error ON call_data"
        f" BEGIN {remove} {add} END"
    )


def m011_vectors(db: sqlite3.Connection) -> None:
    """`call_data.embedding`: the call's vector for "calls like this one"
    (`llmlog.store.vectors`), filled only in a store that asks for it."""
    db.execute("ALTER TABLE call_data ADD COLUMN embedding BLOB")


def m012_web_sessions(db: sqlite3.Connection) -> None:
    """Who is signed in to the web UI (`llmlog.web.auth`): a row per session, by the SHA-256
    of its random cookie, until it expires or is ended (signing out; the account removed or
    changed). Private, as `accounts` is."""
    _run(
        db,
        """
        CREATE TABLE web_sessions (
            hash BLOB PRIMARY KEY,  -- SHA-256 of the cookie
            name TEXT NOT NULL,  -- the account
            expires INTEGER NOT NULL  -- Unix time
        );
        CREATE INDEX web_sessions_name ON web_sessions (name)
        """,
    )


def m013_repair_figures(db: sqlite3.Connection) -> None:
    """Figures stored before they were checked (an infinite latency, a negative cost or
    token count) made NULL, and the rollup rows they fell in summed again
    (`rollup.repair_sql`)."""
    for sql in repair_sql(SQLITE):
        db.execute(sql)


def m014_waiting_events(db: sqlite3.Connection) -> None:
    """`span_events` by arrival: the log events that waited for their span too long are
    found and deleted (`Store.expire_span_events`) without reading the others."""
    db.execute("CREATE INDEX IF NOT EXISTS span_events_received ON span_events(received)")


def m015_compressed_text(db: sqlite3.Connection) -> None:
    """Responses and content bodies may be stored compressed (`llmlog.store.compression`):
    the view and the search index's triggers of a store made before read them through
    `llmlog_text`, as a new store's do. The rows already stored stay as they are."""
    remake_calls_view(db)
    for name in ("insert", "delete", "update"):
        db.execute(f"DROP TRIGGER call_text_{name}")
    _search_triggers(db, document_sql)


# The words of a row for the search index, read in Python (`search.sqlite_document`): the
# row's last message body, its response and its error, as stored.
_ROW_DOCUMENT = (
    "llmlog_document((SELECT m.body FROM content AS m WHERE m.id = json_extract({0}.message_ids, '$[#-1]')),"
    " {0}.response, {0}.error)"
)


def m016_search_words_in_python(db: sqlite3.Connection) -> None:
    """The search index's triggers read a row's words through `llmlog_document`, Python
    that both the indexing and the unindexing trigger call, in place of the same reading
    in SQL (`document_sql`, json_tree over each value): a fifth of what storing a call cost.
    The index is rebuilt, so that what a row's deletion gives back is what was indexed."""
    for name in ("insert", "delete", "update"):
        db.execute(f"DROP TRIGGER call_text_{name}")
    _search_triggers(db, _ROW_DOCUMENT.format)
    db.execute("INSERT INTO call_text (call_text) VALUES ('delete-all')")
    db.execute(
        f"INSERT INTO call_text (rowid, doc) SELECT rowid, {_ROW_DOCUMENT.format('call_data')} FROM call_data"
    )


def m019_alerts(db: sqlite3.Connection) -> None:
    """The state of alerts (`llmlog.store.alerts`): each finding's, so that it is posted once
    until it clears; their history; the lease one evaluator holds at a time. Private, as
    `settings` is (read-only SQL reads the tables of `_READABLE` only)."""
    _run(db, SQLITE_TABLES)


def m020_spans_by_call(db: sqlite3.Connection) -> None:
    """The spans that stand for a call, by its id (`SPANS_CALL_INDEX`): what the call page
    reads of a trace of 100,000 spans is the call's own spans and those above them."""
    db.execute(SPANS_CALL_INDEX)


def m021_experiments(db: sqlite3.Connection) -> None:
    """Experiments' definitions (`llmlog.store.experiments`). Private, as `alerts` is
    (read-only SQL reads the tables of `_READABLE` only)."""
    _run(db, experiments.SQLITE_TABLES)


def m022_daily_seen_first(db: sqlite3.Connection) -> None:
    """`daily`'s insert trigger without the two temporary tables it made a call
    (`_daily_insert_trigger`): the same rows in `daily` and `daily_seen`."""
    db.execute("DROP TRIGGER call_data_daily_insert")
    _daily_insert_trigger(db)


def m023_search_words_given(db: sqlite3.Connection) -> None:
    """The search index's insert trigger takes a row's words from `call_words`, where the
    store's insert has put them in the same transaction (and deletes them before it ends),
    and reads them through `llmlog_document` only for a row that has none there (a row of
    other SQL, or one whose words the insert could not read from its stored text). Calling
    Python from SQL for each row made the insert take the interpreter lock back for each
    row, which a busy thread of the app's holds up to the switch interval (5 ms). The words
    are the same: read by the same function from the same text as stored."""
    db.execute("CREATE TABLE IF NOT EXISTS call_words (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
    db.execute("DROP TRIGGER call_text_insert")
    words = f"coalesce((SELECT doc FROM call_words WHERE id = new.id), {_ROW_DOCUMENT.format('new')})"
    db.execute(
        "CREATE TRIGGER call_text_insert AFTER INSERT ON call_data"
        f" BEGIN INSERT INTO call_text (rowid, doc) VALUES (new.rowid, {words}); END"
    )


def m024_usage_follows(db: sqlite3.Connection) -> None:
    """Usage given to a stored call after it (its tokens came in a later span:
    `Store.update_usage`) moves `daily`, `people_daily` and `traces` by the difference, as a
    new cost does: the triggers that follow a call's cost follow its token counts too."""
    group = ("feature", "model", "provider", "prompt_template_version")
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
    priced = "priced_calls + (NEW.cost_usd IS NOT NULL) - (OLD.cost_usd IS NOT NULL)"
    cost = f"""cost_usd = CASE WHEN {priced} = 0 THEN 0.0
        ELSE cost_usd + ifnull(NEW.cost_usd, 0.0) - ifnull(OLD.cost_usd, 0.0) END,
        priced_calls = {priced}"""

    def moved(columns: tuple[str, ...]) -> str:
        return ", ".join(f"{c} = {c} + ifnull(NEW.{c}, 0) - ifnull(OLD.{c}, 0)" for c in columns)

    db.execute("DROP TRIGGER call_data_daily_cost")
    key = "day, " + ", ".join(f"ifnull({c}, x'')" for c in group)
    old_key = "substr(OLD.timestamp, 1, 10), " + ", ".join(f"ifnull(OLD.{c}, x'')" for c in group)
    db.execute(
        f"""
        CREATE TRIGGER call_data_daily_cost AFTER UPDATE OF cost_usd, {", ".join(tokens)} ON call_data
        WHEN {changed_sql(("cost_usd", *tokens))} BEGIN
            UPDATE daily SET {cost}, {moved(tokens)},
                output_calls = output_calls
                    + (NEW.output_tokens IS NOT NULL) - (OLD.output_tokens IS NOT NULL)
            WHERE ({key}) = ({old_key});
        END
        """
    )
    db.execute("DROP TRIGGER call_data_people_cost")
    key = "day, ifnull(user_id, x''), ifnull(session_id, x'')"
    old_key = "substr(OLD.timestamp, 1, 10), ifnull(OLD.user_id, x''), ifnull(OLD.session_id, x'')"
    db.execute(
        f"""
        CREATE TRIGGER call_data_people_cost AFTER UPDATE OF cost_usd, {", ".join(tokens[:2])} ON call_data
        WHEN ({changed_sql(("cost_usd", *tokens[:2]))})
            AND (OLD.user_id IS NOT NULL OR OLD.session_id IS NOT NULL) BEGIN
            UPDATE people_daily SET {cost}, {moved(tokens[:2])} WHERE ({key}) = ({old_key});
        END
        """
    )
    usage_follows(db)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    m001_initial,
    m002_rate_card_and_filters,
    m003_daily,
    m004_response_echo,
    m005_people_daily,
    m006_spans,
    m007_cold_figures,
    m008_audit,
    m009_accounts,
    m010_search,
    m011_vectors,
    m012_web_sessions,
    m013_repair_figures,
    m014_waiting_events,
    m015_compressed_text,
    m016_search_words_in_python,
    m017_traces,
    m018_trace_values_by_time,
    m019_alerts,
    m020_spans_by_call,
    m021_experiments,
    m022_daily_seen_first,
    m023_search_words_given,
    m024_usage_follows,
]


class _Versions:
    """The version is the file's `user_version`; a step holds the write lock (BEGIN
    IMMEDIATE), so processes opening one file at once migrate it once."""

    where = "this SQLite store"

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def read(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @contextlib.contextmanager
    def step(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def read_in(self, db: sqlite3.Connection) -> int:
        return self.read()

    def write(self, db: sqlite3.Connection, version: int) -> None:
        db.execute(f"PRAGMA user_version = {int(version)}")


def migrate(db: sqlite3.Connection, target: int | None = None) -> int:
    """Apply pending migrations (up to `target`), each in its own transaction."""
    if not db.execute("SELECT 1 FROM sqlite_master").fetchone():
        # A new file: pages freed by deletes (retention) can go back to the file system a
        # few at a time. Only settable before the first table.
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    return migrations.migrate(_Versions(db), MIGRATIONS, target)
