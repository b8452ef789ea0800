"""The in-batch positive mask of every retrieval step, ours vs the obvious `torch.isin` one.

    python -m benchmarks.bench_retrieval_mask --repeats 50

`training.retrieval.loss.same_user_positive_mask` marks (row i, candidate j) when the pair
(user of i, pin of j) is a row of the batch. The obvious way to write it encodes every pair
as one integer and asks `torch.isin(all B x B pairs, the B batch pairs)`; ours writes the
batch's pairs into a [distinct users, distinct pins] bool table and gathers it at every
(row user, candidate pin). Both run on the same random batches (ids drawn like the small
preset's: 3,000 users, 8,000 pins) and must give the same mask. The floor is one B x B
gather from a ready table, the part neither can avoid. Reported: p50/p99 ms per call and the
ratio, per batch size, one thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from training.retrieval.loss import same_user_positive_mask


def isin_mask(user_id: torch.Tensor, pin_id: torch.Tensor) -> torch.Tensor:
    """The obvious formulation (what this project used before): pair codes and torch.isin."""
    _, user_index = torch.unique(user_id, return_inverse=True)
    pins, pin_index = torch.unique(pin_id, return_inverse=True)
    n_pins = pins.shape[0]
    batch_pairs = user_index * n_pins + pin_index
    all_pairs = user_index.unsqueeze(1) * n_pins + pin_index.unsqueeze(0)
    mask = torch.isin(all_pairs, batch_pairs)
    mask.fill_diagonal_(False)
    return mask


def _batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    users = torch.randint(0, 3000, (size,), generator=generator)
    return users, torch.randint(0, 8000, (size,), generator=generator)


def _gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The floor: one B x B gather from a ready table."""
    return table[index][:, index]


def _time(fn: Callable[..., object], inputs: tuple, repeats: int) -> tuple[float, float]:
    """(p50, p99) milliseconds of `repeats` calls `fn(*inputs)` after two untimed ones."""
    fn(*inputs), fn(*inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*inputs)
        times.append((time.perf_counter() - start) * 1e3)
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--sizes", default="256,1024,4096")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    print("| B | isin p50 / p99 ms | ours p50 / p99 ms | floor p50 / p99 ms | isin / ours (p50) |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        user_id, pin_id = _batch(size, generator)
        if not torch.equal(isin_mask(user_id, pin_id), same_user_positive_mask(user_id, pin_id)):
            raise SystemExit(f"B={size}: the two masks differ")
        table = torch.ones(size, size, dtype=torch.bool)
        index = torch.arange(size)
        results = [
            _time(isin_mask, (user_id, pin_id), args.repeats),
            _time(same_user_positive_mask, (user_id, pin_id), args.repeats),
            _time(_gather, (table, index), args.repeats),
        ]
        cells = " | ".join(f"{p50:.2f} / {p99:.2f}" for p50, p99 in results)
        print(f"| {size:,} | {cells} | {results[0][0] / results[1][0]:.1f}x |")


if __name__ == "__main__":
    main()
