"""Typed, frozen configuration of the retrieval model, its loss and its index.

Loaded once at the edge (CLI, Ray job) and passed down; a typo in a YAML key fails loudly
(`extra="forbid"`). Table sizes (`n_user_buckets`, `n_pin_buckets`, `n_topics`, `content_dim`)
come from the data: `TowerConfig.from_data` is the one place that measures them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, Self

import numpy as np
from pydantic import Field, model_validator

from pinfeed.artifacts.index import IndexConfig
from pinfeed.config import FrozenModel
from pinfeed.errors import ConfigError
from pinfeed.schema import UNKNOWN_TOPIC

Variant = Literal[
    "conversions_only",
    "clicks_unweighted",
    "min_dwell",
    "dual_positive",
    "dual_positive_aux",
    "conversions_aux",
]
"""The ablation arms. They differ only in positive weights and the auxiliary head:

- `conversions_only`: clicks and saves get weight 0 (their rows are dropped).
- `clicks_unweighted`: every click weighs `alpha`, whatever its dwell.
- `min_dwell`: clicks with dwell under `min_dwell_s` are dropped, the rest weigh `alpha`.
- `dual_positive`: clicks weigh `alpha * min(1, log1p(t / t_max) / log 2)`.
- `dual_positive_aux`: `dual_positive` plus the auxiliary engagement task (its own head and
  loss on every click and save, `model.EngagementHead`).
- `conversions_aux`: `conversions_only` plus that auxiliary task: the other way the seed's
  engagement signal can enter (a separate task head, not extra positives).
"""

AUX_VARIANTS: Mapping[Variant, Variant] = MappingProxyType(
    {"dual_positive_aux": "dual_positive", "conversions_aux": "conversions_only"}
)
"""Variants with the auxiliary engagement task -> the variant whose positive weights their
main (softmax) loss uses."""


def main_loss_variant(variant: Variant) -> Variant:
    """The variant whose positive weights `variant`'s softmax loss uses (itself, or the
    variant an `_aux` arm adds the engagement task to)."""
    return AUX_VARIANTS.get(variant, variant)


class PositiveWeightConfig(FrozenModel):
    """Per-example weights of the positive kinds (see `training.retrieval.weights`)."""

    alpha: float = Field(0.5, ge=0.0, description="Weight of a click at or past t_max dwell.")
    t_max_s: float = Field(
        60.0, gt=0.0, description="Dwell (s) at which the click weight reaches alpha and caps."
    )
    save_weight: float = Field(0.3, ge=0.0, description="Constant weight of a save (repin).")
    min_dwell_s: float = Field(
        10.0, ge=0.0, description="`min_dwell` variant: clicks shorter than this are dropped."
    )


class TowerConfig(FrozenModel):
    """Shapes of both towers. Embedding tables are sized from the data (`from_data`)."""

    n_user_buckets: int = Field(gt=0, description="Rows of the user id table (ids mod this).")
    n_pin_buckets: int = Field(gt=0, description="Rows of each pin id table (ids mod this).")
    n_topics: int = Field(gt=0, description="Rows of the topic table (topic mod this).")
    content_dim: int = Field(gt=0, description="D: length of a pin content embedding.")
    id_dim: int = Field(32, gt=0, description="Width of the user and pin id embeddings.")
    topic_dim: int = Field(8, gt=0, description="Width of the topic embedding.")
    hidden_dims: tuple[int, ...] = Field((128,), description="Hidden MLP widths of each tower.")
    output_dim: int = Field(64, gt=0, description="D_out: width of the L2-normalised output.")

    @classmethod
    def from_data(
        cls,
        user_ids: np.ndarray,
        pin_ids: np.ndarray,
        topics: np.ndarray,
        content_dim: int,
        **overrides: object,
    ) -> Self:
        """Size the tables so every id seen in training gets its own row.

        Ids are taken mod the table size; with the dense ids the generator and importer
        assign (0..n-1) that is the identity, and an id never seen (a new pin at serving
        time) shares a row with an old one instead of failing. A topic may be
        `UNKNOWN_TOPIC` (-1: an imported pin without enough co-engagement to place it); the
        towers give it its own row, so only known topics size the table.
        """
        for name, ids in (("user_id", user_ids), ("pin_id", pin_ids)):
            if len(ids) == 0:
                raise ConfigError(f"{name}: no ids to size the embedding table from")
            if int(np.min(ids)) < 0:
                raise ConfigError(f"{name}: negative id {int(np.min(ids))}; ids must be >= 0")
        topics = np.asarray(topics)
        if len(topics) and int(np.min(topics)) < UNKNOWN_TOPIC:
            raise ConfigError(
                f"topic: id {int(np.min(topics))}; topics are >= 0, or {UNKNOWN_TOPIC} for unknown"
            )
        known = topics[topics >= 0]
        return cls(
            n_user_buckets=int(np.max(user_ids)) + 1,
            n_pin_buckets=int(np.max(pin_ids)) + 1,
            n_topics=int(np.max(known)) + 1 if len(known) else 1,
            content_dim=content_dim,
            **overrides,
        )


class RetrievalConfig(FrozenModel):
    """Everything one retrieval training run needs besides its data."""

    towers: TowerConfig
    weights: PositiveWeightConfig = PositiveWeightConfig()
    index: IndexConfig = IndexConfig()
    variant: Variant = "dual_positive"
    temperature: float = Field(
        0.05, gt=0.0, description="Cosine similarity is divided by this (initial value if learned)."
    )
    learn_temperature: bool = Field(False, description="Learn the temperature (log-parametrised).")
    logq_correction: bool = Field(True, description="Subtract log q(pin) from in-batch logits.")
    aux_weight: float = Field(
        0.1, ge=0.0, description="Weight of the auxiliary engagement loss (the `_aux` variants)."
    )
    aux_hidden: int = Field(
        64, gt=0, description="Hidden width of the auxiliary engagement head (`_aux` variants)."
    )
    batch_size: int = Field(1024, gt=1, description="In-batch softmax: batch size = 1 + negatives.")
    learning_rate: float = Field(1e-3, gt=0.0)
    epochs: int = Field(1, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _aux_needs_weight(self) -> Self:
        if self.uses_aux_head and self.aux_weight == 0.0:
            raise ConfigError(f"aux_weight: must be > 0 for variant {self.variant}")
        return self

    @property
    def uses_aux_head(self) -> bool:
        """Whether the model carries the auxiliary engagement head."""
        return self.variant in AUX_VARIANTS
