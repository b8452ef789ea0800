"""Retrieval training throughput: Ray Train (1 and 2 workers) vs the plain torch loop.

    python -m benchmarks.bench_retrieval_train [--home .] [--epochs 3] [--batch-size 1024]

Same data (the home's retrieval training set, `dual_positive` rows), same `train_step`, same
batch size. Reports examples/s in steady state (epochs after the first, from each epoch's own
timing) and end to end (rows x epochs / wall time of the whole run, start-up included), and
the ratio Ray / plain in steady state, and the wall time spent outside epochs (start-up,
reading the shard into memory, checkpoints, shutdown). The plain loop runs with one torch thread, as a Ray worker
with one CPU does (Ray sets OMP_NUM_THREADS to the worker's CPUs). Needs `pinfeed run` first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import ray.data
import torch

from pinfeed.home import ProjectHome
from training.ray_options import RayTrainSettings
from training.ray_train import ensure_ray, fit
from training.retrieval.config import RetrievalConfig
from training.retrieval.corpus import read_pin_corpus
from training.retrieval.dataset import (
    VariantRows,
    known_user_ids,
    pin_sampling,
    sized_towers,
    weighted_rows,
)
from training.retrieval.features import batch_from_table
from training.retrieval.job_config import RetrievalSettings
from training.retrieval.model import RetrievalModel
from training.retrieval.ray_loop import RetrievalLoopConfig, retrieval_loop
from training.retrieval.sampling import PinSampling
from training.retrieval.train_step import train_step


@dataclass(frozen=True)
class Throughput:
    name: str
    steady_examples_per_s: float
    end_to_end_examples_per_s: float
    wall_s: float
    outside_epochs_s: float
    """Wall time not spent in epochs: start-up, reading the shard, checkpoints, shutdown."""


def plain_loop(config: RetrievalConfig, rows_path: Path, sampling: PinSampling) -> Throughput:
    """The single-process loop over the same rows (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    data = batch_from_table(pq.read_table(rows_path))
    torch.manual_seed(config.seed)
    model = RetrievalModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    epoch_rates, epoch_seconds = [], 0.0
    for _ in range(config.epochs):
        epoch_start = time.perf_counter()
        order = torch.randperm(len(data))
        for start in range(0, len(data), config.batch_size):
            loss = train_step(
                model, data.select(order[start : start + config.batch_size]), config, sampling
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch_seconds += time.perf_counter() - epoch_start
        epoch_rates.append(len(data) / (time.perf_counter() - epoch_start))
    wall = time.perf_counter() - started
    torch.set_num_threads(threads)
    steady = sum(epoch_rates[1:]) / max(len(epoch_rates) - 1, 1)
    end_to_end = len(data) * config.epochs / wall
    return Throughput("plain torch loop", steady, end_to_end, wall, wall - epoch_seconds)


def ray_train(
    config: RetrievalConfig,
    rows_path: Path,
    sampling: PinSampling,
    workers: int,
    storage: Path,
    in_memory: bool = True,
) -> Throughput:
    """Ray Train over the same rows, `workers` workers sharing the machine's CPUs; the shard
    held in memory (the default) or streamed through Ray Data every epoch."""
    started = time.perf_counter()
    dataset = ray.data.read_parquet(str(rows_path)).map_batches(
        VariantRows(config), batch_format="pyarrow"
    )
    settings = RayTrainSettings(
        name=f"bench-{workers}-{in_memory}",
        storage_path=storage,
        num_workers=workers,
        cpus_per_worker=1 / workers,
    )
    loop = RetrievalLoopConfig(config, sampling.log_q_table.numpy(), in_memory=in_memory)
    result = fit(retrieval_loop, loop.as_loop_config(), {"train": dataset}, settings)
    wall = time.perf_counter() - started
    history = result.metrics_dataframe if hasattr(result, "metrics_dataframe") else None
    rows = float(result.metrics["rows"])
    steady = float(result.metrics["examples_per_s"])
    in_epochs = float(result.metrics["epoch_seconds"]) * config.epochs
    if history is not None and len(history) > 1:
        steady = float(history["examples_per_s"].iloc[1:].mean())
        in_epochs = float(history["epoch_seconds"].sum())
    name = f"Ray Train, {workers} worker(s)" + ("" if in_memory else ", streamed each epoch")
    return Throughput(name, steady, rows * config.epochs / wall, wall, wall - in_epochs)


def markdown(results: list[Throughput], rows: int, epochs: int) -> str:
    plain = results[0]
    lines = [
        f"Retrieval training, {rows:,} rows x {epochs} epochs (dual_positive), batch 1024.",
        "",
        "| trainer | steady examples/s | this / plain (steady) | end-to-end examples/s "
        "| wall s | outside epochs s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        ratio = result.steady_examples_per_s / plain.steady_examples_per_s
        lines.append(
            f"| {result.name} | {result.steady_examples_per_s:,.0f} | {ratio:.2f} | "
            f"{result.end_to_end_examples_per_s:,.0f} | {result.wall_s:.1f} "
            f"| {result.outside_epochs_s:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=Path("."))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    home = ProjectHome(args.home.resolve())
    table = pq.read_table(home.training_sets / "retrieval.parquet")
    corpus = read_pin_corpus(home.features)
    towers = sized_towers(corpus, known_user_ids(home.events / "users.parquet", table))
    config = RetrievalSettings(epochs=args.epochs, batch_size=args.batch_size).sized(towers)
    rows = weighted_rows(table, config)
    sampling = pin_sampling(rows, config)
    ensure_ray(num_cpus=2)
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as work:
        rows_path = Path(work) / "rows.parquet"
        pq.write_table(rows, rows_path)
        results = [plain_loop(config, rows_path, sampling)]
        for workers, in_memory in ((1, True), (2, True), (1, False)):
            results.append(
                ray_train(config, rows_path, sampling, workers, Path(work) / "ray", in_memory)
            )
    print(markdown(results, rows.num_rows, args.epochs))


if __name__ == "__main__":
    main()
