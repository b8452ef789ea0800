"""Realtime cluster rewards: feedback -> increments -> online row -> Feast push, so the next
request's online read already sees the new reward (design §4, the seed's "realtime version").

One update, for the users a feedback batch touches:
1. `pinfeed.attribution.reward_increments` turns served items + feedback into per-cluster
   (impressions, engagements, hides) increments;
2. read the user's current clusters (`user_clusters`) and every one of their `cluster_reward`
   rows from the online store;
3. add the increments and recompute the smoothed reward exactly as the offline job does
   (`reward = (e + r0 * m) / (i + m)`, r0 the user's pooled rate over all their clusters, so
   every cluster of a touched user gets a new row, not only the one engaged);
4. push the rows through the `cluster_reward_push` source (online only).

Agreement with the offline job (`feature_repo.rewards_job`): the offline rows at `as_of` count
events in [since, as_of). The writer ignores events before `counted_until` (set it to that
as_of: those are already in the truth), so offline(as_of=T1) + realtime(events in [T1, T2))
equals offline(since, as_of=T2) on the same events (tested through served traffic in
tests/integration/test_served_loop.py). Realtime never expires old impressions out of the
window; the offline run does. Which row the online store keeps afterwards: SQLite keeps the
last write (the offline materialisation overwrites pushes); Redis keeps the newest stamp, and
pushes are stamped with the server's clock, so a push made after the offline job's `as_of`
stays until the next push (both hold the same counts when the logs were ingested first).

Hides: a hidden item adds `hide_weight` (FeatureConfig) to its cluster's impressions and
nothing to its engagements, exactly as the offline job counts a hide flag, so negative feedback
lowers the reward at once and both paths still agree.

The read-modify-write race, and how it is closed: two writers updating the same user at once
could both read N and both write N + 1, losing an increment. Every update runs under the credit
ledger's lock (`pinfeed.traffic.credit`: a file lock locally, a Redis lock with Redis), which
every FeedbackSink replica shares, and credit is idempotent per item through the same ledger, so
a retried or duplicated event, or one replayed after a restart, never counts twice. The ledger
is written after the push succeeded: a failed push credits nothing and the event stays in the
feedback log for the offline job.

Timestamps: Redis keeps a row only when its timestamp is strictly newer than the stored one
(SQLite always overwrites), so every push is stamped by this server's clock, strictly after
the previous push of this writer and after `counted_until`; a client's event time never
stamps a row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore

from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.snapshots import smoothed_rate
from feature_repo.store import online_feature_values, push_cluster_rewards
from pinfeed.attribution import reward_increments
from pinfeed.errors import ConfigError
from pinfeed.traffic.credit import CreditLedger, MemoryCreditLedger

COUNT_COLUMNS = ("user_id", "cluster_id", "reward_impressions", "reward_engagements")
ONE_US = pd.Timedelta(microseconds=1)


def apply_increments(
    current: pd.DataFrame,
    increments: pd.DataFrame,
    prior_weight: float,
    fallback: float,
    hide_weight: int = 0,
) -> pd.DataFrame:
    """New reward rows for every cluster of the users in `increments`.

    current: COUNT_COLUMNS for (at least) all current clusters of those users; a cluster with
        no reward row yet has 0 / 0.
    increments: user_id, cluster_id, impressions, engagements and optionally hides
        (pinfeed.attribution); each hide adds `hide_weight` impressions. Increments for
        clusters not in `current` (no longer a cluster of the user) are dropped.
    Returns user_id, cluster_id, reward_impressions, reward_engagements, reward (float32),
    reward_has_data, one row per cluster of a touched user, sorted by (user_id, cluster_id).
    """
    touched = current[current["user_id"].isin(increments["user_id"])]
    if "hides" not in increments.columns:
        increments = increments.assign(hides=0)
    rows = touched.merge(increments, on=["user_id", "cluster_id"], how="left").fillna(
        {"impressions": 0, "engagements": 0, "hides": 0}
    )
    added = rows["impressions"] + hide_weight * rows["hides"]
    impressions = (rows["reward_impressions"] + added).to_numpy(np.int64)
    engagements = (rows["reward_engagements"] + rows["engagements"]).to_numpy(np.int64)
    totals = (
        pd.DataFrame({"user_id": rows["user_id"].to_numpy(), "i": impressions, "e": engagements})
        .groupby("user_id")[["i", "e"]]
        .transform("sum")
    )
    user_imp = totals["i"].to_numpy()
    r0 = np.where(user_imp > 0, totals["e"].to_numpy() / np.maximum(user_imp, 1), fallback)
    reward = np.clip(smoothed_rate(engagements, impressions, r0, prior_weight), 0.0, 1.0)
    out = pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy(np.int64),
            "cluster_id": rows["cluster_id"].to_numpy(np.int64),
            "reward_impressions": impressions,
            "reward_engagements": engagements,
            "reward": reward.astype(np.float32),
            "reward_has_data": impressions > 0,
        }
    )
    return out.sort_values(["user_id", "cluster_id"]).reset_index(drop=True)


def read_reward_counts(store: FeatureStore, user_ids: list[int]) -> pd.DataFrame:
    """COUNT_COLUMNS from the online store for every current cluster of `user_ids` (0 / 0 where
    a cluster has no reward row); users without clusters contribute no rows."""
    clusters = online_feature_values(
        store, ["user_clusters:cluster_ids"], [{"user_id": int(u)} for u in user_ids]
    )
    pairs = [
        (int(user), int(cluster))
        for user, ids in zip(clusters["user_id"], clusters["cluster_ids"], strict=True)
        for cluster in ids or []
    ]
    if not pairs:
        return pd.DataFrame({name: pd.Series(dtype=np.int64) for name in COUNT_COLUMNS})
    rewards = online_feature_values(
        store,
        ["cluster_reward:reward_impressions", "cluster_reward:reward_engagements"],
        [{"cluster_id": cluster} for _, cluster in pairs],
    )
    return pd.DataFrame(
        {
            "user_id": np.array([user for user, _ in pairs], np.int64),
            "cluster_id": np.array([cluster for _, cluster in pairs], np.int64),
            "reward_impressions": [v or 0 for v in rewards["reward_impressions"]],
            "reward_engagements": [v or 0 for v in rewards["reward_engagements"]],
        }
    ).astype({"reward_impressions": np.int64, "reward_engagements": np.int64})


class RealtimeRewardWriter:
    """Applies feedback batches to the online cluster rewards of one Feast store.

    `ledger`: the credit ledger and lock shared by every writer of this store (the default,
    in memory, suits one process only). `counted_until`: the as_of of the offline rows in the
    online store; events before it are already counted there and are skipped.
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        counted_until: datetime,
        ledger: CreditLedger | None = None,
        config: FeatureConfig | None = None,
        window: timedelta = timedelta(days=1),
    ) -> None:
        if counted_until.tzinfo is None:
            raise ConfigError("counted_until: pass an aware UTC datetime")
        self.store = store
        self.ledger = ledger or MemoryCreditLedger()
        self.config = config or FeatureConfig()
        self.window = window
        self.counted_until = pd.Timestamp(counted_until).tz_convert("UTC")
        self._last_stamp = self.counted_until

    def ingest(self, served: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
        """Credit one feedback batch and push the touched users' rows; returns what was pushed
        (user_id, cluster_id, counts, reward, reward_has_data, event_timestamp)."""
        fresh = feedback[pd.to_datetime(feedback["event_ts"], utc=True) >= self.counted_until]
        keys = list(zip(fresh["request_id"], fresh["pin_id"], strict=True))
        with self.ledger.lock():
            credit = reward_increments(
                served, fresh, window=self.window, credited=self.ledger.credited(keys)
            )
            if credit.increments.empty:
                return credit.increments
            users = sorted(credit.increments["user_id"].unique().tolist())
            current = read_reward_counts(self.store, users)
            rows = apply_increments(
                current,
                credit.increments,
                self.config.reward_prior_weight,
                self.config.reward_fallback,
                self.config.hide_weight,
            )
            stamp = max(pd.Timestamp(datetime.now(UTC)), self._last_stamp + ONE_US)
            rows["event_timestamp"] = stamp
            push_cluster_rewards(self.store, rows)
            self.ledger.add(credit.credited)
            self._last_stamp = stamp
            return rows
