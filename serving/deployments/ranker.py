"""The Ranker deployment: batched ONNX ranking, separately scalable and placeable on a GPU.

`@serve.batch` merges several requests' rows into one ORT call per run (`RankerPool`). Its
`user_config` names the served run (`ServedRun`): `reconfigure` loads it off the event loop
ahead of the first request for it; requests built on the previous run still score with it,
and a run the pool does not hold is loaded off the event loop before the batch is scored.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve

from pinfeed.artifacts.ranker import RankerInputs
from serving.config import ServedRun, ServingConfig, parse_user_config
from serving.stages.ranker import RankerPool


@serve.deployment(max_ongoing_requests=32)
class Ranker:
    def __init__(self, config: ServingConfig) -> None:
        self.pool = RankerPool(config.project.artifacts, config.ranker.intra_op_threads)
        self.rank.set_max_batch_size(config.ranker.max_batch_size)
        self.rank.set_batch_wait_timeout_s(config.ranker.batch_wait_timeout_s)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        run_id = parse_user_config(ServedRun, user_config).run_id
        await asyncio.to_thread(self.pool.activate, run_id)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def rank(self, requests: list[RankerInputs]) -> list[np.ndarray]:
        """Logits [M_i, H] for each request of the batch, scored by the request's own run."""
        for run_id in {request.run_id for request in requests}:
            if not self.pool.holds(run_id):
                await asyncio.to_thread(self.pool.model, run_id)
        return self.pool.logits(requests)
