"""The utility-weight search problem, shared by every searcher (Ax in `evaluation.utility_ax`,
random search here) and the report (`evaluation.utility_search`): the search space and its
constraints, the validation slice an arm is scored on, and what a trial records.

An arm's score: PR-AUC (`average_precision_score`) of every head under the ranking
u = sum_t w_t p_t on the validation slice; feasible when click, save and closeup keep at least
c_t x the hand-picked weights' PR-AUC (absolute thresholds, computed once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator
from sklearn.metrics import average_precision_score

from pinfeed.config import FrozenModel
from pinfeed.errors import ConfigError, SchemaError
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import HeadWeights, default_utility_weights

Head = Literal["closeup", "save", "click", "long_click"]
OBJECTIVE_HEAD = "long_click"
CONSTRAINED_HEADS = ("closeup", "save", "click")
_TOLERANCE = 1e-12


class WeightRanges(FrozenModel):
    """S2: [low, high] per head; the sum-to-1 simplex must meet the box."""

    closeup: tuple[float, float] = (0.0, 0.5)
    save: tuple[float, float] = (0.0, 0.5)
    click: tuple[float, float] = (0.0, 0.6)
    long_click: tuple[float, float] = (0.1, 0.9)

    @model_validator(mode="after")
    def _reachable(self) -> WeightRanges:
        for head in ENGAGEMENTS:
            low, high = getattr(self, head)
            if not 0.0 <= low <= high <= 1.0:
                raise ValueError(f"{head}: need 0 <= low <= high <= 1, got ({low}, {high})")
        lows, highs = self.bounds()
        if not lows.sum() <= 1.0 <= highs.sum():
            raise ValueError("ranges: no weights in them sum to 1 (sum of lows > 1 or highs < 1)")
        return self

    def bounds(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """([H] lows, [H] highs) in ENGAGEMENTS order."""
        pairs = np.array([getattr(self, head) for head in ENGAGEMENTS], dtype=np.float64)
        return pairs[:, 0], pairs[:, 1]


class ConstraintFactors(FrozenModel):
    """c_t of S3-S5: how much of the hand-picked weights' PR-AUC a head must keep."""

    closeup: float = Field(1.0, ge=0.0)
    save: float = Field(0.9, ge=0.0)
    click: float = Field(1.0, ge=0.0)


class AcquisitionOptions(FrozenModel):
    """How hard BoTorch optimises the acquisition function per trial."""

    num_restarts: int = Field(4, ge=1)
    raw_samples: int = Field(256, ge=1)
    maxiter: int = Field(60, ge=1, description="SLSQP iterations per restart.")


class UtilitySearchConfig(FrozenModel):
    """The `utility:` section of configs/ranking.yaml."""

    trials: int = Field(30, ge=2, description="Budget per method, the hand-picked arm included.")
    initialization_trials: int = Field(8, ge=1, description="Sobol trials before the GP.")
    seed: int = 0
    ranges: WeightRanges = WeightRanges()
    constraint_factors: ConstraintFactors = ConstraintFactors()
    derived: Head = Field("long_click", description="The weight set to 1 - the others.")
    bias_check_derived: tuple[Head, ...] = Field(
        ("closeup",), description="Rerun Ax with each of these derived instead (bias check)."
    )
    hand_picked: HeadWeights = default_utility_weights().weights
    acquisition: AcquisitionOptions = AcquisitionOptions()

    @model_validator(mode="after")
    def _hand_picked_is_admissible(self) -> UtilitySearchConfig:
        vector = self.hand_picked.vector()
        lows, highs = self.ranges.bounds()
        if abs(vector.sum() - 1.0) > 1e-9 or np.any(vector < lows) or np.any(vector > highs):
            raise ValueError("hand_picked: must sum to 1 and lie inside ranges")
        return self


@dataclass(frozen=True)
class ValidationSlice:
    """labels [N, H] in {0, 1} and calibrated probabilities p [N, H], ENGAGEMENTS order."""

    labels: NDArray[np.float32]
    p_calibrated: NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.labels.shape != self.p_calibrated.shape or self.labels.shape[1:] != (4,):
            raise SchemaError(
                f"labels {self.labels.shape} and p_calibrated {self.p_calibrated.shape} "
                "must both be [N, 4]"
            )

    def pr_aucs(self, weights: NDArray[np.float64]) -> dict[str, float]:
        """PR-AUC of every head under the ranking u = p @ weights."""
        score = self.p_calibrated @ weights
        return {
            head: float(average_precision_score(self.labels[:, t], score))
            for t, head in enumerate(ENGAGEMENTS)
        }


@dataclass(frozen=True)
class Trial:
    index: int
    weights: dict[str, float]
    pr_auc: dict[str, float]
    feasible: bool

    @property
    def objective(self) -> float:
        return self.pr_auc[OBJECTIVE_HEAD]


@dataclass(frozen=True)
class SearchResult:
    method: str
    trials: list[Trial]

    def best(self) -> Trial:
        """The feasible trial with the highest objective (trial 0, the hand-picked arm, is
        feasible by construction)."""
        feasible = [t for t in self.trials if t.feasible]
        return max(feasible, key=lambda t: (t.objective, -t.index))

    def trace(self) -> list[float]:
        """Best feasible objective after each trial (NaN until one is feasible)."""
        best, out = float("nan"), []
        for trial in self.trials:
            if trial.feasible and not trial.objective <= best:
                best = trial.objective
            out.append(best)
        return out


def thresholds(data: ValidationSlice, config: UtilitySearchConfig) -> dict[str, float]:
    """Absolute constraint thresholds c_t * f_t(hand-picked weights)."""
    hand = data.pr_aucs(config.hand_picked.vector())
    return {
        head: getattr(config.constraint_factors, head) * hand[head] for head in CONSTRAINED_HEADS
    }


def evaluate(
    data: ValidationSlice, index: int, weights: NDArray[np.float64], limits: dict[str, float]
) -> Trial:
    """One arm: its per-head PR-AUCs and whether it meets every constraint."""
    pr_auc = data.pr_aucs(weights)
    feasible = all(pr_auc[head] >= limit - _TOLERANCE for head, limit in limits.items())
    return Trial(index, dict(zip(ENGAGEMENTS, weights.tolist(), strict=True)), pr_auc, feasible)


def sample_weights(
    config: UtilitySearchConfig, rng: np.random.Generator, derived: str | None = None
) -> NDArray[np.float64]:
    """One point of the search space as the Sobol phase sees it: free weights uniform in their
    ranges, the derived one 1 - their sum, redrawn until it lies in its range."""
    derived = derived or config.derived
    position = ENGAGEMENTS.index(derived)
    lows, highs = config.ranges.bounds()
    for _ in range(10_000):
        weights = rng.uniform(lows, highs)
        weights[position] = 1.0 - (weights.sum() - weights[position])
        if lows[position] <= weights[position] <= highs[position]:
            return weights
    raise ConfigError(
        f"utility.ranges: fewer than 1 in 10,000 draws reach a valid {derived} weight; "
        "widen the ranges"
    )


def random_search(
    data: ValidationSlice, config: UtilitySearchConfig, limits: dict[str, float]
) -> SearchResult:
    """Same budget and space as `ax_search`: the hand-picked arm, then uniform draws."""
    rng = np.random.default_rng(config.seed)
    trials = [evaluate(data, 0, config.hand_picked.vector(), limits)]
    while len(trials) < config.trials:
        trials.append(evaluate(data, len(trials), sample_weights(config, rng), limits))
    return SearchResult("random search", trials)
