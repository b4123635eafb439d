"""Alerts: the findings (`llmlog.analysis.findings`) and the rules people write, posted to
webhooks once when they appear, and again only after they cleared and came back.

`notify(store, findings)` is one round: `llmlog serve` runs it on a schedule (`Schedule`), off
the request path; `llmlog check --notify` and `llmlog alerts run` once, for a cron job. A round

- takes the store's lease (`Store.take_alert_lease`), so that of the servers and cron jobs
  sharing a store one runs at a time; a round that finds it held does nothing (`Round.busy`):
  the holder is posting what it found;
- runs each rule, a read-only query (as the SQL console runs one: `Store.query`, within a
  time limit) that gives one number, compared with a threshold; a rule that trips is a
  finding of kind "rule", one whose query fails is reported (`RuleRun.problem`), neither
  opened nor cleared;
- keeps each finding's state by its key (`Finding.key`): a key not open before opens, one
  open before and not found now clears, each written to the history;
- posts each open finding to each webhook that has not had it (`_deliver`): a delivery that
  fails is recorded and tried again in a later round (after 1, 2, 4 … minutes, an hour at
  most, for every finding waiting for that webhook), never raised.

What is posted is the finding's sentence, its figures and a link (`llmlog.analysis.webhooks`).
Configuration (the webhooks, the rules, the link base) is a setting of the store's (`alerts`),
private as every setting is: a Slack webhook's URL is a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import operator
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from llmlog.analysis import findings as findings_module
from llmlog.analysis import webhooks
from llmlog.analysis.findings import Finding
from llmlog.analysis.webhooks import (
    TIMEOUT_S,
    Webhook,
    check_name,
    check_url,
    figures,
    link,
    payload,
    post,
)
from llmlog.core.logs import recording_log
from llmlog.store import ReadOnlyError, Store
from llmlog.store.alerts import Alert, AlertEvent, Delivery, history_start
from llmlog.store.readonly import too_large

log = recording_log()  # never raises: a handler of the app's cannot stop it

SETTING = "alerts"  # {"webhooks": [...], "rules": [...], "link_base": "https://…" | None}
RULE_TIMEOUT_S = 10.0  # each rule's query
RULE_MAX_BYTES = 2**16
TOO_LARGE = f"its query returned a value past {RULE_MAX_BYTES:,} bytes, not one number"
LEASE_S = 120.0  # renewed before each rule and each post, which take TIMEOUT_S at most
POSTS_PER_ROUND = 100  # to one webhook: what is left waits for the next round
# A rule is what someone asked to hear of: ranked ahead of what llmlog finds itself.
RULE_SCORE = 1000.0
# How a rule compares its number with its threshold, and how a sentence says it.
OPERATORS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    ">": (operator.gt, "above"),
    ">=": (operator.ge, "at or above"),
    "<": (operator.lt, "below"),
    "<=": (operator.le, "at or below"),
    "==": (operator.eq, "equal to"),
    "!=": (operator.ne, "not equal to"),
}
SQL_MAX = 10_000
KEY_MAX = 256  # a finding's key, as its state is kept (`state_key`)
SENTENCE_KEPT = 2000  # of a finding's sentence, in its state and the history


@dataclass(frozen=True)
class Rule:
    """A query that gives one number, and when that number is a finding."""

    name: str
    sql: str
    op: str
    threshold: float

    def __post_init__(self) -> None:
        check_name(self.name, "rule")
        if not self.sql.strip() or len(self.sql) > SQL_MAX:
            raise ValueError(f"rule {self.name}: a query of 1 to {SQL_MAX:,} characters")
        if self.op not in OPERATORS:
            raise ValueError(f"rule {self.name}: a comparison among {' '.join(OPERATORS)}, not {self.op!r}")
        if not isinstance(self.threshold, int | float) or not math.isfinite(self.threshold):
            raise ValueError(f"rule {self.name}: a threshold that is a number, not {self.threshold!r}")

    @property
    def key(self) -> str:
        return rule_key(self.name)

    @property
    def condition(self) -> str:
        return f"{self.op} {self.threshold:g}"

    def trips(self, value: float) -> bool:
        return OPERATORS[self.op][0](value, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sql": self.sql, "op": self.op, "threshold": self.threshold}

    @classmethod
    def from_json(cls, value: Any) -> Rule:
        return cls(str(value["name"]), str(value["sql"]), str(value["op"]), float(value["threshold"]))


def rule_key(name: str) -> str:
    return f"rule:{name}"


@dataclass
class Config:
    webhooks: list[Webhook] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    link_base: str | None = None  # where the UI is reached, for the links posted

    @property
    def empty(self) -> bool:
        return not self.webhooks and not self.rules

    def to_json(self) -> dict[str, Any]:
        return {
            "webhooks": [w.to_json() for w in self.webhooks],
            "rules": [r.to_json() for r in self.rules],
            "link_base": self.link_base,
        }

    @classmethod
    def from_json(cls, value: Any) -> Config:
        if not isinstance(value, dict):
            return cls()
        return cls(
            [Webhook.from_json(w) for w in value.get("webhooks") or []],
            [Rule.from_json(r) for r in value.get("rules") or []],
            value.get("link_base") or None,
        )


def config(store: Store) -> Config:
    return Config.from_json(store.setting(SETTING))


def _save(store: Store, cfg: Config) -> None:
    store.set_setting(SETTING, cfg.to_json())


def add_webhook(store: Store, webhook: Webhook) -> None:
    cfg = config(store)
    if any(w.name == webhook.name for w in cfg.webhooks):
        raise ValueError(f"there is a webhook {webhook.name!r} already")
    cfg.webhooks.append(webhook)
    _save(store, cfg)


def remove_webhook(store: Store, name: str) -> bool:
    cfg = config(store)
    kept = [w for w in cfg.webhooks if w.name != name]
    if len(kept) == len(cfg.webhooks):
        return False
    cfg.webhooks = kept
    _save(store, cfg)
    return True


def add_rule(store: Store, rule: Rule) -> None:
    cfg = config(store)
    if any(r.name == rule.name for r in cfg.rules):
        raise ValueError(f"there is a rule {rule.name!r} already")
    cfg.rules.append(rule)
    _save(store, cfg)


def remove_rule(store: Store, name: str) -> bool:
    cfg = config(store)
    kept = [r for r in cfg.rules if r.name != name]
    if len(kept) == len(cfg.rules):
        return False
    cfg.rules = kept
    _save(store, cfg)
    return True


def set_link_base(store: Store, url: str | None) -> None:
    cfg = config(store)
    cfg.link_base = check_url(url, "the link base").rstrip("/") if url else None
    _save(store, cfg)


# ---------------------------------------------------------------------------- rules


@dataclass
class RuleRun:
    """A rule's query run once: its number, or why there is none."""

    rule: Rule
    value: float | None = None
    # Why there is no number, in a fixed form (kept and shown on the alerts page); `detail`
    # is what the engine said, which may quote what the query read: for the terminal only.
    problem: str | None = None
    detail: str = ""

    @property
    def tripped(self) -> bool:
        return self.value is not None and self.rule.trips(self.value)

    def finding(self) -> Finding:
        assert self.value is not None
        r = self.rule
        said = OPERATORS[r.op][1]
        return Finding(
            kind="rule",
            key=r.key,
            score=RULE_SCORE,
            sentence=f"Rule {r.name}: its query gives {self.value:,.6g}, {said} {r.threshold:,.6g}.",
            numbers={"value": self.value, "threshold": r.threshold},
        )


def run_rule(store: Store, rule: Rule, timeout_s: float = RULE_TIMEOUT_S) -> RuleRun:
    """Run a rule's query as the SQL console runs a person's (it may only read the calls),
    within `timeout_s`; it must give one row of one number. Never raises for the query."""
    try:
        result = store.query(rule.sql, timeout_s=timeout_s, limit=1, max_bytes=RULE_MAX_BYTES)
    except ReadOnlyError as exc:
        if "took longer" in str(exc):
            return RuleRun(rule, problem=f"its query took longer than {timeout_s:g} s", detail=str(exc))
        if str(exc) == too_large(RULE_MAX_BYTES):
            return RuleRun(rule, problem=TOO_LARGE)
        return RuleRun(rule, problem="its query was refused or failed", detail=str(exc))
    except Exception as exc:  # the store's own failure, say: reported as the rule's
        return RuleRun(rule, problem="its query was refused or failed", detail=f"{type(exc).__name__}: {exc}")
    if result.note is not None:  # stopped at the size limit (some stores say so in a note)
        return RuleRun(rule, problem=TOO_LARGE)
    if not result.rows:
        return RuleRun(rule, problem="its query returned no rows, not one number")
    if result.truncated:
        return RuleRun(rule, problem="its query returned more than one row, not one number")
    row = result.rows[0]
    if len(row) != 1:
        return RuleRun(rule, problem=f"its query returned {len(row)} columns, not one number")
    value = row[0]
    if value is None:
        return RuleRun(rule, problem="its query returned NULL, not a number")
    if isinstance(value, str):
        return RuleRun(rule, problem="its query returned text, not a number")
    if not isinstance(value, int | float):
        return RuleRun(rule, problem=f"its query returned {type(value).__name__}, not a number")
    try:
        # A whole number past a float's range (PostgreSQL's numeric has any size) overflows.
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        return RuleRun(rule, problem="its query returned a number that is not finite")
    return RuleRun(rule, number)


# ---------------------------------------------------------------------------- a round


@dataclass
class Round:
    """What one round did."""

    busy: bool = False  # another evaluator held the lease: this one did nothing
    findings: list[Finding] = field(default_factory=list)  # ranked, the rules' that tripped among them
    opened: list[str] = field(default_factory=list)  # keys
    cleared: list[str] = field(default_factory=list)
    posted: list[tuple[str, str]] = field(default_factory=list)  # (key, webhook)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (webhook, what went wrong)
    rules: list[RuleRun] = field(default_factory=list)
    lost_lease: bool = False  # another evaluator took the lease mid-round: posting stopped

    @property
    def problems(self) -> list[RuleRun]:
        return [r for r in self.rules if r.problem is not None]

    def summary(self) -> str:
        """One line, for a terminal."""
        if self.busy:
            return "another server or job is evaluating the alerts of this store now; nothing done"
        parts = [
            f"{len(self.opened)} new finding(s)",
            f"{len(self.cleared)} cleared",
            f"{len(self.posted)} post(s)",
        ]
        if self.failed:
            said = "; ".join(f"{name}: {problem}" for name, problem in self.failed)
            parts.append(f"{len(self.failed)} delivery failure(s), tried again later ({said})")
        for run in self.problems:
            parts.append(f"rule {run.rule.name}: {run.problem}" + (f" ({run.detail})" if run.detail else ""))
        if self.lost_lease:
            parts.append("another evaluator took over; posting stopped")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "busy": self.busy,
            "opened": self.opened,
            "cleared": self.cleared,
            "posted": [{"key": k, "webhook": w} for k, w in self.posted],
            "failed": [{"webhook": w, "problem": p} for w, p in self.failed],
            "rules": [
                {"name": r.rule.name, "value": r.value, "tripped": r.tripped, "problem": r.problem}
                for r in self.rules
            ],
        }


def holder_name() -> str:
    """Who holds the lease: this host and process, and a round of its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Lease:
    """The store's lease, held for a round: taken, then renewed before each rule and post
    once a quarter of it has gone (each takes a rule's or a post's time limit at most, far
    less than the three quarters left), not at each (a write each)."""

    def __init__(self, store: Store) -> None:
        self.store, self.holder = store, holder_name()
        self._taken = -math.inf

    def keep(self) -> bool:
        """Whether the lease is still this round's (taken again if due)."""
        if time.monotonic() - self._taken < LEASE_S / 4:
            return True
        if not self.store.take_alert_lease(self.holder, LEASE_S):
            return False
        self._taken = time.monotonic()
        return True

    def drop(self) -> None:
        with contextlib.suppress(Exception):  # a lease not dropped expires
            self.store.drop_alert_lease(self.holder)


def notify(
    store: Store,
    findings: Sequence[Finding],
    *,
    now: datetime | None = None,
    unsure: Collection[str] = (),
    rules: bool = True,
    rule_timeout_s: float = RULE_TIMEOUT_S,
    post_timeout_s: float = TIMEOUT_S,
) -> Round:
    """One round (see the module's docstring) over `findings`, which are all there are now
    (`findings.evaluate`): an open finding whose key is not among them clears, unless its
    kind is in `unsure` (kinds whose evaluation failed this time; "*": every kind but the
    rules'). With `rules`, the store's rules are run and the findings of those that trip
    added. Raises only when the store itself fails."""
    now = now or datetime.now(UTC)
    lease = _Lease(store)
    if not lease.keep():
        return Round(busy=True, findings=list(findings))
    try:
        return _round(store, list(findings), now, lease, unsure, rules, rule_timeout_s, post_timeout_s)
    finally:
        lease.drop()


def state_key(key: str) -> str:
    """A finding's key as its state is kept by: as it is, or, past `KEY_MAX` characters (a
    key naming a long feature, say, which no index of PostgreSQL's takes), its start and a
    hash of the whole, the same for the same key."""
    if len(key) <= KEY_MAX:
        return key
    return key[: KEY_MAX - 33] + "…" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _link(f: Finding) -> str:
    if f.evidence:
        with contextlib.suppress(Exception):  # evidence missing a parameter: the findings page
            return f.evidence[0].path
    return "/alerts" if f.kind == "rule" else "/findings"


def _round(
    store: Store,
    given: list[Finding],
    now: datetime,
    lease: _Lease,
    unsure: Collection[str],
    rules: bool,
    rule_timeout_s: float,
    post_timeout_s: float,
) -> Round:
    cfg = config(store)
    done = Round()
    found: dict[str, Finding] = {}
    for f in given:
        found.setdefault(state_key(f.key), f)
    ran: set[str] = set()  # keys of the rules whose query gave a number
    if rules:
        for rule in cfg.rules:
            if not lease.keep():
                done.lost_lease = True
                return done
            run = run_rule(store, rule, rule_timeout_s)
            done.rules.append(run)
            if run.problem is None:
                ran.add(rule.key)
                if run.tripped:
                    found.setdefault(rule.key, run.finding())
    done.findings = sorted(found.values(), key=lambda f: -f.score)
    configured = {r.key for r in cfg.rules}

    states = {a.key: a for a in store.alerts()}
    changed: dict[str, Alert] = {}
    events: list[AlertEvent] = []
    for key, f in found.items():
        numbers = figures(f.numbers)  # a name among them stays out of the state, as out of posts
        said = f.sentence[:SENTENCE_KEPT]
        a = states.get(key)
        if a is None or not a.open:
            a = Alert(key, f.kind, "open", now, now, None, said, numbers, _link(f), {},
                      a.problem if a is not None else None)  # fmt: skip
            events.append(AlertEvent(now, key, f.kind, "opened", None, said))
            done.opened.append(key)
        else:  # still open: its figures as they are now, its deliveries as they were
            a.seen, a.sentence, a.numbers, a.link = now, said, numbers, _link(f)
        states[key] = changed[key] = a
    if rules:
        for run in done.rules:
            key = run.rule.key
            a = states.get(key) or Alert(key, "rule", status="cleared")
            if run.problem != a.problem:
                event = "rule_failed" if run.problem else "rule_recovered"
                events.append(AlertEvent(now, key, "rule", event, None, run.problem or ""))
                a.problem = run.problem
                states[key] = changed[key] = a
        for key, a in states.items():
            if a.kind == "rule" and a.problem and key not in configured:  # the rule is gone
                a.problem = None
                changed[key] = a
    for key, a in states.items():
        if key in found or not a.open:
            continue
        if a.kind == "rule":
            if not rules or (key in configured and key not in ran):
                continue  # its query gave no number this time: neither found nor cleared
        elif "*" in unsure or a.kind in unsure:
            continue
        a.status, a.cleared, a.deliveries = "cleared", now, {}
        events.append(AlertEvent(now, key, a.kind, "cleared", None, a.sentence))
        done.cleared.append(key)
        changed[key] = a
    store.save_alerts(list(changed.values()))
    store.add_alert_events(events)
    _deliver(store, cfg, [a for a in states.values() if a.open], now, lease, post_timeout_s, done)
    store.forget_alerts(history_start(now))
    return done


def retry_after(failures: int) -> timedelta:
    """How long a webhook that failed `failures` times in a row is left before the next try."""
    return timedelta(minutes=min(2 ** (min(failures, 8) - 1), 60))


def _deliver(
    store: Store, cfg: Config, open_alerts: list[Alert], now: datetime, lease: _Lease, timeout_s: float,
    done: Round,
) -> None:  # fmt: skip
    """Post each open alert to each webhook that has not had it, oldest first. A webhook that
    fails is tried no more this round: every alert waiting for it waits `retry_after` its
    failures so far; one that answers again takes what waited for it at once."""
    open_alerts = sorted(open_alerts, key=lambda a: (a.opened or now, a.key))
    if not cfg.webhooks or not open_alerts:
        return
    with webhooks.client(timeout_s) as http:
        for webhook in cfg.webhooks:
            held = _deliver_to(store, webhook, cfg.link_base, open_alerts, now, lease, timeout_s, http, done)
            if not held:
                return


def _deliver_to(
    store: Store, webhook: Webhook, base: str | None, open_alerts: list[Alert], now: datetime, lease: _Lease,
    timeout_s: float, http: webhooks.Client, done: Round,
) -> bool:  # fmt: skip
    """`_deliver` to one webhook; False when the lease was lost (posting stops)."""
    waiting = [a for a in open_alerts if a.deliveries.get(webhook.name, Delivery()).sent is None]
    answered, tries = False, 0
    for a in waiting:
        d = a.deliveries.get(webhook.name, Delivery())
        if not answered and d.retry is not None and d.retry > now:
            continue
        if tries == POSTS_PER_ROUND:
            break
        if not lease.keep():
            done.lost_lease = True
            return False
        tries += 1
        problem = post(webhook, payload(webhook.format, a, link(base, a.link)), timeout_s, http)
        if problem is None:
            answered = True
            a.deliveries[webhook.name] = Delivery(sent=now)
            store.save_alerts([a])
            store.add_alert_events([AlertEvent(now, a.key, a.kind, "posted", webhook.name, "")])
            done.posted.append((a.key, webhook.name))
            continue
        left = [w for w in waiting if w.deliveries.get(webhook.name, Delivery()).sent is None]
        failures = 1 + max(w.deliveries.get(webhook.name, Delivery()).failures for w in left)
        for w in left:
            w.deliveries[webhook.name] = Delivery(None, failures, now + retry_after(failures), problem)
        store.save_alerts(left)
        detail = f"{problem} ({len(left)} waiting for it)"
        store.add_alert_events([AlertEvent(now, a.key, a.kind, "failed", webhook.name, detail)])
        done.failed.append((webhook.name, problem))
        break
    return True


# ---------------------------------------------------------------------------- the schedule


def evaluate_findings(store: Store) -> tuple[list[Finding], tuple[str, ...]]:
    """The findings now, for a round: with the kinds that could not be evaluated, which
    `notify` must not clear ("*": any). Findings that fail are logged, and the round goes on
    with the rules."""
    try:
        ev = findings_module.evaluation(store)
        return ev.findings, ev.unsure
    except Exception as exc:
        log.warning("llmlog: the findings could not be evaluated (%s: %s); the rules only this round",
                    type(exc).__name__, exc)  # fmt: skip
        return [], ("*",)


class Schedule:
    """`llmlog serve`'s alerts: a round every `every_s` (the first `first_s` after start), in
    a thread of its own, on a store of its own opened for each round; one round at a time.
    Nothing is evaluated while the store has neither webhooks nor rules. A round that fails
    is logged and the next one runs at its time: the server never stops for it.
    `evaluate` gives the findings and the kinds it could not evaluate (`evaluate_findings`)."""

    def __init__(
        self,
        open_store: Callable[[], Store],
        every_s: float = 300.0,
        first_s: float | None = None,
        evaluate: Callable[[Store], tuple[list[Finding], Collection[str]]] = evaluate_findings,
    ) -> None:
        self._open, self.every_s, self._evaluate = open_store, every_s, evaluate
        self.first_s = min(every_s, 30.0) if first_s is None else first_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llmlog-alerts", daemon=True)
        self.rounds = 0  # rounds ended, well or not
        self.last: Round | None = None
        self._ended = threading.Condition()

    def start(self) -> Schedule:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_rounds(self, n: int, timeout_s: float) -> bool:
        """Wait until `n` rounds have ended (tests, and whoever watches the schedule)."""
        with self._ended:
            return self._ended.wait_for(lambda: self.rounds >= n, timeout_s)

    def _loop(self) -> None:
        wait = self.first_s
        while not self._stop.wait(wait):
            wait = self.every_s
            try:
                self.last = self.run_once()
            except Exception:
                log.exception("llmlog: an alerts round failed; the next in %g s", self.every_s)
            with self._ended:
                self.rounds += 1
                self._ended.notify_all()

    def run_once(self) -> Round | None:
        store = self._open()
        try:
            if config(store).empty:
                return None
            found, unsure = self._evaluate(store)
            done = notify(store, found, unsure=unsure)
        finally:
            store.close()
        # Said in the server's log too, as in the history (a rule failing is said there and on
        # the alerts page, once, not here at every round).
        for name, problem in done.failed:
            log.warning("llmlog: alerts: the webhook %s failed (%s); tried again later", name, problem)
        return done
