"""`llmlog check`: what is wrong now, the findings (`llmlog.analysis.findings`) ranked, for a
person at a terminal or a cron job: exit status 1 when there is a finding, 0 when none."""

from __future__ import annotations

import json

import click
from rich.text import Text

from llmlog.analysis import alerts, findings, reports
from llmlog.cli.core import CliError, Ctx, as_text, cli, console, err_console, pass_ctx

# The exit status when the findings could not be told (the store not opened, or a part not
# evaluated and nothing found by the rest): neither "none" (0) nor "a finding" (1), which a
# cron job acts on; 2, as for a command given wrong.
UNKNOWN = 2


def _line(text: str, style: str = "") -> Text:
    """One line, ended: a newline in a name from the calls is shown (↵), never starts a line
    of its own (a forged finding, for a cron job's mail)."""
    return as_text(text.replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵") + "\n", style)


def _lines(f: findings.Finding, rank: int) -> Text:
    """A finding as a person reads it: its sentence, its days as a sparkline, where to look
    (the pages of `llmlog serve`)."""
    out = _line(f"{rank}. {f.sentence}", "bold" if rank == 1 else "")
    days = [v or 0.0 for _, v in f.chart]
    if any(days):
        out.append_text(as_text(f"   {reports.sparkline(days)}  "))
        out.append_text(_line(f"{f.chart_label}, the last {len(days)} days", "dim"))
    for e in f.evidence:
        out.append_text(_line(f"   {e.label}: {e.path}", "dim"))
    return out


@cli.command(name="check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.option(
    "--notify",
    is_flag=True,
    help="Also post new findings (and the rules' that trip) to the alerts' webhooks, each once until it"
    " clears, as `llmlog serve` does on its schedule (see `llmlog alerts`).",
)
@pass_ctx
def check(ctx: Ctx, as_json: bool, notify: bool) -> None:
    """What is wrong now: the findings, the most pressing first, and where to look.

    New error types and error-rate jumps; drift in a feature or prompt version (output
    length, refusals, tool calls, latency, cost per call), and each prompt version against
    the one before it; over-routing; users far above their peers; the costliest sessions;
    cost this week against last. The last 7 days against the 28 before, each finding one
    sentence with its numbers, its days, and the pages of `llmlog serve` that show why.

    Exit status 1 when there is a finding, 0 when there is none, for cron and CI; 2 when
    it cannot tell: the store could not be opened, or a part could not be evaluated (a
    query stopped at its time limit, said on stderr) and the others found nothing.

    \b
    Examples:
      llmlog check
      llmlog check --json | jq -r '.findings[].sentence'
      llmlog check > /dev/null || echo "llmlog has findings"
      llmlog check --notify   # from cron: post what is new to the webhooks
    """
    try:
        store = ctx.store
    except CliError as exc:
        exc.exit_code = UNKNOWN
        raise
    found = findings.evaluation(store)
    if notify:
        # The rules' findings join the list; kinds a skipped part would have found do not clear.
        done = alerts.notify(store, found.findings, unsure=found.unsure)
        found.findings = done.findings
        err_console.print(as_text(done.summary()))
        # A rule whose query failed is a part not evaluated: nothing found is then not "none".
        for run in done.problems:
            found.skipped[f"rule {run.rule.name}"] = str(run.problem)
    if as_json:
        click.echo(json.dumps(found.to_json(), indent=2))
    elif found.findings:
        for rank, f in enumerate(found.findings, 1):
            # Never wrapped: a finding's lines are its own, and its links are copied whole.
            console.print(_lines(f, rank), end="", soft_wrap=True)
    else:
        console.print("No findings: nothing new or changed in the last 7 days.")
    for part, why in found.skipped.items():
        err_console.print(as_text(f"not evaluated: {part} ({why})"))
    raise SystemExit(1 if found.findings else UNKNOWN if found.skipped else 0)
