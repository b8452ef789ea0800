"""Training sets from hand-made events and feature tables, joined by real Feast (SQLite home)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from feature_repo import store as feature_store
from feature_repo.store import service_feature_names
from pinfeed.events import EventSet, EventSetMeta
from pinfeed.schema import CONVERSION_SCHEMA, IMPRESSION_SCHEMA, PIN_SCHEMA, USER_SCHEMA
from tests.support.homes import make_home
from tests.support.tables import T0, write_tables
from training.training_sets import (
    TrainingSetConfig,
    build_ranking_set,
    build_retrieval_set,
    ranking_examples,
    read_training_set_meta,
    retrieval_examples,
)

HOUR = timedelta(hours=1)


def impression(
    request_id: int, hours: float, user_id: int, pin_id: int, query_pin_id: int | None, **flags: Any
) -> dict[str, Any]:
    engaged = {"closeup": False, "save": False, "click": False, "long_click": False, **flags}
    return {"event_ts": T0 + hours * HOUR, "request_id": request_id, "user_id": user_id,
            "pin_id": pin_id, "surface": "homefeed", "query_pin_id": query_pin_id,
            "cluster_id": 100, "position": 0, "click_dwell_s": flags.get("click_dwell_s"),
            **{k: engaged[k] for k in ("closeup", "save", "click", "long_click")}}  # fmt: skip


def event_set(impressions: list[dict[str, Any]], conversions: list[dict[str, Any]]) -> EventSet:
    meta = EventSetMeta(source="synthetic", start=T0, end=T0 + 72 * HOUR,
                        long_click_threshold_s=20.0, embedding_dim=2)  # fmt: skip
    users = [{"user_id": u, "created_ts": T0 - 90 * 24 * HOUR, "country": "fr",
              "age_bucket": "25-34"} for u in (1, 2)]  # fmt: skip
    pins = [{"pin_id": p, "created_ts": T0 - 30 * 24 * HOUR, "topic": 1, "shoppable": True,
             "content_embedding": [0.0, 1.0]} for p in (3, 7, 9)]  # fmt: skip
    return EventSet(
        impressions=pa.Table.from_pylist(impressions, schema=IMPRESSION_SCHEMA),
        conversions=pa.Table.from_pylist(conversions, schema=CONVERSION_SCHEMA),
        users=pa.Table.from_pylist(users, schema=USER_SCHEMA),
        pins=pa.Table.from_pylist(pins, schema=PIN_SCHEMA),
        meta=meta,
    )


def small_events() -> EventSet:
    """User 1 clicks pin 7 (request 1, query pin 3) at 12 h and saves pin 3 (no query pin
    logged) at 30 h; converts on pin 7 at 40 h (request 1) and on pin 9 at 50 h (no request)."""
    impressions = [
        impression(1, 12, 1, 7, 3, closeup=True, click=True, long_click=True, click_dwell_s=30.0),
        impression(1, 12, 1, 9, 3),
        impression(2, 30, 1, 3, None, save=True),
        impression(3, 30, 2, 9, 7),
    ]
    conversions = [
        {"event_ts": T0 + 40 * HOUR, "user_id": 1, "pin_id": 7, "kind": "checkout", "request_id": 1},
        {"event_ts": T0 + 50 * HOUR, "user_id": 1, "pin_id": 9, "kind": "add_to_cart",
         "request_id": None},
    ]  # fmt: skip
    return event_set(impressions, conversions)


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    home = make_home(tmp_path / "home")
    write_tables(home, T0)
    opened = feature_store.open_store(home)
    feature_store.apply_definitions(opened)
    return opened


def test_retrieval_examples_take_query_pins_from_the_request_or_history() -> None:
    frame = retrieval_examples(small_events())
    got = {
        (r.positive_kind, r.pin_id): (r.query_pin_id, r.event_timestamp, r.positive_ts)
        for r in frame.itertuples()
    }
    assert got == {
        ("click", 7): (3, T0 + 12 * HOUR, T0 + 12 * HOUR),
        ("save", 3): (7, T0 + 30 * HOUR, T0 + 30 * HOUR),  # latest engaged pin before it
        ("conversion", 7): (3, T0 + 12 * HOUR, T0 + 40 * HOUR),  # its request's impression
        ("conversion", 9): (3, T0 + 50 * HOUR, T0 + 50 * HOUR),  # no request: history
    }
    assert frame.loc[frame["positive_kind"] == "click", "click_dwell_s"].tolist() == [30.0]
    assert frame.loc[frame["positive_kind"] != "click", "click_dwell_s"].isna().all()


def test_ranking_downsampling_keeps_engaged_rows_and_about_w_of_the_rest() -> None:
    rng = np.random.default_rng(7)
    n, w = 20_000, 0.1
    flags = rng.random((n, 4)) < [0.04, 0.02, 0.03, 0.01]
    impressions = [
        impression(i, i / 1000, 1 + i % 5, i % 300, None, closeup=bool(f[0]), save=bool(f[1]),
                   click=bool(f[2]), long_click=bool(f[2] and f[3]))
        for i, f in enumerate(flags)
    ]  # fmt: skip
    events = event_set(impressions, [])
    engaged = np.array([any((r["closeup"], r["save"], r["click"])) for r in impressions])
    frame = ranking_examples(events, w, seed=3)
    kept = set(frame["request_id"])
    assert {i for i in range(n) if engaged[i]} <= kept
    negatives = n - engaged.sum()
    kept_negatives = len(kept) - engaged.sum()
    sigma = np.sqrt(negatives * w * (1 - w))
    assert abs(kept_negatives - w * negatives) < 4 * sigma
    assert set(frame["sample_rate"]) == {1.0, w}
    assert (frame["sample_rate"] == w).sum() == kept_negatives
    assert (
        ranking_examples(events, w, seed=3)["request_id"].tolist() == frame["request_id"].tolist()
    )


def test_retrieval_set_is_joined_point_in_time_and_records_its_metadata(
    store: FeatureStore, tmp_path: Path
) -> None:
    out = tmp_path / "training_sets"
    path = build_retrieval_set(store, small_events(), out, TrainingSetConfig())
    table = pq.read_table(path).to_pandas()
    by_kind = {(r.positive_kind, r.pin_id): r for r in table.itertuples()}
    # the click at 12 h sees the day-1 snapshot, never the day-2 value stamped at 24 h
    assert by_kind["click", 7].user_features__user_impressions_7d == 10
    assert by_kind["conversion", 7].user_features__user_impressions_7d == 10
    assert by_kind["save", 3].user_features__user_impressions_7d == 11
    assert pd.isna(by_kind["conversion", 9].pin_features__pin_age_days)  # pin 9 has none
    assert list(by_kind["click", 7].query_pin_content__content_embedding) == [4.0, 5.0]
    meta = read_training_set_meta(path)
    assert meta.feature_service == "retrieval_v1"
    assert meta.features == list(service_feature_names(store, "retrieval_v1"))
    assert set(meta.features) <= set(table.columns)
    assert (meta.start, meta.end, meta.rows) == (T0 + 12 * HOUR, T0 + 50 * HOUR, 4)
    assert json.loads((out / "retrieval.json").read_text())["rows"] == 4


def test_ranking_set_carries_labels_rates_and_ranking_features(
    store: FeatureStore, tmp_path: Path
) -> None:
    config = TrainingSetConfig(negative_sample_rate=1.0)
    path = build_ranking_set(store, small_events(), tmp_path, config)
    table = pq.read_table(path).to_pandas()
    assert len(table) == 4
    assert table["click"].sum() == 1 and table["save"].sum() == 1
    assert "pin_dwell__pin_dwell_mean_s" in table.columns
    assert table["pin_dwell__pin_dwell_mean_s"].isna().all()  # pin 7 dwell only from 24 h
    meta = read_training_set_meta(path)
    assert (meta.name, meta.feature_service, meta.negative_sample_rate) == (
        "ranking",
        "ranking_v1",
        1.0,
    )
