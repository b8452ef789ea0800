"""Serving's thin adapter over Feast online reads (a Feast upgrade touches this file and
`feature_repo/store.py`, nothing else in serving).

A request needs features keyed by three different entities, so the `serving_v1` service is read
in groups, one `get_online_features` call per group, always with full names (`view__feature`):

- user: `user_features`, `user_dwell`, `user_clusters` (keyed by user_id);
- cluster: `cluster_reward` (keyed by the cluster ids the user read returned);
- pin: `pin_features`, `pin_dwell`, `pin_content` (keyed by pin_id), read in bulk into the
  in-memory pin cache (`serving.stages.pin_cache`), never per request.

Reads are bounded: `connect` sets Redis socket timeouts and no retry, and the
Features stage puts a circuit breaker (`serving.stages.breaker`) in front of its reads.

The query pin projection (`query_pin_content`) is the pin cache's content of the query pin, so
it is not read separately. Any failure to reach the online store surfaces as
`OnlineStoreUnavailable`, which the Features stage turns into a degraded answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feast import FeatureStore
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_repo.load_ledger import open_ledger
from feature_repo.store import feature_service, online_feature_values, open_store
from pinfeed.errors import ConfigError, UnavailableError
from pinfeed.home import ProjectHome
from pinfeed.traffic.served import TRAFFIC_STORE_ERRORS

SERVING_SERVICE = "serving_v1"
RETRIEVAL_SERVICE = "retrieval_v1"
RANKING_SERVICE = "ranking_v1"
STORE_ERRORS = TRAFFIC_STORE_ERRORS
"""What a failing store raises (Redis, SQLite, the file system): the same set as the traffic
logs'."""


LoadState = tuple[datetime | None, datetime | None]
"""(registry materialisation end, ledger load time): see `materialised_until`."""


class OnlineStoreUnavailable(UnavailableError):
    """The online store did not answer (down, unreachable, or its file is gone)."""


@dataclass(frozen=True)
class FeatureRefs:
    """`view:feature` references of one service, grouped by the key they are read with."""

    user: tuple[str, ...]
    pin: tuple[str, ...]
    cluster: tuple[str, ...]


def full_name(ref: str) -> str:
    """`view:feature` -> `view__feature` (what `full_feature_names=True` returns)."""
    return ref.replace(":", "__", 1)


def service_refs(store: FeatureStore, name: str = SERVING_SERVICE) -> FeatureRefs:
    """The service's features grouped by join key (see the module docstring)."""
    groups: dict[str, list[str]] = {"user_id": [], "pin_id": [], "cluster_id": []}
    for projection in feature_service(store, name).feature_view_projections:
        if projection.name_to_use() != projection.name:
            continue  # a renamed projection (the query pin's content) comes from the pin cache
        view = store.get_feature_view(projection.name)
        keys = [projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
        if len(keys) != 1 or keys[0] not in groups:
            raise ConfigError(
                f"feature service {name!r}: view {projection.name!r} is keyed by {keys}; "
                f"serving reads views keyed by one of {sorted(groups)}"
            )
        groups[keys[0]].extend(f"{projection.name}:{f.name}" for f in projection.features)
    return FeatureRefs(
        user=tuple(groups["user_id"]),
        pin=tuple(groups["pin_id"]),
        cluster=tuple(groups["cluster_id"]),
    )


def connect(home: ProjectHome, redis_url: str | None, timeout_s: float = 0.25) -> FeatureStore:
    """The project's store (Redis when `redis_url` is given, else SQLite), with serving's
    Redis limits: connect and read time out after `timeout_s`, and a failed command is not
    retried, so one read costs at most about one `timeout_s`. redis-py's default (three retries
    with backoff, nested inside a connect retry) held one answer up to ~14 s; one retry still
    nests to ~4 `timeout_s`. A connection broken by a Redis restart fails one read; the
    Features stage's breaker then answers degraded for `store_breaker_s` and its probe
    reconnects."""
    store = open_store(home, redis_url=redis_url, timeout_s=timeout_s)
    if store.config.online_store.type == "redis":
        # Feast builds its Redis client lazily and exposes no retry setting: build it now and
        # set the policy (redis-py's public `set_retry`). A Feast upgrade touches only this.
        # A cluster client connects as it is built: with the cluster down, the replica starts
        # anyway and Feast builds the client on a later read, with redis-py's default retries
        # (the breaker still bounds what a request waits).
        online = store._get_provider().online_store
        try:
            client = online._get_client(store.config.online_store)
        except STORE_ERRORS:
            return store
        client.set_retry(Retry(NoBackoff(), retries=0))
    return store


def read_rows(
    store: FeatureStore, refs: Sequence[str], key: str, ids: Sequence[int]
) -> dict[str, list[Any]]:
    """Columns of `refs` (full names) for entity ids `ids` of join key `key`; None = missing."""
    try:
        rows = [{key: int(value)} for value in ids]
        return online_feature_values(store, refs, rows, full_feature_names=True)
    except STORE_ERRORS as error:
        raise OnlineStoreUnavailable(f"online store read of {key} failed: {error}") from error


def materialised_until(store: FeatureStore, views: Sequence[str]) -> LoadState | None:
    """When `views` were last loaded: (the registry's latest materialisation end, this online
    store's latest load in its ledger, `feature_repo.load_ledger`); a change in either means new
    pin features landed online (the registry alone misses a load into another store sharing it,
    or into a flushed one; the ledger alone misses `feast materialize-incremental`). None:
    neither knows a load."""
    try:
        store.refresh_registry()
        ends = [store.get_feature_view(view).most_recent_end_time for view in views]
        marks = open_ledger(store).read()
    except STORE_ERRORS as error:
        raise OnlineStoreUnavailable(f"registry or ledger read failed: {error}") from error
    known = [end for end in ends if end is not None]
    loads = [marks[view].loaded_at for view in views if view in marks]
    state = (max(known) if known else None, max(loads) if loads else None)
    return None if state == (None, None) else state
