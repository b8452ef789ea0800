"""The Recommender deployment: Features, QuerySelector, Retriever and Scorer in one process,
the Ranker behind a DeploymentHandle.

Why these share a deployment: each is a few hundred microseconds to a few milliseconds of
numpy/ORT/faiss, they share the pin cache (tens of MB at 100k pins, which every separate
deployment would have to hold or receive), and each extra handle hop costs 1-2 ms. The ranker
is the one stage worth scaling apart and placing on a GPU, and batching across requests only
pays where requests from many callers meet, so it is its own deployment
(`benchmarks/serve_load.py` measures the choice).

Which run and weights it serves is its `user_config` (`serving.config.ActiveModels`): Serve
calls `reconfigure` on every replica when it changes, and the replica switches whole
(`serving.stages.active`). Every `cache_refresh_s` it checks for a newer materialisation of
the pin views and reloads the pin cache on a background thread with its own Feast store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from feast import FeatureStore
from ray import serve
from ray.serve.handle import DeploymentHandle

from pinfeed.artifacts.runs import load_run
from pinfeed.errors import PinfeedError
from serving.config import ActiveModels, ServingConfig, parse_user_config
from serving.stages.active import ActivePipeline, pipeline_builder
from serving.stages.contract import check_against_services
from serving.stages.online import STORE_ERRORS, connect
from serving.stages.pipeline import Pipeline, Recommendation, RecommendQuery
from serving.stages.ranker import RankerModel
from serving.stages.retriever import Retriever

logger = logging.getLogger("ray.serve")


@serve.deployment(max_ongoing_requests=16)
class Recommender:
    def __init__(self, config: ServingConfig, ranker: DeploymentHandle) -> None:
        self.config = config
        self.ranker = ranker
        self.active = ActivePipeline(pipeline_builder(config, self._connect))
        self._checked = time.monotonic()
        self._refresh: asyncio.Future[bool] | None = None

    def _connect(self) -> FeatureStore:
        """A Feast store of its own for whoever asks (a pipeline, a check, a cache refresh):
        they run on different threads."""
        return connect(self.config.project, self.config.redis_url)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve the run and weights of `user_config`; the old pipeline serves meanwhile."""
        models = parse_user_config(ActiveModels, user_config)
        await asyncio.to_thread(self.active.apply, models)

    async def recommend(self, query: RecommendQuery) -> Recommendation:
        """Features -> QuerySelector -> Retriever -> Ranker (handle) -> Scorer."""
        pipeline = self.active.get()
        self._refresh_cache_soon(pipeline)
        prepared = pipeline.prepare(query)
        logits = await self.ranker.rank.remote(prepared.inputs)
        return pipeline.finish(prepared, logits)

    async def check_run(self, run_id: str) -> dict[str, str]:
        """Load run `run_id` (`latest`: the newest complete run), check it against the feature
        services and open both models' sessions, without serving it; the ingress calls this
        before switching every replica. {"run_id": the concrete id, "version": its version}."""

        def check() -> dict[str, str]:
            run = load_run(self.config.project.artifacts, run_id)
            check_against_services(run, self._connect())
            Retriever(run, self.config.retriever_threads)
            RankerModel(run.layout, self.config.ranker.intra_op_threads)
            return {"run_id": run.run_id, "version": run.version}

        return await asyncio.to_thread(check)

    async def status(self) -> dict[str, str | None]:
        """{"model_version": what answers name now, "run_id": its run, "error": why the last
        switch failed on this replica}."""
        models = self.active.models
        return {
            "model_version": self.active.version,
            "run_id": models.run_id if models else None,
            "error": self.active.error,
        }

    def _refresh_cache_soon(self, pipeline: Pipeline) -> None:
        now = time.monotonic()
        if now - self._checked < self.config.cache_refresh_s:
            return
        if self._refresh is not None and not self._refresh.done():
            return
        self._checked = now
        self._refresh = asyncio.get_running_loop().run_in_executor(
            None, self._refresh_cache, pipeline
        )

    def _refresh_cache(self, pipeline: Pipeline) -> bool:
        try:
            return pipeline.refresh_cache(self._connect())
        except (PinfeedError, *STORE_ERRORS) as error:
            logger.warning("pin cache refresh skipped: %s", error)
            return False
