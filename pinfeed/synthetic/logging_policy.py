"""The simulated production system that decided what each user saw (the logging policy).

Per day it draws requests (Poisson per user, rate requests_per_user_day x activity, uniform
times), picks each request's query pin, retrieves candidates around it and orders them:

- Query pin: the policy keeps, per user and interest slot, a ring of the last `history_size`
  pins the user engaged with (closeup, save or click) in that slot's topic, seeded before the
  first day with one popular pin of each initial interest (the seed pins, written to truth).
  A request samples a slot with probability proportional to decayed engagement counts plus a
  prior (slots with an empty ring, i.e. undiscovered new interests, are never picked), then a
  pin uniformly from that slot's ring. The policy learns only at the end of each day, so a query
  pin was always engaged on an earlier day, or is a seed pin.
- Candidates: from the query pin's topic (popularity-weighted), from a sibling topic, or popular
  pins over the whole corpus, in the shares of `LoggingPolicy`; related requests stay closer to
  the query topic. Duplicates within a request and the query pin itself are redrawn from the
  same source a few times, then once from popular pins, then dropped, so a request may rarely
  hold fewer than items_per_request impressions.
- Order: by a noisy policy score (0.5 log popularity + 1 for the query topic + Gumbel noise);
  positions 0..n-1 follow it, so position is confounded with topic match as in real logs.

Notation: R requests in a day, n items_per_request, S interest slots, H history size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinfeed.synthetic.config import GeneratorConfig
from pinfeed.synthetic.world import World, sample_from_topics, sample_popular, sibling_topic

HOMEFEED, RELATED = 0, 1
POPULAR_SOURCE = -1
REDRAW_ROUNDS = 4


@dataclass(frozen=True)
class DayImpressions:
    """One day's impressions [N], ordered by request then position."""

    request: np.ndarray  # [N] int64 request index within the day (time order)
    user: np.ndarray  # [N] int32
    pin: np.ndarray  # [N] int32
    ts_us: np.ndarray  # [N] int64 microseconds since the epoch
    surface: np.ndarray  # [N] int8 HOMEFEED | RELATED
    query_pin: np.ndarray  # [N] int32
    query_topic: np.ndarray  # [N] int32
    position: np.ndarray  # [N] int32
    requests: int  # R


class PolicyState:
    """What the logging policy has learned about each user so far (mutated once per day)."""

    def __init__(self, seed_pins: np.ndarray, history_size: int) -> None:
        users, slots = seed_pins.shape
        self.history = np.full((users, slots, history_size), -1, dtype=np.int32)
        self.history[:, :, 0] = seed_pins
        self.filled = (seed_pins >= 0).astype(np.int32)  # [U, S] writes so far (ring pointer)
        self.counts = np.zeros((users, slots), dtype=np.float32)

    def choose_query(
        self, user: np.ndarray, prior: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(slot [R], query pin [R]) for requests of `user` [R]."""
        weight = (self.counts[user] + prior) * (self.filled[user] > 0)
        cum = np.cumsum(weight, axis=1)
        draw = rng.random(len(user)) * cum[:, -1]
        slot = (cum <= draw[:, None]).sum(axis=1)
        slot = np.minimum(slot, cum.shape[1] - 1)
        size = np.minimum(self.filled[user, slot], self.history.shape[2])
        which = (rng.random(len(user)) * size).astype(np.int64)
        return slot, self.history[user, slot, which]

    def learn(
        self, user: np.ndarray, slot: np.ndarray, pin: np.ndarray, ts_us: np.ndarray, decay: float
    ) -> None:
        """Fold one day's engagements (user, slot, pin, time; [E] each) into the state: decayed
        counts, and each (user, slot)'s latest engaged pin appended to its ring."""
        slots = self.counts.shape[1]
        self.counts *= decay
        key = user.astype(np.int64) * slots + slot
        self.counts += np.bincount(key, minlength=self.counts.size).reshape(self.counts.shape)
        order = np.lexsort((ts_us, key))
        key_sorted = key[order]
        last = np.append(key_sorted[1:] != key_sorted[:-1], True)
        latest = order[last]
        u, s = user[latest], slot[latest]
        ring = self.filled[u, s] % self.history.shape[2]
        self.history[u, s, ring] = pin[latest]
        self.filled[u, s] += 1


def draw_requests(
    config: GeneratorConfig, world: World, day_start_us: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(user [R] int32, ts_us [R] int64) of one day's requests, in time order."""
    rate = config.requests_per_user_day * world.users.activity
    user = np.repeat(np.arange(config.users, dtype=np.int32), rng.poisson(rate))
    ts_us = day_start_us + rng.integers(0, 86_400_000_000, size=len(user), dtype=np.int64)
    order = np.argsort(ts_us, kind="stable")
    return user[order], ts_us[order]


def _draw_sources(
    config: GeneratorConfig,
    query_topic: np.ndarray,
    surface: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Source topic [R, n] of every candidate slot: query topic, a sibling, or POPULAR_SOURCE."""
    policy, n = config.policy, config.items_per_request
    same = np.where(surface == RELATED, policy.related_same_topic_share, policy.same_topic_share)
    draw = rng.random((len(query_topic), n))
    topic = np.broadcast_to(query_topic[:, None], draw.shape)
    sibling = sibling_topic(topic, config.topics_per_category, rng)
    source = np.full(draw.shape, POPULAR_SOURCE, dtype=np.int32)
    neighbour = (draw >= same[:, None]) & (draw < same[:, None] + policy.neighbour_topic_share)
    source[draw < same[:, None]] = topic[draw < same[:, None]]
    source[neighbour] = sibling[neighbour]
    return source


def _draw_pins(world: World, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One pin per entry of `source` [M]: popularity-weighted within the topic, or corpus-wide."""
    pins = sample_popular(world.pins, source.shape, rng)
    topical = source != POPULAR_SOURCE
    pins[topical] = sample_from_topics(world.pins, source[topical], rng)
    return pins


def _duplicates(candidates: np.ndarray, query_pin: np.ndarray) -> np.ndarray:
    """[R, n] True for a repeat of an earlier entry in its row, or for the query pin itself."""
    order = np.argsort(candidates, axis=1, kind="stable")
    ranked = np.take_along_axis(candidates, order, axis=1)
    repeat = np.zeros_like(ranked, dtype=bool)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    dup = np.empty_like(repeat)
    np.put_along_axis(dup, order, repeat, axis=1)
    return dup | (candidates == query_pin[:, None])


def draw_candidates(
    config: GeneratorConfig,
    world: World,
    query_pin: np.ndarray,
    surface: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [R, n] int32, valid [R, n] bool) retrieved around each query pin."""
    source = _draw_sources(config, world.pins.topic[query_pin], surface, rng)
    candidates = _draw_pins(world, source, rng)
    for round_ in range(REDRAW_ROUNDS):
        dup = _duplicates(candidates, query_pin)
        if not dup.any():
            break
        last = round_ == REDRAW_ROUNDS - 1
        redraw_source = np.full(int(dup.sum()), POPULAR_SOURCE) if last else source[dup]
        candidates[dup] = _draw_pins(world, redraw_source, rng)
    return candidates, ~_duplicates(candidates, query_pin)


def rank_candidates(
    world: World,
    candidates: np.ndarray,
    valid: np.ndarray,
    query_pin: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Column order [R, n] that sorts each row by the policy score, invalid entries last."""
    pins = world.pins
    score = 0.5 * np.log(pins.popularity[candidates]) + rng.gumbel(size=candidates.shape)
    score += pins.topic[candidates] == pins.topic[query_pin][:, None]
    score[~valid] = -np.inf
    return np.argsort(-score, axis=1, kind="stable")


def serve_day(
    config: GeneratorConfig,
    world: World,
    state: PolicyState,
    day_start_us: int,
    rng: np.random.Generator,
) -> DayImpressions:
    """Every impression the logging policy served on one day."""
    user, ts_us = draw_requests(config, world, day_start_us, rng)
    surface = np.where(rng.random(len(user)) < config.policy.homefeed_share, HOMEFEED, RELATED)
    _, query_pin = state.choose_query(user, config.policy.count_prior, rng)
    candidates, valid = draw_candidates(config, world, query_pin, surface, rng)
    order = rank_candidates(world, candidates, valid, query_pin, rng)
    candidates = np.take_along_axis(candidates, order, axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    request = np.broadcast_to(np.arange(len(user))[:, None], valid.shape)[valid]
    position = np.broadcast_to(np.arange(valid.shape[1], dtype=np.int32), valid.shape)[valid]
    return DayImpressions(
        request=request.astype(np.int64),
        user=user[request],
        pin=candidates[valid],
        ts_us=ts_us[request],
        surface=surface[request].astype(np.int8),
        query_pin=query_pin[request],
        query_topic=world.pins.topic[query_pin][request],
        position=position,
        requests=len(user),
    )
