"""Contract of the offline feature tables: the files the feature pipeline writes under
`data/features/` and the Feast sources read. One schema per table; Feast views use the same
column names (feature names are prefixed so they stay unique inside a feature service).

Snapshot tables (user/pin/dwell features) hold one row per entity per day, stamped at the end
of the day and computed only from events before that stamp, so a point-in-time join never
leaks the future.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
EVENT_TIMESTAMP = "event_timestamp"
EMBEDDING = pa.list_(pa.float32())

USER_FEATURES = pa.schema(
    [
        ("user_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        ("user_impressions_7d", pa.int64()),
        ("user_impressions_30d", pa.int64()),
        ("user_closeup_rate_30d", pa.float32()),
        ("user_save_rate_30d", pa.float32()),
        ("user_click_rate_30d", pa.float32()),
        ("user_long_click_rate_30d", pa.float32()),
        ("user_conversions_30d", pa.int64()),
    ]
)

PIN_FEATURES = pa.schema(
    [
        ("pin_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        ("pin_impressions_30d", pa.int64()),
        ("pin_closeup_rate_30d", pa.float32()),
        ("pin_save_rate_30d", pa.float32()),
        ("pin_click_rate_30d", pa.float32()),
        ("pin_long_click_rate_30d", pa.float32()),
        ("pin_conversion_rate_30d", pa.float32()),
        ("pin_age_days", pa.float32()),
    ]
)

PIN_CONTENT = pa.schema(
    [
        # Static per pin, stamped at created_ts: kept apart from the daily snapshots so the
        # embedding is stored once, not once a day.
        ("pin_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        ("content_embedding", EMBEDDING),
        ("topic", pa.int32()),
        ("shoppable", pa.bool_()),
    ]
)

USER_DWELL = pa.schema(
    [
        ("user_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        ("user_clicks_30d", pa.int64()),
        ("user_dwell_mean_s", pa.float32()),
        ("user_dwell_median_s", pa.float32()),
        ("user_short_click_share", pa.float32()),
        ("user_long_click_share", pa.float32()),
    ]
)

PIN_DWELL = pa.schema(
    [
        ("pin_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        ("pin_clicks_30d", pa.int64()),
        ("pin_dwell_mean_s", pa.float32()),
        ("pin_dwell_median_s", pa.float32()),
        ("pin_short_click_share", pa.float32()),
        ("pin_long_click_share", pa.float32()),
    ]
)

USER_CLUSTERS = pa.schema(
    [
        # One row per user per clustering run; lists are aligned and sorted by importance.
        ("user_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        ("cluster_ids", pa.list_(pa.int64())),
        ("medoid_pin_ids", pa.list_(pa.int64())),
        ("cluster_importance", pa.list_(pa.float32())),
    ]
)

CLUSTER_REWARD = pa.schema(
    [
        # One row per cluster per reward computation (and per realtime push).
        ("cluster_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        ("user_id", pa.int64()),
        ("reward_impressions", pa.int64()),
        ("reward_engagements", pa.int64()),
        ("reward", pa.float32()),
        ("reward_has_data", pa.bool_()),
    ]
)

CLUSTER_MEMBERS = pa.schema(
    [
        # Not a Feast source: which engaged pins belong to which cluster, so a rebuild can
        # match new clusters to old ids by member overlap or centroid (recomputed from the
        # members' embeddings) and the reward workflow can attribute impressions by query pin.
        ("user_id", pa.int64()),
        ("cluster_id", pa.int64()),
        ("pin_id", pa.int64()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "user_features": USER_FEATURES,
    "pin_features": PIN_FEATURES,
    "pin_content": PIN_CONTENT,
    "user_dwell": USER_DWELL,
    "pin_dwell": PIN_DWELL,
    "user_clusters": USER_CLUSTERS,
    "cluster_reward": CLUSTER_REWARD,
    "cluster_members": CLUSTER_MEMBERS,
}
"""File name (without .parquet) -> schema, under ProjectHome.features."""
