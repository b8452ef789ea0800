"""`pinfeed features`: the offline feature tables, the Feast repo, training sets, rewards."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

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
    home: HomeOption = None,
) -> None:
    """Load the latest feature values into the online store (incremental unless --since)."""
    console.print(steps.materialize(project_home(home), end, since))


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
