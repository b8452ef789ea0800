"""Attribution of feedback to the interest cluster that produced the served item.

Every served item carries the cluster and query pin it was retrieved from (`SERVED_COLUMNS`).
Feedback events name an item by (request_id, pin_id) and a kind: `impression` (the item was
shown) or one of the engagements closeup, save, click, long_click. `reward_increments` turns a
batch of served items and feedback events into per-cluster increments of the two counts the
reward is built from:

- impressions: one per item with an `impression` event;
- engagements: one per item with at least one engagement event no later than `window` after
  the item was served (an item clicked and saved counts once, as the offline reward counts an
  impression row with any engagement flag once).

Idempotent per event: an event is identified by (request_id, pin_id, kind), and items already
credited in earlier batches are passed in (`already_shown`, `already_engaged`) and returned
updated, so a retried or duplicated event never counts twice. Events for items not in
`served` are ignored (returned as `unmatched`). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from pinfeed.errors import SchemaError
from pinfeed.schema import ENGAGEMENTS

IMPRESSION = "impression"
FEEDBACK_KINDS = (IMPRESSION, *ENGAGEMENTS)
SERVED_COLUMNS = ("request_id", "pin_id", "user_id", "cluster_id", "query_pin_id", "served_ts")
FEEDBACK_COLUMNS = ("request_id", "pin_id", "kind", "event_ts")
INCREMENT_COLUMNS = ("user_id", "cluster_id", "impressions", "engagements")
ItemKey = tuple[int, int]
"""(request_id, pin_id): one served item."""


@dataclass(frozen=True)
class RewardIncrements:
    """Per-cluster increments (`INCREMENT_COLUMNS`, one row per touched cluster), the item keys
    credited so far (inputs plus this batch) and the number of events matching no served item."""

    increments: pd.DataFrame
    shown: frozenset[ItemKey]
    engaged: frozenset[ItemKey]
    unmatched: int
    latest_event_ts: pd.Series
    """Per cluster_id, the latest counted event time (the realtime push stamps rows with it)."""


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}; expected {list(columns)}")


def _keys(frame: pd.DataFrame) -> list[ItemKey]:
    return list(
        zip(frame["request_id"].astype(np.int64), frame["pin_id"].astype(np.int64), strict=True)
    )


def _not_in(frame: pd.DataFrame, keys: frozenset[ItemKey]) -> pd.DataFrame:
    if not keys or frame.empty:
        return frame
    return frame[[key not in keys for key in _keys(frame)]]


def reward_increments(
    served: pd.DataFrame,
    feedback: pd.DataFrame,
    *,
    window: timedelta,
    already_shown: frozenset[ItemKey] = frozenset(),
    already_engaged: frozenset[ItemKey] = frozenset(),
) -> RewardIncrements:
    """Per-cluster (impressions, engagements) increments from one batch of feedback.

    served: SERVED_COLUMNS, one row per served item (served_ts a UTC timestamp).
    feedback: FEEDBACK_COLUMNS, kind in FEEDBACK_KINDS (event_ts a UTC timestamp).
    window: engagements later than this after serving are not credited.
    """
    _require(served, SERVED_COLUMNS, "served")
    _require(feedback, FEEDBACK_COLUMNS, "feedback")
    unknown = sorted(set(feedback["kind"]) - set(FEEDBACK_KINDS))
    if unknown:
        raise SchemaError(f"feedback.kind: unknown value(s) {unknown}; expected {FEEDBACK_KINDS}")
    items = served.loc[:, list(SERVED_COLUMNS)].drop_duplicates(["request_id", "pin_id"])
    events = feedback.loc[:, list(FEEDBACK_COLUMNS)].drop_duplicates(
        ["request_id", "pin_id", "kind"]
    )
    joined = events.merge(items, on=["request_id", "pin_id"], how="inner")
    unmatched = len(events) - len(joined)
    shown = _not_in(joined[joined["kind"] == IMPRESSION], already_shown)
    shown = shown.sort_values("event_ts").drop_duplicates(["request_id", "pin_id"])
    late = joined["event_ts"] - joined["served_ts"] > pd.Timedelta(window)
    engaged = joined[(joined["kind"] != IMPRESSION) & ~late]
    engaged = _not_in(engaged, already_engaged)
    engaged = engaged.sort_values("event_ts").drop_duplicates(["request_id", "pin_id"])
    counted = pd.concat(
        [shown.assign(impressions=1, engagements=0), engaged.assign(impressions=0, engagements=1)]
    )
    grouped = counted.groupby(["user_id", "cluster_id"], sort=True)
    increments = grouped[["impressions", "engagements"]].sum().reset_index()
    latest = counted.groupby("cluster_id")["event_ts"].max() if len(counted) else pd.Series()
    return RewardIncrements(
        increments=increments.astype(
            {
                "user_id": np.int64,
                "cluster_id": np.int64,
                "impressions": np.int64,
                "engagements": np.int64,
            }
        ).loc[:, list(INCREMENT_COLUMNS)],
        shown=already_shown | frozenset(_keys(shown)),
        engaged=already_engaged | frozenset(_keys(engaged)),
        unmatched=unmatched,
        latest_event_ts=latest,
    )
