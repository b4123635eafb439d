"""BENCHMARKS.md's table: written whole by a full run, or some of its rows by a run of some
parts (`python -m bench.run --only …`), the others kept as measured before."""

from __future__ import annotations

import os
import platform
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
HEAD = ["| figure | measured | goal | |", "|---|---|---|---|"]


@dataclass
class Row:
    figure: str
    value: str
    goal: str
    met: bool | None  # None: a figure without a goal, or not measured


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem = next(int(x.split()[1]) for x in meminfo if x.startswith("MemTotal"))
        memory = f"{mem / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        memory = "?"
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory} RAM; {platform.system()} {platform.release()};"
        f" Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}"
    )


def _verdict(r: Row) -> str:
    return "" if r.met is None else ("met" if r.met else "**missed**")


def _line(r: Row) -> str:
    return f"| {r.figure} | {r.value} | {r.goal} | {_verdict(r)} |"


def _figure(line: str) -> str:
    return line[2:].split(" | ", 1)[0]


def _measured(header: str, postgres: str) -> str:
    return f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {header}; PostgreSQL {postgres}."


def _put(path: Path, block: list[str]) -> None:
    text = path.read_text() if path.exists() else ""
    joined = "\n".join([START, *block, END])
    if START in text and END in text:
        text = text[: text.index(START)] + joined + text[text.index(END) + len(END) :]
    else:
        text = (text or "# Benchmarks\n\n") + joined + "\n"
    path.write_text(text)


def write_report(path: Path, header: str, postgres: str, rows: Sequence[Row], notes: Sequence[str]) -> None:
    """The table between the markers, every row of it from this run."""
    _put(path, [_measured(header, postgres), "", *HEAD, *map(_line, rows), "", *(f"- {n}" for n in notes)])


def update_report(
    path: Path, header: str, postgres: str, rows: Sequence[Row], notes: Sequence[str], parts: Sequence[str]
) -> None:
    """The rows of this run put in the table in place of those of the same figure, a new one
    after the row this run measured before it (the first at the end), the other rows kept;
    a note says when and where these were measured (in place of the note of an earlier run
    of the same parts), with this run's notes."""
    text = path.read_text() if path.exists() else ""
    block = (
        text[text.index(START) + len(START) : text.index(END)].strip("\n").split("\n")
        if START in text and END in text
        else []
    )
    if not any(line.startswith("|") for line in block):
        block = ["Only some parts measured so far.", "", *HEAD, ""]
    table = [i for i, line in enumerate(block) if line.startswith("|")]
    lines = [block[i] for i in table[2:]]  # the rows, after the head's two lines
    figures = [_figure(line) for line in lines]
    # A new row goes after the one this run measured before it (at the end, for the first).
    after = len(lines)
    for r in rows:
        if r.figure in figures:
            after = figures.index(r.figure) + 1
            lines[after - 1] = _line(r)
        else:
            lines.insert(after, _line(r))
            figures.insert(after, r.figure)
            after += 1
    block = [*block[: table[0] + 2], *lines, *block[table[-1] + 1 :]]
    said = f"The rows of `python -m bench.run --only {' '.join(parts)}`:"
    kept = [line for line in block if not line.startswith(f"- {said}")]
    where = _measured(header, postgres).replace("Measured", "measured", 1)
    kept += [f"- {said} {where}{''.join(' ' + n for n in notes)}"]
    _put(path, kept)
