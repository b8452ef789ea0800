"""Event sets for the feature tests: random ones with every engagement kind, and hand-built
impressions for hand-computed expectations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from pinfeed.events import EventSet, EventSetMeta
from pinfeed.schema import CONVERSION_SCHEMA, IMPRESSION_SCHEMA, PIN_SCHEMA, USER_SCHEMA

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TS = pa.timestamp("us", tz="UTC")


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64)).cast(TS)


def random_events(days: int = 40, n_imp: int = 6000, seed: int = 0, dim: int = 8) -> EventSet:
    """A small schema-conformant event set: 30 users, 60 pins in 4 topics, random engagement."""
    rng = np.random.default_rng(seed)
    n_users, n_pins = 30, 60
    start_us = int(START.timestamp() * 1e6)
    pin_topic = rng.integers(0, 4, n_pins)
    embedding = rng.normal(size=(4, dim))[pin_topic] + 0.2 * rng.normal(size=(n_pins, dim))
    moments = start_us + rng.integers(0, days * 86_400_000_000, n_imp)
    click = rng.random(n_imp) < 0.15
    dwell = rng.lognormal(2.0, 1.0, n_imp).astype(np.float32)
    impressions = pa.table(
        {
            "event_ts": _ts(moments),
            "request_id": np.arange(n_imp),
            "user_id": rng.integers(0, n_users, n_imp),
            "pin_id": rng.integers(0, n_pins, n_imp),
            "surface": ["homefeed"] * n_imp,
            "query_pin_id": pa.array(rng.integers(0, n_pins, n_imp), mask=rng.random(n_imp) < 0.5),
            "cluster_id": pa.nulls(n_imp, pa.int64()),
            "position": np.zeros(n_imp, np.int32),
            "closeup": rng.random(n_imp) < 0.1,
            "save": rng.random(n_imp) < 0.05,
            "click": click,
            "long_click": click & (dwell > 30),
            "click_dwell_s": pa.array(dwell, mask=~click),
            "hide": rng.random(n_imp) < 0.02,
        },
        schema=IMPRESSION_SCHEMA,
    )
    n_conv = n_imp // 100
    conversions = pa.table(
        {
            "event_ts": _ts(start_us + rng.integers(0, days * 86_400_000_000, n_conv)),
            "user_id": rng.integers(0, n_users, n_conv),
            "pin_id": rng.integers(0, n_pins, n_conv),
            "kind": ["checkout"] * n_conv,
            "request_id": pa.nulls(n_conv, pa.int64()),
        },
        schema=CONVERSION_SCHEMA,
    )
    return make_event_set(impressions, conversions, embedding, START + days * DAY)


def make_event_set(
    impressions: pa.Table,
    conversions: pa.Table,
    embedding: np.ndarray,
    end: datetime,
    created: np.ndarray | None = None,
) -> EventSet:
    """Wrap event tables with users 0..99, pins 0..len(embedding)-1 and the meta."""
    n_pins, start_us = len(embedding), int(START.timestamp() * 1e6)
    created = created if created is not None else np.full(n_pins, start_us - 86_400_000_000)
    pins = pa.table(
        {
            "pin_id": np.arange(n_pins),
            "created_ts": _ts(created),
            "topic": np.zeros(n_pins, np.int32),
            "shoppable": np.zeros(n_pins, bool),
            "content_embedding": pa.array(
                list(embedding.astype(np.float32)), pa.list_(pa.float32())
            ),
        },
        schema=PIN_SCHEMA,
    )
    users = pa.table(
        {
            "user_id": np.arange(100),
            "created_ts": _ts(np.full(100, start_us)),
            "country": ["fr"] * 100,
            "age_bucket": ["25-34"] * 100,
        },
        schema=USER_SCHEMA,
    )
    meta = EventSetMeta(
        source="synthetic",
        start=START,
        end=end,
        long_click_threshold_s=30.0,
        embedding_dim=embedding.shape[1],
    )
    return EventSet(impressions, conversions, users, pins, meta)


def hand_impressions(rows: list[dict]) -> pa.Table:
    defaults = {
        "request_id": 0,
        "surface": "homefeed",
        "query_pin_id": None,
        "cluster_id": None,
        "position": 0,
        "closeup": False,
        "save": False,
        "click": False,
        "long_click": False,
        "click_dwell_s": None,
    }
    return pa.Table.from_pylist([{**defaults, **row} for row in rows], schema=IMPRESSION_SCHEMA)
