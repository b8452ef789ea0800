"""The Feast repo on real Feast, real SQLite and real Redis: apply (CLI and in-process),
materialise, push, online reads, and point-in-time joins on hand-made feature tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from feast import FeatureStore, FeatureView
from feast.repo_operations import get_repo_files

from feature_repo import flavours
from feature_repo import store as feature_store
from feature_repo.homes import REPO
from feature_repo.tables import TABLES
from pinfeed.connection import parse_redis_url
from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome
from tests.support.homes import make_home
from tests.support.redis import RedisService
from tests.support.tables import EMBED_7, T0, assert_latest_online_values, write_tables


@pytest.fixture
def home(tmp_path: Path) -> ProjectHome:
    home = make_home(tmp_path)
    write_tables(home, T0)
    return home


REDIS_FLAVOURS = {"redis": "redis_endpoint", "redis_cluster": "redis_cluster"}
"""Online store flavour -> the session fixture serving it (one server, a three-master cluster)."""
FLAVOURS = ["sqlite", *(pytest.param(name, marks=pytest.mark.redis) for name in REDIS_FLAVOURS)]


def flavour_url(request: pytest.FixtureRequest, flavour: str) -> str | None:
    """The Redis URL of `flavour`, None for SQLite."""
    if flavour == "sqlite":
        return None
    service: RedisService = request.getfixturevalue(REDIS_FLAVOURS[flavour])
    return service.url


@pytest.fixture(params=FLAVOURS)
def store(request: pytest.FixtureRequest, home: ProjectHome) -> Iterator[FeatureStore]:
    """The home's store, applied, on SQLite, the session's real Redis or its Redis Cluster."""
    redis_url = flavour_url(request, request.param)
    opened = feature_store.open_store(home, redis_url=redis_url)
    feature_store.apply_definitions(opened)
    yield opened
    opened.teardown()


def feast_cli(
    home: ProjectHome, *args: str, redis_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`feast -c <repo> ...`; with `redis_url`, on the Redis flavour as the README says: `-f
    feature_store.redis.yaml` with Feast's connection string in PINFEED_FEAST_REDIS."""
    feast = Path(sys.executable).parent / "feast"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    flavour: list[str] = []
    if redis_url:
        cluster = parse_redis_url(redis_url).cluster
        yaml = flavours.REDIS_CLUSTER_YAML if cluster else flavours.REDIS_YAML
        flavour = ["-f", str(home.feature_repo / yaml)]
        env["PINFEED_FEAST_REDIS"] = flavours.feast_connection_string(redis_url)
    result = subprocess.run(
        [str(feast), "-c", str(home.feature_repo), *flavour, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def row(user_id: int = 1, pin_id: int = 7, query_pin_id: int = 3) -> dict[str, int]:
    return {"user_id": user_id, "pin_id": pin_id, "query_pin_id": query_pin_id, "cluster_id": 100}


def test_feastignore_leaves_only_the_definitions() -> None:
    assert [path.name for path in get_repo_files(REPO)] == ["definitions.py"]


def test_views_match_the_table_contracts(tmp_path: Path) -> None:
    """Every feature of every view is a column of its table with the same type."""
    arrow_for = {"Int64": pa.int64(), "Float32": pa.float32(), "Int32": pa.int32(),
                 "Bool": pa.bool_(), "Array(Float32)": pa.list_(pa.float32()),
                 "Array(Int64)": pa.list_(pa.int64())}  # fmt: skip
    views = [obj for obj in feature_store.repo_objects(REPO) if isinstance(obj, FeatureView)]
    assert {view.name for view in views} == set(TABLES) - {"cluster_members"}
    for view in views:
        schema = TABLES[view.name]
        for field in view.features:
            assert schema.field(field.name).type == arrow_for[str(field.dtype)], field.name


def test_redis_url_becomes_feast_connection_string() -> None:
    assert flavours.feast_connection_string("redis://127.0.0.1:6390/13") == ("127.0.0.1:6390,db=13")
    assert flavours.feast_connection_string("rediss://:s%3Dcret@cache:6379") == (
        "cache:6379,db=0,password=s=cret,ssl=true"
    )
    with pytest.raises(ConfigError, match="redis_url"):
        flavours.feast_connection_string("http://cache:6379")
    cluster = "redis+cluster://:pw@10.0.0.5:7000,10.0.0.6:7001"
    assert flavours.feast_connection_string(cluster, timeout_s=0.25) == (
        "10.0.0.5:7000,10.0.0.6:7001,password=pw,socket_timeout=0.25,socket_connect_timeout=0.25,"
        "cluster_error_retry_attempts=0"
    )
    with pytest.raises(ConfigError, match="IPv6"):
        flavours.feast_connection_string("redis://[::1]:6379/0")
    with pytest.raises(ConfigError, match="database 0 only"):
        flavours.feast_connection_string("redis+cluster://10.0.0.5:7000/3")
    with pytest.raises(ConfigError, match="several hosts need the redis\\+cluster"):
        flavours.feast_connection_string("redis://10.0.0.5:7000,10.0.0.6:7001")


def test_a_home_without_the_cluster_file_reads_the_redis_file_on_a_cluster(
    home: ProjectHome,
) -> None:
    """A home copied before feature_store.redis_cluster.yaml existed still opens on a
    cluster: the Redis file with `redis_type: redis_cluster` is the same config."""
    (home.feature_repo / flavours.REDIS_CLUSTER_YAML).unlink()
    config = flavours.repo_config(home, redis_url="redis+cluster://10.0.0.5:7000")
    assert config.online_store.redis_type == "redis_cluster"
    assert config.online_store.connection_string == "10.0.0.5:7000"
    single = flavours.repo_config(home, redis_url="redis://10.0.0.5:6379/2")
    assert single.online_store.redis_type == "redis"


def test_the_cluster_config_is_the_redis_config_on_a_cluster() -> None:
    """feature_store.redis_cluster.yaml differs from feature_store.redis.yaml only in
    `redis_type`, so the two Redis flavours can never drift apart."""
    single = yaml.safe_load((REPO / flavours.REDIS_YAML).read_text())
    cluster = yaml.safe_load((REPO / flavours.REDIS_CLUSTER_YAML).read_text())
    assert cluster["online_store"].pop("redis_type") == "redis_cluster"
    assert single["online_store"].pop("redis_type") == "redis"
    assert cluster == single


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cli_apply_then_materialize_incremental(
    flavour: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The ecosystem's way: `feast -c <repo> apply` and `materialize-incremental <ts>`, on the
    default file and on the Redis one (slow: each CLI call imports Feast afresh, 6-20 s on 2
    busy cores)."""
    redis_url = flavour_url(request, flavour)
    home = make_home(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    write_tables(home, now - timedelta(days=1, hours=1))
    feast_cli(home, "apply", redis_url=redis_url)
    loaded = feast_cli(home, "materialize-incremental", now.isoformat(), redis_url=redis_url)
    said = re.sub(r"\x1b\[[0-9;]*m", "", loaded.stdout)  # Feast colours its words
    assert f"into the {flavour.removesuffix('_cluster')} online store" in said, said
    opened = feature_store.open_store(home, redis_url=redis_url)
    services = {service.name for service in opened.list_feature_services()}
    assert {"retrieval_v1", "ranking_v1", "serving_v1"} <= services
    online = feature_store.online_features(opened, "serving_v1", [row()])
    assert online["user_features__user_impressions_7d"] == [11]
    assert online["pin_content__topic"] == [2]
    assert online["cluster_reward__reward_impressions"] == [10]
    # pinfeed's load ledger did not see Feast's load: its next load redoes that window once
    # (same values), and the one after loads nothing
    redone = feature_store.materialize(opened, end=now)
    assert {w.why for w in redone} == {"first load"}, redone
    assert feature_store.online_features(opened, "serving_v1", [row()]) == online
    again = feature_store.materialize(opened, end=now)
    assert {w.why for w in again} == {"up to date"}, again


def test_online_values_equal_latest_offline_values(store: FeatureStore) -> None:
    feature_store.materialize(store, end=T0 + timedelta(days=2))
    assert_latest_online_values(store)


def test_incremental_materialize_resumes_where_it_ended(store: FeatureStore) -> None:
    """Materialising up to day 1 loads the day-1 snapshot; the next incremental run loads only
    what came after it: its window starts just after the first run's end (a full reload would
    start at `end - ttl` and say "first load"), and the day-2 values arrive."""
    first_end = T0 + timedelta(hours=12)
    feature_store.materialize(store, end=first_end)
    first = feature_store.online_features(store, "ranking_v1", [row()])
    assert first["user_features__user_impressions_7d"] == [10]
    assert first["user_dwell__user_clicks_30d"] == [None]
    windows = {w.view: w for w in feature_store.materialize(store, end=T0 + timedelta(days=2))}
    for view in ("user_features", "pin_features"):
        assert windows[view].why == "new rows", windows[view]
        assert windows[view].start == first_end + timedelta(microseconds=1), windows[view]
    second = feature_store.online_features(store, "ranking_v1", [row()])
    assert second["user_features__user_impressions_7d"] == [11]
    assert second["user_dwell__user_clicks_30d"] == [4]


def test_pushed_reward_is_visible_in_the_next_read(store: FeatureStore) -> None:
    feature_store.materialize(store, end=T0 + timedelta(days=2))
    pushed = pd.DataFrame({"cluster_id": [100, 101], "event_timestamp": [T0 + timedelta(days=3)] * 2,
                           "user_id": [1, 1], "reward_impressions": [11, 1],
                           "reward_engagements": [3, 1], "reward": [0.25, 0.5],
                           "reward_has_data": [True, True]})  # fmt: skip
    feature_store.push_cluster_rewards(store, pushed)
    rows = [{**row(), "cluster_id": 100}, {**row(), "cluster_id": 101}]
    online = feature_store.online_features(store, "serving_v1", rows)
    assert online["cluster_reward__reward"] == [0.25, 0.5]
    assert online["cluster_reward__reward_engagements"] == [3, 1]


def test_historical_join_is_point_in_time(home: ProjectHome) -> None:
    """A value stamped after an event never reaches that event's row; values older than the
    view's ttl do not either; static content has no ttl."""
    opened = feature_store.open_store(home)
    feature_store.apply_definitions(opened)
    entity_df = pd.DataFrame({
        "user_id": [1, 1, 1, 1], "pin_id": [7, 7, 7, 3], "query_pin_id": [3, 3, 3, 7],
        "event_timestamp": [T0 - timedelta(hours=1), T0 + timedelta(hours=23),
                            T0 + timedelta(days=1), T0 + timedelta(days=4)],
    })  # fmt: skip
    frame = (
        opened.get_historical_features(
            entity_df=entity_df,
            features=opened.get_feature_service("ranking_v1"),
            full_feature_names=True,
        )
        .to_df()
        .sort_values("event_timestamp")
    )
    impressions = frame["user_features__user_impressions_7d"].tolist()
    assert pd.isna(impressions[0])  # before the first snapshot
    assert impressions[1:3] == [10, 11]  # day-2 value only from its own stamp on
    assert pd.isna(impressions[3])  # three days after the last snapshot: past the 2-day ttl
    assert pd.isna(frame["user_dwell__user_clicks_30d"].iloc[1])
    assert frame["pin_content__topic"].tolist() == [2, 2, 2, 5]
    assert frame["query_pin_content__topic"].tolist() == [5, 5, 5, 2]
    assert frame["query_pin_content__content_embedding"].iloc[3].tolist() == EMBED_7
