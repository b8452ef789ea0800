"""Candidate pools for the simulator: for every (user, cluster), the top-M pins retrieval
returns for the cluster's query pin.

With trained artifacts (the newest run holding a retrieval model: the ONNX query tower and the
pin index over the same pin corpus), the query tower embeds (user, query
pin) and the index returns the neighbours, as serving does; the user's dense features come
from their latest snapshot in `data/features/` (zeros when absent). Without them the pool is
the query pin's nearest pins by content embedding (cosine). `CandidatePools.source` says which.
The query pins and users are fixed during a simulation, so pools are computed once.

Notation: U users, K clusters per user, M pins per pool, D content width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from evaluation.sim_world import SimUsers
from pinfeed.artifacts.index import load_pin_index
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.retrieval import read_retrieval_manifest
from pinfeed.artifacts.runs import latest_run
from pinfeed.errors import DataNotFoundError
from pinfeed.home import ProjectHome
from pinfeed.synthetic.world import World

CONTENT_FALLBACK = "content_fallback"


@dataclass(frozen=True)
class CandidatePools:
    pins: np.ndarray  # [U, K, M] int64, -1 padding
    source: str  # "onnx:<retrieval dir>" or CONTENT_FALLBACK
    note: str


def latest_retrieval_dir(home: ProjectHome) -> Path | None:
    """The retrieval folder of the newest run holding a retrieval model, or None."""
    try:
        return latest_run(home.artifacts, need=("retrieval",)).retrieval
    except DataNotFoundError:
        return None


def content_pools(world: World, users: SimUsers, m: int) -> np.ndarray:
    """Top-m pins by content cosine to each query pin, [U, K, m]."""
    vectors = world.pins.embedding / np.linalg.norm(world.pins.embedding, axis=1, keepdims=True)
    queries = vectors[users.medoids.ravel()]
    scores = queries @ vectors.T
    top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1).reshape(*users.medoids.shape, m)


def user_dense(home: ProjectHome, user_ids: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """[U, F] float32: each user's latest user_features / user_dwell values; 0 where absent."""
    out = np.zeros((len(user_ids), len(names)), np.float32)
    for table in ("user_features", "user_dwell"):
        path = home.features / f"{table}.parquet"
        if not path.exists():
            continue
        frame = pq.read_table(path).to_pandas()
        latest = frame.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
        latest = latest.set_index("user_id").reindex(user_ids)
        for j, name in enumerate(names):
            if name in latest.columns:
                out[:, j] = latest[name].fillna(0).to_numpy(np.float32)
    return out


def onnx_pools(
    home: ProjectHome, retrieval_dir: Path, world: World, users: SimUsers, m: int
) -> np.ndarray:
    """Top-m pins from the trained query tower and pin index, [U, K, m]."""
    manifest = read_retrieval_manifest(retrieval_dir)
    session = inference_session(retrieval_dir / manifest.query_tower.file, prefer_gpu=False)
    index = load_pin_index(retrieval_dir)
    k = users.medoids.shape[1]
    dense = np.repeat(user_dense(home, users.user_ids, manifest.query_tower.dense_features), k, 0)
    medoids = users.medoids.ravel()
    values = {
        "user_id": np.repeat(users.user_ids, k).astype(np.int64),
        "user_dense": dense,
        "query_pin_id": medoids.astype(np.int64),
        "query_content": world.pins.embedding[medoids].astype(np.float32),
    }
    feeds = {spec.name: values[spec.name] for spec in manifest.query_tower.inputs}
    (queries,) = session.run([manifest.query_tower.outputs[0].name], feeds)
    pins, _ = index.search(queries, m)
    return pins.reshape(*users.medoids.shape, m)


def candidate_pools(home: ProjectHome, world: World, users: SimUsers, m: int) -> CandidatePools:
    """ONNX retrieval when matching artifacts exist, else the content fallback (see module)."""
    retrieval_dir = latest_retrieval_dir(home)
    if retrieval_dir is None:
        return CandidatePools(
            content_pools(world, users, m), CONTENT_FALLBACK, "no artifacts/*/retrieval/"
        )
    try:
        pins = onnx_pools(home, retrieval_dir, world, users, m)
    except Exception as exc:  # any failure to load or run the artifacts means: fall back
        note = f"{retrieval_dir}: {type(exc).__name__}: {exc}"
        return CandidatePools(content_pools(world, users, m), CONTENT_FALLBACK, note)
    if pins.max() >= len(world.pins.topic):
        note = f"{retrieval_dir}: index pins outside the simulated world's corpus"
        return CandidatePools(content_pools(world, users, m), CONTENT_FALLBACK, note)
    return CandidatePools(pins, f"onnx:{retrieval_dir}", "query tower + pin index")
