"""Online lookup for one ranking request: 1 user + 500 candidate pins (+ the query pin).

    python -m benchmarks.bench_online                    # 300 requests per backend
    python -m benchmarks.bench_online --requests 1000 --candidates 500
    python -m benchmarks.bench_online --cluster          # and on a 3-master Redis Cluster

Three ways to read ranking_v1's features for the same rows:
- Feast on Redis: `feature_store.store.online_features(store, "ranking_v1", rows)`
  (`FeatureStore.get_online_features`, full feature names, dict of columns);
- raw Redis, the floor: one pipeline of HMGETs on the keys and hash fields Feast wrote (one per
  entity, every field of its views), protobuf values decoded to Python values;
- Feast on SQLite;
- with `--cluster`, the Redis readers again on a three-master Redis Cluster
  (`$REDIS_CLUSTER_URL`, a `redis+cluster://` URL, else one the benchmark starts on loopback
  with `pinfeed.redis_server.RedisClusterProcess`): Feast's keys spread over the slots, so one
  request's 502 keys are one pipelined round trip per master instead of one;
- pinfeed's lookup path (what the Recommender does), on Redis and SQLite: the user's row through
  Feast plus the candidate and query pins from the in-memory pin cache
  (`serving.stages.pin_cache`), filled once before timing. Against "Feast get_online_features"
  on the same backend this is the pin cache on vs off.
Each backend gets warm-up requests, then `--requests` timed ones with fresh random candidates.
p50/p99 and the ratio to the floor go to a Markdown table. The per-request latencies in request
order are also compared (first vs last fifth) to show whether Feast issue #6841 (latency growing
between registry refreshes) is present.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from benchmarks.feast_setup import END, make_home, percentile_ms, write_tables
from benchmarks.redis import bench_redis
from feature_repo import store as feature_store
from pinfeed.connection import redis_client
from pinfeed.redis_server import RedisClusterProcess
from serving.stages.online import read_rows
from serving.stages.pin_cache import PinFeatureCache, load_pin_cache

USERS, PINS = 1000, 20_000
DIM = 32
SERVICE = "ranking_v1"
WARMUP = 20

Request = dict[str, list[int]]


def requests(count: int, candidates: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        user = int(rng.integers(USERS))
        pins = rng.choice(PINS, candidates, replace=False).tolist()
        query = int(rng.integers(PINS))
        out.append(
            {"user_id": [user] * candidates, "pin_id": pins, "query_pin_id": [query] * candidates}
        )
    return out


class RawRedisReader:
    """The floor: the HMGETs Feast's layout needs, nothing else. One hash per entity key, one
    field per `view:feature` (murmur3) plus `_ts:<view>`; values are feast Value protos."""

    def __init__(self, store: FeatureStore, url: str):
        self.client = redis_client(url)
        self.keys: dict[tuple[str, int], bytes] = {}
        self.project = store.project.encode()
        service = store.get_feature_service(SERVICE)
        self.fields: dict[str, list[tuple[str, bytes]]] = {"user_id": [], "pin_id": []}
        for projection in service.feature_view_projections:
            if projection.name_alias == "query_pin_content":
                continue  # same hash fields as pin_content, read on the query pin's key
            view = projection.name
            key = "user_id" if view.startswith("user") else "pin_id"
            for feature in projection.features:
                self.fields[key].append(
                    (f"{view}__{feature.name}", _mmh3(f"{view}:{feature.name}"))
                )
        self.query_fields = [
            (f"query_pin_content__{name}", _mmh3(f"pin_content:{name}"))
            for name in ("content_embedding", "topic", "shoppable")
        ]

    def key(self, join_key: str, value: int) -> bytes:
        entity = EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=value)])
        return serialize_entity_key(entity, entity_key_serialization_version=3) + self.project

    def read_bytes(self, request: Request) -> list[Any]:
        """The network floor: the same pipeline with keys from a cache and no decoding, i.e.
        what Redis itself costs; the gap to `read` is Python-side key building and decode."""
        user, query, pins = request["user_id"][0], request["query_pin_id"][0], request["pin_id"]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.cached_key("user_id", user), [f for _, f in self.fields["user_id"]])
        pipe.hmget(self.cached_key("pin_id", query), [f for _, f in self.query_fields])
        pin_fields = [f for _, f in self.fields["pin_id"]]
        for pin in pins:
            pipe.hmget(self.cached_key("pin_id", pin), pin_fields)
        return pipe.execute()

    def cached_key(self, join_key: str, value: int) -> bytes:
        cache_key = (join_key, value)
        if cache_key not in self.keys:
            self.keys[cache_key] = self.key(join_key, value)
        return self.keys[cache_key]

    def read(self, request: Request) -> dict[str, list[Any]]:
        user, query, pins = request["user_id"][0], request["query_pin_id"][0], request["pin_id"]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.key("user_id", user), [f for _, f in self.fields["user_id"]])
        pipe.hmget(self.key("pin_id", query), [f for _, f in self.query_fields])
        for pin in pins:
            pipe.hmget(self.key("pin_id", pin), [f for _, f in self.fields["pin_id"]])
        replies = pipe.execute()
        out: dict[str, list[Any]] = {}
        for (name, _), raw in zip(self.fields["user_id"], replies[0], strict=True):
            out[name] = [_decode(raw)] * len(pins)
        for (name, _), raw in zip(self.query_fields, replies[1], strict=True):
            out[name] = [_decode(raw)] * len(pins)
        for column, (name, _) in enumerate(self.fields["pin_id"]):
            out[name] = [_decode(reply[column]) for reply in replies[2:]]
        return out


class CachedPinReader:
    """pinfeed's lookup path: one Feast read of the user's row per request; every pin's row
    from a `PinFeatureCache` read once (column arrays, indexed by `searchsorted`)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.user_refs: list[str] = []
        pin_refs: list[str] = []
        for projection in store.get_feature_service(SERVICE).feature_view_projections:
            if projection.name_alias == "query_pin_content":
                continue  # the query pin's content comes from the same cache
            view = projection.name
            refs = self.user_refs if view.startswith("user") else pin_refs
            refs.extend(f"{view}:{feature.name}" for feature in projection.features)
        self.cache: PinFeatureCache = load_pin_cache(
            store,
            pin_refs,
            np.arange(PINS),
            content_column="pin_content__content_embedding",
            topic_column="pin_content__topic",
            popularity_column="pin_features__pin_impressions_30d",
            content_dim=DIM,
            n_popular=100,
            materialised=None,
        )

    def read(self, request: Request) -> dict[str, Any]:
        user = read_rows(self.store, self.user_refs, "user_id", request["user_id"][:1])
        rows, _ = self.cache.rows(np.asarray(request["pin_id"]))
        query_rows, _ = self.cache.rows(np.asarray(request["query_pin_id"][:1]))
        out: dict[str, Any] = {name: values[0] for name, values in user.items()}
        out |= {name: column[rows] for name, column in self.cache.scalars.items()}
        out["pin_content__content_embedding"] = self.cache.content[rows]
        out["pin_content__topic"] = self.cache.topic[rows]
        out["query_pin_content__content_embedding"] = self.cache.content[query_rows[0]]
        return out


def check_cached(
    reader: CachedPinReader, feast_values: dict[str, list[Any]], request: Request
) -> None:
    """The cached path reads the same values as Feast (else its timing means nothing)."""
    cached = reader.read(request)
    for name, values in cached.items():
        if name.startswith("user"):
            assert np.allclose(values, feast_values[name][0], equal_nan=True), name
        elif name.startswith("query"):
            expected = np.array(feast_values[name][0], dtype=np.float64)
            assert np.allclose(np.asarray(values, np.float64), expected), name
        else:
            expected = np.array(feast_values[name], dtype=np.float64)
            assert np.allclose(np.asarray(values, np.float64), expected, equal_nan=True), name


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    value = Value()
    value.ParseFromString(raw)
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    decoded = getattr(value, kind)
    return list(decoded.val) if kind.endswith("_list_val") else decoded


def measure(read: Callable[[Request], Any], batch: list[Request]) -> list[float]:
    for request in batch[:WARMUP]:
        read(request)
    seconds = []
    for request in batch[WARMUP:]:
        began = time.perf_counter()
        read(request)
        seconds.append(time.perf_counter() - began)
    return seconds


def open_materialised(root: Path, name: str, url: str | None) -> FeatureStore:
    home = make_home(root / name)
    write_tables(home, users=USERS, pins=PINS, days=1)
    store = feature_store.open_store(home, redis_url=url)
    feature_store.apply_definitions(store)
    feature_store.materialize(store, end=END, start=END - timedelta(days=90))
    return store


def run(count: int, candidates: int, cluster: bool) -> str:
    batch = requests(count + WARMUP, candidates, seed=0)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with bench_redis() as url:
            results |= measure_redis(root / "redis", url, batch, "Redis")
        if cluster:
            with bench_cluster(root / "cluster") as url:
                results |= measure_redis(root / "on-cluster", url, batch, "Redis Cluster")
        sqlite_store = open_materialised(root, "sqlite", None)
        check = batch[0]
        results["Feast get_online_features, SQLite"] = measure(
            lambda r: feature_store.online_features(sqlite_store, SERVICE, r), batch
        )
        cached = CachedPinReader(sqlite_store)
        check_cached(cached, feature_store.online_features(sqlite_store, SERVICE, check), check)
        results["pinfeed: Feast user row + pin cache, SQLite"] = measure(cached.read, batch)
    return table(results, count, candidates)


def measure_redis(root: Path, url: str, batch: list[Request], label: str) -> dict[str, list[float]]:
    """The floor, Feast and pinfeed's lookup path on the Redis at `url`, each checked to read
    the values Feast reads."""
    store = open_materialised(root, "home", url)
    raw = RawRedisReader(store, url)
    check = batch[0]
    feast_values = feature_store.online_features(store, SERVICE, check)
    for name, values in raw.read(check).items():
        assert np.allclose(values, feast_values[name]), name
    results = {
        f"raw Redis pipeline, {label} (floor)": measure(raw.read, batch),
        f"raw Redis pipeline, bytes only, {label} (network floor)": measure(raw.read_bytes, batch),
        f"Feast get_online_features, {label}": measure(
            lambda r: feature_store.online_features(store, SERVICE, r), batch
        ),
    }
    cached = CachedPinReader(store)
    check_cached(cached, feast_values, check)
    results[f"pinfeed: Feast user row + pin cache, {label}"] = measure(cached.read, batch)
    store.teardown()
    return results


@contextmanager
def bench_cluster(workdir: Path) -> Iterator[str]:
    """`$REDIS_CLUSTER_URL` when set, else a three-master cluster on loopback for the run."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield os.environ["REDIS_CLUSTER_URL"]
        return
    cluster = RedisClusterProcess(workdir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def table(results: dict[str, list[float]], count: int, candidates: int) -> str:
    floor = np.percentile(results["raw Redis pipeline, Redis (floor)"], 50)
    lines = [
        f"1 user + {candidates} pins + 1 query pin, ranking_v1 ({count} requests after {WARMUP}"
        " warm-up)",
        "",
        "| reader | p50 ms | p99 ms | p50 / floor | first-fifth p50 ms | last-fifth p50 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, seconds in results.items():
        fifth = max(len(seconds) // 5, 1)
        lines.append(
            f"| {name} | {percentile_ms(seconds, 50):.1f} | {percentile_ms(seconds, 99):.1f} | "
            f"{np.percentile(seconds, 50) / floor:.2f}x | {percentile_ms(seconds[:fifth], 50):.1f}"
            f" | {percentile_ms(seconds[-fifth:], 50):.1f} |"
        )
    lines += cluster_ratios(results)
    return "\n".join(lines)


def cluster_ratios(results: dict[str, list[float]]) -> list[str]:
    """Per reader, the cluster's p50 and p99 over one server's (the issue's bar: <= 1.5x)."""
    pairs = [
        (name, name.replace(", Redis", ", Redis Cluster"))
        for name in results
        if ", Redis" in name and name.replace(", Redis", ", Redis Cluster") in results
    ]
    if not pairs:
        return []
    lines = ["", "| reader | cluster / single p50 | cluster / single p99 |", "|---|---:|---:|"]
    for single, cluster in pairs:
        p50 = np.percentile(results[cluster], 50) / np.percentile(results[single], 50)
        p99 = np.percentile(results[cluster], 99) / np.percentile(results[single], 99)
        lines.append(f"| {single.replace(', Redis', '')} | {p50:.2f}x | {p99:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per reader")
    parser.add_argument("--candidates", type=int, default=500, help="candidate pins per request")
    parser.add_argument(
        "--cluster", action="store_true", help="also measure on a 3-master Redis Cluster"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(run(args.requests, args.candidates, args.cluster))


if __name__ == "__main__":
    main()
