"""The one migration runner. Each engine keeps its numbered migrations (a list of functions
in its `schema` module) and says how its schema version is read and written and how a step
is made safe against another process migrating at once (`Versions`); this applies them.

A migration runs once, in order, up to the newest this code knows; a store a newer llmlog
migrated further is refused (`NewerStore`), since its tables may need what this one lacks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from llmlog.store.errors import NewerStore

H = TypeVar("H")


class Versions(Protocol[H]):
    """How one engine's store keeps its schema version."""

    #: The store, as an error names it ("this SQLite store").
    where: str

    def read(self) -> int:
        """The version now, outside any step."""
        ...

    def step(self) -> contextlib.AbstractContextManager[H]:
        """One migration's step: a transaction holding the engine's schema lock where it has
        them, giving what a migration function takes; committed when the block ends."""
        ...

    def read_in(self, handle: H) -> int:
        """The version again, inside the step: another process may have migrated meanwhile."""
        ...

    def write(self, handle: H, version: int) -> None: ...


def migrate(
    versions: Versions[H], migrations: Sequence[Callable[[H], None]], target: int | None = None
) -> int:
    """Apply the pending migrations up to `target` (all by default), each in a step of its
    own; the version reached."""
    known = len(migrations)
    target = known if target is None else target
    while True:
        version = versions.read()
        if version > known:
            raise NewerStore(versions.where, version, known)
        if version >= target:
            return version
        with versions.step() as handle:
            version = versions.read_in(handle)
            if version < target:
                migrations[version](handle)
                versions.write(handle, version + 1)
