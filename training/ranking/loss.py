"""Multi-task losses for the ranker: per-head binary cross-entropy on logits, combined with
equal weights (the default the seed settled on, since the four tasks are similar) or with
learnt homoscedastic-uncertainty weights (Kendall, Gal & Cipolla 2018).

Both take logits [B, H] and labels [B, H] in `pinfeed.schema.ENGAGEMENTS` order and return a
scalar; `per_head_bce` gives the [H] parts for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pinfeed.errors import SchemaError
from pinfeed.schema import ENGAGEMENTS
from training.ranking.config import LossConfig


def per_head_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean BCE-with-logits per head: [B, H], [B, H] -> [H]."""
    if logits.shape != labels.shape:
        raise SchemaError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    return F.binary_cross_entropy_with_logits(
        logits, labels.to(logits.dtype), reduction="none"
    ).mean(dim=0)


class EqualWeightLoss(nn.Module):
    """sum_t BCE_t: every head counts the same."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return per_head_bce(logits, labels).sum()


class UncertaintyWeightedLoss(nn.Module):
    """sum_t exp(-s_t) BCE_t + s_t / 2, with s_t = log sigma_t^2 learnt (Kendall et al.'s
    classification form, 1/sigma^2 L + log sigma). Heads the model finds noisy get down-weighted;
    the s_t / 2 term stops every sigma from growing without bound. `log_variance` is a parameter:
    give this module's parameters to the optimiser along with the model's."""

    def __init__(self, num_heads: int = len(ENGAGEMENTS)) -> None:
        super().__init__()
        self.log_variance = nn.Parameter(torch.zeros(num_heads))

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        losses = per_head_bce(logits, labels)
        return (torch.exp(-self.log_variance) * losses + 0.5 * self.log_variance).sum()


def build_loss(config: LossConfig) -> nn.Module:
    """The loss module the config names."""
    if config.weighting == "uncertainty":
        return UncertaintyWeightedLoss()
    return EqualWeightLoss()
