"""Per-head ranking metrics: discrimination (ROC-AUC, PR-AUC) and calibration (log loss,
Brier, ECE, normalised entropy).

Definitions, fixed here so reports, the Ax objective and its constraints agree:
- PR-AUC is `sklearn.metrics.average_precision_score` (step-wise, not trapezoid); log loss and
  Brier are scikit-learn's too.
- ECE uses `n_bins` equal-width bins on [0, 1] (15 by default), L1:
  sum_b (n_b / N) |fraction_positive_b - mean_predicted_b|; the bin count is in every report.
- Normalised entropy = log loss / entropy of the base rate (1 = no better than the base rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn import metrics as sklearn_metrics
from sklearn.metrics import average_precision_score, roc_auc_score

from pinfeed.errors import SchemaError, ValidationError
from pinfeed.schema import ENGAGEMENTS

DEFAULT_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins on [0, 1]; `counts` [n_bins], the per-bin means NaN where empty."""

    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    mean_predicted: NDArray[np.float64]
    fraction_positive: NDArray[np.float64]

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[0])


def _check(y_true: ArrayLike, p: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Labels in {0, 1} and finite probabilities in [0, 1], same shape; raise naming the row."""
    y = np.asarray(y_true, dtype=np.float64)
    q = np.asarray(p, dtype=np.float64)
    if y.shape != q.shape:
        raise SchemaError(f"y_true {y.shape} and p {q.shape} must have the same shape")
    for name, values, bad in (
        ("y_true", y, ~np.isin(y, (0.0, 1.0))),
        ("p", q, ~(np.isfinite(q) & (q >= 0.0) & (q <= 1.0))),
    ):
        if bad.any():
            rows = np.argwhere(bad)
            problems = [
                (
                    int(r[0]),
                    name,
                    f"{values[tuple(r)]!r} not in {'{0, 1}' if name == 'y_true' else '[0, 1]'}",
                )
                for r in rows[:5]
            ]
            raise ValidationError(name, problems, total=len(rows))
    return y, q


def reliability_bins(
    y_true: ArrayLike, p: ArrayLike, n_bins: int = DEFAULT_BINS
) -> ReliabilityBins:
    """Bin one head's predictions [N] by value; p = 1 falls in the last bin."""
    y, q = _check(y_true, p)
    if n_bins < 1:
        raise SchemaError(f"n_bins = {n_bins}: need at least one bin")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.floor(q * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=q, minlength=n_bins) / counts
        fraction_positive = np.bincount(index, weights=y, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, mean_predicted, fraction_positive)


def expected_calibration_error(
    y_true: ArrayLike, p: ArrayLike, n_bins: int = DEFAULT_BINS
) -> float:
    """L1 ECE over equal-width bins for one head [N]."""
    bins = reliability_bins(y_true, p, n_bins)
    filled = bins.counts > 0
    gaps = np.abs(bins.fraction_positive[filled] - bins.mean_predicted[filled])
    return float(np.sum(bins.counts[filled] * gaps) / bins.counts.sum())


def log_loss(y_true: ArrayLike, p: ArrayLike) -> float:
    """Mean binary cross-entropy in nats (`sklearn.metrics.log_loss`, which clips the
    probabilities to its float eps); defined on a slice with one class too."""
    y, q = _check(y_true, p)
    return float(sklearn_metrics.log_loss(y, q, labels=[0.0, 1.0]))


def brier_score(y_true: ArrayLike, p: ArrayLike) -> float:
    """Mean squared error of the probabilities (`sklearn.metrics.brier_score_loss`)."""
    y, q = _check(y_true, p)
    return float(sklearn_metrics.brier_score_loss(y, q, pos_label=1.0, labels=[0.0, 1.0]))


def normalized_entropy(y_true: ArrayLike, p: ArrayLike) -> float | None:
    """Log loss / entropy of the base rate; None when the base rate is 0 or 1 (undefined)."""
    y, _ = _check(y_true, p)
    base = float(y.mean())
    if base in (0.0, 1.0):
        return None
    entropy = -(base * np.log(base) + (1.0 - base) * np.log1p(-base))
    return log_loss(y_true, p) / float(entropy)


def _one_head(y: NDArray[np.float64], q: NDArray[np.float64], n_bins: int) -> dict[str, Any]:
    both_classes = 0 < y.sum() < y.shape[0]
    return {
        "positives": int(y.sum()),
        "base_rate": float(y.mean()),
        "mean_predicted": float(q.mean()),
        "roc_auc": float(roc_auc_score(y, q)) if both_classes else None,
        "pr_auc": float(average_precision_score(y, q)) if both_classes else None,
        "log_loss": log_loss(y, q),
        "brier": brier_score(y, q),
        "ece": expected_calibration_error(y, q, n_bins),
        "normalized_entropy": normalized_entropy(y, q),
    }


def head_report(
    y_true: ArrayLike,
    p: ArrayLike,
    n_bins: int = DEFAULT_BINS,
    heads: tuple[str, ...] = ENGAGEMENTS,
) -> dict[str, Any]:
    """Every metric for every head.

    Args:
        y_true: [N, H] engagement labels in {0, 1}, columns in `heads` order.
        p: [N, H] probabilities (calibrated or not: the report does not know, the caller names it).
        n_bins: ECE bin count, recorded in the report.

    Returns:
        JSON-ready dict: {"n_rows", "ece_bins", "heads": {head: {positives, base_rate,
        mean_predicted, roc_auc, pr_auc, log_loss, brier, ece, normalized_entropy}}}. AUCs and
        normalised entropy are None for a head whose labels are all one class.
    """
    y, q = _check(y_true, p)
    if y.ndim != 2 or y.shape[1] != len(heads):
        raise SchemaError(f"y_true and p must be [N, {len(heads)}] ({heads}), got {y.shape}")
    return {
        "n_rows": int(y.shape[0]),
        "ece_bins": n_bins,
        "heads": {head: _one_head(y[:, t], q[:, t], n_bins) for t, head in enumerate(heads)},
    }
