"""Per-entity daily activity counts shared by the user and pin snapshot tables."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_repo.pipeline.snapshots import Calendar, DailySums, daily_sums, ts_us
from pinfeed.events import EventSet
from pinfeed.schema import ENGAGEMENTS

ACTIVITY_COLUMNS = ("events", "impressions", *ENGAGEMENTS, "conversions")
"""Columns of the activity matrix, in order: any event, impressions, the four engagement
flags, conversions."""
COL = {name: i for i, name in enumerate(ACTIVITY_COLUMNS)}


def flag(table: pa.Table, name: str) -> np.ndarray:
    """A boolean column as float64 0/1 (null reads as 0), shape [n]."""
    return pc.fill_null(table.column(name), False).to_numpy(zero_copy_only=False).astype(np.float64)


def activity_daily(
    events: EventSet, key: Literal["user_id", "pin_id"], calendar: Calendar
) -> DailySums:
    """Daily counts per `key` of ACTIVITY_COLUMNS: values shape [n_cells, 7]."""
    impressions, conversions = events.impressions, events.conversions
    n_imp, n_conv = impressions.num_rows, conversions.num_rows
    imp_values = np.zeros((n_imp, len(ACTIVITY_COLUMNS)))
    imp_values[:, COL["events"]] = 1.0
    imp_values[:, COL["impressions"]] = 1.0
    for name in ENGAGEMENTS:
        imp_values[:, COL[name]] = flag(impressions, name)
    conv_values = np.zeros((n_conv, len(ACTIVITY_COLUMNS)))
    conv_values[:, COL["events"]] = 1.0
    conv_values[:, COL["conversions"]] = 1.0
    keys = np.concatenate(
        [impressions.column(key).to_numpy(), conversions.column(key).to_numpy()]
    ).astype(np.int64)
    moments = np.concatenate(
        [ts_us(impressions.column("event_ts")), ts_us(conversions.column("event_ts"))]
    )
    return daily_sums(
        keys, calendar.day_of(moments), np.concatenate([imp_values, conv_values]), calendar.n_days
    )
