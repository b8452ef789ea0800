"""A tiny learnable ranking data set: labels depend on a few dense features, the topic and the
pin x query-pin cosine similarity, so a working ranker must pick all three up."""

from __future__ import annotations

import numpy as np

from pinfeed.artifacts.ranker import RankerInputs
from training.ranking.features import DENSE_FEATURES

EMBEDDING_DIM = 8
NUM_TOPICS = 5


def synthetic_arrays(n: int, rng: np.random.Generator) -> RankerInputs:
    """Raw inputs for n rows: gamma-distributed counts, a few NaNs, unknown topics (-1, 7)."""
    dense = rng.gamma(1.0, 5.0, size=(n, len(DENSE_FEATURES))).astype(np.float32)
    dense[rng.uniform(size=dense.shape) < 0.01] = np.nan
    return RankerInputs(
        dense=dense,
        topic=rng.integers(-1, NUM_TOPICS + 2, size=n),
        pin_embedding=rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32),
        query_embedding=rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32),
    )


def true_logits(arrays: RankerInputs) -> np.ndarray:
    """[n, 4] the logistic model's logits: the best any ranker can do on these rows."""
    dense = np.nan_to_num(np.log1p(arrays.dense))
    pin, query = arrays.pin_embedding, arrays.query_embedding
    cosine = (pin * query).sum(1) / (np.linalg.norm(pin, axis=1) * np.linalg.norm(query, axis=1))
    shared = 2.0 * cosine + (dense[:, 0] - np.log1p(5.0)) + 0.8 * (arrays.topic == 2)
    offsets = np.array([-0.5, -1.5, -1.0, -2.0])
    scales = np.array([1.0, 1.5, 0.8, 1.2])
    return offsets + scales * shared[:, None]


def synthetic_labels(arrays: RankerInputs, rng: np.random.Generator) -> np.ndarray:
    """[n, 4] labels drawn from `true_logits`, the heads sharing one signal."""
    logits = true_logits(arrays)
    return (rng.uniform(size=logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def distinct_head_logits(arrays: RankerInputs) -> np.ndarray:
    """[n, 4] logits where the heads share `true_logits`' signal in different amounts and each
    adds one dense feature of its own (features 1-4); long_click rides mostly on its own, which
    one "any engagement" score cannot rank by."""
    dense = np.nan_to_num(np.log1p(arrays.dense))
    shared = true_logits(arrays)[:, 0] + 0.5
    own = dense[:, 1:5] - np.log1p(5.0)
    offsets = np.array([-0.5, -1.5, -1.0, -2.5])
    shared_weight = np.array([1.0, 1.0, 0.8, 0.2])
    own_weight = np.array([0.0, 0.8, 0.3, 2.5])
    return offsets + shared[:, None] * shared_weight + own * own_weight


def distinct_head_labels(arrays: RankerInputs, rng: np.random.Generator) -> np.ndarray:
    logits = distinct_head_logits(arrays)
    return (rng.uniform(size=logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
