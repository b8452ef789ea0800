"""evaluation.metrics and evaluation.reliability on hand-made predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from evaluation.metrics import (
    brier_score,
    expected_calibration_error,
    head_report,
    log_loss,
    normalized_entropy,
    reliability_bins,
)
from evaluation.reliability import reliability_figure, save_reliability_figure
from pinfeed.errors import SchemaError, ValidationError
from pinfeed.schema import ENGAGEMENTS


def _draws(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly calibrated [n, 4]: labels drawn with the predicted probability."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1.0, size=(n, 4)) ** np.array([1.0, 2.0, 3.0, 4.0])
    return (rng.uniform(size=p.shape) < p).astype(np.float64), p


def test_ece_of_calibrated_draws_is_near_zero_and_of_shifted_ones_large() -> None:
    y, p = _draws(200_000)
    for t in range(4):
        assert expected_calibration_error(y[:, t], p[:, t]) < 0.01
    shifted = np.clip(p[:, 0] + 0.2, 0.0, 1.0)
    assert expected_calibration_error(y[:, 0], shifted) > 0.15


def test_ece_matches_a_hand_computed_two_bin_example() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.2, 0.4, 0.6, 0.8, 0.9])
    # bin [0, .5): mean p .3, positives .5, gap .2, weight 2/5
    # bin [.5, 1]: mean p 2.3/3, positives 2/3, gap .1, weight 3/5
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.4 * 0.2 + 0.6 * 0.1)


def test_bin_edges_put_one_in_the_last_bin() -> None:
    bins = reliability_bins(np.array([0, 1, 1]), np.array([0.0, 0.5, 1.0]), n_bins=2)
    np.testing.assert_array_equal(bins.counts, [1, 2])
    assert bins.n_bins == 2


def test_scores_agree_with_sklearn() -> None:
    y, p = _draws(5_000, seed=1)
    report = head_report(y, p)
    for t, head in enumerate(ENGAGEMENTS):
        row = report["heads"][head]
        assert row["pr_auc"] == pytest.approx(skm.average_precision_score(y[:, t], p[:, t]))
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y[:, t], p[:, t]))
        assert row["log_loss"] == pytest.approx(skm.log_loss(y[:, t], p[:, t]), rel=1e-6)
        assert row["brier"] == pytest.approx(skm.brier_score_loss(y[:, t], p[:, t]))
    assert report["ece_bins"] == 15
    assert report["n_rows"] == 5_000


def test_normalized_entropy_is_one_at_the_base_rate() -> None:
    y = np.array([1, 0, 0, 0] * 25)
    assert normalized_entropy(y, np.full(100, 0.25)) == pytest.approx(1.0)
    assert normalized_entropy(np.zeros(10), np.full(10, 0.1)) is None
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert brier_score([1, 0], [0.5, 0.5]) == pytest.approx(0.25)


def test_one_class_head_reports_none_for_the_aucs() -> None:
    y, p = _draws(1_000, seed=2)
    y[:, 3] = 0
    row = head_report(y, p)["heads"]["long_click"]
    assert row["roc_auc"] is None and row["pr_auc"] is None
    assert row["positives"] == 0


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValidationError, match=r"row 1: p"):
        expected_calibration_error([0, 1], [0.5, 1.5])
    with pytest.raises(ValidationError, match="y_true"):
        brier_score([0, 2], [0.5, 0.5])
    with pytest.raises(SchemaError, match="same shape"):
        head_report(np.zeros((3, 4)), np.zeros((3, 3)))


def test_reliability_figure_has_a_panel_per_head(tmp_path: Path) -> None:
    y, p = _draws(3_000, seed=3)
    raw = np.clip(p * 1.5, 0.0, 1.0)
    figure = reliability_figure(y, raw, p)
    axes = figure.get_axes()
    assert len(axes) == 2 * len(ENGAGEMENTS)  # reliability above, histogram beneath
    titles = [a.get_title() for a in axes if a.get_title()]
    assert [t.split(" ")[0] for t in titles] == list(ENGAGEMENTS)
    assert all(
        "Brier" in text.get_text()
        for a in axes
        if a.get_legend() and a.get_title()
        for text in a.get_legend().get_texts()[1:]
    )

    path = save_reliability_figure(tmp_path / "reports" / "reliability.png", y, raw, p)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
