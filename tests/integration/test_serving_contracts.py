"""The contracts docs/serving.md states about runs, feedback and the pin cache, in-process
without Ray against a real project home (Feast SQLite online store, ONNX runs on disk):

- a run whose manifests read a feature its services lack (the manifest changed, or the
  service), or whose embedding widths disagree, is refused naming the problem, and a replica
  serving another run keeps serving it;
- feedback the log cannot take is refused (`UnavailableError`, a 503 at the edge) and neither
  recorded nor credited; the same events are credited once the log takes them;
- feedback whose served record is still queued waits for it (`unmatched_wait_s`) and is
  credited; an event stamped before the recorder started is logged and left to the offline job;
- the pin cache reloads, with the new values, when the registry or the store's load ledger
  shows a newer load of the pin views, and only then.

The HTTP side of the first two (409 / 503, the served run unchanged) is in test_serving.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from feature_repo.load_ledger import open_ledger
from feature_repo.store import materialize
from pinfeed.artifacts.runs import load_run
from pinfeed.attribution import Credited
from pinfeed.errors import ConfigError, UnavailableError
from pinfeed.home import ProjectHome
from pinfeed.traffic.records import FeedbackRecord, ServedItem
from pinfeed_cli import steps
from serving.config import ActiveModels, ServingConfig
from serving.stages.active import ActivePipeline, pipeline_builder, run_weights
from serving.stages.feedback import FEEDBACK_LOG, FeedbackRecorder
from serving.stages.online import connect, read_rows
from serving.stages.pipeline import Pipeline, RecommendQuery
from tests.support.homes import (
    RUN_ID,
    copy_home,
    edit_json,
    edited_run,
    ranker_reads,
    shared_serving_home,
    users_with_clusters,
)

PIN_VIEW = "pin_features"
IMPRESSIONS = "pin_features__pin_impressions_30d"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return shared_serving_home(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def own_home(home: ProjectHome, tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    """A private copy: these tests load new pin features and push rewards."""
    return copy_home(home, tmp_path_factory.mktemp("contracts") / "home")


def serving_config(home: ProjectHome, state: Path) -> ServingConfig:
    return ServingConfig(home=home.root, run_id=RUN_ID, candidates=100, state_dir=state)


# --- runs the feature services do not match --------------------------------------------------


def _query_tower_column(feature: str, column: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        def remap(manifest: dict) -> None:
            columns = manifest["query_tower"]["source_columns"]
            assert feature in columns, f"the query tower reads no {feature!r}"
            columns[feature] = column

        edit_json(run / "retrieval" / "manifest.json", remap)

    return edit


def _ranker_width(width: int) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        edit_json(
            run / "ranking" / "ranker.manifest.json",
            lambda manifest: manifest.update(embedding_dim=width),
        )

    return edit


MISMATCHES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    # a feature the ranking service does not have
    "ranker-feature": (
        ranker_reads("pin_click_rate_30d", "pin_features__pin_click_rate_7d"),
        ("'pin_click_rate_30d'", "pin_features__pin_click_rate_7d", "ranking_v1"),
    ),
    # the right feature name under another view: not the same full name
    "ranker-view": (
        ranker_reads("pin_click_rate_30d", "pin_dwell__pin_click_rate_30d"),
        ("'pin_click_rate_30d'", "pin_dwell__pin_click_rate_30d", "ranking_v1"),
    ),
    "query-tower-feature": (
        _query_tower_column("user_clicks_30d", "user_features__user_clicks_30d"),
        ("'user_clicks_30d'", "user_features__user_clicks_30d", "retrieval_v1"),
    ),
    "embedding-width": (_ranker_width(16), ("content_dim 32", "embedding_dim 16")),
}


@pytest.fixture(scope="module")
def active(home: ProjectHome, tmp_path_factory: pytest.TempPathFactory) -> ActivePipeline:
    """A replica's active pipeline, serving `RUN_ID`."""
    config = serving_config(home, tmp_path_factory.mktemp("contracts-state"))
    active = ActivePipeline(pipeline_builder(config, lambda: connect(config.project, None)))
    active.apply(ActiveModels(run_id=RUN_ID))
    return active


@pytest.mark.parametrize("mismatch", list(MISMATCHES))
def test_a_run_the_feature_services_do_not_match_is_refused_naming_the_feature(
    home: ProjectHome, active: ActivePipeline, mismatch: str, tmp_path: Path
) -> None:
    """A replica asked to switch to it keeps serving its run and says why (`/healthz`'s
    reload_error); a replica starting on it refuses to start."""
    edit, named = MISMATCHES[mismatch]
    served = active.apply(ActiveModels(run_id=RUN_ID))  # whatever an earlier case left
    config = serving_config(home, tmp_path)
    with edited_run(home, f"mismatch-{mismatch}", edit) as run_id:
        kept = active.apply(ActiveModels(run_id=run_id))
        starting = ActivePipeline(pipeline_builder(config, lambda: connect(config.project, None)))
        with pytest.raises(ConfigError) as refused:
            starting.apply(ActiveModels(run_id=run_id))
    assert kept is served and active.get() is served and active.models.run_id == RUN_ID
    assert active.version == served.version and starting.pipeline is None
    for text in named:
        assert text in str(refused.value), refused.value
        assert text in (active.error or ""), active.error


SERVED_DWELL = (
    '        pin_dwell_fv[["pin_clicks_30d", "pin_dwell_mean_s", "pin_dwell_median_s"]],\n'
    "        user_clusters_fv,\n"
)
"""serving_v1 without pin_dwell's short and long click shares, which the ranker reads."""


def test_a_serving_service_that_lost_a_feature_the_run_reads_refuses_the_run(
    home: ProjectHome, tmp_path: Path
) -> None:
    """The service side of the contract: serving_v1 re-applied without a feature the ranker
    reads (ranking_v1, which it was trained on, still has it); a replica will not serve the
    run, naming the feature and the service."""
    drifted = copy_home(home, tmp_path / "home")
    definitions = drifted.feature_repo / "definitions.py"
    source = definitions.read_text()
    assert source.count("        pin_dwell_fv,\n        user_clusters_fv,\n") == 1
    definitions.write_text(
        source.replace("        pin_dwell_fv,\n        user_clusters_fv,\n", SERVED_DWELL)
    )
    steps.apply(drifted)
    config = serving_config(drifted, tmp_path / "state")
    starting = ActivePipeline(pipeline_builder(config, lambda: connect(config.project, None)))
    with pytest.raises(ConfigError) as refused:
        starting.apply(ActiveModels(run_id=RUN_ID))
    for text in ("'pin_short_click_share'", "pin_dwell__pin_short_click_share", "serving_v1"):
        assert text in str(refused.value), refused.value


# --- feedback the log cannot take -----------------------------------------------------------


def feedback_config(home: ProjectHome, state: Path) -> ServingConfig:
    """The serving config of `home` with its traffic state in `state`; feedback naming no
    served item is not waited for."""
    return serving_config(home, state).model_copy(update={"unmatched_wait_s": 0.0})


def impression(request_id: int, pin_id: int, user_id: int) -> FeedbackRecord:
    return FeedbackRecord(
        event_id="",
        request_id=request_id,
        pin_id=pin_id,
        kind="impression",
        event_ts=datetime.now(UTC).isoformat(),
        user_id=user_id,
    )


def test_feedback_the_log_cannot_take_is_refused_and_neither_recorded_nor_credited(
    own_home: ProjectHome, tmp_path: Path
) -> None:
    """The log's path taken by a folder (unwritable, even for root): `record` raises
    `UnavailableError` (503 + Retry-After at the edge), the log holds what it held, and the
    served item it names gets no credit; once the log takes it, the same event is credited."""
    recorder = FeedbackRecorder(feedback_config(own_home, tmp_path))
    user = users_with_clusters(own_home)[0]
    store = connect(own_home, None)
    clusters = read_rows(store, ["user_clusters:cluster_ids"], "user_id", [user])
    cluster = int(clusters["user_clusters__cluster_ids"][0][0])
    served = ServedItem(
        request_id=41, user_id=user, served_at=datetime.now(UTC).isoformat(), pin_id=7,
        position=0, cluster_id=cluster, query_pin_id=None, run_id=RUN_ID,
        model_version="contract", probabilities=(0.1, 0.2, 0.3, 0.4), utility=0.5,
    )  # fmt: skip
    recorder.served.append([served])
    earlier = recorder.record([impression(40, 7, user)])  # names nothing served
    assert earlier.unmatched == 1 and not earlier.applied
    log = tmp_path / FEEDBACK_LOG
    kept = log.rename(tmp_path / "feedback.kept")
    log.mkdir()
    try:
        with pytest.raises(UnavailableError, match="not recorded"):
            recorder.record([impression(41, 7, user)])
    finally:
        log.rmdir()
        kept.rename(log)
    assert [r.event_id for r in recorder.log.read_all()] == earlier.event_ids
    assert recorder.writer.ledger.credited([(41, 7)]) == Credited()
    assert recorder.unmatched == 1
    retried = recorder.record([impression(41, 7, user)])
    assert retried.applied and retried.unmatched == 0
    assert [r.event_id for r in recorder.log.read_all()] == earlier.event_ids + retried.event_ids
    assert recorder.writer.ledger.credited([(41, 7)]).shown == {(41, 7)}


def served_item(request_id: int, pin_id: int, user: int, cluster: int) -> ServedItem:
    return ServedItem(
        request_id=request_id, user_id=user, served_at=datetime.now(UTC).isoformat(),
        pin_id=pin_id, position=0, cluster_id=cluster, query_pin_id=None, run_id=RUN_ID,
        model_version="contract", probabilities=(0.1, 0.2, 0.3, 0.4), utility=0.5,
    )  # fmt: skip


def test_feedback_waits_for_a_queued_served_record_and_leaves_older_events_offline(
    own_home: ProjectHome, tmp_path: Path
) -> None:
    """An item whose served record lands while its feedback waits (the Recommender's write
    queue) is credited; one that never lands is counted unmatched after `unmatched_wait_s`;
    an event stamped before the recorder started is logged but left to the offline job; one
    without a stamp is stamped on arrival and credited."""
    config = serving_config(own_home, tmp_path).model_copy(update={"unmatched_wait_s": 30.0})
    recorder = FeedbackRecorder(config)
    user = users_with_clusters(own_home)[0]
    clusters = read_rows(connect(own_home, None), ["user_clusters:cluster_ids"], "user_id", [user])
    cluster = int(clusters["user_clusters__cluster_ids"][0][0])

    lookups: list[int] = []
    lookup = recorder.served.lookup

    def counted_lookup(keys: list[tuple[int, int]]) -> dict:
        lookups.append(len(keys))
        return lookup(keys)

    recorder.served.lookup = counted_lookup  # type: ignore[method-assign]
    log_append = recorder.log.append

    def append_then_serve(records: list[FeedbackRecord]) -> list[FeedbackRecord]:
        """The record lands 0.5 s after the feedback was logged (still in a write queue)."""
        logged = log_append(records)
        threading.Timer(0.5, recorder.served.append, [[served_item(61, 7, user, cluster)]]).start()
        return logged

    recorder.log.append = append_then_serve  # type: ignore[method-assign]
    started = time.monotonic()
    waited = recorder.record([impression(61, 7, user)])
    recorder.log.append = log_append  # type: ignore[method-assign]
    assert waited.unmatched == 0 and waited.applied, waited
    assert len(lookups) >= 2, "the first lookup cannot have found it: it was looked up again"
    assert 0.4 < time.monotonic() - started < 20.0  # it returned once the record landed
    assert recorder.writer.ledger.credited([(61, 7)]).shown == {(61, 7)}

    recorder.wait_s = 1.0
    started = time.monotonic()
    never = recorder.record([impression(62, 7, user)])
    assert never.unmatched == 1 and not never.applied
    assert 1.0 <= time.monotonic() - started < 20.0

    recorder.served.append([served_item(63, 7, user, cluster)])
    before_start = FeedbackRecord(
        event_id="", request_id=63, pin_id=7, kind="impression", user_id=user,
        event_ts=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    )  # fmt: skip
    older = recorder.record([before_start])
    assert older.unmatched == 0 and not older.applied
    assert older.event_ids[0] in {r.event_id for r in recorder.log.read_all()}
    assert recorder.writer.ledger.credited([(63, 7)]) == Credited()

    # no client time: stamped here on arrival, so an event the ingress took while this sink
    # was still starting (at deploy, under load) is not mistaken for an older one
    recorder.served.append([served_item(64, 7, user, cluster)])
    unstamped = FeedbackRecord(
        event_id="", request_id=64, pin_id=7, kind="impression", user_id=user, event_ts=""
    )
    taken = recorder.record([unstamped])
    assert taken.unmatched == 0 and taken.applied, taken
    logged = {r.event_id: r for r in recorder.log.read_all()}[taken.event_ids[0]]
    assert datetime.fromisoformat(logged.event_ts) >= recorder.writer.counted_until


# --- the pin cache follows materialisations ---------------------------------------------------


def rewrite_pin_impressions(home: ProjectHome, impressions: Callable[[pd.Series], Any]) -> None:
    """The newest day of pin_features with `impressions(pin_id)` as pin_impressions_30d,
    in place (same rows, same stamps: only a full load picks it up)."""
    path = home.features / "pin_features.parquet"
    table = pd.read_parquet(path)
    newest = table["event_timestamp"] == table["event_timestamp"].max()
    table.loc[newest, "pin_impressions_30d"] = impressions(table.loc[newest, "pin_id"])
    table.to_parquet(path, index=False)


def append_pin_day(home: ProjectHome, impressions: Callable[[pd.Series], Any]) -> datetime:
    """A new day of pin_features (the newest day's rows a day later, `impressions(pin_id)`
    as pin_impressions_30d); the new day's stamp."""
    path = home.features / "pin_features.parquet"
    table = pd.read_parquet(path)
    day = table[table["event_timestamp"] == table["event_timestamp"].max()].copy()
    day["event_timestamp"] += timedelta(days=1)
    day["pin_impressions_30d"] = impressions(day["pin_id"])
    pd.concat([table, day]).to_parquet(path, index=False)
    return day["event_timestamp"].max().to_pydatetime()


def assert_serves_impressions(
    pipeline: Pipeline, home: ProjectHome, impressions: Callable[[np.ndarray], np.ndarray]
) -> None:
    """The cache holds `impressions` for every corpus pin with features, its popular pins
    follow them, and ranker inputs built now carry them."""
    cache = pipeline.features.cache
    pins = pd.read_parquet(home.features / "pin_features.parquet", columns=["pin_id"])
    known = np.isin(cache.pin_ids, pins["pin_id"].unique())
    assert known.sum() > 100
    expected = impressions(cache.pin_ids[known]).astype(np.float32)
    np.testing.assert_array_equal(cache.scalars[IMPRESSIONS][known], expected)
    assert cache.popular[0] == cache.pin_ids[known][np.argmax(expected)]
    prepared = pipeline.prepare(RecommendQuery(request_id=3, user_id=2**62, k=10))
    column = pipeline.run.ranker.dense_features.index("pin_impressions_30d")
    candidates = prepared.candidates.pin_ids
    assert len(candidates) >= 10
    np.testing.assert_array_equal(prepared.inputs.dense[:, column], impressions(candidates))


def test_the_pin_cache_reloads_when_the_registry_or_the_load_ledger_shows_a_newer_load(
    own_home: ProjectHome, tmp_path: Path
) -> None:
    """Nothing loaded: no reload. A full reload up to the same end (only the store's ledger
    moves, as for a store loaded after a flush): the new values. Feast's own materialise of a
    new day (only the registry moves, as for `feast materialize-incremental`): the new values
    again. Requests read the cache, so the ranker inputs follow it."""
    config = serving_config(own_home, tmp_path)
    store = connect(own_home, None)
    run = load_run(own_home.artifacts, RUN_ID)
    pipeline = Pipeline(config, store, run, run_weights(run.layout.utility))
    assert PIN_VIEW in pipeline.pin_views
    first = pipeline.features.cache
    assert not pipeline.refresh_cache(connect(own_home, None))
    assert pipeline.features.cache is first

    def by_id(pins: Any) -> Any:
        return 10_000 + pins

    before = loads(store)
    rewrite_pin_impressions(own_home, by_id)
    registry_end = store.get_feature_view(PIN_VIEW).most_recent_end_time
    materialize(connect(own_home, None), end=registry_end, views=[PIN_VIEW], full=True)
    after = loads(connect(own_home, None))
    assert after[0] == before[0] and after[1] > before[1], "only the ledger moved"
    assert pipeline.refresh_cache(connect(own_home, None))
    assert_serves_impressions(pipeline, own_home, by_id)

    def reversed_ids(pins: Any) -> Any:
        return 20_000 - pins

    day = append_pin_day(own_home, reversed_ids)
    feast = connect(own_home, None)
    feast.materialize(
        start_date=day - timedelta(hours=1),
        end_date=day + timedelta(hours=1),
        feature_views=[PIN_VIEW],
    )
    moved = loads(connect(own_home, None))
    assert moved[0] > after[0] and moved[1] == after[1], "only the registry moved"
    assert pipeline.refresh_cache(connect(own_home, None))
    assert_serves_impressions(pipeline, own_home, reversed_ids)
    assert not pipeline.refresh_cache(connect(own_home, None)), "nothing newer: no reload"


def loads(store: FeatureStore) -> tuple[datetime, datetime]:
    """(the registry's materialisation end, the ledger's load time) of pin_features, read
    here rather than through the code under test."""
    store.refresh_registry()
    end = store.get_feature_view(PIN_VIEW).most_recent_end_time
    assert end is not None
    return end, open_ledger(store).read()[PIN_VIEW].loaded_at


# --- exclude_seen -------------------------------------------------------------------------------


def test_exclude_seen_keeps_the_users_own_query_pins_out_of_the_candidates(
    home: ProjectHome, tmp_path: Path
) -> None:
    """`exclude_seen` (default true) leaves the user's own query pins (their clusters' medoids)
    out of the candidates; without it they do come back (so the first check is not vacuous)."""
    config = serving_config(home, tmp_path)
    run = load_run(config.project.artifacts, RUN_ID)
    pipeline = Pipeline(config, connect(config.project, None), run, run_weights(run.layout.utility))
    returned = 0
    for request_id, user in enumerate(users_with_clusters(home)[:6]):
        clusters = pipeline.features.read_user(user).clusters
        assert clusters is not None
        seen = {int(pin) for pin in clusters.medoid_pin_ids}
        for exclude_seen in (True, False):
            query = RecommendQuery(request_id, user, k=50, exclude_seen=exclude_seen)
            candidates = {int(pin) for pin in pipeline.prepare(query).candidates.pin_ids}
            if exclude_seen:
                assert not candidates & seen, (user, candidates & seen)
            else:
                returned += len(candidates & seen)
    assert returned > 0, "without exclude_seen no user got an own query pin back"
