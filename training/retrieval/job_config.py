"""Configuration of a retrieval training job, as read from `configs/retrieval.yaml`.

A job config says how to train (model settings without table sizes, which come from the data)
and where (Ray Train options). `RetrievalJobConfig()` is the default the YAML file mirrors, so
`pinfeed run` needs no file. Typos fail loudly (`extra="forbid"`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pinfeed.errors import ConfigError, DataNotFoundError
from training.ray_train import RayTrainSettings
from training.retrieval.config import (
    IndexConfig,
    PositiveWeightConfig,
    RetrievalConfig,
    TowerConfig,
    Variant,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TowerWidths(_Frozen):
    """The tower shapes a user chooses; table sizes are measured (`TowerConfig.from_data`)."""

    id_dim: int = Field(32, gt=0, description="Width of the user and pin id embeddings.")
    topic_dim: int = Field(8, gt=0, description="Width of the topic embedding.")
    hidden_dims: tuple[int, ...] = Field((128,), description="Hidden MLP widths of each tower.")
    output_dim: int = Field(64, gt=0, description="Width of the L2-normalised output.")


class RetrievalSettings(_Frozen):
    """`RetrievalConfig` less the measured table sizes (same fields, same meaning)."""

    towers: TowerWidths = TowerWidths()
    weights: PositiveWeightConfig = PositiveWeightConfig()
    index: IndexConfig = IndexConfig()
    variant: Variant = "dual_positive"
    temperature: float = Field(0.05, gt=0.0)
    learn_temperature: bool = False
    logq_correction: bool = True
    aux_weight: float = Field(0.1, ge=0.0)
    batch_size: int = Field(1024, gt=1, description="Rows per in-batch softmax, per worker.")
    learning_rate: float = Field(1e-3, gt=0.0)
    epochs: int = Field(6, gt=0)
    seed: int = 0

    def sized(self, towers: TowerConfig) -> RetrievalConfig:
        """The full model config once the tables are sized (`dataset.sized_towers`)."""
        return RetrievalConfig(towers=towers, **self.model_dump(exclude={"towers"}))


class RayOptions(_Frozen):
    """`RayTrainSettings` less the run name and (optional) storage path the job derives."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool | None = Field(None, description="None: use GPUs when the cluster has them.")
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0)
    checkpoints_to_keep: int = Field(2, ge=1)
    storage_path: Path | None = Field(
        None,
        description="Checkpoint storage shared by all nodes; default <home>/artifacts/<run>/checkpoints.",
    )

    def settings(self, name: str, default_storage: Path) -> RayTrainSettings:
        return RayTrainSettings(
            name=name,
            storage_path=(self.storage_path or default_storage).resolve(),
            **self.model_dump(exclude={"storage_path"}),
        )


class RetrievalJobConfig(_Frozen):
    """One `train_retrieval` job: run id, model settings, Ray options."""

    run_id: str | None = Field(None, description="artifacts/<run_id>/; default: a timestamp.")
    model: RetrievalSettings = RetrievalSettings()
    ray: RayOptions = RayOptions()


def load_job_config(path: Path) -> RetrievalJobConfig:
    """Read a job config YAML; raise ConfigError naming the bad field."""
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no retrieval job config; see configs/retrieval.yaml")
    try:
        return RetrievalJobConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{path}: {errors}") from None
