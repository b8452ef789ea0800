"""Ax against random search at the same trial budget, over seeds: on a slice whose best
feasible weights lie far from the hand-picked ones, Bayesian optimisation ends nearer the
optimum (found by a grid over the simplex) than random search does. Both methods see the same
space, constraints, hand-picked first arm and number of trials."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from evaluation.utility_ax import ax_search
from evaluation.utility_space import (
    ConstraintFactors,
    UtilitySearchConfig,
    WeightRanges,
    evaluate,
    random_search,
    thresholds,
)
from tests.support.utility_data import synthetic_slice

pytestmark = pytest.mark.slow  # three Ax searches of 12 trials: about half a minute
RANGES = WeightRanges(closeup=(0.0, 0.4), save=(0.05, 0.5), click=(0.1, 0.6), long_click=(0.1, 0.8))
LOOSE = ConstraintFactors(closeup=0.6, save=0.6, click=0.6)
SEEDS = (0, 1, 2)


def grid_optimum(config: UtilitySearchConfig, limits: dict[str, float]) -> float:
    """Best feasible objective over weights on a 0.05 grid of the simplex inside the ranges."""
    data = synthetic_slice()
    lows, highs = config.ranges.bounds()
    best = float("-inf")
    steps = np.linspace(0.0, 1.0, 21)
    for closeup, save, click in itertools.product(steps, steps, steps):
        weights = np.array([closeup, save, click, 1.0 - closeup - save - click])
        if np.all(weights >= lows - 1e-9) and np.all(weights <= highs + 1e-9):
            trial = evaluate(data, 0, weights, limits)
            best = max(best, trial.objective) if trial.feasible else best
    return best


def test_ax_ends_nearer_the_optimum_than_random_search_at_equal_budget() -> None:
    data = synthetic_slice()
    base = UtilitySearchConfig(
        trials=12,
        initialization_trials=5,
        ranges=RANGES,
        constraint_factors=LOOSE,
        bias_check_derived=(),
    )
    limits = thresholds(data, base)
    optimum = grid_optimum(base, limits)
    hand = evaluate(data, 0, base.hand_picked.vector(), limits).objective
    assert optimum > hand + 0.02, "the slice must leave room above the hand-picked weights"
    ax_regret, random_regret = [], []
    for seed in SEEDS:
        config = base.model_copy(update={"seed": seed})
        ax_regret.append(optimum - ax_search(data, config, limits).best().objective)
        random_regret.append(optimum - random_search(data, config, limits).best().objective)
    assert np.mean(ax_regret) < 0.5 * np.mean(random_regret), (ax_regret, random_regret)
    assert np.mean(ax_regret) < 0.01, ax_regret
