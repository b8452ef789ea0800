"""`pinfeed serve`: the Ray Serve app, as `serve run serving/config.yaml` deploys it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pinfeed_cli.common import HomeOption, RunIdOption, console, project_errors, project_home


@project_errors
def serve(
    config: Annotated[
        Path | None, typer.Option(help="Serve config YAML (default: serving/config.yaml).")
    ] = None,
    run_id: RunIdOption = "latest",
    port: Annotated[int, typer.Option(help="HTTP port of the Serve proxy.")] = 8000,
    allow_empty_store: Annotated[
        bool,
        typer.Option(
            "--allow-empty-store",
            help="Start even when the online store holds no values of a view serving reads "
            "(answers flagged degraded); default: refuse and name the fix.",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Deploy the Ray Serve app (same app as `serve run serving/config.yaml`) and block."""
    from serving.app import CONFIG_FILE, serve_forever

    overrides = {
        "home": str(project_home(home).root),
        "run_id": run_id,
        "allow_empty_store": allow_empty_store,
    }
    console.print(f"serving on http://127.0.0.1:{port} (OpenAPI at /docs); Ctrl-C stops")
    serve_forever(config or CONFIG_FILE, overrides, port=port)
