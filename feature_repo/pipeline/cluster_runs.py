"""Clustering runs over time: each run clusters the engaged pins before its time T, keeps the
ids of the previous run's surviving clusters, and computes the clusters' rewards at T.

By default there is one run at the end of the events; with `cluster_cadence_days` there is
also one every N days before it, so a point-in-time training set sees the clusters (and
rewards) of its own time. Runs are chained: run k matches its clusters against run k-1, the
first against the `previous` build's cluster_members.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from feature_repo.pipeline.cluster_ids import assign_cluster_ids
from feature_repo.pipeline.clusters import PinEmbeddings, cluster_engaged, engaged_pins
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.rewards import compute_cluster_rewards
from feature_repo.pipeline.snapshots import DAY_US, run_starts, to_table, us_datetime
from feature_repo.tables import CLUSTER_MEMBERS, CLUSTER_REWARD, EVENT_TIMESTAMP, USER_CLUSTERS
from pinfeed.events import EventSet


@dataclass(frozen=True)
class ClusterTables:
    user_clusters: pa.Table
    cluster_members: pa.Table
    """Members of the last run only: what the next build matches its clusters against."""
    cluster_reward: pa.Table
    seconds: dict[str, float]
    """Wall seconds of clustering (with id matching) and of reward computation."""


def run_times(start_us: int, end_us: int, cadence_days: int | None) -> list[int]:
    """Clustering times, ascending: `end_us`, and every `cadence_days` before it after start."""
    if cadence_days is None:
        return [end_us]
    step = cadence_days * DAY_US
    count = max(1, -(-(end_us - start_us) // step))
    return [t for t in (end_us - k * step for k in reversed(range(count))) if t > start_us]


def user_clusters_table(clusters: pd.DataFrame, stamp_us: int) -> pa.Table:
    """USER_CLUSTERS rows from clusters (user_id, cluster_id, medoid_pin_id, importance), lists
    sorted by importance (descending, ties by id)."""
    ordered = clusters.sort_values(
        ["user_id", "importance", "cluster_id"], ascending=[True, False, True]
    )
    user_ids = ordered["user_id"].to_numpy(np.int64)
    starts = run_starts(user_ids)
    offsets = pa.array(np.r_[starts, len(user_ids)].astype(np.int32))

    def lists(column: str, value_type: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(
            offsets, pa.array(ordered[column].to_numpy()).cast(value_type)
        )

    return to_table(
        {
            "user_id": user_ids[starts],
            EVENT_TIMESTAMP: np.full(len(starts), stamp_us, np.int64),
            "cluster_ids": lists("cluster_id", pa.int64()),
            "medoid_pin_ids": lists("medoid_pin_id", pa.int64()),
            "cluster_importance": lists("importance", pa.float32()),
        },
        USER_CLUSTERS,
    )


def members_table(members: pd.DataFrame) -> pa.Table:
    ordered = members.sort_values(["user_id", "cluster_id", "pin_id"])
    return to_table(
        {name: ordered[name].to_numpy(np.int64) for name in CLUSTER_MEMBERS.names}, CLUSTER_MEMBERS
    )


def run_clusters(
    events: EventSet,
    times_us: list[int],
    previous: pd.DataFrame | None,
    config: FeatureConfig,
    progress: bool,
) -> ClusterTables:
    """Cluster, assign stable ids and compute rewards at each time in `times_us`.

    `previous`: an earlier build's cluster_members (user_id, cluster_id, pin_id), or None.
    """
    embeddings = PinEmbeddings.from_pins(events.pins)
    user_tables, reward_tables = [], []
    members = previous
    seconds = {"clusters": 0.0, "cluster_reward": 0.0}
    for stamp_us in times_us:
        began = time.perf_counter()
        clustering = cluster_engaged(
            engaged_pins(events.impressions, stamp_us, config), embeddings, config, progress
        )
        ids = assign_cluster_ids(
            clustering,
            members,
            embeddings,
            run_day=stamp_us // DAY_US,
            match_jaccard=config.match_jaccard,
            match_cosine=config.match_cosine,
        )
        clusters = clustering.clusters.assign(cluster_id=ids)
        members = clustering.members.assign(cluster_id=ids[clustering.members["cluster"]])[
            CLUSTER_MEMBERS.names
        ]
        user_tables.append(user_clusters_table(clusters, stamp_us))
        seconds["clusters"] += time.perf_counter() - began
        began = time.perf_counter()
        if len(clusters):
            reward_tables.append(
                compute_cluster_rewards(
                    events.impressions,
                    members_table(members),
                    user_tables[-1],
                    since=us_datetime(stamp_us - int(config.reward_window_days * DAY_US)),
                    config=config,
                    pins=events.pins,
                    as_of=us_datetime(stamp_us),
                )
            )
        seconds["cluster_reward"] += time.perf_counter() - began
    last_members = members if members is not None else pd.DataFrame(columns=CLUSTER_MEMBERS.names)
    return ClusterTables(
        user_clusters=pa.concat_tables(user_tables) if user_tables else USER_CLUSTERS.empty_table(),
        cluster_members=members_table(last_members[CLUSTER_MEMBERS.names].astype(np.int64)),
        cluster_reward=(
            pa.concat_tables(reward_tables) if reward_tables else CLUSTER_REWARD.empty_table()
        ),
        seconds=seconds,
    )
