"""The retrieval loop that runs on every Ray Train worker.

Made-With-ML's split: `train_step` (pure, in `train_step.py`) <- `retrieval_loop` (this file,
one per worker) <- `ray_train.fit` (the trainer). Per worker:

1. `restore_state()`: after a worker failure Ray restarts every worker's loop; the model,
   optimizer, epoch and step counter come back from the latest checkpoint, so the step count
   continues instead of restarting from 0.
2. The worker's Ray Data shard (`get_dataset_shard("train")`) is read through
   `iter_torch_batches` with a collate function that turns each Arrow batch into the tensors
   of a `RetrievalBatch` (the same `batch_from_table` the plain loop uses), on
   `ray.train.torch.get_device()` (the GPU when the run has one). With `in_memory` (the
   default, set by the job when a shard fits, `training.shard_cache`) that happens once and
   every epoch draws a seeded permutation of the cached rows, as the plain loop does; without,
   every epoch streams the shard again through a local shuffle buffer.
3. With several workers the gradients are averaged by all-reduce after each backward (plain
   data parallelism; `train_step` needs the model's own methods, so no DDP wrapper). Every
   worker starts from rank 0's weights. Each worker's batch is one in-batch softmax of
   `config.batch_size` rows, so more workers means more examples per step, not wider softmax.
4. `report_epoch()` once per epoch: metrics (epoch, step, mean loss, rows) with a checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.data.collate_fn import ArrowBatchCollateFn

from training.ray_train import report_epoch, restore_state
from training.retrieval.config import RetrievalConfig
from training.retrieval.features import RetrievalBatch, batch_from_table
from training.retrieval.model import RetrievalModel
from training.retrieval.sampling import PinSampling
from training.retrieval.train_step import train_step
from training.shard_cache import shard_tensors, shuffled_batches

LOOP_KEY = "retrieval"
_READ_ROWS = 65_536  # rows per batch when reading a shard into memory
EpochHook = Callable[[int, int], None]
"""Called on every worker after each epoch's report with (epoch, step)."""


@dataclass(frozen=True)
class RetrievalLoopConfig:
    """What every worker needs besides its data shard (sent once, pickled, to each worker).

    `log_q_table`: [n_pin_buckets] float32 log q(pin) of the rows the run trains on.
    `in_memory`: convert the shard to tensors once and reshuffle them each epoch (False:
    stream it through Ray Data every epoch, for shards larger than memory).
    `shuffle_buffer_rows`: local shuffle buffer of the streaming path (>= batch size).
    `on_epoch_end`: optional hook (logging, fault injection in tests).
    """

    config: RetrievalConfig
    log_q_table: np.ndarray
    in_memory: bool = True
    shuffle_buffer_rows: int = 20_000
    on_epoch_end: EpochHook | None = None

    def as_loop_config(self) -> dict[str, Any]:
        """The `train_loop_config` dict Ray passes to `retrieval_loop`."""
        return {LOOP_KEY: self}


class RetrievalCollate(ArrowBatchCollateFn):
    """Arrow batch of training-set rows -> dict of `RetrievalBatch` field tensors (CPU).

    Returning a dict of tensors lets Ray pin memory and move the batch to the worker's device.
    """

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        retrieval_batch = batch_from_table(batch)
        return {f.name: getattr(retrieval_batch, f.name) for f in fields(retrieval_batch)}


def _world_size() -> int:
    return ray.train.get_context().get_world_size()


def _average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Mean of every parameter's gradient across workers (a missing gradient counts as 0)."""
    if world_size == 1:
        return
    for parameter in model.parameters():
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= world_size


def _broadcast_weights(model: torch.nn.Module, world_size: int) -> None:
    """Start every worker from rank 0's weights."""
    if world_size == 1:
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def _epoch_totals(rows: int, loss_sum: float, batches: int, device: torch.device) -> list[float]:
    """[rows, loss_sum, batches] summed over workers."""
    totals = torch.tensor([rows, loss_sum, batches], dtype=torch.float64, device=device)
    if _world_size() > 1:
        dist.all_reduce(totals)
    return totals.tolist()


def _cached_shard(device: torch.device) -> dict[str, torch.Tensor]:
    """This worker's whole shard as `RetrievalBatch` field tensors on `device`, read once."""
    shard = ray.train.get_dataset_shard("train")
    return shard_tensors(
        shard.iter_torch_batches(
            batch_size=_READ_ROWS, collate_fn=RetrievalCollate(), device="cpu"
        ),
        device,
    )


def _epoch_batches(
    loop: RetrievalLoopConfig, cached: dict[str, torch.Tensor] | None, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """This epoch's batches: a permutation of the cached rows, or the shard streamed again."""
    batch_size = loop.config.batch_size
    if cached is not None:
        return shuffled_batches(cached, batch_size, seed)
    return iter(
        ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=batch_size,
            collate_fn=RetrievalCollate(),
            local_shuffle_buffer_size=max(loop.shuffle_buffer_rows, batch_size),
            local_shuffle_seed=seed,
        )
    )


def _run_epoch(
    model: RetrievalModel,
    optimizer: torch.optim.Optimizer,
    loop: RetrievalLoopConfig,
    sampling: PinSampling,
    cached: dict[str, torch.Tensor] | None,
    epoch: int,
    step: int,
) -> tuple[int, dict[str, float]]:
    """One pass over this worker's shard; returns the new step count and the epoch's metrics."""
    config, device = loop.config, ray.train.torch.get_device()
    rank = ray.train.get_context().get_world_rank()
    seed = config.seed * 1_000_003 + epoch * 101 + rank
    generator = torch.Generator().manual_seed(seed)
    started, rows, loss_sum, batches = time.perf_counter(), 0, 0.0, 0
    for tensors in _epoch_batches(loop, cached, seed):
        batch = RetrievalBatch(**tensors).to(device)
        loss = train_step(model, batch, config, sampling, generator)
        optimizer.zero_grad()
        loss.backward()
        _average_gradients(model, _world_size())
        optimizer.step()
        step, rows, batches = step + 1, rows + len(batch), batches + 1
        loss_sum += float(loss.detach())
    total_rows, total_loss, total_batches = _epoch_totals(rows, loss_sum, batches, device)
    seconds = time.perf_counter() - started
    return step, {
        "epoch": float(epoch),
        "step": float(step),
        "loss": total_loss / max(total_batches, 1.0),
        "rows": total_rows,
        "epoch_seconds": seconds,
        "examples_per_s": total_rows / max(seconds, 1e-9),
    }


def retrieval_loop(loop_config: dict[str, Any]) -> None:
    """`train_loop_per_worker`: resume, then train `config.epochs` epochs, reporting each."""
    loop: RetrievalLoopConfig = loop_config[LOOP_KEY]
    config, device = loop.config, ray.train.torch.get_device()
    torch.manual_seed(config.seed)
    model = RetrievalModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sampling = PinSampling(torch.as_tensor(loop.log_q_table, dtype=torch.float32).to(device))
    start_epoch, step = 0, 0
    state = restore_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
    _broadcast_weights(model, _world_size())
    cached = _cached_shard(device) if loop.in_memory and start_epoch < config.epochs else None
    for epoch in range(start_epoch, config.epochs):
        model.train()
        step, metrics = _run_epoch(model, optimizer, loop, sampling, cached, epoch, step)
        state = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "config": config.model_dump(mode="json"),
            "log_q_table": loop.log_q_table,
        }
        report_epoch(metrics, state)
        if loop.on_epoch_end is not None:
            loop.on_epoch_end(epoch, step)
