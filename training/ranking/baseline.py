"""The single-head baseline the multi-task ranker is compared against: the same shared layers,
one logit for "any engagement", trained with a per-type importance weight on each positive
(the seed's Eq. 1).

A row carrying several engagements is one positive weighted by its most important engagement:
the information loss the multi-task model removes. Negatives weigh 1.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pinfeed.errors import DataNotFoundError, SchemaError
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import HeadWeights
from training.ranking.config import RankerConfig
from training.ranking.model import SharedArch, head_tower


class BaselineRanker(nn.Module):
    """Shared layers + one head; `forward` returns logits [B, 1] (same inputs as
    `MultiTaskRanker`)."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        self.shared = SharedArch(config)
        self.head = head_tower(self.shared.out_dim, config.head_dim)

    def fit_normalizer(self, dense: Tensor) -> None:
        self.shared.dense.fit(dense)

    def forward(
        self, dense: Tensor, topic: Tensor, pin_embedding: Tensor, query_embedding: Tensor
    ) -> Tensor:
        return self.head(self.shared(dense, topic, pin_embedding, query_embedding))


def baseline_targets(labels: Tensor, importance: HeadWeights) -> tuple[Tensor, Tensor]:
    """Engagement labels [B, H] -> (any-engagement target [B], sample weight [B]).

    The weight of a positive is the largest importance among the engagements it carries; a
    negative weighs 1.
    """
    if labels.ndim != 2 or labels.shape[1] != len(ENGAGEMENTS):
        raise SchemaError(f"labels must be [B, {len(ENGAGEMENTS)}], got {tuple(labels.shape)}")
    engaged = labels > 0.5
    weights = torch.as_tensor(importance.vector(), dtype=torch.float32, device=labels.device)
    per_type = torch.where(engaged, weights, torch.zeros_like(weights))
    any_engaged = engaged.any(dim=1)
    sample_weight = torch.where(
        any_engaged, per_type.max(dim=1).values, torch.ones_like(any_engaged, dtype=torch.float32)
    )
    return any_engaged.float(), sample_weight


class ImportanceWeightedLoss(nn.Module):
    """sum_i ImportanceWeight(i) BCE(y_any(i), logit(i)) / B for logits [B, 1], labels [B, H]."""

    def __init__(self, importance: HeadWeights) -> None:
        super().__init__()
        self.importance = importance

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        target, weight = baseline_targets(labels, self.importance)
        losses = F.binary_cross_entropy_with_logits(logits.squeeze(1), target, reduction="none")
        return (weight * losses).mean()


def save_baseline(model: BaselineRanker, path: Path) -> Path:
    """The baseline's config and weights (evaluation reads them; serving never does)."""
    torch.save({"config": model.config.model_dump(), "state": model.state_dict()}, path)
    return path


def load_baseline(path: Path) -> BaselineRanker:
    """A baseline saved by `save_baseline`, in eval mode."""
    if not path.is_file():
        raise DataNotFoundError(
            f"{path}: no single-head baseline; train with `pinfeed train ranking`"
        )
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = BaselineRanker(RankerConfig.model_validate(saved["config"]))
    model.load_state_dict(saved["state"])
    return model.eval()
