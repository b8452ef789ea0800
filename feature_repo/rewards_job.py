"""The offline query-reward workflow (`pinfeed features rewards --since ...`): recompute every
current cluster's impressions, engagements and smoothed reward from the impression log, write
them to the `cluster_reward` table and materialise them, overwriting whatever realtime pushes
left in the online store with the recomputed truth.

Rows are keyed by cluster id, and cluster ids survive a rebuild (`pipeline.cluster_ids`), so a
cluster's reward carries over when `pinfeed features build` runs again. The rows are appended
to the table stamped `as_of` (rows of an earlier computation at the same stamp are replaced),
so point-in-time training sets still see the rewards of their own time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore

from feature_repo.pipeline.build import write_table
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.rewards import compute_cluster_rewards
from feature_repo.pipeline.snapshots import DAY_US, datetime_us, ts_us, us_datetime
from feature_repo.store import materialize
from feature_repo.tables import EVENT_TIMESTAMP
from pinfeed.errors import DataNotFoundError
from pinfeed.events import read_event_set
from pinfeed.home import ProjectHome

REWARD_VIEW = "cluster_reward"


@dataclass(frozen=True)
class RewardsJobResult:
    """What one run computed and where it went."""

    path: Path
    as_of: datetime
    since: datetime
    clusters: int
    clusters_with_data: int
    impressions: int
    mean_reward: float
    materialised: bool
    seconds: float


def _features_table(home: ProjectHome, name: str) -> pa.Table:
    path = home.features / f"{name}.parquet"
    if not path.exists():
        raise DataNotFoundError(f"{path} is missing: run `pinfeed features build` first")
    return pq.read_table(path)


def merge_reward_rows(existing: pa.Table | None, fresh: pa.Table) -> pa.Table:
    """`existing` rows minus those stamped at `fresh`'s stamps, plus `fresh`, in stamp order."""
    if existing is None or existing.num_rows == 0:
        return fresh
    stamps = pc.unique(fresh.column(EVENT_TIMESTAMP))
    keep = pc.invert(pc.is_in(existing.column(EVENT_TIMESTAMP), value_set=stamps))
    merged = pa.concat_tables([existing.filter(keep).cast(fresh.schema), fresh])
    order = np.argsort(ts_us(merged.column(EVENT_TIMESTAMP)), kind="stable")
    return merged.take(pa.array(order))


def compute_rewards(
    home: ProjectHome,
    *,
    since: datetime | None = None,
    as_of: datetime | None = None,
    config: FeatureConfig | None = None,
) -> tuple[pa.Table, datetime, datetime]:
    """(CLUSTER_REWARD rows at as_of, as_of, since) from `home`'s events and clusters.

    as_of: default the latest user_clusters stamp; since: default as_of - reward_window_days.
    """
    config = config or FeatureConfig()
    clusters = _features_table(home, "user_clusters")
    members = _features_table(home, "cluster_members")
    if clusters.num_rows == 0:
        raise DataNotFoundError("user_clusters is empty: run `pinfeed features build` first")
    if as_of is None:
        as_of = us_datetime(int(ts_us(clusters.column(EVENT_TIMESTAMP)).max()))
    if since is None:
        since = us_datetime(datetime_us(as_of) - int(config.reward_window_days * DAY_US))
    events = read_event_set(home.events)
    table = compute_cluster_rewards(
        events.impressions, members, clusters, since, config, pins=events.pins, as_of=as_of
    )
    return table, as_of, since


def materialise_rewards(store: FeatureStore, as_of: datetime) -> None:
    """Load the rows stamped `as_of` (Feast's range is inclusive) into the online store, for
    the cluster_reward view only, so other views' incremental state is left alone."""
    materialize(store, end=as_of + timedelta(seconds=1), start=as_of, views=[REWARD_VIEW])


def run_rewards_job(
    home: ProjectHome,
    *,
    since: datetime | None = None,
    as_of: datetime | None = None,
    config: FeatureConfig | None = None,
    store: FeatureStore | None = None,
) -> RewardsJobResult:
    """Recompute, write `<home>/data/features/cluster_reward.parquet` and, when `store` is
    given (an applied store of this home), materialise the new rows."""
    began = time.perf_counter()
    table, as_of, since = compute_rewards(home, since=since, as_of=as_of, config=config)
    path = home.features / f"{REWARD_VIEW}.parquet"
    existing = pq.read_table(path) if path.exists() else None
    write_table(merge_reward_rows(existing, table), home.features, REWARD_VIEW)
    if store is not None:
        materialise_rewards(store, as_of)
    impressions = table.column("reward_impressions").to_numpy()
    reward = table.column("reward").to_numpy()
    return RewardsJobResult(
        path=path,
        as_of=as_of,
        since=since,
        clusters=table.num_rows,
        clusters_with_data=int((impressions > 0).sum()),
        impressions=int(impressions.sum()),
        mean_reward=float(reward.mean()) if len(reward) else 0.0,
        materialised=store is not None,
        seconds=time.perf_counter() - began,
    )
