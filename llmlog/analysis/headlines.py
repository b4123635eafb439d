"""Each report's headline (`llmlog.analysis.reports`): the one sentence, with its numbers, the
report would open with over its default period, for the list of reports to say what each
finds now, not only what it is ("3 error types in the last 7 days, 1 new, 2.1% of calls").

Each reads what its report reads, over the period its page opens on, so that following the
name shows the figures the headline gave. Compare has no headline of its own until two
versions are chosen: its headline names the features that have several to compare.
Sentences hold figures and feature names, never logged text: they are for viewers too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from llmlog.analysis import reports
from llmlog.analysis.dashboard import Period, day_param
from llmlog.store import Store

# The periods the report pages (and `llmlog report`) open on by default.
ERRORS_DAYS, COST_DAYS, SPIKES_DAYS = 7, 30, 7
DRIFT_DAYS, DRIFT_BASELINE = 7, 28
NAMED = 3  # feature names a sentence lists before "and N more"
NAME_CHARS = 40  # a name is cut past this (names are logged: a feature may be named anything)


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def _usd(v: float) -> str:
    return f"${v:,.2f}" if abs(v) >= 0.1 else f"${v:,.4f}"


def _name(value: str | None) -> str:
    if value is None:
        return "(none)"
    return value if len(value) <= NAME_CHARS else value[: NAME_CHARS - 1] + "…"


def _names(values: list[str]) -> str:
    shown = ", ".join(values[:NAMED])
    return shown if len(values) <= NAMED else f"{shown} and {len(values) - NAMED:,} more"


def _days(n: int) -> str:
    return "today" if n == 1 else f"the last {n} days"


def _calls_in(store: Store, period: Period) -> int:
    """All calls of the period, from `daily` (both tiers)."""
    p = store.dialect.placeholder
    rows = store.internal_query(
        f"SELECT SUM(calls) FROM daily WHERE day >= {p} AND day <= {p}",
        [day_param(store, period.first), day_param(store, period.last)],
        timeout_s=5.0,
    ).rows
    return int(rows[0][0] or 0) if rows else 0


def errors(store: Store, now: datetime) -> str:
    period = Period.ending(ERRORS_DAYS, now.date())
    # Every group, and no example calls: the sentence counts, it does not point.
    groups = reports.errors_report(store, period, top=1_000_000, examples=0)
    calls = _calls_in(store, period)
    if not groups:
        return f"No errors in {_days(period.days)}, over {_plural(calls, 'call')}."
    types = {g.error_type for g in groups}
    new = {g.error_type for g in groups if g.new}
    failed = sum(g.errors for g in groups)
    rate = failed / calls if calls else 0.0
    return (
        f"{_plural(len(types), 'error type')} in {_days(period.days)}, {len(new):,} new:"
        f" {_plural(failed, 'error')}, {rate:.1%} of {_plural(calls, 'call')}."
    )


def cost(store: Store, now: datetime) -> str:
    period = Period.ending(COST_DAYS, now.date())
    r = reports.cost_report(store, period)
    calls = sum(d.calls for d in r.by_day)
    if not calls:
        return f"No calls in {_days(period.days)}."
    sentence = f"{_usd(r.total_usd)} over {_days(period.days)}, {_plural(calls, 'call')}"
    top = r.by_model[0] if r.by_model else None
    if top is not None and r.total_usd > 0:
        sentence += f", {top.cost_usd / r.total_usd:.0%} of it on {_name(top.name)}"
    features = {o.feature for o in r.over_routing}
    if features:
        saved = sum(o.savings_usd for o in r.over_routing)
        sentence += (
            f"; {_plural(len(features), 'feature sends', 'features send')} short calls to a pricier"
            f" model ({_usd(saved)} to save)"
        )
    return sentence + "."


def drift(store: Store, now: datetime) -> str:
    changes = reports.drift_report(store, DRIFT_DAYS, DRIFT_BASELINE, now=now)
    when = f"in the last {DRIFT_DAYS} days against the {DRIFT_BASELINE} before"
    if not changes:
        return f"Nothing changed beyond chance {when}."
    features = sorted({_name(c.feature) for c in changes})
    return (
        f"{_plural(len(changes), 'change')} beyond chance {when},"
        f" in {_plural(len(features), 'feature')}: {_names(features)}."
    )


def compare(store: Store, now: datetime) -> str:
    several = {f: vs for f, vs in reports.known_versions(store).items() if len(vs) > 1}
    if not several:
        return "No feature has more than one prompt version to compare yet."
    listed = [f"{_name(f)} ({_plural(len(vs), 'version')})" for f, vs in several.items()]
    return (
        f"{_plural(len(several), 'feature has', 'features have')} several prompt versions to"
        f" compare: {_names(listed)}."
    )


def spikes(store: Store, now: datetime) -> str:
    period = Period.ending(SPIKES_DAYS, now.date())
    r = reports.spikes_report(store, period)
    if not r.sessions:
        return f"No sessions in {_days(period.days)}."
    top = r.sessions[0]
    users = {o.user_id for o in r.outliers}
    far = f"{_plural(len(users), 'user')} far above their peers" if users else "no user far above their peers"
    return (
        f"The costliest session of {_days(period.days)} cost {_usd(top.cost_usd)} over"
        f" {_plural(top.calls, 'turn')}; {far}."
    )


# Each report's headline, by the report's name; cheapest first (a list computing them in
# turn shows the quick ones soonest): drift reads the kept calls of five weeks.
HEADLINES: dict[str, Callable[[Store, datetime], str]] = {
    "errors": errors,
    "cost": cost,
    "spikes": spikes,
    "compare": compare,
    "drift": drift,
}


def headline(store: Store, name: str, now: datetime | None = None) -> str:
    """Report `name`'s headline as of `now` (default: the present)."""
    return HEADLINES[name](store, now or datetime.now(UTC))
