"""The ranker's contract: its four inputs (`RankerInputs`) and its manifest
(`ranking/ranker.manifest.json`), shared by the training job that writes them, the evaluation
that scores held-out days with the export, and serving.

The ONNX graph takes the four inputs (batch axis dynamic) and returns `logits` [B, H],
uncalibrated, heads in `pinfeed.schema.ENGAGEMENTS` order. Calibration needs the per-head sample
rates the manifest carries: `calibrate_logits(logits, manifest.calibration_rate_vector())`.

Notation: M rows (candidates), F dense features, D content width, H = 4 heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from pinfeed.artifacts.layout import (
    RANKER_FILE,
    RANKER_MANIFEST,
    check_hashes,
    read_manifest,
    write_text_atomic,
)
from pinfeed.config import FrozenModel
from pinfeed.errors import SchemaError
from pinfeed.schema import ENGAGEMENTS

RANKER_INPUTS: tuple[str, ...] = ("dense", "topic", "pin_embedding", "query_embedding")
"""ONNX input names, in the model's `forward` argument order."""
RANKER_OUTPUT = "logits"
POSITION = "position"
"""A request-time column, not a Feast feature: serving scores every candidate at position 0."""
TOPIC = "topic"
CONTENT_EMBEDDING = "content_embedding"
"""The candidate's topic and content embedding: keys of `source_columns` every consumer needs
besides the dense features (their columns feed the `topic` and `pin_embedding` inputs)."""


@dataclass(frozen=True)
class RankerInputs:
    """The ranker's inputs for M rows, and the run whose ranker must score them.

    dense [M, F] float32 raw values (NaN: missing; the graph transforms them), topic [M] int64
    (unknown ids share one bucket), pin_embedding and query_embedding [M, D] float32 (a zero
    query embedding: no query pin). `run_id` travels with the rows so one request is scored by
    one run even while replicas switch runs ("" where no run is involved, as in training).
    """

    dense: NDArray[np.float32]
    topic: NDArray[np.int64]
    pin_embedding: NDArray[np.float32]
    query_embedding: NDArray[np.float32]
    run_id: str = ""

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def as_tuple(self) -> tuple[np.ndarray, ...]:
        """The arrays in `RANKER_INPUTS` order."""
        return (self.dense, self.topic, self.pin_embedding, self.query_embedding)

    def feed(self) -> dict[str, np.ndarray]:
        """ONNX Runtime feed: input name -> array."""
        return dict(zip(RANKER_INPUTS, self.as_tuple(), strict=True))

    def take(self, rows: NDArray[np.int64] | slice) -> RankerInputs:
        """The rows `rows` of every array (same run)."""
        return RankerInputs(*(array[rows] for array in self.as_tuple()), run_id=self.run_id)

    @staticmethod
    def concat(parts: list[RankerInputs]) -> RankerInputs:
        """Rows of several requests of one run, stacked (the batched ranker's one ORT call)."""
        runs = {part.run_id for part in parts}
        if len(runs) != 1:
            raise SchemaError(f"ranker inputs: cannot stack rows of several runs {sorted(runs)}")
        arrays = zip(*(part.as_tuple() for part in parts), strict=True)
        return RankerInputs(*(np.concatenate(column) for column in arrays), run_id=runs.pop())


class RankerManifest(FrozenModel):
    """What a consumer of `ranker.onnx` must know: inputs and their order, where each dense
    feature comes from, head order, and the sample rates that calibrate its logits."""

    model_file: str = RANKER_FILE
    sha256: str
    heads: tuple[str, ...] = ENGAGEMENTS
    output_name: str = RANKER_OUTPUT
    input_names: tuple[str, ...] = RANKER_INPUTS
    dense_features: tuple[str, ...]
    """Column order of the `dense` input."""
    log1p_features: tuple[str, ...]
    """Dense features the graph log1p's itself: consumers send raw values."""
    source_columns: dict[str, str] = Field(
        description="Model feature -> Feast full feature name (ranking_v1) or request column."
    )
    embedding_dim: int = Field(gt=0, description="D: content embedding width of both pins.")
    training_config: dict[str, Any] = Field(
        description="The ranker's model config, as it was (training validates it back)."
    )
    negative_sample_rate: float = Field(
        gt=0.0, le=1.0, description="w: fraction of unengaged impressions kept in training."
    )
    calibration_sample_rates: dict[str, float] = Field(
        description="Per-head effective rate w_t for pinfeed.calibration.calibrate."
    )
    opset: int
    torch_version: str

    @model_validator(mode="after")
    def _rates_per_head(self) -> RankerManifest:
        if set(self.calibration_sample_rates) != set(self.heads):
            raise ValueError(f"calibration_sample_rates: need exactly the heads {self.heads}")
        if self.input_names != RANKER_INPUTS:
            raise ValueError(f"input_names: {self.input_names} differ from {RANKER_INPUTS}")
        return self

    def calibration_rate_vector(self) -> NDArray[np.float64]:
        """[H] effective sample rates in head order."""
        return np.array([self.calibration_sample_rates[h] for h in self.heads], dtype=np.float64)


def write_ranker_manifest(manifest: RankerManifest, out_dir: Path) -> Path:
    return write_text_atomic(out_dir / RANKER_MANIFEST, manifest.model_dump_json(indent=2) + "\n")


def read_ranker_manifest(out_dir: Path) -> RankerManifest:
    """Read `ranker.manifest.json` and check the heads and the model file's hash against it."""
    path = out_dir / RANKER_MANIFEST
    manifest = read_manifest(path, RankerManifest, "pinfeed train ranking")
    if tuple(manifest.heads) != ENGAGEMENTS:
        raise SchemaError(f"{path}: heads {manifest.heads} differ from {ENGAGEMENTS}; retrain")
    check_hashes(out_dir, {manifest.model_file: manifest.sha256}, path)
    return manifest
