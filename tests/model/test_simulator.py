"""The closed-loop simulator on a tiny configuration: it runs every policy, writes the report
shape and the plot, is deterministic per seed, and runs the offline reward job at a batch
job's cadence while the realtime policy applies every round's feedback at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from evaluation.query_reward import evaluate_query_reward, simulation_world
from evaluation.sim_retrieval import content_pools
from evaluation.sim_world import FADING, build_sim_users
from evaluation.simulator import SimulatorConfig, run_policy
from pinfeed.home import ProjectHome

TINY = SimulatorConfig(users=30, rounds=16, history_days=1, rounds_per_day=4, pool_size=20)
DAILY = SimulatorConfig(users=30, rounds=16, history_days=1, rounds_per_day=8, pool_size=20)
"""8 requests a day, offline job at midnight landing 6 h (2 rounds) later; evaluation starts
at round 8, the shift at evaluated round 5 (round 13), jobs land at rounds 10 and 18."""


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
        recovery = summary["recovery_rounds_interval"]
        assert recovery["mean"] == summary["recovery_rounds"]
        assert recovery["ci95"][0] <= recovery["mean"] <= recovery["ci95"][1]
    assert report["retrieval"]["source"] == "content_fallback"
    assert report["config"]["offline_every_days"] == 1
    assert report["config"]["offline_delay_hours"] == 6.0
    assert report["cadence"]["requests_per_user_per_day"] == 4
    assert report["cadence"]["offline_landing_rounds_after_midnight"] == 1
    paired = report["realtime_vs_offline"]["post_shift_engagement_rate"]
    assert paired["ci95"][0] <= paired["mean"] <= paired["ci95"][1]
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


def test_the_offline_job_lands_after_its_midnight_cut_off() -> None:
    landings = {
        (4, 1, 6.0): [5, 9, 13],  # 6 h = 1 round of 6 h after midnight
        (4, 1, 7.0): [6, 10, 14],  # rows are first served at the next request after landing
        (4, 1, 0.0): [4, 8, 12],
        (4, 2, 30.0): [13],  # every other midnight (8, 16), 30 h = 5 rounds later
        (8, 1, 6.0): [10],
    }
    for (per_day, every, delay), expected in landings.items():
        config = SimulatorConfig(
            rounds_per_day=per_day, offline_every_days=every, offline_delay_hours=delay
        )
        assert [t for t in range(1, 16) if config.offline_cutoff(t) is not None] == expected
    assert SimulatorConfig(rounds_per_day=4).offline_cutoff(5) == 4


def test_a_job_must_land_before_the_next_one_runs() -> None:
    with pytest.raises(ValidationError, match="offline_delay_hours"):
        SimulatorConfig(offline_every_days=1, offline_delay_hours=24.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_realtime_moves_within_the_day_while_offline_waits_for_its_job(seed: int) -> None:
    """Within a day the offline policy serves the last landed job's rows unchanged; the realtime
    policy's rewards change every round, so after the shift its fading cluster's reward falls
    before the next job lands, while offline's has not moved."""
    world = simulation_world("small", 0)
    users = build_sim_users(world, DAILY.users, 5, np.random.default_rng(seed))
    pools = content_pools(world, users, DAILY.pool_size)
    offline = run_policy("reward_offline", seed, world, users, pools, DAILY)
    realtime = run_policy("reward_realtime", seed, world, users, pools, DAILY)
    landed = [DAILY.offline_cutoff(r + DAILY.history_rounds) is not None for r in range(16)]
    assert [r for r, yes in enumerate(landed) if yes] == [2, 10]
    for r in range(1, DAILY.rounds):
        offline_moved = not np.array_equal(offline.role_rewards[r], offline.role_rewards[r - 1])
        realtime_moved = not np.array_equal(realtime.role_rewards[r], realtime.role_rewards[r - 1])
        assert offline_moved == landed[r], r
        assert realtime_moved, r
    shift, before_next_job = DAILY.shift_round, 9
    offline_fading = offline.role_rewards[shift : before_next_job + 1, FADING]
    realtime_fading = realtime.role_rewards[shift : before_next_job + 1, FADING]
    assert np.all(offline_fading == offline_fading[0])
    assert realtime_fading[-1] < realtime_fading[0] - 0.01
    assert realtime_fading[-1] < offline_fading[-1] - 0.01
