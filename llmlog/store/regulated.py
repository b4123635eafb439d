"""What every store does for regulated mode (`llmlog.encryption`) when it writes.

The store enforces it, not each process's configuration: every insert (and every content
update) reads the store's settings in its own writing transaction and obeys them as they
are then, however long ago the store was opened and whatever the process was told. A call
with clear text is sealed by a process that has a key and refused, as a data error, by one
that has not, once the store takes sealed text only; the metadata names whose values are
sealed are the store's own list, applied by every writer beside its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from llmlog.encryption import ENCRYPTION_SETTING, POLICY_SETTINGS, Keyring, Policy, clear_parts
from llmlog.record import Call


class Regulated:
    """Mixed into `Store`: the sealing and the checks of every write."""

    keyring: Keyring | None
    vectors: bool

    # Cached from the settings on open and by every write, for display (`llmlog keys
    # status`, the admin page) and to seal before the write lock: text must come sealed
    # (`llmlog keys rotate`), and the metadata whose values are sealed too. A write is never
    # let through on these: it reads the settings again in its own transaction (`_enforce`).
    sealed_only: bool = False
    sensitive_metadata: frozenset[str] = frozenset()
    # How long `llmlog keys rotate` waits before sweeping the store a second time: for a
    # store whose inserts cannot be held off by a lock (ClickHouse).
    rotation_settle_s: float = 0.0
    # What a writing transaction reads of the store's settings, in one statement: the
    # content epoch (whether cached content ids still hold), vectors, and regulated mode.
    WRITE_SETTINGS = ("content_epoch", "vectors", *POLICY_SETTINGS)

    def setting(self, key: str) -> Any:
        raise NotImplementedError

    def set_setting(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def _sealed(self, calls: Sequence[Call]) -> Sequence[Call]:
        """Calls as they may be written, before the writing transaction: with keys, their
        text sealed (copies: the caller's calls stay as they were; what came sealed is left
        so), and the metadata named sensitive here or by the store as last read. Sealing is
        the costly part, so it is done outside the write lock; `_enforce`, in it, has the
        last word."""
        if self.keyring is None:
            return calls
        return [self.keyring.seal_call(copy.copy(c), self.sensitive_metadata) for c in calls]

    def _enforce(self, calls: Sequence[Call], settings: Mapping[str, Any]) -> Sequence[Call]:
        """In the writing transaction, given the store's settings as read in it (never as
        cached: another process may have rotated since this one opened the store): the
        calls as they may be stored. With keys, whatever is still clear that the store's
        settings now name is sealed (copies); without, a call with clear text (or a clear
        value of a metadata name the store lists) is refused, as a data error, when the
        store keeps text sealed only. Returns `calls` itself when nothing changed."""
        policy = Policy.from_settings(settings)
        self.sealed_only, self.sensitive_metadata = policy.required, policy.sensitive
        if "vectors" in settings:  # turned on by another process: embedded from this batch on
            asked = settings["vectors"]
            self.vectors = isinstance(asked, dict) and bool(asked.get("enabled"))
        if self.keyring is not None:
            if not any(self._clear(c, policy) for c in calls):
                return calls
            names = policy.sensitive | self.keyring.sensitive_metadata
            return [
                self.keyring.seal_call(copy.copy(c), names) if self._clear(c, policy) else c for c in calls
            ]
        for c in calls:
            clear = self._clear(c, policy)
            if clear:
                raise ValueError(
                    f"call {c.id}: this store keeps the text of calls encrypted (regulated mode),"
                    f" and no key is set here to encrypt its {' and '.join(clear)} with"
                    " (LLMLOG_KEY or LLMLOG_KEY_FILE)"
                )
        return calls

    def _clear(self, call: Call, policy: Policy) -> list[str]:
        """What of `call` must not be stored as it is, under `policy`, by this process: with
        keys, whatever they would seal; without, the clear parts a sealed-only store refuses."""
        if self.keyring is not None:
            # Its text was sealed by `_sealed`, just before: only the store's list of
            # metadata names can have grown since.
            names = policy.sensitive | self.keyring.sensitive_metadata
            return clear_parts(call, names, text=False)
        return clear_parts(call, policy.sensitive) if policy.required else []

    def sealing_policy(self) -> Policy:
        """What regulated mode asks of calls written here, read now (and cached)."""
        policy = Policy.from_settings({key: self.setting(key) for key in POLICY_SETTINGS})
        self.sealed_only, self.sensitive_metadata = policy.required, policy.sensitive
        return policy

    def require_sealed(self, key_id: str) -> None:
        """From now on, text sealed only: the first step of `llmlog keys rotate`. Every
        write reads the mark in its own transaction; where that transaction holds the write
        lock (SQLite) nothing more is needed, and a store with row locks (PostgreSQL) makes
        the marking wait for the inserts under way."""
        self.set_setting(ENCRYPTION_SETTING, {"required": True, "key": key_id})
        self.sealed_only = True
