"""One training run on disk, `<home>/artifacts/<run_id>/`:

    run.json                       RunRecord: run id and when the run was created
    retrieval/                     query_tower.onnx, pin_tower.onnx, pins.faiss, pin_ids.npy,
                                   pin_index.json, training_set.json, training.json,
                                   manifest.json (hashes every other file)
    ranking/                       ranker.onnx, ranker.manifest.json, utility.json,
                                   single_head.pt (evaluation only), training_run.json
    checkpoints/                   Ray Train checkpoints of the retrieval job

Run ids have one format, `YYYYmmdd-HHMMSS-xxxxxx` (UTC time plus 6 hex digits), unless the user
names a run; "newest" always means the newest `created_at` in `run.json`, never a sort by name
or by file time, so a named run and a dated one compare correctly.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import AwareDatetime, BaseModel
from pydantic import ValidationError as PydanticValidationError

from pinfeed.config import FrozenModel, problems
from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError

RUN_RECORD = "run.json"
RETRIEVAL_DIR = "retrieval"
RANKING_DIR = "ranking"
CHECKPOINTS_DIR = "checkpoints"

QUERY_TOWER_FILE = "query_tower.onnx"
PIN_TOWER_FILE = "pin_tower.onnx"
RETRIEVAL_MANIFEST = "manifest.json"
INDEX_FILE = "pins.faiss"
INDEX_IDS_FILE = "pin_ids.npy"
INDEX_META_FILE = "pin_index.json"
TRAINING_SET_FILE = "training_set.json"
RETRIEVAL_SUMMARY = "training.json"

RANKER_FILE = "ranker.onnx"
RANKER_MANIFEST = "ranker.manifest.json"
UTILITY_FILE = "utility.json"
BASELINE_FILE = "single_head.pt"
RANKING_RECORD = "training_run.json"

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A run id is a folder name: letters, digits, `.`, `_`, `-`; 128 characters at most."""
LATEST = "latest"
"""Not a run id: where a command takes a run, it means the newest run that fits."""


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: UTC time plus 6 hex digits (`20261125-190412-3fa2c1`)."""
    return f"{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def check_run_id(run_id: str) -> str:
    """`run_id` itself, or a ConfigError saying what a run id may hold."""
    if run_id == LATEST:
        raise ConfigError(f"run_id: {LATEST!r} names no run here; give the run's own id")
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise ConfigError(
            f"run_id: {run_id!r} is not a run id (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 128 characters)"
        )
    return run_id


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` through a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)
    return path


Manifest = TypeVar("Manifest", bound=BaseModel)


def read_manifest(path: Path, model: type[Manifest], train: str) -> Manifest:
    """A manifest file as `model`; a missing or unreadable one names `train`, the command
    that writes it again."""
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no manifest here; train one with `{train}`")
    try:
        return model.model_validate_json(path.read_text())
    except PydanticValidationError as error:
        raise SchemaError(
            f"{path}: not a manifest this version reads ({problems(error)}); retrain with `{train}`"
        ) from None


def check_hashes(folder: Path, hashes: dict[str, str], manifest: Path) -> None:
    """Every file of `hashes` (name -> SHA-256) exists in `folder` with that hash."""
    for name, sha in hashes.items():
        file = folder / name
        if not file.is_file():
            raise DataNotFoundError(f"{file}: listed in {manifest} but missing; retrain the run")
        if sha256_file(file) != sha:
            raise SchemaError(f"{file}: SHA-256 differs from {manifest}; retrain the run")


class RunRecord(FrozenModel):
    """`run.json`: written once, by the job that creates the run."""

    run_id: str
    created_at: AwareDatetime


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run; creating the folder is `create()`, nothing happens on init."""

    root: Path

    @classmethod
    def of(cls, artifacts: Path, run_id: str) -> RunLayout:
        return cls(artifacts / check_run_id(run_id))

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def record_path(self) -> Path:
        return self.root / RUN_RECORD

    @property
    def retrieval(self) -> Path:
        return self.root / RETRIEVAL_DIR

    @property
    def ranking(self) -> Path:
        return self.root / RANKING_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def retrieval_manifest(self) -> Path:
        return self.retrieval / RETRIEVAL_MANIFEST

    @property
    def ranker_manifest(self) -> Path:
        return self.ranking / RANKER_MANIFEST

    @property
    def ranker_model(self) -> Path:
        return self.ranking / RANKER_FILE

    @property
    def utility(self) -> Path:
        """The run's utility weights (hand-picked at training, replaced by the optimiser)."""
        return self.ranking / UTILITY_FILE

    @property
    def baseline(self) -> Path:
        return self.ranking / BASELINE_FILE

    def has_retrieval(self) -> bool:
        return self.retrieval_manifest.is_file()

    def has_ranking(self) -> bool:
        return self.ranker_manifest.is_file()

    def record(self) -> RunRecord:
        """The run record; a folder made by hand (no run.json) counts from its change time."""
        if self.record_path.is_file():
            return read_manifest(self.record_path, RunRecord, "pinfeed train retrieval")
        made = datetime.fromtimestamp(self.root.stat().st_mtime, tz=UTC)
        return RunRecord(run_id=self.run_id, created_at=made)

    def create(self) -> RunLayout:
        """Make the run folder and its record (kept if the run exists already)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.record_path.is_file():
            record = RunRecord(run_id=self.run_id, created_at=datetime.now(UTC))
            write_text_atomic(self.record_path, record.model_dump_json(indent=2) + "\n")
        return self
