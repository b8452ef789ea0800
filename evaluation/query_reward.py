"""`pinfeed evaluate query-reward`: run the closed-loop simulator (`evaluation.simulator`) for
every policy and seed and write the report.

Report (`--out`, JSON) shape:

    {"policies": {NAME: {"engagement_rate": {"mean": x, "ci95": [lo, hi]},
                         "recovery_rounds": n, ...}},
     "realtime_vs_offline": {...}, "cadence": {...}, "retrieval": ..., "config": ...}

plus per policy the post-shift engagement rate, the paired lift over `count`, the recovery of
each seed; the paired difference realtime - offline (what applying feedback at once adds to the
daily job); the cadence both reward policies ran at; and, beside the JSON, a PNG of each
policy's impression share and reward per cluster role and engagement rate over the rounds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.sim_report import plot_shares, recovery_rounds, t_interval
from evaluation.sim_retrieval import candidate_pools
from evaluation.sim_world import build_sim_users
from evaluation.simulator import POLICIES, RunTrace, SimulatorConfig, run_policy
from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome
from pinfeed.synthetic import GeneratorConfig
from pinfeed.synthetic.world import World, build_world


@dataclass(frozen=True)
class QueryRewardReport:
    report: dict[str, Any]
    json_path: Path
    png_path: Path
    seconds: float


def simulation_world(preset: str, data_seed: int) -> World:
    """The generator's world for (preset, seed): the pins the event data (and a retrieval model
    trained on it) were made from, drawn from the same random stream as the generator."""
    config = GeneratorConfig.preset(preset, seed=data_seed)
    world_seed = np.random.SeedSequence(config.seed).spawn(2 + config.days)[0]
    return build_world(config, np.random.default_rng(world_seed))


def _post_shift_rates(traces: list[RunTrace], config: SimulatorConfig) -> np.ndarray:
    """Engagement rate after the shift, per seed [S]."""
    after = slice(config.shift_round, None)
    return np.array([t.engagements[after].sum() / t.impressions[after].sum() for t in traces])


def _recoveries(traces: list[RunTrace], config: SimulatorConfig) -> list[tuple[int, bool]]:
    """(rounds, recovered) per seed."""
    return [
        recovery_rounds(
            t.impressions,
            t.engagements,
            config.shift_round,
            config.recovery_window_rounds,
            config.recovery_target,
        )
        for t in traces
    ]


def _policy_summary(
    traces: list[RunTrace], baseline: list[RunTrace], config: SimulatorConfig
) -> dict[str, Any]:
    rates = np.array([t.engagements.sum() / t.impressions.sum() for t in traces])
    base = np.array([t.engagements.sum() / t.impressions.sum() for t in baseline])
    post = _post_shift_rates(traces, config)
    recovery = _recoveries(traces, config)
    return {
        "engagement_rate": t_interval(rates),
        "post_shift_engagement_rate": t_interval(post),
        "lift_vs_count": t_interval(rates - base),
        "recovery_rounds": float(np.mean([r for r, _ in recovery])),
        "recovery_rounds_interval": t_interval(np.array([float(r) for r, _ in recovery])),
        "recovery_rounds_per_seed": [r for r, _ in recovery],
        "recovered_per_seed": [ok for _, ok in recovery],
        "engagement_rate_per_seed": rates.tolist(),
        "post_shift_engagement_rate_per_seed": post.tolist(),
    }


def _realtime_vs_offline(
    realtime: list[RunTrace], offline: list[RunTrace], config: SimulatorConfig
) -> dict[str, Any]:
    """Paired within seed, realtime - offline: what applying feedback at once adds to the daily
    job after the shift (engagement rate) and how many rounds sooner it recovers (negative)."""
    post = _post_shift_rates(realtime, config) - _post_shift_rates(offline, config)
    rounds = [
        float(rt - off)
        for (rt, _), (off, _) in zip(
            _recoveries(realtime, config), _recoveries(offline, config), strict=True
        )
    ]
    return {
        "post_shift_engagement_rate": t_interval(post),
        "recovery_rounds": t_interval(np.array(rounds)),
    }


def cadence(config: SimulatorConfig) -> dict[str, Any]:
    """When each reward policy's rows change, in the report's words."""
    landing = config.offline_landing_rounds
    return {
        "requests_per_user_per_day": config.rounds_per_day,
        "offline_every_days": config.offline_every_days,
        "offline_delay_hours": config.offline_delay_hours,
        "offline_landing_rounds_after_midnight": landing,
        "reward_window_days": config.reward_window_days,
        "reward_offline": (
            f"recomputed every {config.offline_every_days} day(s) at midnight over the last "
            f"{config.reward_window_days:g} days of log, rows served from "
            f"{config.offline_delay_hours:g} h later (request {landing + 1} of "
            f"{config.rounds_per_day} that day)"
        ),
        "reward_realtime": (
            "every request's feedback applied at once; re-based when the offline job lands "
            "(its rows plus the increments since its cut-off)"
        ),
    }


def evaluate_query_reward(
    home: ProjectHome,
    *,
    rounds: int = 60,
    seeds: int = 3,
    out: Path | None = None,
    config: SimulatorConfig | None = None,
    preset: str = "small",
    data_seed: int = 0,
) -> QueryRewardReport:
    """Simulate every policy for `seeds` seeds and write `out` (JSON) and its PNG beside it.

    `rounds` overrides config.rounds; the retrieval artifacts are looked up under `home`.
    """
    if seeds < 1:
        raise ConfigError(f"seeds: must be >= 1, got {seeds}")
    began = time.perf_counter()
    config = (config or SimulatorConfig()).model_copy(update={"rounds": rounds})
    config = SimulatorConfig.model_validate(config.model_dump())
    out = out or home.reports / "query_reward.json"
    world = simulation_world(preset, data_seed)
    traces: dict[str, list[RunTrace]] = {policy: [] for policy in POLICIES}
    sources = []
    for seed in range(seeds):
        users = build_sim_users(
            world, config.users, config.clusters_per_user, np.random.default_rng([seed, 7])
        )
        pools = candidate_pools(home, world, users, config.pool_size)
        sources.append((pools.source, pools.note))
        for policy in POLICIES:
            traces[policy].append(run_policy(policy, seed, world, users, pools.pins, config))
    png = out.with_suffix(".png")
    plot_shares(
        {p: np.stack([t.role_shares for t in runs]) for p, runs in traces.items()},
        {p: np.stack([t.role_rewards for t in runs]) for p, runs in traces.items()},
        {p: np.stack([t.engagements / t.impressions for t in runs]) for p, runs in traces.items()},
        config.shift_round,
        png,
    )
    report = {
        "policies": {
            p: _policy_summary(runs, traces["count"], config) for p, runs in traces.items()
        },
        "realtime_vs_offline": _realtime_vs_offline(
            traces["reward_realtime"], traces["reward_offline"], config
        ),
        "cadence": cadence(config),
        "retrieval": {"source": sources[0][0], "note": sources[0][1]},
        "seeds": list(range(seeds)),
        "shift_round": config.shift_round,
        "world": {"preset": preset, "data_seed": data_seed},
        "config": config.model_dump(),
        "plot": str(png),
        "interval": "Student-t 95% over seeds; lift_vs_count is paired within seed",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return QueryRewardReport(report, out, png, time.perf_counter() - began)


def _interval(value: dict[str, Any], signed: bool = False) -> str:
    """`mean [lo, hi]` of a t_interval, 4 decimals."""
    fmt = "+.4f" if signed else ".4f"
    low, high = value["ci95"]
    return f"{value['mean']:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _rounds(value: dict[str, Any], signed: bool = False) -> str:
    """`mean [lo, hi]` of a t_interval of rounds, 1 decimal."""
    fmt = "+.1f" if signed else ".1f"
    low, high = value["ci95"]
    return f"{value['mean']:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def format_comparison(report: dict[str, Any]) -> str:
    """The cadence; one line per policy: engagement rate, after the shift, lift over count
    (each [ci]), recovery rounds; then realtime - offline, paired."""
    timing = report["cadence"]
    lines = [
        f"cadence: {timing['requests_per_user_per_day']} requests per user per day; offline "
        f"{timing['reward_offline']}; realtime {timing['reward_realtime']}"
    ]
    for name, summary in report["policies"].items():
        lines.append(
            f"{name}: engagement {_interval(summary['engagement_rate'])}, after the shift "
            f"{_interval(summary['post_shift_engagement_rate'])}, lift vs count "
            f"{_interval(summary['lift_vs_count'], signed=True)}, "
            f"recovery {_rounds(summary['recovery_rounds_interval'])} rounds"
        )
    paired = report["realtime_vs_offline"]
    lines.append(
        "realtime - offline (paired): after the shift "
        f"{_interval(paired['post_shift_engagement_rate'], signed=True)}, recovery "
        f"{_rounds(paired['recovery_rounds'], signed=True)} rounds"
    )
    return "\n".join(lines)
