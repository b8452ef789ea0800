"""The Recommender deployment: Features, QuerySelector, Retriever and Scorer in one process,
the Ranker behind a DeploymentHandle (and, for when the Ranker is lost or stalls, a session
of the same run in-process: `Recommender._rank`).

Why these share a deployment: each is a few hundred microseconds to a few milliseconds of
numpy/ORT/faiss, they share the pin cache (tens of MB at 100k pins, which every separate
deployment would have to hold or receive), and each extra handle hop costs 1-2 ms. The ranker
is the one stage worth scaling apart and placing on a GPU, and batching across requests only
pays where requests from many callers meet, so it is its own deployment
(`benchmarks/serve_load.py` measures the choice).

Every answer's items go to the served log and, for requests in the sample, its feature vectors
to Feast's feature log, both through bounded queues drained by background threads
(`serving.stages.served`, `serving.stages.feature_log`), so neither adds a write to the
request's latency.

Which run and weights it serves is its `user_config` (`serving.config.ActiveModels`): Serve
calls `reconfigure` on every replica when it changes, and the replica switches whole
(`serving.stages.active`). Every `cache_refresh_s` it checks for a newer materialisation of
the pin views and reloads the pin cache on a background thread with its own Feast store.

It also checks that the online store holds what it reads (`serving.stages.store_health`) at
start, on every switch and with every cache refresh: while a serving view is empty, every
answer is flagged degraded and `status` (so `/healthz`) says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

import numpy as np
from feast import FeatureStore
from ray import serve
from ray.exceptions import RayError, TaskCancelledError
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

from pinfeed.artifacts.ranker import RankerInputs
from pinfeed.artifacts.runs import load_run
from pinfeed.errors import ConfigError, PinfeedError
from pinfeed.traffic.served import open_served_log
from serving.config import ActiveModels, ServingConfig, parse_user_config
from serving.deployments.handles import lost_replica
from serving.stages.active import ActivePipeline, pipeline_builder
from serving.stages.breaker import Detour
from serving.stages.contract import check_against_services
from serving.stages.feature_log import FeatureLogger
from serving.stages.metrics import RequestMetrics
from serving.stages.online import STORE_ERRORS, connect
from serving.stages.pipeline import Pipeline, Recommendation, RecommendQuery
from serving.stages.ranker import RankerModel, RankerPool
from serving.stages.retriever import Retriever
from serving.stages.served import ServedRecorder, served_items
from serving.stages.store_health import KnownUsers, StoreHealth, check_store

logger = logging.getLogger("ray.serve")
EMPTY_RECHECK_S = 1.0


@serve.deployment(max_ongoing_requests=16)
class Recommender:
    def __init__(self, config: ServingConfig, ranker: DeploymentHandle) -> None:
        self.config = config
        self.ranker = ranker
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.local_ranker = RankerPool(config.project.artifacts, config.ranker.intra_op_threads)
        self.detour = Detour(config.ranker.local_for_s)
        self.active = ActivePipeline(pipeline_builder(config, self._connect))
        log = open_served_log(
            config.state, config.store_url, self._connect().project, config.attribution_ttl_s
        )
        self.served = ServedRecorder(log, config.served_queue)
        self.feature_log = _feature_logger(self._connect(), config)
        self.metrics = RequestMetrics()
        self.known_users = KnownUsers.from_store(self._connect())
        self.store_health = StoreHealth()
        self._check_store()
        self._checked = time.monotonic()
        self._refresh: asyncio.Future[bool] | None = None
        self.pin_cache_refreshes = 0  # pin cache reloads after the load state changed

    def _connect(self) -> FeatureStore:
        """A Feast store of its own for whoever asks (a pipeline, a check, a cache refresh):
        they run on different threads."""
        return connect(self.config.project, self.config.store_url, self.config.store_timeout_s)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve the run and weights of `user_config`; the old pipeline serves meanwhile."""
        models = parse_user_config(ActiveModels, user_config)
        await asyncio.to_thread(self.active.apply, models)
        await asyncio.to_thread(self._check_store)
        await asyncio.to_thread(self._hold_local_ranker, models.run_id)

    def _hold_local_ranker(self, run_id: str) -> None:
        """Load the run's ranker for `_rank`'s detour now, not on the first request that needs
        it (when the Ranker is lost, every such request would load its own copy)."""
        if self.active.models is None or self.active.models.run_id != run_id:
            return  # the switch failed; the run serving now is held already
        try:
            self.local_ranker.activate(run_id)
        except PinfeedError as error:
            logger.warning("no in-process ranker for the detour: %s", error)

    async def recommend(self, query: RecommendQuery) -> Recommendation:
        """Features -> QuerySelector -> Retriever -> Ranker (handle) -> Scorer."""
        pipeline = self.active.get()
        self._refresh_cache_soon(pipeline)
        started = time.perf_counter()
        # Feast reads, faiss and the query tower block: on a worker thread, the event loop
        # keeps taking requests, batching ranker calls and answering /healthz meanwhile
        prepared = await asyncio.to_thread(pipeline.prepare, query)
        prepared_at = time.perf_counter()
        logits = await self._rank(prepared.inputs)
        ranked_at = time.perf_counter()
        result = pipeline.finish(prepared, logits)
        if self.store_health.empty and not result.degraded:
            result = dataclasses.replace(result, degraded=True)
        seconds = {
            "prepare": prepared_at - started,
            "rank": ranked_at - prepared_at,
            "finish": time.perf_counter() - ranked_at,
        }
        known = result.cold_start and query.user_id in self.known_users
        self.metrics.record(result.degraded, result.cold_start, seconds, known)
        self.served.offer(served_items(result))
        if self.feature_log is not None:
            self.feature_log.offer(prepared, result)
        return result

    async def _rank(self, inputs: RankerInputs) -> np.ndarray:
        """Logits [M, H] from the Ranker deployment; from this replica's own session of the
        same run where the Ranker replica was lost or has not answered within
        `ranker.local_after_s` (a replica being replaced: requests wait for the new one), and
        for `ranker.local_for_s` after that (`Detour`), so a lost Ranker costs latency, never
        an answer. The model is the same either way."""
        if self.detour.take():
            logits = await self._rank_remote(inputs)
            if logits is not None:
                return logits
        self.metrics.record_local_rank(self.detour.reason or "lost")
        local = await asyncio.to_thread(self.local_ranker.logits, [inputs])
        return local[0]

    async def _rank_remote(self, inputs: RankerInputs) -> np.ndarray | None:
        """The Ranker deployment's logits, or None where it was lost or slow (the detour
        records which). A cancelled call (this request's deadline passed) tells nothing."""
        try:
            response = self.ranker.rank.remote(inputs)
            try:
                logits = await asyncio.wait_for(response, self.config.ranker.local_after_s)
            except TimeoutError:
                self.detour.failed("slow")
                with contextlib.suppress(Exception):  # best effort; it may have just failed
                    response.cancel()
            except TaskCancelledError:
                raise
            except (RayError, RayServeException) as error:
                if not lost_replica(error):
                    self.detour.through()  # it answered, with an error of its own
                    raise
                self.detour.failed("lost")
            else:
                self.detour.through()
                return logits
        finally:
            self.detour.released()
        logger.warning("the Ranker is %s; ranking in the Recommender", self.detour.reason)
        return None

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

    async def status(self) -> dict[str, str | int | None]:
        """{"replica": this replica's id (as Serve's status lists it), "model_version": what
        answers name now, "run_id": its run, "error": why the last switch failed on this
        replica, "served_recorded" / "served_dropped": items of this replica's answers
        written to / dropped from the served log, "pin_cache_refreshes":
        how often it reloaded its pin cache after the pin views' load state changed,
        "answers_<kind>": its answers by kind (`serving.stages.metrics`), and
        "answers_ranked_locally_<lost|slow>": those it ranked itself (`_rank`)}."""
        if self.active.pipeline is not None:  # /healthz alone keeps the store check current
            self._refresh_cache_soon(self.active.pipeline)
        models = self.active.models
        return {
            "replica": self.replica_id,
            "model_version": self.active.version,
            "run_id": models.run_id if models else None,
            "error": self.active.error,
            "store_problem": self.store_health.problem,
            "served_recorded": self.served.recorded,
            "served_dropped": self.served.dropped,
            "features_logged": self.feature_log.logged if self.feature_log else 0,
            "features_dropped": self.feature_log.dropped if self.feature_log else 0,
            "pin_cache_refreshes": self.pin_cache_refreshes,
            **{f"answers_{kind}": count for kind, count in self.metrics.totals.items()},
        }

    async def flush_served(self) -> bool:
        """Wait until this replica's answers so far are in the served log (ingestion and
        tests call it before reading the log); False on timeout."""
        return await asyncio.to_thread(self.served.flush)

    def _refresh_cache_soon(self, pipeline: Pipeline) -> None:
        now = time.monotonic()
        # an empty store is rechecked every second, so a reload clears the flag at once
        every = EMPTY_RECHECK_S if self.store_health.empty else self.config.cache_refresh_s
        if now - self._checked < every:
            return
        if self._refresh is not None and not self._refresh.done():
            return
        self._checked = now
        self._refresh = asyncio.get_running_loop().run_in_executor(
            None, self._refresh_cache, pipeline
        )

    def _refresh_cache(self, pipeline: Pipeline) -> bool:
        if not self._store_loaded():
            return False  # keep the last good copy: reloading now would read an empty store
        try:
            # checked again once the new copy is read: a flush meanwhile keeps the old one
            refreshed = pipeline.refresh_cache(self._connect(), self._store_loaded)
        except (PinfeedError, *STORE_ERRORS) as error:
            logger.warning("pin cache refresh skipped: %s", error)
            return False
        self.pin_cache_refreshes += refreshed  # one refresh runs at a time (_refresh_cache_soon)
        return refreshed

    def _store_loaded(self) -> bool:
        """Recheck the store; False while a serving view is empty."""
        self._check_store()
        return not self.store_health.empty

    def _check_store(self) -> None:
        """Recheck the online store. A failed check keeps the last verdict (the breaker already
        flags answers while the store is down), whatever failed: a registry caught mid-rewrite
        by `feast apply`, a ledger entry it cannot parse. A health check must not take the
        replica or a switch down with it."""
        try:
            health = check_store(self._connect())
        except Exception:
            logger.exception("online store check failed; keeping the last verdict")
            return
        if health.error:
            logger.warning("%s", health.error)
            return
        if health.problem and health.problem != self.store_health.problem:
            logger.error("answers flagged degraded: %s", health.problem)
        self.store_health = health
        self.metrics.record_ages(health.ages_s)


def _feature_logger(store: FeatureStore, config: ServingConfig) -> FeatureLogger | None:
    """Feast feature logging of serving_v1, or None (with a warning) when the registered
    service has no logging config."""
    try:
        return FeatureLogger(store, config.feature_log_queue, config.feature_log_flush_s)
    except ConfigError as error:
        logger.warning("feature vectors are not logged: %s", error)
        return None
