"""Arrow tables from the simulation's numpy arrays: the four event tables and the truth tables.

Truth (written to `<out>/truth/`, see docs/data.md) is what a real log never has and evaluation
wants: which pins are clickbait and how good they are, which topics each user really likes and
how that changed, and the seed pins the logging policy started from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pinfeed.events import conform
from pinfeed.schema import CONVERSION_KINDS, SURFACES, TS
from pinfeed.synthetic.world import SLOT_KINDS, UNUSED, World

SECOND_US = 1_000_000
COUNTRIES = ("US", "BR", "GB", "DE", "FR", "MX", "IN", "CA", "JP", "AU")
COUNTRY_WEIGHTS = (0.35, 0.12, 0.1, 0.09, 0.08, 0.07, 0.07, 0.05, 0.04, 0.03)
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_WEIGHTS = (0.25, 0.32, 0.2, 0.13, 0.1)


def _categorical(labels: Sequence[str], index: np.ndarray) -> pa.Array:
    """Plain string column from category indices (dictionary-decoded, as the schema asks)."""
    dictionary = pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), list(labels))
    return dictionary.cast(pa.string())


def _embeddings(matrix: np.ndarray) -> pa.Array:
    """list<float32> column from a [rows, D] float32 matrix."""
    rows, dim = matrix.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * dim)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1).astype(np.float32)))


def users_table(world: World, start_us: int, rng: np.random.Generator) -> pa.Table:
    u = len(world.users.activity)
    country = rng.choice(len(COUNTRIES), size=u, p=COUNTRY_WEIGHTS)
    age = rng.choice(len(AGE_BUCKETS), size=u, p=AGE_WEIGHTS)
    table = pa.table(
        {
            "user_id": pa.array(np.arange(u, dtype=np.int64)),
            "created_ts": pa.array(start_us - world.users.created_s * SECOND_US, type=TS),
            "country": _categorical(COUNTRIES, country),
            "age_bucket": _categorical(AGE_BUCKETS, age),
        }
    )
    return conform(table, "users")


def pins_table(world: World, start_us: int) -> pa.Table:
    pins = world.pins
    table = pa.table(
        {
            "pin_id": pa.array(np.arange(len(pins.topic), dtype=np.int64)),
            "created_ts": pa.array(start_us - pins.created_s * SECOND_US, type=TS),
            "topic": pa.array(pins.topic),
            "shoppable": pa.array(pins.shoppable),
            "content_embedding": _embeddings(pins.embedding),
        }
    )
    return conform(table, "pins")


def impressions_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """Impressions from concatenated day arrays (keys as in `generator._collect`)."""
    click = columns["click"]
    table = pa.table(
        {
            "event_ts": pa.array(columns["ts_us"], type=TS),
            "request_id": pa.array(columns["request_id"]),
            "user_id": pa.array(columns["user"].astype(np.int64)),
            "pin_id": pa.array(columns["pin"].astype(np.int64)),
            "surface": _categorical(SURFACES, columns["surface"]),
            "query_pin_id": pa.array(columns["query_pin"].astype(np.int64)),
            "cluster_id": pa.nulls(len(click), pa.int64()),
            "position": pa.array(columns["position"]),
            "closeup": pa.array(columns["closeup"]),
            "save": pa.array(columns["save"]),
            "click": pa.array(click),
            "long_click": pa.array(columns["long_click"]),
            "click_dwell_s": pa.array(columns["dwell_s"], mask=~click),
        }
    )
    return conform(table, "impressions")


def conversions_table(columns: dict[str, np.ndarray]) -> pa.Table:
    order = np.argsort(columns["ts_us"], kind="stable")
    table = pa.table(
        {
            "event_ts": pa.array(columns["ts_us"][order], type=TS),
            "user_id": pa.array(columns["user"][order].astype(np.int64)),
            "pin_id": pa.array(columns["pin"][order].astype(np.int64)),
            "kind": _categorical(CONVERSION_KINDS, columns["kind"][order]),
            "request_id": pa.array(columns["request_id"][order]),
        }
    )
    return conform(table, "conversions")


def truth_tables(world: World) -> dict[str, pa.Table]:
    """`pins`, `user_interests`, `seed_pins` and `topics` ground-truth tables."""
    pins, users = world.pins, world.users
    user_ids, slot = np.nonzero(users.kind != UNUSED)
    seeded_users, seeded_slot = np.nonzero(users.seed_pins >= 0)
    return {
        "pins": pa.table(
            {
                "pin_id": pa.array(np.arange(len(pins.topic), dtype=np.int64)),
                "topic": pa.array(pins.topic),
                "category": pa.array(world.category[pins.topic]),
                "is_clickbait": pa.array(pins.clickbait),
                "quality": pa.array(pins.quality),
                "popularity": pa.array(pins.popularity),
                "shoppable": pa.array(pins.shoppable),
            }
        ),
        "user_interests": pa.table(
            {
                "user_id": pa.array(user_ids.astype(np.int64)),
                "slot": pa.array(slot.astype(np.int32)),
                "topic": pa.array(users.topics[user_ids, slot]),
                "kind": _categorical(SLOT_KINDS, users.kind[user_ids, slot]),
                "weight_start": pa.array(users.strength_start[user_ids, slot]),
                "weight_end": pa.array(users.strength_end[user_ids, slot]),
            }
        ),
        "seed_pins": pa.table(
            {
                "user_id": pa.array(seeded_users.astype(np.int64)),
                "slot": pa.array(seeded_slot.astype(np.int32)),
                "topic": pa.array(users.topics[seeded_users, seeded_slot]),
                "pin_id": pa.array(users.seed_pins[seeded_users, seeded_slot].astype(np.int64)),
            }
        ),
        "topics": pa.table(
            {
                "topic": pa.array(np.arange(len(world.category), dtype=np.int32)),
                "category": pa.array(world.category),
                "centroid": _embeddings(world.centroids),
            }
        ),
    }
