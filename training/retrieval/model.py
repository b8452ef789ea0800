"""Two-tower retrieval model: a query tower and a pin tower meeting in cosine similarity.

    query tower: [user dense | user id emb | query pin id emb | query pin content] -> MLP -> L2 norm
    pin tower:   [pin dense  | pin id emb  | topic emb        | pin content]       -> MLP -> L2 norm
    logits = cos(query, pin) / temperature

The towers return embeddings; the loss lives in `training.retrieval.loss` (the model does not
own it). Each tower takes plain tensors in the order of `pinfeed.artifacts.retrieval.*_TOWER_INPUTS`, so it exports
to ONNX as is and serving feeds it the same raw features (log1p happens inside).

Notation: B batch size, D content embedding width, E output width (`TowerConfig.output_dim`).
Only `nn.Embedding` is used: `nn.EmbeddingBag` exports as an ONNX Loop that ORT runs slowly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.dense import DenseTransform
from training.retrieval.config import RetrievalConfig, TowerConfig
from training.retrieval.features import PIN_DENSE_FEATURES, USER_DENSE_FEATURES, RetrievalBatch


class HashedEmbedding(nn.Module):
    """Ids [B] int64 -> [B, dim].

    Id `i >= 0` reads row `i mod n_buckets` (the identity for dense ids; a new id shares a row
    instead of failing); a negative id (`features.MISSING_ID`, e.g. no query pin) reads its own
    extra row `n_buckets`.
    """

    def __init__(self, n_buckets: int, dim: int) -> None:
        super().__init__()
        self.n_buckets = n_buckets
        self.table = nn.Embedding(n_buckets + 1, dim)
        nn.init.normal_(self.table.weight, std=0.05)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = torch.where(ids < 0, self.n_buckets, torch.remainder(ids, self.n_buckets))
        return self.table(rows)


def mlp(in_dim: int, hidden_dims: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack ending in a plain Linear to `out_dim`."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class QueryTower(nn.Module):
    """(user, query pin) -> [B, E] unit vectors."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.user_dense = DenseTransform(USER_DENSE_FEATURES)
        self.user_ids = HashedEmbedding(config.n_user_buckets, config.id_dim)
        self.query_pin_ids = HashedEmbedding(config.n_pin_buckets, config.id_dim)
        in_dim = len(USER_DENSE_FEATURES) + 2 * config.id_dim + config.content_dim
        self.mlp = mlp(in_dim, config.hidden_dims, config.output_dim)

    def forward(
        self,
        user_id: torch.Tensor,
        user_dense: torch.Tensor,
        query_pin_id: torch.Tensor,
        query_content: torch.Tensor,
    ) -> torch.Tensor:
        """user_id, query_pin_id [B] int64; user_dense [B, 12]; query_content [B, D] -> [B, E]."""
        features = torch.cat(
            [
                self.user_dense(user_dense),
                self.user_ids(user_id),
                self.query_pin_ids(query_pin_id),
                query_content,
            ],
            dim=1,
        )
        return F.normalize(self.mlp(features), dim=1)


class PinTower(nn.Module):
    """Pin -> [B, E] unit vectors; run once over the corpus to build the index."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.pin_dense = DenseTransform(PIN_DENSE_FEATURES)
        self.pin_ids = HashedEmbedding(config.n_pin_buckets, config.id_dim)
        self.topics = HashedEmbedding(config.n_topics, config.topic_dim)
        in_dim = len(PIN_DENSE_FEATURES) + config.id_dim + config.topic_dim + config.content_dim
        self.mlp = mlp(in_dim, config.hidden_dims, config.output_dim)

    def forward(
        self,
        pin_id: torch.Tensor,
        pin_dense: torch.Tensor,
        pin_content: torch.Tensor,
        topic: torch.Tensor,
    ) -> torch.Tensor:
        """pin_id, topic [B] int64; pin_dense [B, 8]; pin_content [B, D] -> [B, E]."""
        features = torch.cat(
            [
                self.pin_dense(pin_dense),
                self.pin_ids(pin_id),
                self.topics(topic),
                pin_content,
            ],
            dim=1,
        )
        return F.normalize(self.mlp(features), dim=1)


class Temperature(nn.Module):
    """Divides cosine similarities by a temperature, fixed or learned (as its log, kept > 1e-3)."""

    def __init__(self, initial: float, learn: bool) -> None:
        super().__init__()
        log_t = torch.tensor(math.log(initial))
        if learn:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def value(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp_min(1e-3)

    def forward(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine / self.value


class EngagementHead(nn.Module):
    """The auxiliary engagement task's head (the `_aux` variants): logit of "engaged" for a
    (query, pin) pair, [B, E] x [B, E] -> [B].

    Its own layers, `MLP([q | p | q * p])` with one hidden layer, and its own loss
    (`loss.engagement_aux_loss`): "separate task head; auxiliary has its own loss"
    (seeds/dual_positive_signal.txt). Its gradient reaches the shared towers through q and p,
    scaled by `aux_weight`; serving never runs it (only the towers are exported).
    """

    def __init__(self, embedding_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = mlp(3 * embedding_dim, (hidden,), 1)

    def forward(self, query: torch.Tensor, pin: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([query, pin, query * pin], dim=1)).squeeze(1)


class RetrievalModel(nn.Module):
    """Both towers, the temperature and (for the `_aux` variants) the engagement head."""

    def __init__(self, config: RetrievalConfig) -> None:
        super().__init__()
        self.query_tower = QueryTower(config.towers)
        self.pin_tower = PinTower(config.towers)
        self.temperature = Temperature(config.temperature, config.learn_temperature)
        self.engagement_head = (
            EngagementHead(config.towers.output_dim, config.aux_hidden)
            if config.uses_aux_head
            else None
        )

    def forward(self, batch: RetrievalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (query embeddings [B, E], positive pin embeddings [B, E]), row i paired with row i."""
        query = self.query_tower(
            batch.user_id, batch.user_dense, batch.query_pin_id, batch.query_content
        )
        pin = self.pin_tower(batch.pin_id, batch.pin_dense, batch.pin_content, batch.topic)
        return query, pin

    def logits(self, query: torch.Tensor, pin: torch.Tensor) -> torch.Tensor:
        """[B, E] x [N, E] -> [B, N] in-batch logits cos / temperature (row i's positive at i)."""
        return self.temperature(query @ pin.T)
