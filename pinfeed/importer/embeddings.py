"""Content embeddings for imported pins, learned from co-engagement.

Real logs rarely ship visual/text embeddings, yet the pipeline needs one per pin. Items engaged
by the same users should sit close, so each pin gets its row of a truncated SVD of the user x pin
engagement matrix X (binary: did the user engage the pin at least once):

    X' = D_u^-1/2 X D_p^-1/2        (degree normalisation, so popular pins do not dominate)
    X' ~ U S V^T, top k = dim singular values
    embedding(pin) = normalise(V S)  [P, dim], sign fixed so each column's largest entry is > 0

Pins engaged by fewer than `min_item_engagements` distinct users, or whose learned vector is ~0,
get a fallback: a unit vector drawn from a standard normal seeded by a hash of the external id
(splitmix64 over pandas' stable hash), the same across runs and machines. A given parquet
(item_id, embedding) replaces learned or fallback vectors where it names a pin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils.extmath import randomized_svd

from pinfeed.errors import SchemaError
from pinfeed.importer.mapping import IdMap
from pinfeed.schema import UNKNOWN_TOPIC

DENSE_SVD_MAX_CELLS = 4_000_000
"""Below this many matrix cells a dense SVD is exact and fast; above, randomized SVD (Halko et
al., as in sklearn's TruncatedSVD) with a fixed seed."""
MINIBATCH_ABOVE = 50_000


@dataclass(frozen=True)
class PinEmbeddings:
    """vectors: [P, dim] float32; source: [P] int8, one of LEARNED, GIVEN, FALLBACK."""

    vectors: np.ndarray
    source: np.ndarray

    def count(self, source: int) -> int:
        return int((self.source == source).sum())


LEARNED, GIVEN, FALLBACK = 0, 1, 2


def learn_embeddings(
    users: np.ndarray,
    pins: np.ndarray,
    n_users: int,
    n_pins: int,
    *,
    dim: int,
    min_engagements: int,
) -> tuple[np.ndarray, np.ndarray]:
    """users, pins: [E] int64 engaged (user, pin) pairs (repeats allowed).
    Returns vectors [n_pins, dim] float32 (zero rows where not learned) and learned mask [n_pins]."""
    vectors = np.zeros((n_pins, dim), dtype=np.float32)
    matrix = sp.coo_matrix((np.ones(len(users)), (users, pins)), shape=(n_users, n_pins)).tocsr()
    matrix.data[:] = 1.0
    degree = np.asarray((matrix > 0).sum(axis=0)).ravel()
    eligible = np.flatnonzero(degree >= min_engagements)
    sub = matrix[:, eligible]
    sub = sub[np.asarray(sub.sum(axis=1)).ravel() > 0]
    k = min(dim, min(sub.shape) - 1)
    if k < 1:
        return vectors, np.zeros(n_pins, dtype=bool)
    user_scale = 1.0 / np.sqrt(np.asarray(sub.sum(axis=1)).ravel())
    pin_scale = 1.0 / np.sqrt(np.asarray(sub.sum(axis=0)).ravel())
    sub = sp.diags(user_scale) @ sub @ sp.diags(pin_scale)
    right, strength = _top_singular(sub.tocsc(), k)
    learned = right * strength
    learned *= np.sign(learned[np.abs(learned).argmax(axis=0), np.arange(k)])
    norms = np.linalg.norm(learned, axis=1)
    ok = norms > 1e-6
    vectors[eligible[ok], :k] = learned[ok] / norms[ok, None]
    mask = np.zeros(n_pins, dtype=bool)
    mask[eligible[ok]] = True
    return vectors, mask


def _top_singular(matrix: sp.csc_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Right singular vectors [P, k] and values [k] of the k largest singular values."""
    if matrix.shape[0] * matrix.shape[1] <= DENSE_SVD_MAX_CELLS:
        _, values, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        return vt[:k].T, values[:k]
    _, values, vt = randomized_svd(matrix, k, n_oversamples=k, n_iter=4, random_state=0)
    return vt.T, values


def hashed_unit_vectors(external_ids: pd.Index, dim: int) -> np.ndarray:
    """A deterministic unit vector per external id: [K] -> [K, dim] float32."""
    seeds = pd.util.hash_pandas_object(pd.Series(external_ids.astype(str)), index=False).to_numpy(
        np.uint64
    )
    counters = seeds[:, None] + np.arange(1, 2 * dim + 1, dtype=np.uint64)[None, :] * np.uint64(
        0x9E3779B97F4A7C15
    )
    bits = _splitmix64(counters)
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u1, u2 = uniform[:, :dim], uniform[:, dim:]
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.copy()
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def load_given_embeddings(path: Path, pin_map: IdMap, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Read parquet (item_id, embedding). Returns pin ids [G] and vectors [G, dim] float32 for
    the rows naming a known pin (rows naming unknown items are not pins of this log)."""
    table = pq.read_table(path)
    missing = [c for c in ("item_id", "embedding") if c not in table.column_names]
    if missing:
        raise SchemaError(
            f"{path}: missing column(s) {missing}; item embeddings need item_id, embedding"
        )
    column = table.column("embedding").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != dim)
    if len(wrong):
        raise SchemaError(
            f"{path}: row {wrong[0] + 1}: embedding has {max(lengths[wrong[0]], 0)} values, expected "
            f"{dim}; set the import's embedding_dim to the file's length"
        )
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = flat.reshape(len(lengths), dim)
    if not np.isfinite(vectors).all():
        raise SchemaError(f"{path}: embeddings must hold finite numbers (null or NaN found)")
    frame = table.select(["item_id"]).to_pandas()
    pins = pin_map.lookup(frame["item_id"])
    known = pins >= 0
    return pins[known], vectors[known]


def pin_embeddings(
    users: np.ndarray,
    pins: np.ndarray,
    n_users: int,
    pin_map: IdMap,
    *,
    dim: int,
    min_engagements: int,
    given: Path | None,
) -> PinEmbeddings:
    """Learned where the co-engagement data allows, given where a file says, hashed elsewhere."""
    vectors, learned = learn_embeddings(
        users, pins, n_users, len(pin_map), dim=dim, min_engagements=min_engagements
    )
    source = np.where(learned, LEARNED, FALLBACK).astype(np.int8)
    fallback = ~learned
    vectors[fallback] = hashed_unit_vectors(pin_map.external[fallback], dim)
    if given is not None:
        ids, given_vectors = load_given_embeddings(given, pin_map, dim)
        vectors[ids] = given_vectors
        source[ids] = GIVEN
    return PinEmbeddings(vectors=vectors, source=source)


def topics(embeddings: PinEmbeddings, n_topics: int) -> np.ndarray:
    """k-means cluster [P] int32 of each learned/given embedding; `UNKNOWN_TOPIC` for hashed
    fallbacks (their direction carries no meaning) and for every pin when n_topics is 0."""
    topic = np.full(len(embeddings.source), UNKNOWN_TOPIC, dtype=np.int32)
    meaningful = np.flatnonzero(embeddings.source != FALLBACK)
    k = min(n_topics, len(meaningful))
    if k < 1:
        return topic
    points = embeddings.vectors[meaningful]
    if len(points) > MINIBATCH_ABOVE:
        model = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=3, batch_size=4096)
    else:
        model = KMeans(n_clusters=k, random_state=0, n_init=4)
    topic[meaningful] = model.fit_predict(points).astype(np.int32)
    return topic
