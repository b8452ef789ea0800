"""Event contracts (design §3) as pyarrow schemas.

Ids are int64 everywhere: the generator makes them contiguous and the importer maps external ids
onto contiguous ints (keeping the mapping), so embedding tables can be indexed by id directly.

An event set is a folder:

    impressions/date=YYYY-MM-DD/*.parquet   one row per impression, engagement flags on the row
    conversions/date=YYYY-MM-DD/*.parquet   delayed checkout / add_to_cart events
    users.parquet, pins.parquet             entity tables (pins carry the content embedding)
    meta.json                               EventSetMeta: source, period, long-click threshold ...
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

SURFACES = ("homefeed", "related")
CONVERSION_KINDS = ("checkout", "add_to_cart")
ENGAGEMENTS = ("closeup", "save", "click", "long_click")
"""The four ranking heads, in the order every model output and manifest uses."""
UNKNOWN_TOPIC = -1
"""A pin's topic when nothing places it (an imported pin with too little co-engagement for a
learned embedding); models give it a bucket of its own."""

IMPRESSION_SCHEMA = pa.schema(
    [
        pa.field("event_ts", TS, nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        # The engaged pin whose interest cluster produced this impression (null: not logged).
        pa.field("query_pin_id", pa.int64(), nullable=True),
        # The pinfeed cluster that produced it; null when the logging policy knew none, in which
        # case the reward workflow attributes the impression through query_pin_id.
        pa.field("cluster_id", pa.int64(), nullable=True),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("closeup", pa.bool_(), nullable=False),
        pa.field("save", pa.bool_(), nullable=False),
        pa.field("click", pa.bool_(), nullable=False),
        pa.field("long_click", pa.bool_(), nullable=False),
        # Seconds spent off-site after a click; null exactly when click is false.
        pa.field("click_dwell_s", pa.float32(), nullable=True),
        # The user hid the pin (negative feedback); null: the source does not log hides.
        pa.field("hide", pa.bool_(), nullable=True),
    ]
)

CONVERSION_SCHEMA = pa.schema(
    [
        pa.field("event_ts", TS, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        # The request whose impression led to the conversion, where known.
        pa.field("request_id", pa.int64(), nullable=True),
    ]
)

USER_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("created_ts", TS, nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("age_bucket", pa.string(), nullable=False),
    ]
)

PIN_SCHEMA = pa.schema(
    [
        pa.field("pin_id", pa.int64(), nullable=False),
        pa.field("created_ts", TS, nullable=False),
        # >= 0, or UNKNOWN_TOPIC.
        pa.field("topic", pa.int32(), nullable=False),
        pa.field("shoppable", pa.bool_(), nullable=False),
        # Stand-in for visual/text embeddings; every row has the same length (EventSetMeta).
        pa.field("content_embedding", pa.list_(pa.float32()), nullable=False),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "impressions": IMPRESSION_SCHEMA,
    "conversions": CONVERSION_SCHEMA,
    "users": USER_SCHEMA,
    "pins": PIN_SCHEMA,
}
