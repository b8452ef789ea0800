"""The pin index at millions of pins: exact vs HNSW vs IVF (SQ8 and PQ codes), side by side.

    python -m benchmarks.bench_ann --pins 1000000 --json FILE [--kinds flat_ip,ivf_hnsw_sq8]

Per index kind, in one run on the same corpus and queries: build seconds, serialized bytes,
single-query p50/p99 (batch 1, what a Recommender does per query) and recall@100 against the
exact top-100, plus recall@500 and the p50 of a 500-deep search (serving's candidate depth; IVF
uses the nprobe it tuned for that depth). Then an nprobe sweep of the IVF SQ8 index at k=100,
the one knob an operator turns.

The corpus is synthetic: `--clusters` random centres with noise as large as the centres (the
shape of trained tower outputs, which group by topic). `--clusters 0` draws uniform directions,
the worst case for any ANN index (no structure to exploit); run it to see the floor of recall.
Each kind uses the shipped `IndexConfig` settings unless an option says otherwise.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import faiss
import numpy as np
import typer

from benchmarks.bench_retrieval_infer import clustered_unit_vectors, latency_ms, single_query_calls
from pinfeed.artifacts.index import (
    ExactPinIndex,
    HnswPinIndex,
    IndexConfig,
    IvfPinIndex,
    PinIndex,
    ivf_lists,
)

DIM = 64
RECALL_QUERIES = 1000
K = 100  # neighbours per query, the k of every recall figure (and of IVF's nprobe tuning)
DEEP_K = 500  # serving's candidate depth: recall there checks IVF's nprobe scaling with k
KINDS = ("flat_ip", "hnsw_ip", "ivf_hnsw_sq8", "ivf_hnsw_pq")
SWEEP_NPROBE = (8, 16, 32, 64, 128, 256, 512)


def corpus_and_queries(pins: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """([pins, DIM], [RECALL_QUERIES, DIM]) unit vectors from one distribution."""
    n = pins + RECALL_QUERIES
    if clusters:
        vectors = clustered_unit_vectors(n, DIM, clusters, seed=seed)
    else:
        vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors[:pins], vectors[pins:]


def build(kind: str, pin_ids: np.ndarray, corpus: np.ndarray, config: IndexConfig) -> PinIndex:
    """One index of `kind` over the corpus, whatever the corpus size."""
    if kind == "flat_ip":
        return ExactPinIndex.build(pin_ids, corpus, config)
    if kind == "hnsw_ip":
        return HnswPinIndex.build(pin_ids, corpus, config)
    codes = kind.removeprefix("ivf_hnsw_")
    return IvfPinIndex.build(pin_ids, corpus, config.model_copy(update={"ivf_codes": codes}))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true top-k that `found` returned."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(found, truth, strict=True)]))


def measure(index: PinIndex, queries: np.ndarray, truth: np.ndarray, calls: int) -> dict:
    """recall@k over all queries (one batch), p50/p99 over `calls` single-query searches."""
    k = truth.shape[1]
    found, _ = index.search(queries, k)
    p50, p99 = latency_ms(single_query_calls(index, queries, k), calls)
    return {"recall_at_100": recall_at_k(found, truth), "p50_ms": p50, "p99_ms": p99}


def main(
    pins: Annotated[int, typer.Option(help="Pins in the corpus.")] = 1_000_000,
    kinds: Annotated[str, typer.Option(help=f"Comma-separated, of {','.join(KINDS)}.")] = ",".join(
        KINDS
    ),
    clusters: Annotated[int, typer.Option(help="Corpus centres; 0 = uniform directions.")] = 2000,
    calls: Annotated[int, typer.Option(help="Timed single-query calls per measurement.")] = 500,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
    seed: int = 0,
) -> None:
    """Print the ANN benchmark as Markdown (and JSON with --json)."""
    wanted = [kind.strip() for kind in kinds.split(",") if kind.strip()]
    unknown = sorted(set(wanted) - set(KINDS))
    if unknown:
        raise typer.BadParameter(f"{unknown}: not among {list(KINDS)}", param_hint="--kinds")
    config = IndexConfig()
    corpus, queries = corpus_and_queries(pins, clusters, seed)
    pin_ids = np.arange(pins, dtype=np.int64)
    start = time.perf_counter()
    exact = ExactPinIndex.build(pin_ids, corpus, config)
    truth, _ = exact.search(queries, K)
    deep_truth, _ = exact.search(queries, DEEP_K)
    print(f"exact top-{K} of {RECALL_QUERIES} queries: {time.perf_counter() - start:.1f} s")

    results: dict[str, dict] = {}
    sweep: list[dict] = []
    for kind in wanted:
        start = time.perf_counter()
        index = exact if kind == "flat_ip" else build(kind, pin_ids, corpus, config)
        build_s = time.perf_counter() - start
        row = {"build_s": build_s, "bytes": int(faiss.serialize_index(index.index).nbytes)}
        if isinstance(index, IvfPinIndex):
            row["nprobe"] = index.nprobe
        deep, _ = index.search(queries, DEEP_K)
        row["recall_at_500"] = recall_at_k(deep, deep_truth)
        row["p50_ms_at_500"] = latency_ms(single_query_calls(index, queries, DEEP_K), calls)[0]
        results[kind] = row | measure(index, queries, truth, calls)
        print(f"{kind}: {results[kind]}", flush=True)
        if kind == "ivf_hnsw_sq8":
            for nprobe in SWEEP_NPROBE:
                probed = IvfPinIndex(index.index, index.pin_ids, {K: nprobe})
                sweep.append({"nprobe": nprobe} | measure(probed, queries, truth, calls))
        del index

    shape = f"{clusters} clusters" if clusters else "uniform directions"
    print(
        f"\n### Pin index at {pins:,} pins (dim {DIM}, {shape}, k={K}; "
        f"{os.cpu_count()} cores, {faiss.omp_get_max_threads()} faiss threads)\n"
    )
    tuned = {kind: row["nprobe"] for kind, row in results.items() if "nprobe" in row}
    print(f"IVF lists: {ivf_lists(pins, config)}, nprobe tuned at build: {tuned}\n")
    print(
        "| index | build (s) | bytes/pin | p50 / p99 (ms) | p50 vs flat | recall@100 "
        "| recall@500 | p50 at k=500 (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    flat_p50 = results.get("flat_ip", {}).get("p50_ms")
    for kind, row in results.items():
        speedup = f"{flat_p50 / row['p50_ms']:.1f}x" if flat_p50 else "-"
        print(
            f"| {kind} | {row['build_s']:.1f} | {row['bytes'] / pins:.0f} "
            f"| {row['p50_ms']:.3f} / {row['p99_ms']:.3f} | {speedup} "
            f"| {row['recall_at_100']:.4f} | {row['recall_at_500']:.4f} "
            f"| {row['p50_ms_at_500']:.3f} |"
        )
    if sweep:
        print("\n| ivf_hnsw_sq8 nprobe | p50 / p99 (ms) | recall@100 |")
        print("|---:|---:|---:|")
        for row in sweep:
            print(
                f"| {row['nprobe']} | {row['p50_ms']:.3f} / {row['p99_ms']:.3f} "
                f"| {row['recall_at_100']:.4f} |"
            )
    if json_out is not None:
        summary = {
            "pins": pins,
            "dim": DIM,
            "clusters": clusters,
            "k": K,
            "queries": RECALL_QUERIES,
            "threads": faiss.omp_get_max_threads(),
            "kinds": results,
            "ivf_nprobe_sweep": sweep,
        }
        json_out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
