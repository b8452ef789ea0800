"""Shared setup for the Feast benchmarks: a throw-away project home filled with synthetic
feature tables that follow `feature_repo/tables.py` (Redis: `benchmarks.redis`)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.homes import create_home
from feature_repo.tables import TABLES
from pinfeed.home import ProjectHome

END = datetime(2024, 6, 1, tzinfo=UTC)
"""The last snapshot's stamp; tables cover the days before it."""


def make_home(root: Path) -> ProjectHome:
    """A project home under `root` with a Feast project of its own."""
    return create_home(root, project=f"bench_{uuid.uuid4().hex[:8]}")


def _snapshot(key: str, ids: np.ndarray, days: int, schema: pa.Schema, rng) -> pa.Table:
    """`days` daily rows per id with random values of the schema's types."""
    stamps = np.array([END - timedelta(days=d) for d in range(days)], dtype="datetime64[us]")
    columns: dict[str, np.ndarray] = {
        key: np.repeat(ids, days),
        "event_timestamp": np.tile(stamps, len(ids)),
    }
    n = len(ids) * days
    for field in schema:
        if field.name in columns:
            continue
        if pa.types.is_integer(field.type):
            columns[field.name] = rng.integers(0, 100, n)
        elif pa.types.is_floating(field.type):
            columns[field.name] = rng.random(n, dtype=np.float32)
        elif pa.types.is_boolean(field.type):
            columns[field.name] = rng.random(n) < 0.5
    return pa.table(columns).cast(schema)


def write_tables(home: ProjectHome, users: int, pins: int, days: int, dim: int = 32) -> None:
    """Snapshot tables for `users` users and `pins` pins over `days` days, static content with a
    `dim`-float embedding, one clustering run and one reward row per user."""
    rng = np.random.default_rng(0)
    user_ids, pin_ids = np.arange(users), np.arange(pins)
    for name, key, ids in (
        ("user_features", "user_id", user_ids),
        ("user_dwell", "user_id", user_ids),
        ("pin_features", "pin_id", pin_ids),
        ("pin_dwell", "pin_id", pin_ids),
    ):
        pq.write_table(
            _snapshot(key, ids, days, TABLES[name], rng), home.features / f"{name}.parquet"
        )
    embeddings = rng.standard_normal((pins, dim), dtype=np.float32)
    content = pa.table({
        "pin_id": pin_ids,
        "event_timestamp": pa.array([END - timedelta(days=60)] * pins, pa.timestamp("us", "UTC")),
        "content_embedding": pa.FixedSizeListArray.from_arrays(embeddings.ravel(), dim).cast(
            pa.list_(pa.float32())
        ),
        "topic": rng.integers(0, 20, pins).astype(np.int32),
        "shoppable": rng.random(pins) < 0.3,
    })  # fmt: skip
    pq.write_table(content.cast(TABLES["pin_content"]), home.features / "pin_content.parquet")
    clusters = pa.table({
        "user_id": user_ids,
        "event_timestamp": pa.array([END] * users, pa.timestamp("us", "UTC")),
        "cluster_ids": [[3 * u, 3 * u + 1] for u in user_ids],
        "medoid_pin_ids": [[int(u) % pins, (int(u) + 1) % pins] for u in user_ids],
        "cluster_importance": [[0.75, 0.25]] * users,
    })  # fmt: skip
    pq.write_table(clusters.cast(TABLES["user_clusters"]), home.features / "user_clusters.parquet")
    reward = pa.table({
        "cluster_id": 3 * user_ids,
        "event_timestamp": pa.array([END] * users, pa.timestamp("us", "UTC")),
        "user_id": user_ids,
        "reward_impressions": rng.integers(0, 100, users),
        "reward_engagements": rng.integers(0, 10, users),
        "reward": rng.random(users, dtype=np.float32),
        "reward_has_data": np.ones(users, dtype=bool),
    })  # fmt: skip
    pq.write_table(reward.cast(TABLES["cluster_reward"]), home.features / "cluster_reward.parquet")


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, q))


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began
