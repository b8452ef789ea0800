"""Attribution of feedback to the interest cluster that produced the served item.

Every served item carries the cluster and query pin it was retrieved from (`SERVED_COLUMNS`).
Feedback events name an item by (request_id, pin_id) and a kind (`pinfeed.traffic.records`):
`impression` (the item was shown), one of the engagements closeup, save, click, long_click,
or `hide` (negative feedback). `reward_increments` turns a batch of served items and feedback
events into per-cluster increments of the three counts the reward is built from:

- impressions: one per item with any event of a reward kind (an engaged or hidden item was
  shown, whether or not the client also sent `impression`), at any delay;
- engagements: one per item with at least one engagement event no later than `window` after
  the item was served (an item clicked and saved counts once, as the offline reward counts an
  impression row with any engagement flag once);
- hides: one per item with a `hide` event within the window (the reward weighs a hide as
  `hide_weight` unengaged impressions: `feature_repo.pipeline.rewards`).

Conversion kinds (checkout, add_to_cart) earn no reward; they are ignored here.

Idempotent per event: items already credited in earlier batches are passed in (`Credited`) and
the batch's new credits returned, so a retried or duplicated event never counts twice. Events
for items not in `served` are ignored (counted in `unmatched`). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from pinfeed.errors import SchemaError
from pinfeed.schema import ENGAGEMENTS
from pinfeed.traffic.records import FEEDBACK_KINDS, HIDE, REWARD_KINDS

SERVED_COLUMNS = ("request_id", "pin_id", "user_id", "cluster_id", "query_pin_id", "served_ts")
FEEDBACK_COLUMNS = ("request_id", "pin_id", "kind", "event_ts")
INCREMENT_COLUMNS = ("user_id", "cluster_id", "impressions", "engagements", "hides")
ItemKey = tuple[int, int]
"""(request_id, pin_id): one served item."""
SHOWN, ENGAGED, HIDDEN = "shown", "engaged", "hidden"
CREDITS = (SHOWN, ENGAGED, HIDDEN)
"""What an item can be credited for, once each."""


@dataclass(frozen=True)
class Credited:
    """Items already credited, per credit (`CREDITS`)."""

    shown: frozenset[ItemKey] = frozenset()
    engaged: frozenset[ItemKey] = frozenset()
    hidden: frozenset[ItemKey] = frozenset()

    def of(self, credit: str) -> frozenset[ItemKey]:
        return getattr(self, credit)

    def __or__(self, other: Credited) -> Credited:
        return Credited(*(self.of(c) | other.of(c) for c in CREDITS))

    def claims(self) -> list[tuple[int, int, str]]:
        """(request_id, pin_id, credit) for every credited item."""
        return [(r, p, credit) for credit in CREDITS for r, p in sorted(self.of(credit))]


@dataclass(frozen=True)
class RewardIncrements:
    """Per-cluster increments (`INCREMENT_COLUMNS`, one row per touched cluster), the items
    this batch credited (not those passed in) and the number of events matching no served
    item."""

    increments: pd.DataFrame
    credited: Credited
    unmatched: int
    latest_event_ts: pd.Series
    """Per cluster_id, the latest counted event time."""


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}; expected {list(columns)}")


def _keys(frame: pd.DataFrame) -> list[ItemKey]:
    return list(
        zip(frame["request_id"].astype(np.int64), frame["pin_id"].astype(np.int64), strict=True)
    )


def _first_new(frame: pd.DataFrame, done: frozenset[ItemKey]) -> pd.DataFrame:
    """The earliest event per item not in `done`."""
    if done and not frame.empty:
        frame = frame[[key not in done for key in _keys(frame)]]
    return frame.sort_values("event_ts").drop_duplicates(["request_id", "pin_id"])


def reward_increments(
    served: pd.DataFrame,
    feedback: pd.DataFrame,
    *,
    window: timedelta,
    credited: Credited = Credited(),
) -> RewardIncrements:
    """Per-cluster (impressions, engagements, hides) increments from one batch of feedback.

    served: SERVED_COLUMNS, one row per served item (served_ts a UTC timestamp).
    feedback: FEEDBACK_COLUMNS, kind in FEEDBACK_KINDS (event_ts a UTC timestamp).
    window: engagements and hides later than this after serving are not credited.
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
    joined = joined[joined["kind"].isin(REWARD_KINDS)]
    late = joined["event_ts"] - joined["served_ts"] > pd.Timedelta(window)
    new = {
        SHOWN: _first_new(joined, credited.shown),
        ENGAGED: _first_new(joined[joined["kind"].isin(ENGAGEMENTS) & ~late], credited.engaged),
        HIDDEN: _first_new(joined[(joined["kind"] == HIDE) & ~late], credited.hidden),
    }
    counted = pd.concat(
        [
            new[SHOWN].assign(impressions=1, engagements=0, hides=0),
            new[ENGAGED].assign(impressions=0, engagements=1, hides=0),
            new[HIDDEN].assign(impressions=0, engagements=0, hides=1),
        ]
    )
    grouped = counted.groupby(["user_id", "cluster_id"], sort=True)
    increments = grouped[["impressions", "engagements", "hides"]].sum().reset_index()
    latest = counted.groupby("cluster_id")["event_ts"].max() if len(counted) else pd.Series()
    return RewardIncrements(
        increments=increments.astype(dict.fromkeys(INCREMENT_COLUMNS, np.int64)).loc[
            :, list(INCREMENT_COLUMNS)
        ],
        credited=Credited(*(frozenset(_keys(new[c])) for c in CREDITS)),
        unmatched=unmatched,
        latest_event_ts=latest,
    )
