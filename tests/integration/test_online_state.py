"""Materialisation that knows what each online store holds, `pinfeed features status`, and the
serving deploy gate, on real Feast, real SQLite and a real Redis (issue 14).

The home is the hand-made feature tables of `tests.support.tables` (user 1, pins 7 and 3,
cluster 100; newest rows at T0 + 1 day). SQLite and Redis share one registry, which is what
made a move to Redis load nothing before.
"""

from __future__ import annotations

import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from typer.testing import CliRunner

from feature_repo import store as feature_store
from feature_repo.freshness import check_views, join_key, offline_source, read_online_stamps
from feature_repo.load_ledger import TICK
from feature_repo.tables import TABLES
from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome
from pinfeed_cli import app as cli
from serving.stages.online import SERVING_SERVICE, OnlineStoreUnavailable, connect, read_rows
from serving.stages.store_health import GATE_TIMEOUT_S, check_store, require_loaded
from tests.support.homes import make_home, shared_serving_home
from tests.support.redis import RedisEndpoint, free_port
from tests.support.tables import T0, write_tables

pytestmark = pytest.mark.redis
DAY = timedelta(days=1)
END = T0 + 2 * DAY  # the newest offline rows are at T0 + 1 day
ENTITIES = {"user_id": [1, 2], "pin_id": [7, 3, 9], "cluster_id": [100, 101]}


@pytest.fixture
def home(tmp_path: Path) -> ProjectHome:
    home = make_home(tmp_path)
    write_tables(home, T0)
    return home


@pytest.fixture
def sqlite(home: ProjectHome) -> Iterator[FeatureStore]:
    store = feature_store.open_store(home)
    feature_store.apply_definitions(store)
    yield store
    store.teardown()


@pytest.fixture
def redis(home: ProjectHome, sqlite: FeatureStore, redis_endpoint: RedisEndpoint) -> FeatureStore:
    """The same home on the session's Redis (same registry as `sqlite`, applied there)."""
    return feature_store.open_store(home, redis_url=redis_endpoint.url)


def every_value(store: FeatureStore) -> dict[str, list[Any]]:
    """Every feature of every online view for every entity id the tables use (and some they
    do not), read through Feast: the store's whole content as an online read sees it."""
    values: dict[str, list[Any]] = {}
    for view in store.list_feature_views():
        key = join_key(view)
        refs = [f"{view.name}:{field.name}" for field in view.features]
        rows = [{key: entity} for entity in ENTITIES[key]]
        values |= feature_store.online_feature_values(store, refs, rows, full_feature_names=True)
    return values


def feature_store_sqlite(store: FeatureStore) -> Any:
    """A connection to the SQLite online store's file."""
    return closing(sqlite3.connect(SqliteOnlineStore._get_db_path(store.config)))


def redis_dump(endpoint: RedisEndpoint, project: str) -> dict[bytes, dict[bytes, bytes]]:
    client = endpoint.client()
    keys = [key for key in client.scan_iter(count=1000) if project.encode() in key]
    return {key: client.hgetall(key) for key in keys}


def windows_by_view(windows: list[feature_store.LoadWindow]) -> dict[str, tuple[Any, Any, str]]:
    return {w.view: (w.start, w.end, w.why) for w in windows}


def append_day(home: ProjectHome, store: FeatureStore) -> None:
    """A new day of snapshots (T0 + 2 days) for user 1 and pin 7, appended to their tables."""
    for name, changes in (
        ("user_features", {"user_impressions_7d": 12}),
        ("pin_features", {"pin_click_rate_30d": 0.5}),
    ):
        path, _ = offline_source(store.get_feature_view(name))
        table = pq.read_table(path)
        newest = table.slice(table.num_rows - 1).to_pylist()[0]
        row = {**newest, **changes, "event_timestamp": T0 + 2 * DAY}
        pq.write_table(pa.concat_tables([table, pa.Table.from_pylist([row], TABLES[name])]), path)


def test_a_new_redis_gets_everything_sqlite_has(
    sqlite: FeatureStore, redis: FeatureStore, redis_endpoint: RedisEndpoint
) -> None:
    loaded = feature_store.materialize(sqlite, end=END)
    assert {w.why for w in loaded} == {"first load"}
    moved = feature_store.materialize(redis, end=END)
    assert {w.why for w in moved} == {"first load"}, "the shared registry must not skip Redis"
    assert every_value(redis) == every_value(sqlite)
    for view in sqlite.list_feature_views():
        table = f"{sqlite.config.project}_{view.name}"
        with feature_store_sqlite(sqlite) as conn:
            held = conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{table}"').fetchone()[0]
        keys = ENTITIES[join_key(view)]
        on_redis = sum(stamp is not None for stamp in read_online_stamps(redis, view, keys))
        assert held > 0 and on_redis == held, view.name
    assert redis_dump(redis_endpoint, redis.config.project)


def test_a_second_load_loads_nothing_and_changes_nothing(
    redis: FeatureStore, redis_endpoint: RedisEndpoint
) -> None:
    feature_store.materialize(redis, end=END)
    before = redis_dump(redis_endpoint, redis.config.project)
    again = feature_store.materialize(redis, end=END)
    assert {(w.start, w.why) for w in again} == {(None, "up to date")}
    assert redis_dump(redis_endpoint, redis.config.project) == before


def test_an_appended_day_loads_exactly_that_day(home: ProjectHome, redis: FeatureStore) -> None:
    feature_store.materialize(redis, end=END)
    append_day(home, redis)
    stale = {v.view: v.verdict for v in check_views(redis, END + DAY)}
    assert stale["user_features"] == stale["pin_features"] == "stale"
    windows = windows_by_view(feature_store.materialize(redis, end=END + DAY))
    # from just after the newest row loaded before to the end: the new day and nothing else
    assert windows["user_features"] == (T0 + DAY + TICK, END + DAY, "new rows")
    assert windows["pin_features"] == (T0 + DAY + TICK, END + DAY, "new rows")
    untouched = {view for view, (start, _, _) in windows.items() if start is None}
    assert untouched == set(windows) - {"user_features", "pin_features"}
    online = feature_store.online_features(
        redis, SERVING_SERVICE, [{"user_id": 1, "pin_id": 7, "query_pin_id": 3, "cluster_id": 100}]
    )
    assert online["user_features__user_impressions_7d"] == [12]
    assert online["pin_features__pin_click_rate_30d"] == [0.5]
    assert {v.verdict for v in check_views(redis, END + DAY)} == {"fresh"}


def test_a_store_that_lost_its_values_is_reloaded(
    redis: FeatureStore, redis_endpoint: RedisEndpoint
) -> None:
    """Values gone, ledger kept (a Feast teardown, eviction): the load reads a sample back and
    reloads; values and ledger gone (FLUSHDB): a first load; --full reloads whatever holds."""
    feature_store.materialize(redis, end=END)
    client = redis_endpoint.client()
    ledger = f"pinfeed_loads:{redis.config.project}".encode()
    values = [key for key in redis_dump(redis_endpoint, redis.config.project) if key != ledger]
    client.delete(*values)
    assert {v.verdict for v in check_views(redis, END)} == {"empty"}
    assert {w.why for w in feature_store.materialize(redis, end=END)} == {"values lost"}
    assert {v.verdict for v in check_views(redis, END)} == {"fresh"}
    client.delete(*redis_dump(redis_endpoint, redis.config.project))
    assert {w.why for w in feature_store.materialize(redis, end=END)} == {"first load"}
    assert {w.why for w in feature_store.materialize(redis, end=END, full=True)} == {"full"}
    assert {v.verdict for v in check_views(redis, END)} == {"fresh"}


def test_rows_added_in_the_past_reload_the_view(home: ProjectHome, redis: FeatureStore) -> None:
    """A rebuild that adds a user to an old snapshot day: nothing newer than the newest loaded
    row, but the table's older part grew, so status says stale and the load takes it whole."""
    feature_store.materialize(redis, end=END)
    path, _ = offline_source(redis.get_feature_view("user_features"))
    table = pq.read_table(path)
    first = {**table.slice(0, 1).to_pylist()[0], "user_id": 2, "user_impressions_7d": 5}
    pq.write_table(
        pa.concat_tables([table, pa.Table.from_pylist([first], TABLES["user_features"])]), path
    )
    views = {v.view: v for v in check_views(redis, END)}
    assert views["user_features"].verdict == "stale", views["user_features"]
    assert "rewritten" in views["user_features"].reason
    windows = windows_by_view(feature_store.materialize(redis, end=END))
    assert windows["user_features"][2] == "rewritten"
    online = feature_store.online_feature_values(
        redis, ["user_features:user_impressions_7d"], [{"user_id": 2}]
    )
    assert online["user_impressions_7d"] == [5]


def test_a_since_window_past_unloaded_rows_keeps_the_mark(redis: FeatureStore) -> None:
    """Loaded up to T0 + 12 h, the day-1 rows are not loaded yet: a --since window starting
    after them leaves a gap, so the next incremental load still starts where the first ended;
    one starting at them closes it."""
    feature_store.materialize(redis, end=T0 + DAY / 2, views=["user_features"])
    gap = T0 + DAY + timedelta(hours=1)
    feature_store.materialize(redis, end=END, start=gap, views=["user_features"])
    [after_gap] = feature_store.materialize(redis, end=END, views=["user_features"])
    assert (after_gap.start, after_gap.why) == (T0 + DAY / 2 + TICK, "new rows")
    feature_store.materialize(redis, end=T0 + DAY / 2, views=["pin_features"])
    feature_store.materialize(redis, end=END, start=T0 + DAY, views=["pin_features"])
    [closed] = feature_store.materialize(redis, end=END, views=["pin_features"])
    assert (closed.start, closed.why) == (None, "up to date")


def test_a_load_that_ended_before_the_newest_rows_stays_up_to_date(
    redis: FeatureStore, redis_endpoint: RedisEndpoint
) -> None:
    """Loaded up to T0 + 12 h (the day-1 rows lie after it): the same load again is up to
    date, not a "values lost" reload of keys that were never meant to be loaded; a damaged
    ledger entry is ignored and its view loaded in full."""
    feature_store.materialize(redis, end=T0 + DAY / 2)
    again = feature_store.materialize(redis, end=T0 + DAY / 2)
    assert {(w.start, w.why) for w in again} == {(None, "up to date")}, again
    redis_endpoint.client().hset(f"pinfeed_loads:{redis.config.project}", "user_features", "{")
    windows = windows_by_view(feature_store.materialize(redis, end=T0 + DAY / 2))
    assert windows["user_features"][2] == "first load"
    assert windows["pin_features"][2] == "up to date"


def run_cli(home: ProjectHome, *args: str, redis_url: str | None = None) -> tuple[int, str]:
    env = {"COLUMNS": "200", **({"REDIS_URL": redis_url} if redis_url else {})}
    result = CliRunner().invoke(cli, [*args, "--home", str(home.root)], env=env)
    return result.exit_code, result.output


def test_status_says_empty_stale_fresh_and_gates_on_them(
    home: ProjectHome, redis: FeatureStore, redis_endpoint: RedisEndpoint
) -> None:
    as_of = ["--as-of", (END + DAY).isoformat()]
    code, out = run_cli(home, "features", "status", *as_of, redis_url=redis_endpoint.url)
    assert code == 1 and "empty" in out and "pinfeed features materialize" in out, out
    assert "not ready to serve" in out
    feature_store.materialize(redis, end=END)
    code, out = run_cli(home, "features", "status", *as_of, redis_url=redis_endpoint.url)
    assert code == 0 and "fresh" in out and "stale" not in out, out
    append_day(home, redis)
    code, out = run_cli(home, "features", "status", *as_of, redis_url=redis_endpoint.url)
    assert code == 1 and "user_features: stale" in out, out
    assert "pin_features: stale" in out
    code, out = run_cli(
        home, "features", "materialize", "--end", (END + DAY).isoformat(),
        redis_url=redis_endpoint.url,
    )  # fmt: skip
    assert code == 0, out
    code, out = run_cli(home, "features", "status", *as_of, redis_url=redis_endpoint.url)
    assert code == 0, out
    ttl_later = ["--as-of", (END + 10 * DAY).isoformat()]
    code, out = run_cli(home, "features", "status", *ttl_later, redis_url=redis_endpoint.url)
    assert code == 1 and "older than the ttl" in out, out


def test_serving_refuses_an_empty_store_unless_told(
    home: ProjectHome, redis: FeatureStore, redis_endpoint: RedisEndpoint
) -> None:
    """The SQLite store of the same home is loaded; the Redis one is not."""
    feature_store.materialize(feature_store.open_store(home), end=END)
    with pytest.raises(ConfigError, match="pinfeed features materialize"):
        require_loaded(redis, allow_empty=False)
    started_anyway = require_loaded(redis, allow_empty=True)
    assert started_anyway.problem and "user_features" in started_anyway.problem
    assert require_loaded(feature_store.open_store(home), allow_empty=False).problem is None
    code, out = run_cli(home, "serve", "--port", "8799", redis_url=redis_endpoint.url)
    assert code == 2 and "pinfeed features materialize" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_a_store_that_does_not_answer_is_one_clear_line(home: ProjectHome, scheme: str) -> None:
    """status and materialize against a Redis (or a cluster) nobody listens on: exit 2 and a
    message, which a deploy script tells apart from "stale" (exit 1)."""
    nobody = f"{scheme}://127.0.0.1:{free_port()}" + ("/0" if scheme == "redis" else "")
    for args in (("features", "status", "--as-of", END.isoformat()),
                 ("features", "materialize", "--end", END.isoformat())):  # fmt: skip
        code, out = run_cli(home, "features", "apply")
        assert code == 0, out
        code, out = run_cli(home, *args, redis_url=nobody)
        assert code == 2 and "failed" in out and "Traceback" not in out, out


def test_serving_starts_on_a_cluster_that_is_down_and_its_reads_fail_fast(
    home: ProjectHome, sqlite: FeatureStore
) -> None:
    """A cluster client connects as it is made: with no node answering, `connect` (a replica's
    start) still returns, and each read fails within about one timeout as
    `OnlineStoreUnavailable`, which the Features stage answers degraded, with no retries."""
    store = connect(home, f"redis+cluster://127.0.0.1:{free_port()}", timeout_s=0.25)
    for _ in range(2):  # the first read and a later one, with the client still unbuilt
        began = time.monotonic()
        with pytest.raises(OnlineStoreUnavailable):
            read_rows(store, ["user_features:user_impressions_7d"], "user_id", [1])
        assert time.monotonic() - began < 2.0


def test_the_deploy_gate_waits_out_a_slow_store_and_refuses_a_hung_one(
    home: ProjectHome, sqlite: FeatureStore, own_redis: Any
) -> None:
    """The gate's own read timeout (`GATE_TIMEOUT_S`, 5 s) outlasts a 3 s stall that serving's
    0.25 s reads give up on, so one slow answer does not decide a deploy; a store that never
    answers is refused in bounded time with a message, not a hang."""
    url = own_redis.endpoint.url
    feature_store.materialize(feature_store.open_store(home, redis_url=url), end=END)
    gate = connect(home, url, GATE_TIMEOUT_S)
    assert require_loaded(gate, allow_empty=False).problem is None
    serving = connect(home, url)

    own_redis.pause()
    resume = threading.Timer(3.0, own_redis.resume)
    resume.start()
    try:
        assert check_store(serving).error, "serving's 0.25 s read should give up on the stall"
        assert require_loaded(gate, allow_empty=False).problem is None
    finally:
        resume.join()

    own_redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match="online store check failed"):
            require_loaded(gate, allow_empty=False)
        assert GATE_TIMEOUT_S <= time.monotonic() - started < 60
    finally:
        own_redis.resume()


def readme_production_commands() -> list[str]:
    """The bash block under the README's production heading."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = text[text.index("## Production: move the online store to Redis") :]
    block = re.search(r"```bash\n(.*?)```", after, re.DOTALL)
    assert block, "README.md: no bash block in the production section"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_move_to_redis(tmp_path_factory: pytest.TempPathFactory, own_redis: Any) -> None:
    """The README's production block on a home `pinfeed run` filled (SQLite loaded, the
    registry saying every view is loaded) and a Redis nobody loaded: materialise then status
    passes. `pinfeed serve` on a moved Redis is test_serving_faults' app."""
    home = shared_serving_home(tmp_path_factory.getbasetemp())
    code, out = run_cli(home, "features", "status")
    assert code == 0, f"the SQLite store after the run is fresh\n{out}"
    commands = readme_production_commands()
    assert commands[0].startswith("export REDIS_URL=redis://") and commands[-1] == "pinfeed serve"
    url = own_redis.endpoint.url
    for command in commands[1:-1]:
        words = shlex.split(command)
        assert words[0] == "pinfeed", command
        code, out = run_cli(home, *words[1:], redis_url=url)
        assert code == 0, f"{command}\n{out}"
    assert own_redis.endpoint.client().dbsize() > 0
    code, out = run_cli(home, "features", "materialize", redis_url=url)
    assert code == 0 and "new rows" not in out and "first load" not in out, out
