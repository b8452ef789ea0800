"""The Ranker stage: the ONNX multi-task ranker over candidate rows, and its Serve deployment.

`RankerInputs` are built by the Recommender from the user's online features and the pin cache,
in the manifest's column order (`build_ranker_inputs`); the deployment batches several
requests' rows into one ORT call with `@serve.batch` and returns each request its logits.
It is its own deployment so it can scale apart and sit on a GPU (`num_gpus` in config.yaml).

Shapes: M candidate rows, F dense features, D content width, H = 4 heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ray import serve

from pinfeed.errors import SchemaError
from serving.artifacts import POSITION, RankerSpec, RunArtifacts, load_run
from serving.config import ServingConfig
from serving.features import UserView
from serving.pin_cache import PinFeatureCache
from serving.state import FileWatch, ServingState
from training.retrieval.session import inference_session


@dataclass(frozen=True)
class RankerInputs:
    """The ranker's four inputs for M rows: dense [M, F] raw (NaN: missing), topic [M] int64,
    pin_embedding and query_embedding [M, D] float32."""

    dense: np.ndarray
    topic: np.ndarray
    pin_embedding: np.ndarray
    query_embedding: np.ndarray

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def feed(self, spec: RankerSpec) -> dict[str, np.ndarray]:
        arrays = {
            "dense": self.dense,
            "topic": self.topic,
            "pin_embedding": self.pin_embedding,
            "query_embedding": self.query_embedding,
        }
        return {name: arrays[name] for name in spec.input_names}

    @staticmethod
    def concat(parts: list[RankerInputs]) -> RankerInputs:
        return RankerInputs(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in RankerInputs._fields())
        )

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("dense", "topic", "pin_embedding", "query_embedding")


def build_ranker_inputs(
    spec: RankerSpec,
    user: UserView,
    cache: PinFeatureCache,
    pin_ids: np.ndarray,
    query_pin_ids: np.ndarray,
) -> RankerInputs:
    """Columns in `spec.dense_features` order: user-keyed ones from `user` (broadcast), pin-keyed
    ones from the cache, `position` 0 (every candidate scored in the first slot)."""
    rows, _ = cache.rows(pin_ids)
    dense = np.empty((len(pin_ids), len(spec.dense_features)), dtype=np.float32)
    for j, feature in enumerate(spec.dense_features):
        column = spec.source_columns[feature]
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
    )


class RankerModel:
    """One ORT session over `ranker.onnx`: inputs -> logits [M, H] (uncalibrated)."""

    def __init__(self, run: RunArtifacts, threads: int) -> None:
        self.spec = run.ranker
        self.session = inference_session(run.ranker_path, threads or None, prefer_gpu=True)

    def logits(self, inputs: RankerInputs) -> np.ndarray:
        (logits,) = self.session.run([self.spec.output_name], inputs.feed(self.spec))
        if logits.shape != (len(inputs), len(self.spec.heads)):
            raise SchemaError(f"ranker: logits shape {logits.shape}, expected [M, H]")
        return logits


@serve.deployment(max_ongoing_requests=32)
class Ranker:
    """Batched ranking; follows `/admin/reload` of the active run through the state files."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.state = ServingState(config.state)
        self.watch = FileWatch(self.state.active_run_path)
        self.model = self._load()
        self.rank.set_max_batch_size(config.ranker.max_batch_size)
        self.rank.set_batch_wait_timeout_s(config.ranker.batch_wait_timeout_s)

    def _load(self) -> RankerModel:
        self.watch.changed()
        run = load_run(self.config.project.artifacts, self.state.active_run())
        return RankerModel(run, self.config.ranker.intra_op_threads)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def rank(self, requests: list[RankerInputs]) -> list[np.ndarray]:
        """Logits [M_i, H] for each request of the batch, from one ORT call."""
        if self.watch.changed():
            self.model = self._load()
        logits = self.model.logits(RankerInputs.concat(requests))
        bounds = np.cumsum([len(r) for r in requests])[:-1]
        return np.split(logits, bounds)
