"""The artifacts of one training run, as serving reads them, checked before anything is served.

Layout (written by the training jobs):
    artifacts/<run_id>/retrieval/  query_tower.onnx, pin_tower.onnx, pins.faiss, pin_ids.npy,
                                   pin_index.json, manifest.json (hashes every file)
    artifacts/<run_id>/ranking/    ranker.onnx, ranker.manifest.json, utility.json

The ranker manifest is written by `training.ranking.export`, which imports torch; serving reads
the JSON with its own torch-free model of the fields it needs (`RankerSpec`, extra keys
ignored) and checks the model file's SHA-256 itself.

The check against the feature services (`check_against_services`): every feature a model reads
must be one the service it was trained on provides, under the same full name, and serving
assembles the model's columns in the manifest's order. A mismatch refuses the run with the
feature named, rather than serving a model fed the wrong columns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError
from pinfeed.schema import ENGAGEMENTS
from training.retrieval.manifest import RetrievalManifest, read_manifest

RANKER_MANIFEST = "ranker.manifest.json"
UTILITY_FILE = "utility.json"
POSITION = "position"
"""A request-time column, not a Feast feature: serving scores every candidate at position 0."""


class RankerShape(BaseModel):
    """The `ranker` block of the manifest: only the content embedding width matters here."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    embedding_dim: int = Field(gt=0)


class RankerSpec(BaseModel):
    """The fields of `ranker.manifest.json` serving relies on (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_file: str
    sha256: str
    heads: tuple[str, ...]
    output_name: str
    input_names: tuple[str, ...]
    dense_features: tuple[str, ...]
    source_columns: dict[str, str]
    calibration_sample_rates: dict[str, float]
    ranker: RankerShape

    @property
    def embedding_dim(self) -> int:
        return self.ranker.embedding_dim

    def rate_vector(self) -> list[float]:
        """Per-head effective sample rates, in head order."""
        return [self.calibration_sample_rates[head] for head in self.heads]


@dataclass(frozen=True)
class RunArtifacts:
    """One run's checked artifacts: where they are and what their manifests say."""

    run_id: str
    retrieval_dir: Path
    ranking_dir: Path
    retrieval: RetrievalManifest
    ranker: RankerSpec

    @property
    def ranker_path(self) -> Path:
        return self.ranking_dir / self.ranker.model_file

    @property
    def query_tower_path(self) -> Path:
        return self.retrieval_dir / self.retrieval.query_tower.file

    @property
    def utility_path(self) -> Path:
        return self.ranking_dir / UTILITY_FILE

    @property
    def version(self) -> str:
        """`<run_id>:<ranker sha[:8]>`: names the models in every response."""
        return f"{self.run_id}:{self.ranker.sha256[:8]}"


def read_ranker_spec(ranking_dir: Path) -> RankerSpec:
    """Read `ranker.manifest.json` and check the model file against its hash."""
    path = ranking_dir / RANKER_MANIFEST
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no ranker manifest; run `pinfeed train ranking` first")
    try:
        spec = RankerSpec.model_validate_json(path.read_text())
    except PydanticValidationError as error:
        raise SchemaError(f"{path}: not a ranker manifest serving can read: {error}") from error
    if tuple(spec.heads) != ENGAGEMENTS:
        raise SchemaError(f"{path}: heads {spec.heads} differ from {ENGAGEMENTS}; re-export")
    model = ranking_dir / spec.model_file
    if not model.is_file():
        raise DataNotFoundError(f"{model}: listed in {path} but missing; re-export the ranker")
    if hashlib.sha256(model.read_bytes()).hexdigest() != spec.sha256:
        raise SchemaError(f"{model}: SHA-256 differs from {path}; re-export the ranker")
    return spec


def load_run(artifacts_root: Path, run_id: str) -> RunArtifacts:
    """Read and hash-check both manifests of `artifacts_root/run_id`."""
    run_dir = artifacts_root / run_id
    if not run_dir.is_dir():
        raise DataNotFoundError(
            f"{run_dir}: no such run; train one (`pinfeed train retrieval|ranking`) or pick "
            f"another run_id from {artifacts_root}"
        )
    retrieval_dir, ranking_dir = run_dir / "retrieval", run_dir / "ranking"
    return RunArtifacts(
        run_id=run_id,
        retrieval_dir=retrieval_dir,
        ranking_dir=ranking_dir,
        retrieval=read_manifest(retrieval_dir, verify=True),
        ranker=read_ranker_spec(ranking_dir),
    )


@dataclass(frozen=True)
class ServiceFeatures:
    """Full feature names (`view__feature`) of the services the models were trained on."""

    retrieval: tuple[str, ...]
    ranking: tuple[str, ...]


def retrieval_columns(run: RunArtifacts, service: tuple[str, ...]) -> dict[str, str]:
    """Bare retrieval feature name -> the one full name in `service` that holds it.

    The query pin's projection repeats pin_content's names, so it never answers for a bare
    name (the towers read the query pin's content through `query_content`, not by name)."""
    names = (*run.retrieval.query_tower.dense_features, *run.retrieval.pin_tower.dense_features)
    columns: dict[str, str] = {}
    for name in names:
        found = [
            full
            for full in service
            if full.split("__", 1)[-1] == name and not full.startswith("query_pin_content__")
        ]
        if len(found) != 1:
            raise ConfigError(
                f"{run.retrieval_dir / 'manifest.json'}: feature {name!r} maps to {found or 'none'}"
                " in feature service retrieval_v1; retrain against the current service"
            )
        columns[name] = found[0]
    return columns


def check_against_services(run: RunArtifacts, services: ServiceFeatures) -> dict[str, str]:
    """Refuse a run whose models read features their services do not provide.

    Returns the retrieval name -> full-name map (`retrieval_columns`)."""
    manifest = run.ranking_dir / RANKER_MANIFEST
    for feature in (*run.ranker.dense_features, "topic", "content_embedding"):
        column = run.ranker.source_columns.get(feature)
        if column is None:
            raise ConfigError(f"{manifest}: dense feature {feature!r} has no source column")
        if column != POSITION and column not in services.ranking:
            raise ConfigError(
                f"{manifest}: feature {feature!r} reads {column!r}, which feature service "
                "ranking_v1 does not provide; retrain against the current service or restore it"
            )
    if run.retrieval.content_dim != run.ranker.embedding_dim:
        raise ConfigError(
            f"{run.retrieval_dir}: content_dim {run.retrieval.content_dim} != ranker "
            f"embedding_dim {run.ranker.embedding_dim}; both must come from one data set"
        )
    return retrieval_columns(run, services.retrieval)
