"""The closed-loop simulator on a tiny configuration: it runs every policy, writes the report
shape and the plot, and is deterministic per seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.query_reward import evaluate_query_reward, simulation_world
from evaluation.sim_retrieval import content_pools
from evaluation.sim_world import FADING, build_sim_users
from evaluation.simulator import SimulatorConfig, run_policy
from pinfeed.home import ProjectHome

TINY = SimulatorConfig(users=30, rounds=16, history_rounds=4, rounds_per_day=4, pool_size=20)


def test_report_has_the_promised_shape(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "query_reward.json"
    result = evaluate_query_reward(ProjectHome(tmp_path), rounds=16, seeds=2, out=out, config=TINY)
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"count", "reward_offline", "reward_realtime"}
    for summary in report["policies"].values():
        rate = summary["engagement_rate"]
        assert 0 < rate["mean"] < 1
        assert rate["ci95"][0] <= rate["mean"] <= rate["ci95"][1]
        assert 0 <= summary["recovery_rounds"] <= 16
    assert report["retrieval"]["source"] == "content_fallback"
    assert result.png_path.stat().st_size > 0


def test_a_run_is_deterministic_and_reward_leaves_the_fading_cluster() -> None:
    world = simulation_world("small", 0)
    users = build_sim_users(world, 30, 5, np.random.default_rng(1))
    pools = content_pools(world, users, 20)
    first = run_policy("reward_realtime", 1, world, users, pools, TINY)
    again = run_policy("reward_realtime", 1, world, users, pools, TINY)
    np.testing.assert_array_equal(first.engagements, again.engagements)
    np.testing.assert_allclose(first.role_shares.sum(axis=1), 1.0)
    count = run_policy("count", 1, world, users, pools, TINY)
    after = slice(TINY.shift_round, None)
    fading_count = count.role_shares[after, FADING].mean()
    fading_reward = first.role_shares[after, FADING].mean()
    assert fading_reward < fading_count - 0.05
