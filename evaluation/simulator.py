"""Closed-loop query-reward simulator (design §4): does rewarding queries by their downstream
engagement recover faster than count-based sampling when a user's interests shift, and how much
does applying feedback in realtime add to a daily batch job?

Each round every simulated user (`sim_world`) makes one request. The request's queries come
from the real selection module (`pinfeed.query_selection`), its pins from the candidate pools
of the trained retrieval model or the content fallback (`sim_retrieval`), engagement from the
user's latent interests, and the feedback goes back through the real attribution
(`pinfeed.attribution`), realtime update (`feature_repo.realtime_rewards.apply_increments`)
and offline reward computation (`feature_repo.pipeline.rewards.compute_cluster_rewards`). The
log and each policy's rewards are kept in `sim_rewards`.

Time and cadence: a simulated day holds `rounds_per_day` requests per user, evenly spread over
its 24 hours (a user's feed loads over the day's sessions). At each midnight the clusters'
importance decays (half-life) and gains the day's actions, for every policy (the clustering
job's refresh). The offline reward job runs at every `offline_every_days`-th midnight over the
log before it (the last `reward_window_days`), and its rows are served from
`offline_delay_hours` later (the first request at or after landing): the batch job's real
cadence, under which day D's feedback reaches selection only some hours into day D + 1.
Policies:

- `count`: sample by importance (the baseline);
- `reward_offline`: sample by reward, as the last landed offline job computed it;
- `reward_realtime`: every round's feedback applied as increments at once, as the feedback
  endpoint does, and re-based when an offline job lands: its rows become the job's plus the
  increments of the events since the job's cut-off (`realtime_rewards`' agreement:
  offline(as_of=T1) + realtime[T1, T2) = offline(as_of=T2)). Increments never expire old
  impressions (only the job does), so after a shift realtime's reward of a fading cluster falls
  by dilution at once and by expiry only when a job lands: its lead is bounded by the window.

Every run starts with `history_days` of the count policy (the logged history the reward job
first sees), identical across policies; metrics cover the `rounds` after it, and the interest
shift happens `shift_fraction` of the way through them. Within a seed all policies share the
users, request ids and random draws (common random numbers), so their differences are the
policies' and not noise.

Notation: U users, K clusters per user, n queries and m = n * pins_per_query pins per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evaluation.sim_rewards import PolicyRewards, RewardLog, epoch_us
from evaluation.sim_world import SimUsers, engagement_probability
from feature_repo.pipeline.config import FeatureConfig
from pinfeed.attribution import reward_increments
from pinfeed.query_selection import SelectionConfig, fill_rewards, select_queries_batch
from pinfeed.synthetic.world import World

POLICIES = ("count", "reward_offline", "reward_realtime")
SimPolicy = Literal["count", "reward_offline", "reward_realtime"]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


class SimulatorConfig(BaseModel):
    """Size of the simulation and the knobs of its users, policies and rewards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(200, ge=1, description="simulated users")
    clusters_per_user: int = Field(5, ge=3, description="K interest clusters per user")
    rounds: int = Field(60, ge=4, description="evaluated rounds (one request per user each)")
    history_days: int = Field(
        2, ge=0, description="days of count-policy rounds before evaluation (the jobs' first log)"
    )
    rounds_per_day: int = Field(
        8, ge=1, description="requests per user per simulated day, spread evenly over it"
    )
    offline_every_days: int = Field(
        1, ge=1, description="the offline reward job runs at every this many midnights"
    )
    offline_delay_hours: float = Field(
        6.0, ge=0, description="hours after its midnight cut-off that the job's rows land"
    )
    shift_fraction: float = Field(0.3, gt=0, lt=1, description="where the shift falls")
    n_queries: int = Field(3, ge=1, description="query pins per request")
    pins_per_query: int = Field(4, ge=1, description="pins retrieved per query")
    pool_size: int = Field(50, ge=1, description="M: retrieval results a query draws from")
    floor: float = Field(0.05, ge=0, le=1, description="selection floor per cluster")
    base_rate: float = Field(0.01, ge=0, le=1, description="engagement rate at zero affinity")
    gain: float = Field(0.3, ge=0, description="engagement per unit quality x strength")
    off_interest: float = Field(0.02, ge=0, le=1, description="strength outside the clusters")
    reward_window_days: float = Field(2.0, gt=0, description="impressions a reward counts")
    reward_prior_weight: float = Field(10.0, ge=0, description="m of the smoothed reward")
    importance_half_life_days: float = Field(7.0, gt=0, description="importance decay")
    attribution_window_hours: float = Field(24.0, gt=0, description="engagement credit window")
    recovery_target: float = Field(0.9, gt=0, le=2, description="share of the pre-shift rate")
    recovery_window_rounds: int = Field(
        4, ge=1, description="rounds the recovered engagement rate is averaged over"
    )

    @model_validator(mode="after")
    def _job_lands_before_the_next(self) -> Self:
        if self.offline_delay_hours >= 24 * self.offline_every_days:
            raise ValueError(
                "offline_delay_hours must be < 24 * offline_every_days (a job has to land "
                "before the next one starts): shorten the delay or run the job less often"
            )
        return self

    @property
    def shift_round(self) -> int:
        """First shifted round, counted from the first evaluated round."""
        return round(self.shift_fraction * self.rounds)

    @property
    def history_rounds(self) -> int:
        return self.history_days * self.rounds_per_day

    @property
    def step(self) -> timedelta:
        return timedelta(days=1) / self.rounds_per_day

    @property
    def offline_landing_rounds(self) -> int:
        """Rounds from an offline job's cut-off to the first request that is served its rows."""
        return math.ceil(self.offline_delay_hours * self.rounds_per_day / 24 - 1e-9)

    def offline_cutoff(self, t: int) -> int | None:
        """The cut-off round of the offline job whose rows land at round `t`, else None; cut-offs
        are the midnights (round multiples of a day) every `offline_every_days` days."""
        cut = t - self.offline_landing_rounds
        period = self.offline_every_days * self.rounds_per_day
        return cut if cut > 0 and cut % period == 0 else None


@dataclass(frozen=True)
class RunTrace:
    """Per evaluated round [R]: impressions, engagements, impression shares per role [R, 3] and
    the mean reward the selection saw per role [R, 3] (rewards without data filled as the
    selection fills them; the fallback throughout for `count`, which reads none)."""

    impressions: np.ndarray
    engagements: np.ndarray
    role_shares: np.ndarray
    role_rewards: np.ndarray


def _draw_pins(
    pools: np.ndarray, chosen: np.ndarray, per_query: int, rng: np.random.Generator
) -> np.ndarray:
    """Pins [U, n * per_query]: per draw, `per_query` distinct pool entries at random; a pin
    repeated within a request is shown once (later copies are -1)."""
    users = chosen.shape[0]
    pool = pools[np.arange(users)[:, None], chosen]  # [U, n, M]
    picks = np.argsort(rng.random(pool.shape), axis=2)[:, :, :per_query]
    pins = np.take_along_axis(pool, picks, axis=2).reshape(users, -1)
    order = np.argsort(pins, axis=1, kind="stable")
    ranked = np.take_along_axis(pins, order, axis=1)
    repeat = np.zeros_like(pins, bool)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    duplicate = np.zeros_like(repeat)
    np.put_along_axis(duplicate, order, repeat, axis=1)
    return np.where(duplicate, -1, pins)


def _round_feedback(
    users: SimUsers,
    pins: np.ndarray,
    clusters: np.ndarray,
    query_pins: np.ndarray,
    engaged: np.ndarray,
    request_ids: np.ndarray,
    now: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(served items, feedback events) of one round, as serving would log them: an impression
    event per shown pin, a click a minute later per engaged one (pinfeed.attribution)."""
    shown = pins >= 0
    user_rows = np.broadcast_to(np.arange(pins.shape[0])[:, None], pins.shape)[shown]
    served = pd.DataFrame(
        {
            "request_id": request_ids[user_rows],
            "pin_id": pins[shown],
            "user_id": users.user_ids[user_rows],
            "cluster_id": clusters[shown],
            "query_pin_id": query_pins[shown],
            "served_ts": pd.Timestamp(now),
        }
    )
    impressions = served[["request_id", "pin_id"]].assign(kind="impression", event_ts=now)
    clicks = served.loc[engaged[shown], ["request_id", "pin_id"]].assign(
        kind="click", event_ts=now + timedelta(minutes=1)
    )
    return served, pd.concat([impressions, clicks], ignore_index=True)


@dataclass(frozen=True)
class _Served:
    """One round: request ids [U], the rewards the selection saw [U, K] (filled), the query
    slot of each pin, the pins (-1: none) and which were engaged, [U, m]."""

    request_ids: np.ndarray
    rewards_seen: np.ndarray
    slot: np.ndarray
    pins: np.ndarray
    engaged: np.ndarray


@dataclass
class _Trace:
    """Accumulates the evaluated rounds of a run into a RunTrace."""

    counts: np.ndarray  # [R, 2] impressions, engagements
    shares: np.ndarray  # [R, 3]
    rewards: np.ndarray  # [R, 3]

    @classmethod
    def empty(cls, rounds: int) -> _Trace:
        return cls(np.zeros((rounds, 2)), np.zeros((rounds, 3)), np.zeros((rounds, 3)))

    def record(self, r: int, users: SimUsers, served: _Served) -> None:
        shown = served.pins >= 0
        self.counts[r] = shown.sum(), served.engaged.sum()
        role = users.role[served.slot][shown]
        self.shares[r] = np.bincount(role, minlength=3) / max(int(shown.sum()), 1)
        self.rewards[r] = [served.rewards_seen[:, users.role == k].mean() for k in range(3)]

    def result(self) -> RunTrace:
        return RunTrace(self.counts[:, 0], self.counts[:, 1], self.shares, self.rewards)


class _ClosedLoop:
    """One policy's run: the users' importance, the policy's rewards and the log, advanced one
    round (one request per user) at a time."""

    def __init__(
        self,
        policy: SimPolicy,
        seed: int,
        world: World,
        users: SimUsers,
        pools: np.ndarray,
        config: SimulatorConfig,
    ) -> None:
        self.policy, self.seed, self.world, self.users = policy, seed, world, users
        self.pools, self.config = pools, config
        self.rows = np.arange(len(users.user_ids))[:, None]
        self.importance = users.importance.copy()
        self.day_actions = np.zeros_like(self.importance)
        features = FeatureConfig(
            reward_window_days=config.reward_window_days,
            reward_prior_weight=config.reward_prior_weight,
        )
        self.rewards, self.log = PolicyRewards(users, features, T0), RewardLog({})
        self.trace = _Trace.empty(config.rounds)

    def step(self, t: int) -> None:
        """Round t: the jobs due at its moment, then the requests, their feedback, the trace."""
        config, now = self.config, T0 + t * self.config.step
        if t > 0 and t % config.rounds_per_day == 0:
            decay = 0.5 ** (1.0 / config.importance_half_life_days)
            self.importance = self.importance * decay + self.day_actions
            self.day_actions = np.zeros_like(self.importance)
        cutoff = config.offline_cutoff(t)
        if cutoff is not None and self.policy != "count":
            rebase = self.policy == "reward_realtime"
            self.rewards.land_offline_job(self.log, T0 + cutoff * config.step, now, rebase=rebase)
        evaluated = t - config.history_rounds
        served = self.serve(t, by_reward=self.policy != "count" and evaluated >= 0)
        self.feed_back(served, now)
        if evaluated >= 0:
            self.trace.record(evaluated, self.users, served)

    def serve(self, t: int, *, by_reward: bool) -> _Served:
        """Every user's request of round t: queries by the real selection, pins, engagement."""
        users, config = self.users, self.config
        request_ids = np.int64(self.seed) * 1_000_000_000 + t * len(users.user_ids)
        request_ids = request_ids + np.arange(len(users.user_ids))
        rewards, global_reward = self.rewards.matrix()
        mask = np.ones(users.cluster_ids.shape, bool)
        selection = select_queries_batch(
            request_ids,
            users.cluster_ids,
            users.medoids,
            self.importance,
            rewards,
            mask,
            SelectionConfig(
                policy="reward" if by_reward else "count",
                n_queries=config.n_queries,
                floor=config.floor,
                seed=self.seed,
            ),
            global_reward,
        )
        chosen = selection.cluster_ids - users.cluster_ids[:, :1]  # ids are u * 1000 + k + 1
        rng = np.random.default_rng([self.seed, t])
        pins = _draw_pins(self.pools, chosen, config.pins_per_query, rng)
        shifted = t - config.history_rounds >= config.shift_round
        p = engagement_probability(
            self.world, users, pins, shifted, config.base_rate, config.gain, config.off_interest
        )
        engaged = (rng.random(pins.shape) < p) & (pins >= 0)
        slot = np.repeat(chosen, config.pins_per_query, axis=1)
        filled = fill_rewards(rewards, mask, global_reward)
        return _Served(request_ids, filled, slot, pins, engaged)

    def feed_back(self, served: _Served, now: datetime) -> None:
        """Engagement to the day's actions and the log; for realtime, straight to the rewards."""
        users, rows, pins, engaged = self.users, self.rows, served.pins, served.engaged
        shown = pins >= 0
        at = (np.broadcast_to(rows, pins.shape)[engaged], served.slot[engaged])
        np.add.at(self.day_actions, at, 1.0)
        clusters, query_pins = (
            users.cluster_ids[rows, served.slot],
            users.medoids[rows, served.slot],
        )
        self.log.append(
            ts_us=np.full(int(shown.sum()), epoch_us(now)),
            user_id=np.broadcast_to(users.user_ids[:, None], pins.shape)[shown],
            pin_id=pins[shown],
            query_pin_id=query_pins[shown],
            cluster_id=clusters[shown],
            engaged=engaged[shown],
        )
        if self.policy == "reward_realtime":
            items, feedback = _round_feedback(
                users, pins, clusters, query_pins, engaged, served.request_ids, now
            )
            window = timedelta(hours=self.config.attribution_window_hours)
            self.rewards.apply(reward_increments(items, feedback, window=window).increments)


def run_policy(
    policy: SimPolicy,
    seed: int,
    world: World,
    users: SimUsers,
    pools: np.ndarray,
    config: SimulatorConfig,
) -> RunTrace:
    """One closed-loop run of `policy`; deterministic in (seed, inputs)."""
    loop = _ClosedLoop(policy, seed, world, users, pools, config)
    for t in range(config.history_rounds + config.rounds):
        loop.step(t)
    return loop.trace.result()
