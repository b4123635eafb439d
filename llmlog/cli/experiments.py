"""`llmlog experiment`: re-send a sample of a feature's recorded calls with one change (a
model, a system prompt, request parameters), and compare the answers call by call.

Exit status of `run`, `resume` and `show`, for CI: 0 compared and no --fail-if condition met,
1 a condition met, 2 nothing compared (refused, declined, nothing sent or replayed yet).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.table import Table

from llmlog.analysis import reports
from llmlog.analysis.experiments import AGREEMENT, RATES, Comparison, Condition, Metric, Pair, load
from llmlog.cli.core import (
    CliError,
    Ctx,
    as_text,
    cli,
    console,
    err_console,
    fmt_cost,
    fmt_time,
    pass_ctx,
    printable,
    progress_bar,
    since_time,
)
from llmlog.core.record import Call
from llmlog.operations.experiments import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    Change,
    Estimate,
    ExperimentError,
    estimate,
    plan,
    replays,
    run,
)
from llmlog.operations.replay import Providers, error_text
from llmlog.store import ReadOnlyError
from llmlog.store.experiments import Experiment

# Exit statuses (the module's docstring).
MET, NOTHING = 1, 2
MAX_SAMPLE = 100_000
PAIRS_SHOWN = 5


def _param(value: str) -> tuple[str, Any]:
    key, eq, raw = value.partition("=")
    key = key.strip()
    if not eq or not key:
        raise click.BadParameter(f"{value!r} is not KEY=VALUE (temperature=0)", param_hint="--param")
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw  # not JSON: the text as typed (service_tier=flex)
    if isinstance(parsed, float) and not math.isfinite(parsed):
        parsed = raw  # NaN and Infinity are no JSON a provider takes
    return key, parsed


def _params(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in values:
        key, parsed = _param(value)
        out[key] = parsed
    return out


def _conditions(values: tuple[str, ...]) -> list[Condition]:
    out = []
    for text in values:
        try:
            out.append(Condition.parse(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fail-if") from None
    return out


def _budget(click_ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter("a budget is a number of US dollars above 0 (--budget 2.50)")
    return value


def fail_if_option(fn: Any) -> Any:
    return click.option(
        "--fail-if",
        "fail_if",
        multiple=True,
        metavar="COND",
        help="Exit with status 1 when the comparison meets COND (repeatable): METRIC OP VALUE,"
        ' e.g. "refusal_rate > +2pts", "cost_usd > +20%", "output_tokens > +150",'
        ' "similarity < 0.8", "error_rate > 0.05". The metrics: output_tokens, latency_ms,'
        " cost_usd, error_rate, refusal_rate, tool_call_rate, tool_agreement, similarity.",
    )(fn)


def run_options(fn: Any) -> Any:
    """What `run` and `resume` share: how the calls are sent and what is printed."""
    options: list[Callable[[Any], Any]] = [
        click.option(
            "--budget",
            type=float,
            callback=_budget,
            metavar="USD",
            help="Refuse when the estimate passes this, and stop before the new calls' cost"
            " does (the calls of a model with no price count nothing).",
        ),
        click.option("--yes", "-y", is_flag=True, help="Send without asking first."),
        click.option(
            "--concurrency",
            default=DEFAULT_CONCURRENCY,
            show_default=True,
            type=click.IntRange(1, MAX_CONCURRENCY),
            help="Calls in flight at once.",
        ),
        fail_if_option,
        click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON."),
        click.option(
            "--fake-provider",
            is_flag=True,
            help="Send to a local fake provider started for the run (offline; the demo's"
            " calls), not to the providers the SDKs' environment names.",
        ),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


@cli.group(name="experiment")
def experiment_group() -> None:
    """Experiments from production: a sample of a feature's recorded calls sent again with
    one change (another model, a system prompt, request parameters), each answer stored as
    a new call beside its original (metadata.experiment, metadata.replay_of), and the two
    compared call by call: output tokens, latency, cost, error, refusal and tool-call
    rates, tool choice and how alike the answers read, each with its significance.

    Calls go through the providers' own SDKs, with the keys in the environment
    (ANTHROPIC_API_KEY, OPENAI_API_KEY; ANTHROPIC_BASE_URL, OPENAI_BASE_URL).

    \b
    Examples:
      llmlog experiment run --feature support-bot --sample 200 --model claude-haiku-4-5
      llmlog experiment list
      llmlog experiment show exp-3f2a9c01
    """


@experiment_group.command(name="run")
@click.option("--feature", required=True, metavar="NAME", help="The feature whose calls are sampled.")
@click.option(
    "--version",
    metavar="VERSION",
    help="Only calls of this prompt version (v1, or as stored: code-review@v1).",
)
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Sample the calls from this time: 1h, 30m, 7d or ISO-8601.",
)
@click.option(
    "--sample",
    required=True,
    type=click.IntRange(1, MAX_SAMPLE),
    metavar="N",
    help="How many calls to send again, drawn at random among the feature's successful calls.",
)
@click.option("--model", metavar="MODEL", help="Send to this model instead.")
@click.option(
    "--system-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Send this file's text as the system prompt instead (its path and hash are kept, never the text).",
)
@click.option(
    "--prompt-version",
    metavar="NAME@VERSION",
    help="Send this version from the prompts folder (LLMLOG_PROMPTS or ./prompts) as the"
    " system prompt instead; the new calls carry its version. A version alone (v2) is the"
    " feature's own prompt's.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a request parameter (repeatable). VALUE is JSON where it reads as JSON"
    " (temperature=0, stop='[\"END\"]'), else text; KEY=null removes the parameter.",
)
@click.option("--seed", type=int, help="Draw the sample with this seed (the same calls, the same sample).")
@run_options
@pass_ctx
def experiment_run(
    ctx: Ctx,
    feature: str,
    version: str | None,
    since: str,
    sample: int,
    model: str | None,
    system_file: str | None,
    prompt_version: str | None,
    params: tuple[str, ...],
    seed: int | None,
    budget: float | None,
    yes: bool,
    concurrency: int,
    fail_if: tuple[str, ...],
    as_json: bool,
    fake_provider: bool,
) -> None:
    """Send a sample of FEATURE's recorded calls again with a change, and compare.

    Prints the estimated cost and asks before sending anything (unless --yes); shows its
    progress; then the comparison, the pairs that differ most and the --fail-if results.
    With no change, the calls are sent as logged: a baseline of how much the answers
    vary by themselves, to read a change's comparison against.

    A run stopped (--budget reached, Ctrl-C, a provider not reached or rate limited)
    continues with `llmlog experiment resume ID`, which sends only the calls not replayed
    yet.

    Exit status: 0 compared and no --fail-if condition met, 1 a condition met, 2 nothing
    compared (refused, declined, nothing sent).

    \b
    Examples:
      llmlog experiment run --feature support-bot --sample 200 --model claude-haiku-4-5
      llmlog experiment run --feature code-review --version v1 --sample 100 \\
          --prompt-version code-review@v2 --budget 5 --yes --fail-if "refusal_rate > +2pts"
      llmlog experiment run --feature support-bot --since 30d --sample 50 \\
          --system-file prompts/support-bot/draft.txt --param temperature=0
      llmlog experiment run --feature support-bot --sample 30 --fake-provider --yes
    """
    conditions = _conditions(fail_if)  # a mistyped condition costs nothing: said before any call
    try:
        change = Change.read(
            model=model,
            # "v2" is the feature's prompt's, as `--version v1` is the feature's version.
            prompt_version=f"{feature}@{prompt_version}"
            if prompt_version and "@" not in prompt_version
            else prompt_version,
            system_file=system_file,
            params=_params(params),
        )
    except ExperimentError as exc:
        raise CliError(printable(exc), NOTHING) from None
    since_at = since_time(since)
    assert since_at is not None
    store = ctx.store
    try:
        known = reports.known_versions(store, timeout_s=30.0)
        reports.known_feature(known, feature)
        stored_version = reports.known_version(known, feature, version) if version else None
    except (LookupError, ReadOnlyError) as exc:
        raise CliError(printable(str(exc).strip("'\"")), NOTHING) from None
    try:
        experiment = plan(
            store,
            feature=feature,
            version=stored_version,
            since=since_at,
            sample=sample,
            change=change,
            budget_usd=budget,
            seed=seed,
        )
    except ExperimentError as exc:
        raise CliError(printable(exc), NOTHING) from None
    cost = estimate(store, experiment, change, ctx.settings)
    experiment.estimate_usd = cost.usd
    _say_plan(experiment, change, cost)
    _go_ahead(experiment, cost, budget, yes, spent=0.0)
    _send(ctx, experiment, change, concurrency, fake_provider)
    _report(ctx, experiment, conditions, as_json)


@experiment_group.command(name="resume")
@click.argument("experiment_id", metavar="ID")
@run_options
@pass_ctx
def experiment_resume(
    ctx: Ctx,
    experiment_id: str,
    budget: float | None,
    yes: bool,
    concurrency: int,
    fail_if: tuple[str, ...],
    as_json: bool,
    fake_provider: bool,
) -> None:
    """Continue experiment ID where it stopped: send the sampled calls that have no replay
    yet (none twice), with the same change (a system prompt file or prompt version whose
    text changed since is refused), then compare. --budget replaces the experiment's
    budget (what was spent counts against it).

    \b
    Examples:
      llmlog experiment resume exp-3f2a9c01
      llmlog experiment resume exp-3f2a9c01 --budget 10 --yes
    """
    conditions = _conditions(fail_if)
    experiment = _experiment(ctx, experiment_id)
    try:
        change = Change.of(experiment)
    except ExperimentError as exc:
        raise CliError(printable(exc), NOTHING) from None
    done = replays(ctx.store, experiment.id)
    left = [i for i in experiment.sample if i not in done]
    if budget is not None:
        experiment.budget_usd = budget
    if left:
        cost = estimate(ctx.store, experiment, change, ctx.settings, only=set(left))
        spent = sum(c.cost_usd or 0.0 for c in done.values())
        err_console.print(
            as_text(
                f"Experiment {experiment.id} ({experiment.status}"
                + (f": {experiment.note}" if experiment.note else "")
                + f"): {len(done):,} of {len(experiment.sample):,} calls replayed, {fmt_cost(spent)} spent;"
                f" {cost.calls:,} to send, {_estimated(cost)}."
            )
        )
        if experiment.status == "running":
            err_console.print(
                "It is marked running: if another run of it is under way, both would send its calls.",
                markup=False,
            )
        _go_ahead(experiment, cost, experiment.budget_usd, yes, spent=spent)
        _send(ctx, experiment, change, concurrency, fake_provider)
    else:
        err_console.print(as_text(f"Experiment {experiment.id}: every sampled call has its replay."))
    _report(ctx, experiment, conditions, as_json)


@experiment_group.command(name="list")
@click.option(
    "-n",
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="How many, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def experiment_list(ctx: Ctx, limit: int, as_json: bool) -> None:
    """The experiments, newest first: what each tried on which calls, how far its run got
    (the calls replayed, what they cost) and its status.

    \b
    Examples:
      llmlog experiment list
      llmlog experiment list --json | jq '.[] | select(.status == "stopped")'
    """
    found = ctx.store.experiments(limit)
    # The sampled calls with a replay, as the comparison counts them: a call replayed twice
    # (a run stopped between storing and noting it) is one.
    counts = {e.id: len(set(replays(ctx.store, e.id)) & set(e.sample)) for e in found}
    if as_json:
        click.echo(json.dumps([{**e.to_json(), "replayed": counts[e.id]} for e in found], indent=2))
        return
    if not found:
        console.print("No experiments yet (llmlog experiment run).")
        return
    table = Table("id", "created (UTC)", "feature", "change", "replayed", "spent", "status")
    for e in found:
        status = e.status + (f": {e.note}" if e.note else "")
        table.add_row(
            as_text(e.id), fmt_time(e.created), as_text(_feature(e)), as_text(e.describe_change()),
            f"{counts[e.id]:,} / {len(e.sample):,}", fmt_cost(e.spent_usd), as_text(status),
        )  # fmt: skip
    console.print(table)


@experiment_group.command(name="show")
@click.argument("experiment_id", metavar="ID")
@fail_if_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_ctx
def experiment_show(ctx: Ctx, experiment_id: str, fail_if: tuple[str, ...], as_json: bool) -> None:
    """Experiment ID: what it tried on which calls, and its comparison so far, with the
    pairs that differ most and the --fail-if results (exit status as for `run`).

    \b
    Examples:
      llmlog experiment show exp-3f2a9c01
      llmlog experiment show exp-3f2a9c01 --fail-if "similarity < 0.8" --fail-if "cost_usd > +10%"
      llmlog experiment show exp-3f2a9c01 --json | jq .comparison.metrics
    """
    conditions = _conditions(fail_if)
    experiment = _experiment(ctx, experiment_id)
    _report(ctx, experiment, conditions, as_json)


# ---------------------------------------------------------------- helpers


def _experiment(ctx: Ctx, experiment_id: str) -> Experiment:
    found = ctx.store.experiment(experiment_id.strip())
    if found is None:
        raise CliError(f"no experiment {experiment_id!r} (llmlog experiment list shows them)", NOTHING)
    return found


def _feature(e: Experiment) -> str:
    return e.feature + (f" ({e.version})" if e.version else "")


def _estimated(cost: Estimate) -> str:
    if cost.usd is None:
        return "no estimate (no price for the model)"
    said = f"estimated {fmt_cost(cost.usd)}"
    unpriced = cost.calls - cost.priced
    return said + (f" ({unpriced:,} call(s) with no price not counted)" if unpriced else "")


def _say_plan(experiment: Experiment, change: Change, cost: Estimate) -> None:
    asked = int(experiment.extra.get("asked") or len(experiment.sample))
    window = f"{fmt_time(experiment.since)} to {fmt_time(experiment.until)} UTC"
    lines = [
        f"Experiment {experiment.id}: {len(experiment.sample):,} call(s) of {_feature(experiment)}"
        f" from {window}, with {experiment.describe_change()}.",
    ]
    if len(experiment.sample) < asked:
        lines.append(
            f"Only {len(experiment.sample):,} of the {asked:,} calls asked for can be sent again"
            " (successful, not replays themselves): all of them are taken."
        )
    if change.empty:
        lines.append(
            "No change given: the calls are sent as logged, a baseline of how much the answers"
            " vary by themselves."
        )
    lines.append(f"Cost: {_estimated(cost)}.")
    for line in lines:
        err_console.print(as_text(line))


def _go_ahead(experiment: Experiment, cost: Estimate, budget: float | None, yes: bool, spent: float) -> None:
    """Refuse past the budget, then ask (unless --yes); a refusal or a no sends and saves nothing."""
    if budget is not None and cost.calls and cost.usd is None:
        raise CliError(
            "no price for the model these calls would go to, so --budget cannot be held:"
            " nothing sent (LLMLOG_PRICES names a price file that adds one)",
            NOTHING,
        )
    if budget is not None and cost.usd is not None and spent + cost.usd > budget:
        already = f" and the {fmt_cost(spent)} spent" if spent else ""
        raise CliError(
            f"the estimate ({fmt_cost(cost.usd)}{already}) passes the budget ({fmt_cost(budget)}):"
            " nothing sent (a smaller --sample, or a larger --budget)",
            NOTHING,
        )
    if yes:
        return
    try:
        ok = click.confirm(f"Send {cost.calls:,} call(s)?", default=False, err=True)
    except click.Abort:  # no answer to read (stdin closed)
        ok = False
    if not ok:
        raise CliError(f"nothing sent: experiment {experiment.id} not started", NOTHING)


@contextlib.contextmanager
def _providers(fake_provider: bool) -> Iterator[Providers | None]:
    if not fake_provider:
        yield None  # the SDKs' own environment: keys and base URLs
        return
    from llmlog.demo.fake_provider import DEMO_SEED, FakeProvider

    fake = FakeProvider(seed=DEMO_SEED).start()
    err_console.print(f"Sending to the fake provider on {fake.url}", markup=False)
    try:
        yield Providers.fake(fake.anthropic_base_url, fake.openai_base_url)
    finally:
        fake.stop()


def _send(ctx: Ctx, experiment: Experiment, change: Change, concurrency: int, fake_provider: bool) -> None:
    left = len(experiment.sample) - len(replays(ctx.store, experiment.id))
    with _providers(fake_provider) as providers, progress_bar() as bar:
        task = bar.add_task(experiment.id, total=left)

        def advance(_: Call) -> None:
            bar.advance(task)

        try:
            run(
                ctx.store,
                experiment,
                change,
                providers=providers,
                settings=ctx.settings,
                concurrency=concurrency,
                on_call=advance,
            )
        except ExperimentError as exc:  # another run holds it: nothing was sent
            bar.stop()
            raise CliError(printable(exc), NOTHING) from None
        except KeyboardInterrupt:
            bar.stop()
            raise CliError(
                f"interrupted: experiment {experiment.id} stopped;"
                f" llmlog experiment resume {experiment.id} sends the calls left",
                130,
            ) from None
    if experiment.status == "stopped":
        err_console.print(
            as_text(
                f"Stopped: {experiment.note}. {fmt_cost(experiment.spent_usd)} spent;"
                f" llmlog experiment resume {experiment.id} sends the calls left."
            )
        )


def _figure(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric in RATES or metric in AGREEMENT:
        return f"{value:.1%}"
    if metric == "cost_usd":
        return fmt_cost(value)
    if metric == "latency_ms":
        return f"{value:,.0f} ms"
    return f"{value:,.1f}"


def _change(m: Metric) -> str:
    if m.change is None:
        return ""
    if m.metric in RATES:
        return f"{m.change * 100:+.1f} pts"
    if m.metric == "cost_usd":
        shown = f"{'+' if m.change >= 0 else '-'}{fmt_cost(abs(m.change))}"
    elif m.metric == "latency_ms":
        shown = f"{m.change:+,.0f} ms"
    else:
        shown = f"{m.change:+,.1f}"
    return shown + (f" ({m.relative:+.0%})" if m.relative is not None else "")


def _effect(m: Metric) -> str:
    if m.effect is None or m.metric in RATES or m.metric in AGREEMENT:
        return ""
    return f"{m.effect:+.2f} sd"


def _why(pair: Pair) -> str:
    a, b = pair.original, pair.replay
    if b is None:
        return ""
    if bool(a.error) != bool(b.error):
        failed = b if b.error else a
        side = "the replay" if b.error else "the original"
        return f"{side} failed: {error_text(failed)}"
    before, after = pair.refused
    if before != after:
        return f"{'the replay' if after else 'the original'} declined"
    if pair.similarity is not None:
        return f"answers {pair.similarity:.0%} alike"
    return ""


def _report(ctx: Ctx, experiment: Experiment, conditions: list[Condition], as_json: bool) -> None:
    """The comparison, the pairs to read and the conditions; the exit status (module docstring)."""
    why = f" ({experiment.note})" if experiment.note else ""
    nothing = f"nothing to compare: no call of experiment {experiment.id} was replayed{why}"
    if not replays(ctx.store, experiment.id):
        if as_json:
            unmet = [{"condition": c.text, "met": False, "observed": "nothing compared"} for c in conditions]
            click.echo(json.dumps({"experiment": experiment.to_json(), "comparison": None, "fail_if": unmet}))
        raise CliError(nothing, NOTHING)
    comparison = load(ctx.store, experiment)
    results = [(c, *c.met(comparison)) for c in conditions]
    done = comparison.done
    if as_json:
        out = {
            "experiment": experiment.to_json(),
            "comparison": comparison.to_json(),
            "fail_if": [{"condition": c.text, "met": met, "observed": seen} for c, met, seen in results],
        }
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        _print_comparison(experiment, comparison)
        for c, met, seen in results:
            console.print(as_text(f"fail-if {c.text}: {'MET' if met else 'not met'} ({seen})"))
    if not done:  # replays whose originals are gone since
        raise CliError(nothing, NOTHING)
    if any(met for _, met, _ in results):
        click.get_current_context().exit(MET)


def _print_comparison(experiment: Experiment, comparison: Comparison) -> None:
    title = f"{experiment.id}: {_feature(experiment)}, {experiment.describe_change()}"
    table = Table("metric", "logged", "replayed", "change", "effect", "p", "", title=as_text(title))
    for m in comparison.metrics:
        table.add_row(
            m.metric, _figure(m.metric, m.before), _figure(m.metric, m.after), _change(m), _effect(m),
            "" if m.p is None else f"{m.p:.1e}", "changed" if m.flagged else "",
        )  # fmt: skip
    console.print(table)
    status = experiment.status + (f": {experiment.note}" if experiment.note else "")
    console.print(as_text(f"{comparison.verdict} ({status}; {fmt_cost(experiment.spent_usd)} spent)."))
    most = comparison.most_different(PAIRS_SHOWN)
    if most:
        where = f"side by side at /experiments/{experiment.id}"
        console.print(as_text(f"The pairs that differ most (llmlog show ID; {where}):"))
        for pair in most:
            assert pair.replay is not None
            a, b = pair.original.id, pair.replay.id
            console.print(as_text(f"  {a}  {b}  /calls/{a}/replay/{b}  {_why(pair)}".rstrip()))
