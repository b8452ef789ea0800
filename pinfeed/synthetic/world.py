"""The latent world: topics, pins and users with drifting interests.

Notation: T topics, C categories (T / topics_per_category), P pins, U users, S interest slots
per user (max_interests + 1: the initial interests plus room for one new interest), D the
embedding dimension.

- Topics sit in categories; a topic centroid is its category centroid plus an offset, so sibling
  topics are closer to each other than to the rest (retrieval's "neighbour topic" candidates and
  the new interests a user develops both come from siblings).
- Pins: a topic (every topic has at least one pin), a content embedding (centroid + Gaussian
  noise), a true quality in (0, 1), a popularity (lognormal with log-sd
  `pin_popularity_sigma`, what the logging policy knows), a shoppable flag and a clickbait
  flag (clickbait pins: low quality, higher popularity).
- Users: an activity multiplier (lognormal with log-sd `user_activity_sigma`, mean 1) and S
  interest slots, each a topic with a strength at the start and end of the period,
  interpolated linearly in time. Slot kinds:
  stable, fading (strength falls to a tenth), new (strength grows from 0; a sibling of the
  user's first interest) and unused (topic -1, strength 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinfeed.synthetic.config import GeneratorConfig

UNUSED, STABLE, FADING, NEW = 0, 1, 2, 3
SLOT_KINDS = ("unused", "stable", "fading", "new")


@dataclass(frozen=True)
class Pins:
    """Per-pin truth, indexed by pin id (0..P-1)."""

    topic: np.ndarray  # [P] int32
    embedding: np.ndarray  # [P, D] float32
    quality: np.ndarray  # [P] float32 in (0, 1)
    popularity: np.ndarray  # [P] float32 > 0
    shoppable: np.ndarray  # [P] bool
    clickbait: np.ndarray  # [P] bool
    created_s: np.ndarray  # [P] int64 seconds before the period start
    by_topic: np.ndarray  # [P] int32 pin ids sorted by topic
    topic_cdf: np.ndarray  # [P] float64: topic + within-topic popularity CDF, in by_topic order
    global_cdf: np.ndarray  # [P] float64 popularity CDF over all pins (pin-id order)


@dataclass(frozen=True)
class Users:
    """Per-user truth, indexed by user id (0..U-1)."""

    activity: np.ndarray  # [U] float32, mean 1
    topics: np.ndarray  # [U, S] int32, -1 for unused slots
    kind: np.ndarray  # [U, S] int8 (UNUSED | STABLE | FADING | NEW)
    strength_start: np.ndarray  # [U, S] float32
    strength_end: np.ndarray  # [U, S] float32
    seed_pins: np.ndarray  # [U, S] int32: the pin the logging policy starts from; -1 none
    created_s: np.ndarray  # [U] int64 seconds before the period start

    def strength(self, users: np.ndarray, frac: np.ndarray) -> np.ndarray:
        """Interest strengths [N, S] of `users` [N] at period fractions `frac` [N] in [0, 1]."""
        start = self.strength_start[users]
        return start + (self.strength_end[users] - start) * frac[:, None].astype(np.float32)


@dataclass(frozen=True)
class World:
    centroids: np.ndarray  # [T, D] float32 topic centroids
    category: np.ndarray  # [T] int32
    pins: Pins
    users: Users


def sibling_topic(topic: np.ndarray, per_category: int, rng: np.random.Generator) -> np.ndarray:
    """A random other topic of the same category, for each entry of `topic` [N]."""
    offset = rng.integers(1, per_category, size=topic.shape)
    base = topic - topic % per_category
    return (base + (topic % per_category + offset) % per_category).astype(np.int32)


def _centroids(config: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    categories = config.topics // config.topics_per_category
    dim = config.embedding_dim
    category_centre = rng.normal(0.0, 1.0, size=(categories, dim))
    offset = rng.normal(0.0, 0.6, size=(config.topics, dim))
    centroids = category_centre[np.arange(config.topics) // config.topics_per_category] + offset
    return centroids.astype(np.float32)


def build_pins(config: GeneratorConfig, centroids: np.ndarray, rng: np.random.Generator) -> Pins:
    n, topics = config.pins, config.topics
    topic_weight = rng.dirichlet(np.full(topics, 2.0))
    topic = np.concatenate([np.arange(topics), rng.choice(topics, n - topics, p=topic_weight)])
    topic = rng.permutation(topic).astype(np.int32)
    noise = rng.normal(0.0, config.embedding_noise, size=(n, config.embedding_dim))
    embedding = (centroids[topic] + noise).astype(np.float32)
    clickbait = rng.random(n) < config.clickbait_share
    quality = np.where(clickbait, rng.beta(1.5, 6.0, n), rng.beta(4.0, 2.0, n)).astype(np.float32)
    popularity = rng.lognormal(0.0, config.pin_popularity_sigma, n) * np.where(clickbait, 2.0, 1.0)
    by_topic = np.argsort(topic, kind="stable").astype(np.int32)
    sorted_topic = topic[by_topic]
    cum = np.cumsum(popularity[by_topic])
    starts = np.searchsorted(sorted_topic, np.arange(topics))
    before = np.concatenate([[0.0], cum])[starts][sorted_topic]
    totals = np.add.reduceat(popularity[by_topic], starts)[sorted_topic]
    within = np.minimum((cum - before) / totals, 1.0)
    within[np.append(starts[1:], n) - 1] = 1.0  # each topic's CDF ends exactly at topic + 1
    global_cdf = np.cumsum(popularity) / popularity.sum()
    global_cdf[-1] = 1.0
    return Pins(
        topic=topic,
        embedding=embedding,
        quality=quality,
        popularity=popularity.astype(np.float32),
        shoppable=rng.random(n) < config.shoppable_share,
        clickbait=clickbait,
        created_s=rng.integers(3600, 365 * 86400, n).astype(np.int64),
        by_topic=by_topic,
        topic_cdf=sorted_topic + within,
        global_cdf=global_cdf,
    )


def _interest_topics(config: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    """[U, max_interests] distinct topics per user, popular topics more likely (Gumbel top-k)."""
    log_weight = np.log(rng.dirichlet(np.full(config.topics, 1.0)))
    keys = log_weight[None, :] + rng.gumbel(size=(config.users, config.topics))
    top = np.argpartition(-keys, config.max_interests - 1, axis=1)[:, : config.max_interests]
    return top.astype(np.int32)


def build_users(config: GeneratorConfig, pins: Pins, rng: np.random.Generator) -> Users:
    u, k_max = config.users, config.max_interests
    topics = np.full((u, config.slots), -1, dtype=np.int32)
    topics[:, :k_max] = _interest_topics(config, rng)
    count = rng.integers(config.min_interests, k_max + 1, size=u)
    used = np.arange(k_max)[None, :] < count[:, None]
    topics[:, :k_max][~used] = -1
    kind = np.zeros((u, config.slots), dtype=np.int8)
    kind[:, :k_max][used] = STABLE
    start = np.zeros((u, config.slots), dtype=np.float32)
    start[:, :k_max] = np.where(used, rng.uniform(0.5, 1.0, (u, k_max)), 0.0)
    end = start.copy()

    rows = np.arange(u)
    fading = (rng.random(u) < config.fading_share) & (count >= 2)
    fade_slot = rng.integers(0, count)
    kind[rows[fading], fade_slot[fading]] = FADING
    end[rows[fading], fade_slot[fading]] *= 0.1

    new_topic = sibling_topic(topics[:, 0], config.topics_per_category, rng)
    clash = (topics == new_topic[:, None]).any(axis=1)
    new = (rng.random(u) < config.new_interest_share) & ~clash
    topics[new, -1] = new_topic[new]
    kind[new, -1] = NEW
    end[new, -1] = rng.uniform(0.6, 1.0, int(new.sum()))

    seed_pins = np.full((u, config.slots), -1, dtype=np.int32)
    seeded = (kind == STABLE) | (kind == FADING)
    seed_pins[seeded] = sample_from_topics(pins, topics[seeded], rng)
    activity = rng.lognormal(0.0, config.user_activity_sigma, u)
    return Users(
        activity=(activity / activity.mean()).astype(np.float32),
        topics=topics,
        kind=kind,
        strength_start=start,
        strength_end=end,
        seed_pins=seed_pins,
        created_s=rng.integers(86400, 3 * 365 * 86400, u).astype(np.int64),
    )


def sample_from_topics(pins: Pins, topic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One popularity-weighted pin id of each `topic` [...] (same shape, int32)."""
    value = topic + (1.0 - rng.random(topic.shape))  # in (topic, topic + 1]
    index = np.searchsorted(pins.topic_cdf, value.ravel(), side="left")
    index = np.minimum(index, len(pins.by_topic) - 1)
    return pins.by_topic[index].reshape(topic.shape)


def sample_popular(pins: Pins, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Popularity-weighted pin ids over the whole corpus, int32 of `shape`."""
    index = np.searchsorted(pins.global_cdf, 1.0 - rng.random(shape).ravel(), side="left")
    return np.minimum(index, len(pins.topic) - 1).astype(np.int32).reshape(shape)


def build_world(config: GeneratorConfig, rng: np.random.Generator) -> World:
    centroids = _centroids(config, rng)
    pins = build_pins(config, centroids, rng)
    users = build_users(config, pins, rng)
    category = (np.arange(config.topics) // config.topics_per_category).astype(np.int32)
    return World(centroids=centroids, category=category, pins=pins, users=users)
