"""Ranking inference speed: ONNX Runtime against torch eager on the multi-task ranker.

One request ranks `rows` candidates (500 by default). Two scenarios:
- single: one request at a time, back to back;
- concurrent: `concurrency` threads each sending requests back to back (what a Serve replica
  with several requests in flight does).
Per engine: ONNX Runtime with default session options, ONNX Runtime tuned
(`pinfeed.artifacts.onnx.inference_session`: full graph optimisation, sequential execution;
intra-op threads = all cores for single requests, 1 per request when requests run concurrently),
and torch eager (`inference_mode`, the same thread count as the tuned session). Latency per call
after warm-up; the weights are random (speed does not depend on them).

    python -m benchmarks.bench_ranking_infer [--rows 500] [--calls 300] [--concurrency 8]
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import onnxruntime as ort
import torch
import typer

from pinfeed.artifacts.layout import RANKER_FILE
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import RankerInputs
from training.ranking.config import RankerConfig
from training.ranking.export import export_ranker
from training.ranking.features import DENSE_FEATURES
from training.ranking.model import MultiTaskRanker

Infer = Callable[[RankerInputs], np.ndarray]


@dataclass(frozen=True)
class Timing:
    scenario: str
    engine: str
    latencies_ms: np.ndarray
    wall_s: float

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    def row(self, torch_p50: float) -> str:
        """One Markdown table row; speedup = torch eager p50 / this p50."""
        p99 = float(np.percentile(self.latencies_ms, 99))
        rate = len(self.latencies_ms) / self.wall_s
        return (
            f"| {self.scenario} | {self.engine} | {self.p50:.2f} | {p99:.2f} | "
            f"{self.latencies_ms.mean():.2f} | {rate:.0f} | "
            f"{torch_p50 / self.p50:.2f}x |"
        )


def _requests(count: int, rows: int, config: RankerConfig, seed: int) -> list[RankerInputs]:
    rng = np.random.default_rng(seed)
    return [
        RankerInputs(
            dense=rng.gamma(1.0, 5.0, size=(rows, len(DENSE_FEATURES))).astype(np.float32),
            topic=rng.integers(0, config.num_topics, size=rows),
            pin_embedding=rng.normal(size=(rows, config.embedding_dim)).astype(np.float32),
            query_embedding=rng.normal(size=(rows, config.embedding_dim)).astype(np.float32),
        )
        for _ in range(count)
    ]


def _torch_infer(model: MultiTaskRanker) -> Infer:
    def infer(arrays: RankerInputs) -> np.ndarray:
        with torch.inference_mode():
            return model(*(torch.from_numpy(a) for a in arrays.as_tuple())).numpy()

    return infer


def _ort_infer(session: ort.InferenceSession) -> Infer:
    return lambda arrays: session.run(None, arrays.feed())[0]


def _timed(infer: Infer, request: RankerInputs) -> float:
    start = time.perf_counter()
    infer(request)
    return (time.perf_counter() - start) * 1e3


def measure(
    infer: Infer, requests: list[RankerInputs], calls: int, concurrency: int, warmup: int
) -> tuple[np.ndarray, float]:
    """Latencies [calls] in ms and the wall time of the measured calls."""

    def worker(offset: int, count: int) -> list[float]:
        return [_timed(infer, requests[(offset + i) % len(requests)]) for i in range(count)]

    per_worker = -(-calls // concurrency)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(worker, range(concurrency), [warmup] * concurrency))
        start = time.perf_counter()
        parts = list(pool.map(worker, range(concurrency), [per_worker] * concurrency))
        wall = time.perf_counter() - start
    return np.concatenate([np.asarray(p) for p in parts]), wall


def main(
    rows: Annotated[int, typer.Option(help="Candidates ranked per request.")] = 500,
    calls: Annotated[int, typer.Option(help="Measured calls per engine and scenario.")] = 300,
    warmup: Annotated[int, typer.Option(help="Unmeasured calls per thread first.")] = 20,
    concurrency: Annotated[int, typer.Option(help="Threads in the concurrent scenario.")] = 8,
    embedding_dim: Annotated[int, typer.Option(help="Content embedding length D.")] = 64,
    threads: Annotated[
        int, typer.Option(help="Intra-op threads for single requests (0: all cores).")
    ] = 0,
) -> None:
    """Print a Markdown table: p50/p99 per call, throughput, speedup over torch eager."""
    cores = threads or os.cpu_count() or 1
    config = RankerConfig(embedding_dim=embedding_dim, num_topics=32)
    torch.manual_seed(0)
    model = MultiTaskRanker(config).eval()
    requests = _requests(16, rows, config, seed=0)
    model.fit_normalizer(torch.from_numpy(np.concatenate([r.dense for r in requests])))
    lines = [
        f"ranker {config.hidden_dims} + 4 heads, D={embedding_dim}, {rows} rows/request, "
        f"{calls} calls after {warmup} warm-up/thread, {os.cpu_count()} CPUs; torch "
        f"{torch.__version__}, onnxruntime {ort.__version__}",
        "",
        "| scenario | engine | p50 ms | p99 ms | mean ms | requests/s | p50 speedup vs torch |",
        "|---|---|---|---|---|---|---|",
    ]
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        export_ranker(model, Path(folder), negative_sample_rate=0.1)
        path = Path(folder) / RANKER_FILE
        default = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for scenario, workers, intra in (
            ("1 x 500", 1, cores),
            (f"{concurrency} concurrent", concurrency, 1),
        ):
            torch.set_num_threads(intra)
            engines = {
                "torch eager": _torch_infer(model),
                "ORT default options": _ort_infer(default),
                f"ORT tuned ({intra} intra-op)": _ort_infer(
                    inference_session(path, intra_op_threads=intra, prefer_gpu=False)
                ),
            }
            label = scenario.replace("500", str(rows))
            timings = [
                Timing(label, engine, *measure(infer, requests, calls, workers, warmup))
                for engine, infer in engines.items()
            ]
            lines += [timing.row(timings[0].p50) for timing in timings]
    torch.set_num_threads(default_threads)
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
