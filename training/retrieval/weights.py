"""Per-example weights of the positives: the dual positive signal.

Conversions are the primary, sparse label and always weigh 1. Clicks and saves are denser
engagement positives that broaden coverage; they are discounted so they cannot hijack the
conversion gradient (seeds/dual_positive_signal.txt):

    conversion: 1
    click:      alpha * min(1, log1p(t / t_max) / log 2)      t = click dwell in seconds
    save:       save_weight

The click weight is 0 at t = 0, rises like log(1 + t / t_max), reaches exactly `alpha` at
t = t_max (log1p(1) / log 2 = 1) and stays capped there, so a 10-minute dwell counts no more
than a t_max one. A click without a recorded dwell (NaN) or with a negative one counts as t = 0.

The ablation variants change only this function (see `config.Variant`; an `_aux` variant
weighs its positives like the variant it adds the engagement task to). A weight of 0 means
"not a positive in this variant": `train_step` keeps such rows out of the softmax, so their
pins are not in-batch negatives either.
"""

from __future__ import annotations

import math

import torch

from training.retrieval.config import PositiveWeightConfig, Variant, main_loss_variant
from training.retrieval.features import KIND_CLICK, KIND_CONVERSION, KIND_SAVE


def click_dwell_weight(dwell_s: torch.Tensor, alpha: float, t_max_s: float) -> torch.Tensor:
    """[B] dwell seconds -> [B] weights `alpha * min(1, log1p(t / t_max) / log 2)`."""
    dwell = torch.nan_to_num(dwell_s.float(), nan=0.0).clamp_min(0.0)
    return alpha * torch.clamp(torch.log1p(dwell / t_max_s) / math.log(2.0), max=1.0)


def _click_weights(
    dwell_s: torch.Tensor, config: PositiveWeightConfig, variant: Variant
) -> torch.Tensor:
    """[B] weight each row would get were it a click, under `variant`."""
    if variant == "conversions_only":
        return torch.zeros_like(dwell_s, dtype=torch.float32)
    if variant == "clicks_unweighted":
        return torch.full_like(dwell_s, config.alpha, dtype=torch.float32)
    if variant == "min_dwell":
        dwell = torch.nan_to_num(dwell_s.float(), nan=0.0)
        return torch.where(dwell >= config.min_dwell_s, config.alpha, 0.0)
    return click_dwell_weight(dwell_s, config.alpha, config.t_max_s)


def positive_weights(
    kind: torch.Tensor, dwell_s: torch.Tensor, config: PositiveWeightConfig, variant: Variant
) -> torch.Tensor:
    """Weights of a batch of positives.

    Args:
        kind: [B] int64 codes of `features.POSITIVE_KINDS` (conversion 0, click 1, save 2).
        dwell_s: [B] float click dwell in seconds (NaN where there was no click).
        config: alpha, t_max_s, save_weight, min_dwell_s.
        variant: ablation arm; `conversions_only` zeroes clicks and saves, the others keep
            saves at `save_weight` and weight clicks as described in the module docstring.

    Returns:
        [B] float32 weights, >= 0.
    """
    variant = main_loss_variant(variant)
    save = 0.0 if variant == "conversions_only" else config.save_weight
    weights = torch.zeros(kind.shape, dtype=torch.float32, device=kind.device)
    weights = torch.where(kind == KIND_CONVERSION, 1.0, weights)
    weights = torch.where(kind == KIND_CLICK, _click_weights(dwell_s, config, variant), weights)
    return torch.where(kind == KIND_SAVE, save, weights)


def engagement_rows(kind: torch.Tensor) -> torch.Tensor:
    """[B] bool: rows whose positive is an engagement (click or save), the auxiliary task's
    positives whatever their softmax weight."""
    return (kind == KIND_CLICK) | (kind == KIND_SAVE)
