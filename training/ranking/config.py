"""Typed, frozen configuration of the ranking model, its loss, its baseline and its training
job (the `training:` section of configs/ranking.yaml).

Loaded once at the edge (CLI, Ray job) and passed down; a typo in a key fails loudly
(`extra="forbid"`). `embedding_dim` and `num_topics` come from the data (the event set's
`embedding_dim`, the largest topic id + 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pinfeed.config import FrozenModel, load_yaml_section
from pinfeed.utility import HeadWeights
from training.ray_options import RayOptions

CONFIG_SECTIONS = ("training", "evaluation", "utility")
"""Top-level keys of configs/ranking.yaml; each job validates its own section."""


class RankerConfig(FrozenModel):
    """Shapes of the shared layers and the heads (notation in `training.ranking.model`)."""

    embedding_dim: int = Field(gt=0, description="D: length of a pin content embedding.")
    num_topics: int = Field(gt=0, description="Topic ids 0..num_topics-1; others share a bucket.")
    topic_dim: int = Field(8, gt=0, description="Width of the topic embedding.")
    hidden_dims: tuple[int, ...] = Field(
        (256, 128), min_length=1, description="Widths of the shared MLP layers."
    )
    head_dim: int = Field(
        32, ge=0, description="Hidden width of each head's tower; 0 makes each head one Linear."
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout after each shared layer.")


class LossConfig(FrozenModel):
    """How the four per-head losses are combined."""

    weighting: Literal["equal", "uncertainty"] = Field(
        "equal",
        description="equal: sum of per-head BCE; uncertainty: learnt weights (Kendall et al.).",
    )


class BaselineConfig(FrozenModel):
    """The single-head "any engagement" baseline: per-type importance weights of positives."""

    importance: HeadWeights = Field(
        default_factory=lambda: HeadWeights(closeup=1.0, save=2.0, click=2.0, long_click=4.0),
        description="Loss weight of a positive, by the most important engagement it carries.",
    )


class RankingTrainConfig(FrozenModel):
    """One ranking training run."""

    model: RankerConfig
    loss: LossConfig = LossConfig()
    negative_sample_rate: float = Field(
        0.1, gt=0.0, le=1.0, description="Fraction of unengaged impressions kept in training."
    )
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(1024, gt=0)
    epochs: int = Field(5, gt=0)
    seed: int = 0


class RankerOptions(FrozenModel):
    """The ranker's shape minus what the data fixes (embedding length, topic count)."""

    topic_dim: int = Field(8, gt=0)
    hidden_dims: tuple[int, ...] = Field((256, 128), min_length=1)
    head_dim: int = Field(32, ge=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class SplitConfig(FrozenModel):
    """Held-out days at the end of the event period (training uses everything before)."""

    validation_days: int = Field(2, ge=1, description="Tune the utility weights on these.")
    test_days: int = Field(2, ge=1, description="The report's un-downsampled impressions.")


class RankingJobConfig(FrozenModel):
    """The `training:` section of configs/ranking.yaml."""

    run_id: str | None = Field(
        None, description="Artifacts run to write; default: the run `train retrieval` made."
    )
    model: RankerOptions = RankerOptions()
    loss: LossConfig = LossConfig()
    baseline: BaselineConfig = BaselineConfig()
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(1024, gt=0)
    epochs: int = Field(5, gt=0)
    seed: int = 0
    split: SplitConfig = SplitConfig()
    ray: RayOptions = RayOptions()


def load_job_config(path: Path) -> RankingJobConfig:
    """The `training:` section of `path`, validated; errors name the field."""
    return load_yaml_section(path, "training", RankingJobConfig, CONFIG_SECTIONS)
