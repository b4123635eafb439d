"""What `daily` keeps of the calls beyond sums, so that it can stand for them once their text
is gone (the cold tier): errors by type, tool calls, distinct users and sessions, and latency
histograms that merge exactly across days and groups (a percentile of a month is read from
the month's summed buckets, never from an average of daily percentiles).

The SQL here is written once for the engines that keep `daily` by triggers (SQLite,
PostgreSQL: what differs is their `Dialect`'s): the same bucket and error-type expressions
feed the triggers that keep `daily` and the from-scratch rollup (`from_raw_sql`) that fills it
on migration and that tests compare it with, so the two agree to the count on each engine.
ClickHouse's materialized views use the same expressions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from llmlog.core.record import ATTRIBUTION, Call
from llmlog.store.dialect import Dialect
from llmlog.store.trace_rollup import resum_sql

# Latency buckets: bucket 0 holds [0, 1) ms; bucket b ≥ 1 holds [2^((b−1)/8), 2^(b/8)) ms, so a
# bucket is 9% wide and a percentile read from the buckets is within 4.5% of the true value.
# Stored as JSON objects {"bucket": count}: only the buckets a group uses take room.
PER_OCTAVE = 8
# Beyond this a latency is taken for garbage (and NaN is never between 0 and it).
MAX_MS = 1e12

# `daily`'s columns after migration (SQLite m007, PostgreSQL m005), in table order.
DAILY_COLUMNS = (
    "day", "feature", "model", "provider", "prompt_template_version",
    "calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
    "cost_usd", "priced_calls", "latency_ms", "first_token_ms",
    "output_calls", "tool_calls", "users", "sessions", "error_types", "latency_hist", "first_token_hist",
)  # fmt: skip
GROUP = ("feature", "model", "provider", "prompt_template_version")


def cold_columns(dialect: Dialect) -> list[tuple[str, str]]:
    """The columns `daily` gained for the cold tier (SQLite m007, PostgreSQL m005): name, type."""
    count, counts = dialect.rollup_sql().count_type, dialect.rollup_sql().map_type
    return [
        ("output_calls", count),  # calls whose output_tokens is not NULL
        ("tool_calls", count),  # tool calls made, summed
        ("users", count),  # distinct user_id (NULL not counted)
        ("sessions", count),  # distinct session_id
        ("error_types", counts),  # {"error type": calls}
        ("latency_hist", counts),  # {"bucket": calls}, see bucket_sql
        ("first_token_hist", counts),
    ]


def bucket_sql(dialect: Dialect, value: str) -> str:
    """The bucket of a latency in ms (NULL for none, NaN, negative or absurd)."""
    log = dialect.log2(value)
    return (
        f"CASE WHEN {value} BETWEEN 0 AND {MAX_MS:.0f} THEN"
        f" CASE WHEN {value} < 1 THEN 0 ELSE 1 + CAST(floor({PER_OCTAVE} * {log}) AS INTEGER) END END"
    )


def from_raw_sql(
    dialect: Dialect, source: str = "call_data", where: str = "", people: str | None = None, into: str = ""
) -> str:
    """`daily`'s rows computed from scratch from the calls in `source` (a table, or a
    transition table in a trigger), in `DAILY_COLUMNS` order; `where` filters the calls.
    `people`: definitions for the WITH clause making a relation `fresh` (day, the group's
    columns, users, sessions) whose counts replace the distinct counts of the calls (a
    trigger's: the users and sessions new to their day and group). `into`: an `INSERT INTO …`
    to put the rows in, placed after the WITH clause, where PostgreSQL wants it."""
    same, sql = dialect.null_safe_equal(), dialect.rollup_sql()
    keys = ("day", *GROUP)
    empty, objects = sql.empty_map, sql.object_agg

    def total(column: str) -> str:
        return sql.total.replace("{x}", column)

    raw = f"""
        SELECT {dialect.day("timestamp")} AS day, {", ".join(GROUP)}, error, input_tokens,
            output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, latency_ms,
            first_token_ms, user_id, session_id,
            CASE WHEN error IS NOT NULL THEN {dialect.error_type("error")} END AS error_type,
            {bucket_sql(dialect, "latency_ms")} AS latency_bucket,
            {bucket_sql(dialect, "first_token_ms")} AS first_token_bucket,
            {dialect.tool_count("tool_calls")} AS tools
        FROM {source} AS r {where}"""
    figures = (
        "count(*)", "count(error)",
        *(f"CAST(coalesce(sum({c}), 0) AS BIGINT)" for c in (
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")),
        total("cost_usd"), "count(cost_usd)", total("latency_ms"),
        total("first_token_ms"), "count(output_tokens)", "CAST(coalesce(sum(tools), 0) AS BIGINT)",
        "count(DISTINCT user_id)", "count(DISTINCT session_id)",
    )  # fmt: skip
    named = ", ".join(f"{f} AS {c}" for f, c in zip(figures, DAILY_COLUMNS[5:19], strict=True))
    main = f"SELECT {', '.join(keys)}, {named} FROM raw GROUP BY {', '.join(keys)}"

    def counts(column: str) -> str:
        inner = (
            f"SELECT {', '.join(keys)}, CAST({column} AS TEXT) AS k, count(*) AS n FROM raw"
            f" WHERE {column} IS NOT NULL GROUP BY {', '.join(keys)}, {column}"
        )
        by = ", ".join(keys)
        return f"SELECT {by}, {objects}(k, n) AS h FROM ({inner}) AS i GROUP BY {by}"

    joins = []
    for alias, column in (("e", "error_type"), ("l", "latency_bucket"), ("f", "first_token_bucket")):
        on = " AND ".join(f"{alias}.{k} {same} m.{k}" for k in keys)
        joins.append(f"LEFT JOIN ({counts(column)}) AS {alias} ON {on}")
    counted = [f"m.{c}" for c in DAILY_COLUMNS[:19]]
    if people:
        counted[17:19] = ["coalesce(p.users, 0) AS users", "coalesce(p.sessions, 0) AS sessions"]
        on = " AND ".join(f"p.{k} {same} m.{k}" for k in keys)
        joins.append(f"LEFT JOIN fresh AS p ON {on}")
    return f"""
        WITH {people + "," if people else ""} raw AS ({raw})
        {into} SELECT {", ".join(counted)}, coalesce(e.h, {empty}) AS error_types,
            coalesce(l.h, {empty}) AS latency_hist, coalesce(f.h, {empty}) AS first_token_hist
        FROM ({main}) AS m
        {chr(10).join(joins)}"""


# ------------------------------------------------------------------ reading the figures


def counts_of(value: Any) -> dict[str, int]:
    """A stored {key: count} object (JSON text on SQLite, a dict from PostgreSQL)."""
    if value is None:
        return {}
    data = json.loads(value) if isinstance(value, str | bytes) else value
    return {str(k): int(v) for k, v in data.items()}


def merge_counts(objects: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for obj in objects:
        for k, n in obj.items():
            out[k] = out.get(k, 0) + n
    return out


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The latencies (ms) bucket `bucket` holds: [low, high)."""
    if bucket <= 0:
        return 0.0, 1.0
    return 2 ** ((bucket - 1) / PER_OCTAVE), 2 ** (bucket / PER_OCTAVE)


def histogram_percentile(hist: Mapping[str, int], p: float) -> float:
    """The p-th percentile (0 ≤ p ≤ 1) of the values counted in `hist`, at the rank
    percentile_cont uses (p·(n−1)), read as if a bucket's values were spread evenly over it."""
    buckets = sorted((int(k), n) for k, n in hist.items() if n > 0)
    n = sum(c for _, c in buckets)
    if n == 0:
        raise ValueError("no values")
    rank = p * (n - 1)
    before = 0
    for bucket, count in buckets:
        if rank < before + count:
            low, high = bucket_bounds(bucket)
            return low + (high - low) * (rank - before + 0.5) / count
        before += count
    raise AssertionError("the rank is below n")


# ------------------------------------------------------------------ repairing stored figures

CALL_FIGURES = (
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
    "cost_usd", "first_token_ms", "latency_ms",
)  # fmt: skip
DAILY_FIGURES = (*CALL_FIGURES[:4], "cost_usd", "latency_ms", "first_token_ms")
PEOPLE_FIGURES = ("input_tokens", "output_tokens", "cost_usd")


def bad_sql(dialect: Dialect, value: str) -> str:
    """True for a figure no call may have: NaN, ±infinity or negative (not for NULL).
    PostgreSQL sorts NaN above infinity; SQLite stores NaN as NULL; 9e999 is its infinity."""
    top = dialect.rollup_sql().infinity
    return f"({value} IS NOT NULL AND NOT ({value} >= 0 AND {value} < {top}))"


def repair_sql(dialect: Dialect) -> list[str]:
    """Statements that repair figures stored before they were checked (SQLite m013,
    PostgreSQL m012): such a figure of a call becomes NULL; the rows of `daily` and
    `people_daily` they fell in, and those whose sums hold such a figure, are summed again
    from the calls. A row whose calls are gone (the cold tier) cannot be: its bad sums are
    set to 0, a figure unknown rather than one that spoils every sum it enters."""
    same = dialect.null_safe_equal()
    day = dialect.day("c.timestamp")
    temp = "CREATE TEMP TABLE"

    def any_bad(columns: Iterable[str], alias: str = "") -> str:
        return " OR ".join(bad_sql(dialect, f"{alias}{c}") for c in columns)

    def match(keys: Iterable[str], left: str, right: str, right_day: str | None = None) -> str:
        return " AND ".join(
            f"{left}.{k} {same} {right_day if k == 'day' and right_day else f'{right}.{k}'}" for k in keys
        )

    daily_keys, people_keys = ("day", *GROUP), ("day", "user_id", "session_id")
    group = ", ".join(GROUP)
    out = [
        f"{temp} repair_daily AS SELECT {day} AS day, {group} FROM call_data AS c"
        f" WHERE {any_bad(CALL_FIGURES, 'c.')}"
        f" UNION SELECT day, {group} FROM daily WHERE {any_bad(DAILY_FIGURES)}",
        f"{temp} repair_people AS SELECT {day} AS day, user_id, session_id FROM call_data AS c"
        f" WHERE ({any_bad(CALL_FIGURES, 'c.')}) AND (user_id IS NOT NULL OR session_id IS NOT NULL)"
        f" UNION SELECT day, user_id, session_id FROM people_daily WHERE {any_bad(PEOPLE_FIGURES)}",
        # (The cost triggers see this update; the rows they change are summed again below.)
        "UPDATE call_data SET "
        + ", ".join(f"{c} = CASE WHEN {bad_sql(dialect, c)} THEN NULL ELSE {c} END" for c in CALL_FIGURES)
        + f" WHERE {any_bad(CALL_FIGURES)}",
    ]
    for table, keys, figures in (
        ("daily", daily_keys, DAILY_FIGURES),
        ("people_daily", people_keys, PEOPLE_FIGURES),
    ):
        repair = f"repair_{table.split('_')[0]}"
        # The keys that still have calls: summed again from them.
        out.append(
            f"DELETE FROM {repair} WHERE NOT EXISTS (SELECT 1 FROM call_data AS c"
            f" WHERE {match(keys, repair, 'c', day)})"
        )
        out.append(
            f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {repair} AS h WHERE {match(keys, 'h', table)})"
        )
        calls_of = match(keys, "h", "r", dialect.day("r.timestamp"))
        where = f"WHERE EXISTS (SELECT 1 FROM {repair} AS h WHERE {calls_of})"
        if table == "daily":
            out.append(
                from_raw_sql(dialect, where=where, into=f"INSERT INTO daily ({', '.join(DAILY_COLUMNS)})")
            )
        else:
            out.append(people_sql(dialect, f"{where} AND (user_id IS NOT NULL OR session_id IS NOT NULL)"))
        # What is left has no calls to be summed from.
        out.append(
            f"UPDATE {table} SET "
            + ", ".join(f"{c} = CASE WHEN {bad_sql(dialect, c)} THEN 0 ELSE {c} END" for c in figures)
            + f" WHERE {any_bad(figures)}"
        )
        out.append(f"DROP TABLE {repair}")
    return out


# ------------------------------------------------------------------ a call that changes group

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
_MAPS = ("error_types", "latency_hist", "first_token_hist")
_PEOPLE = {"users": ("user_id", "user"), "sessions": ("session_id", "session")}


def moves(stored: Sequence[Any] | None, call: Call) -> bool:
    """Whether an update that gives a stored call `call`'s prompt version, tool calls, feature,
    user and session (each if it had none) changes its share of the rollups: `stored` is
    whether each of those is NULL now, in that order (None: no such call)."""
    if not stored:
        return False
    given = (call.prompt_template_version, call.tool_calls, *(getattr(call, n) for n in ATTRIBUTION))
    return any(null and value is not None for null, value in zip(stored, given, strict=True))


# What `moves` is given of the stored call: whether each of these is NULL.
MOVES_SQL = ", ".join(f"{c} IS NULL" for c in ("prompt_template_version", "tool_calls", *ATTRIBUTION))


# A call as `refile` reads it: where it is counted, then what it counts.
_FILED = ("day", "user_id", "session_id", "trace_id", "feature", "errors", "input_tokens", "output_tokens",
          "cost_usd", "timestamp")  # fmt: skip


def refile(run: Run, dialect: Dialect, call_id: str, change: Callable[[], object]) -> None:
    """`change` (in the same writing transaction) gives a stored call what `moves` says moves
    it: `daily` follows (`regroup`); when it was given a user or a session, its share moves
    from the row of `people_daily` it leaves to the one it joins (by the difference: a row
    keeps counting the calls retention deleted); when given a feature, user or session, its
    trace is summed again (`traces`' values are its earliest call's). SQLite and PostgreSQL."""
    p = dialect.placeholder
    read = (
        f"SELECT {dialect.day('timestamp')}, user_id, session_id, trace_id, feature, error IS NOT NULL,"
        f" input_tokens, output_tokens, cost_usd, timestamp FROM call_data WHERE id = {p}"
    )
    before = run(read, [call_id])
    regroup(run, dialect, call_id, change)
    after = run(read, [call_id])
    if not before or not after or tuple(before[0]) == tuple(after[0]):
        return
    was, now = dict(zip(_FILED, before[0], strict=True)), dict(zip(_FILED, after[0], strict=True))
    if (was["user_id"], was["session_id"]) != (now["user_id"], now["session_id"]):
        _people_take(run, dialect, was, call_id)
        _people_add(run, dialect, now)
    drop, fill = resum_sql(dialect, f"trace_id = {p}")
    for trace in {was["trace_id"], now["trace_id"]} - {None}:
        run(drop, [trace])
        run(fill, [trace, trace])


def _people(dialect: Dialect, call: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The condition naming a call's row of `people_daily`, and its parameters."""
    p, same = dialect.placeholder, dialect.null_safe_equal()
    where = f"day = {p} AND user_id {same} {p} AND session_id {same} {p}"
    return where, [call["day"], call["user_id"], call["session_id"]]


def _people_take(run: Run, dialect: Dialect, call: Mapping[str, Any], call_id: str) -> None:
    """A call's share out of its row of `people_daily` (a row left without calls deleted).
    Where the row's first or last time was this call's, it is the row's other stored calls'
    (a call retention deleted, that the row still counts, is not known by its time)."""
    if call["user_id"] is None and call["session_id"] is None:
        return  # counted in no row
    p = dialect.placeholder
    where, key = _people(dialect, call)
    priced = int(call["cost_usd"] is not None)
    run(
        f"UPDATE people_daily SET calls = calls - 1, errors = errors - {p},"
        f" input_tokens = input_tokens - {p}, output_tokens = output_tokens - {p},"
        f" cost_usd = CASE WHEN priced_calls - {p} = 0 THEN 0 ELSE cost_usd - {p} END,"
        f" priced_calls = priced_calls - {p} WHERE {where}",
        [int(bool(call["errors"])), call["input_tokens"] or 0, call["output_tokens"] or 0,
         priced, call["cost_usd"] or 0.0, priced, *key],
    )  # fmt: skip
    same = dialect.null_safe_equal()
    others = (
        f"FROM call_data WHERE {dialect.day('timestamp')} = {p} AND user_id {same} {p}"
        f" AND session_id {same} {p} AND id <> {p}"
    )
    at = call["timestamp"]
    run(
        f"UPDATE people_daily SET"
        f" first = CASE WHEN first = {p} THEN coalesce((SELECT min(timestamp) {others}), first)"
        " ELSE first END,"
        f" last = CASE WHEN last = {p} THEN coalesce((SELECT max(timestamp) {others}), last) ELSE last END"
        f" WHERE {where}",
        [at, *key, call_id, at, *key, call_id, *key],
    )
    run(f"DELETE FROM people_daily WHERE {where} AND calls <= 0", key)


def _people_add(run: Run, dialect: Dialect, call: Mapping[str, Any]) -> None:
    """A call's share added to its row of `people_daily`, the row made if it has none."""
    if call["user_id"] is None and call["session_id"] is None:
        return
    p = dialect.placeholder
    where, key = _people(dialect, call)
    figures = [int(bool(call["errors"])), call["input_tokens"] or 0, call["output_tokens"] or 0,
               call["cost_usd"] or 0.0, int(call["cost_usd"] is not None)]  # fmt: skip
    at = call["timestamp"]
    added = run(
        f"UPDATE people_daily SET calls = calls + 1, errors = errors + {p},"
        f" input_tokens = input_tokens + {p}, output_tokens = output_tokens + {p},"
        f" cost_usd = cost_usd + {p}, priced_calls = priced_calls + {p},"
        f" first = CASE WHEN {p} < first THEN {p} ELSE first END,"
        f" last = CASE WHEN {p} > last THEN {p} ELSE last END WHERE {where} RETURNING calls",
        [*figures, at, at, at, at, *key],
    )
    if not added:
        run(f"INSERT INTO people_daily VALUES ({', '.join([p] * 11)})", [*key, 1, *figures, at, at])


def regroup(run: Run, dialect: Dialect, call_id: str, change: Callable[[], object]) -> None:
    """Keep `daily` right when `change` (in the same writing transaction) changes what a
    stored call's group is, or what it counts (its prompt version, given when its content
    came after it: OTLP). The triggers follow inserts only; this takes the call's share, as
    `from_raw_sql` computes it, out of its old group and adds its new share to its new group,
    as the insert trigger would have: distinct users and sessions through `daily_seen`, a
    group left without calls deleted. SQLite and PostgreSQL."""
    p = dialect.placeholder
    share_sql = from_raw_sql(dialect, where=f"WHERE id = {p}")

    def share() -> tuple[Any, ...] | None:
        rows = run(share_sql, [call_id])
        return tuple(rows[0]) if rows else None

    def people() -> dict[str, Any]:
        rows = run(f"SELECT user_id, session_id FROM call_data WHERE id = {p}", [call_id])
        return {"users": rows[0][0], "sessions": rows[0][1]} if rows else {"users": None, "sessions": None}

    old, was = share(), people()
    change()
    new, now = share(), people()
    if old is None or new is None or old == new:
        return
    _take(run, dialect, old, call_id, was)
    _add(run, dialect, new, now)


def people_sql(dialect: Dialect, where: str) -> str:
    """`people_daily`'s rows summed from the calls (`call_data AS r`) that `where` keeps."""
    total = dialect.rollup_sql().total.replace("{x}", "cost_usd")
    return (
        f"INSERT INTO people_daily SELECT {dialect.day('timestamp')}, user_id, session_id,"
        " count(*), count(error), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        f" {total}, count(cost_usd), min(timestamp), max(timestamp) FROM call_data AS r {where}"
        " GROUP BY 1, 2, 3"
    )


def _key(dialect: Dialect, calls: bool = False) -> str:
    """A condition on one `daily` group (`daily`, `daily_seen`), or on its calls."""
    p, same = dialect.placeholder, dialect.null_safe_equal()
    day = dialect.day("timestamp") if calls else "day"
    return f"{day} = {p} AND " + " AND ".join(f"{c} {same} {p}" for c in GROUP)


def _row(run: Run, dialect: Dialect, key: Sequence[Any]) -> dict[str, Any] | None:
    rows = run(f"SELECT {', '.join(DAILY_COLUMNS)} FROM daily WHERE {_key(dialect)}", list(key))
    if not rows:
        return None
    row = dict(zip(DAILY_COLUMNS, rows[0], strict=True))
    for name in _MAPS:
        row[name] = counts_of(row[name])
    return row


def _write(run: Run, dialect: Dialect, row: dict[str, Any], exists: bool) -> None:
    p = dialect.placeholder
    mark = {c: dialect.rollup_sql().map_param if c in _MAPS else p for c in DAILY_COLUMNS}
    value = {c: json.dumps(row[c], sort_keys=True) if c in _MAPS else row[c] for c in DAILY_COLUMNS}
    if exists:
        figures = DAILY_COLUMNS[5:]
        sets = ", ".join(f"{c} = {mark[c]}" for c in figures)
        key = [row[c] for c in DAILY_COLUMNS[:5]]
        run(f"UPDATE daily SET {sets} WHERE {_key(dialect)}", [*(value[c] for c in figures), *key])
    else:
        marks = ", ".join(mark[c] for c in DAILY_COLUMNS)
        run(
            f"INSERT INTO daily ({', '.join(DAILY_COLUMNS)}) VALUES ({marks})",
            [value[c] for c in DAILY_COLUMNS],
        )


def _take(run: Run, dialect: Dialect, share: tuple[Any, ...], call_id: str, who: dict[str, Any]) -> None:
    p = dialect.placeholder
    key = share[:5]
    row = _row(run, dialect, key)
    if row is None:  # nothing counted it (a store filled by hand)
        return
    mine = dict(zip(DAILY_COLUMNS, share, strict=True))
    for name in DAILY_COLUMNS[5:]:
        if name in _MAPS:
            left = merge_counts([row[name], {k: -n for k, n in counts_of(mine[name]).items()}])
            row[name] = {k: n for k, n in left.items() if n > 0}
        elif name not in _PEOPLE:
            row[name] -= mine[name]
    if row["priced_calls"] == 0:
        row["cost_usd"] = 0.0
    for name, (column, kind) in _PEOPLE.items():
        # One fewer, unless another call of the group and day has the same user (session).
        if who[name] is None or run(
            f"SELECT 1 FROM call_data WHERE {_key(dialect, calls=True)} AND {column} = {p} AND id <> {p}"
            " LIMIT 1",
            [*key, who[name], call_id],
        ):
            continue
        run(
            f"DELETE FROM daily_seen WHERE {_key(dialect)} AND kind = {p} AND who = {p}",
            [*key, kind, who[name]],
        )
        row[name] -= 1
    if row["calls"] <= 0:
        run(f"DELETE FROM daily WHERE {_key(dialect)}", list(key))
    else:
        _write(run, dialect, row, exists=True)


def _add(run: Run, dialect: Dialect, share: tuple[Any, ...], who: dict[str, Any]) -> None:
    p = dialect.placeholder
    key = share[:5]
    mine = dict(zip(DAILY_COLUMNS, share, strict=True))
    row = _row(run, dialect, key)
    exists = row is not None
    if row is None:
        row = {**mine, **{name: 0 for name in _PEOPLE}}
        for name in _MAPS:
            row[name] = {}
        for name in DAILY_COLUMNS[5:]:
            if name not in _MAPS and name not in _PEOPLE:
                row[name] = 0
    for name in DAILY_COLUMNS[5:]:
        if name in _MAPS:
            row[name] = merge_counts([row[name], counts_of(mine[name])])
        elif name not in _PEOPLE:
            row[name] += mine[name]
    for name, (_, kind) in _PEOPLE.items():
        if who[name] is None:
            continue
        added = run(
            f"INSERT INTO daily_seen VALUES ({', '.join([p] * 7)}) ON CONFLICT DO NOTHING RETURNING who",
            [*key, kind, who[name]],
        )
        row[name] += len(added)
    _write(run, dialect, row, exists)
