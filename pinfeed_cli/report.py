"""`pinfeed report`: one page with every evaluation's figures and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pinfeed_cli import steps
from pinfeed_cli.common import HomeOption, console, project_errors, project_home


@project_errors
def report(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Markdown page to write (default: <home>/reports/index.md); its PNGs go beside it."
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Collect the evaluation reports under reports/ into one Markdown page with its plots."""
    page = steps.report(project_home(home), out)
    console.print(f"report page: {page}")
