"""`pinfeed.traffic.ingest`: served items + feedback -> event-set partitions, hand-counted:
flags and dwell land on the right rows, every item and event is accounted for, a second run
changes nothing, feedback that arrives after a run lands on the next, the logs are read from
Redis when REDIS_URL says so, and an event set written before `hide` existed reads it as null."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from feature_repo.store import open_store
from pinfeed.errors import ConfigError
from pinfeed.events import read_event_set, write_event_set
from pinfeed.traffic.feedback_log import RedisFeedbackLog
from pinfeed.traffic.ingest import ingest_served
from pinfeed.traffic.records import FeedbackRecord, ServedItem
from pinfeed.traffic.served import RedisServedLog
from pinfeed.validate import validate
from pinfeed_cli import steps
from tests.support.events import random_events
from tests.support.homes import make_home
from tests.support.redis import RedisEndpoint

SERVED_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
WINDOW = timedelta(hours=1)
REQUEST = 9_000_000_001


def item(pin: int, position: int) -> ServedItem:
    return ServedItem(
        request_id=REQUEST, user_id=3, served_at=SERVED_AT.isoformat(), pin_id=pin,
        position=position, cluster_id=3001 if pin != 13 else None, query_pin_id=40,
        run_id="20260301-000000-abcdef", model_version="v+w", probabilities=(0.1, 0.0, 0.1, 0.0),
        utility=0.2,
    )  # fmt: skip


def event(pin: int, kind: str, after: timedelta, dwell: float | None = None) -> FeedbackRecord:
    moment = (SERVED_AT + after).isoformat()
    return FeedbackRecord(f"e{pin}{kind}{after}", REQUEST, pin, kind, moment, None, dwell)


def test_served_traffic_becomes_valid_events_and_reconciles(tmp_path: Path) -> None:
    events_dir = write_event_set(random_events(), tmp_path / "events")
    before = read_event_set(events_dir)
    minute = timedelta(minutes=1)
    served = [item(10, 0), item(11, 1), item(12, 2), item(13, 3), item(14, 4)]
    threshold = before.meta.long_click_threshold_s
    feedback = [
        event(10, "impression", minute), event(10, "click", minute, dwell=1.0),
        event(10, "click", 2 * minute, dwell=threshold + 5),  # a duplicate, whose dwell counts
        event(11, "impression", minute), event(11, "hide", 2 * minute),
        event(12, "click", minute),  # shown (clicked) without an impression event, no dwell
        event(12, "save", 2 * WINDOW),  # late: shown, no save credit
        event(13, "checkout", 3 * minute),
        event(99, "click", minute),  # names no served item
    ]  # fmt: skip
    report = ingest_served(events_dir, served, feedback, window=WINDOW)

    assert report.reconciles
    assert (report.served_items, report.ingested_impressions, report.not_shown) == (5, 3, 2)
    assert report.ingested_conversions == 1 and report.clicks_without_dwell == 1
    assert report.rejected_events == {
        "no served item": 1,
        "duplicate of an earlier event of the same item and kind": 1,
        f"later than the {WINDOW} window (the item still counts as shown)": 1,
    }
    after = read_event_set(events_dir)
    assert validate(after).ok
    assert after.impressions.num_rows == before.impressions.num_rows + 3
    rows = {
        r["pin_id"]: r
        for r in after.impressions.filter(
            pc.equal(after.impressions["request_id"], REQUEST)
        ).to_pylist()
    }
    assert rows[10]["click"] and rows[10]["long_click"] and rows[10]["click_dwell_s"] > threshold
    assert rows[11]["hide"] and not rows[11]["click"] and rows[11]["position"] == 1
    assert rows[12]["click"] and rows[12]["click_dwell_s"] == 0 and not rows[12]["save"]
    assert after.conversions.num_rows == before.conversions.num_rows + 1
    assert after.meta.end > SERVED_AT

    again = ingest_served(events_dir, served, feedback, window=WINDOW)
    assert again == report
    assert read_event_set(events_dir).impressions.num_rows == after.impressions.num_rows

    # feedback acknowledged after that run (still inside the window) lands on the next one
    late = [
        event(14, "impression", 30 * minute), event(14, "save", 40 * minute),
        event(10, "save", 30 * minute),  # on a row the first run wrote
    ]  # fmt: skip
    rerun = ingest_served(events_dir, served, feedback + late, window=WINDOW)
    assert rerun.reconciles and rerun.ingested_impressions == 4 and rerun.not_shown == 1
    rows = read_event_set(events_dir).impressions.filter(
        pc.equal(read_event_set(events_dir).impressions["request_id"], REQUEST)
    )
    assert rows.num_rows == 4
    saved = {r["pin_id"]: r["save"] for r in rows.to_pylist()}
    assert saved[14] and saved[10] and not saved[11], saved

    with pytest.raises(ConfigError, match="--replace"):  # logs that lost the traffic
        ingest_served(events_dir, [], [], window=WINDOW)
    ingest_served(events_dir, [], [], window=WINDOW, replace=True)
    assert read_event_set(events_dir).impressions.num_rows == before.impressions.num_rows


def test_ingest_reads_the_redis_logs_when_given_a_redis_url(
    tmp_path: Path, redis_endpoint: RedisEndpoint
) -> None:
    """The CLI step with a Redis URL reads the project's Redis streams, not the (absent) local
    logs: what the serving app wrote with REDIS_URL set is what gets ingested."""
    home = make_home(tmp_path / "home")
    write_event_set(random_events(), home.events)
    before = read_event_set(home.events).impressions.num_rows
    project = open_store(home, redis_url=redis_endpoint.url).project
    RedisServedLog(redis_endpoint.url, project, ttl_s=60).append([item(10, 0), item(11, 1)])
    RedisFeedbackLog(redis_endpoint.url, project).append(
        [event(10, "impression", timedelta(minutes=1)), event(11, "hide", timedelta(minutes=2))]
    )
    assert not (home.data / "serving").exists()

    report = steps.ingest_served(home, redis_url=redis_endpoint.url, window_s=3600)

    assert report.reconciles and (report.served_items, report.ingested_impressions) == (2, 2)
    after = read_event_set(home.events).impressions
    assert after.num_rows == before + 2
    served = after.filter(pc.equal(after["request_id"], REQUEST)).to_pylist()
    assert {(r["pin_id"], r["hide"]) for r in served} == {(10, False), (11, True)}


def test_an_event_set_without_the_hide_column_reads_it_as_null(tmp_path: Path) -> None:
    events_dir = write_event_set(random_events(), tmp_path / "events")
    parts = sorted((events_dir / "impressions").glob("date=*/*.parquet"))
    assert parts
    for part in parts:  # as an event set written before the column existed
        pq.write_table(pq.read_table(part).drop_columns(["hide"]), part)
    events = read_event_set(events_dir)
    assert events.impressions.num_rows == 6000
    assert events.impressions["hide"].null_count == 6000
    assert validate(events).ok
