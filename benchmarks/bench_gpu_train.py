"""Both models' training steps on the GPU vs the CPU of the same machine, in one run.

    python -m benchmarks.bench_gpu_train --home . --steps 200          # after `pinfeed run`

What a Ray Train worker does per batch, without Ray (so it also runs where only torch is
installed): the retrieval step (`training.retrieval.train_step.train_step`: both towers,
sampled softmax with logQ correction, extra positives masked out of the in-batch negatives)
on rows of the home's real retrieval training set, and the ranking step
(`training.ranking.steps.train_step`: the four-head ranker and its loss) on batches of the
ranker's input shapes. Every device trains the same batches from the same seed; the first
`--warmup` steps are not timed, and CUDA is synchronised before every clock read. Reported:
examples/s and step p50/p99 per device, the GPU/CPU ratio, and each model's final loss on both
devices (they must agree to within float noise, else the GPU path computes something else).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pinfeed.artifacts.ranker import RankerInputs
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from training.ranking.config import LossConfig, RankerConfig
from training.ranking.features import DENSE_FEATURES
from training.ranking.loss import build_loss
from training.ranking.model import MultiTaskRanker
from training.ranking.steps import RankerBatch
from training.ranking.steps import train_step as ranking_step
from training.retrieval.corpus import read_pin_corpus
from training.retrieval.dataset import pin_sampling, sized_towers, weighted_rows
from training.retrieval.features import batch_from_table
from training.retrieval.job_config import RetrievalSettings
from training.retrieval.model import RetrievalModel
from training.retrieval.sampling import PinSampling
from training.retrieval.train_step import train_step as retrieval_step

Step = Callable[[int], float]


def retrieval_steps(home: ProjectHome, device: torch.device, batch_size: int) -> Step:
    """A closure running retrieval step `i` on `device` (batches drawn by a fixed seed)."""
    table = pq.read_table(home.training_sets / "retrieval.parquet")
    corpus = read_pin_corpus(home.features)
    towers = sized_towers(corpus, table.column("user_id").to_numpy())
    config = RetrievalSettings(batch_size=batch_size).sized(towers)
    rows = weighted_rows(table, config)
    data = batch_from_table(rows)
    torch.manual_seed(config.seed)
    model = RetrievalModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sampling = PinSampling(pin_sampling(rows, config).log_q_table.to(device))
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))

    def step(i: int) -> float:
        start = (i * batch_size) % max(len(data) - batch_size, 1)
        batch = data.select(order[start : start + batch_size]).to(device)
        loss = retrieval_step(model, batch, config, sampling, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def ranking_steps(device: torch.device, batch_size: int, dense_features: int) -> Step:
    """A closure running ranking step `i` on `device` on synthetic rows of the ranker's shapes
    (the step's cost depends on shapes, not values)."""
    rng = np.random.default_rng(0)
    rows = 64 * batch_size
    arrays = RankerInputs(
        dense=rng.standard_normal((rows, dense_features)).astype(np.float32),
        topic=rng.integers(0, 60, rows).astype(np.int64),
        pin_embedding=rng.standard_normal((rows, 32)).astype(np.float32),
        query_embedding=rng.standard_normal((rows, 32)).astype(np.float32),
    )
    labels = (rng.random((rows, len(ENGAGEMENTS))) < 0.1).astype(np.float32)
    torch.manual_seed(0)
    model = MultiTaskRanker(RankerConfig(embedding_dim=32, num_topics=61))
    model.fit_normalizer(torch.from_numpy(arrays.dense))
    model.to(device)
    loss_fn = build_loss(LossConfig()).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-3)
    full = RankerBatch.from_arrays(arrays, labels)
    on_device = RankerBatch(*(t.to(device) for t in (*full.inputs(), full.labels)))

    def step(i: int) -> float:
        start = (i * batch_size) % (rows - batch_size)
        take = slice(start, start + batch_size)
        part = RankerBatch(*(t[take] for t in (*on_device.inputs(), on_device.labels)))
        return ranking_step(model, loss_fn, optimizer, part)

    return step


def measure(step: Step, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        step(i)
    sync()
    seconds, loss = [], float("nan")
    for i in range(warmup, warmup + steps):
        began = time.perf_counter()
        loss = step(i)  # float(loss) already waits for the device
        sync()
        seconds.append(time.perf_counter() - began)
    total = sum(seconds)
    return {
        "p50_ms": 1e3 * float(np.percentile(seconds, 50)),
        "p99_ms": 1e3 * float(np.percentile(seconds, 99)),
        "steps_per_s": steps / total,
        "last_loss": loss,
    }


def run(home: ProjectHome, steps: int, warmup: int, batch_size: int) -> str:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.insert(0, torch.device("cuda"))
    results: dict[tuple[str, str], dict[str, float]] = {}
    for device in devices:
        results[("retrieval", device.type)] = measure(
            retrieval_steps(home, device, batch_size), device, steps, warmup
        )
        results[("ranking", device.type)] = measure(
            ranking_steps(device, batch_size, len(DENSE_FEATURES)), device, steps, warmup
        )
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    lines = [
        f"{steps} timed steps after {warmup}, batch {batch_size}; GPU: {name}; CPU threads: "
        f"{torch.get_num_threads()}; torch {torch.__version__}",
        "",
        "| model | device | examples/s | step p50 ms | step p99 ms | vs CPU | loss after |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (model, device), r in results.items():
        cpu = results[(model, "cpu")]["steps_per_s"]
        lines.append(
            f"| {model} | {device} | {r['steps_per_s'] * batch_size:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['steps_per_s'] / cpu:.1f}x | {r['last_loss']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("."))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    print(run(ProjectHome(args.home.resolve()), args.steps, args.warmup, args.batch_size))


if __name__ == "__main__":
    main()
