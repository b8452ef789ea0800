"""`pinfeed serve`: the Ray Serve app, as `serve run serving/config.yaml` deploys it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pinfeed_cli.common import HomeOption, console, project_errors


@project_errors
def serve(
    config: Annotated[
        Path | None, typer.Option(help="Serve config YAML (default: serving/config.yaml).")
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(help="Run to serve (default: the file's `run_id`, `latest` in ours)."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Where the proxy listens (default: the file's, 127.0.0.1 in ours)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="HTTP port of the proxy (default: the file's, 8000).")
    ] = None,
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
    """Deploy the Ray Serve app and block: `serve run serving/config.yaml`, with the file's
    args, deployments and http options, and these options on top. The store is Redis when
    REDIS_URL is set (online store and traffic logs alike), else SQLite and local files."""
    from serving.app import CONFIG_FILE, serve_forever

    # the file's `home` when it sets one, else (in ServingConfig) $PINFEED_HOME or the cwd
    overrides: dict[str, object] = {"home": str(home.resolve())} if home else {}
    if run_id is not None:
        overrides["run_id"] = run_id
    if allow_empty_store:
        overrides["allow_empty_store"] = True
    serve_forever(
        config or CONFIG_FILE,
        overrides,
        host=host,
        port=port,
        on_ready=lambda url: console.print(f"serving on {url} (OpenAPI at /docs); Ctrl-C stops"),
    )
