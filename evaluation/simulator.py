"""Closed-loop query-reward simulator (design §4): does rewarding queries by their downstream
engagement recover faster than count-based sampling when a user's interests shift?

Each round every simulated user (`sim_world`) makes one request. The request's queries come
from the real selection module (`pinfeed.query_selection`), its pins from the candidate pools
of the trained retrieval model or the content fallback (`sim_retrieval`), engagement from the
user's latent interests, and the feedback goes back through the real attribution
(`pinfeed.attribution`), realtime update (`feature_repo.realtime_rewards.apply_increments`)
and offline reward computation (`feature_repo.pipeline.rewards.compute_cluster_rewards`).

Time: `rounds_per_day` rounds make a simulated day. At each day boundary the clusters'
importance decays (half-life) and gains the day's actions, for every policy (that is the
clustering job's refresh). Policies:

- `count`: sample by importance (the baseline);
- `reward_offline`: sample by reward, rewards recomputed from the log once per day over the
  last `reward_window_days`;
- `reward_realtime`: the same daily recomputation, plus every round's feedback applied as
  increments, as the feedback endpoint does.

Every run starts with `history_rounds` of the count policy (the logged history the reward job
first sees), identical across policies; metrics cover the `rounds` after it, and the interest
shift happens `shift_fraction` of the way through them. Within a seed all policies share the
users, request ids and random draws (common random numbers), so their differences are the
policies' and not noise.

Notation: U users, K clusters per user, n queries and m = n * pins_per_query pins per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from evaluation.sim_world import SimUsers, engagement_probability
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.rewards import compute_cluster_rewards
from feature_repo.realtime_rewards import COUNT_COLUMNS, apply_increments
from feature_repo.tables import USER_CLUSTERS
from pinfeed.attribution import reward_increments
from pinfeed.query_selection import SelectionConfig, select_queries_batch
from pinfeed.synthetic.world import World

POLICIES = ("count", "reward_offline", "reward_realtime")
SimPolicy = Literal["count", "reward_offline", "reward_realtime"]
T0 = datetime(2030, 1, 1, tzinfo=UTC)
REWARD_ROW_COLUMNS = (*COUNT_COLUMNS, "reward", "reward_has_data")


class SimulatorConfig(BaseModel):
    """Size of the simulation and the knobs of its users, policies and rewards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(200, ge=1, description="simulated users")
    clusters_per_user: int = Field(5, ge=3, description="K interest clusters per user")
    rounds: int = Field(60, ge=4, description="evaluated rounds (one request per user each)")
    history_rounds: int = Field(8, ge=0, description="count-policy rounds before evaluation")
    rounds_per_day: int = Field(4, ge=1, description="rounds per simulated day")
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

    @property
    def shift_round(self) -> int:
        """First shifted round, counted from the first evaluated round."""
        return round(self.shift_fraction * self.rounds)

    @property
    def step(self) -> timedelta:
        return timedelta(days=1) / self.rounds_per_day


@dataclass(frozen=True)
class RunTrace:
    """Per evaluated round [R]: impressions, engagements, impression shares per role [R, 3]."""

    impressions: np.ndarray
    engagements: np.ndarray
    role_shares: np.ndarray


@dataclass
class _Log:
    """Impressions of the last reward window, as the offline job reads them."""

    columns: dict[str, list[np.ndarray]]

    def append(self, **values: np.ndarray) -> None:
        for name, value in values.items():
            self.columns.setdefault(name, []).append(value)

    def table(self, since_us: int) -> pa.Table:
        merged = {name: np.concatenate(parts) for name, parts in self.columns.items()}
        keep = merged["ts_us"] >= since_us
        self.columns = {name: [value[keep]] for name, value in merged.items()}
        engaged = pa.array(merged["engaged"][keep])
        return pa.table(
            {
                "event_ts": pa.array(merged["ts_us"][keep]).cast(pa.timestamp("us", tz="UTC")),
                "user_id": merged["user_id"][keep],
                "pin_id": merged["pin_id"][keep],
                "query_pin_id": merged["query_pin_id"][keep],
                "cluster_id": merged["cluster_id"][keep],
                **{name: engaged for name in ("closeup", "save", "click", "long_click")},
            }
        )


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _cluster_tables(users: SimUsers) -> tuple[pa.Table, pa.Table]:
    """(user_clusters at T0, cluster_members = the medoids) for compute_cluster_rewards."""
    clusters = pa.table(
        {
            "user_id": users.user_ids,
            "event_timestamp": pa.array(np.full(len(users.user_ids), _us(T0))).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "cluster_ids": users.cluster_ids.tolist(),
            "medoid_pin_ids": users.medoids.tolist(),
            "cluster_importance": users.importance.astype(np.float32).tolist(),
        },
        schema=USER_CLUSTERS,
    )
    members = pa.table(
        {
            "user_id": np.repeat(users.user_ids, users.cluster_ids.shape[1]),
            "cluster_id": users.cluster_ids.ravel(),
            "pin_id": users.medoids.ravel(),
        }
    )
    return clusters, members


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


class _Rewards:
    """A policy's view of the cluster rewards: counts and rewards of every (user, cluster)."""

    def __init__(self, users: SimUsers, config: SimulatorConfig) -> None:
        self.shape = users.cluster_ids.shape
        self.rows: pd.DataFrame | None = None
        self.features = FeatureConfig(
            reward_window_days=config.reward_window_days,
            reward_prior_weight=config.reward_prior_weight,
        )
        self.clusters, self.members = _cluster_tables(users)

    def refresh(self, log: _Log, now: datetime) -> None:
        """The offline job: recompute from the window's log (overwrites realtime rows)."""
        since = now - timedelta(days=self.features.reward_window_days)
        table = compute_cluster_rewards(
            log.table(_us(since)), self.members, self.clusters, since, self.features, as_of=now
        )
        self.rows = table.to_pandas().loc[:, list(REWARD_ROW_COLUMNS)]

    def apply(self, increments: pd.DataFrame) -> None:
        """The realtime path: add increments to the current rows of the touched users."""
        if self.rows is None or increments.empty:
            return
        fresh = apply_increments(
            self.rows.loc[:, list(COUNT_COLUMNS)],
            increments,
            self.features.reward_prior_weight,
            self.features.reward_fallback,
        )
        touched = self.rows["user_id"].isin(fresh["user_id"])
        self.rows = pd.concat([self.rows[~touched], fresh], ignore_index=True)

    def matrix(self) -> tuple[np.ndarray, float]:
        """(rewards [U, K] with NaN where no data, global average reward)."""
        if self.rows is None:
            return np.full(self.shape, np.nan), self.features.reward_fallback
        rows = self.rows.sort_values(["user_id", "cluster_id"])
        has = rows["reward_has_data"].to_numpy(bool)
        reward = rows["reward"].to_numpy(np.float64)
        overall = float(reward[has].mean()) if has.any() else self.features.reward_fallback
        return np.where(has, reward, np.nan).reshape(self.shape), overall


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


def run_policy(
    policy: SimPolicy,
    seed: int,
    world: World,
    users: SimUsers,
    pools: np.ndarray,
    config: SimulatorConfig,
) -> RunTrace:
    """One closed-loop run of `policy`; deterministic in (seed, inputs)."""
    n_users, k = users.cluster_ids.shape
    rows = np.arange(n_users)[:, None]
    importance = users.importance.copy()
    day_actions = np.zeros_like(importance)
    rewards, log = _Rewards(users, config), _Log({})
    decay = 0.5 ** (1.0 / (config.importance_half_life_days * 1.0))
    window = timedelta(hours=config.attribution_window_hours)
    total = config.history_rounds + config.rounds
    traces = np.zeros((config.rounds, 2)), np.zeros((config.rounds, 3))
    for t in range(total):
        now = T0 + t * config.step
        if t > 0 and t % config.rounds_per_day == 0:
            importance = importance * decay + day_actions
            day_actions[:] = 0
            if policy != "count":
                rewards.refresh(log, now)
        evaluated = t - config.history_rounds
        use_reward = policy != "count" and evaluated >= 0
        reward_matrix, global_reward = rewards.matrix()
        request_ids = np.int64(seed) * 1_000_000_000 + t * n_users + np.arange(n_users)
        selection = select_queries_batch(
            request_ids,
            users.cluster_ids,
            users.medoids,
            importance,
            reward_matrix,
            np.ones((n_users, k), bool),
            SelectionConfig(
                policy="reward" if use_reward else "count",
                n_queries=config.n_queries,
                floor=config.floor,
                seed=seed,
            ),
            global_reward,
        )
        chosen = selection.cluster_ids - users.cluster_ids[:, :1]  # ids are u * 1000 + k + 1
        rng = np.random.default_rng([seed, t])
        pins = _draw_pins(pools, chosen, config.pins_per_query, rng)
        slot = np.repeat(chosen, config.pins_per_query, axis=1)
        shifted = evaluated >= config.shift_round
        p = engagement_probability(
            world, users, pins, shifted, config.base_rate, config.gain, config.off_interest
        )
        engaged = (rng.random(pins.shape) < p) & (pins >= 0)
        shown = pins >= 0
        np.add.at(day_actions, (np.broadcast_to(rows, pins.shape)[engaged], slot[engaged]), 1.0)
        clusters, query_pins = users.cluster_ids[rows, slot], users.medoids[rows, slot]
        log.append(
            ts_us=np.full(int(shown.sum()), _us(now)),
            user_id=np.broadcast_to(users.user_ids[:, None], pins.shape)[shown],
            pin_id=pins[shown],
            query_pin_id=query_pins[shown],
            cluster_id=clusters[shown],
            engaged=engaged[shown],
        )
        if policy == "reward_realtime":
            served, feedback = _round_feedback(
                users, pins, clusters, query_pins, engaged, request_ids, now
            )
            rewards.apply(reward_increments(served, feedback, window=window).increments)
        if evaluated >= 0:
            traces[0][evaluated] = shown.sum(), engaged.sum()
            role = users.role[slot][shown]
            traces[1][evaluated] = np.bincount(role, minlength=3) / max(int(shown.sum()), 1)
    return RunTrace(traces[0][:, 0], traces[0][:, 1], traces[1])
