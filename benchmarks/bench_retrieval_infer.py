"""Retrieval inference speed: query tower (ONNX Runtime vs torch eager) and pin index (exact vs HNSW).

    python -m benchmarks.bench_retrieval_infer [--calls 300] [--pins 100000]

Prints a Markdown report. The towers carry random weights (speed does not depend on training);
the index holds random clustered unit vectors shaped like pin tower outputs. Latencies are per
call, measured after warm-up, one call at a time (what a Retriever replica does per request).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from pinfeed.artifacts.index import ExactPinIndex, HnswPinIndex, IndexConfig
from pinfeed.artifacts.layout import QUERY_TOWER_FILE
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.retrieval import QUERY_TOWER_INPUTS
from training.retrieval.config import RetrievalConfig, TowerConfig
from training.retrieval.export import example_query_inputs, export_retrieval
from training.retrieval.model import RetrievalModel

WARMUP = 50


def latency_ms(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(p50, p99) wall milliseconds of `call` over `calls` runs after `WARMUP` untimed ones."""
    for _ in range(WARMUP):
        call()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def bench_query_tower(calls: int, threads: int) -> list[str]:
    """Markdown rows: ORT vs torch eager at batch 1 and 64."""
    config = RetrievalConfig(
        towers=TowerConfig(
            n_user_buckets=100_000, n_pin_buckets=100_000, n_topics=64, content_dim=64
        )
    )
    model = RetrievalModel(config).eval()
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_retrieval(model, config, Path(tmp))
        session = inference_session(Path(tmp) / QUERY_TOWER_FILE, intra_op_threads=threads)
        provider = session.get_providers()[0]
        for batch_size in (1, 64):
            inputs = example_query_inputs(config, batch_size)
            feeds = {name: t.numpy() for name, t in zip(QUERY_TOWER_INPUTS, inputs, strict=True)}

            def eager(inputs: tuple[torch.Tensor, ...] = inputs) -> torch.Tensor:
                with torch.inference_mode():
                    return model.query_tower(*inputs)

            def onnx(feeds: dict[str, np.ndarray] = feeds) -> list[np.ndarray]:
                return session.run(None, feeds)

            torch_p50, torch_p99 = latency_ms(eager, calls)
            ort_p50, ort_p99 = latency_ms(onnx, calls)
            rows.append(
                f"| {batch_size} | {torch_p50:.3f} | {torch_p99:.3f} | {ort_p50:.3f} | {ort_p99:.3f} "
                f"| {torch_p50 / ort_p50:.2f}x | {torch_p99 / ort_p99:.2f}x | {provider} |"
            )
    return rows


def clustered_unit_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """[n, dim] unit vectors around `clusters` random centres, noise as large as the centres
    (looser than the unit test's clusters, so the ANN has work to do)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def single_query_calls(
    index: ExactPinIndex | HnswPinIndex, queries: np.ndarray, k: int
) -> Callable[[], object]:
    """A call that searches the next query alone each time (cycling through `queries`)."""
    rows: Iterator[int] = itertools.cycle(range(len(queries)))

    def one_query() -> object:
        b = next(rows)
        return index.search(queries[b : b + 1], k)

    return one_query


def bench_index(pins: int, calls: int, k: int) -> list[str]:
    """Markdown rows: build time, single-query p50/p99 and recall@k vs exact."""
    vectors = clustered_unit_vectors(pins + calls, 64, 200, seed=0)
    corpus, queries = vectors[:pins], vectors[pins:]
    pin_ids = np.arange(pins)
    config = IndexConfig()
    rows, results = [], {}
    for kind in (ExactPinIndex, HnswPinIndex):
        start = time.perf_counter()
        index = kind.build(pin_ids, corpus, config)
        build_s = time.perf_counter() - start
        results[kind.kind], _ = index.search(queries, k)
        p50, p99 = latency_ms(single_query_calls(index, queries, k), calls)
        recall = np.mean(
            [
                len(set(a) & set(e)) / k
                for a, e in zip(results[kind.kind], results["flat_ip"], strict=True)
            ]
        )
        rows.append(
            f"| {kind.kind} | {kind.exact} | {build_s:.1f} | {p50:.3f} | {p99:.3f} | {recall:.4f} |"
        )
    return rows


def main(
    calls: Annotated[
        int, typer.Option(help="Timed calls per measurement (after 50 warm-up calls).")
    ] = 300,
    pins: Annotated[int, typer.Option(help="Pins in the index benchmark.")] = 100_000,
    k: Annotated[int, typer.Option(help="Neighbours per index query.")] = 100,
    threads: Annotated[
        int, typer.Option(help="Intra-op threads for torch and ORT.")
    ] = os.cpu_count() or 1,
) -> None:
    """Print the retrieval inference benchmark as Markdown."""
    print(f"## Retrieval inference ({os.cpu_count()} CPU cores, {threads} intra-op threads)\n")
    print("### Query tower: torch eager vs ONNX Runtime (graph optimisation ALL), ms per call\n")
    print(
        "| batch | torch p50 | torch p99 | ORT p50 | ORT p99 | p50 speed-up | p99 speed-up | ORT provider |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in bench_query_tower(calls, threads):
        print(row)
    print(f"\n### Pin index: {pins} pins, dim 64, k={k}, one query per call, ms\n")
    print("| index | exact | build s | p50 | p99 | recall@k vs exact |")
    print("|---|---|---|---|---|---|")
    for row in bench_index(pins, calls, k):
        print(row)


if __name__ == "__main__":
    typer.run(main)
