"""The ranker model stage: one run's ONNX multi-task ranker, the pool of runs a replica scores
with, and the assembly of its inputs from the user's online features and the pin cache.

The inputs (`pinfeed.artifacts.ranker.RankerInputs`) carry the run id they were built for;
`RankerPool` scores each request with that run's model, so a request is scored by one run even
while replicas switch runs (the Recommender and Ranker deployments reconfigure independently).

Shapes: M candidate rows, F dense features, D content width, H = 4 heads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pinfeed.artifacts.layout import RunLayout
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import POSITION, RankerInputs, RankerManifest, read_ranker_manifest
from pinfeed.artifacts.runs import resolve_run
from pinfeed.errors import SchemaError
from serving.stages.features import UserView
from serving.stages.pin_cache import PinFeatureCache


def build_ranker_inputs(
    manifest: RankerManifest,
    run_id: str,
    user: UserView,
    cache: PinFeatureCache,
    pin_ids: NDArray[np.int64],
    query_pin_ids: NDArray[np.int64],
) -> RankerInputs:
    """Columns in `manifest.dense_features` order: user-keyed ones from `user` (broadcast),
    pin-keyed ones from the cache, `position` 0 (every candidate scored in the first slot)."""
    rows, _ = cache.rows(pin_ids)
    dense = np.empty((len(pin_ids), len(manifest.dense_features)), dtype=np.float32)
    for j, feature in enumerate(manifest.dense_features):
        column = manifest.source_columns[feature]
        if column == POSITION:
            dense[:, j] = 0.0
        elif column in cache.scalars:
            dense[:, j] = cache.scalars[column][rows]
        else:
            dense[:, j] = user.scalar(column)
    return RankerInputs(
        dense=dense,
        topic=cache.topic[rows],
        pin_embedding=cache.content[rows],
        query_embedding=cache.content_of(query_pin_ids),
        run_id=run_id,
    )


class RankerModel:
    """One ORT session over a run's `ranker.onnx`: inputs -> logits [M, H] (uncalibrated)."""

    def __init__(self, layout: RunLayout, threads: int) -> None:
        self.run_id = layout.run_id
        self.manifest = read_ranker_manifest(layout.ranking)
        self.session = inference_session(layout.ranker_model, threads or None, prefer_gpu=True)

    def logits(self, inputs: RankerInputs) -> NDArray[np.float32]:
        (logits,) = self.session.run([self.manifest.output_name], inputs.feed())
        if logits.shape != (len(inputs), len(self.manifest.heads)):
            raise SchemaError(f"ranker {self.run_id}: logits shape {logits.shape}, expected [M, H]")
        return logits


class RankerPool:
    """The ranker models a replica holds, by run id: the active run, pinned, and the runs
    before it up to `keep` in all, so requests built on any of them score with their own
    model during a switch. A run not held is loaded on first use (and checked against its
    manifest). Safe to load from one thread while another scores: the map changes under a
    lock, and loading happens outside it."""

    def __init__(self, artifacts: Path, threads: int, keep: int = 2) -> None:
        self.artifacts = artifacts
        self.threads = threads
        self.keep = keep
        self.active: str | None = None
        self._models: OrderedDict[str, RankerModel] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._models

    def load(self, run_id: str) -> RankerModel:
        """A fresh model of `run_id` (the slow part: hash check and ORT session)."""
        return RankerModel(resolve_run(self.artifacts, run_id, ("ranking",)), self.threads)

    def _keep(self, run_id: str, model: RankerModel, active: bool) -> RankerModel:
        with self._lock:
            held = self._models.setdefault(run_id, model)
            if active:
                self.active = run_id
                self._models.move_to_end(run_id)
            stale = [r for r in self._models if r != self.active]
            for old in stale[: max(0, len(self._models) - self.keep)]:
                del self._models[old]
            return held

    def activate(self, run_id: str) -> RankerModel:
        """Hold `run_id` (loading it unless held) and pin it as the active run."""
        with self._lock:
            held = self._models.get(run_id)
        return self._keep(run_id, held or self.load(run_id), active=True)

    def model(self, run_id: str) -> RankerModel:
        """The model of `run_id`, loaded on a miss (without making it the active run)."""
        with self._lock:
            held = self._models.get(run_id)
        return held or self._keep(run_id, self.load(run_id), active=False)

    def logits(self, requests: list[RankerInputs]) -> list[NDArray[np.float32]]:
        """Logits [M_i, H] for each request, one ORT call per run present in the batch."""
        out: list[NDArray[np.float32]] = [np.empty((0, 0), np.float32)] * len(requests)
        for run_id in dict.fromkeys(request.run_id for request in requests):
            members = [i for i, request in enumerate(requests) if request.run_id == run_id]
            stacked = RankerInputs.concat([requests[i] for i in members])
            logits = self.model(run_id).logits(stacked)
            bounds = np.cumsum([len(requests[i]) for i in members])[:-1]
            for i, part in zip(members, np.split(logits, bounds), strict=True):
                out[i] = part
        return out
