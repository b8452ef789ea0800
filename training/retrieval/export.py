"""Export both towers to ONNX with a dynamic batch axis and write the manifest.

Exporter choice (checked on torch 2.13): both `dynamo=True` (torch.export + onnxscript) and
`dynamo=False` (TorchScript tracing) export these towers with parity around 1e-7. We pass
`dynamo=True` explicitly: it is the maintained path, gives the output a static width
(`[batch, E]` instead of a symbolic name) and the TorchScript exporter is deprecated. Each
tower takes about 2 s to export this way versus 0.1 s traced.

Written to a run's `retrieval/` folder (`pinfeed.artifacts.layout`): `query_tower.onnx`,
`pin_tower.onnx`, `manifest.json` (`pinfeed.artifacts.retrieval.RetrievalManifest`).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime
import torch
from torch import nn

from pinfeed.artifacts.layout import PIN_TOWER_FILE, QUERY_TOWER_FILE, sha256_file
from pinfeed.artifacts.retrieval import (
    BATCH_AXIS,
    PIN_OUTPUT,
    PIN_TOWER_INPUTS,
    QUERY_OUTPUT,
    QUERY_TOWER_INPUTS,
    RetrievalManifest,
    TensorSpec,
    TowerArtifact,
    write_retrieval_manifest,
)
from training.features import log1p_features, source_columns
from training.retrieval.config import RetrievalConfig
from training.retrieval.features import PIN_DENSE_FEATURES, USER_DENSE_FEATURES
from training.retrieval.model import RetrievalModel

ONNX_OPSET = 18


def example_query_inputs(config: RetrievalConfig, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Random query tower inputs in `QUERY_TOWER_INPUTS` order (tracing, tests, benchmarks)."""
    towers = config.towers
    return (
        torch.randint(0, towers.n_user_buckets, (batch_size,)),
        torch.rand(batch_size, len(USER_DENSE_FEATURES)) * 50.0,
        torch.randint(0, towers.n_pin_buckets, (batch_size,)),
        torch.randn(batch_size, towers.content_dim),
    )


def example_pin_inputs(config: RetrievalConfig, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Random pin tower inputs in `PIN_TOWER_INPUTS` order."""
    towers = config.towers
    return (
        torch.randint(0, towers.n_pin_buckets, (batch_size,)),
        torch.rand(batch_size, len(PIN_DENSE_FEATURES)) * 50.0,
        torch.randn(batch_size, towers.content_dim),
        torch.randint(0, towers.n_topics, (batch_size,)),
    )


def _specs(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            name=name,
            dtype=str(tensor.dtype).removeprefix("torch."),
            shape=(BATCH_AXIS, *tensor.shape[1:]),
        )
        for name, tensor in zip(names, tensors, strict=True)
    )


def export_tower(
    tower: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    output_name: str,
    path: Path,
) -> None:
    """Export one tower (eval mode) to `path` with axis 0 of every input and output dynamic."""
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    tower.eval()
    torch.onnx.export(
        tower,
        example,
        str(path),
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=list(input_names),
        output_names=[output_name],
        dynamic_shapes=tuple({0: batch} for _ in example),
        external_data=False,
        verbose=False,
    )


def _tower_artifact(
    path: Path,
    names: tuple[str, ...],
    example: tuple[torch.Tensor, ...],
    output: TensorSpec,
    dense_features: tuple[str, ...],
) -> TowerArtifact:
    return TowerArtifact(
        file=path.name,
        sha256=sha256_file(path),
        inputs=_specs(names, example),
        outputs=(output,),
        dense_features=dense_features,
        source_columns=source_columns(dense_features),
    )


def export_retrieval(
    model: RetrievalModel, config: RetrievalConfig, out_dir: Path, write: bool = True
) -> RetrievalManifest:
    """Export both towers of a trained model to `out_dir`; their manifest, written there unless
    `write` is False (the job adds the index's hashes and writes it last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    width = config.towers.output_dim
    query_example = example_query_inputs(config, 2)
    pin_example = example_pin_inputs(config, 2)
    query_path, pin_path = out_dir / QUERY_TOWER_FILE, out_dir / PIN_TOWER_FILE
    with torch.no_grad():
        export_tower(model.query_tower, query_example, QUERY_TOWER_INPUTS, QUERY_OUTPUT, query_path)
        export_tower(model.pin_tower, pin_example, PIN_TOWER_INPUTS, PIN_OUTPUT, pin_path)
    manifest = RetrievalManifest(
        query_tower=_tower_artifact(
            query_path,
            QUERY_TOWER_INPUTS,
            query_example,
            TensorSpec(name=QUERY_OUTPUT, dtype="float32", shape=(BATCH_AXIS, width)),
            USER_DENSE_FEATURES,
        ),
        pin_tower=_tower_artifact(
            pin_path,
            PIN_TOWER_INPUTS,
            pin_example,
            TensorSpec(name=PIN_OUTPUT, dtype="float32", shape=(BATCH_AXIS, width)),
            PIN_DENSE_FEATURES,
        ),
        log1p_features=log1p_features((*USER_DENSE_FEATURES, *PIN_DENSE_FEATURES)),
        content_dim=config.towers.content_dim,
        embedding_dim=width,
        opset=ONNX_OPSET,
        exporter="torch.onnx.export(dynamo=True)",
        versions={
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        training_config=config.model_dump(mode="json"),
    )
    if write:
        write_retrieval_manifest(manifest, out_dir)
    return manifest


def manifest_model_config(manifest: RetrievalManifest) -> RetrievalConfig:
    """The model config a manifest was exported with (to rebuild the towers in torch)."""
    return RetrievalConfig.model_validate(manifest.training_config)
