"""Pure training and inference steps over one batch, with no Ray in sight: the Ray Train loop
calls these per shard batch, and the tests call them directly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from pinfeed.artifacts.ranker import RankerInputs


@dataclass(frozen=True)
class RankerBatch:
    """Model inputs as tensors (shapes in `pinfeed.artifacts.ranker`) plus labels [B, H]."""

    dense: Tensor
    topic: Tensor
    pin_embedding: Tensor
    query_embedding: Tensor
    labels: Tensor

    @classmethod
    def from_arrays(cls, arrays: RankerInputs, labels: NDArray[np.float32]) -> RankerBatch:
        return cls(
            *(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays.as_tuple()),
            labels=torch.from_numpy(np.asarray(labels, dtype=np.float32)),
        )

    def inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self.dense, self.topic, self.pin_embedding, self.query_embedding)


def train_step(
    model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, batch: RankerBatch
) -> float:
    """One gradient step; returns the batch loss. The optimiser must hold `loss_fn`'s parameters
    too when it has any (uncertainty weighting)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(*batch.inputs()), batch.labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.inference_mode()
def predict_logits(
    model: nn.Module, arrays: RankerInputs, batch_size: int = 4096
) -> NDArray[np.float32]:
    """Logits [N, H] for every row, in eval mode, batch by batch."""
    model.eval()
    parts = []
    for start in range(0, len(arrays), batch_size):
        chunk = arrays.take(slice(start, start + batch_size))
        parts.append(model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in chunk.as_tuple())))
    return torch.cat(parts).numpy()
