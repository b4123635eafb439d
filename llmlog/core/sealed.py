"""What a sealed value looks like (regulated mode, `llmlog.core.encryption`): what any code
can tell of a value without a key. Below the record, which checks that a figure it is given
is not one."""

from __future__ import annotations

import re
from typing import Any

PREFIX = "llmlog-enc:v1:"
SEALED_FORM = re.compile(r"llmlog-enc:v1:([A-Za-z0-9_.-]{1,64}):([A-Za-z0-9_-]+={0,2})\Z")


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def well_sealed(value: Any) -> bool:
    """Whether `value` has the form of a sealed value, whole: not merely its prefix, which
    clear text could begin with. What a store without the key can check."""
    return isinstance(value, str) and SEALED_FORM.match(value) is not None


def key_id_of(value: str) -> str | None:
    m = SEALED_FORM.match(value)
    return m.group(1) if m else None
