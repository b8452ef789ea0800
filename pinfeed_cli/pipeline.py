"""`pinfeed run`: the main job end to end, each step the function its own command calls
(`pinfeed_cli.steps`), in the README's order:

    data generate -> data validate -> features build -> features apply -> features materialize
    -> features training-sets -> train retrieval -> train ranking -> evaluate ranking
    -> optimize utility -> features rewards -> evaluate query-reward
    -> evaluate closed-loop (short, on a tiny world of its own) -> report -> serve (demo)

Both models land in one run. `pinfeed run` trains and searches with a shorter budget than the
configs' (`RunBudget`); each step's title names the equivalent command. Each step is timed and
its peak memory (this process and its Ray workers, `peak_memory.PeakRss`) kept; a summary
table closes the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from pinfeed.artifacts.layout import new_run_id
from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome
from pinfeed_cli import steps
from pinfeed_cli.peak_memory import PeakRss


@dataclass(frozen=True)
class StepResult:
    name: str
    command: str
    seconds: float
    detail: str
    peak_rss_gib: float
    """Largest resident memory of this process and its descendants during the step."""


@dataclass(frozen=True)
class RunBudget:
    """How much `pinfeed run` spends on the slow steps (about 2.5 minutes on 2 cores for the
    small preset); the configs in configs/ hold the full budgets the commands use."""

    retrieval_epochs: int = 3
    ranking_epochs: int = 2
    utility_trials: int = 8
    utility_initialization_trials: int = 5
    query_reward_rounds: int = 40
    query_reward_seeds: int = 3
    closed_loop_users: int = 30
    closed_loop_rounds: int = 1


def _timed(console: Console, name: str, command: str, step: Callable[[], str]) -> StepResult:
    console.rule(f"[bold]{name}[/] [dim]({command})[/]")
    start = time.perf_counter()
    with PeakRss() as peak:
        detail = step()
    result = StepResult(name, command, time.perf_counter() - start, detail, peak.gib)
    console.print(
        f"[green]done[/] {name} in {result.seconds:.1f} s (peak RSS {result.peak_rss_gib:.2f} "
        f"GiB): {detail}"
    )
    return result


def _summary(results: list[StepResult], home: ProjectHome) -> Table:
    table = Table(title=f"pinfeed run ({home.root})")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("peak RSS GiB", justify="right")
    table.add_column("result")
    for result in results:
        table.add_row(
            result.name, f"{result.seconds:.1f}", f"{result.peak_rss_gib:.2f}", result.detail
        )
    peak = max((r.peak_rss_gib for r in results), default=0.0)
    table.add_row("total", f"{sum(r.seconds for r in results):.1f}", f"{peak:.2f}", "")
    return table


def _ranking_summary(report: dict[str, Any]) -> str:
    return "; ".join(
        f"{head} ECE {m['ece_raw']:.3f}->{m['ece_cal']:.3f}" for head, m in report["mtl"].items()
    )


def _utility_summary(report: dict[str, Any]) -> str:
    value = {
        arm: report[arm]["long_click_pr_auc"] for arm in ("best", "random_search", "hand_picked")
    }
    return (
        f"long_click PR-AUC: Ax {value['best']:.4f}, random search {value['random_search']:.4f}, "
        f"hand-picked {value['hand_picked']:.4f}"
    )


def _closed_loop(home: ProjectHome, budget: RunBudget, console: Console) -> str:
    from pinfeed_cli.closed_loop import ClosedLoopConfig, closed_loop

    config = ClosedLoopConfig(
        preset="tiny",
        rounds=budget.closed_loop_rounds,
        users_per_round=budget.closed_loop_users,
        k=10,
        retrieval_epochs=1,
        ranking_epochs=1,
    )
    report = closed_loop(
        home.root / "closed_loop", 1, config, home.reports / "closed_loop.json", console
    )
    rates = " -> ".join(f"{p['engagement_rate']['mean']:.3f}" for p in report["phases"])
    return (
        f"engagement {rates} (before -> after retraining on served traffic); served "
        f"{report['served_impressions']:,}, ingested {report['ingested_impressions']:,}, "
        f"acknowledged lost {report['acknowledged_lost']}, skew match "
        f"{report['skew']['match_rate']:.3f}"
    )


def run_pipeline(
    home: ProjectHome,
    *,
    preset: str = "small",
    seed: int = 0,
    console: Console | None = None,
    generator_overrides: dict | None = None,
    budget: RunBudget = RunBudget(),
    serve: bool = True,
    keep_serving: bool = False,
    stop_after: str | None = None,
) -> list[StepResult]:
    """Run every step in order on `home` (its feature_repo/ and data/); the step results.

    `generator_overrides` change the preset's world (the tests use tiny ones); `serve=False`
    stops before the serving demo; `keep_serving` leaves the app up; `stop_after` names the
    last step to run (e.g. "training sets").
    """
    from evaluation.query_reward import format_comparison

    console = console or Console()
    run_id = new_run_id()
    plan: list[tuple[str, str, Callable[[], str]]] = [
        (
            "generate events",
            f"pinfeed data generate --preset {preset} --seed {seed}",
            lambda: steps.generate(
                home, preset=preset, seed=seed, overrides=generator_overrides, console=console
            ),
        ),
        ("validate events", "pinfeed data validate", lambda: steps.validate_or_raise(home)),
        (
            "build features",
            "pinfeed features build",
            lambda: ", ".join(
                f"{name} {rows:,}" for name, rows in steps.build_features(home).rows.items()
            ),
        ),
        ("feast apply", "pinfeed features apply", lambda: steps.apply(home)),
        ("materialize", "pinfeed features materialize", lambda: steps.materialize(home)),
        (
            "training sets",
            f"pinfeed features training-sets --seed {seed}",
            lambda: steps.training_sets(home, seed),
        ),
        (
            "train retrieval",
            f"pinfeed train retrieval --epochs {budget.retrieval_epochs}",
            lambda: steps.train(home, "retrieval", run_id=run_id, epochs=budget.retrieval_epochs),
        ),
        (
            "train ranking",
            f"pinfeed train ranking --epochs {budget.ranking_epochs}",
            lambda: steps.train(home, "ranking", run_id=run_id, epochs=budget.ranking_epochs),
        ),
        (
            "evaluate ranking",
            "pinfeed evaluate ranking",
            lambda: _ranking_summary(steps.evaluate_ranking(home, run_id=run_id)),
        ),
        (
            "optimise utility",
            f"pinfeed optimize utility --trials {budget.utility_trials} --initialization-trials "
            f"{budget.utility_initialization_trials} --no-bias-check --seed {seed}",
            lambda: _utility_summary(
                steps.optimize_utility(
                    home,
                    trials=budget.utility_trials,
                    initialization_trials=budget.utility_initialization_trials,
                    bias_check=False,
                    seed=seed,
                    run_id=run_id,
                )
            ),
        ),
        ("cluster rewards", "pinfeed features rewards", lambda: steps.rewards(home)),
        (
            "query reward",
            f"pinfeed evaluate query-reward --rounds {budget.query_reward_rounds} --seeds "
            f"{budget.query_reward_seeds}",
            lambda: format_comparison(
                steps.evaluate_query_reward(
                    home, rounds=budget.query_reward_rounds, seeds=budget.query_reward_seeds
                ).report
            ),
        ),
        (
            "closed loop",
            f"pinfeed evaluate closed-loop --seeds 1 --rounds {budget.closed_loop_rounds} "
            f"--users {budget.closed_loop_users} --k 10 --preset tiny",
            lambda: _closed_loop(home, budget, console),
        ),
        ("report", "pinfeed report", lambda: f"page {steps.report(home)}"),
    ]
    if serve:
        plan.append(
            (
                "serve",
                "pinfeed serve",
                lambda: serving_demo(home, run_id, console, keep_serving=keep_serving),
            )
        )
    names = [name for name, _, _ in plan]
    if stop_after is not None and stop_after not in names:
        raise ConfigError(f"stop_after: {stop_after!r} is not a step; steps: {names}")
    results: list[StepResult] = []
    for name, command, step in plan:
        results.append(_timed(console, name, command, step))
        if name == stop_after:
            break
    console.print(_summary(results, home))
    return results


def demo_requests(base_url: str, users: Sequence[int], k: int = 5) -> list[dict[str, Any]]:
    """Ask for `k` pins for each user and one unknown user, send one click of feedback; the
    answers."""
    from serving.client import post_json, wait_healthy

    wait_healthy(base_url)
    answers = [
        post_json(f"{base_url}/recommend", {"user_id": int(user), "k": k})
        for user in [*users, 2**62]
    ]
    first = answers[0]
    if first["items"]:
        click = {
            "request_id": first["request_id"],
            "pin_id": first["items"][0]["pin_id"],
            "kind": "click",
        }
        post_json(f"{base_url}/feedback", click)
    return answers


def serving_demo(
    home: ProjectHome, run_id: str, console: Console, *, keep_serving: bool, port: int = 8000
) -> str:
    """Deploy `run_id`, print a few real HTTP answers, shut down unless `keep_serving`."""
    from ray import serve

    from feature_repo.pipeline.clusters import users_with_clusters
    from serving.app import CONFIG_FILE, serve_app

    base = serve_app(CONFIG_FILE, {"home": str(home.root), "run_id": run_id}, port=port)
    try:
        answers = demo_requests(base, users_with_clusters(home.features)[:2])
    finally:
        if not keep_serving:
            serve.shutdown()
    for answer in answers:
        items = ", ".join(
            f"{item['pin_id']} (u={item['utility']:.3f}, cluster {item['source']['cluster_id']})"
            for item in answer["items"]
        )
        flags = f"degraded={answer['degraded']} cold_start={answer['cold_start']}"
        console.print(f"POST /recommend -> request {answer['request_id']}, {flags}: {items}")
    return f"{len(answers)} HTTP answers from {base}" + (
        " (app left running)" if keep_serving else ""
    )
