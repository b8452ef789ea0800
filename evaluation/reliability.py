"""The calibration figure: one panel per head, a reliability diagram (fraction of positives
against mean predicted probability per bin, raw and calibrated scores) above a histogram of the
scores, Brier score in the legend (the seed's Figure 3).

Drawn on a bare `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global backend
switch, safe in worker processes without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from evaluation.metrics import DEFAULT_BINS, brier_score, reliability_bins
from pinfeed.errors import SchemaError
from pinfeed.schema import ENGAGEMENTS


def _upper_limit(*scores: NDArray[np.float64]) -> float:
    """Axis limit: a little past the 99.9th percentile of all scores, so rare-engagement heads
    are not squeezed into one corner; at most 1."""
    top = max(float(np.quantile(s, 0.999)) for s in scores)
    return min(1.0, max(top * 1.1, 1e-3))


def _reliability_panel(
    top: Axes,
    bottom: Axes,
    y: NDArray[np.float64],
    series: dict[str, NDArray[np.float64]],
    n_bins: int,
) -> None:
    limit = _upper_limit(*series.values())
    top.plot([0.0, limit], [0.0, limit], linestyle=":", color="grey", label="perfect")
    for name, scores in series.items():
        bins = reliability_bins(y, scores, n_bins)
        filled = bins.counts > 0
        top.plot(
            bins.mean_predicted[filled],
            bins.fraction_positive[filled],
            marker="o",
            label=f"{name} (Brier {brier_score(y, scores):.4f})",
        )
        bottom.hist(scores, bins=50, range=(0.0, limit), histtype="step", label=name)
    top.set_xlim(0.0, limit)
    top.set_ylim(0.0, limit)
    top.set_ylabel("fraction of positives")
    top.legend(fontsize="small", loc="upper left")
    bottom.set_xlim(0.0, limit)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("rows")


def reliability_figure(
    y_true: ArrayLike,
    p_raw: ArrayLike,
    p_calibrated: ArrayLike | None = None,
    *,
    n_bins: int = DEFAULT_BINS,
    heads: tuple[str, ...] = ENGAGEMENTS,
) -> Figure:
    """Build the figure: columns = heads; top row reliability, bottom row score histogram.

    Args:
        y_true: [N, H] labels; p_raw: [N, H] uncalibrated (sampled-distribution) probabilities;
        p_calibrated: [N, H] calibrated probabilities, drawn beside the raw ones when given.
    """
    y = np.asarray(y_true, dtype=np.float64)
    raw = np.asarray(p_raw, dtype=np.float64)
    calibrated = None if p_calibrated is None else np.asarray(p_calibrated, dtype=np.float64)
    for name, array in (("p_raw", raw), ("p_calibrated", calibrated)):
        if array is not None and (
            array.shape != y.shape or y.ndim != 2 or y.shape[1] != len(heads)
        ):
            raise SchemaError(
                f"{name} {array.shape} must match y_true {y.shape}, [N, {len(heads)}]"
            )
    figure = Figure(figsize=(4.0 * len(heads), 6.0), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, len(heads), height_ratios=(3, 1))
    for t, head in enumerate(heads):
        top = figure.add_subplot(grid[0, t])
        bottom = figure.add_subplot(grid[1, t], sharex=top)
        series = {"raw": raw[:, t]}
        if calibrated is not None:
            series["calibrated"] = calibrated[:, t]
        _reliability_panel(top, bottom, y[:, t], series, n_bins)
        top.set_title(f"{head} ({int(y[:, t].sum())} positives, {n_bins} bins)")
    return figure


def save_reliability_figure(
    path: Path,
    y_true: ArrayLike,
    p_raw: ArrayLike,
    p_calibrated: ArrayLike | None = None,
    *,
    n_bins: int = DEFAULT_BINS,
    heads: tuple[str, ...] = ENGAGEMENTS,
) -> Path:
    """Draw `reliability_figure` and write it as PNG to `path`."""
    figure = reliability_figure(y_true, p_raw, p_calibrated, n_bins=n_bins, heads=heads)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
