"""The Scorer stage: calibrated per-head probabilities and the utility that orders the feed.

p = sigmoid(logit + log w_t) undoes the ranker's negative downsampling with the per-head
effective rates of the manifest (`pinfeed.calibration.calibrate_logits`); utility =
sum_t weight_t p_t with the active weights (`pinfeed.utility`), re-read whenever
`<state_dir>/utility.json` changes, so `/admin/reload` reorders the next request.

Shapes: M candidates, H = 4 heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinfeed.calibration import calibrate_logits
from pinfeed.utility import UtilityWeights, utility
from serving.state import FileWatch, ServingState


@dataclass(frozen=True)
class Scores:
    """`probabilities` [M, H] calibrated, `utility` [M], and the weights' version."""

    probabilities: np.ndarray
    utility: np.ndarray
    weights_version: str


class Scorer:
    """Calibration rates of one run plus the reloadable utility weights."""

    def __init__(self, sample_rates: list[float], state: ServingState) -> None:
        self.rates = np.asarray(sample_rates, dtype=np.float64)
        self.state = state
        self.watch = FileWatch(state.utility_path)
        self.weights: UtilityWeights = state.weights()
        self.watch.changed()

    def current_weights(self) -> UtilityWeights:
        if self.watch.changed():
            self.weights = self.state.weights()
        return self.weights

    def score(self, logits: np.ndarray) -> Scores:
        weights = self.current_weights()
        probabilities = calibrate_logits(logits, self.rates)
        return Scores(probabilities, utility(probabilities, weights), weights.version)
