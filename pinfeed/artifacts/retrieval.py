"""The retrieval manifest (`retrieval/manifest.json`): the contract between the two-tower
training job and every reader of its towers and index.

For each exported tower it records the ONNX file, its SHA-256, the input names in call order
with dtypes and shapes, the dense feature order and where each feature comes from (its Feast
full name, `view__feature`), plus the widths, opset and library versions that produced it.
Serving feeds the towers in this order and refuses files whose hashes no longer match.

Notation: B batch (the dynamic axis, named "batch"), D content width, E output width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from pinfeed.artifacts.layout import (
    RETRIEVAL_MANIFEST,
    check_hashes,
    read_manifest,
    sha256_file,
    write_text_atomic,
)
from pinfeed.config import FrozenModel

QUERY_TOWER_INPUTS: tuple[str, ...] = ("user_id", "user_dense", "query_pin_id", "query_content")
"""Query tower inputs, in call order: [B] int64, [B, F_user] float32, [B] int64, [B, D] float32."""
PIN_TOWER_INPUTS: tuple[str, ...] = ("pin_id", "pin_dense", "pin_content", "topic")
"""Pin tower inputs, in call order: [B] int64, [B, F_pin] float32, [B, D] float32, [B] int64."""
QUERY_OUTPUT = "query_embedding"
PIN_OUTPUT = "pin_embedding"
BATCH_AXIS = "batch"
MANIFEST_VERSION = 2


class TensorSpec(FrozenModel):
    """One ONNX input or output; "batch" marks the dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


class TowerArtifact(FrozenModel):
    """One exported tower: its file (relative to the manifest), hash and signature."""

    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dense_features: tuple[str, ...]
    """Column order of the tower's dense input (`user_dense` or `pin_dense`)."""
    source_columns: dict[str, str]
    """Dense feature -> the Feast full name (`view__feature`) that holds it."""

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    def source_column_order(self) -> tuple[str, ...]:
        """Full feature names in `dense_features` order (what serving reads)."""
        return tuple(self.source_columns[name] for name in self.dense_features)


class RetrievalManifest(FrozenModel):
    """Everything a consumer needs to feed the towers and trust the files."""

    manifest_version: int = MANIFEST_VERSION
    model: str = "retrieval_two_tower"
    query_tower: TowerArtifact
    pin_tower: TowerArtifact
    log1p_features: tuple[str, ...]
    """Features the towers log1p themselves: consumers send raw values."""
    content_dim: int
    embedding_dim: int
    opset: int
    exporter: str
    versions: dict[str, str]
    files: dict[str, str] = Field(default_factory=dict)
    """Other files of the run's retrieval folder (the pin index) -> SHA-256."""
    training_config: dict[str, Any]
    """The training job's model config, as it was (training validates it back)."""


def write_retrieval_manifest(manifest: RetrievalManifest, out_dir: Path) -> Path:
    """Write `out_dir/manifest.json` (pretty-printed, stable key order)."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    return write_text_atomic(out_dir / RETRIEVAL_MANIFEST, text)


def read_retrieval_manifest(out_dir: Path, verify: bool = True) -> RetrievalManifest:
    """Load `out_dir/manifest.json`; with `verify`, check every listed file's hash."""
    path = out_dir / RETRIEVAL_MANIFEST
    manifest = read_manifest(path, RetrievalManifest, "pinfeed train retrieval")
    if verify:
        hashes = {
            manifest.query_tower.file: manifest.query_tower.sha256,
            manifest.pin_tower.file: manifest.pin_tower.sha256,
            **manifest.files,
        }
        check_hashes(out_dir, hashes, path)
    return manifest


def with_files(manifest: RetrievalManifest, out_dir: Path, names: list[str]) -> RetrievalManifest:
    """The manifest plus the hashes of more files in `out_dir` (e.g. the saved pin index)."""
    files = dict(manifest.files)
    files.update({name: sha256_file(out_dir / name) for name in names})
    return manifest.model_copy(update={"files": files})
