"""Feast feature logging of serving_v1 and the row-level skew report, on real Feast (SQLite
online store, DuckDB offline store): the hand-made tables of tests/support/tables.py (values
checked by hand) and a tiny world built by `pinfeed run`'s data steps (hundreds of rows).

Each home is built once per module; each test logs its rows at its own time (the hand-made
home: one hour apart, all within a day of the day-2 snapshot, so online and point-in-time
offline values agree) and reads back only its own window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore
from typer.testing import CliRunner

from evaluation.skew import skew_report
from feature_repo import store as feature_store
from feature_repo.feature_logging import (
    NOT_FOUND,
    NOT_LOGGED,
    PRESENT,
    FeatureLogBuffer,
    LogSpec,
    ServedRows,
    alike,
    log_spec,
    logged_table,
    read_logged,
    sampled,
)
from pinfeed.errors import ConfigError, SchemaError
from pinfeed.home import ProjectHome
from pinfeed_cli import app
from pinfeed_cli.steps import default_materialize_end
from serving.stages.feature_log import FeatureLogger
from tests.support.homes import RETRIEVAL_WORLD, data_home, make_home
from tests.support.tables import T0, write_tables

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
CLICK_RATE = "pin_features__pin_click_rate_30d"
REWARD = "cluster_reward__reward"
KEYS = ("user_id", "pin_id", "query_pin_id", "cluster_id")
REQUEST_1 = [(1, 7, 3, 100), (1, 3, 7, 101), (1, 9, 3, 100)]
"""User 1's three candidates (pin 9 is unknown; pin 3 has content but no pin features)."""
REQUEST_2 = [(2, 7, -1, -1)]
"""An unknown user, no query pin, no cluster."""


@dataclass(frozen=True)
class World:
    home: ProjectHome
    store: FeatureStore
    spec: LogSpec


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = make_home(tmp_path_factory.mktemp("logging"))
    write_tables(home, T0)
    store = feature_store.open_store(home)
    feature_store.apply_definitions(store)
    feature_store.materialize(store, end=T0 + 2 * DAY)
    yield World(home, store, log_spec(store))
    store.teardown()


def served(
    world: World, requests: Mapping[int, Sequence[tuple[int, ...]]], logged_at: datetime
) -> ServedRows:
    """What serving reads online for these requests' rows, as logged rows."""
    entity_rows = [dict(zip(KEYS, row, strict=True)) for rows in requests.values() for row in rows]
    online = feature_store.online_features(world.store, "serving_v1", entity_rows)
    return ServedRows(
        request_ids=[rid for rid, rows in requests.items() for _ in rows],
        logged_at=logged_at,
        keys={key: [row[key] for row in entity_rows] for key in KEYS},
        features={name: online[name] for name in world.spec.features},
    )


def log(world: World, rows: ServedRows) -> None:
    buffer = FeatureLogBuffer(world.store, world.spec)
    buffer.add(rows)
    assert buffer.flush() == len(rows.request_ids)


def window(start: datetime) -> dict[str, datetime]:
    return {"since": start, "until": start + HOUR}


def test_log_schema_comes_from_feast_and_lives_in_the_home(world: World) -> None:
    spec = world.spec
    assert spec.destination == world.home.data / "logs" / "serving_v1"
    assert spec.keys == KEYS
    assert spec.sample_rate == 1.0
    assert len(spec.features) == len(feature_store.service_feature_names(world.store, "serving_v1"))
    assert spec.schema.field("pin_content__content_embedding").type == pa.list_(pa.float32())
    assert spec.schema.names[-3:] == ["__log_timestamp", "__log_date", "__request_id"]


def test_logged_rows_round_trip_through_feast(world: World) -> None:
    """Two flushes write two parquet files through write_logged_features; the window's rows
    read back equal to what was built, with Feast's statuses."""
    at = T0 + DAY + 10 * HOUR
    first, second = served(world, {1: REQUEST_1}, at), served(world, {2: REQUEST_2}, at + HOUR / 2)
    first = replace(first, event_timestamps={CLICK_RATE: [T0 + DAY, None, None]})
    before = set(world.spec.destination.glob("*.parquet"))
    log(world, first)
    log(world, second)
    assert len(set(world.spec.destination.glob("*.parquet")) - before) == 2

    back = read_logged(world.spec, **window(at)).sort_by([("__request_id", "ascending")])
    built = pa.concat_tables([logged_table(world.spec, first), logged_table(world.spec, second)])
    assert back.equals(built)
    assert back.column("__request_id").to_pylist() == ["1", "1", "1", "2"]
    assert back.column("query_pin_id").to_pylist() == [3, 7, 3, None]
    assert back.column(CLICK_RATE).to_pylist() == [0.375, None, None, 0.375]
    assert back.column(f"{CLICK_RATE}__status").to_pylist() == [PRESENT, NOT_FOUND, NOT_FOUND,
                                                                PRESENT]  # fmt: skip
    assert back.column("__log_date").to_pylist() == [(T0 + DAY).date()] * 4
    assert back.column(f"{CLICK_RATE}__timestamp").to_pylist() == [T0 + DAY, None, None, None]
    assert read_logged(world.spec, since=at + HOUR, until=at + 2 * HOUR).num_rows == 0


def test_for_request_takes_serving_arrays(world: World) -> None:
    """The Recommender's shapes (one user's values, [K] and [K, D] candidate arrays, NaN for
    missing) give the same log rows as the full-service online read."""
    at = T0 + DAY + 11 * HOUR
    reference = served(world, {1: REQUEST_1}, at)
    per_request = {
        n: reference.features[n][0] for n in world.spec.features if n.startswith("user_")
    }
    per_candidate: dict[str, Any] = {
        n: np.array([np.nan if v is None else v for v in reference.features[n]], dtype=np.float32)
        for n in world.spec.features
        if n.startswith("pin_features__")
    }
    other = set(world.spec.features) - set(per_request) - set(per_candidate)
    per_candidate |= {n: reference.features[n] for n in other}
    rows = ServedRows.for_request(
        1, at, user_id=1, pin_ids=np.array([7, 3, 9]), query_pin_ids=np.array([3, 7, 3]),
        cluster_ids=np.array([100, 101, 100]), per_request=per_request,
        per_candidate=per_candidate,
    )  # fmt: skip
    assert logged_table(world.spec, rows).equals(logged_table(world.spec, reference))
    embeddings = np.array([[1.0, 2.0], [4.0, 5.0], [0.0, 0.0]], dtype=np.float32)
    dense = ServedRows.for_request(
        1, at, user_id=1, pin_ids=np.array([7, 3, 9]), query_pin_ids=np.array([3, 7, 3]),
        cluster_ids=np.array([100, 101, 100]), per_request={},
        per_candidate={"pin_content__content_embedding": embeddings},
    )  # fmt: skip
    table = logged_table(world.spec, dense)
    assert table.column("pin_content__content_embedding").to_pylist()[1] == [4.0, 5.0]
    assert set(table.column("user_features__user_impressions_7d__status").to_pylist()) == {
        NOT_LOGGED
    }


def test_requests_converted_together_log_the_rows_of_each(world: World) -> None:
    """The feature logger converts a flush's requests in one batch: the table equals the
    requests' own tables end to end, across requests of different sizes and times, a user
    value present in one request and missing in another, and embeddings given as [K, D] arrays
    in one request and as lists in another; requests logging other fields form their own group."""
    at = T0 + DAY + 12 * HOUR
    content = "pin_content__content_embedding"
    impressions = "user_features__user_impressions_7d"

    def request(request_id: int, k: int, impressions_7d: float | None, dense: bool) -> ServedRows:
        embeddings = np.arange(k * 2, dtype=np.float32).reshape(k, 2) + request_id
        return ServedRows.for_request(
            request_id, at + request_id * timedelta(seconds=1), user_id=request_id,
            pin_ids=np.arange(k) + 1, query_pin_ids=np.full(k, -1), cluster_ids=np.arange(k),
            per_request={impressions: impressions_7d},
            per_candidate={
                CLICK_RATE: np.where(np.arange(k) % 2 == 0, 0.5, np.nan),
                content: embeddings if dense else [e.tolist() for e in embeddings],
            },
        )  # fmt: skip

    parts = [request(1, 3, 12.0, True), request(2, 1, None, False), request(3, 4, 7.0, True)]
    together = logged_table(world.spec, ServedRows.concat(parts))
    one_by_one = pa.concat_tables([logged_table(world.spec, part) for part in parts])
    assert together.equals(one_by_one)
    assert together.num_rows == 8
    assert together.column(impressions).to_pylist() == [12.0] * 3 + [None] + [7.0] * 4
    assert together.column("__request_id").to_pylist() == ["1"] * 3 + ["2"] + ["3"] * 4
    dense = [parts[0], parts[2]]  # every part [K, D]: one numpy concatenation
    assert isinstance(ServedRows.concat(dense).features[content], np.ndarray)
    assert logged_table(world.spec, ServedRows.concat(dense)).equals(
        pa.concat_tables([logged_table(world.spec, part) for part in dense])
    )
    other = replace(parts[0], features={CLICK_RATE: parts[0].features[CLICK_RATE]})
    groups = alike([parts[0], other, parts[1]])
    assert [len(group) for group in groups] == [2, 1]
    with pytest.raises(SchemaError, match="same fields"):
        ServedRows.concat([parts[0], other])
    short = replace(parts[0], features={**parts[0].features, CLICK_RATE: np.array([0.5, 0.5])})
    with pytest.raises(SchemaError, match=CLICK_RATE):  # 2 values for 3 rows, caught per part
        ServedRows.concat([short, parts[2]])


def test_a_bad_request_in_a_batch_loses_only_its_own_rows(world: World) -> None:
    """The feature logger converts a flush in batches; when a batch fails on one request's
    value, the others of the batch are still logged and the bad one is counted as dropped."""
    at = T0 + DAY + 13 * HOUR

    def request(request_id: int, click_rate: Any) -> ServedRows:
        return ServedRows.for_request(
            request_id, at, user_id=request_id, pin_ids=np.array([1, 2]),
            query_pin_ids=np.array([-1, -1]), cluster_ids=np.array([-1, -1]),
            per_request={}, per_candidate={CLICK_RATE: click_rate},
        )  # fmt: skip

    logger = FeatureLogger(world.store, capacity=16, flush_s=3600.0)
    good = [request(1, np.array([0.1, 0.2])), request(3, np.array([0.3, 0.4]))]
    logger._convert([good[0], request(2, ["not", "a rate"]), good[1]])
    assert logger.dropped == 1
    assert logger.buffer.pending_rows == 4


def test_unaltered_logs_match_the_offline_recomputation(world: World) -> None:
    at = T0 + DAY + 12 * HOUR
    log(world, served(world, {1: REQUEST_1, 2: REQUEST_2}, at))
    report = skew_report(world.store, **window(at))
    assert report["match_rate"] == 1.0
    assert report["skewed_features"] == []
    assert (report["rows"], report["requests"]) == (4, 2)
    assert report["compared_values"] == 4 * len(world.spec.features)
    impressions = report["features"]["user_features__user_impressions_7d"]
    assert (impressions["matched"], impressions["both_missing"]) == (4, 1)  # user 2 unknown
    click_rate = report["features"][CLICK_RATE]
    assert (click_rate["matched"], click_rate["both_missing"]) == (4, 2)  # pins 3 and 9
    assert report["features"]["query_pin_content__content_embedding"]["both_missing"] == 1


def test_a_changed_logged_value_is_flagged_by_name(world: World) -> None:
    at = T0 + DAY + 14 * HOUR
    rows = served(world, {7: REQUEST_1}, at)
    changed = [0.5, *rows.features[CLICK_RATE][1:]]
    log(world, ServedRows(rows.request_ids, at, rows.keys, {**rows.features, CLICK_RATE: changed}))
    report = skew_report(world.store, **window(at))
    assert report["skewed_features"] == [CLICK_RATE]
    flagged = report["features"][CLICK_RATE]
    assert (flagged["matched"], flagged["mismatched"]) == (2, 1)
    assert flagged["examples"] == [{
        "kind": "mismatched", "request_id": "7", "log_timestamp": at.isoformat(), "user_id": 1,
        "pin_id": 7, "query_pin_id": 3, "cluster_id": 100, "online": 0.5, "offline": 0.375,
    }]  # fmt: skip
    assert report["match_rate"] == pytest.approx(1 - 1 / (3 * len(world.spec.features)))


def test_the_cli_writes_json_png_and_table(world: World, tmp_path: Path) -> None:
    """`pinfeed evaluate skew` over one window of unaltered logs."""
    at = T0 + DAY + 15 * HOUR
    log(world, served(world, {3: REQUEST_1}, at))
    out = tmp_path / "skew.json"
    result = CliRunner().invoke(app, [
        "evaluate", "skew", "--home", str(world.home.root), "--out", str(out),
        "--since", at.strftime("%Y-%m-%dT%H:%M:%S"),
        "--until", (at + HOUR).strftime("%Y-%m-%dT%H:%M:%S"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["match_rate"] == 1.0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| pin_features__pin_click_rate_30d | 3 | 3 | 0 | 0 | 0 | 1.0000 |" in (
        out.with_suffix(".md").read_text()
    )


def test_a_realtime_push_is_flagged_on_the_pushed_feature_only(world: World) -> None:
    """A reward pushed online only (the realtime path) differs from the batch table: only
    cluster_reward__reward changed, so only it is flagged, on the rows of cluster 100."""
    at = T0 + DAY + 16 * HOUR

    def push(reward: float) -> None:
        feature_store.push_cluster_rewards(world.store, pd.DataFrame({
            "cluster_id": [100], "event_timestamp": [T0 + DAY], "reward_impressions": [10],
            "reward_engagements": [2], "reward": [reward], "reward_has_data": [True],
        }))  # fmt: skip

    push(0.75)
    try:
        log(world, served(world, {5: REQUEST_1, 6: REQUEST_2}, at))
    finally:
        push(0.2)
    report = skew_report(world.store, **window(at))
    assert report["skewed_features"] == [REWARD]
    flagged = report["features"][REWARD]
    assert (flagged["mismatched"], flagged["matched"]) == (2, 2)
    shown = [(e["cluster_id"], e["online"], e["offline"]) for e in flagged["examples"]]
    assert shown == [(100, 0.75, pytest.approx(0.2))] * 2


def test_bad_input_names_the_field(world: World) -> None:
    at = T0 + DAY
    good = served(world, {1: REQUEST_1[:1]}, at)

    def with_features(**changes: Any) -> ServedRows:
        return ServedRows(good.request_ids, at, good.keys, {**good.features, **changes})

    with pytest.raises(
        SchemaError, match="'pin_features__pin_clicks' is not a feature of serving_v1"
    ):
        logged_table(world.spec, with_features(pin_features__pin_clicks=[1.0]))
    with pytest.raises(SchemaError, match="'user_dwell__user_dwell_mean_s' does not fit"):
        logged_table(world.spec, with_features(user_dwell__user_dwell_mean_s=["long"]))
    with pytest.raises(SchemaError, match="'pin_content__topic' has 2 value"):
        logged_table(world.spec, with_features(pin_content__topic=[1, 2]))
    with pytest.raises(SchemaError, match="key 'query_pin_id' is missing"):
        keys = {k: v for k, v in good.keys.items() if k != "query_pin_id"}
        logged_table(world.spec, ServedRows(good.request_ids, at, keys, good.features))
    with pytest.raises(SchemaError, match="no time zone"):
        logged_table(world.spec, ServedRows(good.request_ids, [at.replace(tzinfo=None)],
                                            good.keys, good.features))  # fmt: skip
    with pytest.raises(ConfigError, match="'retrieval_v1' has no file logging config"):
        log_spec(world.store, "retrieval_v1")


def test_sampling_is_per_request_and_deterministic() -> None:
    ids = range(20_000)
    chosen = [rid for rid in ids if sampled(rid, 0.1)]
    assert 0.09 < len(chosen) / len(ids) < 0.11
    assert chosen == [rid for rid in ids if sampled(rid, 0.1)]
    assert all(sampled(rid, 1.0) for rid in ids[:100])
    assert not any(sampled(rid, 0.0) for rid in ids[:100])
    random_ids = np.random.default_rng(0).integers(0, 2**62, 20_000)
    assert 0.45 < np.mean([sampled(int(rid), 0.5) for rid in random_ids]) < 0.55


@pytest.fixture(scope="module")
def pipeline_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A tiny world through `pinfeed run`'s data steps (materialised up to its default end)."""
    home = data_home(tmp_path_factory.mktemp("logging-world"), RETRIEVAL_WORLD)
    store = feature_store.open_store(home)
    yield World(home, store, log_spec(store))
    store.teardown()


def random_requests(world: World, count: int, size: int) -> dict[int, list[tuple[int, ...]]]:
    """`count` requests of `size` candidates: known users and pins; clusters with a reward row,
    every fourth none (-1)."""

    def ids(table: str, key: str) -> np.ndarray:
        return np.unique(pq.read_table(world.home.features / f"{table}.parquet").column(key))

    rng = np.random.default_rng(4)
    user_ids, pin_ids = ids("user_features", "user_id"), ids("pin_content", "pin_id")
    clusters = rng.choice(ids("cluster_reward", "cluster_id"), (count, size))
    clusters[:, ::4] = -1
    return {
        request: [
            (int(user), int(rng.choice(pin_ids)), int(rng.choice(pin_ids)), int(cluster))
            for cluster in clusters[request - 100]
        ]
        for request, user in enumerate(rng.choice(user_ids, count), start=100)
    }


def test_a_served_world_matches_its_offline_recomputation(pipeline_world: World) -> None:
    at = default_materialize_end(pipeline_world.home)
    log(pipeline_world, served(pipeline_world, random_requests(pipeline_world, 40, 10), at))
    report = skew_report(pipeline_world.store, since=at, until=at + HOUR)
    assert (report["rows"], report["match_rate"], report["skewed_features"]) == (400, 1.0, [])
    reward = report["features"]["cluster_reward__reward"]
    assert 0 < reward["both_missing"] < reward["matched"]  # rows without a cluster


def test_an_older_snapshot_online_is_flagged_on_its_view(pipeline_world: World) -> None:
    """user_dwell re-materialised from the snapshot before the latest: only its features differ
    from the point-in-time offline values, and only where the two snapshots differ."""
    end = default_materialize_end(pipeline_world.home)
    at = end + timedelta(minutes=1)
    store = pipeline_world.store
    stale = {"start": end - 3 * DAY, "end": end - DAY - 12 * HOUR, "views": ["user_dwell"]}
    feature_store.materialize(store, **stale)
    try:
        log(pipeline_world, served(pipeline_world, random_requests(pipeline_world, 40, 1), at))
    finally:
        feature_store.materialize(store, start=end - 3 * DAY, end=end, views=["user_dwell"])
    report = skew_report(store, since=at, until=at + HOUR)
    dwell = [name for name in pipeline_world.spec.features if name.startswith("user_dwell__")]
    assert report["skewed_features"] == dwell
    assert all(report["features"][name]["mismatched"] > 0 for name in dwell)
    assert 0 < report["match_rate"] < 1
