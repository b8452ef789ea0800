"""The utility-weight search on a small synthetic validation slice: every arm respects S1 and
S2 whichever weight is derived, the constraint bookkeeping matches hand computation, and at
equal budget the optimiser's best is feasible and at least the hand-picked weights' value."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import average_precision_score

from evaluation.utility_search import search_report
from evaluation.utility_space import (
    AcquisitionOptions,
    ConstraintFactors,
    SearchResult,
    Trial,
    UtilitySearchConfig,
    ValidationSlice,
    WeightRanges,
    evaluate,
    random_search,
    sample_weights,
    thresholds,
)
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import HeadWeights
from tests.support.utility_data import click_trade_off_slice, synthetic_slice

RANGES = WeightRanges(closeup=(0.0, 0.4), save=(0.05, 0.5), click=(0.1, 0.6), long_click=(0.1, 0.8))
FAST = UtilitySearchConfig(
    trials=6, initialization_trials=3, seed=1, ranges=RANGES, bias_check_derived=("closeup",)
)


@pytest.fixture(scope="module")
def data() -> ValidationSlice:
    return synthetic_slice()


def _in_space(weights: dict[str, float], ranges: WeightRanges) -> bool:
    vector = np.array([weights[h] for h in ENGAGEMENTS])
    lows, highs = ranges.bounds()
    return (
        abs(vector.sum() - 1.0) < 1e-6
        and bool(np.all(vector >= lows - 1e-6))
        and bool(np.all(vector <= highs + 1e-6))
    )


@pytest.mark.parametrize("derived", ENGAGEMENTS)
def test_sampled_weights_sum_to_one_inside_the_ranges(derived: str) -> None:
    rng = np.random.default_rng(0)
    config = FAST.model_copy(update={"derived": derived})
    draws = np.array([sample_weights(config, rng) for _ in range(300)])
    for row in draws:
        assert _in_space(dict(zip(ENGAGEMENTS, row, strict=True)), RANGES)
    lows, highs = RANGES.bounds()
    assert np.all(draws.max(axis=0) - draws.min(axis=0) > 0.2 * (highs - lows))


def test_thresholds_and_feasibility_match_hand_computation(data: ValidationSlice) -> None:
    config = FAST.model_copy(
        update={"constraint_factors": ConstraintFactors(closeup=1.0, save=0.5, click=0.8)}
    )
    hand = config.hand_picked.vector()
    utility = data.p_calibrated @ hand
    expected = {
        head: factor * average_precision_score(data.labels[:, ENGAGEMENTS.index(head)], utility)
        for head, factor in (("closeup", 1.0), ("save", 0.5), ("click", 0.8))
    }
    limits = thresholds(data, config)
    assert limits == pytest.approx(expected, rel=1e-12)
    assert evaluate(data, 0, hand, limits).feasible  # the baseline meets c_t <= 1
    only_long_click = np.array([0.0, 0.0, 0.0, 1.0])
    trial = evaluate(data, 1, only_long_click, limits)
    violated = {h for h, limit in limits.items() if trial.pr_auc[h] < limit}
    assert trial.feasible == (not violated)
    assert evaluate(data, 2, hand, {"save": 1.1}).feasible is False  # PR-AUC <= 1 < 1.1


def test_best_and_trace_keep_to_feasible_trials() -> None:
    def trial(index: int, objective: float, feasible: bool) -> Trial:
        return Trial(index, {}, {"long_click": objective}, feasible)

    result = SearchResult("t", [trial(0, 0.2, True), trial(1, 0.9, False), trial(2, 0.3, True)])
    assert result.best().index == 2
    assert result.trace() == [0.2, 0.2, 0.3]


def test_every_search_keeps_to_s1_s2_at_equal_budget(data: ValidationSlice) -> None:
    """Every arm Ax or random search proposes, whichever weight is derived, sums to 1 inside
    the ranges, and each method spends exactly the budget."""
    report, results = search_report(data, FAST)
    assert report["hand_picked"]["weights"] == pytest.approx(FAST.hand_picked.model_dump())
    for result in results.values():
        assert len(result.trials) == FAST.trials  # equal budget, the hand-picked arm included
        for trial in result.trials:
            assert _in_space(trial.weights, RANGES), (result.method, trial)
    assert set(report["derived_weight_check"]) == {"long_click", "closeup"}
    assert len(report["traces"]) == 3


def test_random_search_is_reproducible(data: ValidationSlice) -> None:
    limits = thresholds(data, FAST)
    first, second = (random_search(data, FAST, limits) for _ in range(2))
    assert [t.weights for t in first.trials] == [t.weights for t in second.trials]


def test_configs_refuse_impossible_spaces() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        WeightRanges(closeup=(0.5, 1.0), save=(0.5, 1.0), click=(0.1, 1.0), long_click=(0.0, 1))
    with pytest.raises(ValidationError, match="hand_picked"):
        UtilitySearchConfig(
            hand_picked=HeadWeights(closeup=0.7, save=0.1, click=0.1, long_click=0.1)
        )


def _trade_off_config(click_factor: float) -> UtilitySearchConfig:
    """FAST's budget (6 trials), one Ax run, a lighter acquisition: the outcome is under test,
    not how hard BoTorch searches."""
    return FAST.model_copy(
        update={
            "bias_check_derived": (),
            "constraint_factors": ConstraintFactors(closeup=1.0, save=0.9, click=click_factor),
            "acquisition": AcquisitionOptions(num_restarts=2, raw_samples=64, maxiter=30),
        }
    )


def test_search_finds_a_better_feasible_weighting_where_one_exists() -> None:
    """At c_click = 0.5 any arm with less click weight than the hand-picked 0.3 that reorders
    the pins is feasible and better (`click_trade_off_slice`): both searches must report the
    improvement, and the best arm, rescored here, keeps half the hand-picked click PR-AUC."""
    data = click_trade_off_slice()
    report, _ = search_report(data, _trade_off_config(click_factor=0.5))
    hand = report["hand_picked"]
    for method in ("best", "random_search"):
        best = report[method]
        assert best["improved_over_hand_picked"] is True, method
        assert best["long_click_pr_auc"] > hand["long_click_pr_auc"] + 0.01, method
        weights = np.array([best["weights"][h] for h in ENGAGEMENTS])
        click_pr_auc = average_precision_score(data.labels[:, 2], data.p_calibrated @ weights)
        assert click_pr_auc >= 0.5 * hand["pr_auc"]["click"], method


def test_search_reports_no_improvement_where_every_better_arm_breaks_a_constraint() -> None:
    """At c_click = 1 any arm that lifts long-click PR-AUC lowers click PR-AUC
    (`click_trade_off_slice`): the searches do propose such arms, and must reject them, keep
    the hand-picked arm as best and report that they did not improve on it."""
    data = click_trade_off_slice()
    report, results = search_report(data, _trade_off_config(click_factor=1.0))
    hand = report["hand_picked"]
    for method in ("best", "random_search"):
        best = report[method]
        assert best["improved_over_hand_picked"] is False, method
        assert best["long_click_pr_auc"] == hand["long_click_pr_auc"], method
        assert best["weights"] == pytest.approx(hand["weights"]), method
    rejected = [
        trial
        for result in results.values()
        for trial in result.trials
        if trial.objective > hand["long_click_pr_auc"]
    ]
    assert rejected and not any(trial.feasible for trial in rejected)
