"""`pinfeed run`: the main job end to end on the embedded defaults.

generate (small preset) -> validate -> features build -> feast apply -> materialize ->
point-in-time training sets, each step timed, closing with a summary table. Later issues add
training, export, evaluation and serving as further steps.

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
) -> list[StepResult]:
    """Run every step in order on `home` (its feature_repo/ and data/); return the step results.

    `generator_overrides` shrinks or changes the small preset (the tests use a tiny world).
    """
    from evaluation.query_reward import query_reward_step
    from feature_repo.pipeline import build_features
    from feature_repo.store import apply_definitions, materialize, open_store
    from pinfeed.events import read_event_set
    from pinfeed.synthetic import GeneratorConfig, generate_and_write
    from pinfeed.validate import validate
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

    steps: list[tuple[str, Callable[[], str]]] = [
        ("generate events", generate),
        ("validate events", check),
        ("build features", features),
        ("feast apply", apply),
        ("materialize", load_online),
        ("training sets", training_sets),
        ("query reward", lambda: query_reward_step(home, store_holder[0])),
    ]
    for name, step in steps:
        results.append(_timed(console, name, step))
    console.print(_summary(results, home))
    return results


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
