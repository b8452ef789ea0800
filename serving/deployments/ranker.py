"""The Ranker deployment: batched ONNX ranking, separately scalable and placeable on a GPU.

`@serve.batch` merges several requests' rows into one ORT call per run (`RankerPool`). Its
`user_config` is the same `ActiveModels` as the Recommender's: `reconfigure` loads the new run
ahead of the first request for it; requests built on the previous run still score with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from pinfeed.artifacts.ranker import RankerInputs
from serving.config import ServingConfig, parse_active_models
from serving.stages.ranker import RankerPool


@serve.deployment(max_ongoing_requests=32)
class Ranker:
    def __init__(self, config: ServingConfig) -> None:
        self.pool = RankerPool(config.project.artifacts, config.ranker.intra_op_threads)
        self.rank.set_max_batch_size(config.ranker.max_batch_size)
        self.rank.set_batch_wait_timeout_s(config.ranker.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.pool.activate(parse_active_models(user_config).run_id)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def rank(self, requests: list[RankerInputs]) -> list[np.ndarray]:
        """Logits [M_i, H] for each request of the batch, scored by the request's own run."""
        return self.pool.logits(requests)
