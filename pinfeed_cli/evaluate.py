"""`pinfeed evaluate`: prove each method on data; reports under reports/."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from pinfeed_cli import steps
from pinfeed_cli.common import HomeOption, RunIdOption, console, project_errors, project_home

app = typer.Typer(help="Prove each method on data: reports under reports/.", no_args_is_help=True)


@app.command("retrieval")
@project_errors
def retrieval(
    seeds: Annotated[
        int, typer.Option(min=1, help="Training seeds per variant (mean and std over them).")
    ] = 3,
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/retrieval.json).")
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(help="Evaluate this event set (e.g. an import) in a temporary home instead."),
    ] = None,
    converged: Annotated[
        bool,
        typer.Option(
            help="Also train every variant to convergence (early stopping on the last train "
            "day) for a second table; --no-converged: the equal-budget table only."
        ),
    ] = True,
    home: HomeOption = None,
) -> None:
    """Ablation of the positive signal beside the baselines (popularity, item-kNN, ALS): Recall@K of held-out conversions, exact and through the index."""
    report = steps.evaluate_retrieval(
        project_home(home), seeds=seeds, out=out, events=events, converged=converged
    )
    console.print(report.markdown_path.read_text())
    console.print(f"report: {report.json_path}, chart: {report.chart_path}")


@app.command("ranking")
@project_errors
def ranking(
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/ranking.json).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Ranking YAML (its evaluation: section; default configs/ranking.yaml)."),
    ] = None,
    run_id: RunIdOption = "latest",
    home: HomeOption = None,
) -> None:
    """Per-head AUC, PR-AUC, log loss, Brier and ECE before/after calibration, plus plots."""
    report = steps.evaluate_ranking(project_home(home), out=out, config=config, run_id=run_id)
    for head, metrics in report["mtl"].items():
        console.print(
            f"{head}: PR-AUC {metrics['pr_auc']:.4f} (single head "
            f"{report['single_head'][head]['pr_auc']:.4f}), ECE {metrics['ece_raw']:.4f} -> "
            f"{metrics['ece_cal']:.4f}, Brier {metrics['brier_raw']:.4f} -> {metrics['brier_cal']:.4f}"
        )
    console.print(f"report: {report['path']}")


@app.command("skew")
@project_errors
def skew(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report JSON (default: <home>/reports/skew.json); PNG and table beside it."
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="Compare rows logged from this time on (UTC; default: all logs)."),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(help="Compare rows logged before this time (UTC; default: all logs)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Row-level skew: logged serving_v1 vectors vs a point-in-time offline recomputation."""
    from evaluation.skew import evaluate_skew, markdown_table

    result = evaluate_skew(
        project_home(home),
        out=out,
        since=since.replace(tzinfo=UTC) if since and since.tzinfo is None else since,
        until=until.replace(tzinfo=UTC) if until and until.tzinfo is None else until,
    )
    console.print(markdown_table(result.report))
    console.print(f"report: {result.json_path}, chart: {result.png_path}")


@app.command("query-reward")
@project_errors
def query_reward(
    rounds: Annotated[
        int, typer.Option(min=4, help="Evaluated rounds (one request per user each).")
    ] = 60,
    seeds: Annotated[
        int, typer.Option(min=1, help="Simulation seeds; intervals are over seeds.")
    ] = 3,
    rounds_per_day: Annotated[
        int, typer.Option(min=1, help="Requests per user per simulated day.")
    ] = 8,
    offline_every_days: Annotated[
        int, typer.Option(min=1, help="The offline reward job runs every this many days.")
    ] = 1,
    offline_delay_hours: Annotated[
        float,
        typer.Option(min=0, help="Hours after its midnight cut-off that the job's rows land."),
    ] = 6.0,
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/query_reward.json).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Closed-loop simulation: count vs reward_offline vs reward_realtime query selection."""
    from evaluation.query_reward import evaluate_query_reward, format_comparison
    from evaluation.simulator import SimulatorConfig
    from pinfeed.config import validate_model

    cadence = {
        "rounds_per_day": rounds_per_day,
        "offline_every_days": offline_every_days,
        "offline_delay_hours": offline_delay_hours,
    }
    config = validate_model(SimulatorConfig, cadence, "pinfeed evaluate query-reward")
    result = evaluate_query_reward(
        project_home(home), rounds=rounds, seeds=seeds, out=out, config=config
    )
    console.print(format_comparison(result.report))
    console.print(f"report: {result.json_path} and {result.png_path}")


@app.command("closed-loop")
@project_errors
def closed_loop(
    seeds: Annotated[
        int, typer.Option(min=1, help="Independent loops; intervals are over seeds.")
    ] = 3,
    rounds: Annotated[int, typer.Option(min=1, help="Client rounds per phase.")] = 4,
    users: Annotated[int, typer.Option(min=1, help="Clients asking per round.")] = 100,
    k: Annotated[int, typer.Option(min=1, max=200, help="Pins per feed.")] = 20,
    preset: Annotated[str, typer.Option(help="Generator preset of each seed's world.")] = "small",
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/closed_loop.json).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Serve, let the generator's users engage over HTTP, ingest, retrain, reload, serve again
    (each seed on a home of its own under <home>/closed_loop/)."""
    from pinfeed_cli.closed_loop import ClosedLoopConfig
    from pinfeed_cli.closed_loop import closed_loop as run_loop

    project = project_home(home)
    config = ClosedLoopConfig(preset=preset, rounds=rounds, users_per_round=users, k=k)
    target = out or project.reports / "closed_loop.json"
    report = run_loop(project.root / "closed_loop", seeds, config, target, console)
    for phase in report["phases"]:
        rate = phase["engagement_rate"]
        console.print(
            f"{phase['phase']}: engagement {rate['mean']:.4f} "
            f"[{rate['ci95'][0]:.4f}, {rate['ci95'][1]:.4f}]"
        )
    console.print(
        f"served {report['served_impressions']:,}, ingested {report['ingested_impressions']:,},"
        f" acknowledged lost {report['acknowledged_lost']}; report: {target}"
    )
