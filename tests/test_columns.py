"""The column table (`llmlog.core.record.CALL_COLUMNS`) is the one list of a call's columns:
adding a column is an entry there, the `Call` field, and one migration per engine. Tried for
real on a copy of the package, as someone adding a column would: the copy's stores then keep,
return, show in `calls` and export the new column, with nothing else edited."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llmlog
from llmlog.core.record import CALL_COLUMNS, COLUMNS, Call
from llmlog.store.layout import INLINE, KEPT_ELSEWHERE, select_list


def test_the_call_has_exactly_the_tables_columns_in_order() -> None:
    assert [f.name for f in dataclasses.fields(Call)] == list(COLUMNS)
    assert len(set(COLUMNS)) == len(COLUMNS)
    assert all(c.kind in ("id", "text", "timestamp", "json", "integer", "real") for c in CALL_COLUMNS)


def test_a_view_lists_every_column_in_order_and_needs_each_kept_elsewhere() -> None:
    view = select_list({name: "NULL" for name in KEPT_ELSEWHERE})
    names = [line.strip().rstrip(",").split()[-1].removeprefix("d.") for line in view.splitlines()]
    assert names == list(COLUMNS)
    assert set(INLINE) | set(KEPT_ELSEWHERE) == set(COLUMNS)
    with pytest.raises(ValueError, match="no expression for messages"):
        select_list({name: "NULL" for name in KEPT_ELSEWHERE if name != "messages"})
    # A column `call_data` does not have yet is left out, not named.
    assert "d.rate_card" not in select_list({n: "NULL" for n in KEPT_ELSEWHERE}, present={"id"})


# What someone adding columns writes: the table's entries and the Call's fields (a text, an
# integer and a JSON column), and one migration per engine.
_NEW = {"region": "str", "attempts": "int", "labels": "dict[str, Any]"}
_KINDS = {"region": "text", "attempts": "integer", "labels": "json"}
_ENTRIES = "".join(f'    Column("{name}", "{_KINDS[name]}"),\n' for name in _NEW)
_FIELDS = "".join(f"    {name}: {kind} | None = None\n" for name, kind in _NEW.items())


def _migration(args: str, calls: str) -> str:
    return f"\ndef m099_region({args}):\n" + "".join(f"    {calls.format(name)}\n" for name in _NEW)


_EDITS = {
    "core/record.py": [
        ('    Column("parent_id", "text"),\n', '    Column("parent_id", "text"),\n' + _ENTRIES),
        ("    parent_id: str | None = None\n", "    parent_id: str | None = None\n" + _FIELDS),
    ],
    "store/sqlite/schema.py": [
        ("\ndef migrate(", _migration("db", 'add_call_column(db, "{}")')
         + "\n\nMIGRATIONS.append(m099_region)\n\n\ndef migrate("),
    ],
    "store/postgres/schema.py": [
        ("\ndef schema_lock(", _migration("cur", 'add_call_column(cur, "{}")')
         + "\n\nMIGRATIONS.append(m099_region)\n\n\ndef schema_lock("),
    ],
    "store/clickhouse/schema.py": [
        ("\nclass Versions:", _migration("runner, cluster", 'add_call_column(runner, cluster, "{}")')
         + "\n\nMIGRATIONS.append(m099_region)\n\n\nclass Versions:"),
    ],
}  # fmt: skip

_CHECK = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime
    from llmlog.core.filters import CallFilter
    from llmlog.core.record import Call
    from llmlog.store import open_store

    url = sys.argv[1]
    call = Call(timestamp=datetime(2026, 3, 1, tzinfo=UTC), provider="openai", model="m",
                messages=[{"role": "user", "content": "hi"}], region="eu-west", attempts=3,
                labels={"tier": "gold", "n": [1, 2]})
    store = open_store(url)
    assert store.insert([call]) == 1
    got = store.get(call.id)
    assert (got.region, got.attempts, got.labels) == ("eu-west", 3, call.labels), got
    assert got.messages == call.messages
    brief = store.recent(CallFilter(), limit=1, brief=True)[0]
    assert (brief.region, brief.attempts, brief.labels) == ("eu-west", 3, call.labels), brief
    rows = store.query("SELECT region, attempts, JSON_VALUE(labels, '$.tier') FROM calls").rows
    assert [tuple(r) for r in rows] == [("eu-west", 3, "gold")], rows
    exported = json.loads(call.to_json())
    assert (exported["region"], exported["attempts"]) == ("eu-west", 3)
    back = Call.from_dict(exported)
    assert (back.region, back.attempts, back.labels) == ("eu-west", 3, call.labels)
    print("ok")
    """
)


@pytest.fixture(scope="module")
def widened(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package with two columns added."""
    root = tmp_path_factory.mktemp("widened")
    package = root / "llmlog"
    shutil.copytree(Path(llmlog.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    for path, edits in _EDITS.items():
        file = package / path
        text = file.read_text()
        for old, new in edits:
            assert text.count(old) == 1, (path, old)
            text = text.replace(old, new)
        file.write_text(text)
    return root


def _check(widened: Path, url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(widened)}
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, url],
        cwd=widened,  # `-c` puts the working directory first on the path
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_a_column_added_to_the_table_is_kept_by_sqlite(widened: Path, tmp_path: Path) -> None:
    _check(widened, str(tmp_path / "calls.db"))


def test_a_column_added_to_the_table_is_kept_by_postgres(widened: Path, pg_url: str) -> None:
    _check(widened, pg_url)


def test_a_column_added_to_the_table_is_kept_by_clickhouse(widened: Path, tmp_path: Path) -> None:
    _check(widened, f"chdb://{tmp_path / 'ch'}")
