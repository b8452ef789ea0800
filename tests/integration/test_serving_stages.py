"""The serving stages in-process, without Ray: a run's pipeline answers, the ranker pool scores
each request with its own run, and a replica's switch of run or weights is atomic and keeps the
old pipeline when the new one cannot load. Real Feast (SQLite online store), real ONNX models."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import numpy as np
import pytest

from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.runs import load_run
from pinfeed.calibration import calibrate_logits
from pinfeed.errors import DataNotFoundError
from pinfeed.home import ProjectHome
from pinfeed.utility import HeadWeights, UtilityWeights, save_utility_weights
from serving.config import ActiveModels, ServingConfig
from serving.http.api import ReloadRequest
from serving.http.ingress import reload_target
from serving.stages.active import ActivePipeline, pipeline_builder, run_weights
from serving.stages.online import connect
from serving.stages.pipeline import Pipeline, RecommendQuery
from serving.stages.ranker import RankerPool
from tests.support.homes import RUN_ID, RUN_ID_B, shared_serving_home, users_with_clusters

CLOSEUP = UtilityWeights(
    version="closeup-only", weights=HeadWeights(closeup=1, save=0, click=0, long_click=0)
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return shared_serving_home(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def config(home: ProjectHome, tmp_path_factory: pytest.TempPathFactory) -> ServingConfig:
    return ServingConfig(
        home=home.root, run_id=RUN_ID, candidates=100, state_dir=tmp_path_factory.mktemp("st")
    )


@pytest.fixture(scope="module")
def pipeline(config: ServingConfig) -> Pipeline:
    run = load_run(config.project.artifacts, RUN_ID)
    return Pipeline(config, connect(config.project, None), run, run_weights(run.layout.utility))


def test_pipeline_answers_k_distinct_pins_scored_by_calibrated_utility(
    pipeline: Pipeline, config: ServingConfig, home: ProjectHome
) -> None:
    user = users_with_clusters(home)[0]
    prepared = pipeline.prepare(RecommendQuery(request_id=7, user_id=user, k=20))
    assert prepared.inputs.run_id == RUN_ID and not prepared.degraded
    logits = RankerPool(config.project.artifacts, 1).logits([prepared.inputs])[0]
    answer = pipeline.finish(prepared, logits)
    assert len(set(answer.pin_ids.tolist())) == 20
    assert answer.model_version == pipeline.version
    probabilities = calibrate_logits(logits, pipeline.run.ranker.calibration_rate_vector())
    weights = pipeline.scorer.weights.weights.vector()
    expected = np.sort(probabilities @ weights)[::-1][:20]
    np.testing.assert_allclose(answer.utility, expected, rtol=1e-12)


def test_ranker_pool_scores_each_request_with_its_own_run(
    pipeline: Pipeline, config: ServingConfig, home: ProjectHome
) -> None:
    user = users_with_clusters(home)[1]
    prepared = pipeline.prepare(RecommendQuery(request_id=8, user_id=user, k=10)).inputs
    as_b = type(prepared)(*prepared.as_tuple(), run_id=RUN_ID_B)
    pool = RankerPool(config.project.artifacts, 1)
    mixed = pool.logits([prepared, as_b, prepared])
    for run_id, logits in ((RUN_ID, mixed[0]), (RUN_ID_B, mixed[1]), (RUN_ID, mixed[2])):
        layout = load_run(config.project.artifacts, run_id).layout
        (own,) = inference_session(layout.ranker_model, prefer_gpu=False).run(None, prepared.feed())
        np.testing.assert_allclose(logits, own, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mixed[0], mixed[1]), "the two runs' rankers should differ"


def test_a_replica_switches_whole_and_keeps_serving_when_a_switch_fails(
    config: ServingConfig,
) -> None:
    active = ActivePipeline(pipeline_builder(config, lambda: connect(config.project, None)))
    first = active.apply(ActiveModels(run_id=RUN_ID))
    assert first.version.startswith(f"{RUN_ID}:") and active.error is None
    reweighted = active.apply(ActiveModels(run_id=RUN_ID, utility=CLOSEUP))
    assert reweighted.version.endswith("+closeup-only")
    assert reweighted.retriever is first.retriever, "new weights reload nothing else"
    assert first.version.endswith("+hand-v1"), "the pipeline in flight keeps its weights"
    other = active.apply(ActiveModels(run_id=RUN_ID_B))
    assert other.run.run_id == RUN_ID_B and other.features.cache is first.features.cache
    kept = active.apply(ActiveModels(run_id="no-such-run"))
    assert kept is other and active.get() is other
    assert "no-such-run" in (active.error or "") and RUN_ID_B in (active.error or "")
    empty = ActivePipeline(pipeline_builder(config, lambda: connect(config.project, None)))
    with pytest.raises(DataNotFoundError, match="no-such-run"):
        empty.apply(ActiveModels(run_id="no-such-run"))


def test_a_reload_body_reads_as_the_api_says() -> None:
    """A run (even the one served) comes with its own utility.json unless weights are given;
    weights alone keep the run; every reload is stamped, so replicas re-read the weights."""
    now = datetime(2026, 11, 25, tzinfo=UTC)
    current = ActiveModels(run_id="a", utility=CLOSEUP)
    hand = UtilityWeights(
        version="h", weights=HeadWeights(closeup=0.1, save=0.2, click=0.3, long_click=0.4)
    )
    for body, run_id, expected in (
        (ReloadRequest(run_id="b"), "b", ActiveModels(run_id="b")),
        (ReloadRequest(run_id="latest"), "a", ActiveModels(run_id="a")),
        (ReloadRequest(utility=hand), None, ActiveModels(run_id="a", utility=hand)),
        (ReloadRequest(run_id="b", utility=hand), "b", ActiveModels(run_id="b", utility=hand)),
    ):
        target = reload_target(current, body, run_id, now)
        assert target == expected.model_copy(update={"requested_at": now}), body


def test_reloading_the_served_run_rereads_its_utility_weights(
    config: ServingConfig, home: ProjectHome
) -> None:
    """`optimize utility` rewrites a run's utility.json; a reload of the same run picks it up."""
    copy = home.artifacts / "tiny-run-weights"
    shutil.copytree(home.artifacts / RUN_ID, copy)
    try:
        active = ActivePipeline(pipeline_builder(config, lambda: connect(config.project, None)))
        assert active.apply(ActiveModels(run_id=copy.name)).version.endswith("+hand-v1")
        save_utility_weights(CLOSEUP, copy / "ranking" / "utility.json")
        again = active.apply(ActiveModels(run_id=copy.name, requested_at=datetime.now(UTC)))
        assert again.version.endswith("+closeup-only")
    finally:
        shutil.rmtree(copy)
