"""`pin_features` (daily snapshots of a pin's smoothed engagement and conversion rates, and
its age) and `pin_content` (the static per-pin columns, once per pin)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from feature_repo.pipeline.activity import COL, activity_daily
from feature_repo.pipeline.config import LONG_WINDOW_DAYS, FeatureConfig
from feature_repo.pipeline.snapshots import (
    DAY_US,
    Calendar,
    day_totals,
    prior_rates,
    smoothed_rate,
    to_table,
    ts_us,
    windowed_sums,
)
from feature_repo.tables import EVENT_TIMESTAMP, PIN_CONTENT, PIN_FEATURES
from pinfeed.events import EventSet
from pinfeed.schema import ENGAGEMENTS


def build_pin_content(events: EventSet) -> pa.Table:
    """One row per pin stamped at its created_ts: embedding, topic, shoppable."""
    pins = events.pins
    return to_table(
        {
            "pin_id": pins.column("pin_id"),
            EVENT_TIMESTAMP: pins.column("created_ts"),
            "content_embedding": pins.column("content_embedding"),
            "topic": pins.column("topic"),
            "shoppable": pins.column("shoppable"),
        },
        PIN_CONTENT,
    )


def pin_age_days(events: EventSet, pin_ids: np.ndarray, stamps_us: np.ndarray) -> np.ndarray:
    """Days from each pin's created_ts to the stamp, clipped at 0; NaN for a pin missing from
    pins.parquet. Shapes [m]."""
    pins = events.pins
    ids = pins.column("pin_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    ids, created = ids[order], ts_us(pins.column("created_ts"))[order]
    age = np.full(len(pin_ids), np.nan)
    if len(ids) == 0:
        return age
    position = np.clip(np.searchsorted(ids, pin_ids), 0, len(ids) - 1)
    known = ids[position] == pin_ids
    age[known] = np.maximum(stamps_us[known] - created[position[known]], 0) / DAY_US
    return age


def build_pin_features(events: EventSet, calendar: Calendar, config: FeatureConfig) -> pa.Table:
    """Snapshot rows for every pin with an impression or a conversion in the 30-day window."""
    daily = activity_daily(events, "pin_id", calendar)
    window = windowed_sums(
        daily, calendar.n_days, (LONG_WINDOW_DAYS,), COL["events"], config.chunk_cells
    )
    counted = (*ENGAGEMENTS, "conversions")
    priors = prior_rates(
        day_totals(daily, calendar.n_days),
        [COL[name] for name in counted],
        COL["impressions"],
        LONG_WINDOW_DAYS,
    )[window.days]
    sums = window.sums[LONG_WINDOW_DAYS]
    impressions = sums[:, COL["impressions"]]
    rates = {
        f"pin_{name.removesuffix('s')}_rate_30d": smoothed_rate(
            sums[:, COL[name]], impressions, priors[:, i], config.rate_prior_weight
        )
        for i, name in enumerate(counted)
    }
    stamps = calendar.stamp_us(window.days)
    return to_table(
        {
            "pin_id": window.keys,
            EVENT_TIMESTAMP: stamps,
            "pin_impressions_30d": impressions.astype(np.int64),
            **rates,
            "pin_age_days": pin_age_days(events, window.keys, stamps),
        },
        PIN_FEATURES,
    )
