"""`user_features`: a user's activity counts and smoothed engagement rates, one row per user
per day (see `snapshots` for the point-in-time rules)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from feature_repo.pipeline.activity import COL, activity_daily
from feature_repo.pipeline.config import LONG_WINDOW_DAYS, SHORT_WINDOW_DAYS, FeatureConfig
from feature_repo.pipeline.snapshots import (
    Calendar,
    day_totals,
    prior_rates,
    smoothed_rate,
    to_table,
    windowed_sums,
)
from feature_repo.tables import EVENT_TIMESTAMP, USER_FEATURES
from pinfeed.events import EventSet
from pinfeed.schema import ENGAGEMENTS


def build_user_features(events: EventSet, calendar: Calendar, config: FeatureConfig) -> pa.Table:
    """Snapshot rows for every user with an impression or a conversion in the 30-day window."""
    daily = activity_daily(events, "user_id", calendar)
    window = windowed_sums(
        daily,
        calendar.n_days,
        (SHORT_WINDOW_DAYS, LONG_WINDOW_DAYS),
        activity=COL["events"],
        chunk_cells=config.chunk_cells,
    )
    priors = prior_rates(
        day_totals(daily, calendar.n_days),
        [COL[name] for name in ENGAGEMENTS],
        COL["impressions"],
        LONG_WINDOW_DAYS,
    )[window.days]
    long_window = window.sums[LONG_WINDOW_DAYS]
    impressions = long_window[:, COL["impressions"]]
    rates = {
        f"user_{name}_rate_30d": smoothed_rate(
            long_window[:, COL[name]], impressions, priors[:, i], config.rate_prior_weight
        )
        for i, name in enumerate(ENGAGEMENTS)
    }
    return to_table(
        {
            "user_id": window.keys,
            EVENT_TIMESTAMP: calendar.stamp_us(window.days),
            "user_impressions_7d": window.sums[SHORT_WINDOW_DAYS][:, COL["impressions"]].astype(
                np.int64
            ),
            "user_impressions_30d": impressions.astype(np.int64),
            **rates,
            "user_conversions_30d": long_window[:, COL["conversions"]].astype(np.int64),
        },
        USER_FEATURES,
    )
