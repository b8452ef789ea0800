"""User interest clusters (design §4, PinnerSAGE-style): per user, Ward agglomerative
clustering of the content embeddings of recently engaged pins.

Only the linkage itself runs per user (a Python loop over users, at most cluster_max_pins
points each); the dendrogram cut, medoids, importance and centroids are vectorised over all
users.

Notation: U users, N engaged (user, pin) rows (at most `cluster_max_pins` per user), C clusters
over all users, D embedding dimension. Embeddings are L2-normalised, so Ward merge heights and
`cluster_distance_threshold` are on the unit sphere (two orthogonal pins are sqrt(2) apart).

- engaged pins: closeup, save or click in [T - cluster_window_days, T), the most recent
  `cluster_max_pins` distinct pins per user.
- cut: the dendrogram is cut at `cluster_distance_threshold`; if that leaves more than
  `cluster_max_count` clusters it is cut into exactly that many.
- medoid: the member with the smallest summed squared distance to the other members, i.e. the
  one nearest the cluster mean (ties: lowest pin id); it is the cluster's query pin.
- importance: the members' action counts (closeup + save + click), each action weighted
  0.5 ** (age / importance_half_life_days), age measured from T.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.cluster.hierarchy import linkage
from tqdm.auto import tqdm

from feature_repo.pipeline.activity import flag
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.snapshots import DAY_US, run_starts, ts_us
from pinfeed.errors import DataNotFoundError, SchemaError

CLUSTER_ACTIONS = ("closeup", "save", "click")
"""Engagements that make a pin part of a user's profile."""


@dataclass(frozen=True)
class PinEmbeddings:
    """Unit-norm content embeddings looked up by pin id: `ids` [P] sorted, `vectors` [P, D]."""

    ids: np.ndarray
    vectors: np.ndarray

    @classmethod
    def from_pins(cls, pins: pa.Table) -> PinEmbeddings:
        ids = pins.column("pin_id").to_numpy()
        embedding = pins.column("content_embedding").combine_chunks()
        flat = pc.list_flatten(embedding).to_numpy(zero_copy_only=False).astype(np.float32)
        vectors = flat.reshape(len(ids), -1) if len(ids) else np.zeros((0, 1), np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        order = np.argsort(ids, kind="stable")
        return cls(ids=ids[order], vectors=vectors[order])

    def known(self, pin_ids: np.ndarray) -> np.ndarray:
        """Which of `pin_ids` [n] have an embedding, bool [n]."""
        if len(self.ids) == 0:
            return np.zeros(len(pin_ids), bool)
        position = np.clip(np.searchsorted(self.ids, pin_ids), 0, len(self.ids) - 1)
        return self.ids[position] == pin_ids

    def rows(self, pin_ids: np.ndarray) -> np.ndarray:
        """Embeddings of `pin_ids` [n] -> [n, D]; every id must be known."""
        unknown = ~self.known(pin_ids)
        if unknown.any():
            raise SchemaError(
                f"pin_id {int(pin_ids[unknown][0])} (and {int(unknown.sum()) - 1} more) has no "
                "content_embedding in pins.parquet: add the pin to the event set's pins table"
            )
        return self.vectors[np.searchsorted(self.ids, pin_ids)]


def engaged_pins(impressions: pa.Table, as_of_us: int, config: FeatureConfig) -> pd.DataFrame:
    """Per user, the most recent `cluster_max_pins` pins engaged in the window before `as_of_us`.

    Returns columns user_id, pin_id, last_us (latest engagement), weight (decayed action
    count), sorted by user_id, then last_us descending, then pin_id: one row per (user, pin).
    """
    actions = sum(flag(impressions, name) for name in CLUSTER_ACTIONS)
    moments = ts_us(impressions.column("event_ts"))
    since = as_of_us - int(config.cluster_window_days * DAY_US)
    keep = (actions > 0) & (moments < as_of_us) & (moments >= since)
    age_days = (as_of_us - moments[keep]) / DAY_US
    frame = pd.DataFrame(
        {
            "user_id": impressions.column("user_id").to_numpy()[keep],
            "pin_id": impressions.column("pin_id").to_numpy()[keep],
            "last_us": moments[keep],
            "weight": actions[keep] * 0.5 ** (age_days / config.importance_half_life_days),
        }
    )
    per_pin = frame.groupby(["user_id", "pin_id"], sort=False).agg(
        last_us=("last_us", "max"), weight=("weight", "sum")
    )
    per_pin = per_pin.reset_index().sort_values(
        ["user_id", "last_us", "pin_id"], ascending=[True, False, True], kind="stable"
    )
    recent = per_pin.groupby("user_id", sort=False).cumcount() < config.cluster_max_pins
    return per_pin[recent].reset_index(drop=True)


@dataclass(frozen=True)
class Clustering:
    """One clustering run before ids are assigned. Cluster k (0 .. C-1) is local to the run."""

    members: pd.DataFrame
    """user_id, pin_id, cluster (k) for every engaged pin, N rows."""
    clusters: pd.DataFrame
    """cluster (k = row index), user_id, medoid_pin_id, importance, size; C rows."""
    centroids: np.ndarray
    """Unit-norm mean member embedding per cluster, [C, D]."""


def _cut_forest(trees: list[np.ndarray], sizes: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Flat cluster index per engaged row [N] from every user's Ward tree, all users at once.

    trees: per user with n >= 2 pins, the scipy linkage matrix [n - 1, 4]; sizes: pins per
    user [U] (users with one pin have no tree). A user's first k merges are applied, k =
    max(merges at height <= threshold, n - cluster_max_count) (Ward heights are monotone, so
    this equals fcluster's distance cut, then its maxclust cut); each pin's cluster is its
    highest applied ancestor, found by pointer doubling over one parent array.
    """
    if len(sizes) == 0:
        return np.zeros(0, np.int64)
    nodes = 2 * sizes - 1
    node_offset = np.r_[0, np.cumsum(nodes)[:-1]]
    parent = np.arange(int(nodes.sum()))
    multi = np.flatnonzero(sizes > 1)
    if len(multi):
        tree = np.concatenate(trees)
        n = np.repeat(sizes[multi], sizes[multi] - 1)
        offset = np.repeat(node_offset[multi], sizes[multi] - 1)
        merge = np.arange(len(tree)) - np.repeat(
            np.r_[0, np.cumsum(sizes[multi] - 1)[:-1]], sizes[multi] - 1
        )
        low = np.bincount(
            np.repeat(np.arange(len(multi)), sizes[multi] - 1),
            weights=tree[:, 2] <= config.cluster_distance_threshold,
            minlength=len(multi),
        )
        applied = np.maximum(low, sizes[multi] - config.cluster_max_count)
        keep = merge < np.repeat(applied, sizes[multi] - 1)
        for child in (0, 1):
            parent[offset[keep] + tree[keep, child].astype(np.int64)] = (offset + n + merge)[keep]
    while True:
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            break
        parent = jumped
    row_offset = np.r_[0, np.cumsum(sizes)[:-1]]
    leaves = np.arange(int(sizes.sum())) + np.repeat(node_offset - row_offset, sizes)
    return np.unique(parent[leaves], return_inverse=True)[1]


def _medoids(
    cluster: np.ndarray, vectors: np.ndarray, pin_ids: np.ndarray, n_clusters: int
) -> np.ndarray:
    """Per cluster, the member nearest its mean (ties: lowest pin id), as a row index [C].

    This is the medoid under squared Euclidean distance, Ward's own criterion: the sum of
    squared distances from x_i to the members is n * |x_i - mean|^2 + const.
    """
    means = np.zeros((n_clusters, vectors.shape[1]))
    np.add.at(means, cluster, vectors)
    means /= np.maximum(np.bincount(cluster, minlength=n_clusters), 1)[:, None]
    distance = np.einsum("nd,nd->n", vectors - means[cluster], vectors - means[cluster])
    order = np.lexsort((pin_ids, distance, cluster))
    return order[run_starts(cluster[order])]


def cluster_engaged(
    engaged: pd.DataFrame, embeddings: PinEmbeddings, config: FeatureConfig, progress: bool
) -> Clustering:
    """Cluster every user's engaged pins (the rows of `engaged_pins`)."""
    engaged = engaged[embeddings.known(engaged["pin_id"].to_numpy())].reset_index(drop=True)
    user_ids = engaged["user_id"].to_numpy()
    pin_ids = engaged["pin_id"].to_numpy()
    vectors = embeddings.rows(pin_ids).astype(np.float64)
    starts = run_starts(user_ids)
    bounds = np.r_[starts, len(user_ids)].astype(np.int64)
    trees = [
        linkage(vectors[a:b], method="ward")
        for a, b in tqdm(
            pairwise(bounds),
            total=len(bounds) - 1,
            desc="clusters",
            unit="user",
            disable=not progress,
        )
        if b - a > 1
    ]
    cluster = _cut_forest(trees, np.diff(bounds), config)
    n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
    medoid = _medoids(cluster, vectors, pin_ids, n_clusters)
    centroids = np.zeros((n_clusters, vectors.shape[1]))
    np.add.at(centroids, cluster, vectors)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    clusters = pd.DataFrame(
        {
            "cluster": np.arange(n_clusters),
            "user_id": user_ids[medoid],
            "medoid_pin_id": pin_ids[medoid],
            "importance": np.bincount(
                cluster, weights=engaged["weight"].to_numpy(), minlength=n_clusters
            ),
            "size": np.bincount(cluster, minlength=n_clusters),
        }
    )
    members = pd.DataFrame({"user_id": user_ids, "pin_id": pin_ids, "cluster": cluster})
    return Clustering(members=members, clusters=clusters, centroids=centroids)


def users_with_clusters(features_dir: Path, minimum: int = 1) -> list[int]:
    """Users whose latest clustering has at least `minimum` clusters, ascending (the demo's and
    the benchmarks' users: ones the reward path serves)."""
    path = features_dir / "user_clusters.parquet"
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no clusters; run `pinfeed features build` first")
    clusters = pd.read_parquet(path, columns=["user_id", "event_timestamp", "cluster_ids"])
    latest = clusters.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
    sizes = latest["cluster_ids"].map(len)
    return sorted(latest.loc[sizes >= minimum, "user_id"].astype(int).tolist())
