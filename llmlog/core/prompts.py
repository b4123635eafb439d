"""Prompt versions: prompts kept as files in the application's repository, and the version
every call made with one carries.

    prompts/
      code-review/
        v1.txt
        v2.txt
        current        # "v2": the version `llmlog.prompt("code-review")` returns

`llmlog.prompt("code-review")` returns the current text as a `Prompt` (a `str`, so it goes
wherever the text would) whose `version` is "code-review@v2". Every text read from the
directory is remembered, so a call whose system prompt is one of them is stored with its
version, however the text reached the SDK; a system prompt that is none of them gets a
stable short hash of its text, so `GROUP BY prompt_template_version` never shows NULL for a
call with a system prompt. A version given by hand (`llmlog.context(...)`) wins.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlog.core.config import prompts_dir

DEFAULT_DIR = "prompts"
_VERSION_FILE = re.compile(r"(?P<version>[A-Za-z0-9][A-Za-z0-9._-]*)\.(txt|md)\Z")


class Prompt(str):
    """A prompt's text, with the version it is (`name@version`)."""

    name: str
    version: str

    def __new__(cls, text: str, name: str, version: str) -> Prompt:
        self = super().__new__(cls, text)
        self.name, self.version = name, f"{name}@{version}"
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from what `__new__` takes (pickled to a writer process, copied): str's own
        # reduction would call it with the text alone.
        return (Prompt, (str(self), self.name, self.version.removeprefix(f"{self.name}@")))


@dataclass(frozen=True)
class Versions:
    name: str
    versions: list[str]  # oldest first, in natural order (v2 before v10)
    current: str | None

    def path(self, root: Path, version: str) -> Path:
        for suffix in (".txt", ".md"):
            candidate = root / self.name / f"{version}{suffix}"
            if candidate.is_file():
                return candidate
        raise LookupError(
            f"prompt {self.name!r} has no version {version!r} in {root / self.name};"
            f" its versions: {a_few(self.versions)}"
        )


def a_few(names: Iterable[str], n: int = 8) -> str:
    """Names for a message: the first `n`, then "…" when there are more."""
    names = list(names)
    return ", ".join(names[:n]) + (", …" if len(names) > n else "") if names else "none"


def natural(version: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version)]


def directory(root: str | os.PathLike[str] | None = None) -> Path:
    return Path(root or prompts_dir())


def catalog(root: str | os.PathLike[str] | None = None) -> list[Versions]:
    """Every prompt in the directory with its versions and current one, by name."""
    base = directory(root)
    out: list[Versions] = []
    if not base.is_dir():
        return out
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        found = (_VERSION_FILE.match(f.name) for f in folder.iterdir() if f.is_file())
        versions = sorted((m.group("version") for m in found if m), key=natural)
        if not versions:
            continue
        pointer = folder / "current"
        current = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else versions[-1]
        out.append(Versions(folder.name, versions, current if current in versions else None))
    return out


def _versions(name: str, root: str | os.PathLike[str] | None) -> Versions:
    for v in catalog(root):
        if v.name == name:
            return v
    known = [v.name for v in catalog(root)]
    raise LookupError(
        f"no prompt {name!r} in {directory(root)} (a folder {name}/ with v1.txt, …);"
        f" the prompts: {a_few(known)}"
    )


def read(name: str, version: str, root: str | os.PathLike[str] | None = None) -> Prompt:
    """One version of a prompt: "v2", or as calls carry it, "NAME@v2"."""
    base = directory(root)
    version = version.removeprefix(f"{name}@")
    text = _versions(name, root).path(base, version).read_text(encoding="utf-8")
    REGISTRY.add(text, f"{name}@{version}")
    return Prompt(text, name, version)


def prompt(name: str, root: str | os.PathLike[str] | None = None) -> Prompt:
    """The current version of a prompt (its folder's `current` file names it; without one,
    the newest version). Calls made with it carry its version."""
    versions = _versions(name, root)
    if versions.current is None:
        pointer = directory(root) / name / "current"
        raise LookupError(f"{pointer} names a version that is not there ({', '.join(versions.versions)})")
    return read(name, versions.current, root)


def text_hash(text: str) -> str:
    """A stable short version for a system prompt nobody versioned."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Registry:
    """Prompt texts seen in a prompts directory, by a hash of the text, with their version."""

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}
        self._loaded: set[Path] = set()
        self._lock = threading.Lock()
        self.generation = 0  # how many times a version was added: another process tells by it

    def add(self, text: str, version: str) -> None:
        key = _key(text)
        with self._lock:
            # The same again (`prompt` read for each call) is nothing new: the writer's
            # processes are sent every version when the generation changes.
            if self._versions.get(key) != version:
                self._versions[key] = version
                self.generation += 1

    def load(self, root: str | os.PathLike[str] | None = None) -> None:
        """Remember every version in the directory, once per directory and process."""
        base = directory(root).resolve()
        with self._lock:
            if base in self._loaded:
                return
            self._loaded.add(base)
        for v in catalog(base):
            for version in v.versions:
                try:
                    self.add(v.path(base, version).read_text(encoding="utf-8"), f"{v.name}@{version}")
                except (OSError, UnicodeDecodeError, LookupError):
                    continue  # an unreadable file versions no call; the others still do

    def known(self) -> tuple[int, dict[str, str]]:
        """Every version known here, by the hash of its text, and the `generation` they are
        of: for the writer's processes."""
        with self._lock:
            return self.generation, dict(self._versions)

    def learn(self, versions: dict[str, str]) -> None:
        """Versions another process knows (`known`), as if read here."""
        with self._lock:
            self._versions.update(versions)

    def version_of(self, system_prompt: str) -> str:
        """The registered version of a system prompt, else the short hash of its text."""
        return self._versions.get(_key(system_prompt)) or text_hash(system_prompt)


REGISTRY = Registry()
