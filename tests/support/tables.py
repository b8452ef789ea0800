"""Hand-made feature tables (two days of one user and one pin) for the Feast tests, with values
chosen so point-in-time joins and online reads can be checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from feature_repo.store import online_features
from feature_repo.tables import TABLES
from pinfeed.home import ProjectHome

T0 = datetime(2024, 3, 10, tzinfo=UTC)
EMBED_7 = [1.0, 2.0]
EMBED_3 = [4.0, 5.0]


def write_table(home: ProjectHome, name: str, rows: list[dict[str, Any]]) -> None:
    pq.write_table(
        pa.Table.from_pylist(rows, schema=TABLES[name]), home.features / f"{name}.parquet"
    )


def write_tables(home: ProjectHome, t0: datetime) -> None:
    """Two daily snapshots for user 1 and pin 7 (values change on day 2), static content for
    pins 7 and 3, one clustering run and one reward row. Day-2 values are the latest."""
    day = timedelta(days=1)

    def user(ts: datetime, impressions: int) -> dict[str, Any]:
        return {"user_id": 1, "event_timestamp": ts, "user_impressions_7d": impressions,
                "user_impressions_30d": 3 * impressions, "user_closeup_rate_30d": 0.5,
                "user_save_rate_30d": 0.25, "user_click_rate_30d": 0.125,
                "user_long_click_rate_30d": 0.0625, "user_conversions_30d": 1}  # fmt: skip

    def pin(ts: datetime, rate: float) -> dict[str, Any]:
        return {"pin_id": 7, "event_timestamp": ts, "pin_impressions_30d": 40,
                "pin_closeup_rate_30d": 0.5, "pin_save_rate_30d": 0.25, "pin_click_rate_30d": rate,
                "pin_long_click_rate_30d": 0.0625, "pin_conversion_rate_30d": 0.03125,
                "pin_age_days": 12.0}  # fmt: skip

    write_table(home, "user_features", [user(t0, 10), user(t0 + day, 11)])
    write_table(home, "pin_features", [pin(t0, 0.125), pin(t0 + day, 0.375)])
    write_table(home, "pin_content", [
        {"pin_id": 7, "event_timestamp": t0 - 30 * day, "content_embedding": EMBED_7,
         "topic": 2, "shoppable": True},
        {"pin_id": 3, "event_timestamp": t0 - 30 * day, "content_embedding": EMBED_3,
         "topic": 5, "shoppable": False},
    ])  # fmt: skip
    write_table(home, "user_dwell", [
        {"user_id": 1, "event_timestamp": t0 + day, "user_clicks_30d": 4,
         "user_dwell_mean_s": 20.0, "user_dwell_median_s": 15.0,
         "user_short_click_share": 0.25, "user_long_click_share": 0.5},
    ])  # fmt: skip
    write_table(home, "pin_dwell", [
        {"pin_id": 7, "event_timestamp": t0 + day, "pin_clicks_30d": 8, "pin_dwell_mean_s": 9.0,
         "pin_dwell_median_s": 6.0, "pin_short_click_share": 0.5, "pin_long_click_share": 0.25},
    ])  # fmt: skip
    write_table(home, "user_clusters", [
        {"user_id": 1, "event_timestamp": t0, "cluster_ids": [100, 101],
         "medoid_pin_ids": [7, 3], "cluster_importance": [0.75, 0.25]},
    ])  # fmt: skip
    write_table(home, "cluster_reward", [
        {"cluster_id": 100, "event_timestamp": t0, "user_id": 1, "reward_impressions": 10,
         "reward_engagements": 2, "reward": 0.2, "reward_has_data": True},
    ])  # fmt: skip


def assert_latest_online_values(store: FeatureStore) -> None:
    """What `write_tables`' store serves once loaded past day 2: the latest row of each view,
    nothing for user 2 (no rows), the query pin's own content."""
    rows = [{"user_id": u, "pin_id": 7, "query_pin_id": 3, "cluster_id": 100} for u in (1, 2)]
    online = online_features(store, "serving_v1", rows)
    assert online["user_features__user_impressions_7d"] == [11, None]
    assert online["pin_features__pin_click_rate_30d"] == [0.375, 0.375]
    assert online["user_dwell__user_dwell_mean_s"] == [20.0, None]
    assert online["pin_content__content_embedding"] == [EMBED_7, EMBED_7]
    assert online["query_pin_content__content_embedding"] == [EMBED_3, EMBED_3]
    assert online["query_pin_content__shoppable"] == [False, False]
    assert online["user_clusters__cluster_ids"] == [[100, 101], None]
    assert online["cluster_reward__reward"] == pytest.approx([0.2, 0.2])
