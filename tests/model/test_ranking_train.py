"""Minimum functionality: the rankers learn a tiny learnable data set in a few hundred steps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pinfeed.utility import HeadWeights
from tests.model.ranking_data import (
    EMBEDDING_DIM,
    NUM_TOPICS,
    synthetic_arrays,
    synthetic_labels,
    true_logits,
)
from training.ranking.baseline import BaselineRanker, ImportanceWeightedLoss
from training.ranking.config import LossConfig, RankerConfig
from training.ranking.loss import build_loss
from training.ranking.model import MultiTaskRanker
from training.ranking.steps import RankerBatch, predict_logits, train_step

CONFIG = RankerConfig(
    embedding_dim=EMBEDDING_DIM,
    num_topics=NUM_TOPICS,
    hidden_dims=(64, 32),
    head_dim=16,
    dropout=0.0,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny batches gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(model: torch.nn.Module, loss_fn: torch.nn.Module, steps: int = 300) -> list[float]:
    rng = np.random.default_rng(0)
    arrays = synthetic_arrays(4_096, rng)
    labels = synthetic_labels(arrays, rng)
    model.fit_normalizer(torch.from_numpy(arrays.dense))
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-3)
    losses = []
    for _ in range(steps):
        rows = rng.integers(0, len(arrays), size=256)
        batch = RankerBatch.from_arrays(arrays.take(rows), labels[rows])
        losses.append(train_step(model, loss_fn, optimizer, batch))
    return losses


@pytest.mark.parametrize("weighting", ["equal", "uncertainty"])
def test_multi_task_ranker_learns(weighting: str) -> None:
    torch.manual_seed(0)
    model = MultiTaskRanker(CONFIG)
    losses = _train(model, build_loss(LossConfig(weighting=weighting)))
    assert np.mean(losses[-30:]) < 0.85 * np.mean(losses[:10])
    rng = np.random.default_rng(99)
    held_out = synthetic_arrays(4_000, rng)
    labels = synthetic_labels(held_out, rng)
    logits = predict_logits(model, held_out)
    assert logits.shape == (4_000, 4)
    best = true_logits(held_out)
    for t in range(4):
        # Most of the way from chance (0.5) to the generating model's own AUC.
        ceiling = roc_auc_score(labels[:, t], best[:, t])
        assert roc_auc_score(labels[:, t], logits[:, t]) > 0.5 + 0.7 * (ceiling - 0.5)


def test_baseline_learns() -> None:
    torch.manual_seed(0)
    model = BaselineRanker(CONFIG)
    importance = HeadWeights(closeup=1.0, save=2.0, click=2.0, long_click=4.0)
    losses = _train(model, ImportanceWeightedLoss(importance))
    assert np.mean(losses[-30:]) < 0.85 * np.mean(losses[:10])
