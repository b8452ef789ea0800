"""The Scorer stage: calibrated per-head probabilities and the utility that orders the feed.

p = sigmoid(logit + log w_t) undoes the ranker's negative downsampling with the per-head
effective rates of the run's manifest (`pinfeed.calibration.calibrate_logits`); utility =
sum_t weight_t p_t with the weights the replica serves (`pinfeed.utility`). A weight change is
a new Scorer (`with_weights`), swapped in whole by `serving.stages.active`.

Shapes: M candidates, H = 4 heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pinfeed.calibration import calibrate_logits
from pinfeed.utility import UtilityWeights, utility


@dataclass(frozen=True)
class Scores:
    """`probabilities` [M, H] calibrated, `utility` [M], and the weights' version."""

    probabilities: NDArray[np.float64]
    utility: NDArray[np.float64]
    weights_version: str


@dataclass(frozen=True)
class Scorer:
    """One run's calibration rates [H] and one set of utility weights."""

    rates: NDArray[np.float64]
    weights: UtilityWeights

    @classmethod
    def of(cls, sample_rates: ArrayLike, weights: UtilityWeights) -> Scorer:
        return cls(np.asarray(sample_rates, dtype=np.float64), weights)

    def with_weights(self, weights: UtilityWeights) -> Scorer:
        return Scorer(self.rates, weights)

    def score(self, logits: NDArray[np.floating]) -> Scores:
        """logits [M, H] -> calibrated probabilities, utilities, weights version."""
        probabilities = calibrate_logits(logits, self.rates)
        return Scores(probabilities, utility(probabilities, self.weights), self.weights.version)
