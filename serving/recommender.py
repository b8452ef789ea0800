"""The Recommender deployment: Features, QuerySelector, Retriever and Scorer in one process,
the Ranker behind a DeploymentHandle.

Why these share a deployment: each is a few hundred microseconds to a few milliseconds of
numpy/ORT/faiss, they share the pin cache (tens of MB at 100k pins, which every separate
deployment would have to hold or receive), and each extra handle hop costs 1-2 ms. The ranker
is the one stage worth scaling apart and placing on a GPU, and batching across requests only
pays where requests from many callers meet, so it is its own deployment
(`benchmarks/serve_load.py` measures the choice).

The replica follows `<state_dir>/active_run.json` (a reload swaps the whole pipeline) and checks
every `cache_refresh_s` for a newer materialisation of the pin views, reloading the pin cache on
a background thread with its own Feast store.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.config import ServingConfig
from serving.online import STORE_ERRORS, OnlineStoreUnavailable, connect
from serving.pipeline import Pipeline, Recommendation, RecommendQuery
from serving.state import FileWatch, ServingState

logger = logging.getLogger("ray.serve")


@serve.deployment(max_ongoing_requests=16)
class Recommender:
    def __init__(self, config: ServingConfig, ranker: DeploymentHandle) -> None:
        self.config = config
        self.ranker = ranker
        self.state = ServingState(config.state)
        self.watch = FileWatch(self.state.active_run_path)
        self.store = connect(config.project, config.redis_url)
        self.watch.changed()
        self.pipeline = Pipeline(config, self.store, self.state.active_run())
        self._checked = time.monotonic()
        self._refresh: asyncio.Future[bool] | None = None

    async def recommend(self, query: RecommendQuery) -> Recommendation:
        """Features -> QuerySelector -> Retriever -> Ranker (handle) -> Scorer."""
        self._follow_state()
        pipeline = self.pipeline
        prepared = pipeline.prepare(query)
        logits = await self.ranker.rank.remote(prepared.inputs)
        return pipeline.finish(prepared, logits)

    def check_run(self, run_id: str) -> str:
        """Load `run_id` fully (artifacts, hashes, feature services) without serving it; the
        ingress calls this before pointing every replica at the run. Returns its version."""
        return Pipeline(self.config, self.store, run_id).run.version

    def model_version(self) -> str:
        self._follow_state()
        return self.pipeline.model_version()

    def _follow_state(self) -> None:
        if self.watch.changed():
            self.pipeline = Pipeline(self.config, self.store, self.state.active_run())
        now = time.monotonic()
        if now - self._checked >= self.config.cache_refresh_s and (
            self._refresh is None or self._refresh.done()
        ):
            self._checked = now
            loop = asyncio.get_running_loop()
            self._refresh = loop.run_in_executor(None, self._refresh_cache)

    def _refresh_cache(self) -> bool:
        try:
            store = connect(self.config.project, self.config.redis_url)
            return self.pipeline.refresh_cache(store)
        except (OnlineStoreUnavailable, *STORE_ERRORS) as error:
            logger.warning("pin cache refresh skipped: %s", error)
            return False
