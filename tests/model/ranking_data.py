"""A tiny learnable ranking data set: labels depend on a few dense features, the topic and the
pin x query-pin cosine similarity, so a working ranker must pick all three up."""

from __future__ import annotations

import numpy as np

from training.ranking.features import DENSE_FEATURES, RankerArrays

EMBEDDING_DIM = 8
NUM_TOPICS = 5


def synthetic_arrays(n: int, rng: np.random.Generator) -> RankerArrays:
    """Raw inputs for n rows: gamma-distributed counts, a few NaNs, unknown topics (-1, 7)."""
    dense = rng.gamma(1.0, 5.0, size=(n, len(DENSE_FEATURES))).astype(np.float32)
    dense[rng.uniform(size=dense.shape) < 0.01] = np.nan
    return RankerArrays(
        dense=dense,
        topic=rng.integers(-1, NUM_TOPICS + 2, size=n),
        pin_embedding=rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32),
        query_embedding=rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32),
    )


def true_logits(arrays: RankerArrays) -> np.ndarray:
    """[n, 4] the logistic model's logits: the best any ranker can do on these rows."""
    dense = np.nan_to_num(np.log1p(arrays.dense))
    pin, query = arrays.pin_embedding, arrays.query_embedding
    cosine = (pin * query).sum(1) / (np.linalg.norm(pin, axis=1) * np.linalg.norm(query, axis=1))
    shared = 2.0 * cosine + (dense[:, 0] - np.log1p(5.0)) + 0.8 * (arrays.topic == 2)
    offsets = np.array([-0.5, -1.5, -1.0, -2.0])
    scales = np.array([1.0, 1.5, 0.8, 1.2])
    return offsets + scales * shared[:, None]


def synthetic_labels(arrays: RankerArrays, rng: np.random.Generator) -> np.ndarray:
    """[n, 4] labels drawn from `true_logits`, the heads sharing one signal."""
    logits = true_logits(arrays)
    return (rng.uniform(size=logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
