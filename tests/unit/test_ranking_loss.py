"""Ranking losses, baseline targets and feature preparation, on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pinfeed.errors import SchemaError
from pinfeed.utility import HeadWeights
from training.features import CONTENT_EMBEDDING, LOG1P_FEATURES, QUERY_CONTENT_EMBEDDING, TOPIC
from training.ranking.baseline import ImportanceWeightedLoss, baseline_targets
from training.ranking.features import DENSE_FEATURES, label_array, ranker_arrays
from training.ranking.loss import EqualWeightLoss, UncertaintyWeightedLoss, per_head_bce

LOGITS = torch.tensor([[0.0, 2.0, -1.0, 0.0], [1.0, 0.0, 3.0, -2.0]])
LABELS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])


def _bce(logit: float, label: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1.0 - label) * math.log(1.0 - p))


def test_equal_weight_loss_by_hand() -> None:
    per_head = [
        (_bce(0.0, 1) + _bce(1.0, 0)) / 2,  # closeup
        (_bce(2.0, 0) + _bce(0.0, 1)) / 2,  # save
        (_bce(-1.0, 0) + _bce(3.0, 1)) / 2,  # click
        (_bce(0.0, 1) + _bce(-2.0, 0)) / 2,  # long_click
    ]
    np.testing.assert_allclose(per_head_bce(LOGITS, LABELS).numpy(), per_head, rtol=1e-6)
    assert float(EqualWeightLoss()(LOGITS, LABELS)) == pytest.approx(sum(per_head), rel=1e-6)
    assert float(EqualWeightLoss()(torch.zeros(2, 4), LABELS)) == pytest.approx(4 * math.log(2))


def test_uncertainty_weighting_starts_equal_and_discounts_noisy_heads() -> None:
    loss = UncertaintyWeightedLoss()
    equal = float(EqualWeightLoss()(LOGITS, LABELS))
    assert loss(LOGITS, LABELS).item() == pytest.approx(equal)
    with torch.no_grad():
        loss.log_variance.copy_(torch.tensor([math.log(2.0), 0.0, 0.0, 0.0]))
    parts = per_head_bce(LOGITS, LABELS)
    expected = parts[0] / 2 + 0.5 * math.log(2.0) + parts[1:].sum()
    assert loss(LOGITS, LABELS).item() == pytest.approx(float(expected), rel=1e-6)


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(SchemaError, match="logits"):
        per_head_bce(LOGITS, LABELS[:, :3])


def test_baseline_targets_take_the_most_important_engagement() -> None:
    importance = HeadWeights(closeup=1.0, save=2.0, click=3.0, long_click=5.0)
    labels = torch.tensor(
        [[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.float32
    )
    target, weight = baseline_targets(labels, importance)
    np.testing.assert_array_equal(target.numpy(), [0, 1, 1, 1])
    np.testing.assert_array_equal(weight.numpy(), [1, 1, 2, 5])
    logits = torch.zeros(4, 1)
    assert float(ImportanceWeightedLoss(importance)(logits, labels)) == pytest.approx(
        (1 + 1 + 2 + 5) * math.log(2) / 4
    )


def _frame(rows: int) -> pd.DataFrame:
    """Column j of feature k holds 100 k + row, and the columns come in reversed order, so
    stacking by position instead of by name would show."""
    values = {name: 100.0 * k + np.arange(rows) for k, name in enumerate(DENSE_FEATURES)}
    frame = pd.DataFrame(dict(reversed(values.items())))
    frame.loc[0, "user_dwell_mean_s"] = None
    frame[TOPIC] = [3] * rows
    frame[CONTENT_EMBEDDING] = [[1.0, 0.0, 0.0]] * rows
    frame[QUERY_CONTENT_EMBEDDING] = [None] + [[0.0, 1.0, 0.0]] * (rows - 1)
    for label in ("closeup", "save", "click", "long_click"):
        frame[label] = [True, False, False][:rows]
    return frame


def test_ranker_arrays_stack_columns_in_feature_order() -> None:
    arrays = ranker_arrays(_frame(3), embedding_dim=3)
    assert arrays.dense.shape == (3, len(DENSE_FEATURES)) and arrays.dense.dtype == np.float32
    np.testing.assert_array_equal(arrays.dense[2], 100.0 * np.arange(len(DENSE_FEATURES)) + 2.0)
    assert np.isnan(arrays.dense[0, DENSE_FEATURES.index("user_dwell_mean_s")])
    np.testing.assert_array_equal(arrays.query_embedding[0], [0, 0, 0])  # no query pin
    assert label_array(_frame(3)).tolist()[0] == [1, 1, 1, 1]
    assert set(arrays.feed()) == {"dense", "topic", "pin_embedding", "query_embedding"}
    assert LOG1P_FEATURES.issubset(DENSE_FEATURES)


def test_ranker_arrays_name_what_is_wrong() -> None:
    with pytest.raises(SchemaError, match="pin_age_days"):
        ranker_arrays(_frame(3).drop(columns="pin_age_days"), embedding_dim=3)
    with pytest.raises(SchemaError, match="expected 4"):
        ranker_arrays(_frame(3), embedding_dim=4)
