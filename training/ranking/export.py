"""ONNX export of the ranker and the manifest consumers read beside it
(`pinfeed.artifacts.ranker`: `RankerInputs` in, `logits` [B, H] out, heads in `ENGAGEMENTS`
order, uncalibrated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from pinfeed.artifacts.layout import RANKER_FILE, sha256_file
from pinfeed.artifacts.ranker import (
    RANKER_INPUTS,
    RANKER_OUTPUT,
    RankerInputs,
    RankerManifest,
    write_ranker_manifest,
)
from pinfeed.errors import ConfigError
from pinfeed.schema import ENGAGEMENTS
from training.features import log1p_features
from training.ranking.config import RankerConfig
from training.ranking.features import DENSE_FEATURES, SOURCE_COLUMNS
from training.ranking.model import MultiTaskRanker

_EXAMPLE_ROWS = 4


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
    write_manifest: bool = True,
) -> RankerManifest:
    """Write `ranker.onnx` (dynamic batch) into `out_dir`, and its manifest unless told not to
    (the training job writes it last, once the run's other files are in place).

    Args:
        model: a trained ranker; exported in eval mode.
        negative_sample_rate: w used to build the training set.
        calibration_sample_rates: per-head effective rates (see
            `pinfeed.calibration.fit_effective_sample_rates`); default w for every head.
        write_manifest: write `ranker.manifest.json` now.
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
        input_names=list(RANKER_INPUTS),
        output_names=[RANKER_OUTPUT],
        dynamic_shapes={name: {0: batch} for name in RANKER_INPUTS},
        external_data=False,
    )
    path = out_dir / RANKER_FILE
    program.save(path, external_data=False)
    opset = next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
    manifest = RankerManifest(
        sha256=sha256_file(path),
        dense_features=DENSE_FEATURES,
        log1p_features=log1p_features(DENSE_FEATURES),
        source_columns=SOURCE_COLUMNS,
        embedding_dim=model.config.embedding_dim,
        training_config=model.config.model_dump(mode="json"),
        negative_sample_rate=negative_sample_rate,
        calibration_sample_rates=rates,
        opset=opset,
        torch_version=torch.__version__,
    )
    if write_manifest:
        write_ranker_manifest(manifest, out_dir)
    return manifest


def manifest_model_config(manifest: RankerManifest) -> RankerConfig:
    """The model config a manifest was exported with (to rebuild the ranker in torch)."""
    return RankerConfig.model_validate(manifest.training_config)


def max_parity_gap(model: nn.Module, session: ort.InferenceSession, inputs: RankerInputs) -> float:
    """max |torch logits - ONNX logits| over the rows of `inputs`."""
    model.eval()
    with torch.inference_mode():
        expected = model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.as_tuple()))
    (actual,) = session.run([RANKER_OUTPUT], inputs.feed())
    return float(np.max(np.abs(expected.numpy() - actual)))
