"""Statistics and the plot of the query-reward simulation report.

- Intervals: a Student-t 95% interval over seeds (with 3 seeds, t = 4.30: wide, honest), for
  each policy's engagement rate and for its paired lift over `count` (every policy sees the
  same users and random draws within a seed, so the paired difference is much tighter).
- Recovery: rounds after the shift until the engagement rate over the next `window` rounds
  first reaches `target` x the policy's own pre-shift rate; a run that never gets there counts
  the remaining rounds and is flagged `recovered: false`. The window is a fixed number of
  rounds (not a day), so the measure does not change with the simulated cadence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from evaluation.sim_world import ROLE_NAMES


def t_interval(values: np.ndarray) -> dict[str, object]:
    """{"mean": x, "ci95": [lo, hi]} over the samples in `values` [S]."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "ci95": [mean, mean]}
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def recovery_rounds(
    impressions: np.ndarray, engagements: np.ndarray, shift: int, window: int, target: float
) -> tuple[int, bool]:
    """(rounds, recovered) for per-round totals [R] of one run; `shift` is the first shifted
    round."""
    pre = engagements[:shift].sum() / max(impressions[:shift].sum(), 1)
    for r in range(len(impressions) - shift - window + 1):
        span = slice(shift + r, shift + r + window)
        if engagements[span].sum() / max(impressions[span].sum(), 1) >= target * pre:
            return r, True
    return len(impressions) - shift, False


def plot_shares(
    shares: dict[str, np.ndarray],
    rewards: dict[str, np.ndarray],
    rates: dict[str, np.ndarray],
    shift: int,
    out: Path,
) -> Path:
    """PNG: per policy, the share of impressions from each cluster role per round and the mean
    reward the selection saw per role (mean over seeds, both [S, R, roles]; the reward shows
    when each policy's rows change), and the engagement rate per round (rates [S, R])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(shares)
    fig, axes = plt.subplots(3, len(policies), figsize=(4.5 * len(policies), 9.5), sharey="row")
    axes = np.asarray(axes).reshape(3, len(policies))
    for j, policy in enumerate(policies):
        top, middle, bottom = axes[:, j]
        mean_share, mean_reward = shares[policy].mean(axis=0), rewards[policy].mean(axis=0)
        for role, name in enumerate(ROLE_NAMES):
            top.plot(mean_share[:, role], label=f"{name} cluster(s)")
            middle.plot(mean_reward[:, role], label=f"{name} cluster(s)")
        bottom.plot(rates[policy].mean(axis=0), color="black")
        for ax in (top, middle, bottom):
            ax.axvline(shift, color="grey", linestyle="--", linewidth=1)
        top.set_title(policy)
        bottom.set_xlabel("round")
    axes[0, 0].set_ylabel("share of impressions")
    axes[1, 0].set_ylabel("reward seen by selection")
    axes[2, 0].set_ylabel("engagement rate")
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle("query reward simulation (dashed: interest shift)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
