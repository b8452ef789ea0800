"""Minimum functionality: the rankers learn a tiny learnable data set in a few hundred steps; and
where the heads carry signals of their own, the four-head model ranks each head at least as well
as the single "any engagement" head, and the distinct head clearly better."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import HeadWeights
from tests.support.ranking_data import (
    EMBEDDING_DIM,
    NUM_TOPICS,
    distinct_head_labels,
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


def _train(
    model: torch.nn.Module, loss_fn: torch.nn.Module, steps: int = 300, labels_of=synthetic_labels
) -> list[float]:
    rng = np.random.default_rng(0)
    arrays = synthetic_arrays(4_096, rng)
    labels = labels_of(arrays, rng)
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


def test_multi_task_beats_the_single_head_where_heads_differ() -> None:
    """Same data, steps and seed for both: each head's PR-AUC under its own MTL head is within
    0.02 of, or above, the single head's; long_click (mostly its own signal) is clearly above."""
    importance = HeadWeights(closeup=1.0, save=2.0, click=2.0, long_click=4.0)
    torch.manual_seed(0)
    mtl = MultiTaskRanker(CONFIG)
    _train(mtl, build_loss(LossConfig()), steps=400, labels_of=distinct_head_labels)
    torch.manual_seed(0)
    single = BaselineRanker(CONFIG)
    _train(single, ImportanceWeightedLoss(importance), steps=400, labels_of=distinct_head_labels)
    rng = np.random.default_rng(7)
    held_out = synthetic_arrays(6_000, rng)
    labels = distinct_head_labels(held_out, rng)
    mtl_logits = predict_logits(mtl, held_out)
    single_logit = predict_logits(single, held_out)[:, 0]
    gaps = {}
    for t, head in enumerate(ENGAGEMENTS):
        own = average_precision_score(labels[:, t], mtl_logits[:, t])
        shared = average_precision_score(labels[:, t], single_logit)
        gaps[head] = own - shared
        assert own >= shared - 0.02, (head, own, shared)
    assert gaps["long_click"] > 0.05, gaps
