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


def click_trade_off_slice(n_each: int = 40, negatives: int = 200, seed: int = 0) -> ValidationSlice:
    """Two kinds of pins and nothing else engaged: "deep" pins get closeups, saves and long
    clicks (probability x_i on those three heads), "clicky" pins get clicks (y_j on click).
    Under u = w p a deep pin scores (1 - w_click) x_i and a clicky one w_click y_j, so the
    click weight alone orders them: below the hand-picked 0.3, long-click PR-AUC rises (0.69
    -> 0.96 at 0.1) and click PR-AUC falls (0.41 -> 0.32); above it, the reverse. With
    c_click = 1 every arm that reorders the pins breaks a constraint (click below 0.3, closeup
    above), so nothing beats the hand-picked weights; with c_click = 0.5 any lower click
    weight that reorders them is feasible and better."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((2 * n_each + negatives, 4), dtype=np.float32)
    p = np.zeros(labels.shape)
    deep, clicky = slice(0, n_each), slice(n_each, 2 * n_each)
    closeup_save_long_click = [0, 1, 3]
    labels[deep, closeup_save_long_click] = 1.0
    p[deep, closeup_save_long_click] = rng.uniform(0.05, 0.45, (n_each, 1))
    labels[clicky, 2] = 1.0
    p[clicky, 2] = rng.uniform(0.1, 0.9, n_each)
    return ValidationSlice(labels, p)
