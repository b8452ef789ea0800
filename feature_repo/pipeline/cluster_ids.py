"""Stable cluster ids: rewards are keyed by cluster id, so a cluster that survives a rebuild
must keep its id.

Each new cluster is matched to a cluster of the same user from the previous run (its
`cluster_members` table): a pair is eligible when member-pin Jaccard >= `match_jaccard` or
centroid cosine >= `match_cosine` (old centroids are recomputed from the old members' current
embeddings, since pins are static); pairs are taken greedily, best Jaccard first, then best
cosine, one old id per new cluster. Unmatched clusters get a fresh id: a 63-bit splitmix64 hash
of (user_id, medoid pin, run day), re-salted on the rare collision, so ids are deterministic and
globally unique without a counter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_repo.pipeline.clusters import Clustering, PinEmbeddings

_MASK63 = np.uint64(0x7FFF_FFFF_FFFF_FFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 [n] (wrapping arithmetic)."""
    x = x + np.uint64(0x9E37_79B9_7F4A_7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58_476D_1CE4_E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D0_49BB_1331_11EB)
    return x ^ (x >> np.uint64(31))


def fresh_ids(
    user_ids: np.ndarray, medoids: np.ndarray, run_day: int, taken: np.ndarray
) -> np.ndarray:
    """Positive int64 ids [n] hashed from (user, medoid, run day), none in `taken` or repeated."""
    with np.errstate(over="ignore"):
        base = _splitmix64(user_ids.astype(np.uint64)) ^ _splitmix64(
            medoids.astype(np.uint64) ^ _splitmix64(np.full(len(user_ids), run_day, np.uint64))
        )
        ids = (_splitmix64(base) & _MASK63).astype(np.int64)
        salt = np.uint64(1)
        while True:
            clash = (ids == 0) | np.isin(ids, taken) | pd.Series(ids).duplicated().to_numpy()
            if not clash.any():
                return ids
            ids[clash] = (_splitmix64(base[clash] + salt) & _MASK63).astype(np.int64)
            salt += np.uint64(1)


def _candidate_pairs(
    new: Clustering, previous: pd.DataFrame, embeddings: PinEmbeddings
) -> pd.DataFrame:
    """(cluster, cluster_id, jaccard, cosine) for every new/old pair of the same user."""
    previous = previous[embeddings.known(previous["pin_id"].to_numpy())]
    old = previous.groupby("cluster_id").agg(
        user_id=("user_id", "first"), old_size=("pin_id", "size")
    )
    old_centroids = pd.DataFrame(embeddings.rows(previous["pin_id"].to_numpy()))
    old_centroids = old_centroids.groupby(previous["cluster_id"].to_numpy()).sum().loc[old.index]
    old_vectors = old_centroids.to_numpy()
    old_vectors /= np.maximum(np.linalg.norm(old_vectors, axis=1, keepdims=True), 1e-12)
    old = old.reset_index().assign(old_row=np.arange(len(old)))
    pairs = new.clusters[["cluster", "user_id", "size"]].merge(old, on="user_id")
    overlap = (
        new.members.merge(previous, on=["user_id", "pin_id"])
        .groupby(["cluster", "cluster_id"])
        .size()
        .rename("overlap")
        .reset_index()
    )
    pairs = pairs.merge(overlap, on=["cluster", "cluster_id"], how="left").fillna({"overlap": 0})
    union = pairs["size"] + pairs["old_size"] - pairs["overlap"]
    pairs["jaccard"] = pairs["overlap"] / union
    pairs["cosine"] = np.einsum(
        "nd,nd->n",
        new.centroids[pairs["cluster"].to_numpy()],
        old_vectors[pairs["old_row"].to_numpy()],
    )
    return pairs[["cluster", "cluster_id", "jaccard", "cosine"]]


def _greedy_match(pairs: pd.DataFrame) -> pd.DataFrame:
    """One-to-one matching: repeatedly take the pairs that are each other's best (Jaccard,
    then cosine, then lowest ids); every round takes at least the overall best pair."""
    pairs = pairs.sort_values(
        ["jaccard", "cosine", "cluster", "cluster_id"], ascending=[False, False, True, True]
    )
    matched = []
    while len(pairs):
        best_new = ~pairs["cluster"].duplicated()
        best_old = ~pairs["cluster_id"].duplicated()
        mutual = pairs[best_new & best_old]
        matched.append(mutual[["cluster", "cluster_id"]])
        pairs = pairs[
            ~pairs["cluster"].isin(mutual["cluster"])
            & ~pairs["cluster_id"].isin(mutual["cluster_id"])
        ]
    return pd.concat(matched) if matched else pd.DataFrame({"cluster": [], "cluster_id": []})


def assign_cluster_ids(
    new: Clustering,
    previous: pd.DataFrame | None,
    embeddings: PinEmbeddings,
    run_day: int,
    match_jaccard: float,
    match_cosine: float,
) -> np.ndarray:
    """int64 id per new cluster [C]: the matched old id, else a fresh one.

    `previous` is the earlier run's cluster_members (user_id, cluster_id, pin_id) or None.
    """
    ids = np.zeros(len(new.clusters), np.int64)
    assigned = np.zeros(len(new.clusters), bool)
    taken = np.zeros(0, np.int64)
    if previous is not None and len(previous) and len(new.clusters):
        previous = previous[["user_id", "cluster_id", "pin_id"]]
        taken = previous["cluster_id"].unique()
        pairs = _candidate_pairs(new, previous, embeddings)
        eligible = (pairs["jaccard"] >= match_jaccard) | (pairs["cosine"] >= match_cosine)
        matched = _greedy_match(pairs[eligible])
        rows = matched["cluster"].to_numpy(np.int64)
        ids[rows] = matched["cluster_id"].to_numpy(np.int64)
        assigned[rows] = True
    fresh = ~assigned
    ids[fresh] = fresh_ids(
        new.clusters["user_id"].to_numpy()[fresh],
        new.clusters["medoid_pin_id"].to_numpy()[fresh],
        run_day,
        taken,
    )
    return ids
