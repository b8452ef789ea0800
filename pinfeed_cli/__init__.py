"""The `pinfeed` command line: the top layer. One module per command group, the same verbs as
the modules they call; `pinfeed run` (`pinfeed_cli.pipeline`) runs every step in order. Nothing
imports this package.

Commands are thin: they parse options, call one step function (`pinfeed_cli.steps`) and print
its result. Heavy imports (Feast, torch, Ray) happen inside the steps, so `pinfeed --help`
starts in a fraction of a second. Project errors become one line and exit code 2, never a
traceback.
"""

from __future__ import annotations

import typer

from pinfeed_cli import data, evaluate, features, optimize, train
from pinfeed_cli.report import report
from pinfeed_cli.run import run
from pinfeed_cli.serve import serve

app = typer.Typer(
    help="pinfeed: features, training, evaluation and serving for a recommender.",
    no_args_is_help=True,
)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(optimize.app, name="optimize")
app.command("report")(report)
app.command("serve")(serve)
app.command("run")(run)


def main() -> None:
    app()
