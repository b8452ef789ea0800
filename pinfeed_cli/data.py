"""`pinfeed data`: event sets in, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pinfeed.synthetic.config import Preset
from pinfeed_cli import steps
from pinfeed_cli.common import HomeOption, console, counts_table, project_errors, project_home

app = typer.Typer(
    help="Event data: generate synthetic events, import real logs, validate.", no_args_is_help=True
)
EventsOption = Annotated[
    Path | None, typer.Option(help="Event set folder (default: <home>/data/events).")
]


@app.command("generate")
@project_errors
def generate(
    preset: Annotated[
        Preset, typer.Option(help="Size (and skew) of the synthetic world; see docs/data.md.")
    ] = "small",
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same events.")
    ] = 0,
    out: EventsOption = None,
    home: HomeOption = None,
) -> None:
    """Generate a synthetic event set (see docs/data.md for the generative model)."""
    done = steps.generate(project_home(home), preset=preset, seed=seed, out=out, console=console)
    console.print(f"events written: {done}")


@app.command("import")
@project_errors
def import_log(
    interactions: Annotated[
        Path,
        typer.Option(help="CSV or parquet log: user_id, item_id, timestamp, event[, dwell_s]."),
    ],
    out: EventsOption = None,
    skip_bad: Annotated[
        Path | None,
        typer.Option(
            help="Write bad rows to this CSV and go on, instead of stopping at the first."
        ),
    ] = None,
    item_embeddings: Annotated[
        Path | None,
        typer.Option(help="Parquet of item_id, embedding to use instead of learned embeddings."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Import a real interaction log into the event schema."""
    from pinfeed.importer import ImportConfig, import_interactions

    target = out or project_home(home).events
    config = ImportConfig(item_embeddings=item_embeddings)
    result = import_interactions(interactions, target, config=config, rejects=skip_bad)
    console.print(counts_table("import", result.summary()))
    if skip_bad is not None and result.rows_rejected:
        console.print(f"[yellow]{result.rows_rejected:,} bad row(s) written to {skip_bad}[/]")


@app.command("validate")
@project_errors
def validate(events: EventsOption = None, home: HomeOption = None) -> None:
    """Check every row of an event set against the contract; name each bad row's problem."""
    report = steps.validate_events(project_home(home), events)
    for table in report.tables.values():
        status = "[green]ok[/]" if table.ok else f"[red]{len(table.problems)} bad row(s)[/]"
        console.print(f"{table.table}: {table.rows} rows, {status}")
        for row, field, reason in table.problems[:20]:
            console.print(f"  row {row}: {field}: {reason}")
    if not report.ok:
        raise typer.Exit(code=1)


@app.command("ingest-served")
@project_errors
def ingest_served(
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Serving state folder with the local logs (default: <home>/data/serving)."
        ),
    ] = None,
    window_s: Annotated[
        float, typer.Option(help="Engagements later than this after serving set no flag.")
    ] = 86_400.0,
    replace: Annotated[
        bool,
        typer.Option(help="Rebuild from these logs alone even if they lack dates ingested before."),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Served answers and feedback into the event set (idempotent: rebuilds the served
    partitions). Reads Redis when REDIS_URL is set, else the local logs."""
    report = steps.ingest_served(
        project_home(home), state_dir=state_dir, window_s=window_s, replace=replace
    )
    console.print(
        counts_table(
            "served traffic ingested",
            {
                "served items": report.served_items,
                "ingested impressions": report.ingested_impressions,
                "served, not shown": report.not_shown,
                "rejected impressions": sum(report.rejected_impressions.values()),
                "feedback events": report.feedback_events,
                "ingested events": report.ingested_events,
                "rejected events": sum(report.rejected_events.values()),
                "conversions": report.ingested_conversions,
            },
        )
    )
    for reason, count in {**report.rejected_impressions, **report.rejected_events}.items():
        console.print(f"  rejected {count:,}: {reason}")
    console.print("reconciles" if report.reconciles else "[red]does not reconcile[/red]")
