"""The simulated users of the closed-loop query-reward simulator and how they engage.

Pins come from the synthetic generator's world for the data seed (same topics, content
embeddings and qualities as the data the retrieval model was trained on). Each simulated user
has K interest clusters, one per topic, with a medoid query pin (a popular pin of the topic),
an importance (action count, what the `count` policy samples by) and a latent interest
strength before and after the shift round:

- role FADING (slot 0): the big historical cluster, importance 25-40, strength 0.9 -> 0.05;
- role GROWING (slot K-1): a small new interest, importance 1-3, strength 0.1 -> 0.9;
- role STABLE (the rest): importance 4-15, strength 0.3-0.7 throughout.

The user's world interest topics fill the first slots (so the trained model's user embedding
agrees with them), random distinct topics the rest. An impressed pin is engaged with
probability `base_rate + gain * quality * strength(topic)`, strength `off_interest` for a
topic outside the user's clusters.

Notation: U users, K clusters per user, m pins per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinfeed.synthetic.world import World, sample_from_topics

FADING, STABLE, GROWING = 0, 1, 2
ROLE_NAMES = ("fading", "stable", "growing")


@dataclass(frozen=True)
class SimUsers:
    """Aligned [U] / [U, K] arrays describing the simulated users' clusters and interests."""

    user_ids: np.ndarray  # [U] int64, ids of the world (and of the training data)
    topics: np.ndarray  # [U, K] int32
    cluster_ids: np.ndarray  # [U, K] int64, globally unique
    medoids: np.ndarray  # [U, K] int64 query pins
    importance: np.ndarray  # [U, K] float64 initial action counts
    strength_before: np.ndarray  # [U, K] float64
    strength_after: np.ndarray  # [U, K] float64
    role: np.ndarray  # [K] int8

    def strength(self, shifted: bool) -> np.ndarray:
        return self.strength_after if shifted else self.strength_before


def _user_topics(world: World, user: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """K distinct topics: the user's world interests first, then random ones."""
    own = [int(t) for t in world.users.topics[user] if t >= 0][: k - 1]
    others = rng.permutation(len(world.centroids))
    extra = [int(t) for t in others if t not in own][: k - len(own)]
    return np.array(own + extra, np.int32)


def build_sim_users(world: World, n_users: int, k: int, rng: np.random.Generator) -> SimUsers:
    """The first `n_users` users of the world, each with `k` clusters (k >= 3)."""
    user_ids = np.arange(n_users, dtype=np.int64)
    topics = np.stack([_user_topics(world, int(u), k, rng) for u in user_ids])
    medoids = sample_from_topics(world.pins, topics, rng).astype(np.int64)
    role = np.full(k, STABLE, np.int8)
    role[0], role[-1] = FADING, GROWING
    importance = rng.uniform(4.0, 15.0, (n_users, k))
    importance[:, 0] = rng.uniform(25.0, 40.0, n_users)
    importance[:, -1] = rng.uniform(1.0, 3.0, n_users)
    before = rng.uniform(0.3, 0.7, (n_users, k))
    before[:, 0], before[:, -1] = 0.9, 0.1
    after = before.copy()
    after[:, 0], after[:, -1] = 0.05, 0.9
    cluster_ids = (user_ids[:, None] * 1000 + np.arange(k)[None, :] + 1).astype(np.int64)
    return SimUsers(user_ids, topics, cluster_ids, medoids, importance, before, after, role)


def engagement_probability(
    world: World,
    users: SimUsers,
    pins: np.ndarray,
    shifted: bool,
    base_rate: float,
    gain: float,
    off_interest: float,
) -> np.ndarray:
    """P(engage) [U, m] for pins [U, m] shown to each user (-1: no pin, probability 0)."""
    safe = np.maximum(pins, 0)
    topic = world.pins.topic[safe]
    match = users.topics[:, None, :] == topic[:, :, None]
    strength = np.where(match, users.strength(shifted)[:, None, :], 0.0).max(axis=2)
    strength = np.where(match.any(axis=2), strength, off_interest)
    p = base_rate + gain * world.pins.quality[safe] * strength
    return np.where(pins >= 0, np.clip(p, 0.0, 1.0), 0.0)
