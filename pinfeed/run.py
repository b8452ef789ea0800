"""`pinfeed run`: the main job end to end on the embedded defaults.

generate (small preset) -> validate -> features build -> feast apply -> materialize ->
point-in-time training sets -> train retrieval (Ray Train, ONNX, index) -> train ranking
(Ray Train, ONNX, calibration) -> evaluate ranking -> optimise utility weights (Ax) -> cluster
rewards + query-reward simulation -> deploy the Serve app, ask it for recommendations, shut it
down. Each step is timed; a summary table closes the run.

This is the CLI's edge, so it may import every part of the project; it does so inside
`run_pipeline`, keeping `import pinfeed` light.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float
    detail: str


def _timed(console: Console, name: str, step: Callable[[], str]) -> StepResult:
    console.rule(f"[bold]{name}")
    start = time.perf_counter()
    detail = step()
    result = StepResult(name, time.perf_counter() - start, detail)
    console.print(f"[green]done[/] {name} in {result.seconds:.1f} s: {detail}")
    return result


def _summary(results: list[StepResult], home: ProjectHome) -> Table:
    table = Table(title=f"pinfeed run ({home.root})")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for result in results:
        table.add_row(result.name, f"{result.seconds:.1f}", result.detail)
    table.add_row("total", f"{sum(r.seconds for r in results):.1f}", "")
    return table


def run_pipeline(
    home: ProjectHome,
    *,
    seed: int = 0,
    console: Console | None = None,
    generator_overrides: dict | None = None,
    serve: bool = True,
    keep_serving: bool = False,
    stop_after: str | None = None,
) -> list[StepResult]:
    """Run every step in order on `home` (its feature_repo/ and data/); return the step results.

    `generator_overrides` shrinks or changes the small preset (the tests use a tiny world);
    `serve=False` stops before the serving demo; `keep_serving` leaves the app up;
    `stop_after` names the last step to run (e.g. "training sets").
    """
    from evaluation.query_reward import query_reward_step
    from evaluation.ranking import evaluate_ranking
    from evaluation.utility_search import UtilitySearchConfig, optimize_utility
    from feature_repo.pipeline import build_features
    from feature_repo.store import apply_definitions, materialize, open_store
    from pinfeed.events import read_event_set
    from pinfeed.synthetic import GeneratorConfig, generate_and_write
    from pinfeed.validate import validate
    from training.ranking.job import RankingJobConfig, ranking_run_dir, train_ranking
    from training.retrieval.job import new_run_id, train_retrieval_for_pipeline
    from training.training_sets import TrainingSetConfig, build_ranking_set, build_retrieval_set

    console = console or Console()
    config = GeneratorConfig.preset("small", seed=seed, **(generator_overrides or {}))
    results: list[StepResult] = []

    def generate() -> str:
        summary = generate_and_write(config, home.events)
        console.print(summary)
        return f"{home.events}"

    def check() -> str:
        report = validate(read_event_set(home.events))
        report.raise_if_bad()
        return (
            ", ".join(f"{t.table} {t.rows:,}" for t in report.tables.values()) + " rows, all valid"
        )

    def features() -> str:
        result = build_features(read_event_set(home.events), home.features)
        return ", ".join(f"{name} {rows:,}" for name, rows in result.rows.items())

    store_holder: list = []

    def apply() -> str:
        store = open_store(home)
        apply_definitions(store)
        store_holder.append(store)
        return (
            f"registry {home.feast / 'registry.db'}, online store {store.config.online_store.type}"
        )

    def load_online() -> str:
        events = read_event_set(home.events)
        # Snapshots are stamped at the end of each day: load through the day after the period.
        end = events.meta.end + timedelta(days=1)
        materialize(store_holder[0], end=end)
        return f"online store filled up to {end.isoformat()}"

    def training_sets() -> str:
        events = read_event_set(home.events)
        set_config = TrainingSetConfig(seed=seed)
        retrieval = build_retrieval_set(store_holder[0], events, home.training_sets, set_config)
        ranking = build_ranking_set(store_holder[0], events, home.training_sets, set_config)
        return f"{_rows(retrieval):,} retrieval and {_rows(ranking):,} ranking examples"

    run_id = new_run_id()

    def retrieval() -> str:
        return f"towers + index in {train_retrieval_for_pipeline(home, run_id=run_id)}"

    def ranking() -> str:
        return f"ranker in {train_ranking(RankingJobConfig(epochs=2, run_id=run_id), home)}"

    def ranking_report() -> str:
        report = evaluate_ranking(
            home, home.reports / "ranking.json", run_dir=ranking_run_dir(home, run_id)
        )
        return "; ".join(
            f"{head} ECE {m['ece_raw']:.3f}->{m['ece_cal']:.3f}"
            for head, m in report["mtl"].items()
        )

    def utility() -> str:
        search = UtilitySearchConfig(
            trials=8, initialization_trials=5, bias_check_derived=(), seed=seed
        )
        report = optimize_utility(
            home,
            home.reports / "utility.json",
            run_dir=ranking_run_dir(home, run_id),
            config=search,
        )
        best, hand = report["best"], report["hand_picked"]
        return (
            f"long_click PR-AUC {best['long_click_pr_auc']:.4f} (hand-picked {hand['long_click_pr_auc']:.4f}),"
            f" constraints met: {best['constraints_met']}"
        )

    def serving_demo() -> str:
        from serving.app import demo

        answers = demo(home.root, run_id=run_id, keep_serving=keep_serving)
        for answer in answers:
            items = ", ".join(
                f"{item['pin_id']} (u={item['utility']:.3f}, cluster {item['source']['cluster_id']})"
                for item in answer["items"]
            )
            flags = f"degraded={answer['degraded']} cold_start={answer.get('cold_start')}"
            console.print(f"POST /recommend -> request {answer['request_id']}, {flags}: {items}")
        return f"{len(answers)} HTTP answers" + (" (app left running)" if keep_serving else "")

    steps: list[tuple[str, Callable[[], str]]] = [
        ("generate events", generate),
        ("validate events", check),
        ("build features", features),
        ("feast apply", apply),
        ("materialize", load_online),
        ("training sets", training_sets),
        ("train retrieval", retrieval),
        ("train ranking", ranking),
        ("evaluate ranking", ranking_report),
        ("optimise utility", utility),
        ("query reward", lambda: query_reward_step(home, store_holder[0])),
    ]
    if serve:
        steps.append(("serve", serving_demo))
    names = [name for name, _ in steps]
    if stop_after is not None and stop_after not in names:
        raise ConfigError(f"stop_after: {stop_after!r} is not a step; steps: {names}")
    for name, step in steps:
        results.append(_timed(console, name, step))
        if name == stop_after:
            break
    console.print(_summary(results, home))
    return results


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
