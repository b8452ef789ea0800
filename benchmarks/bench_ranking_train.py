"""Ranking training throughput: Ray Train (1 and 2 workers) against a plain loop over the same
rows, the same model and the same batch size.

Rows: the training period of `<home>/data/training_sets/ranking.parquet` (the split of
configs/ranking.yaml). The plain loop holds the prepared arrays in memory and calls the same
`train_step` on shuffled batches. Ray Train reads them as a materialised Ray Data set and runs
`training.ranking.ray_loop.train_loop_per_worker`. Two figures per Ray run:
- steady state: examples/s inside the workers' epochs (rank 0's rate x workers; shards are
  equal), what scaling out buys once running;
- end to end: every example of every epoch / wall time of `fit` (worker start-up, checkpoints).

    python -m benchmarks.bench_ranking_train [--home .] [--epochs 3] [--workers 1 --workers 2]
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import typer

from pinfeed.artifacts.ranker import RankerInputs
from pinfeed.events import read_event_set
from pinfeed.home import ProjectHome
from pinfeed.utility import HeadWeights
from training.ranking.config import LossConfig, RankerConfig, RankingTrainConfig, load_job_config
from training.ranking.features import SOURCE_COLUMNS, TOPIC
from training.ranking.job import initial_state
from training.ranking.loss import build_loss
from training.ranking.ray_loop import (
    TRAIN_DATASET,
    RankingLoopConfig,
    build_model,
    prepare_batch,
    ranking_dataset,
    train_loop_per_worker,
)
from training.ranking.record import time_split
from training.ranking.steps import RankerBatch, train_step
from training.ray_options import RayTrainSettings
from training.ray_train import ensure_ray, fit


def plain_loop(
    rows: dict[str, np.ndarray], train: RankingTrainConfig, epochs: int, threads: int
) -> float:
    """Examples/s of `epochs` shuffled epochs in this process with `threads` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = build_model("multi_task", train.model)
    model.load_state_dict(initial_state("multi_task", train.model, rows["dense"], train.seed))
    loss = build_loss(LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=train.learning_rate)
    arrays = RankerInputs(
        rows["dense"], rows["topic"], rows["pin_embedding"], rows["query_embedding"]
    )
    rng, n = np.random.default_rng(0), len(arrays)
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(n)
        for begin in range(0, n, train.batch_size):
            index = order[begin : begin + train.batch_size]
            batch = RankerBatch.from_arrays(arrays.take(index), rows["labels"][index])
            train_step(model, loss, optimizer, batch)
    seconds = time.perf_counter() - start
    torch.set_num_threads(previous)
    return n * epochs / seconds


def ray_run(
    path: Path,
    end: datetime,
    train: RankingTrainConfig,
    dense: np.ndarray,
    importance: HeadWeights,
    workers: int,
    in_memory: bool = True,
) -> tuple[float, float]:
    """(steady-state examples/s, end-to-end examples/s) of one Ray Train fit, the shard held
    in memory (the default) or streamed through Ray Data every epoch."""
    dataset = ranking_dataset(path, train.model.embedding_dim, end=end)
    rows = dataset.count()
    loop = RankingLoopConfig(
        kind="multi_task", train=train, importance=importance, in_memory=in_memory
    )
    config = {
        "loop": loop.model_dump(mode="json"),
        "initial_state": initial_state("multi_task", train.model, dense, train.seed),
    }
    with tempfile.TemporaryDirectory() as folder:
        settings = RayTrainSettings(
            name=f"bench-{workers}", storage_path=Path(folder), num_workers=workers, max_failures=0
        )
        start = time.perf_counter()
        result = fit(train_loop_per_worker, config, {TRAIN_DATASET: dataset}, settings)
        wall = time.perf_counter() - start
    return float(result.metrics["examples_per_s"]) * workers, rows * train.epochs / wall


def main(
    home: Annotated[
        Path, typer.Option(help="Project home with data/ (after `pinfeed run`).")
    ] = Path("."),
    config: Annotated[Path, typer.Option(help="Ranking config (model, batch, split).")] = Path(
        "configs/ranking.yaml"
    ),
    epochs: Annotated[int, typer.Option(help="Epochs per measured run.")] = 3,
    workers: Annotated[list[int] | None, typer.Option(help="Ray Train worker counts.")] = None,
) -> None:
    """Print a Markdown table of training throughput."""
    project = ProjectHome(home.resolve())
    job = load_job_config(config)
    path = project.training_sets / "ranking.parquet"
    meta = read_event_set(project.events).meta
    split = time_split(meta.end, job.split)
    frame = pd.read_parquet(path)
    rows = prepare_batch(frame, meta.embedding_dim, None, split.train_end)
    topics = int(frame[SOURCE_COLUMNS[TOPIC]].max()) + 1
    model = RankerConfig(
        embedding_dim=meta.embedding_dim, num_topics=topics, **job.model.model_dump()
    )
    train = RankingTrainConfig(model=model, batch_size=job.batch_size, epochs=epochs)
    n = rows["labels"].shape[0]
    lines = [
        f"{n:,} training rows x {epochs} epochs, batch {job.batch_size}, ranker "
        f"{job.model.hidden_dims} + 4 heads, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "",
        "| trainer | steady examples/s | end-to-end examples/s |",
        "|---|---|---|",
    ]
    for threads in sorted({1, os.cpu_count() or 1}):
        rate = plain_loop(rows, train, epochs, threads)
        lines.append(f"| plain loop, {threads} torch thread(s) | {rate:,.0f} | {rate:,.0f} |")
    ensure_ray()
    runs = [(count, True) for count in workers or [1, 2]] + [(1, False)]
    for count, in_memory in runs:
        steady, overall = ray_run(
            path, split.train_end, train, rows["dense"], job.baseline.importance, count, in_memory
        )
        how = "" if in_memory else ", streamed each epoch"
        lines.append(
            f"| Ray Train, {count} worker(s) x 1 CPU{how} | {steady:,.0f} | {overall:,.0f} |"
        )
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
