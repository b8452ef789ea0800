"""`pinfeed evaluate`: prove each method on data; reports under reports/."""

from __future__ import annotations

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
    home: HomeOption = None,
) -> None:
    """Ablation of the positive signal: Recall@K of held-out conversions, exact and through the index."""
    report = steps.evaluate_retrieval(project_home(home), seeds=seeds, out=out, events=events)
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


@app.command("query-reward")
@project_errors
def query_reward(
    rounds: Annotated[
        int, typer.Option(min=2, help="Simulated rounds (4 per simulated day).")
    ] = 60,
    seeds: Annotated[
        int, typer.Option(min=1, help="Simulation seeds; intervals are over seeds.")
    ] = 3,
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/query_reward.json).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Closed-loop simulation: count vs reward_offline vs reward_realtime query selection."""
    from evaluation.query_reward import format_comparison

    result = steps.evaluate_query_reward(project_home(home), rounds=rounds, seeds=seeds, out=out)
    console.print(format_comparison(result.report))
    console.print(f"report: {result.json_path} and {result.png_path}")
