"""The Features stage: a user's online features, clusters and cluster rewards per request, and
the pin side from the in-memory cache (`serving.stages.pin_cache`).

A request reads the online store twice (user-keyed views, then the rewards of the user's
clusters); pins are never read per request. `read_user` raises `OnlineStoreUnavailable` when
the store does not answer, or at once while the breaker is open after such a failure; the
caller then answers from the cache alone (degraded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from feast import FeatureStore

from pinfeed.query_selection import UserClusters
from serving.stages.breaker import BreakerOpen, StoreBreaker
from serving.stages.online import FeatureRefs, OnlineStoreUnavailable, full_name, read_rows
from serving.stages.pin_cache import PinFeatureCache

CLUSTER_IDS = "user_clusters__cluster_ids"
MEDOIDS = "user_clusters__medoid_pin_ids"
IMPORTANCE = "user_clusters__cluster_importance"
REWARD = "cluster_reward__reward"
REWARD_HAS_DATA = "cluster_reward__reward_has_data"


@dataclass(frozen=True)
class UserView:
    """What the online store knows about one user.

    `values`: full feature name -> value for the user-keyed views (None: missing);
    `clusters`: None when the user has none; `rewards` [K] aligned with it, NaN: no data.
    """

    user_id: int
    values: dict[str, Any]
    clusters: UserClusters | None
    rewards: np.ndarray | None

    @property
    def known(self) -> bool:
        """Has the store any feature of this user? Unknown users take the cold-start path."""
        return self.clusters is not None or any(
            value is not None
            for name, value in self.values.items()
            if name not in (CLUSTER_IDS, MEDOIDS, IMPORTANCE)
        )

    @classmethod
    def unknown(cls, user_id: int) -> UserView:
        return cls(user_id=user_id, values={}, clusters=None, rewards=None)

    def scalar(self, column: str) -> float:
        value = self.values.get(column)
        return float("nan") if value is None else float(value)


class Features:
    """Online user reads plus the pin cache (swapped whole when a materialisation lands)."""

    def __init__(
        self,
        store: FeatureStore,
        refs: FeatureRefs,
        cache: PinFeatureCache,
        breaker: StoreBreaker,
    ) -> None:
        self.store = store
        self.refs = refs
        self.cache = cache
        self.breaker = breaker
        self.user_refs = tuple(ref for ref in refs.user)

    def read_user(self, user_id: int) -> UserView:
        """The user's features, clusters and their rewards (two online reads, behind the
        breaker)."""
        try:
            return self.breaker.call(lambda: self._read_user(user_id), (OnlineStoreUnavailable,))
        except BreakerOpen as error:
            raise OnlineStoreUnavailable(str(error)) from error

    def _read_user(self, user_id: int) -> UserView:
        columns = read_rows(self.store, self.user_refs, "user_id", [user_id])
        values = {full_name(ref): columns[full_name(ref)][0] for ref in self.user_refs}
        ids = values.get(CLUSTER_IDS)
        if not ids:
            return UserView(user_id=user_id, values=values, clusters=None, rewards=None)
        clusters = UserClusters(
            cluster_ids=np.asarray(ids, dtype=np.int64),
            medoid_pin_ids=np.asarray(values[MEDOIDS], dtype=np.int64),
            importance=np.asarray(values[IMPORTANCE], dtype=np.float64),
        )
        return UserView(user_id, values, clusters, self._rewards(clusters.cluster_ids))

    def _rewards(self, cluster_ids: np.ndarray) -> np.ndarray:
        """[K] rewards, NaN where a cluster has no reward row or no data."""
        columns = read_rows(self.store, self.refs.cluster, "cluster_id", cluster_ids.tolist())
        reward = columns.get(REWARD, [None] * len(cluster_ids))
        has_data = columns.get(REWARD_HAS_DATA, [True] * len(cluster_ids))
        return np.array(
            [
                float(value) if value is not None and data else np.nan
                for value, data in zip(reward, has_data, strict=True)
            ],
            dtype=np.float64,
        )

    def popular(self, count: int, exclude: set[int]) -> np.ndarray:
        """Up to `count` most-shown pins not in `exclude` (cold start and degraded answers)."""
        pool = self.cache.popular
        if exclude:
            pool = pool[~np.isin(pool, np.fromiter(exclude, dtype=np.int64))]
        return pool[:count]
