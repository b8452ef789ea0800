"""Query reward end to end on real Feast (SQLite and a real Redis): the write-up's scenario, the
offline workflow writing and materialising, realtime pushes visible in the next online read, and
realtime + offline agreeing on the same events.

Scenario (seeds/query_reward.txt): user 1 has a big "recipes" cluster 100 (importance 20) that
gets many impressions and no engagement, and a small "furniture" cluster 101 (importance 2)
whose few impressions are engaged. User 2 has one cluster 200 with a little engagement.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from feature_repo import store as feature_store
from feature_repo.pipeline.rewards import compute_cluster_rewards
from feature_repo.realtime_rewards import RealtimeRewardWriter, read_reward_counts
from feature_repo.rewards_job import run_rewards_job
from feature_repo.tables import TABLES
from pinfeed.events import EventSet, EventSetMeta, conform, write_event_set
from pinfeed.home import ProjectHome
from pinfeed.query_selection import (
    SelectionConfig,
    UserClusters,
    pad_clusters,
    select_queries_batch,
)
from pinfeed.schema import SCHEMAS
from tests.support.homes import make_home
from tests.support.redis import RedisEndpoint
from tests.support.tables import write_tables

T_CLUSTERS = datetime(2030, 1, 1, tzinfo=UTC)
T1 = T_CLUSTERS + timedelta(days=1)
T2 = T1 + timedelta(days=1)
SINCE = T_CLUSTERS
MEDOID = {100: 10, 101: 20, 200: 30}
OWNER = {100: 1, 101: 1, 200: 2}
# (cluster, impressions, engaged) before T1 and in [T1, T2)
BEFORE = [(100, 40, 0), (101, 4, 3), (200, 10, 2)]
AFTER = [(100, 10, 0), (101, 5, 4), (200, 5, 0)]


def impressions(batches: list[tuple[int, int, int]], start: datetime, first_request: int) -> list:
    rows, request = [], first_request
    for cluster, count, engaged in batches:
        for i in range(count):
            rows.append({"event_ts": start + timedelta(minutes=i + 1), "request_id": request,
                         "user_id": OWNER[cluster], "pin_id": MEDOID[cluster] + 1 + i % 5,
                         "surface": "homefeed", "query_pin_id": MEDOID[cluster],
                         "cluster_id": cluster, "position": 0, "closeup": i < engaged,
                         "save": False, "click": False, "long_click": False,
                         "click_dwell_s": None})  # fmt: skip
            request += 1
    return rows


def event_set() -> EventSet:
    pins = sorted({p for m in MEDOID.values() for p in range(m, m + 6)})
    table = pa.Table.from_pylist(
        impressions(BEFORE, T_CLUSTERS, 0) + impressions(AFTER, T1, 10_000)
    )
    return EventSet(
        impressions=conform(table, "impressions"),
        conversions=SCHEMAS["conversions"].empty_table(),
        users=conform(pa.Table.from_pylist(
            [{"user_id": u, "created_ts": T_CLUSTERS - timedelta(days=9), "country": "de",
              "age_bucket": "25-34"} for u in (1, 2)]), "users"),
        pins=conform(pa.Table.from_pylist(
            [{"pin_id": p, "created_ts": T_CLUSTERS - timedelta(days=9), "topic": p // 10,
              "shoppable": False, "content_embedding": [float(p // 10), 1.0]} for p in pins]),
            "pins"),
        meta=EventSetMeta(source="synthetic", start=T_CLUSTERS, end=T2,
                          long_click_threshold_s=30.0, embedding_dim=2),
    )  # fmt: skip


def cluster_tables() -> tuple[pa.Table, pa.Table]:
    clusters = pa.Table.from_pylist([
        {"user_id": 1, "event_timestamp": T_CLUSTERS, "cluster_ids": [100, 101],
         "medoid_pin_ids": [10, 20], "cluster_importance": [20.0, 2.0]},
        {"user_id": 2, "event_timestamp": T_CLUSTERS, "cluster_ids": [200],
         "medoid_pin_ids": [30], "cluster_importance": [5.0]},
    ], schema=TABLES["user_clusters"])  # fmt: skip
    members = pa.Table.from_pylist(
        [{"user_id": OWNER[c], "cluster_id": c, "pin_id": m} for c, m in MEDOID.items()],
        schema=TABLES["cluster_members"],
    )
    return clusters, members


def selection_share(rewards: pa.Table, policy: str, cluster: int) -> float:
    """Share of user 1's draws that pick `cluster`, over 4000 requests."""
    rows = rewards.to_pandas().set_index("cluster_id")
    user = UserClusters(np.array([100, 101]), np.array([10, 20]), np.array([20.0, 2.0]))
    reward = np.where(
        rows.loc[[100, 101], "reward_has_data"], rows.loc[[100, 101], "reward"], np.nan
    )
    ids, medoids, importance, padded, mask = pad_clusters([user] * 4000, [reward] * 4000)
    config = SelectionConfig(policy=policy, n_queries=3)  # type: ignore[arg-type]
    chosen = select_queries_batch(np.arange(4000), ids, medoids, importance, padded, mask, config)
    return float((chosen.cluster_ids == cluster).mean())


def test_reward_moves_selection_to_the_small_engaged_cluster() -> None:
    events = event_set()
    clusters, members = cluster_tables()
    rewards = compute_cluster_rewards(events.impressions, members, clusters, SINCE, as_of=T2)
    by_cluster = rewards.to_pandas().set_index("cluster_id")
    assert by_cluster.loc[100, "reward_impressions"] == 50
    assert by_cluster.loc[101, "reward_engagements"] == 7
    assert by_cluster.loc[101, "reward"] > 3 * by_cluster.loc[100, "reward"]
    count_share = selection_share(rewards, "count", 101)
    reward_share = selection_share(rewards, "reward", 101)
    assert count_share < 0.15
    assert reward_share > 0.6


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def home_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ProjectHome, FeatureStore]]:
    """A project home holding the scenario's events and clusters, applied, with user_clusters
    materialised, on SQLite or on the session's real Redis."""
    home = make_home(tmp_path)
    write_tables(home, T_CLUSTERS)
    write_event_set(event_set(), home.events)
    clusters, members = cluster_tables()
    pq.write_table(clusters, home.features / "user_clusters.parquet")
    pq.write_table(members, home.features / "cluster_members.parquet")
    (home.features / "cluster_reward.parquet").unlink()
    redis_url = None
    if request.param == "redis":
        endpoint: RedisEndpoint = request.getfixturevalue("redis_endpoint")
        redis_url = endpoint.url
    store = feature_store.open_store(home, redis_url=redis_url)
    feature_store.apply_definitions(store)
    store.materialize(T_CLUSTERS, T_CLUSTERS + timedelta(seconds=1), ["user_clusters"])
    yield home, store
    store.teardown()


def online_rewards(store: FeatureStore) -> pd.DataFrame:
    counts = read_reward_counts(store, [1, 2]).set_index("cluster_id")
    reward = store.get_online_features(
        features=["cluster_reward:reward"], entity_rows=[{"cluster_id": c} for c in counts.index]
    ).to_dict()["reward"]
    return counts.assign(reward=reward)


def offline_rewards(home: ProjectHome, as_of: datetime) -> pd.DataFrame:
    rows = pq.read_table(home.features / "cluster_reward.parquet").to_pandas()
    return rows[rows["event_timestamp"] == pd.Timestamp(as_of)].set_index("cluster_id")


def round_trip_feedback() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The [T1, T2) impressions as serving logs them: served items and feedback events."""
    rows = pd.DataFrame(impressions(AFTER, T1, 10_000))
    served = rows.rename(columns={"event_ts": "served_ts"})[
        ["request_id", "pin_id", "user_id", "cluster_id", "query_pin_id", "served_ts"]
    ]
    shown = rows[["request_id", "pin_id", "event_ts"]].assign(kind="impression")
    closeups = rows.loc[rows["closeup"], ["request_id", "pin_id", "event_ts"]].assign(
        kind="closeup", event_ts=lambda f: f["event_ts"] + timedelta(seconds=5)
    )
    return served, pd.concat([shown, closeups, closeups], ignore_index=True)


def test_offline_job_then_realtime_then_offline_agree(
    home_store: tuple[ProjectHome, FeatureStore],
) -> None:
    home, store = home_store
    first = run_rewards_job(home, since=SINCE, as_of=T1, store=store)
    assert first.clusters == 3 and first.materialised
    at_t1 = offline_rewards(home, T1)
    online = online_rewards(store)
    assert online.loc[100, "reward_impressions"] == 40
    np.testing.assert_allclose(online["reward"], at_t1.loc[online.index, "reward"], rtol=1e-6)

    writer = RealtimeRewardWriter(store, counted_until=T1)
    served, feedback = round_trip_feedback()
    pushed = writer.ingest(served, feedback)
    assert set(pushed["cluster_id"]) == {100, 101, 200}
    after_push = online_rewards(store)
    assert after_push.loc[101, "reward_engagements"] == 3 + 4
    assert after_push.loc[100, "reward_impressions"] == 40 + 10

    run_rewards_job(home, since=SINCE, as_of=T2, store=store)
    truth = offline_rewards(home, T2)
    for column in ("reward_impressions", "reward_engagements"):
        assert after_push[column].tolist() == truth.loc[after_push.index, column].tolist()
    np.testing.assert_allclose(
        after_push["reward"], truth.loc[after_push.index, "reward"], rtol=1e-6
    )
    overwritten = online_rewards(store)
    np.testing.assert_allclose(overwritten["reward"], after_push["reward"], rtol=1e-6)
    assert len(pq.read_table(home.features / "cluster_reward.parquet")) == 6


def test_replayed_feedback_does_not_move_the_reward(
    home_store: tuple[ProjectHome, FeatureStore],
) -> None:
    home, store = home_store
    run_rewards_job(home, since=SINCE, as_of=T1, store=store)
    writer = RealtimeRewardWriter(store, counted_until=T1)
    served, feedback = round_trip_feedback()
    writer.ingest(served, feedback)
    once = online_rewards(store)
    assert writer.ingest(served, feedback).empty
    pd.testing.assert_frame_equal(online_rewards(store), once)


def test_pushes_are_stamped_strictly_after_what_the_store_holds(
    home_store: tuple[ProjectHome, FeatureStore],
) -> None:
    """Each push is stamped by the writer, never by the events: strictly after the offline
    rows it builds on (here stamped in the future, T1) and after its own previous push, so
    Redis, which keeps a row only when its stamp is newer, takes both batches."""
    home, store = home_store
    run_rewards_job(home, since=SINCE, as_of=T1, store=store)
    writer = RealtimeRewardWriter(store, counted_until=T1)
    served, feedback = round_trip_feedback()
    requests = sorted(feedback["request_id"].unique())
    first_half = feedback["request_id"].isin(requests[: len(requests) // 2])
    first = writer.ingest(served, feedback[first_half])
    second = writer.ingest(served, feedback[~first_half])
    stamps = [push["event_timestamp"].unique() for push in (first, second)]
    assert [len(s) for s in stamps] == [1, 1], stamps  # one stamp per push
    assert pd.Timestamp(T1) < stamps[0][0] < stamps[1][0], stamps
    assert not {stamps[0][0], stamps[1][0]} & set(feedback["event_ts"])  # not the clients'
    online = online_rewards(store)
    assert online.loc[100, "reward_impressions"] == 40 + 10  # both pushes landed
    assert online.loc[101, "reward_engagements"] == 3 + 4
