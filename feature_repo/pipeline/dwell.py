"""`user_dwell` and `pin_dwell`: click-dwell statistics over the 30-day window, one row per
entity per day (see `snapshots` for the point-in-time rules).

- mean: exact (window dwell sum / window clicks).
- median: approximate. Each click is counted in a histogram with geometric bin edges
  (`dwell_min_s` .. `dwell_max_s`, `dwell_bins` bins, plus [0, dwell_min_s) and
  [dwell_max_s, inf)); window histograms are summed and each middle order statistic placed
  linearly inside its bin, so the error is below one bin's width (a ratio of about 1.16 with
  the defaults; dwells beyond dwell_max_s read as dwell_max_s).
- short-click share: clicks with dwell < `short_click_s` over clicks.
- long-click share: long_click flags over clicks (the flag already encodes the event set's
  `long_click_threshold_s`, which must exceed `short_click_s`).

Rows are kept while the window holds a click; the closing row (0 clicks) carries null
statistics, which is also what a consumer gets for an entity that never clicked.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_repo.pipeline.activity import flag
from feature_repo.pipeline.config import LONG_WINDOW_DAYS, FeatureConfig
from feature_repo.pipeline.snapshots import (
    Calendar,
    DailySums,
    daily_sums,
    to_table,
    ts_us,
    windowed_sums,
)
from feature_repo.tables import EVENT_TIMESTAMP, PIN_DWELL, USER_DWELL
from pinfeed.errors import ConfigError
from pinfeed.events import EventSet

CLICKS, DWELL_SUM, SHORT, LONG = range(4)
"""Leading columns of the dwell matrix; the histogram bins follow."""


def dwell_edges(config: FeatureConfig) -> np.ndarray:
    """Bin edges [bins + 2]: 0, the geometric edges, +inf (the last bin reads as dwell_max_s)."""
    if config.dwell_max_s <= config.dwell_min_s:
        raise ConfigError(
            f"dwell_max_s ({config.dwell_max_s}) must exceed dwell_min_s ({config.dwell_min_s})"
        )
    inner = np.geomspace(config.dwell_min_s, config.dwell_max_s, config.dwell_bins)
    return np.r_[0.0, inner, np.inf]


def _dwell_daily(
    events: EventSet, key: str, calendar: Calendar, config: FeatureConfig
) -> DailySums:
    """Per (key, day): clicks, dwell sum, short clicks, long clicks, then histogram counts."""
    impressions = events.impressions
    clicked = impressions.filter(pc.fill_null(impressions.column("click"), False))
    dwell = pc.fill_null(clicked.column("click_dwell_s"), 0.0).to_numpy(zero_copy_only=False)
    dwell = dwell.astype(np.float64)
    edges = dwell_edges(config)
    n_bins = len(edges) - 1
    bins = np.clip(np.searchsorted(edges, dwell, side="right") - 1, 0, n_bins - 1)
    values = np.zeros((clicked.num_rows, 4 + n_bins))
    values[:, CLICKS] = 1.0
    values[:, DWELL_SUM] = dwell
    values[:, SHORT] = dwell < config.short_click_s
    values[:, LONG] = flag(clicked, "long_click")
    values[np.arange(clicked.num_rows), 4 + bins] = 1.0
    keys = clicked.column(key).to_numpy().astype(np.int64)
    days = calendar.day_of(ts_us(clicked.column("event_ts")))
    return daily_sums(keys, days, values, calendar.n_days)


def _order_statistic(hist: np.ndarray, edges: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Approximate value of the `rank`-th smallest (1-based) item of each histogram row: the
    j-th of c items in a bin sits at (j - 0.5) / c of the bin's width. Shapes [m]."""
    cumulative = np.cumsum(hist, axis=1)
    b = np.argmax(cumulative >= rank[:, None], axis=1)
    rows = np.arange(len(hist))
    count = np.maximum(hist[rows, b], 1.0)
    position = rank - (cumulative[rows, b] - hist[rows, b]) - 0.5
    lower = edges[b]
    upper = np.where(np.isfinite(edges[b + 1]), edges[b + 1], edges[b])
    return lower + position / count * (upper - lower)


def histogram_median(hist: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Median of each histogram row [m, bins]: the mean of the two middle order statistics
    (one when the count is odd); NaN for an empty row. Shape [m]."""
    totals = hist.sum(axis=1)
    low = np.maximum(np.floor((totals + 1) / 2), 1)
    high = np.maximum(np.ceil((totals + 1) / 2), 1)
    median = (_order_statistic(hist, edges, low) + _order_statistic(hist, edges, high)) / 2
    return np.where(totals > 0, median, np.nan)


def build_dwell(
    events: EventSet,
    entity: Literal["user", "pin"],
    calendar: Calendar,
    config: FeatureConfig,
) -> pa.Table:
    """The `user_dwell` or `pin_dwell` table."""
    if config.short_click_s >= events.meta.long_click_threshold_s:
        raise ConfigError(
            f"short_click_s ({config.short_click_s} s) must be below the event set's "
            f"long_click_threshold_s ({events.meta.long_click_threshold_s} s)"
        )
    key = f"{entity}_id"
    daily = _dwell_daily(events, key, calendar, config)
    window = windowed_sums(daily, calendar.n_days, (LONG_WINDOW_DAYS,), CLICKS, config.chunk_cells)
    sums = window.sums[LONG_WINDOW_DAYS]
    clicks = sums[:, CLICKS]
    safe = np.where(clicks > 0, clicks, np.nan)
    return to_table(
        {
            key: window.keys,
            EVENT_TIMESTAMP: calendar.stamp_us(window.days),
            f"{entity}_clicks_30d": clicks.astype(np.int64),
            f"{entity}_dwell_mean_s": sums[:, DWELL_SUM] / safe,
            f"{entity}_dwell_median_s": histogram_median(sums[:, 4:], dwell_edges(config)),
            f"{entity}_short_click_share": sums[:, SHORT] / safe,
            f"{entity}_long_click_share": sums[:, LONG] / safe,
        },
        USER_DWELL if entity == "user" else PIN_DWELL,
    )
