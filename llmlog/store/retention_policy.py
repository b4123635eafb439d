"""A store's retention policy (`llmlog.operations.retention` applies it): how many days
calls are kept whole, per feature if set, and how long log events wait for their span. A
setting of the store's own, so every process using the store applies the same; the
ClickHouse store also makes it its table's TTL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmlog.store.base import Store

DEFAULT_DAYS = 60
MAX_DAYS = 36_525  # a hundred years: past that, the dates themselves run out
DEFAULT_EVENTS_MINUTES = 60
MAX_EVENTS_MINUTES = 7 * 24 * 60
SETTING = "retention"


@dataclass
class Policy:
    """Keep calls `days` days (today and the `days` before it); `features` maps a feature
    to a window of its own. Log events waiting for their span are kept `events_minutes`
    after they arrived."""

    days: int = DEFAULT_DAYS
    features: dict[str, int] = field(default_factory=dict)
    events_minutes: int = DEFAULT_EVENTS_MINUTES

    def __post_init__(self) -> None:
        for name, days in [("the window", self.days), *self.features.items()]:
            if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
                raise ValueError(f"{name}: a window is a whole number of days, 1 to {MAX_DAYS}, not {days!r}")
        wait = self.events_minutes
        if not isinstance(wait, int) or isinstance(wait, bool) or not 1 <= wait <= MAX_EVENTS_MINUTES:
            raise ValueError(
                f"log events wait for their span a whole number of minutes, 1 to {MAX_EVENTS_MINUTES},"
                f" not {wait!r}"
            )

    def events_before(self, now: datetime) -> int:
        """The arrival time (ns since the epoch) before which a waiting log event is deleted."""
        return int((now - timedelta(minutes=self.events_minutes)).timestamp() * 1e9)

    def days_for(self, feature: str | None) -> int:
        return self.features.get(feature, self.days) if feature is not None else self.days

    def cutoff(self, feature: str | None, today: date) -> date:
        """The first day still kept whole for `feature`."""
        return today - timedelta(days=self.days_for(feature))

    def to_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "features": dict(sorted(self.features.items())),
            "events_minutes": self.events_minutes,
        }

    @classmethod
    def from_json(cls, value: Any) -> Policy:
        if not isinstance(value, dict):
            return cls()
        features = {str(k): int(v) for k, v in value.get("features", {}).items()}
        wait = int(value.get("events_minutes", DEFAULT_EVENTS_MINUTES))
        return cls(int(value.get("days", DEFAULT_DAYS)), features, wait)


def policy(store: Store) -> Policy:
    return Policy.from_json(store.setting(SETTING))


def set_policy(store: Store, p: Policy) -> None:
    store.set_setting(SETTING, p.to_json())


def expire_events(store: Store, p: Policy | None = None, now: datetime | None = None) -> int:
    """Delete the log events that have waited for their span longer than the policy's
    `events_minutes`; how many went. Cheap when none has (one indexed read on SQLite)."""
    p = p or policy(store)
    return store.expire_span_events(p.events_before(now or datetime.now(UTC)))
