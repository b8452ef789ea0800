"""Event contracts: conforming, round trips through the folder layout, and row-level validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from pinfeed.errors import DataNotFoundError, SchemaError, ValidationError
from pinfeed.events import (
    PARTITIONED,
    EventSet,
    EventSetMeta,
    conform,
    read_event_set,
    write_event_set,
)
from pinfeed.schema import SCHEMAS
from pinfeed.validate import validate, validate_table

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _impressions(**overrides: list) -> pa.Table:
    rows = {
        "event_ts": [T0, T0, datetime(2026, 10, 2, tzinfo=UTC)],
        "request_id": [1, 1, 2],
        "user_id": [0, 0, 1],
        "pin_id": [10, 11, 10],
        "surface": ["homefeed", "homefeed", "related"],
        "query_pin_id": [None, None, 11],
        "cluster_id": [None, None, None],
        "position": [0, 1, 0],
        "closeup": [True, False, False],
        "save": [False, False, False],
        "click": [True, False, True],
        "long_click": [True, False, False],
        "click_dwell_s": [45.0, None, 3.0],
    }
    rows.update(overrides)
    return conform(pa.table(rows), "impressions")


def _event_set(impressions: pa.Table | None = None) -> EventSet:
    users = conform(
        pa.table(
            {
                "user_id": [0, 1],
                "created_ts": [T0, T0],
                "country": ["fr", "us"],
                "age_bucket": ["18-24", "25-34"],
            }
        ),
        "users",
    )
    pins = conform(
        pa.table(
            {
                "pin_id": [10, 11],
                "created_ts": [T0, T0],
                "topic": [0, 1],
                "shoppable": [True, False],
                "content_embedding": [[1.0, 0.0], [0.0, 1.0]],
            }
        ),
        "pins",
    )
    conversions = conform(
        pa.table(
            {
                "event_ts": [T0],
                "user_id": [0],
                "pin_id": [10],
                "kind": ["checkout"],
                "request_id": [1],
            }
        ),
        "conversions",
    )
    meta = EventSetMeta(
        source="synthetic", start=T0, end=T0, long_click_threshold_s=30.0, embedding_dim=2
    )
    return EventSet(
        impressions if impressions is not None else _impressions(), conversions, users, pins, meta
    )


def test_good_event_set_validates_and_round_trips(tmp_path):
    events = _event_set()
    assert validate(events).ok
    write_event_set(events, tmp_path / "events")
    assert sorted(p.name for p in (tmp_path / "events" / "impressions").iterdir()) == [
        "date=2026-10-01",
        "date=2026-10-02",
    ]
    back = read_event_set(tmp_path / "events")
    assert back.meta == events.meta
    sort_keys = {
        "impressions": "pin_id",
        "conversions": "pin_id",
        "users": "user_id",
        "pins": "pin_id",
    }
    for name in SCHEMAS:
        key = (
            [("event_ts", "ascending"), (sort_keys[name], "ascending")]
            if name in PARTITIONED
            else sort_keys[name]
        )
        assert back.table(name).sort_by(key).equals(events.table(name).sort_by(key))


def test_conform_names_missing_column():
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['kind'\]"):
        conform(
            pa.table({"event_ts": [T0], "user_id": [0], "pin_id": [1], "request_id": [1]}),
            "conversions",
        )


def test_conform_names_uncastable_column():
    with pytest.raises(SchemaError, match=r"users\.user_id"):
        conform(
            pa.table(
                {"user_id": ["abc"], "created_ts": [T0], "country": ["x"], "age_bucket": ["y"]}
            ),
            "users",
        )


def test_read_missing_event_set_says_how_to_make_one(tmp_path):
    with pytest.raises(DataNotFoundError, match="pinfeed data generate"):
        read_event_set(tmp_path / "nope")


@pytest.mark.parametrize(
    ("overrides", "row", "field", "reason"),
    [
        ({"surface": ["homefeed", "search", "related"]}, 1, "surface", "must be one of"),
        ({"position": [0, -1, 0]}, 1, "position", "must be >= 0"),
        (
            {"click_dwell_s": [45.0, 2.0, 3.0]},
            1,
            "click_dwell_s",
            "present although click is false",
        ),
        (
            {"click_dwell_s": [None, None, 3.0]},
            0,
            "click_dwell_s",
            "missing although click is true",
        ),
        ({"click_dwell_s": [-1.0, None, 3.0]}, 0, "click_dwell_s", "finite number >= 0"),
        ({"long_click": [True, True, False]}, 1, "long_click", "true although click is false"),
        (
            {"long_click": [True, False, True]},
            2,
            "long_click",
            "disagrees with click_dwell_s >= 30 s",
        ),
        ({"user_id": [0, 0, 7]}, 2, "user_id", "unknown user"),
        ({"pin_id": [10, 99, 10]}, 1, "pin_id", "unknown pin"),
    ],
)
def test_each_bad_impression_row_is_named(overrides, row, field, reason):
    report = validate(_event_set(_impressions(**overrides))).tables["impressions"]
    assert len(report.problems) == 1
    got_row, got_field, got_reason = report.problems[0]
    assert (got_row, got_field) == (row, field)
    assert reason in got_reason
    assert report.bad.tolist() == [i == row for i in range(3)]
    with pytest.raises(ValidationError, match=f"row {row}: {field}"):
        report.raise_if_bad()


def test_pin_rules_catch_embedding_length_duplicates_and_nan():
    pins = conform(
        pa.table(
            {
                "pin_id": [1, 1, 2],
                "created_ts": [T0, T0, T0],
                "topic": [0, 0, 0],
                "shoppable": [False, False, False],
                "content_embedding": [[0.0, 1.0], [0.0, 1.0, 2.0], [float("nan"), 0.0]],
            }
        ),
        "pins",
    )
    report = validate_table("pins", pins, embedding_dim=2)
    assert [(r, f) for r, f, _ in report.problems] == [(1, "pin_id"), (2, "content_embedding")]


def test_conversion_kind_must_be_known():
    conversions = conform(
        pa.table(
            {
                "event_ts": [T0],
                "user_id": [0],
                "pin_id": [10],
                "kind": ["refund"],
                "request_id": [None],
            }
        ),
        "conversions",
    )
    report = validate_table("conversions", conversions)
    assert report.problems == [(0, "kind", "must be one of ['checkout', 'add_to_cart']")]


def test_empty_partitioned_table_round_trips(tmp_path):
    """An implicit-feedback log has no conversions; its event set must still read back."""
    events = _event_set()
    no_conversions = EventSet(
        events.impressions,
        SCHEMAS["conversions"].empty_table(),
        events.users,
        events.pins,
        events.meta,
    )
    back = read_event_set(write_event_set(no_conversions, tmp_path / "events"))
    assert back.conversions.num_rows == 0
    assert back.conversions.schema == SCHEMAS["conversions"]


def test_event_tables_read_back_in_canonical_order(tmp_path):
    """Seeded steps downstream (negative downsampling) need the same rows in the same order,
    whatever order the dataset scan yields its files in."""
    shuffled = _impressions().take([2, 1, 0])
    back = read_event_set(write_event_set(_event_set(shuffled), tmp_path / "events"))
    keys = list(
        zip(
            back.impressions.column("event_ts").to_pylist(),
            back.impressions.column("request_id").to_pylist(),
            back.impressions.column("position").to_pylist(),
            strict=True,
        )
    )
    assert keys == sorted(keys)
