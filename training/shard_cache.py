"""A Ray Train worker's data shard converted to tensors once, then reshuffled every epoch.

Ray Data's `iter_torch_batches` converts Arrow to tensors and refills its shuffle buffer on every
epoch; for the tabular sets here that conversion cost more than the training step (a Ray worker
ran at 0.19x the plain loop's examples/s, `docs/benchmarks.md`). A plain loop converts once and
indexes a permutation; `shard_in_memory` decides when a worker can do the same, `shard_tensors`
reads the shard once (on the worker's device), and `shuffled_batches` yields each epoch's batches.

Shards too big for memory keep streaming through Ray Data each epoch (the loops' other path).
Each worker caches the rows of its first pass, so with several workers the partition of rows
stays fixed across epochs (streaming split may deal blocks differently per epoch); each worker
still sees its rows in a new order every epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch

IN_MEMORY_MAX_ROWS = 2_000_000
"""Per-worker shards up to this many rows are held as tensors: ~400 bytes a retrieval row,
~600 a ranking row at 64-float embeddings, so at most ~1.2 GB on the device (twice that in
host memory while the shard is read)."""


def shard_in_memory(rows: int, workers: int, max_rows: int = IN_MEMORY_MAX_ROWS) -> bool:
    """Whether each of `workers` shards of a `rows`-row data set fits the in-memory path."""
    return -(-rows // max(workers, 1)) <= max_rows


def shard_tensors(
    batches: Iterable[Mapping[str, torch.Tensor]], device: torch.device
) -> dict[str, torch.Tensor]:
    """One pass over a shard's batches -> whole-shard columns on `device` (empty shard: {}).

    Give it CPU batches: they are joined in host memory (twice the shard, briefly) and moved
    to `device` once, so a GPU never holds the shard twice.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        for name, tensor in batch.items():
            parts.setdefault(name, []).append(tensor)
    return {name: torch.cat(tensors).to(device) for name, tensors in parts.items()}


def shard_rows(columns: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(columns.values())).shape[0]) if columns else 0


def shuffled_batches(
    columns: Mapping[str, torch.Tensor], batch_size: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """The shard's rows in a seeded random order, `batch_size` rows at a time (last one short)."""
    rows = shard_rows(columns)
    if rows == 0:
        return
    device = next(iter(columns.values())).device
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed)).to(device)
    for start in range(0, rows, batch_size):
        picked = order[start : start + batch_size]
        yield {name: tensor[picked] for name, tensor in columns.items()}
