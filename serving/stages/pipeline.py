"""One run's stages composed in-process: Features -> QuerySelector -> Retriever -> (Ranker) ->
Scorer. `prepare` does everything before the ranker, `finish` everything after, so the
Recommender deployment awaits the Ranker deployment in between, and an in-process caller (the
tests, the benchmark's floor) calls a `RankerPool` there instead.

Degradation, decided here: the online store not answering -> the user is treated as unknown,
candidates are the most popular pins (or the context pin's neighbours), `degraded` is set; an
unknown user (no features, no clusters) -> the same popular candidates, `cold_start` set. Either
way the candidates are ranked and scored like any other, from the cached pin features.

Shapes: M candidates, H = 4 heads, k results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from feast import FeatureStore

from pinfeed.artifacts.ranker import CONTENT_EMBEDDING, TOPIC, RankerInputs
from pinfeed.artifacts.runs import RunArtifacts
from pinfeed.utility import UtilityWeights
from serving.config import ServingConfig
from serving.stages.breaker import StoreBreaker
from serving.stages.contract import check_against_services
from serving.stages.features import Features, UserView
from serving.stages.online import (
    SERVING_SERVICE,
    FeatureRefs,
    OnlineStoreUnavailable,
    materialised_until,
    service_refs,
)
from serving.stages.pin_cache import PinFeatureCache, load_pin_cache
from serving.stages.ranker import build_ranker_inputs
from serving.stages.retriever import Candidates, Retriever
from serving.stages.scorer import Scorer
from serving.stages.selector import NO_CLUSTER, QuerySelector

POPULARITY = "pin_features__pin_impressions_30d"


@dataclass(frozen=True)
class RecommendQuery:
    request_id: int
    user_id: int
    k: int
    context_pin_id: int | None = None
    exclude_seen: bool = True


@dataclass(frozen=True)
class Prepared:
    """A request up to the ranker: its candidates and the ranker's inputs for them (which
    carry the run id, so the ranker scores them with this pipeline's run)."""

    query: RecommendQuery
    candidates: Candidates
    inputs: RankerInputs
    degraded: bool
    cold_start: bool
    user: UserView
    cache: PinFeatureCache
    """The user's online features and the pin cache this request read (feature logging)."""


@dataclass(frozen=True)
class Recommendation:
    """The top k, best first: `pin_ids`, `utility`, `cluster_ids`, `query_pin_ids` [k]
    (-1: none), `probabilities` [k, H]."""

    request_id: int
    user_id: int
    run_id: str
    model_version: str
    degraded: bool
    cold_start: bool
    pin_ids: np.ndarray
    utility: np.ndarray
    probabilities: np.ndarray
    cluster_ids: np.ndarray
    query_pin_ids: np.ndarray


def read_pin_cache(
    store: FeatureStore,
    run: RunArtifacts,
    refs: FeatureRefs,
    config: ServingConfig,
    pin_ids: np.ndarray,
) -> PinFeatureCache:
    """Every pin of `pin_ids` (the run's index), read from the online store."""
    views = sorted({ref.split(":", 1)[0] for ref in refs.pin})
    until = materialised_until(store, views)
    source = run.ranker.source_columns
    return load_pin_cache(
        store,
        refs.pin,
        pin_ids,
        content_column=source[CONTENT_EMBEDDING],
        topic_column=source[TOPIC],
        popularity_column=POPULARITY,
        content_dim=run.ranker.embedding_dim,
        n_popular=config.popular_pins,
        materialised=until,
    )


class Pipeline:
    """The stages of one run and one set of utility weights (see the module docstring)."""

    def __init__(
        self,
        config: ServingConfig,
        store: FeatureStore,
        run: RunArtifacts,
        weights: UtilityWeights,
        cache: PinFeatureCache | None = None,
    ) -> None:
        """`cache`: a pin cache to reuse when it holds exactly this run's index pins."""
        check_against_services(run, store)
        self.config = config
        self.run = run
        refs = service_refs(store, SERVING_SERVICE)
        self.pin_views = sorted({ref.split(":", 1)[0] for ref in refs.pin})
        self.retriever = Retriever(run, config.retriever_threads)
        pin_ids = np.unique(self.retriever.index.pin_ids)
        if cache is None or not np.array_equal(cache.pin_ids, pin_ids):
            cache = read_pin_cache(store, run, refs, config, pin_ids)
        self.features = Features(store, refs, cache, StoreBreaker(config.store_breaker_s))
        self.selector = QuerySelector(config.selection)
        self.scorer = Scorer.of(run.ranker.calibration_rate_vector(), weights)

    @property
    def version(self) -> str:
        """`<run_id>:<ranker sha[:8]>+<weights version>`: what every answer names."""
        return f"{self.run.version}+{self.scorer.weights.version}"

    def with_weights(self, weights: UtilityWeights) -> Pipeline:
        """The same run's stages scoring with other utility weights (nothing reloaded)."""
        twin = copy.copy(self)
        twin.scorer = self.scorer.with_weights(weights)
        return twin

    def _user(self, user_id: int) -> tuple[UserView, bool]:
        try:
            return self.features.read_user(user_id), False
        except OnlineStoreUnavailable:
            return UserView.unknown(user_id), True

    def prepare(self, query: RecommendQuery) -> Prepared:
        """Features -> QuerySelector -> Retriever -> ranker inputs. The pin cache is read once:
        a refresh may swap it meanwhile (requests run on worker threads)."""
        cache = self.features.cache
        user, degraded = self._user(query.user_id)
        exclude: set[int] = set()
        if query.exclude_seen and user.clusters is not None:
            exclude |= {int(pin) for pin in user.clusters.medoid_pin_ids}
        if query.context_pin_id is not None:
            exclude.add(query.context_pin_id)
        queries = self.selector.select(
            query.request_id, user.clusters, user.rewards, query.context_pin_id
        )
        if queries is None:
            candidates = self._popular(self.config.candidates, exclude)
        else:
            candidates = self.retriever.retrieve(
                query.user_id,
                self.user_dense(user),
                queries,
                cache.content_of(queries.query_pin_ids),
                exclude,
                self.config.candidates,
            )
        if len(candidates) < query.k:
            candidates = _concat(
                candidates, self._popular(query.k, exclude | set(candidates.pin_ids.tolist()))
            )
        inputs = build_ranker_inputs(
            self.run.ranker,
            self.run.run_id,
            user,
            cache,
            candidates.pin_ids,
            candidates.query_pin_ids,
        )
        cold = not degraded and not user.known and query.context_pin_id is None
        return Prepared(query, candidates, inputs, degraded, cold, user, cache)

    def user_dense(self, user: UserView) -> np.ndarray:
        """[F] the query tower's `user_dense` input: the user's online values in the manifest's
        column order (NaN where missing, as in training)."""
        return np.array([user.scalar(column) for column in self.retriever.user_columns], np.float32)

    def _popular(self, count: int, exclude: set[int]) -> Candidates:
        pins = self.features.popular(count, exclude)
        none = np.full(len(pins), NO_CLUSTER, dtype=np.int64)
        return Candidates(pin_ids=pins, cluster_ids=none, query_pin_ids=none.copy())

    def finish(self, prepared: Prepared, logits: np.ndarray) -> Recommendation:
        """Scorer -> top k by utility."""
        scores = self.scorer.score(logits)
        top = np.argsort(-scores.utility, kind="stable")[: prepared.query.k]
        candidates = prepared.candidates
        return Recommendation(
            request_id=prepared.query.request_id,
            user_id=prepared.query.user_id,
            run_id=self.run.run_id,
            model_version=f"{self.run.version}+{scores.weights_version}",
            degraded=prepared.degraded,
            cold_start=prepared.cold_start,
            pin_ids=candidates.pin_ids[top],
            utility=scores.utility[top],
            probabilities=scores.probabilities[top],
            cluster_ids=candidates.cluster_ids[top],
            query_pin_ids=candidates.query_pin_ids[top],
        )

    def refresh_cache(
        self, store: FeatureStore, still_loaded: Callable[[], bool] = lambda: True
    ) -> bool:
        """Reload the pin cache if a newer materialisation landed; True if it did. `store` is
        the caller's own (this runs on a background thread). The new copy replaces the old
        one only if `still_loaded()` says so after it was read: a store flushed meanwhile
        changes the load state too, and would otherwise leave an empty copy."""
        until = materialised_until(store, self.pin_views)
        if until is None or until == self.features.cache.materialised_until:
            return False
        pin_ids = self.features.cache.pin_ids
        fresh = read_pin_cache(store, self.run, self.features.refs, self.config, pin_ids)
        if not still_loaded():
            return False
        self.features.cache = fresh
        return True


def _concat(first: Candidates, second: Candidates) -> Candidates:
    return Candidates(
        pin_ids=np.concatenate([first.pin_ids, second.pin_ids]),
        cluster_ids=np.concatenate([first.cluster_ids, second.cluster_ids]),
        query_pin_ids=np.concatenate([first.query_pin_ids, second.query_pin_ids]),
    )
