"""Interest clusters, stable cluster ids and cluster rewards: hand-computed values on tiny
event sets, and id stability across rebuilds."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from feature_repo.pipeline import FeatureConfig, build_features, compute_cluster_rewards
from feature_repo.pipeline.cluster_ids import _greedy_match, assign_cluster_ids, fresh_ids
from feature_repo.pipeline.clusters import (
    PinEmbeddings,
    _cut_forest,
    cluster_engaged,
    engaged_pins,
)
from feature_repo.tables import CLUSTER_MEMBERS, USER_CLUSTERS
from pinfeed.events import EventSet
from pinfeed.schema import CONVERSION_SCHEMA
from tests.support.events import DAY, START, hand_impressions, make_event_set, random_events

T = START + 10 * DAY
T_US = int(T.timestamp() * 1e6)


def topic_embeddings() -> np.ndarray:
    """Pins 0-4 around e1 (pin 0 at the centre), 5-9 around e2 (pin 5), 10-14 around e3."""
    offsets = np.array([[0, 0, 0], [0, 0.1, 0], [0, -0.1, 0], [0, 0, 0.1], [0, 0, -0.1]])
    blocks = []
    for axis in range(3):
        rolled = np.roll(offsets, axis, axis=1)
        rolled[:, axis] += 1.0
        blocks.append(rolled)
    return np.concatenate(blocks)


def clicks(user: int, pins: list[int], day: float) -> list[dict]:
    return [
        {
            "event_ts": START + day * DAY,
            "user_id": user,
            "pin_id": p,
            "click": True,
            "click_dwell_s": 9.0,
        }
        for p in pins
    ]


def cluster(rows: list[dict], config: FeatureConfig):
    embeddings = PinEmbeddings.from_pins(
        make_event_set(
            hand_impressions(rows[:1]), CONVERSION_SCHEMA.empty_table(), topic_embeddings(), T
        ).pins
    )
    return cluster_engaged(
        engaged_pins(hand_impressions(rows), T_US, config), embeddings, config, False
    )


def test_two_topics_make_two_clusters_with_centre_medoids_and_decayed_importance():
    rows = clicks(1, [0, 1, 2, 3, 4], day=9) + clicks(1, [5, 6, 7], day=3)
    rows += clicks(1, [10], day=-40)  # outside the 30-day window: ignored
    config = FeatureConfig(importance_half_life_days=7.0)
    result = cluster(rows, config)
    groups = result.members.groupby("cluster")["pin_id"].apply(sorted).tolist()
    assert sorted(groups) == [[0, 1, 2, 3, 4], [5, 6, 7]]
    clusters = result.clusters.set_index("medoid_pin_id")
    assert set(clusters.index) == {0, 5}
    assert clusters.loc[0, "importance"] == pytest.approx(5 * 0.5 ** (1 / 7))
    assert clusters.loc[5, "importance"] == pytest.approx(3 * 0.5 ** (7 / 7))
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, rtol=1e-6)


def test_max_count_and_max_pins_caps():
    rows = clicks(1, [0, 1], day=9) + clicks(1, [5, 6], day=8) + clicks(1, [10, 11], day=7)
    capped = cluster(rows, FeatureConfig(cluster_max_count=2))
    assert len(capped.clusters) == 2
    recent = cluster(rows, FeatureConfig(cluster_max_pins=3))
    assert set(recent.members["pin_id"]) <= {0, 1, 5, 6} and len(recent.members) == 3


def test_fresh_ids_are_deterministic_positive_unique_and_avoid_taken():
    users, medoids = np.array([1, 1, 2, 3]), np.array([7, 8, 7, 7])
    ids = fresh_ids(users, medoids, 20_000, np.zeros(0, np.int64))
    assert (ids > 0).all() and len(set(ids)) == 4
    np.testing.assert_array_equal(ids, fresh_ids(users, medoids, 20_000, np.zeros(0, np.int64)))
    assert not set(fresh_ids(users, medoids, 20_000, ids)) & set(ids)
    assert not set(fresh_ids(users, medoids, 20_001, np.zeros(0, np.int64))) & set(ids)


def test_greedy_match_is_one_to_one_best_first():
    pairs = pd.DataFrame(
        {
            "cluster": [0, 0, 1],
            "cluster_id": [100, 200, 100],
            "jaccard": [0.8, 0.6, 0.7],
            "cosine": [0.9, 0.9, 0.9],
        }
    )
    matched = _greedy_match(pairs).set_index("cluster")["cluster_id"].to_dict()
    assert matched == {0: 100}


def test_a_split_cluster_keeps_its_id_on_the_larger_part():
    config = FeatureConfig()
    new = cluster(clicks(1, [0, 1, 2, 3], day=9) + clicks(1, [5, 6], day=9), config)
    previous = pd.DataFrame(
        {"user_id": [1] * 6, "cluster_id": [77] * 6, "pin_id": [0, 1, 2, 3, 5, 6]}
    )
    embeddings = PinEmbeddings.from_pins(
        make_event_set(
            hand_impressions(clicks(1, [0], 1)),
            CONVERSION_SCHEMA.empty_table(),
            topic_embeddings(),
            T,
        ).pins
    )
    ids = assign_cluster_ids(new, previous, embeddings, 1, config.match_jaccard, 0.999)
    by_medoid = dict(zip(new.clusters["medoid_pin_id"], ids, strict=True))
    larger = new.clusters.sort_values("size").iloc[-1]["medoid_pin_id"]
    assert by_medoid[larger] == 77
    assert len(set(ids)) == 2


def rebuilt_ids(out: Path) -> dict[tuple[int, frozenset], int]:
    """(user, member pins) -> cluster id of a features folder."""
    members = pq.read_table(out / "cluster_members.parquet").to_pandas()
    grouped = members.groupby(["user_id", "cluster_id"])["pin_id"].apply(frozenset)
    return {(user, pins): cid for (user, cid), pins in grouped.items()}


def cut(events: EventSet, end) -> EventSet:
    keep = pc.less(events.impressions["event_ts"], end)
    keep_conv = pc.less(events.conversions["event_ts"], end)
    meta = events.meta.model_copy(update={"end": end})
    return EventSet(
        events.impressions.filter(keep),
        events.conversions.filter(keep_conv),
        events.users,
        events.pins,
        meta,
    )


def test_ids_are_stable_across_reruns_and_an_added_day(tmp_path):
    full = random_events(days=31, n_imp=4000, seed=1)
    base = cut(full, START + 30 * DAY)
    build_features(base, tmp_path / "a", progress=False)
    build_features(base, tmp_path / "b", progress=False)
    first = rebuilt_ids(tmp_path / "a")
    assert first == rebuilt_ids(tmp_path / "b")
    build_features(base, tmp_path / "a", progress=False)  # previous defaults to the folder itself
    assert first == rebuilt_ids(tmp_path / "a")

    build_features(full, tmp_path / "c", previous=tmp_path / "a", progress=False)
    later = rebuilt_ids(tmp_path / "c")
    old_by_user = {}
    for (user, pins), cid in first.items():
        old_by_user.setdefault(user, []).append((pins, cid))
    kept = 0
    for (user, pins), cid in later.items():
        overlaps = [
            (len(pins & old) / len(pins | old), old_id) for old, old_id in old_by_user.get(user, [])
        ]
        best, best_id = max(overlaps, default=(0.0, None))
        if best >= 0.8:
            assert cid == best_id
            kept += 1
    assert kept >= 0.5 * len(later)


def test_build_tables_agree_with_each_other(tmp_path):
    events = random_events(days=30, n_imp=3000, seed=2)
    build_features(events, tmp_path, config=FeatureConfig(cluster_cadence_days=7), progress=False)
    clusters = pq.read_table(tmp_path / "user_clusters.parquet")
    members = pq.read_table(tmp_path / "cluster_members.parquet").to_pandas()
    rewards = pq.read_table(tmp_path / "cluster_reward.parquet").to_pandas()
    stamps = sorted(set(clusters["event_timestamp"].to_pylist()))
    assert len(stamps) == 5 and stamps[-1] == START + 30 * DAY
    last = clusters.filter(pc.equal(clusters["event_timestamp"], stamps[-1]))
    last_ids = set(pc.list_flatten(last["cluster_ids"]).to_pylist())
    assert set(members["cluster_id"]) == last_ids
    assert set(rewards.loc[rewards["event_timestamp"] == stamps[-1], "cluster_id"]) == last_ids
    for row in last.to_pylist():
        assert row["cluster_importance"] == sorted(row["cluster_importance"], reverse=True)
        for cid, medoid in zip(row["cluster_ids"], row["medoid_pin_ids"], strict=True):
            assert medoid in set(members.loc[members["cluster_id"] == cid, "pin_id"])
    first_ids = set(
        pc.list_flatten(
            clusters.filter(pc.equal(clusters["event_timestamp"], stamps[-2]))["cluster_ids"]
        ).to_pylist()
    )
    assert len(first_ids & last_ids) >= 0.3 * len(last_ids)
    assert rewards["reward"].between(0, 1).all()


def reward_inputs() -> tuple[pa.Table, pa.Table, pa.Table]:
    """User 1 owns clusters 10 (pins 0, 1; medoid 0) and 20 (5, 6; medoid 5); user 2 owns 30."""
    members = pa.Table.from_pylist(
        [
            {"user_id": 1, "cluster_id": 10, "pin_id": 0},
            {"user_id": 1, "cluster_id": 10, "pin_id": 1},
            {"user_id": 1, "cluster_id": 20, "pin_id": 5},
            {"user_id": 1, "cluster_id": 20, "pin_id": 6},
            {"user_id": 2, "cluster_id": 30, "pin_id": 10},
        ],
        schema=CLUSTER_MEMBERS,
    )
    clusters = pa.Table.from_pylist(
        [
            {
                "user_id": 1,
                "event_timestamp": T,
                "cluster_ids": [10, 20],
                "medoid_pin_ids": [0, 5],
                "cluster_importance": [2.0, 1.0],
            },
            {
                "user_id": 2,
                "event_timestamp": T,
                "cluster_ids": [30],
                "medoid_pin_ids": [10],
                "cluster_importance": [1.0],
            },
        ],
        schema=USER_CLUSTERS,
    )
    at = START + 5 * DAY
    rows = [
        {"event_ts": at, "user_id": 1, "pin_id": 3, "cluster_id": 10, "save": True},
        {"event_ts": at, "user_id": 1, "pin_id": 3, "cluster_id": 10},
        *[{"event_ts": at, "user_id": 1, "pin_id": 8, "query_pin_id": 6}] * 3,
        {"event_ts": at, "user_id": 1, "pin_id": 1, "closeup": True},  # nearest medoid: pin 0
        {"event_ts": at, "user_id": 1, "pin_id": 9, "cluster_id": 30, "query_pin_id": 5},
        {"event_ts": START - DAY, "user_id": 1, "pin_id": 3, "cluster_id": 20},
        {"event_ts": T + timedelta(seconds=1), "user_id": 1, "pin_id": 3, "cluster_id": 20},
    ]
    return hand_impressions(rows), members, clusters


def test_rewards_by_hand_with_all_three_attribution_rules():
    impressions, members, clusters = reward_inputs()
    pins = make_event_set(impressions, CONVERSION_SCHEMA.empty_table(), topic_embeddings(), T).pins
    config = FeatureConfig(reward_prior_weight=2.0)
    table = compute_cluster_rewards(
        impressions, members, clusters, since=START, config=config, pins=pins
    )
    got = table.to_pandas().set_index("cluster_id")
    assert (got["event_timestamp"] == T).all()
    assert got.loc[10, ["reward_impressions", "reward_engagements"]].tolist() == [3, 2]
    assert got.loc[20, ["reward_impressions", "reward_engagements"]].tolist() == [4, 0]
    r0 = 2 / 7
    assert got.loc[10, "reward"] == pytest.approx((2 + r0 * 2) / 5, rel=1e-6)
    assert got.loc[20, "reward"] == pytest.approx(r0 * 2 / 6, rel=1e-6)
    # User 2 has no data: the global average (the same 2/7 here).
    assert got.loc[30, "reward"] == pytest.approx(r0, rel=1e-6)
    assert got["reward_has_data"].to_dict() == {10: True, 20: True, 30: False}


def test_rewards_without_embeddings_drop_what_the_ids_cannot_place():
    impressions, members, clusters = reward_inputs()
    table = compute_cluster_rewards(
        impressions, members, clusters, config=FeatureConfig(reward_prior_weight=0.0)
    )
    got = table.to_pandas().set_index("cluster_id")
    # The impression before START counts now (no since): cluster 20 gets 5 impressions.
    assert got.loc[10, ["reward_impressions", "reward_engagements"]].tolist() == [2, 1]
    assert got.loc[20, ["reward_impressions", "reward_engagements"]].tolist() == [5, 0]
    assert got.loc[10, "reward"] == pytest.approx(0.5)
    assert got.loc[30, "reward"] == pytest.approx(1 / 7)


def test_vectorised_cut_matches_scipy_fcluster():
    rng = np.random.default_rng(5)
    sizes = np.array([1, 2, 5, 40, 100, 3])
    vectors = rng.normal(size=(sizes.sum(), 4))
    config = FeatureConfig(cluster_distance_threshold=2.0, cluster_max_count=6)
    bounds = np.r_[0, np.cumsum(sizes)]
    trees = [linkage(vectors[a:b], method="ward") for a, b in pairwise(bounds) if b - a > 1]
    ours = _cut_forest(trees, sizes, config)
    for a, b in pairwise(bounds):
        if b - a == 1:
            continue
        tree = linkage(vectors[a:b], method="ward")
        expected = fcluster(tree, config.cluster_distance_threshold, criterion="distance")
        if expected.max() > config.cluster_max_count:
            expected = fcluster(tree, config.cluster_max_count, criterion="maxclust")
        mine = ours[a:b]
        assert len(set(zip(mine, expected, strict=True))) == len(set(mine)) == len(set(expected))
    assert len(set(ours[:1]) & set(ours[1:])) == 0
