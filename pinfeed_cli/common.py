"""What every command group shares: the project home option, one console, the error edge
(project errors -> one red line and exit code 2, never a traceback) and a counts table."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pinfeed.errors import PinfeedError
from pinfeed.home import ProjectHome

console = Console()
F = TypeVar("F", bound=Callable[..., object])

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", help="Project home holding feature_repo/ and data/ (default: $PINFEED_HOME or .)."
    ),
]
RunIdOption = Annotated[
    str,
    typer.Option(
        "--run-id",
        help="Artifacts run (default `latest`: the newest run that holds what is needed).",
    ),
]


def project_home(home: Path | None) -> ProjectHome:
    return ProjectHome(home.resolve()) if home else ProjectHome.from_env()


def project_errors(command: F) -> F:
    """Turn the project's own errors into a clear message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except PinfeedError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def counts_table(title: str, counts: dict[str, object]) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in counts.items():
        shown = (
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        )
        table.add_row(name, shown)
    return table
