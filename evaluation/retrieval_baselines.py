"""The baselines of the retrieval ablation: what a user would try before a two-tower model.

Each one is fitted on the split's train positives (every kind, one count per row: the same
rows the towers learn from, before any dwell weighting) and answers the same held-out queries
(user + query pin) as the towers, over the same corpus, scored by the same recall:

- `popularity`: the pins with the most train positives in the last `recent_days` before the
  cutoff (ties: all-time count); every query gets the same list.
- `item_knn`: item-item cosine similarity of the user x pin matrix (Sarwar et al., 2001). A
  query scores pin j by the sum of sim(i, j) over the user's train pins and the query pin;
  pins it cannot score fall back to the popularity order.
- `als`: implicit ALS (Hu, Koren and Volinsky, 2008) from the `implicit` library on the same
  matrix (implicit's convention: confidence alpha * count on observed pairs, 1 elsewhere). A
  query's user factor is solved from the user's train pins plus the query pin (fold-in,
  `recalculate_user`), so ALS sees what the towers see and users unseen in training still get
  a factor. Its factors and regularisation are picked on the validation day
  (`evaluation.retrieval.fit_baselines`), as the towers' step count is.

A query without a query pin (null, or a pin outside the corpus) is the user's history alone.

Notation: U users with train positives, P corpus pins, Q held-out queries, K retrieved pins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from pinfeed.errors import ConfigError

Baseline = Literal["popularity", "item_knn", "als"]
BASELINES: tuple[Baseline, ...] = get_args(Baseline)
Retriever = Callable[[pa.Table, int], np.ndarray]  # (held-out rows, K) -> [Q, K] pin ids
_SCORE_CHUNK = 512  # queries scored at once by item-kNN: [chunk, P] dense floats


class BaselineSettings(BaseModel):
    """Which baselines run and how they are fitted (defaults: the ablation's report)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: tuple[Baseline, ...] = BASELINES
    recent_days: float = Field(7.0, gt=0, description="popularity: the window before the cutoff.")
    als_factors: int = Field(64, gt=0)
    als_iterations: int = Field(15, gt=0)
    als_regularization: float = Field(0.05, ge=0)
    als_alpha: float = Field(10.0, gt=0, description="als: confidence = alpha * count.")
    als_factor_grid: tuple[int, ...] = Field(
        (32, 64, 128), description="als: factors tried on the validation day."
    )
    als_regularization_grid: tuple[float, ...] = Field(
        (0.01, 0.05, 0.5), description="als: regularisations tried on the validation day."
    )


@dataclass(frozen=True)
class Interactions:
    """The train positives as a user x pin count matrix, and the popularity order."""

    pin_ids: np.ndarray  # [P] corpus pin ids, sorted: column j is pin_ids[j]
    user_ids: np.ndarray  # [U] sorted ids of users with train positives: row u
    counts: sp.csr_matrix  # [U, P] float32 train positives per (user, pin)
    popular: np.ndarray  # [P] column indices, most popular first

    def columns(self, pins: np.ndarray) -> np.ndarray:
        """Column of each pin id; -1 for a pin outside the corpus."""
        found = np.minimum(np.searchsorted(self.pin_ids, pins), len(self.pin_ids) - 1)
        return np.where(self.pin_ids[found] == pins, found, -1)

    def queries(self, held: pa.Table) -> sp.csr_matrix:
        """[Q, P] each held-out row's user history (train counts) plus its query pin (1; none
        for a null query pin or one outside the corpus)."""
        users = held.column("user_id").to_numpy().astype(np.int64)
        rows = np.searchsorted(self.user_ids, users)
        known = (rows < len(self.user_ids)) & (
            self.user_ids[np.minimum(rows, len(self.user_ids) - 1)] == users
        )
        history = self.counts[np.where(known, rows, 0)]
        history = sp.diags(known.astype(np.float32)) @ history
        query_ids = pc.fill_null(held.column("query_pin_id"), -1).to_numpy()
        query_pins = self.columns(query_ids.astype(np.int64))
        has = query_pins >= 0
        query = sp.csr_matrix(
            (np.ones(int(has.sum()), np.float32), (np.flatnonzero(has), query_pins[has])),
            shape=history.shape,
        )
        return (history + query).tocsr()


def interactions(
    train: pa.Table, pin_ids: np.ndarray, cutoff: object, recent_days: float
) -> Interactions:
    """The count matrix of `train` over the corpus `pin_ids`, and the recent-popularity order."""
    pins = np.sort(np.asarray(pin_ids, dtype=np.int64))
    users = train.column("user_id").to_numpy().astype(np.int64)
    user_ids, rows = np.unique(users, return_inverse=True)
    columns = np.searchsorted(pins, train.column("pin_id").to_numpy().astype(np.int64))
    # train pins come from the corpus (`read_pin_corpus` holds every pin of the event set)
    counts = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, columns)), shape=(len(user_ids), len(pins))
    )
    counts.sum_duplicates()
    since = pa.scalar(cutoff - timedelta(days=recent_days), pa.timestamp("us", tz="UTC"))
    recent = pc.greater_equal(train.column("positive_ts"), since).to_numpy(zero_copy_only=False)
    recent_count = np.bincount(columns[recent], minlength=len(pins))
    all_count = np.bincount(columns, minlength=len(pins))
    popular = np.lexsort((-all_count, -recent_count))  # by recent, then all-time count
    return Interactions(pins, user_ids, counts, popular)


def _popularity_prior(data: Interactions) -> np.ndarray:
    """[P] in (0, 1]: larger for more popular pins, for breaking ties below any real score."""
    prior = np.empty(len(data.pin_ids), np.float32)
    prior[data.popular] = np.linspace(1.0, 0.0, len(data.pin_ids), endpoint=False)
    return prior


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] column indices of the k largest scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def popularity(data: Interactions) -> Retriever:
    """The same most popular pins for every query."""

    def retrieve(held: pa.Table, k: int) -> np.ndarray:
        return np.tile(data.pin_ids[data.popular[:k]], (held.num_rows, 1))

    return retrieve


def item_similarity(counts: sp.csr_matrix) -> sp.csr_matrix:
    """[P, P] cosine similarity of the pins' binary user columns, zero diagonal."""
    binary = (counts > 0).astype(np.float32)
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())
    inverse = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
    similarity = (inverse @ (binary.T @ binary) @ inverse).tocsr()
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    return similarity


def item_knn(data: Interactions) -> Retriever:
    """Pins by summed similarity to the user's train pins and the query pin."""
    similarity = item_similarity(data.counts)
    prior = _popularity_prior(data) * 1e-6

    def retrieve(held: pa.Table, k: int) -> np.ndarray:
        queries = data.queries(held)
        queries.data[:] = 1.0  # one vote per pin, not per positive
        out = [np.empty((0, min(k, len(data.pin_ids))), np.int64)]
        for start in range(0, queries.shape[0], _SCORE_CHUNK):
            scores = (queries[start : start + _SCORE_CHUNK] @ similarity).toarray() + prior
            out.append(data.pin_ids[_top(scores, k)])
        return np.concatenate(out)

    return retrieve


def als(data: Interactions, settings: BaselineSettings, seed: int) -> Retriever:
    """implicit's ALS on the count matrix; each query's user factor folded in."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own threads do the work (it checks)
        model = AlternatingLeastSquares(
            factors=settings.als_factors,
            regularization=settings.als_regularization,
            alpha=settings.als_alpha,
            iterations=settings.als_iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        model.fit(data.counts, show_progress=False)

    def retrieve(held: pa.Table, k: int) -> np.ndarray:
        queries = data.queries(held)
        with threadpool_limits(1, "blas"):
            ids, _ = model.recommend(
                np.arange(queries.shape[0]),
                queries,
                N=min(k, len(data.pin_ids)),
                recalculate_user=True,
                filter_already_liked_items=False,
            )
        return data.pin_ids[np.asarray(ids, dtype=np.int64)]

    return retrieve


def fit_baseline(
    name: Baseline, data: Interactions, settings: BaselineSettings, seed: int
) -> Retriever:
    """The baseline `name` fitted on `data` (seed: ALS's initial factors)."""
    if name == "popularity":
        return popularity(data)
    if name == "item_knn":
        return item_knn(data)
    if name == "als":
        return als(data, settings, seed)
    raise ConfigError(f"baselines.names: unknown baseline {name!r}; known: {BASELINES}")
