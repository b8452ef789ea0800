"""`pinfeed features`: the offline feature tables, the Feast repo, training sets, rewards."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pinfeed_cli import steps
from pinfeed_cli.common import HomeOption, console, counts_table, project_errors, project_home

app = typer.Typer(help="Offline features, the Feast repo and training sets.", no_args_is_help=True)


@app.command("build")
@project_errors
def build(
    events: Annotated[
        Path | None, typer.Option(help="Event set folder (default: <home>/data/events).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Compute the event-timestamped feature tables and the user interest clusters."""
    result = steps.build_features(project_home(home), events)
    counts = {f"{name} rows": rows for name, rows in result.rows.items()}
    counts.update({f"{stage} s": f"{seconds:.1f}" for stage, seconds in result.seconds.items()})
    console.print(counts_table(f"features in {result.out}", counts))


@app.command("apply")
@project_errors
def apply(home: HomeOption = None) -> None:
    """Register the feature definitions (same as `feast -c feature_repo apply`)."""
    console.print(f"applied: {steps.apply(project_home(home))}")


@app.command("materialize")
@project_errors
def materialize(
    end: Annotated[
        datetime | None,
        typer.Option(
            help="Load feature values up to this time (default: the end of the event data + 1 day)."
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Reload every view from this time, not incrementally (after `data "
            "ingest-served` + `features build` rewrote rows already loaded)."
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Reload every view whole, whatever was loaded.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Load the latest feature values into the online store: incremental against what that
    store holds (a store never loaded, e.g. a new Redis, gets everything), or --since / --full."""
    windows = steps.load_online(project_home(home), end, since, full=full)
    table = Table(title="online store load")
    for column in ("view", "from", "to", "why"):
        table.add_column(column)
    for window in windows:
        start = window.start.isoformat() if window.start else "-"
        table.add_row(window.view, start, window.end.isoformat(), window.why)
    console.print(table)


@app.command("status")
@project_errors
def status(
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            help="Clock that staleness is measured on (default: the end of the event data; "
            "pass the current time in production).",
        ),
    ] = None,
    sample: Annotated[
        int, typer.Option(min=1, max=10_000, help="Entity keys read back per view.")
    ] = 64,
    home: HomeOption = None,
) -> None:
    """Per feature view: newest offline row, what the online store holds (a sample of keys read
    back), staleness against the ttl, a verdict and the command that fixes it. Exits 1 when a
    view the serving feature service reads is not fresh (a deploy gate)."""
    views, needed = steps.feature_status(project_home(home), as_of, sample)
    table = Table(title=f"online store at {views[0].as_of.isoformat() if views else '-'}")
    for column in ("view", "serving", "offline newest", "online newest", "keys", "ttl", "verdict"):
        table.add_column(column)
    for view in views:
        colour = {"fresh": "green", "stale": "yellow"}.get(view.verdict, "red")
        table.add_row(
            view.view,
            "yes" if view.view in needed else "",
            _stamp(view.offline_newest),
            _stamp(view.online_newest),
            f"{view.present}/{view.sampled}",
            _span(view.ttl),
            f"[{colour}]{view.verdict}[/]",
        )
    console.print(table)
    failing = [view for view in views if view.verdict != "fresh" and view.view in needed]
    for view in (v for v in views if v.verdict != "fresh"):
        console.print(
            f"{view.view}: {view.verdict}: {view.reason}; fix: {view.fix}", soft_wrap=True
        )
    if failing:
        names = ", ".join(v.view for v in failing)
        console.print(f"[bold red]not ready to serve:[/] {names}", soft_wrap=True)
        raise typer.Exit(code=1)


def _span(ttl: timedelta | None) -> str:
    if ttl is None:
        return "none"
    return f"{ttl.days}d" if ttl == timedelta(days=ttl.days) else str(ttl)


def _stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


@app.command("training-sets")
@project_errors
def training_sets(
    seed: Annotated[int, typer.Option(help="Seed of the ranking set's negative sampling.")] = 0,
    negative_sample_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Fraction of unengaged impressions the ranking set keeps."
        ),
    ] = 0.1,
    home: HomeOption = None,
) -> None:
    """Point-in-time retrieval and ranking training sets through Feast (retrieval_v1, ranking_v1)."""
    console.print(steps.training_sets(project_home(home), seed, negative_sample_rate))


@app.command("rewards")
@project_errors
def rewards(
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Count impressions from here (default: the reward window before --as-of)."
        ),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(help="Stamp of the recomputed rewards (default: the latest clustering)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Recompute cluster rewards from the logs, write the table and materialise it."""
    console.print(steps.rewards(project_home(home), since=since, as_of=as_of))
