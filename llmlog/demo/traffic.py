"""`llmlog demo`: realistic traffic through the real SDKs, recorded by `llmlog.wrap`.

A seeded mix of the features teams actually ship — a support bot with tools and long
conversations, a code reviewer, a summarizer, a research agent on the Responses API, an SQL
assistant — against the local fake provider, so the store holds the shapes real traffic
has: multi-KB system prompts re-sent on every turn, tool calls and results, streams, cache
reads and writes, a few errors, several prompt versions.

The agents' requests are traced as an app traces them, with `llmlog.span` and
`@llmlog.trace`: a root span per request, named for it (`support-bot.reply`, one per user
turn; `research-agent.run`; `sql-assistant.answer`), and inside it the steps that are not
model calls — the context retrieved first, each tool the model asks for (a span named for the
tool; now and then one raises, failing its span, and the model is told), the answer formatted
last — with the wrapped model calls between them joining the tree by themselves. A model call
that fails fails its request's span. The single-call features (code review, summaries) are
left untraced, as an app would leave them: one call is its own record, latency included, and
a span around it would say nothing more; so the store holds, as most do, calls in no trace
beside the traced ones.

Planted for the reports to find (`llmlog report …`, the UI's Reports):
- code-review@v2, rolled out three days ago, answers three times as long as v1 (the silent
  "the model started writing essays" regression): drift flags code-review's output tokens
  and cost per call; `report compare code-review v1 v2` shows why;
- support-bot@v4 declines about one request in twelve; v3 hardly ever;
- one user, user_013, sees a third of their calls fail;
- summarize sends some short summaries to the most expensive model (over-routing).
"""

from __future__ import annotations

import dataclasses
import html
import json
import random
import re
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

import llmlog
from llmlog.core.config import Settings, default_db
from llmlog.core.filters import CallFilter
from llmlog.core.prompts import natural
from llmlog.core.record import Call, Span
from llmlog.demo.fake_provider import FakeProvider
from llmlog.demo.workload import WORDS, feature_prompts, tool
from llmlog.demo.workload import prose as _prose
from llmlog.store import open_store, redact_url

# The planted findings (see the module's docstring). The two prompt versions do what their
# words ask of the fake provider (`llmlog.demo.fake_provider`: "in depth", "decline requests"),
# so an experiment that tries one on the other's calls sees the same change.
VERBOSE_VERSION = "code-review@v2"
VERBOSE_SINCE_DAYS = 3  # its rollout: no call of it is older
STEERING = {
    ("code-review", "v2"): "Explain every finding in depth: its background, its risk, a fix.",
    ("support-bot", "v4"): "Decline requests that are not about an order or an account.",
}
BROKEN_USER = "user_013"
BROKEN_USER_FAILS = 0.33

# How often a tool the agents call fails (raises inside its span).
TOOL_FAILS = 0.06


class ToolError(Exception):
    """A tool the model asked for failed: the app tells the model, as agents do."""


def tool_output(rng: random.Random, name: str, args: dict[str, Any]) -> str:
    """What a tool of the demo's agents gives back, after the time it takes (a few ms, as
    a service nearby answers); now and then it raises instead."""
    fails = rng.random() < TOOL_FAILS
    if name == "web_search":
        time.sleep(rng.uniform(3, 10) / 1000)
        if fails:
            raise TimeoutError("the search service did not answer within 10 s")
        pages = [(rng.choice(WORDS), rng.choice(WORDS), _prose(rng, 12)) for _ in range(3)]
        return json.dumps([{"url": f"https://{a}.example/{b}", "snippet": text} for a, b, text in pages])
    if name == "read_page":
        time.sleep(rng.uniform(2, 6) / 1000)
        if fails:
            raise ToolError(f"{args.get('url', 'the page')}: 403 Forbidden")
        return _prose(rng, 30)
    if name == "run_sql":
        time.sleep(rng.uniform(2, 6) / 1000)
        if fails:
            raise ToolError(f'relation "{rng.choice(WORDS)}_events" does not exist')
        return json.dumps([{"count": rng.randint(0, 9999)}])
    # The support bot's: lookup_order, issue_refund, escalate.
    time.sleep(rng.uniform(1, 4) / 1000)
    if fails:
        raise ToolError(f"no order {args.get('order_id', '')!r}")
    return json.dumps({"status": "ok", "note": _prose(rng, 8)})


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def with_context(text: str, docs: list[str]) -> str:
    """The user's text with what was retrieved for it, as a retrieval-augmented prompt has it."""
    return f"{text}\n\nContext:\n" + "\n".join(f"- {d}" for d in docs) if docs else text


@llmlog.trace(name="format-answer")
def format_answer(text: str) -> str:
    """The model's answer as the app shows it: paragraphs as HTML, escaped."""
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


@dataclass
class Demo:
    fake: FakeProvider
    rng: random.Random
    budget: int
    made: int = 0
    errors: int = 0
    local: threading.local = field(default_factory=threading.local)  # the worker's current user

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.anthropic = llmlog.wrap(
            anthropic.Anthropic(
                api_key="demo", base_url=self.fake.anthropic_base_url, max_retries=0, timeout=5
            )
        )
        self.openai = llmlog.wrap(
            openai.OpenAI(api_key="demo", base_url=self.fake.openai_base_url, max_retries=0, timeout=5)
        )
        rng = random.Random(self.rng.random())
        self.prompts = feature_prompts(rng)
        for version, line in STEERING.items():
            self.prompts[version] += f"\n{line}\n"
        self.support_tools = [
            tool("lookup_order", {"order_id": "string"}),
            tool("issue_refund", {"order_id": "string", "amount": "number", "reason": "string"}),
            tool("escalate", {"summary": "string", "priority": "string"}),
        ]
        # In each API's shape, as built by `tool`; the SDKs type them as their own TypedDicts.
        self.agent_tools: list[Any] = [
            tool(n, p, "responses")
            for n, p in [("web_search", {"query": "string"}), ("read_page", {"url": "string"})]
        ]
        self.sql_tools: list[Any] = [tool("run_sql", {"sql": "string"}, "chat")]
        self.users = [f"user_{i:03d}" for i in range(60)]
        # What the agents retrieve from: help-center articles, past research notes, table
        # docs; each document with the words it is found by.
        self.indexes: dict[str, list[tuple[str, frozenset[str]]]] = {}
        for index in ("help-center", "research-notes", "table-docs"):
            docs = [f"{index}/{i}: {_prose(rng, 6)}" for i in range(50)]
            self.indexes[index] = [(doc, frozenset(_words(doc))) for doc in docs]

    def take(self) -> bool:
        with self.lock:
            if self.made >= self.budget:
                return False
            self.made += 1
            return True

    def headers(self, rng: random.Random) -> dict[str, str]:
        h = {
            "x-fake-latency-ms": str(rng.randint(5, 60)),
            "x-fake-first-token-ms": str(rng.randint(3, 25)),
            "x-fake-chunk-ms": "0",
        }
        failing = BROKEN_USER_FAILS if getattr(self.local, "user", None) == BROKEN_USER else 0.02
        if rng.random() < failing:
            h["x-fake-fail"] = rng.choice(["429", "500", "529", "429", "drop"])
        return h

    def guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (anthropic.APIError, openai.APIError):
            with self.lock:
                self.errors += 1
            return None

    # ------------------------------------------------------------ the agents' own steps

    def retrieve(self, rng: random.Random, index: str, query: str, k: int = 4) -> list[str]:
        """What the app looks up before it asks the model (a vector search, say), in a span of
        its own: the `k` documents of `index` sharing the most words with `query`."""
        with llmlog.span("retrieve-context", index=index, k=k) as span:
            time.sleep(rng.uniform(1, 4) / 1000)  # the search service's round trip
            words = set(_words(query))
            scored = sorted(((len(words & terms), doc) for doc, terms in self.indexes[index]), reverse=True)
            hits = [doc for score, doc in scored[:k] if score]
            span.set(hits=len(hits))
            return hits

    def run_tool(self, rng: random.Random, name: str, call_id: str, arguments: Any) -> tuple[str, bool]:
        """Run the tool the model asked for in a span named for it: its output, and whether
        it failed. A tool fails now and then, raising inside its span (which marks the span
        failed); the app catches it there and tells the model, as agents do."""
        try:
            with llmlog.span(name, call_id=call_id, arguments=arguments) as span:
                output = tool_output(rng, name, arguments if isinstance(arguments, dict) else {})
                span.set(output_chars=len(output))
                return output, False
        except (ToolError, TimeoutError) as exc:
            return json.dumps({"error": f"{type(exc).__name__}: {exc}"}), True

    # ------------------------------------------------------------ features

    def _support_call(self, rng: random.Random, version: str, messages: list[dict[str, Any]]) -> Any:
        system = [
            {
                "type": "text",
                "text": self.prompts[("support-bot", version)],
                "cache_control": {"type": "ephemeral"},
            }
        ]
        kwargs: dict[str, Any] = dict(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            system=system,
            tools=self.support_tools,
            messages=messages,
            extra_headers=self.headers(rng),
        )
        if rng.random() < 0.5:
            with self.anthropic.messages.stream(**kwargs) as s:
                return s.get_final_message()
        return self.anthropic.messages.create(**kwargs)

    def support_sessions(self, rng: random.Random) -> None:
        """Two conversations of one length, one on each prompt version, served turn by turn
        as a server serves two at once: an A/B split stratified by length. The heavy tail of
        lengths, which drives what a call costs, then falls on both versions alike, even
        where the demo's budget cuts them short, and comparing the versions shows what the
        version did (support-bot@v4's refusals) rather than which drew the long sessions."""
        turns = min(int(rng.paretovariate(1.2)), 40)
        versions = ["v3", "v4"]
        rng.shuffle(versions)
        sessions = [(v, f"sess_{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}") for v in versions]
        conversations: dict[str, list[dict[str, Any]]] = {v: [] for v in versions}
        for turn in range(1, turns + 1):
            for version, session_id in sessions:
                if not self.take():
                    return
                question = _prose(rng, rng.randint(6, 40))
                with llmlog.context(session_id=session_id, prompt_template_version=f"support-bot@{version}"):
                    answered = self.guarded(
                        self.support_reply, rng, version, conversations[version], question, turn
                    )
                if answered is not None:  # a turn that failed is left out: the user asks anew
                    conversations[version] = answered

    def support_reply(
        self, rng: random.Random, version: str, messages: list[dict[str, Any]], question: str, turn: int
    ) -> list[dict[str, Any]]:
        """One user turn, served as a traced request: the help center searched, the model
        asked, the tools it asks for run and the model asked again, the answer formatted.
        Its first model call is counted already (`take`). Returns the conversation with the
        turn in it; a model call that fails raises out of it, failing the request's span."""
        with llmlog.span("support-bot.reply", turn=turn):
            articles = self.retrieve(rng, "help-center", question)
            this_turn: list[dict[str, Any]] = [{"role": "user", "content": with_context(question, articles)}]
            while True:
                msg = self._support_call(rng, version, [*messages, *this_turn])
                content = [b.model_dump(exclude_none=True) for b in msg.content]
                this_turn = [*this_turn, {"role": "assistant", "content": content}]
                uses = [b for b in msg.content if b.type == "tool_use"]
                if not uses:
                    format_answer("\n\n".join(b.text for b in msg.content if b.type == "text"))
                    break
                results: list[dict[str, Any]] = []
                for u in uses:
                    output, failed = self.run_tool(rng, u.name, u.id, u.input)
                    result = {"type": "tool_result", "tool_use_id": u.id, "content": output}
                    results.append({**result, "is_error": True} if failed else result)
                this_turn = [*this_turn, {"role": "user", "content": results}]
                if not self.take():
                    break
            # The articles were for this turn: the conversation keeps the question alone.
            return [*messages, {"role": "user", "content": question}, *this_turn[1:]]

    def code_review(self, rng: random.Random) -> None:
        if not self.take():
            return
        version = rng.choice(["v1", "v2"])
        diff = "\n".join(f"+    {_prose(rng, 8)}" for _ in range(rng.randint(10, 80)))
        with llmlog.context(prompt_template_version=f"code-review@{version}"):
            stream = rng.random() < 0.5
            kwargs: dict[str, Any] = dict(
                model=rng.choice(["gpt-4.1", "gpt-4.1-mini"]),
                messages=[
                    {"role": "system", "content": self.prompts[("code-review", version)]},
                    {"role": "user", "content": f"Review this diff:\n{diff}"},
                ],
                extra_headers=self.headers(rng),
            )
            if stream:

                def call() -> Any:
                    for _ in self.openai.chat.completions.create(
                        stream=True, stream_options={"include_usage": True}, **kwargs
                    ):
                        pass
            else:

                def call() -> Any:
                    return self.openai.chat.completions.create(**kwargs)

            self.guarded(call)

    def summarize(self, rng: random.Random) -> None:
        if not self.take():
            return
        doc = "\n\n".join(_prose(rng, rng.randint(40, 120)) for _ in range(rng.randint(3, 15)))
        # The over-routing pattern: some short summaries go to the most expensive model.
        model = "claude-opus-4-7" if rng.random() < 0.15 else "claude-haiku-4-5"
        with llmlog.context(prompt_template_version="summarize@v7"):
            self.guarded(
                lambda: self.anthropic.messages.create(
                    model=model,
                    max_tokens=300,
                    system=self.prompts[("summarize", "v7")],
                    messages=[{"role": "user", "content": doc}],
                    extra_headers=self.headers(rng),
                )
            )

    def research_agent(self, rng: random.Random) -> None:
        version = rng.choice(["v1", "v2"])
        topic = _prose(rng, 12)
        with llmlog.context(
            session_id=f"agent_{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
            prompt_template_version=f"research-agent@{version}",
        ):
            if self.take():
                self.guarded(self.research, rng, version, topic, rng.randint(1, 6))

    def research(self, rng: random.Random, version: str, topic: str, max_steps: int) -> None:
        """A research run as a traced request: past notes retrieved, then the model and the
        tools it asks for in turn, for at most `max_steps` model calls (the first counted
        already), the report formatted at the end."""
        with llmlog.span("research-agent.run", max_steps=max_steps) as run:
            notes = self.retrieve(rng, "research-notes", topic)
            items: list[Any] = [{"role": "user", "content": with_context(f"Research: {topic}", notes)}]
            for step in range(max_steps):
                if step and not self.take():
                    return
                resp = self.openai.responses.create(
                    model="gpt-5-mini",
                    instructions=self.prompts[("research-agent", version)],
                    input=items,
                    tools=self.agent_tools,
                    extra_headers=self.headers(rng),
                )
                calls = [o for o in resp.output if o.type == "function_call"]
                if not calls:
                    format_answer(resp.output_text)
                    return
                for fc in calls:
                    output, _ = self.run_tool(rng, fc.name, fc.call_id, json.loads(fc.arguments))
                    items = [
                        *items,
                        {
                            "type": "function_call",
                            "call_id": fc.call_id,
                            "name": fc.name,
                            "arguments": fc.arguments,
                        },
                        {"type": "function_call_output", "call_id": fc.call_id, "output": output},
                    ]
            run.set(stopped="max_steps")  # out of steps with tools still asked for: no report

    def sql_assistant(self, rng: random.Random) -> None:
        question = f"How many {rng.choice(WORDS)} rows last week?"
        with llmlog.context(prompt_template_version="sql-assistant@v2"):
            if self.take():
                self.guarded(self.sql_answer, rng, question)

    def sql_answer(self, rng: random.Random, question: str) -> None:
        """A question answered as a traced request: the tables' docs retrieved, then the model
        and the queries it asks to run, for at most three model calls (the first counted
        already), the answer formatted at the end."""
        with llmlog.span("sql-assistant.answer", question=question):
            tables = self.retrieve(rng, "table-docs", question, k=3)
            messages: list[Any] = [
                {"role": "system", "content": self.prompts[("sql-assistant", "v2")]},
                {"role": "user", "content": with_context(question, tables)},
            ]
            for step in range(3):
                if step and not self.take():
                    return
                resp = self.openai.chat.completions.create(
                    model="gpt-4.1-mini",
                    messages=messages,
                    tools=self.sql_tools,
                    extra_headers=self.headers(rng),
                )
                msg = resp.choices[0].message
                if not msg.tool_calls:
                    format_answer(msg.content or "")
                    return
                messages = [*messages, msg.model_dump(exclude_none=True)]
                for tc in msg.tool_calls:
                    if tc.type != "function":  # only functions are offered
                        continue
                    fn = tc.function
                    output, _ = self.run_tool(rng, fn.name, tc.id, json.loads(fn.arguments))
                    messages = [*messages, {"role": "tool", "tool_call_id": tc.id, "content": output}]

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        features = [
            ("support-bot", self.support_sessions, 2.5),  # half the weight: two sessions each
            ("code-review", self.code_review, 3),
            ("summarize", self.summarize, 3),
            ("research-agent", self.research_agent, 2),
            ("sql-assistant", self.sql_assistant, 2),
        ]
        while self.made < self.budget:
            feature, fn, _ = rng.choices(features, weights=[w for *_, w in features])[0]
            user = rng.choice(self.users[: 20 if rng.random() < 0.6 else 60])
            self.local.user = user
            tier = "enterprise" if int(user[-3:]) % 3 == 0 else "free"
            with llmlog.context(feature=feature, user_id=user, metadata={"tier": tier}, tags=["demo"]):
                fn(rng)


def add_history(url: str, since: datetime, days: int, rng: random.Random) -> int:
    """Copy the sessions recorded since `since` into each of the `days` days before, a
    random third of them per day, with new ids: the dashboard and the reports have a month
    to show. Copies are tagged `history`. No copy of VERBOSE_VERSION is older than its
    rollout. The spans of the traces a session's calls are in are copied with them, under
    new trace and span ids, shifted as the calls are, so that each copied trace is a whole
    tree. Returns how many calls were added."""
    with open_store(url) as store:
        sessions: dict[str, list[Call]] = {}
        for c in store.iter_calls(CallFilter(since=since)):
            # A request outside any session (the SQL assistant's) keeps its calls together
            # by its trace: copied apart, they would leave its tree in pieces.
            sessions.setdefault(c.session_id or c.trace_id or c.id, []).append(c)
        spans: dict[str, list[Span]] = {}
        for s in store.traces([c.trace_id for calls in sessions.values() for c in calls if c.trace_id]):
            spans.setdefault(s.trace_id, []).append(s)
        added = 0
        for day in range(1, days + 1):
            batch: list[Call] = []
            span_batch: list[Span] = []
            for key, calls in sessions.items():
                if rng.random() > 1 / 3:
                    continue
                shift = timedelta(days=day, seconds=rng.uniform(-3600, 3600))
                session = f"{key}-{day}d" if calls[0].session_id else None
                copy = _Renamed(rng)
                for c in calls:
                    if c.prompt_template_version == VERBOSE_VERSION and day > VERBOSE_SINCE_DAYS:
                        continue
                    batch.append(
                        c.replace(
                            id=copy.call(c.id),
                            timestamp=c.timestamp - shift,
                            session_id=session,
                            tags=[*(c.tags or []), "history"],
                            trace_id=c.trace_id and copy.trace(c.trace_id),
                            parent_id=c.parent_id and copy.span(c.parent_id),
                        )
                    )
                for trace_id in dict.fromkeys(c.trace_id for c in calls if c.trace_id):
                    span_batch += [
                        dataclasses.replace(
                            s,
                            trace_id=copy.trace(s.trace_id),
                            span_id=copy.span(s.span_id),
                            parent_id=s.parent_id and copy.span(s.parent_id),
                            start=s.start - shift,
                            end=None if s.end is None else s.end - shift,
                            call_id=copy.calls.get(s.call_id) if s.call_id else None,
                        )
                        for s in spans.get(trace_id, ())
                    ]
            added += store.insert(batch)
            store.insert_spans(span_batch)
        return added


class _Renamed:
    """The new ids of one copy of a session: each old id given the same new one wherever it
    appears (a span's id and its children's parent_id, a trace's id on its spans and calls)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.calls: dict[str, str] = {}
        self.ids: dict[str, str] = {}

    def call(self, old: str) -> str:
        new = self.calls[old] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return new

    def trace(self, old: str) -> str:
        return self._new(old, 128)

    def span(self, old: str) -> str:
        return self._new(old, 64)

    def _new(self, old: str, bits: int) -> str:
        # Trace ids and span ids differ in length: one map holds both.
        if old not in self.ids:
            self.ids[old] = f"{self.rng.getrandbits(bits):0{bits // 4}x}"
        return self.ids[old]


def write_prompts(texts: dict[tuple[str, str], str], root: Path) -> tuple[list[str], list[str]]:
    """The demo's prompt versions as an app keeps them (`llmlog.core.prompts`): root/NAME/v1.txt,
    …, and `current` naming the newest, so `llmlog prompts list` and `prompts diff` have
    their texts. A prompt whose folder is already there is left as it is (it may be the
    app's own). Returns the prompts written and those left alone."""
    by_name: dict[str, dict[str, str]] = {}
    for (name, version), text in texts.items():
        by_name.setdefault(name, {})[version] = text
    written: list[str] = []
    kept: list[str] = []
    for name, versions in sorted(by_name.items()):
        folder = root / name
        if folder.exists():
            kept.append(name)
            continue
        folder.mkdir(parents=True)
        for version, text in versions.items():
            (folder / f"{version}.txt").write_text(text, encoding="utf-8")
        (folder / "current").write_text(max(versions, key=natural) + "\n", encoding="utf-8")
        written.append(name)
    return written, kept


def run_demo(
    settings: Settings, *, n_calls: int, seed: int, console: Console, threads: int = 8, history_days: int = 30
) -> None:
    llmlog.configure(db=settings.db, on_full="block")
    rng = random.Random(seed)
    started = time.perf_counter()
    since = datetime.now(UTC) - timedelta(seconds=1)
    with FakeProvider(seed=seed) as fake:
        demo = Demo(fake, rng, n_calls)
        with Progress(
            TextColumn("calls through the real SDKs"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            task = progress.add_task("demo", total=n_calls)
            workers = [
                threading.Thread(target=demo.worker, args=(rng.getrandbits(32),)) for _ in range(threads)
            ]
            for w in workers:
                w.start()
            while any(w.is_alive() for w in workers):
                progress.update(task, completed=demo.made)
                time.sleep(0.1)
            progress.update(task, completed=demo.made)
            llmlog.flush()
    stats = llmlog.stats()
    root = Path(settings.prompts)
    try:
        written, kept = write_prompts(demo.prompts, root)
    except OSError as exc:  # a read-only directory, say: the calls are recorded all the same
        written, kept = [], []
        console.print(f"note: the prompt versions could not be written to {root}: {exc}", markup=False)
    with console.status("copying them over the days before"):
        history = add_history(settings.db, since, history_days, random.Random(seed)) if history_days else 0
    copies = f", {history:,} copies over the {history_days} days before (tag: history)" if history else ""
    if written:
        console.print(
            f"Wrote the prompt versions the calls carry to {root}/ ({', '.join(written)}):"
            " llmlog prompts list · llmlog prompts diff code-review v1 v2",
            markup=False,
        )
    if kept:
        console.print(f"Left {', '.join(kept)} in {root}/ as they were", markup=False)
    console.print(
        f"Recorded {stats.recorded} calls ({demo.errors} failed on purpose) in "
        f"{time.perf_counter() - started:.1f}s into {redact_url(settings.db)}{copies}\n"
        f"{next_steps(settings.db)}",
        markup=False,
    )


def next_steps(db: str) -> str:
    """The commands to try next, with the store they read named unless it is the default,
    so that each works when copied (a password shows as ***, as everywhere it is printed)."""
    llmlog_ = "llmlog" if db == default_db() else f"llmlog --db {shlex.quote(redact_url(db))}"
    return (
        f"Next: {llmlog_} serve · {llmlog_} calls · {llmlog_} show <id> · "
        f'{llmlog_} query "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model"'
    )
