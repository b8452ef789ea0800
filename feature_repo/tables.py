"""Contract of the offline feature tables: the files the feature pipeline writes under
`data/features/` and the Feast sources read. One schema per table; Feast views use the same
column names (feature names are prefixed so they stay unique inside a feature service).

Snapshot tables (user/pin/dwell features) hold one row per entity per day, stamped at the end
of the day and computed only from events before that stamp, so a point-in-time join never
leaks the future.

The contract also says how models must read each column: counts, durations and ages are
heavy-tailed and carry `HEAVY_TAILED` field metadata (models see log1p(max(x, 0))); rates and
shares are in [0, 1] and go in as they are. The Feast feature view over table `X` is named `X`,
so a column's Feast full name is `X__column` (`feature_view_of`).
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
EVENT_TIMESTAMP = "event_timestamp"
EMBEDDING = pa.list_(pa.float32())
TRANSFORM = b"pinfeed.transform"
HEAVY_TAILED = {TRANSFORM: b"log1p"}
"""Field metadata of counts, durations and ages: models feed them through log1p."""


def _heavy(name: str, type_: pa.DataType) -> pa.Field:
    """A heavy-tailed column (see `HEAVY_TAILED`)."""
    return pa.field(name, type_, metadata=HEAVY_TAILED)


USER_FEATURES = pa.schema(
    [
        ("user_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        _heavy("user_impressions_7d", pa.int64()),
        _heavy("user_impressions_30d", pa.int64()),
        ("user_closeup_rate_30d", pa.float32()),
        ("user_save_rate_30d", pa.float32()),
        ("user_click_rate_30d", pa.float32()),
        ("user_long_click_rate_30d", pa.float32()),
        _heavy("user_conversions_30d", pa.int64()),
    ]
)

PIN_FEATURES = pa.schema(
    [
        ("pin_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        _heavy("pin_impressions_30d", pa.int64()),
        ("pin_closeup_rate_30d", pa.float32()),
        ("pin_save_rate_30d", pa.float32()),
        ("pin_click_rate_30d", pa.float32()),
        ("pin_long_click_rate_30d", pa.float32()),
        ("pin_conversion_rate_30d", pa.float32()),
        _heavy("pin_age_days", pa.float32()),
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
        _heavy("user_clicks_30d", pa.int64()),
        _heavy("user_dwell_mean_s", pa.float32()),
        _heavy("user_dwell_median_s", pa.float32()),
        ("user_short_click_share", pa.float32()),
        ("user_long_click_share", pa.float32()),
    ]
)

PIN_DWELL = pa.schema(
    [
        ("pin_id", pa.int64()),
        (EVENT_TIMESTAMP, TS),
        _heavy("pin_clicks_30d", pa.int64()),
        _heavy("pin_dwell_mean_s", pa.float32()),
        _heavy("pin_dwell_median_s", pa.float32()),
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

FEATURE_TABLES: dict[str, pa.Schema] = {
    "user_features": USER_FEATURES,
    "pin_features": PIN_FEATURES,
    "pin_content": PIN_CONTENT,
    "user_dwell": USER_DWELL,
    "pin_dwell": PIN_DWELL,
    "user_clusters": USER_CLUSTERS,
    "cluster_reward": CLUSTER_REWARD,
}
"""The tables Feast serves: table name = feature view name."""

TABLES: dict[str, pa.Schema] = {**FEATURE_TABLES, "cluster_members": CLUSTER_MEMBERS}
"""File name (without .parquet) -> schema, under ProjectHome.features."""


def feature_columns(schema: pa.Schema) -> tuple[str, ...]:
    """A feature table's feature columns, in contract order (join key and timestamp dropped)."""
    return tuple(name for name in schema.names[1:] if name != EVENT_TIMESTAMP)


def feature_view_of(column: str) -> str:
    """The feature view (= table) serving `column`; every feature column name is unique."""
    views = [name for name, schema in FEATURE_TABLES.items() if column in feature_columns(schema)]
    if len(views) != 1:
        raise KeyError(f"{column!r} is a feature column of {views or 'no table'}; need exactly one")
    return views[0]


def heavy_tailed_columns() -> frozenset[str]:
    """Every feature column marked `HEAVY_TAILED`."""
    return frozenset(
        field.name
        for schema in FEATURE_TABLES.values()
        for field in schema
        if (field.metadata or {}).get(TRANSFORM) == HEAVY_TAILED[TRANSFORM]
    )
