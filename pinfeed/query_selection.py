"""Query selection: which of a user's interest clusters feed retrieval on this request
(design §4, seeds/query_reward.txt). The one implementation used by serving and by the
closed-loop simulator, so what the simulator measures is what production runs.

Each request draws `n_queries` clusters, with replacement, from a categorical distribution
over the user's clusters and returns their medoid (query) pins:

- `count` (the baseline): weights are the clusters' importance (time-decayed action counts).
- `reward`: weights are the clusters' rewards (smoothed engagement rates). A cluster without
  reward data gets the user's average reward over the clusters that have data, or
  `global_reward` for a user with none (the seed's "average weight" for unexposed clusters).

Then a floor mixes in the uniform distribution, `p = (1 - K * floor) * w / sum(w) + floor`,
so every one of the K clusters keeps at least probability `floor` per draw (floor is capped
at 1 / K, which is uniform). Draws are with replacement so the probabilities are exactly the
policy's; a cluster drawn twice feeds twice as many candidates.

Randomness is counter-based: draw j of a request uses splitmix64(hash(request_id) ^ seed, j),
so the same request id always gets the same queries, a batch gives exactly the per-request
results, and no RNG object is shared between requests. numpy only (serving imports it).

Notation: B requests, K clusters (padded; `mask` marks the real ones), n queries per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pinfeed.errors import ConfigError, SchemaError

Policy = Literal["count", "reward"]
_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)
_TO_UNIT = 1.0 / float(1 << 53)


class SelectionConfig(BaseModel):
    """How queries are drawn; loaded once at the edge (Serve config, simulator config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Policy = Field("reward", description="count: by importance; reward: by reward")
    n_queries: int = Field(3, ge=1, le=64, description="query pins drawn per request")
    floor: float = Field(
        0.05, ge=0, le=1, description="minimum probability of each cluster per draw (<= 1/K)"
    )
    seed: int = Field(0, ge=0, description="salt mixed into every request's hash")


@dataclass(frozen=True)
class UserClusters:
    """One user's clusters, aligned arrays [K]: ids, medoid query pins, importance."""

    cluster_ids: np.ndarray
    medoid_pin_ids: np.ndarray
    importance: np.ndarray


@dataclass(frozen=True)
class QuerySelection:
    """The drawn queries: `cluster_ids`, `query_pin_ids` [B, n] (or [n] for one request) and
    the distribution they came from, `probabilities` [B, K] (or [K]); 0 on padding."""

    cluster_ids: np.ndarray
    query_pin_ids: np.ndarray
    probabilities: np.ndarray


def request_hashes(request_ids: Sequence[int | str] | np.ndarray, seed: int = 0) -> np.ndarray:
    """uint64 [B]: integer ids as themselves, string ids through BLAKE2b (so an int and a
    string id never depend on what else is in the batch); then salted by `seed` and mixed."""
    values = request_ids if isinstance(request_ids, np.ndarray) else np.asarray(request_ids, object)
    if values.dtype.kind in "iu":
        base = values.astype(np.uint64)
    else:
        base = np.array([_id_bits(r) for r in values.ravel()], dtype=np.uint64)
    return _splitmix64(base ^ _splitmix64(np.full(base.shape, seed, np.uint64)))


def _id_bits(request_id: object) -> int:
    if isinstance(request_id, int | np.integer):
        return int(request_id) & 0xFFFF_FFFF_FFFF_FFFF
    digest = hashlib.blake2b(str(request_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58_476D_1CE4_E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D0_49BB_1331_11EB)
        return x ^ (x >> np.uint64(31))


def request_uniforms(hashes: np.ndarray, n: int) -> np.ndarray:
    """Uniforms in [0, 1) [B, n]: draw j of request b depends only on (hashes[b], j)."""
    counters = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    with np.errstate(over="ignore"):
        bits = _splitmix64(hashes[:, None] ^ counters)
    return (bits >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def fill_rewards(rewards: np.ndarray, mask: np.ndarray, global_reward: float) -> np.ndarray:
    """Rewards [B, K] with NaN (no data) replaced by the row's mean over clusters with data, or
    `global_reward` for a row with none; padding (mask False) becomes 0."""
    known = mask & ~np.isnan(rewards)
    count = known.sum(axis=1)
    total = np.where(known, rewards, 0.0).sum(axis=1)
    user_mean = np.where(count > 0, total / np.maximum(count, 1), global_reward)
    filled = np.where(known, rewards, user_mean[:, None])
    return np.where(mask, filled, 0.0)


def cluster_probabilities(weights: np.ndarray, mask: np.ndarray, floor: float) -> np.ndarray:
    """Per-draw probabilities [B, K] from non-negative weights [B, K]: normalised, then mixed
    with uniform so each real cluster has at least min(floor, 1/K); rows of zero weight are
    uniform; padding gets 0."""
    if np.any(weights[mask] < 0) or np.any(~np.isfinite(weights[mask])):
        raise SchemaError("weights: importance and rewards must be finite and >= 0")
    k = mask.sum(axis=1, keepdims=True).astype(np.float64)
    weights = np.where(mask, weights, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    uniform = np.where(mask, 1.0 / np.maximum(k, 1), 0.0)
    base = np.where(total > 0, weights / np.where(total > 0, total, 1.0), uniform)
    low = np.minimum(floor, 1.0 / np.maximum(k, 1))
    return np.where(mask, (1.0 - k * low) * base + low, 0.0)


def select_queries_batch(
    request_ids: Sequence[int | str] | np.ndarray,
    cluster_ids: np.ndarray,
    medoid_pin_ids: np.ndarray,
    importance: np.ndarray,
    rewards: np.ndarray | None,
    mask: np.ndarray,
    config: SelectionConfig,
    global_reward: float = 0.0,
) -> QuerySelection:
    """Draw `config.n_queries` clusters for each of B requests at once.

    Args:
        request_ids: [B] ints or strings; each request's randomness derives from its id.
        cluster_ids, medoid_pin_ids: [B, K] int64 (any value on padding).
        importance: [B, K] action counts (the `count` policy's weights).
        rewards: [B, K] rewards, NaN where a cluster has no data; required by `reward`.
        mask: [B, K] bool, True for real clusters; every row needs at least one.
        global_reward: what a user with no reward data at all gets for every cluster.

    Returns:
        QuerySelection with [B, n] cluster and query pin ids and [B, K] probabilities.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or not mask.any(axis=1).all():
        raise SchemaError("mask: shape [B, K] with at least one cluster per request expected")
    if config.policy == "reward":
        if rewards is None:
            raise ConfigError("rewards: the reward policy needs rewards (NaN where no data)")
        weights = fill_rewards(np.asarray(rewards, np.float64), mask, global_reward)
    else:
        weights = np.asarray(importance, np.float64)
    probabilities = cluster_probabilities(weights, mask, config.floor)
    cdf = np.cumsum(probabilities, axis=1)
    cdf /= cdf[:, -1:]
    hashes = request_hashes(request_ids, config.seed)
    if len(hashes) != len(mask):
        raise SchemaError(f"request_ids: {len(hashes)} ids for {len(mask)} rows of clusters")
    draws = request_uniforms(hashes, config.n_queries)
    chosen = (draws[:, :, None] >= cdf[:, None, :]).sum(axis=2)
    last_real = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    chosen = np.minimum(chosen, last_real[:, None])
    rows = np.arange(len(mask))[:, None]
    return QuerySelection(
        cluster_ids=np.asarray(cluster_ids)[rows, chosen],
        query_pin_ids=np.asarray(medoid_pin_ids)[rows, chosen],
        probabilities=probabilities,
    )


def pad_clusters(
    users: Sequence[UserClusters], rewards: Sequence[np.ndarray | None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack users' clusters into padded arrays: (cluster_ids, medoid_pin_ids, importance,
    rewards (NaN where none), mask), each [B, max K]."""
    width = max((len(u.cluster_ids) for u in users), default=0)
    if width == 0:
        raise SchemaError("clusters: every user needs at least one cluster to select from")
    shape = (len(users), width)
    ids, medoids = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    importance, reward = np.zeros(shape), np.full(shape, np.nan)
    mask = np.zeros(shape, bool)
    for b, user in enumerate(users):
        k = len(user.cluster_ids)
        ids[b, :k], medoids[b, :k] = user.cluster_ids, user.medoid_pin_ids
        importance[b, :k], mask[b, :k] = user.importance, True
        if rewards is not None and rewards[b] is not None:
            reward[b, :k] = rewards[b]
    return ids, medoids, importance, reward, mask


def select_queries(
    request_id: int | str,
    clusters: UserClusters,
    rewards: np.ndarray | None,
    config: SelectionConfig,
    global_reward: float = 0.0,
) -> QuerySelection:
    """One request: `rewards` [K] aligned with `clusters` (NaN: no data). Returns [n] ids and
    [K] probabilities; identical to the same request inside `select_queries_batch`."""
    ids, medoids, importance, reward, mask = pad_clusters(
        [clusters], None if rewards is None else [np.asarray(rewards, np.float64)]
    )
    batch = select_queries_batch(
        [request_id],
        ids,
        medoids,
        importance,
        None if rewards is None else reward,
        mask,
        config,
        global_reward,
    )
    return QuerySelection(
        cluster_ids=batch.cluster_ids[0],
        query_pin_ids=batch.query_pin_ids[0],
        probabilities=batch.probabilities[0],
    )
