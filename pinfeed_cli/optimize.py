"""`pinfeed optimize`: tune serving-time parameters (Ax) and both models (Ray Tune) offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pinfeed_cli import steps
from pinfeed_cli.common import HomeOption, RunIdOption, console, project_errors, project_home

TuneTrialsOption = Annotated[int, typer.Option(min=1, help="Ray Tune trials (random search).")]
TuneSeedOption = Annotated[int, typer.Option(help="Seed of the search and of every trial.")]
MaxStepsOption = Annotated[
    int, typer.Option(min=1, help="Optimizer steps a trial may reach (ASHA's max_t).")
]

app = typer.Typer(
    help="Tune serving-time parameters (Ax) and both models (Ray Tune) offline.",
    no_args_is_help=True,
)


@app.command("utility")
@project_errors
def utility(
    trials: Annotated[
        int | None, typer.Option(min=2, help="Trials per method (default: the config's, 30).")
    ] = None,
    initialization_trials: Annotated[
        int | None, typer.Option(min=1, help="Sobol trials before the GP (default: the config's).")
    ] = None,
    bias_check: Annotated[
        bool, typer.Option(help="Rerun Ax with another weight derived (the config's choice).")
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Search seed.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/utility.json).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Ranking YAML (its utility: section; default configs/ranking.yaml)."),
    ] = None,
    run_id: RunIdOption = "latest",
    home: HomeOption = None,
) -> None:
    """Ax Bayesian optimisation of the utility weights vs random search and hand-picked weights."""
    report = steps.optimize_utility(
        project_home(home),
        out=out,
        config=config,
        trials=trials,
        initialization_trials=initialization_trials,
        bias_check=bias_check,
        seed=seed,
        run_id=run_id,
    )
    for method in ("best", "random_search", "hand_picked"):
        arm = report[method]
        weights = ", ".join(f"{h} {w:.3f}" for h, w in arm["weights"].items())
        console.print(
            f"{method}: long_click PR-AUC {arm['long_click_pr_auc']:.5f} ({weights}), "
            f"constraints met: {arm['constraints_met']}"
        )
    console.print(f"report: {report['path']}; weights written to {report['utility_json']}")


@app.command("retrieval")
@project_errors
def retrieval(
    trials: TuneTrialsOption = 16,
    seed: TuneSeedOption = 0,
    max_steps: MaxStepsOption = 600,
    out: Annotated[
        Path | None,
        typer.Option(help="Report JSON (default: <home>/reports/retrieval_tune.json); the "
                     "tuned job config is written beside it as .yaml."),
    ] = None,
    home: HomeOption = None,
) -> None:  # fmt: skip
    """Ray Tune (random search + ASHA) of the retrieval model on a validation day; the best
    config as a job config, and its held-out recall beside the default's."""
    report = steps.optimize_retrieval(
        project_home(home), out=out, trials=trials, seed=seed, max_steps=max_steps
    )
    best, held = report["best"], report["held_out"]
    console.print(
        f"best of {len(report['trials'])} trials: validation Recall@100 "
        f"{best['best_recall']:.3f} at step {best['best_step']} ({best['params']})"
    )
    console.print(
        f"held out, refitted: tuned Recall@100 {held['tuned']['recall@100']:.3f} vs default "
        f"{held['default']['recall@100']:.3f}"
    )
    console.print(f"report: {report['path']}; job config: {report['job_config']}")


@app.command("ranking")
@project_errors
def ranking(
    trials: TuneTrialsOption = 16,
    seed: TuneSeedOption = 0,
    max_steps: MaxStepsOption = 2000,
    out: Annotated[
        Path | None,
        typer.Option(help="Report JSON (default: <home>/reports/ranking_tune.json); the "
                     "tuned job config is written beside it as .yaml."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Ranking YAML (its split and evaluation sections; default "
                     "configs/ranking.yaml)."),
    ] = None,
    home: HomeOption = None,
) -> None:  # fmt: skip
    """Ray Tune (random search + ASHA) of the ranker's width, depth, learning rate and
    negative downsampling on the validation days; the best config as a job config, and its
    test-day PR-AUC and ECE per head beside the default's and LightGBM's."""
    report = steps.optimize_ranking(
        project_home(home), out=out, trials=trials, seed=seed, max_steps=max_steps, config=config
    )
    best, held = report["best"], report["held_out"]
    console.print(
        f"best of {len(report['trials'])} trials: validation PR-AUC (mean over heads) "
        f"{best['best_pr_auc']:.4f} at step {best['best_step']} ({best['params']})"
    )
    arms = [arm for arm in ("tuned", "default", "lightgbm") if arm in held]
    console.print(
        "test days, mean PR-AUC over heads: "
        + ", ".join(f"{arm} {held[arm]['mean_pr_auc']:.4f}" for arm in arms)
    )
    console.print(f"report: {report['path']}; job config: {report['job_config']}")
