"""Query reward speeds: clustering throughput, selection latency, realtime push latency.

    python -m benchmarks.bench_query_reward                      # all three
    python -m benchmarks.bench_query_reward --users 5000 --requests 2000 --pushes 200

- clustering: the medium preset's world and per-user activity, with `--users` users (the full
  preset is 50k users and ~10M impressions), through the feature pipeline's own functions
  (`engaged_pins`, `cluster_engaged`, `assign_cluster_ids` against the previous run), users/s;
- selection: `pinfeed.query_selection.select_queries` for one request of a user with 20
  clusters (p50/p99 per request), and the batched call's per-request cost at batch 256;
- realtime push: `RealtimeRewardWriter.ingest` of one engagement (online read of the user's
  clusters and rewards, add, push) on Redis, then the online read that must see it; the
  latency is from the feedback to the first read returning the new count (p50/p99).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.feast_setup import END, make_home, percentile_ms, write_tables
from benchmarks.redis import bench_redis
from feature_repo import store as feature_store
from feature_repo.pipeline.cluster_ids import assign_cluster_ids
from feature_repo.pipeline.clusters import PinEmbeddings, cluster_engaged, engaged_pins
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.snapshots import DAY_US, datetime_us
from feature_repo.realtime_rewards import RealtimeRewardWriter
from pinfeed.query_selection import (
    SelectionConfig,
    UserClusters,
    pad_clusters,
    select_queries,
    select_queries_batch,
)
from pinfeed.synthetic import GeneratorConfig, generate


def bench_clustering(users: int) -> list[str]:
    config = GeneratorConfig.preset("medium", seed=0, users=users)
    events = generate(config, progress=False)
    features = FeatureConfig()
    end_us = datetime_us(events.meta.end)
    embeddings = PinEmbeddings.from_pins(events.pins)
    began = time.perf_counter()
    engaged = engaged_pins(events.impressions, end_us - DAY_US, features)
    previous = cluster_engaged(engaged, embeddings, features, progress=False)
    ids = assign_cluster_ids(previous, None, embeddings, 0, 0.3, 0.9)
    first = time.perf_counter() - began
    members = previous.members.assign(cluster_id=ids[previous.members["cluster"]])
    began = time.perf_counter()
    clustering = cluster_engaged(
        engaged_pins(events.impressions, end_us, features), embeddings, features, progress=False
    )
    assign_cluster_ids(clustering, members, embeddings, 1, 0.3, 0.9)
    rebuild = time.perf_counter() - began
    n = int(clustering.clusters["user_id"].nunique())
    return [
        f"| clustering, first run (medium preset, {n:,} users) | {n / first:,.0f} users/s "
        f"| {first:.1f} s |",
        f"| clustering + stable-id matching, rebuild | {n / rebuild:,.0f} users/s "
        f"| {rebuild:.1f} s, {len(clustering.clusters) / n:.1f} clusters/user |",
    ]


def bench_selection(requests: int) -> list[str]:
    rng = np.random.default_rng(0)
    user = UserClusters(np.arange(20), rng.integers(0, 10**6, 20), rng.uniform(0, 30, 20))
    rewards = np.where(rng.random(20) < 0.3, np.nan, rng.uniform(0, 0.3, 20))
    config = SelectionConfig(policy="reward", n_queries=3)
    timings = []
    for r in range(requests + 100):
        began = time.perf_counter()
        select_queries(r, user, rewards, config, 0.1)
        timings.append(time.perf_counter() - began)
    timings = timings[100:]
    batch = 256
    padded = pad_clusters([user] * batch, [rewards] * batch)
    began = time.perf_counter()
    rounds = max(1, requests // batch)
    for r in range(rounds):
        select_queries_batch(np.arange(batch) + r * batch, *padded, config, 0.1)
    per_request = (time.perf_counter() - began) / (rounds * batch)
    return [
        f"| selection, 1 request, 20 clusters | p50 {percentile_ms(timings, 50):.3f} ms "
        f"| p99 {percentile_ms(timings, 99):.3f} ms |",
        f"| selection, batch of {batch}, 20 clusters | {per_request * 1e6:.1f} us/request | |",
    ]


def bench_push(pushes: int, workdir: Path) -> list[str]:
    home = make_home(workdir / "home")
    write_tables(home, users=1000, pins=2000, days=2)
    with bench_redis() as redis_url:
        store = feature_store.open_store(home, redis_url=redis_url)
        feature_store.apply_definitions(store)
        store.materialize(END - timedelta(days=1), END + timedelta(seconds=1),
                          ["user_clusters", "cluster_reward"])  # fmt: skip
        writer = RealtimeRewardWriter(store, counted_until=END + timedelta(seconds=1))
        timings = []
        for i in range(pushes + 10):
            user = i % 1000
            ts = END + timedelta(seconds=2 + i)
            served = pd.DataFrame({"request_id": [i], "pin_id": [7], "user_id": [user],
                                   "cluster_id": [3 * user], "query_pin_id": [user],
                                   "served_ts": [ts]})  # fmt: skip
            feedback = pd.DataFrame({"request_id": [i, i], "pin_id": [7, 7],
                                     "kind": ["impression", "click"], "event_ts": [ts, ts]})  # fmt: skip
            began = time.perf_counter()
            pushed = writer.ingest(served, feedback)
            want = int(pushed.loc[pushed["cluster_id"] == 3 * user, "reward_impressions"].iloc[0])
            seen = store.get_online_features(
                features=["cluster_reward:reward_impressions"],
                entity_rows=[{"cluster_id": 3 * user}],
            ).to_dict()["reward_impressions"][0]
            timings.append(time.perf_counter() - began)
            if seen != want:
                raise RuntimeError(f"push {i} not visible: read {seen}, pushed {want}")
        store.teardown()
    timings = timings[10:]
    return [
        f"| realtime reward, feedback -> visible in online read (Redis, {pushes} pushes) "
        f"| p50 {percentile_ms(timings, 50):.1f} ms | p99 {percentile_ms(timings, 99):.1f} ms |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000, help="medium-preset users clustered")
    parser.add_argument("--requests", type=int, default=2000, help="selection requests timed")
    parser.add_argument("--pushes", type=int, default=200, help="realtime pushes timed")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = ["| measurement | value | detail |", "|---|---|---|"]
    rows += bench_selection(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_push(args.pushes, Path(tmp))
    rows += bench_clustering(args.users)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
