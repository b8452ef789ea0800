"""`pinfeed train`: the training jobs (= `python -m training.job`, what `ray job submit` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pinfeed_cli import steps
from pinfeed_cli.common import HomeOption, console, project_errors, project_home

app = typer.Typer(
    help="Train with Ray Train and export to ONNX (= python -m training.job).", no_args_is_help=True
)
ConfigOption = Annotated[
    Path | None, typer.Option(help="Job config YAML (default: configs/<job>.yaml).")
]
EpochsOption = Annotated[int | None, typer.Option(min=1, help="Override the config's epochs.")]


@app.command("retrieval")
@project_errors
def retrieval(
    config: ConfigOption = None,
    run_id: Annotated[
        str | None, typer.Option(help="Artifacts run to write (default: a new run).")
    ] = None,
    epochs: EpochsOption = None,
    home: HomeOption = None,
) -> None:
    """Two-tower retrieval on the dual positive signal; exports towers + ANN index."""
    console.print(
        steps.train(project_home(home), "retrieval", config=config, run_id=run_id, epochs=epochs)
    )


@app.command("ranking")
@project_errors
def ranking(
    config: ConfigOption = None,
    run_id: Annotated[
        str | None,
        typer.Option(help="Artifacts run to write (default: the run `train retrieval` made)."),
    ] = None,
    epochs: EpochsOption = None,
    home: HomeOption = None,
) -> None:
    """Four-head ranker + single-head baseline; exports the ranker and utility.json."""
    console.print(
        steps.train(project_home(home), "ranking", config=config, run_id=run_id, epochs=epochs)
    )
