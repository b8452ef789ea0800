"""The ranking models on Ray Train: the Ray Data input and the loop every worker runs.

Input: the ranking training set's parquet, read by Ray Data and turned block by block into
the model's arrays (`prepare_batch`, the same `ranker_arrays` serving-side code uses), kept to
the training period, materialised once so every epoch reads the same prepared blocks. Each
worker reads its shard as torch batches (on its GPU when it has one) and calls the pure
`train_step`: with `in_memory` (set by the job when a shard fits, `training.shard_cache`) it
reads the shard once and draws a seeded permutation of the rows each epoch; without, it streams
the shard through a local shuffle buffer every epoch.

State and resume: the driver builds the initial model (normaliser fitted on the training rows,
seeded weights) and ships its state dict in the loop config, so every worker and every restart
starts from the same weights. `restore_state()` comes first: after a worker failure Ray restarts
the loop and it continues after the last checkpointed epoch. `report_epoch()` sends the epoch's
metrics with a checkpoint (model, loss and optimiser state).

Batch columns (B rows, F dense features, D embedding length, H = 4 heads):
    dense [B, F] float32, topic [B] int64, pin_embedding / query_embedding [B, D] float32,
    labels [B, H] float32.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import ray
import ray.train
import ray.train.torch
import torch
from torch import nn

from pinfeed.artifacts.ranker import RANKER_INPUTS
from pinfeed.config import FrozenModel
from pinfeed.errors import DataNotFoundError
from pinfeed.utility import HeadWeights
from training.ranking.baseline import BaselineRanker, ImportanceWeightedLoss
from training.ranking.config import RankerConfig, RankingTrainConfig
from training.ranking.features import label_array, ranker_arrays
from training.ranking.loss import build_loss
from training.ranking.model import MultiTaskRanker
from training.ranking.steps import RankerBatch, train_step
from training.ray_train import report_epoch, restore_state
from training.shard_cache import shard_tensors, shuffled_batches

ModelKind = Literal["multi_task", "single_head"]
TRAIN_DATASET = "train"
_SHUFFLE_BUFFER = 8_192


class RankingLoopConfig(FrozenModel):
    """What every worker needs besides the initial weights (sent as a dict through Ray)."""

    kind: ModelKind
    train: RankingTrainConfig
    importance: HeadWeights
    """Per-type weights of the single-head baseline's positives (unused by multi_task)."""
    in_memory: bool = True
    """Read the shard into tensors once and reshuffle them each epoch (False: stream it)."""


def build_model(kind: ModelKind, config: RankerConfig) -> nn.Module:
    """The multi-task ranker ([B, 4] logits) or the single-head baseline ([B, 1])."""
    return MultiTaskRanker(config) if kind == "multi_task" else BaselineRanker(config)


def build_objective(loop: RankingLoopConfig) -> nn.Module:
    """The loss that fits `loop.kind`: per-head BCE sum, or importance-weighted any-engagement."""
    if loop.kind == "multi_task":
        return build_loss(loop.train.loss)
    return ImportanceWeightedLoss(loop.importance)


def prepare_batch(
    frame: pd.DataFrame, embedding_dim: int, start: datetime | None, end: datetime
) -> dict[str, np.ndarray]:
    """Training-set rows with event_timestamp in [start, end) -> the batch columns above."""
    stamps = frame["event_timestamp"]
    keep = (stamps < end) if start is None else (stamps >= start) & (stamps < end)
    rows = frame.loc[keep.to_numpy()]
    arrays = ranker_arrays(rows, embedding_dim)
    return {**arrays.feed(), "labels": label_array(rows)}


def ranking_dataset(
    path: Path, embedding_dim: int, *, end: datetime, start: datetime | None = None
) -> ray.data.Dataset:
    """The training rows of `path` stamped in [start, end), prepared and materialised."""
    if not path.is_file():
        raise DataNotFoundError(
            f"{path}: no ranking training set; build it with `pinfeed features training-sets`"
        )
    return (
        ray.data.read_parquet(str(path.resolve()))
        .map_batches(
            prepare_batch,
            batch_format="pandas",
            fn_kwargs={"embedding_dim": embedding_dim, "start": start, "end": end},
        )
        .materialize()
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (what checkpoints store)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


_DTYPES = {name: torch.int64 if name == "topic" else torch.float32 for name in RANKER_INPUTS} | {
    "labels": torch.float32
}
_READ_ROWS = 65_536  # rows per batch when reading a shard into memory


def _epoch_batches(
    shard: ray.data.DataIterator,
    cached: dict[str, torch.Tensor] | None,
    batch_size: int,
    seed: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """This epoch's batches: a permutation of the cached rows, or the shard streamed again."""
    if cached is not None:
        return shuffled_batches(cached, batch_size, seed)
    return iter(
        shard.iter_torch_batches(
            batch_size=batch_size,
            dtypes=_DTYPES,
            local_shuffle_buffer_size=_SHUFFLE_BUFFER,
            local_shuffle_seed=seed,
        )
    )


def _run_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[dict[str, torch.Tensor]],
) -> tuple[float, int]:
    """One pass over this worker's batches; returns (mean batch loss, rows seen)."""
    losses, rows = [], 0
    for columns in batches:
        batch = RankerBatch(**{name: columns[name] for name in (*RANKER_INPUTS, "labels")})
        losses.append(train_step(model, loss_fn, optimizer, batch))
        rows += int(batch.labels.shape[0])
    return (float(np.mean(losses)) if losses else float("nan")), rows


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: `config` = {"loop": RankingLoopConfig dump, "initial_state": state dict}.

    Reports per epoch: epoch, loss, rows, examples_per_s (this worker's training throughput),
    resumed_from_epoch (0 on a fresh start).
    """
    loop = RankingLoopConfig.model_validate(config["loop"])
    torch.manual_seed(loop.train.seed + ray.train.get_context().get_world_rank())
    model = build_model(loop.kind, loop.train.model)
    loss_fn = build_objective(loop)
    state = restore_state()
    model.load_state_dict(state["model"] if state else config["initial_state"])
    if state:
        loss_fn.load_state_dict(state["loss"])
    model = ray.train.torch.prepare_model(model)
    loss_fn.to(ray.train.torch.get_device())
    optimizer = torch.optim.Adam(
        [*model.parameters(), *loss_fn.parameters()],
        lr=loop.train.learning_rate,
        weight_decay=loop.train.weight_decay,
    )
    if state:
        optimizer.load_state_dict(state["optimizer"])
    first_epoch = state["epoch"] + 1 if state else 1
    shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    cached = None
    if loop.in_memory and first_epoch <= loop.train.epochs:
        device = ray.train.torch.get_device()
        cached = shard_tensors(
            shard.iter_torch_batches(batch_size=_READ_ROWS, dtypes=_DTYPES, device="cpu"), device
        )
    for epoch in range(first_epoch, loop.train.epochs + 1):
        began = time.perf_counter()
        batches = _epoch_batches(shard, cached, loop.train.batch_size, loop.train.seed + epoch)
        loss, rows = _run_epoch(model, loss_fn, optimizer, batches)
        seconds = time.perf_counter() - began
        metrics = {
            "epoch": epoch,
            "loss": loss,
            "rows": rows,
            "examples_per_s": rows / seconds,
            "resumed_from_epoch": first_epoch - 1,
        }
        checkpoint = {
            "model": _unwrap(model).state_dict(),
            "loss": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
        }
        report_epoch(metrics, checkpoint)
