"""Configuration of a retrieval training job, as read from `configs/retrieval.yaml`.

A job config says how to train (model settings without table sizes, which come from the data)
and where (Ray Train options). `RetrievalJobConfig()` is the default the YAML file mirrors, so
a job runs without a file. Typos fail loudly (`extra="forbid"`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pinfeed.artifacts.index import IndexConfig
from pinfeed.config import FrozenModel, load_yaml_model
from training.ray_options import RayOptions
from training.retrieval.config import (
    PositiveWeightConfig,
    RetrievalConfig,
    TowerConfig,
    Variant,
)


class TowerWidths(FrozenModel):
    """The tower shapes a user chooses; table sizes are measured (`TowerConfig.from_data`)."""

    id_dim: int = Field(32, gt=0, description="Width of the user and pin id embeddings.")
    topic_dim: int = Field(8, gt=0, description="Width of the topic embedding.")
    hidden_dims: tuple[int, ...] = Field((128,), description="Hidden MLP widths of each tower.")
    output_dim: int = Field(64, gt=0, description="Width of the L2-normalised output.")


class RetrievalSettings(FrozenModel):
    """`RetrievalConfig` less the measured table sizes (same fields, same meaning)."""

    towers: TowerWidths = TowerWidths()
    weights: PositiveWeightConfig = PositiveWeightConfig()
    index: IndexConfig = IndexConfig()
    variant: Variant = "dual_positive"
    temperature: float = Field(0.05, gt=0.0)
    learn_temperature: bool = False
    logq_correction: bool = True
    aux_weight: float = Field(0.1, ge=0.0)
    aux_hidden: int = Field(64, gt=0)
    batch_size: int = Field(1024, gt=1, description="Rows per in-batch softmax, per worker.")
    learning_rate: float = Field(1e-3, gt=0.0)
    epochs: int = Field(6, gt=0)
    seed: int = 0

    def sized(self, towers: TowerConfig) -> RetrievalConfig:
        """The full model config once the tables are sized (`dataset.sized_towers`)."""
        return RetrievalConfig(towers=towers, **self.model_dump(exclude={"towers"}))


class RetrievalJobConfig(FrozenModel):
    """One `train_retrieval` job: run id, model settings, Ray options."""

    run_id: str | None = Field(None, description="artifacts/<run_id>/; default: a new run.")
    model: RetrievalSettings = RetrievalSettings()
    ray: RayOptions = RayOptions()


def load_job_config(path: Path) -> RetrievalJobConfig:
    """Read a job config YAML; raise ConfigError naming the bad field."""
    return load_yaml_model(path, RetrievalJobConfig)
