"""`pinfeed evaluate query-reward`: run the closed-loop simulator (`evaluation.simulator`) for
every policy and seed and write the report.

Report (`--out`, JSON) shape:

    {"policies": {NAME: {"engagement_rate": {"mean": x, "ci95": [lo, hi]},
                         "recovery_rounds": n, ...}}, "retrieval": ..., "config": ...}

plus per policy the post-shift engagement rate, the paired lift over `count`, the recovery of
each seed, and, beside the JSON, a PNG of each policy's impression share per cluster role and
engagement rate over the rounds.
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


def _policy_summary(
    traces: list[RunTrace], baseline: list[RunTrace], config: SimulatorConfig
) -> dict[str, Any]:
    shift = config.shift_round
    rates = np.array([t.engagements.sum() / t.impressions.sum() for t in traces])
    base = np.array([t.engagements.sum() / t.impressions.sum() for t in baseline])
    post = np.array([t.engagements[shift:].sum() / t.impressions[shift:].sum() for t in traces])
    recovery = [
        recovery_rounds(
            t.impressions, t.engagements, shift, config.rounds_per_day, config.recovery_target
        )
        for t in traces
    ]
    return {
        "engagement_rate": t_interval(rates),
        "post_shift_engagement_rate": t_interval(post),
        "lift_vs_count": t_interval(rates - base),
        "recovery_rounds": float(np.mean([r for r, _ in recovery])),
        "recovery_rounds_per_seed": [r for r, _ in recovery],
        "recovered_per_seed": [ok for _, ok in recovery],
        "engagement_rate_per_seed": rates.tolist(),
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
        {p: np.stack([t.engagements / t.impressions for t in runs]) for p, runs in traces.items()},
        config.shift_round,
        png,
    )
    report = {
        "policies": {
            p: _policy_summary(runs, traces["count"], config) for p, runs in traces.items()
        },
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


def format_comparison(report: dict[str, Any]) -> str:
    """One line per policy: engagement rate [ci], lift over count [ci], recovery rounds."""
    lines = []
    for name, summary in report["policies"].items():
        rate, lift = summary["engagement_rate"], summary["lift_vs_count"]
        lines.append(
            f"{name}: engagement {rate['mean']:.4f} [{rate['ci95'][0]:.4f}, "
            f"{rate['ci95'][1]:.4f}], lift vs count {lift['mean']:+.4f} "
            f"[{lift['ci95'][0]:+.4f}, {lift['ci95'][1]:+.4f}], "
            f"recovery {summary['recovery_rounds']:.1f} rounds"
        )
    return "\n".join(lines)
