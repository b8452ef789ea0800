"""Logging the feature vectors serving used, through Feast's feature logging for `serving_v1`
(`feature_repo.feature_logging`), off the request path.

Per answered request in the sample (the service's `LoggingConfig.sample_rate`, decided per
request id), one logged row per served item: the user's online features (read for this
request), the item's pin features and content from the pin cache this request used, the query
pin's content, and the reward of the item's source cluster as selection saw it. `pinfeed
evaluate skew` joins these rows to a point-in-time offline recomputation.

The Recommender only puts references on a bounded queue (`offer`); one thread gathers them
and every `flush_s` seconds converts them to Feast's log layout in batches and writes one
parquet file. A full queue drops the request's vectors and counts them (`dropped`): feature
logs are a sample, answers come first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from feast import FeatureStore

from feature_repo.feature_logging import FeatureLogBuffer, ServedRows, alike, log_spec
from serving.stages.features import CLUSTER_IDS, IMPORTANCE, MEDOIDS, REWARD, UserView
from serving.stages.pin_cache import PinFeatureCache
from serving.stages.pipeline import Prepared, Recommendation

logger = logging.getLogger(__name__)
BATCH_REQUESTS = 32
"""Requests converted per call: most of the saving (0.31 against 1.86 ms per request at 100),
while one call holds the GIL for ~10 ms, not for a whole flush's worth of traffic."""
CONTENT = "pin_content__content_embedding"
TOPIC = "pin_content__topic"
QUERY_CONTENT = "query_pin_content__content_embedding"
QUERY_TOPIC = "query_pin_content__topic"
Logged = tuple[UserView, PinFeatureCache, Recommendation, datetime]
"""What one request's log rows are built from (not the Prepared request: its ranker inputs
are hundreds of rows the log never reads)."""


def candidate_features(
    user: UserView, cache: PinFeatureCache, result: Recommendation
) -> dict[str, Any]:
    """Full feature name -> [K] (or K lists) for the served items, as this request saw them."""
    rows, found = cache.rows(result.pin_ids)
    features: dict[str, Any] = {
        name: np.where(found, values[rows], np.nan) for name, values in cache.scalars.items()
    }
    features[CONTENT] = [
        cache.content[r].tolist() if f else None for r, f in zip(rows, found, strict=True)
    ]
    features[TOPIC] = [int(cache.topic[r]) if f else None for r, f in zip(rows, found, strict=True)]
    query_rows, query_found = cache.rows(result.query_pin_ids)
    query_found &= result.query_pin_ids >= 0
    features[QUERY_CONTENT] = [
        cache.content[r].tolist() if f else None
        for r, f in zip(query_rows, query_found, strict=True)
    ]
    features[QUERY_TOPIC] = [
        int(cache.topic[r]) if f else None for r, f in zip(query_rows, query_found, strict=True)
    ]
    features[REWARD] = _cluster_rewards(user, result.cluster_ids)
    return features


def _cluster_rewards(user: UserView, cluster_ids: np.ndarray) -> np.ndarray:
    if user.clusters is None or user.rewards is None:
        return np.full(len(cluster_ids), np.nan)
    by_cluster = dict(zip(user.clusters.cluster_ids.tolist(), user.rewards.tolist(), strict=True))
    return np.array([by_cluster.get(int(c), np.nan) for c in cluster_ids], np.float64)


def logged_rows(
    user: UserView, cache: PinFeatureCache, result: Recommendation, logged_at: datetime
) -> ServedRows:
    """One request's rows for Feast's feature log (`ServedRows`: what serving used)."""
    user_values = {
        name: (list(value) if name in (CLUSTER_IDS, MEDOIDS, IMPORTANCE) and value else value)
        for name, value in user.values.items()
    }
    return ServedRows.for_request(
        result.request_id,
        logged_at,
        user_id=result.user_id,
        pin_ids=result.pin_ids,
        query_pin_ids=result.query_pin_ids,
        cluster_ids=result.cluster_ids,
        per_request=user_values,
        per_candidate=candidate_features(user, cache, result),
    )


class FeatureLogger:
    """A bounded queue in front of Feast's feature log, drained by one thread."""

    def __init__(self, store: FeatureStore, capacity: int, flush_s: float) -> None:
        self.buffer = FeatureLogBuffer(store, log_spec(store))
        self.flush_s = flush_s
        self.dropped = 0
        self.logged = 0
        self._queue: queue.Queue[Logged] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._drain, name="feature-log", daemon=True)
        self._thread.start()

    def offer(self, prepared: Prepared, result: Recommendation) -> None:
        """Queue one answered request's vectors if it is in the sample."""
        if not self.buffer.wants(result.request_id):
            return
        try:
            self._queue.put_nowait((prepared.user, prepared.cache, result, datetime.now(UTC)))
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        written = time.monotonic()
        pending: list[ServedRows] = []
        while True:
            try:
                user, cache, result, moment = self._queue.get(timeout=self.flush_s)
                pending.append(logged_rows(user, cache, result, moment))
            except queue.Empty:
                pass
            except Exception:  # never let one bad request stop the log
                self.dropped += 1
                logger.exception("feature vectors of a request not logged")
            if pending and time.monotonic() - written >= self.flush_s:
                self._convert(pending)
                pending = []
                self._write()
                written = time.monotonic()

    def _convert(self, pending: list[ServedRows]) -> None:
        """The pending requests to Arrow in batches of `BATCH_REQUESTS` (per request, the
        conversion's fixed cost was most of the feature log's CPU, taken from the GIL the
        request path needs); a batch that fails is retried request by request, so a bad request
        loses only its own rows."""
        batches = [
            group[start : start + BATCH_REQUESTS]
            for group in alike(pending)
            for start in range(0, len(group), BATCH_REQUESTS)
        ]
        for batch in batches:
            try:
                self.buffer.add(ServedRows.concat(batch))
                continue
            except Exception:
                logger.exception("feature log batch conversion failed; trying each request")
            for rows in batch:
                try:
                    self.buffer.add(rows)
                except Exception:
                    self.dropped += 1
                    logger.exception("feature vectors of a request not logged")

    def _write(self) -> None:
        try:
            self.logged += self.buffer.flush()
        except Exception:  # the rows of this flush are lost; the next ones are tried again
            logger.exception("feature log write failed")
