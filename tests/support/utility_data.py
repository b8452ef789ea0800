"""A synthetic validation slice for the utility-weight search: calibrated probabilities and
labels of four heads, with room to improve on the hand-picked weights."""

from __future__ import annotations

import numpy as np

from evaluation.utility_space import ValidationSlice


def synthetic_slice(n: int = 3_000, seed: int = 0) -> ValidationSlice:
    """Heads that share one signal and each carry their own; long_click is best ranked by a
    mix that leans on its own head, so the hand-picked weights leave room to improve."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=n)
    own = rng.normal(size=(n, 4))
    logits = np.array([-2.5, -4.0, -3.0, -4.5]) + 1.2 * shared[:, None] + 1.0 * own
    p = 1.0 / (1.0 + np.exp(-logits))
    labels = (rng.random((n, 4)) < p).astype(np.float32)
    noisy = 1.0 / (1.0 + np.exp(-(logits + 0.5 * rng.normal(size=(n, 4)))))
    return ValidationSlice(labels, noisy)
