"""Errors a store gives when it is opened."""

from __future__ import annotations


class NewerStore(RuntimeError):
    """The store was migrated by a newer llmlog than this one: its tables, view or triggers
    may need what this version does not have (a function, a column), so it is not used."""

    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(
            f"{where} was upgraded by a newer llmlog (schema {found}; this one knows up to {known}):"
            " upgrade llmlog here too, or stop this one"
        )
