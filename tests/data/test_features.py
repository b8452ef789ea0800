"""Data contracts of the offline feature tables: schemas, hand-computed windows and rates,
point-in-time correctness (a row stamped T is the same whether or not later events exist)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from feature_repo.pipeline import FeatureConfig, build_features
from feature_repo.pipeline.dwell import dwell_edges, histogram_median
from feature_repo.tables import TABLES
from pinfeed.errors import ConfigError, DataNotFoundError
from pinfeed.events import EventSet
from pinfeed.schema import CONVERSION_SCHEMA
from tests.support.events import DAY, START, hand_impressions, make_event_set, random_events


def read(out: Path, name: str) -> pa.Table:
    return pq.read_table(out / f"{name}.parquet")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[EventSet, Path]:
    events = random_events()
    out = tmp_path_factory.mktemp("features")
    build_features(events, out, progress=False)
    return events, out


def test_every_table_is_written_with_exactly_the_contract_schema(built):
    _, out = built
    for name, schema in TABLES.items():
        assert read(out, name).schema.remove_metadata() == schema, name


SNAPSHOTS = ("user_features", "pin_features", "user_dwell", "pin_dwell")


@pytest.mark.parametrize("cut_day", [5, 17, 31])
def test_snapshot_rows_stamped_up_to_t_ignore_events_after_t(built, tmp_path, cut_day):
    """Point in time: rebuilding from the events before T reproduces every row stamped <= T."""
    events, out = built
    cut = START + cut_day * DAY
    before = events.impressions.filter(pc.less(events.impressions["event_ts"], cut))
    conv = events.conversions.filter(pc.less(events.conversions["event_ts"], cut))
    truncated = EventSet(
        before, conv, events.users, events.pins, events.meta.model_copy(update={"end": cut})
    )
    build_features(truncated, tmp_path, progress=False)
    for name in SNAPSHOTS:
        full = read(out, name)
        full = full.filter(pc.less_equal(full["event_timestamp"], cut))
        assert full.num_rows > 0, name
        assert read(tmp_path, name).equals(full), name


def test_snapshot_stamps_are_day_ends_and_keys_unique(built):
    _, out = built
    for name in SNAPSHOTS:
        frame = read(out, name).to_pandas()
        stamps = frame["event_timestamp"]
        assert (stamps == stamps.dt.floor("D")).all(), name
        assert not frame.duplicated([frame.columns[0], "event_timestamp"]).any(), name


def test_user_windows_rates_and_closing_row_by_hand(tmp_path):
    """User 1: 4 impressions on day 0 (1 click, 1 save), 2 on day 10; user 2: 4 on day 0."""
    rows = [{"event_ts": START + timedelta(hours=h), "user_id": 1, "pin_id": 0} for h in (1, 2, 3)]
    rows += [{"event_ts": START + timedelta(hours=4), "user_id": 1, "pin_id": 0, "save": True}]
    rows += [{"event_ts": START + 10 * DAY + timedelta(hours=1), "user_id": 1, "pin_id": 1}] * 2
    rows += [{"event_ts": START + timedelta(hours=5), "user_id": 2, "pin_id": 1}] * 4
    rows[0].update(click=True, click_dwell_s=3.0)
    conv = pa.Table.from_pylist(
        [
            {
                "event_ts": START + 2 * DAY,
                "user_id": 1,
                "pin_id": 0,
                "kind": "checkout",
                "request_id": None,
            }
        ],
        schema=CONVERSION_SCHEMA,
    )
    events = make_event_set(hand_impressions(rows), conv, np.eye(2), START + 50 * DAY)
    config = FeatureConfig(rate_prior_weight=2.0)
    build_features(events, tmp_path, config=config, progress=False)
    user = read(tmp_path, "user_features").to_pandas().set_index(["user_id", "event_timestamp"])

    def at(day: int) -> tuple[int, datetime]:
        """User 1's snapshot stamped at 00:00 of `day` (it covers the days before)."""
        return 1, START + day * DAY

    assert user.loc[at(1), "user_impressions_7d"] == 4
    # Global prior on day 0: 1 save / 8 impressions; user 1: (1 + 1/8 * 2) / (4 + 2).
    assert user.loc[at(1), "user_save_rate_30d"] == pytest.approx((1 + 2 / 8) / 6, rel=1e-6)
    assert user.loc[at(3), "user_conversions_30d"] == 1
    assert user.loc[at(8), "user_impressions_7d"] == 0
    assert user.loc[at(11), "user_impressions_7d"] == 2
    assert user.loc[at(11), "user_impressions_30d"] == 6
    # The day-0 events leave the 30-day window after day 29; day 10's after day 39.
    assert user.loc[at(31), "user_impressions_30d"] == 2
    closing = user.loc[at(41)]
    assert closing["user_impressions_30d"] == 0
    # An empty window reads as the prior, which is 0 once the global window is empty too.
    assert closing["user_save_rate_30d"] == pytest.approx(0.0)
    assert at(42) not in user.index
    assert user.loc[(2, START + 31 * DAY), "user_impressions_30d"] == 0
    assert (2, START + 32 * DAY) not in user.index


def test_dwell_statistics_by_hand(tmp_path):
    dwells = [1.0, 2.0, 3.0, 10.0, 40.0]
    rows = [
        {
            "event_ts": START + timedelta(hours=i),
            "user_id": 3,
            "pin_id": i % 2,
            "click": True,
            "long_click": d > 30,
            "click_dwell_s": d,
        }
        for i, d in enumerate(dwells)
    ]
    rows.append({"event_ts": START + timedelta(hours=9), "user_id": 3, "pin_id": 0})
    events = make_event_set(
        hand_impressions(rows), CONVERSION_SCHEMA.empty_table(), np.eye(2), START + 40 * DAY
    )
    build_features(events, tmp_path, progress=False)
    dwell = read(tmp_path, "user_dwell").to_pandas().set_index("event_timestamp")
    first = dwell.loc[START + DAY]
    assert first["user_clicks_30d"] == 5
    assert first["user_dwell_mean_s"] == pytest.approx(np.mean(dwells), rel=1e-6)
    assert first["user_dwell_median_s"] == pytest.approx(3.0, rel=0.16)
    assert first["user_short_click_share"] == pytest.approx(3 / 5)
    assert first["user_long_click_share"] == pytest.approx(1 / 5)
    closing = dwell.loc[START + 31 * DAY]
    assert closing["user_clicks_30d"] == 0 and np.isnan(closing["user_dwell_median_s"])
    pin = read(tmp_path, "pin_dwell").to_pandas().set_index(["pin_id", "event_timestamp"])
    assert pin.loc[(0, START + DAY), "pin_dwell_mean_s"] == pytest.approx((1 + 3 + 40) / 3)


def test_histogram_median_is_within_one_bin_of_the_exact_median():
    rng = np.random.default_rng(3)
    config = FeatureConfig()
    edges = dwell_edges(config)
    samples = [rng.lognormal(2.0, 1.2, size) for size in (1, 2, 7, 50, 500)]
    hist = np.stack([np.histogram(s, bins=edges)[0] for s in samples]).astype(float)
    approx = histogram_median(hist, edges)
    ratio = edges[2] / edges[1]
    for value, sample in zip(approx, samples, strict=True):
        assert np.median(sample) / ratio <= value <= np.median(sample) * ratio


def test_pin_content_and_age(tmp_path):
    created = int(START.timestamp() * 1e6) - np.array([3, 1]) * 86_400_000_000
    rows = [{"event_ts": START + timedelta(hours=1), "user_id": 1, "pin_id": 0}]
    events = make_event_set(
        hand_impressions(rows), CONVERSION_SCHEMA.empty_table(), np.eye(2), START + 3 * DAY, created
    )
    build_features(events, tmp_path, progress=False)
    content = read(tmp_path, "pin_content")
    assert content["pin_id"].to_pylist() == [0, 1]
    assert content["event_timestamp"].equals(events.pins["created_ts"])
    pins = read(tmp_path, "pin_features").to_pandas().set_index("event_timestamp")
    assert pins.loc[START + DAY, "pin_age_days"] == pytest.approx(4.0)


def test_short_click_threshold_above_long_click_is_refused(tmp_path):
    events = random_events(days=2, n_imp=50)
    with pytest.raises(ConfigError, match="short_click_s"):
        build_features(events, tmp_path, config=FeatureConfig(short_click_s=60.0), progress=False)


def test_previous_folder_without_members_is_refused(tmp_path):
    events = random_events(days=2, n_imp=50)
    with pytest.raises(DataNotFoundError, match="cluster_members"):
        build_features(events, tmp_path / "out", previous=tmp_path / "nothing", progress=False)


def test_an_event_set_without_events_gives_empty_tables(tmp_path):
    empty = random_events(days=3, n_imp=10).impressions.slice(0, 0)
    events = make_event_set(empty, CONVERSION_SCHEMA.empty_table(), np.eye(2), START + 3 * DAY)
    result = build_features(events, tmp_path, progress=False)
    assert result.rows == {name: 2 if name == "pin_content" else 0 for name in TABLES}
    for name, schema in TABLES.items():
        assert read(tmp_path, name).schema.remove_metadata() == schema, name
