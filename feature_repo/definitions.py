"""pinfeed's Feast definitions: one schema for training and serving (design §3).

Read top to bottom like a schema: entities, then the offline sources (parquet files the feature
pipeline writes under `<home>/data/features/`, see `feature_repo/tables.py`), the feature views over
them, the feature services that training and serving both ask for (serving_v1 with Feast feature
logging into `<home>/data/logs/serving_v1/`), and the push source for realtime cluster rewards.
Source and log paths point at `data/` beside the folder this file is in, so a copy of
`feature_repo/` beside a `data/` folder is a complete project (re-apply after moving a project:
the registry keeps absolute paths). This module imports nothing from pinfeed: `feast apply` loads
it as a loose file, and `feature_repo.store.apply_definitions` loads the home's copy the same way.

Feature names carry their table's prefix (`user_`, `pin_`, `reward_`) so they stay unique inside a
service; callers still read with `full_feature_names=True` (`view__feature`), because the query pin
projection repeats pin_content's names under another view name.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feast.types import Array, Bool, Float32, Int32, Int64
from feast.value_type import ValueType

SNAPSHOT_TTL = timedelta(days=2)
"""Daily snapshots: a row older than two days is a missed pipeline run, not a valid value."""
CLUSTER_TTL = timedelta(days=30)
"""Clusters and rewards are recomputed less often and stay meaningful for weeks."""
STATIC_TTL = timedelta(0)
"""Feast's "no expiry": pin content is stamped once, at the pin's creation."""

# --- entities -------------------------------------------------------------------------------

# The person a request is for; keys user-level snapshots and clusters.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
# A candidate or query pin; keys pin-level snapshots and content.
pin = Entity(name="pin", join_keys=["pin_id"], value_type=ValueType.INT64)
# One interest cluster of one user; rewards are keyed by it so selection can read them directly.
cluster = Entity(name="cluster", join_keys=["cluster_id"], value_type=ValueType.INT64)

# --- offline sources ------------------------------------------------------------------------


FEATURES_DIR = Path(__file__).resolve().parent.parent / "data" / "features"
"""`<home>/data/features`, absolute: the DuckDB offline store reads a relative path against the
working directory, not against this repo, so the registry must hold absolute paths."""


def _table(name: str) -> FileSource:
    """The parquet table `name` written by the feature pipeline (schema in tables.py)."""
    return FileSource(
        name=f"{name}_source",
        path=str(FEATURES_DIR / f"{name}.parquet"),
        timestamp_field="event_timestamp",
    )


# Daily per-user activity counts and engagement rates.
user_features_source = _table("user_features")
# Daily per-pin engagement rates and age.
pin_features_source = _table("pin_features")
# Static pin content: embedding, topic, shoppable flag.
pin_content_source = _table("pin_content")
# Daily per-user click-dwell statistics.
user_dwell_source = _table("user_dwell")
# Daily per-pin click-dwell statistics.
pin_dwell_source = _table("pin_dwell")
# Per-user interest clusters from each clustering run.
user_clusters_source = _table("user_clusters")
# Per-cluster rewards from the offline reward job; also the batch side of the push source.
cluster_reward_batch_source = _table("cluster_reward")

# --- feature logs ---------------------------------------------------------------------------

LOGS_DIR = Path(__file__).resolve().parent.parent / "data" / "logs"
"""`<home>/data/logs`, absolute for the same reason as FEATURES_DIR: one parquet folder per
logged feature service (`feature_repo/feature_logging.py` writes and reads them)."""
SERVING_LOG_SAMPLE_RATE = 1.0
"""Share of serving requests whose feature vectors are logged (all of a request's rows or none);
lower it when the logs outgrow the disk (the skew report needs hundreds of rows, not all) and
re-apply: serving reads the rate from the registry."""

# --- push source ----------------------------------------------------------------------------

# Realtime reward updates from /feedback land here and go straight to the online store.
cluster_reward_push_source = PushSource(
    name="cluster_reward_push",
    batch_source=cluster_reward_batch_source,
)

# --- feature views --------------------------------------------------------------------------

# What the user does: activity volume and per-engagement rates over 7/30 days.
user_features_fv = FeatureView(
    name="user_features",
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="user_impressions_7d", dtype=Int64),
        Field(name="user_impressions_30d", dtype=Int64),
        Field(name="user_closeup_rate_30d", dtype=Float32),
        Field(name="user_save_rate_30d", dtype=Float32),
        Field(name="user_click_rate_30d", dtype=Float32),
        Field(name="user_long_click_rate_30d", dtype=Float32),
        Field(name="user_conversions_30d", dtype=Int64),
    ],
    source=user_features_source,
    online=True,
)

# How a pin performs: per-engagement rates, conversion rate and age.
pin_features_fv = FeatureView(
    name="pin_features",
    entities=[pin],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="pin_impressions_30d", dtype=Int64),
        Field(name="pin_closeup_rate_30d", dtype=Float32),
        Field(name="pin_save_rate_30d", dtype=Float32),
        Field(name="pin_click_rate_30d", dtype=Float32),
        Field(name="pin_long_click_rate_30d", dtype=Float32),
        Field(name="pin_conversion_rate_30d", dtype=Float32),
        Field(name="pin_age_days", dtype=Float32),
    ],
    source=pin_features_source,
    online=True,
)

# What a pin is: the content embedding both towers read, its topic and shoppability.
pin_content_fv = FeatureView(
    name="pin_content",
    entities=[pin],
    ttl=STATIC_TTL,
    schema=[
        Field(name="content_embedding", dtype=Array(Float32)),
        Field(name="topic", dtype=Int32),
        Field(name="shoppable", dtype=Bool),
    ],
    source=pin_content_source,
    online=True,
)

# How long the user stays after a click: separates real interest from clickbait habits.
user_dwell_fv = FeatureView(
    name="user_dwell",
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="user_clicks_30d", dtype=Int64),
        Field(name="user_dwell_mean_s", dtype=Float32),
        Field(name="user_dwell_median_s", dtype=Float32),
        Field(name="user_short_click_share", dtype=Float32),
        Field(name="user_long_click_share", dtype=Float32),
    ],
    source=user_dwell_source,
    online=True,
)

# How long people stay after clicking this pin: the clickbait signal for ranking.
pin_dwell_fv = FeatureView(
    name="pin_dwell",
    entities=[pin],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="pin_clicks_30d", dtype=Int64),
        Field(name="pin_dwell_mean_s", dtype=Float32),
        Field(name="pin_dwell_median_s", dtype=Float32),
        Field(name="pin_short_click_share", dtype=Float32),
        Field(name="pin_long_click_share", dtype=Float32),
    ],
    source=pin_dwell_source,
    online=True,
)

# The user's interest clusters (aligned lists, by importance): what the query selector samples.
user_clusters_fv = FeatureView(
    name="user_clusters",
    entities=[user],
    ttl=CLUSTER_TTL,
    schema=[
        Field(name="cluster_ids", dtype=Array(Int64)),
        Field(name="medoid_pin_ids", dtype=Array(Int64)),
        Field(name="cluster_importance", dtype=Array(Float32)),
    ],
    source=user_clusters_source,
    online=True,
)

# Each cluster's recent engagement rate; fed by the batch job and by realtime pushes.
cluster_reward_fv = FeatureView(
    name="cluster_reward",
    entities=[cluster],
    ttl=CLUSTER_TTL,
    schema=[
        Field(name="reward_impressions", dtype=Int64),
        Field(name="reward_engagements", dtype=Int64),
        Field(name="reward", dtype=Float32),
        Field(name="reward_has_data", dtype=Bool),
    ],
    source=cluster_reward_push_source,
    online=True,
)


def query_pin_content() -> FeatureView:
    """The query pin's content, joined on query_pin_id: the query tower's view of the engaged pin.

    A projection of pin_content, not a view of its own; built by a function because a
    module-level copy would look to `feast apply` like a second view named pin_content.
    """
    return pin_content_fv.with_name("query_pin_content").with_join_key_map(
        {"pin_id": "query_pin_id"}
    )


def candidate_pin_content() -> FeatureView:
    """pin_content as the candidate's content, under an explicit alias equal to its own name.

    Feast 0.67 compares a service with its registry copy by sorting the projections, and the
    sort fails on an unaliased projection beside an aliased one of the same view (None < str);
    aliasing both keeps every service read working and leaves the feature names unchanged.
    """
    return pin_content_fv.with_name("pin_content")


# --- feature services -----------------------------------------------------------------------

# Two-tower retrieval: user + query pin on one side, candidate pin on the other.
retrieval_v1 = FeatureService(
    name="retrieval_v1",
    features=[
        user_features_fv,
        user_dwell_fv,
        pin_features_fv,
        candidate_pin_content(),
        query_pin_content(),
    ],
)

# Multi-task ranking: everything retrieval reads plus the candidate's dwell statistics.
ranking_v1 = FeatureService(
    name="ranking_v1",
    features=[
        user_features_fv,
        user_dwell_fv,
        pin_features_fv,
        candidate_pin_content(),
        query_pin_content(),
        pin_dwell_fv,
    ],
)

# Online serving: ranking's features plus what query selection needs (clusters and rewards).
serving_v1 = FeatureService(
    name="serving_v1",
    features=[
        user_features_fv,
        user_dwell_fv,
        pin_features_fv,
        candidate_pin_content(),
        query_pin_content(),
        pin_dwell_fv,
        user_clusters_fv,
        cluster_reward_fv,
    ],
    # What serving used per request and candidate, for the row-level skew report.
    logging_config=LoggingConfig(
        destination=FileLoggingDestination(path=str(LOGS_DIR / "serving_v1")),
        sample_rate=SERVING_LOG_SAMPLE_RATE,
    ),
)
