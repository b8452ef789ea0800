"""ONNX export of the ranker and the manifest serving reads beside it.

The graph takes the four inputs of `training.ranking.features` (batch dimension dynamic) and
returns `logits` [B, 4], uncalibrated, heads in `ENGAGEMENTS` order. Calibration needs the
sample rates, which the manifest carries: `pinfeed.calibration.calibrate_logits(logits,
manifest.calibration_rate_vector())`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from pinfeed.errors import ConfigError, DataNotFoundError
from pinfeed.schema import ENGAGEMENTS
from training.ranking.config import RankerConfig
from training.ranking.features import (
    DENSE_FEATURES,
    INPUT_NAMES,
    LOG1P_FEATURES,
    SOURCE_COLUMNS,
    RankerArrays,
)
from training.ranking.model import MultiTaskRanker

MODEL_FILE = "ranker.onnx"
MANIFEST_FILE = "ranker.manifest.json"
OUTPUT_NAME = "logits"
_EXAMPLE_ROWS = 4


class RankerManifest(BaseModel):
    """What a consumer of `ranker.onnx` must know: inputs and their order, head order, and the
    sample rates that turn its logits into calibrated probabilities."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_file: str = MODEL_FILE
    sha256: str
    heads: tuple[str, ...] = ENGAGEMENTS
    output_name: str = OUTPUT_NAME
    input_names: tuple[str, ...] = INPUT_NAMES
    dense_features: tuple[str, ...] = DENSE_FEATURES
    log1p_features: tuple[str, ...] = tuple(sorted(LOG1P_FEATURES))
    source_columns: dict[str, str] = Field(
        default_factory=lambda: dict(SOURCE_COLUMNS),
        description="Model feature -> Feast full feature name (ranking_v1) or request column.",
    )
    ranker: RankerConfig
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
        return self

    def calibration_rate_vector(self) -> np.ndarray:
        """[H] effective sample rates in head order."""
        return np.array([self.calibration_sample_rates[h] for h in self.heads], dtype=np.float64)


def _example_inputs(config: RankerConfig) -> tuple[torch.Tensor, ...]:
    rows, dim = _EXAMPLE_ROWS, config.embedding_dim
    return (
        torch.zeros(rows, len(DENSE_FEATURES)),
        torch.zeros(rows, dtype=torch.int64),
        torch.ones(rows, dim),
        torch.ones(rows, dim),
    )


def export_ranker(
    model: MultiTaskRanker,
    out_dir: Path,
    *,
    negative_sample_rate: float,
    calibration_sample_rates: dict[str, float] | None = None,
) -> RankerManifest:
    """Write `ranker.onnx` (dynamic batch) and `ranker.manifest.json` into `out_dir`.

    Args:
        model: a trained ranker; exported in eval mode.
        negative_sample_rate: w used to build the training set.
        calibration_sample_rates: per-head effective rates (see
            `pinfeed.calibration.fit_effective_sample_rates`); default w for every head.
    """
    rates = calibration_sample_rates or dict.fromkeys(ENGAGEMENTS, negative_sample_rate)
    if set(rates) != set(ENGAGEMENTS) or not all(0.0 < r <= 1.0 for r in rates.values()):
        raise ConfigError(
            f"calibration_sample_rates = {rates}: need one rate in (0, 1] per head {ENGAGEMENTS}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.onnx.export(
        model,
        _example_inputs(model.config),
        dynamo=True,
        verbose=False,
        input_names=list(INPUT_NAMES),
        output_names=[OUTPUT_NAME],
        dynamic_shapes={name: {0: batch} for name in INPUT_NAMES},
        external_data=False,
    )
    path = out_dir / MODEL_FILE
    program.save(path, external_data=False)
    opset = next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
    manifest = RankerManifest(
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        ranker=model.config,
        negative_sample_rate=negative_sample_rate,
        calibration_sample_rates=rates,
        opset=opset,
        torch_version=torch.__version__,
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_ranker_manifest(out_dir: Path) -> RankerManifest:
    """Read the manifest and check the model file's hash against it."""
    manifest_path = out_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataNotFoundError(f"{manifest_path}: missing; run `pinfeed export` first")
    manifest = RankerManifest.model_validate_json(manifest_path.read_text())
    digest = hashlib.sha256((out_dir / manifest.model_file).read_bytes()).hexdigest()
    if digest != manifest.sha256:
        raise ConfigError(
            f"{out_dir / manifest.model_file}: sha256 differs from the manifest; "
            "re-export the model"
        )
    return manifest


def inference_session(path: Path, *, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A CPU ONNX Runtime session tuned for small-batch ranking: full graph optimisation,
    sequential execution, one inter-op thread, `intra_op_threads` (0: ORT's default, one per
    physical core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_parity_gap(model: nn.Module, session: ort.InferenceSession, arrays: RankerArrays) -> float:
    """max |torch logits - ONNX logits| over the rows of `arrays`."""
    model.eval()
    with torch.inference_mode():
        expected = model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays.as_tuple()))
    (actual,) = session.run([OUTPUT_NAME], arrays.feed())
    return float(np.max(np.abs(expected.numpy() - actual)))
