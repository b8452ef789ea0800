"""Train/serve parity of the query tower: the embeddings serving computes for a user's drawn
query pins equal the exported ONNX query tower run on the same user and pin rows read through
the Feast SDK (`get_online_features`, columns in the manifest's order). The ranker's half of
the claim is `test_serving.py::test_served_probabilities_equal_the_offline_ranker_on_the_same_
feast_rows`. Real Feast (SQLite online store), real ONNX models, no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from feature_repo.store import open_store
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import CONTENT_EMBEDDING
from pinfeed.artifacts.runs import load_run
from pinfeed.home import ProjectHome
from serving.config import ServingConfig
from serving.stages.active import run_weights
from serving.stages.online import connect
from serving.stages.pipeline import Pipeline, RecommendQuery
from tests.support.homes import RUN_ID, shared_serving_home, users_with_clusters


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return shared_serving_home(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def pipeline(home: ProjectHome, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    config = ServingConfig(home=home.root, run_id=RUN_ID, state_dir=tmp_path_factory.mktemp("st"))
    run = load_run(config.project.artifacts, RUN_ID)
    return Pipeline(config, connect(config.project, None), run, run_weights(run.layout.utility))


def _feast_ref(full_name: str) -> str:
    view, feature = full_name.split("__", 1)
    return f"{view}:{feature}"


def _offline_embeddings(home: ProjectHome, user_id: int, pins: np.ndarray) -> np.ndarray:
    """The exported query tower on Feast SDK rows: the user's dense columns in manifest order
    (None -> NaN, as the training set stores a missing value) and each pin's content row."""
    run = load_run(home.artifacts, RUN_ID)
    tower = run.retrieval.query_tower
    store = open_store(home)
    columns = tower.source_column_order()
    user = store.get_online_features(
        features=[_feast_ref(c) for c in columns],
        entity_rows=[{"user_id": user_id}],
        full_feature_names=True,
    ).to_dict()
    dense = np.array(
        [[np.nan if user[c][0] is None else user[c][0] for c in columns]], dtype=np.float32
    )
    content_column = run.ranker.source_columns[CONTENT_EMBEDDING]
    content = store.get_online_features(
        features=[_feast_ref(content_column)],
        entity_rows=[{"pin_id": int(pin)} for pin in pins],
        full_feature_names=True,
    ).to_dict()[content_column]
    feed = {
        "user_id": np.full(len(pins), user_id, dtype=np.int64),
        "user_dense": np.repeat(dense, len(pins), axis=0),
        "query_pin_id": pins.astype(np.int64),
        "query_content": np.array(content, dtype=np.float32),
    }
    session = inference_session(run.layout.retrieval / tower.file, prefer_gpu=False)
    (embeddings,) = session.run([tower.output_name], feed)
    return embeddings


def test_served_query_embeddings_equal_the_offline_tower_on_the_same_feast_rows(
    pipeline: Pipeline, home: ProjectHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request goes through `Pipeline.prepare` (the Recommender's path); what its query
    tower call received and returned is recorded and compared with the offline tower."""
    calls: list[tuple[int, np.ndarray, np.ndarray]] = []
    embed = pipeline.retriever.embed

    def recorded(
        user_id: int, user_dense: np.ndarray, query_pin_ids: np.ndarray, content: np.ndarray
    ) -> np.ndarray:
        embeddings = embed(user_id, user_dense, query_pin_ids, content)
        calls.append((user_id, np.array(query_pin_ids), embeddings))
        return embeddings

    monkeypatch.setattr(pipeline.retriever, "embed", recorded)
    users = users_with_clusters(home)[:3]
    for request_id, user_id in enumerate(users):
        prepared = pipeline.prepare(RecommendQuery(request_id=request_id, user_id=user_id, k=20))
        assert len(prepared.candidates) >= 20 and not prepared.degraded
    assert [user for user, _, _ in calls] == users, "every request embeds its own queries"
    for user_id, pins, served in calls:
        offline = _offline_embeddings(home, user_id, pins)
        assert served.shape == offline.shape == (len(pins), offline.shape[1])
        assert np.isfinite(served).all()
        np.testing.assert_allclose(served, offline, rtol=0, atol=1e-5)
