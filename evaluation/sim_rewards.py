"""Reward bookkeeping of the closed-loop simulator (`evaluation.simulator`): the log of
impressions and the cluster rewards one policy selects by.

It is separate from the loop because the two reward paths see different things, and this is
where that difference lives. The offline job sees only the log (`RewardLog`): every impression
of the last reward window with its engaged flag, read at a midnight cut-off and run through the
real `compute_cluster_rewards`, so its rows are as old as the cut-off when they land hours
later. The realtime path sees only the increments attributed to each round's feedback
(`pinfeed.attribution`), added by the real `apply_increments` to whatever rows the policy holds
now; it never expires an impression, and is re-based when a job lands (`PolicyRewards`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from evaluation.sim_world import SimUsers
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.rewards import compute_cluster_rewards
from feature_repo.realtime_rewards import COUNT_COLUMNS, apply_increments
from feature_repo.tables import USER_CLUSTERS

REWARD_ROW_COLUMNS = (*COUNT_COLUMNS, "reward", "reward_has_data")


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, the log's timestamp unit."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@dataclass
class RewardLog:
    """Impressions of the last reward window, as the offline job reads them."""

    columns: dict[str, list[np.ndarray]]

    def append(self, **values: np.ndarray) -> None:
        for name, value in values.items():
            self.columns.setdefault(name, []).append(value)

    def table(self, since_us: int) -> pa.Table:
        merged = {name: np.concatenate(parts) for name, parts in self.columns.items()}
        keep = merged["ts_us"] >= since_us
        self.columns = {name: [value[keep]] for name, value in merged.items()}
        engaged = pa.array(merged["engaged"][keep])
        return pa.table(
            {
                "event_ts": pa.array(merged["ts_us"][keep]).cast(pa.timestamp("us", tz="UTC")),
                "user_id": merged["user_id"][keep],
                "pin_id": merged["pin_id"][keep],
                "query_pin_id": merged["query_pin_id"][keep],
                "cluster_id": merged["cluster_id"][keep],
                **{name: engaged for name in ("closeup", "save", "click", "long_click")},
            }
        )


def _cluster_tables(users: SimUsers, at: datetime) -> tuple[pa.Table, pa.Table]:
    """(user_clusters at `at`, cluster_members = the medoids) for compute_cluster_rewards."""
    clusters = pa.table(
        {
            "user_id": users.user_ids,
            "event_timestamp": pa.array(np.full(len(users.user_ids), epoch_us(at))).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "cluster_ids": users.cluster_ids.tolist(),
            "medoid_pin_ids": users.medoids.tolist(),
            "cluster_importance": users.importance.astype(np.float32).tolist(),
        },
        schema=USER_CLUSTERS,
    )
    members = pa.table(
        {
            "user_id": np.repeat(users.user_ids, users.cluster_ids.shape[1]),
            "cluster_id": users.cluster_ids.ravel(),
            "pin_id": users.medoids.ravel(),
        }
    )
    return clusters, members


class PolicyRewards:
    """A policy's view of the cluster rewards: counts and rewards of every (user, cluster) [U, K];
    all 0 / 0 (no data) until the first offline job lands. The users' clusters are as of
    `clusters_at` (the simulation's start)."""

    def __init__(self, users: SimUsers, features: FeatureConfig, clusters_at: datetime) -> None:
        self.shape = users.cluster_ids.shape
        self.features = features
        self.clusters, self.members = _cluster_tables(users, clusters_at)
        zeros = np.zeros(users.cluster_ids.size, np.int64)
        self.rows = pd.DataFrame(
            {
                "user_id": np.repeat(users.user_ids, self.shape[1]),
                "cluster_id": users.cluster_ids.ravel(),
                "reward_impressions": zeros,
                "reward_engagements": zeros,
                "reward": np.full(zeros.shape, self.features.reward_fallback, np.float32),
                "reward_has_data": zeros.astype(bool),
            }
        )

    def land_offline_job(
        self, log: RewardLog, cutoff: datetime, now: datetime, *, rebase: bool
    ) -> None:
        """The offline job with `cutoff` lands at `now`: without `rebase` (the offline policy)
        its rows are served as they are; with it (the realtime policy) they become the job's
        plus the increments applied since the cut-off."""
        self.recompute(log, cutoff, as_of=now if rebase else cutoff)

    def recompute(self, log: RewardLog, cutoff: datetime, as_of: datetime) -> None:
        """Rows from the log's events in [cutoff - window, as_of), replacing the current ones:
        the offline job's when as_of is its cut-off, the job's plus the realtime increments
        since when as_of is later."""
        since = cutoff - timedelta(days=self.features.reward_window_days)
        table = compute_cluster_rewards(
            log.table(epoch_us(since)),
            self.members,
            self.clusters,
            since,
            self.features,
            as_of=as_of,
        )
        self.rows = table.to_pandas().loc[:, list(REWARD_ROW_COLUMNS)]

    def apply(self, increments: pd.DataFrame) -> None:
        """The realtime path: add increments to the current rows of the touched users."""
        if increments.empty:
            return
        fresh = apply_increments(
            self.rows.loc[:, list(COUNT_COLUMNS)],
            increments,
            self.features.reward_prior_weight,
            self.features.reward_fallback,
        )
        touched = self.rows["user_id"].isin(fresh["user_id"])
        self.rows = pd.concat([self.rows[~touched], fresh], ignore_index=True)

    def matrix(self) -> tuple[np.ndarray, float]:
        """(rewards [U, K] with NaN where no data, global average reward)."""
        rows = self.rows.sort_values(["user_id", "cluster_id"])
        has = rows["reward_has_data"].to_numpy(bool)
        reward = rows["reward"].to_numpy(np.float64)
        overall = float(reward[has].mean()) if has.any() else self.features.reward_fallback
        return np.where(has, reward, np.nan).reshape(self.shape), overall
