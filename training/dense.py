"""The dense transform both models put first, inside their exported graphs: serving passes raw
feature values and the graph does the rest, so training and serving cannot transform apart.

    raw [B, F] -> NaN as 0 -> log1p(max(x, 0)) on heavy-tailed columns -> (x - mean) / std

Which columns are heavy-tailed comes from `training.features.LOG1P_FEATURES`; standardisation is
optional (the ranker uses it, the towers do not) and its mean and std are buffers fitted on
training rows, so they travel in the checkpoint and the ONNX graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.features import LOG1P_FEATURES


class DenseTransform(nn.Module):
    """Raw dense features [B, F] -> model-ready [B, F] (see the module docstring)."""

    def __init__(self, names: tuple[str, ...], standardize: bool = False) -> None:
        super().__init__()
        self.names = names
        mask = torch.tensor([name in LOG1P_FEATURES for name in names], dtype=torch.bool)
        # Persistent: a checkpoint keeps the mask it was trained with, whatever the tables say
        # when it is loaded again.
        self.register_buffer("log1p_columns", mask)
        self.standardize = standardize
        if standardize:
            self.register_buffer("mean", torch.zeros(len(names)))
            self.register_buffer("std", torch.ones(len(names)))

    def transform(self, dense: Tensor) -> Tensor:
        """NaN -> 0, then log1p(max(x, 0)) on the heavy-tailed columns; [B, F] -> [B, F]."""
        dense = torch.nan_to_num(dense, nan=0.0)
        return torch.where(self.log1p_columns, torch.log1p(dense.clamp_min(0.0)), dense)

    @torch.no_grad()
    def fit(self, dense: Tensor) -> None:
        """Set the standardisation from training rows [N, F] (constant columns keep std 1)."""
        if not self.standardize:
            raise ValueError("fit: this transform was built with standardize=False")
        values = self.transform(dense)
        self.mean.copy_(values.mean(dim=0))
        std = values.std(dim=0)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, dense: Tensor) -> Tensor:
        values = self.transform(dense)
        return (values - self.mean) / self.std if self.standardize else values
