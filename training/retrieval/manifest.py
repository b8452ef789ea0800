"""`manifest.json` of the retrieval artifacts: the contract between training and serving.

It records, for each exported tower, the ONNX file, its SHA-256, the input names in call
order with dtypes and shapes, the dense feature order, the widths, the opset and the library
versions that produced it. Serving compares the feature lists with the feature service it
reads and refuses artifacts whose files no longer match their hashes. Torch-free on purpose.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pinfeed.errors import DataNotFoundError, SchemaError
from training.retrieval.config import RetrievalConfig

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Frozen):
    """One ONNX input or output; "batch" marks the dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


class TowerArtifact(_Frozen):
    """One exported tower: its file (relative to the manifest), hash and signature."""

    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dense_features: tuple[str, ...]
    """Column order of the tower's dense input (`user_dense` or `pin_dense`)."""


class RetrievalManifest(_Frozen):
    """Everything serving needs to feed the towers and trust the files."""

    manifest_version: int = MANIFEST_VERSION
    model: str = "retrieval_two_tower"
    query_tower: TowerArtifact
    pin_tower: TowerArtifact
    log1p_features: tuple[str, ...]
    """Features the towers log1p themselves: serving sends raw values."""
    content_dim: int
    embedding_dim: int
    opset: int
    exporter: str
    versions: dict[str, str]
    files: dict[str, str] = {}
    """Other artifact files (the pin index) -> SHA-256."""
    config: RetrievalConfig


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(manifest: RetrievalManifest, out_dir: Path) -> Path:
    """Write `out_dir/manifest.json` (pretty-printed, stable key order)."""
    path = out_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(out_dir: Path, verify: bool = True) -> RetrievalManifest:
    """Load `out_dir/manifest.json`; with `verify`, check every listed file's hash."""
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no retrieval manifest; run `pinfeed export` first")
    manifest = RetrievalManifest.model_validate_json(path.read_text())
    if verify:
        expected = {
            manifest.query_tower.file: manifest.query_tower.sha256,
            manifest.pin_tower.file: manifest.pin_tower.sha256,
            **manifest.files,
        }
        for name, sha in expected.items():
            file = out_dir / name
            if not file.is_file():
                raise DataNotFoundError(f"{file}: listed in the manifest but missing; re-export")
            if sha256_file(file) != sha:
                raise SchemaError(f"{file}: SHA-256 differs from the manifest; re-export the run")
    return manifest


def with_files(manifest: RetrievalManifest, out_dir: Path, names: list[str]) -> RetrievalManifest:
    """The manifest plus the hashes of more files in `out_dir` (e.g. the saved pin index)."""
    files = dict(manifest.files)
    files.update({name: sha256_file(out_dir / name) for name in names})
    return manifest.model_copy(update={"files": files})
