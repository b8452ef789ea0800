"""One retrieval training step as a pure function, and a plain torch loop over a parquet file.

`train_step` is what the Ray Train loop will call per batch (Made-With-ML split: pure step,
then `train_loop_per_worker`, then the trainer). `train_on_parquet` is the single-process loop
used until the Ray wiring exists, and by tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import torch

from pinfeed.errors import ConfigError, DataNotFoundError
from training.retrieval.config import RetrievalConfig
from training.retrieval.dataset import pin_sampling
from training.retrieval.features import RetrievalBatch, batch_from_table
from training.retrieval.loss import (
    engagement_aux_loss,
    retrieval_loss,
    same_user_positive_mask,
    shuffled_negatives,
)
from training.retrieval.model import RetrievalModel
from training.retrieval.sampling import PinSampling
from training.retrieval.weights import engagement_rows, positive_weights


def _aux_loss(
    model: RetrievalModel,
    query: torch.Tensor,
    pin: torch.Tensor,
    batch: RetrievalBatch,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Engagement task loss over the whole batch: (query_i, pin_i) of click/save rows vs
    (query_i, a shifted row's pin)."""
    if model.engagement_head is None or len(batch) < 2:
        return query.sum() * 0.0
    shift = int(torch.randint(1, len(batch), (1,), generator=generator))
    negatives = shuffled_negatives(len(batch), shift).to(query.device)
    rows = torch.arange(len(batch), device=query.device)
    negative_valid = ~same_user_positive_mask(batch.user_id, batch.pin_id)[rows, negatives]
    return engagement_aux_loss(
        model.engagement_head(query, pin),
        model.engagement_head(query, pin[negatives]),
        engagement_rows(batch.kind),
        negative_valid,
    )


def train_step(
    model: RetrievalModel,
    batch: RetrievalBatch,
    config: RetrievalConfig,
    sampling: PinSampling | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Loss of one batch (the caller runs backward and the optimizer).

    Rows whose positive weight is 0 under `config.variant` are kept out of the softmax, so
    they are neither positives nor in-batch negatives; the `_aux` variants' engagement task
    still learns from their clicks and saves. `sampling` gives log q for the logQ correction
    (required when `config.logq_correction`); `generator` draws the aux head's shuffle.

    Returns:
        Scalar: weighted in-batch softmax loss (+ aux_weight * engagement loss for the `_aux`
        variants); a zero tensor when nothing in the batch is trained on.
    """
    if config.logq_correction and sampling is None:
        raise ConfigError(
            "sampling: logq_correction is on, so pass dataset.pin_sampling(rows, config)"
        )
    weights = positive_weights(batch.kind, batch.dwell_s, config.weights, config.variant)
    kept = weights > 0
    if config.uses_aux_head:  # every row reaches the towers: the engagement task sees them all
        query, pin = model(batch)
        aux = config.aux_weight * _aux_loss(model, query, pin, batch, generator)
        positives = batch.select(kept)
        return aux + _softmax_loss(
            model, query[kept], pin[kept], positives, weights[kept], config, sampling
        )
    if not bool(kept.any()):
        return torch.zeros((), requires_grad=True)
    batch = batch.select(kept)
    query, pin = model(batch)
    return _softmax_loss(model, query, pin, batch, weights[kept], config, sampling)


def _softmax_loss(
    model: RetrievalModel,
    query: torch.Tensor,
    pin: torch.Tensor,
    positives: RetrievalBatch,
    weights: torch.Tensor,
    config: RetrievalConfig,
    sampling: PinSampling | None,
) -> torch.Tensor:
    """Weighted in-batch softmax over the rows with a positive weight (0 when there are none)."""
    if len(positives) == 0:
        return query.sum() * 0.0
    log_q = sampling.log_q(positives.pin_id) if config.logq_correction and sampling else None
    logits = model.logits(query, pin)
    return retrieval_loss(logits, positives.user_id, positives.pin_id, weights, log_q)


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when `score(model, step)` (higher is better, e.g. validation recall) has not
    improved for `patience` checks, one check every `every` optimizer steps (and one at the
    last step); the best model is kept."""

    score: Callable[[RetrievalModel, int], float]
    every: int = 50
    patience: int = 4


@dataclass(frozen=True)
class TrainResult:
    """A trained model, the q(pin) it was trained with, the mean loss of each epoch (the last
    one partial when a step cap ended it) and the optimizer steps taken. With early stopping:
    `model` is the best checked one, taken at `best_step`; `checks` holds (step, score)."""

    model: RetrievalModel
    sampling: PinSampling
    epoch_losses: tuple[float, ...]
    steps: int
    best_step: int | None = None
    checks: tuple[tuple[int, float], ...] = field(default=())


@dataclass
class _Checkpoints:
    """The early-stopping state of one run (plain loop only)."""

    stopping: EarlyStopping
    checks: list[tuple[int, float]] = field(default_factory=list)
    best: tuple[int, float, dict] | None = None

    def check(self, model: RetrievalModel, step: int) -> bool:
        """Score the model at `step`; True when training should stop."""
        score = self.stopping.score(model.eval(), step)
        model.train()
        self.checks.append((step, score))
        if self.best is None or score > self.best[1]:
            self.best = (step, score, copy.deepcopy(model.state_dict()))
        return step - self.best[0] >= self.stopping.patience * self.stopping.every


def train_on_parquet(
    path: Path,
    config: RetrievalConfig,
    max_steps: int | None = None,
    early_stopping: EarlyStopping | None = None,
) -> TrainResult:
    """Train from scratch on a retrieval training set held in memory (single process, CPU).

    `max_steps` stops after that many optimizer steps even inside an epoch, so models trained
    on different row counts can get the same number of updates (the retrieval ablation);
    None runs `config.epochs` full epochs. `early_stopping` checks the model every few steps,
    stops when it stops improving and returns the best one checked (the converged ablation).
    """
    if not path.exists():
        raise DataNotFoundError(
            f"{path}: no retrieval training set; build it with `pinfeed features training-sets`"
        )
    table = pq.read_table(path)
    data, sampling = batch_from_table(table), pin_sampling(table, config)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = RetrievalModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    epoch_losses = []
    steps = 0
    checkpoints = _Checkpoints(early_stopping) if early_stopping else None
    stop = False
    for _ in range(config.epochs):
        if steps == max_steps or stop:
            break
        order = torch.randperm(len(data), generator=generator)
        losses = []
        for start in range(0, len(data), config.batch_size):
            if steps == max_steps:
                break
            loss = train_step(
                model,
                data.select(order[start : start + config.batch_size]),
                config,
                sampling,
                generator,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            losses.append(float(loss.detach()))
            if checkpoints and steps % checkpoints.stopping.every == 0:
                stop = checkpoints.check(model, steps)
                if stop:
                    break
        epoch_losses.append(sum(losses) / len(losses))
    if checkpoints is None:
        return TrainResult(
            model=model.eval(), sampling=sampling, epoch_losses=tuple(epoch_losses), steps=steps
        )
    if not checkpoints.checks or checkpoints.checks[-1][0] != steps:
        checkpoints.check(model, steps)  # the last step counts too
    if checkpoints.best is None:  # unreachable: the check above always records one
        raise RuntimeError("early stopping recorded no check")
    best_step, _, state = checkpoints.best
    model.load_state_dict(state)
    return TrainResult(
        model=model.eval(),
        sampling=sampling,
        epoch_losses=tuple(epoch_losses),
        steps=steps,
        best_step=best_step,
        checks=tuple(checkpoints.checks),
    )
