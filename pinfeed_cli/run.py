"""`pinfeed run`: the main job end to end (`pinfeed_cli.pipeline`)."""

from __future__ import annotations

from typing import Annotated

import typer

from pinfeed.synthetic.config import Preset
from pinfeed_cli.common import HomeOption, console, project_errors, project_home


@project_errors
def run(
    preset: Annotated[
        Preset, typer.Option(help="Size (and skew) of the synthetic world; see docs/data.md.")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic event set.")] = 0,
    keep_serving: Annotated[
        bool, typer.Option(help="Leave the Serve app running at the end.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """The main job end to end on the embedded defaults (SQLite, local Ray); every step is a
    command of its own, named in its title."""
    from pinfeed_cli.pipeline import run_pipeline

    run_pipeline(
        project_home(home), preset=preset, seed=seed, console=console, keep_serving=keep_serving
    )
