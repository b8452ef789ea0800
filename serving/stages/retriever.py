"""The Retriever stage: the ONNX query tower embeds (user, query pin) pairs and the faiss pin
index returns each query's nearest pins, merged into one candidate list with its sources.

Candidate budget: `n_candidates` is split evenly over the draws; a query pin drawn twice gets
twice the share (the selection's "a cluster drawn twice feeds twice as many candidates").
Duplicates across queries keep their first source. Pins in `exclude` are never returned.

Notation: n draws, q distinct query pins, D content width, E embedding width, M candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pinfeed.artifacts.index import MISSING_PIN, PinIndex, load_pin_index
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.retrieval import QUERY_TOWER_INPUTS
from pinfeed.artifacts.runs import RunArtifacts
from pinfeed.errors import SchemaError
from serving.stages.selector import Queries


@dataclass(frozen=True)
class Candidates:
    """[M] candidate pin ids with the cluster and query pin each came from."""

    pin_ids: np.ndarray
    cluster_ids: np.ndarray
    query_pin_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.pin_ids.shape[0])


class Retriever:
    """Query tower (ORT) + pin index of one run."""

    def __init__(self, run: RunArtifacts, threads: int) -> None:
        tower = run.retrieval.query_tower
        path = run.layout.retrieval / tower.file
        names = tuple(spec.name for spec in tower.inputs)
        if names != QUERY_TOWER_INPUTS:
            raise SchemaError(f"{path}: inputs {names} differ from {QUERY_TOWER_INPUTS}")
        self.session = inference_session(path, threads or None, prefer_gpu=True)
        self.output = tower.output_name
        self.index: PinIndex = load_pin_index(run.layout.retrieval)
        self.user_columns = tower.source_column_order()
        """Full feature names of the tower's `user_dense` columns, in order."""

    def embed(
        self, user_id: int, user_dense: np.ndarray, query_pin_ids: np.ndarray, content: np.ndarray
    ) -> np.ndarray:
        """[q, E] query embeddings; `user_dense` [F] raw values, `content` [q, D]."""
        q = len(query_pin_ids)
        feed = {
            "user_id": np.full(q, user_id, dtype=np.int64),
            "user_dense": np.tile(user_dense.astype(np.float32), (q, 1)),
            "query_pin_id": query_pin_ids.astype(np.int64),
            "query_content": content.astype(np.float32),
        }
        (embeddings,) = self.session.run([self.output], feed)
        return embeddings

    def retrieve(
        self,
        user_id: int,
        user_dense: np.ndarray,
        queries: Queries,
        content_of: np.ndarray,
        exclude: set[int],
        n_candidates: int,
    ) -> Candidates:
        """Merge each query's nearest pins into at most `n_candidates` distinct candidates.

        content_of: [n, D] content of each drawn query pin (`queries.query_pin_ids` order).
        """
        pins, first = np.unique(queries.query_pin_ids, return_index=True)
        draws = np.array([(queries.query_pin_ids == pin).sum() for pin in pins])
        share = math.ceil(n_candidates / len(queries.query_pin_ids))
        embeddings = self.embed(user_id, user_dense, pins, content_of[first])
        k = int(min(share * draws.max(), len(self.index)))
        found, _ = self.index.search(embeddings, k, exclude=[exclude] * len(pins))
        ids, clusters, sources = [], [], []
        for row, pin in enumerate(pins):
            take = found[row, : share * draws[row]]
            take = take[take != MISSING_PIN]
            ids.append(take)
            clusters.append(np.full(len(take), queries.cluster_ids[first[row]], dtype=np.int64))
            sources.append(np.full(len(take), pin, dtype=np.int64))
        merged = np.concatenate(ids)
        _, keep = np.unique(merged, return_index=True)
        keep = np.sort(keep)[:n_candidates]
        return Candidates(
            pin_ids=merged[keep],
            cluster_ids=np.concatenate(clusters)[keep],
            query_pin_ids=np.concatenate(sources)[keep],
        )
