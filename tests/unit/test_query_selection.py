"""pinfeed.query_selection: determinism per request id, floor, reward fill, batch = per-request."""

from __future__ import annotations

import numpy as np
import pytest

from pinfeed.errors import ConfigError
from pinfeed.query_selection import (
    SelectionConfig,
    UserClusters,
    cluster_probabilities,
    fill_rewards,
    pad_clusters,
    select_queries,
    select_queries_batch,
)

CLUSTERS = UserClusters(
    cluster_ids=np.array([10, 11, 12]),
    medoid_pin_ids=np.array([100, 101, 102]),
    importance=np.array([6.0, 3.0, 1.0]),
)


def test_same_request_id_gives_the_same_queries() -> None:
    config = SelectionConfig(policy="count", n_queries=8)
    first = select_queries("req-42", CLUSTERS, None, config)
    again = select_queries("req-42", CLUSTERS, None, config)
    np.testing.assert_array_equal(first.cluster_ids, again.cluster_ids)
    draws = {tuple(select_queries(r, CLUSTERS, None, config).cluster_ids) for r in range(50)}
    assert len(draws) > 10


def test_query_pins_are_the_chosen_clusters_medoids() -> None:
    chosen = select_queries(7, CLUSTERS, None, SelectionConfig(policy="count", n_queries=16))
    np.testing.assert_array_equal(chosen.query_pin_ids, chosen.cluster_ids + 90)


def test_count_policy_is_proportional_to_importance() -> None:
    chosen = select_queries(1, CLUSTERS, None, SelectionConfig(policy="count", floor=0.0))
    np.testing.assert_allclose(chosen.probabilities, [0.6, 0.3, 0.1])


def test_draw_frequencies_follow_the_probabilities() -> None:
    config = SelectionConfig(policy="count", floor=0.0, n_queries=1)
    n = 20_000
    ids, medoids, importance, rewards, mask = pad_clusters([CLUSTERS] * n)
    chosen = select_queries_batch(np.arange(n), ids, medoids, importance, rewards, mask, config)
    share = np.bincount(chosen.cluster_ids.ravel() - 10, minlength=3) / n
    np.testing.assert_allclose(share, [0.6, 0.3, 0.1], atol=0.015)


def test_floor_keeps_every_cluster_reachable() -> None:
    weights = np.array([[1.0, 0.0, 0.0, 0.0]])
    mask = np.ones((1, 4), bool)
    p = cluster_probabilities(weights, mask, floor=0.05)
    np.testing.assert_allclose(p, [[0.8 + 0.05, 0.05, 0.05, 0.05]])
    np.testing.assert_allclose(cluster_probabilities(weights, mask, floor=0.5), [[0.25] * 4])


def test_missing_rewards_get_the_user_average_then_the_global_one() -> None:
    rewards = np.array([[0.2, np.nan, 0.4], [np.nan, np.nan, 0.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    filled = fill_rewards(rewards, mask, global_reward=0.07)
    np.testing.assert_allclose(filled, [[0.2, 0.3, 0.4], [0.07, 0.07, 0.0]])


def test_reward_policy_uses_filled_rewards() -> None:
    chosen = select_queries(
        3, CLUSTERS, np.array([0.1, np.nan, 0.3]), SelectionConfig(policy="reward", floor=0.0)
    )
    np.testing.assert_allclose(chosen.probabilities, [1 / 6, 2 / 6, 3 / 6])


def test_batch_equals_each_request_alone() -> None:
    rng = np.random.default_rng(0)
    users, rewards = [], []
    for b in range(40):
        k = int(rng.integers(1, 21))
        users.append(
            UserClusters(
                cluster_ids=np.arange(k) + 100 * b,
                medoid_pin_ids=rng.integers(0, 10_000, k),
                importance=rng.uniform(0, 10, k),
            )
        )
        reward = rng.uniform(0, 0.5, k)
        reward[rng.random(k) < 0.3] = np.nan
        rewards.append(reward)
    config = SelectionConfig(policy="reward", n_queries=5, floor=0.02, seed=9)
    request_ids = [f"r{b}" for b in range(40)]
    ids, medoids, importance, padded, mask = pad_clusters(users, rewards)
    batch = select_queries_batch(request_ids, ids, medoids, importance, padded, mask, config, 0.11)
    for b, (user, reward) in enumerate(zip(users, rewards, strict=True)):
        alone = select_queries(request_ids[b], user, reward, config, 0.11)
        np.testing.assert_array_equal(batch.cluster_ids[b], alone.cluster_ids)
        np.testing.assert_array_equal(batch.query_pin_ids[b], alone.query_pin_ids)
        np.testing.assert_allclose(batch.probabilities[b, : len(reward)], alone.probabilities)


def test_reward_policy_without_rewards_is_refused() -> None:
    with pytest.raises(ConfigError, match="rewards"):
        select_queries(1, CLUSTERS, None, SelectionConfig(policy="reward"))
