"""The multi-task ranker: shared layers over user, pin, query-pin and cross features, and one
head per engagement (closeup, save, click, long_click).

Notation: B rows (candidates), F dense features (`features.DENSE_FEATURES`), D content
embedding length, T topic embedding width, H = 4 heads in `pinfeed.schema.ENGAGEMENTS` order.

    dense [B, F] ─ DenseTransform (nan->0, log1p, standardise) ┐
    topic [B] ──── topic embedding [B, T] ──────────────────┤
    pin_embedding [B, D] ──┬───────────────────────────────┤ concat ─ shared MLP ─ heads ─ [B, H]
    query_embedding [B, D] ┴ CrossArch (cosine, product) ───┘

The model returns logits; sigmoid, calibration and utility happen after it (and after the ONNX
export), so serving can change sample rates or utility weights without touching the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pinfeed.schema import ENGAGEMENTS
from training.dense import DenseTransform
from training.ranking.config import RankerConfig
from training.ranking.features import DENSE_FEATURES

HEADS = ENGAGEMENTS


class CrossArch(nn.Module):
    """Pin x query-pin interaction: [cosine similarity [B, 1], elementwise product [B, D]].
    A zero query embedding (no query pin) gives cosine 0 and product 0."""

    def forward(self, pin_embedding: Tensor, query_embedding: Tensor) -> Tensor:
        pin = F.normalize(pin_embedding, dim=1, eps=1e-8)
        query = F.normalize(query_embedding, dim=1, eps=1e-8)
        cosine = (pin * query).sum(dim=1, keepdim=True)
        return torch.cat([cosine, pin_embedding * query_embedding], dim=1)


class SharedArch(nn.Module):
    """Every input -> the shared representation [B, hidden_dims[-1]] the heads read."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.num_topics = config.num_topics
        self.dense = DenseTransform(DENSE_FEATURES, standardize=True)
        self.cross = CrossArch()
        # One extra row: topic ids outside [0, num_topics) (new topics, nulls as -1).
        self.topic = nn.Embedding(config.num_topics + 1, config.topic_dim)
        width = len(DENSE_FEATURES) + config.topic_dim + 3 * config.embedding_dim + 1
        layers: list[nn.Module] = []
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.out_dim = width

    def topic_bucket(self, topic: Tensor) -> Tensor:
        """[B] int64 topic ids -> [B] rows of the topic table; unknown ids -> the last row."""
        known = (topic >= 0) & (topic < self.num_topics)
        return torch.where(known, topic, torch.full_like(topic, self.num_topics))

    def forward(
        self, dense: Tensor, topic: Tensor, pin_embedding: Tensor, query_embedding: Tensor
    ) -> Tensor:
        features = torch.cat(
            [
                self.dense(dense),
                self.topic(self.topic_bucket(topic)),
                pin_embedding,
                query_embedding,
                self.cross(pin_embedding, query_embedding),
            ],
            dim=1,
        )
        return self.mlp(features)


def head_tower(in_dim: int, head_dim: int) -> nn.Module:
    """One head: [B, in_dim] -> [B, 1] logit, through a small hidden layer unless head_dim = 0."""
    if head_dim == 0:
        return nn.Linear(in_dim, 1)
    return nn.Sequential(nn.Linear(in_dim, head_dim), nn.ReLU(), nn.Linear(head_dim, 1))


class MultiTaskRanker(nn.Module):
    """Shared layers + one head per engagement; `forward` returns logits [B, H] in `HEADS`
    order (the order is fixed by `pinfeed.schema.ENGAGEMENTS` and recorded in the manifest)."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        self.shared = SharedArch(config)
        self.heads = nn.ModuleDict(
            {h: head_tower(self.shared.out_dim, config.head_dim) for h in HEADS}
        )

    def fit_normalizer(self, dense: Tensor) -> None:
        """Standardise dense features with training-set statistics ([N, F] raw rows)."""
        self.shared.dense.fit(dense)

    def forward(
        self, dense: Tensor, topic: Tensor, pin_embedding: Tensor, query_embedding: Tensor
    ) -> Tensor:
        shared = self.shared(dense, topic, pin_embedding, query_embedding)
        return torch.cat([self.heads[head](shared) for head in HEADS], dim=1)
