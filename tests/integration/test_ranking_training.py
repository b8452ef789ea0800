"""The ranking models on Ray Train, for real: one worker reads a Ray Data shard of a small
ranking set (Feast column names), a failure on the first attempt of epoch 2 is recovered from
the epoch-1 checkpoint (the epoch count continues), and the trained ranker exports to ONNX
with torch parity."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import ray.train
from sklearn.metrics import roc_auc_score

from pinfeed.artifacts.layout import RANKER_FILE
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import RankerInputs
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import HeadWeights
from tests.support.ranking_data import (
    EMBEDDING_DIM,
    NUM_TOPICS,
    synthetic_arrays,
    synthetic_labels,
)
from training.ranking.config import RankerConfig, RankingTrainConfig
from training.ranking.export import export_ranker, max_parity_gap
from training.ranking.features import (
    CONTENT_EMBEDDING,
    DENSE_FEATURES,
    QUERY_CONTENT_EMBEDDING,
    SOURCE_COLUMNS,
    TOPIC,
)
from training.ranking.job import initial_state
from training.ranking.ray_loop import (
    RankingLoopConfig,
    build_model,
    ranking_dataset,
    train_loop_per_worker,
)
from training.ranking.steps import predict_logits
from training.ray_options import RayTrainSettings
from training.ray_train import fit, load_result_state

pytestmark = pytest.mark.slow  # three Ray Train attempts: ~40 s idle, ~2 min on a busy 2-core box

ROWS, TRAIN_ROWS, EPOCHS = 6_000, 4_800, 3
T0 = datetime(2026, 10, 1, tzinfo=UTC)
CONFIG = RankerConfig(
    embedding_dim=EMBEDDING_DIM, num_topics=NUM_TOPICS, hidden_dims=(64, 32), dropout=0.0
)


def write_ranking_set(path: Path, rng: np.random.Generator) -> tuple[RankerInputs, np.ndarray]:
    """A learnable ranking set under the training sets' column names, one row a minute."""
    arrays = synthetic_arrays(ROWS, rng)
    labels = synthetic_labels(arrays, rng)
    frame: dict[str, Any] = {
        SOURCE_COLUMNS[name]: arrays.dense[:, k] for k, name in enumerate(DENSE_FEATURES)
    }
    frame[SOURCE_COLUMNS[TOPIC]] = arrays.topic
    frame[SOURCE_COLUMNS[CONTENT_EMBEDDING]] = list(arrays.pin_embedding)
    frame[SOURCE_COLUMNS[QUERY_CONTENT_EMBEDDING]] = list(arrays.query_embedding)
    for t, head in enumerate(ENGAGEMENTS):
        frame[head] = labels[:, t] > 0.5
    frame["event_timestamp"] = [T0 + timedelta(minutes=i) for i in range(ROWS)]
    pd.DataFrame(frame).to_parquet(path)
    return arrays, labels


class FailOnce:
    """The loop, except that its first attempt raises at the start of epoch 2 (after the
    epoch-1 checkpoint); a marker file remembers the failure across the restart."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, config: dict[str, Any]) -> None:
        if self.marker.exists():
            train_loop_per_worker(config)
            return
        self.marker.write_text("failed once")
        loop = config["loop"]
        one_epoch = {**loop, "train": {**loop["train"], "epochs": 1}}
        train_loop_per_worker({**config, "loop": one_epoch})
        raise RuntimeError("injected failure in epoch 2")


@pytest.fixture(scope="module")
def resumed_run(
    ray_local: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ray.train.Result, RankerInputs, np.ndarray, Path]:
    root = tmp_path_factory.mktemp("ranking-ray")
    path = root / "ranking.parquet"
    arrays, labels = write_ranking_set(path, np.random.default_rng(0))
    end = T0 + timedelta(minutes=TRAIN_ROWS)
    dataset = ranking_dataset(path, EMBEDDING_DIM, end=end)
    train = RankingTrainConfig(model=CONFIG, batch_size=256, epochs=EPOCHS, learning_rate=3e-3)
    loop = RankingLoopConfig(
        kind="multi_task",
        train=train,
        importance=HeadWeights(closeup=1.0, save=2.0, click=2.0, long_click=4.0),
    )
    marker = root / "failed"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    result = fit(
        FailOnce(marker),
        {
            "loop": loop.model_dump(mode="json"),
            "initial_state": initial_state("multi_task", CONFIG, arrays.dense[:TRAIN_ROWS], 0),
        },
        {"train": dataset},
        RayTrainSettings(name="fail-once", storage_path=root / "ray", max_failures=1),
    )
    assert marker.exists(), "the first attempt never ran"
    return result, arrays, labels, root


def test_failure_resumes_from_the_last_checkpoint(resumed_run: tuple) -> None:
    result, *_ = resumed_run
    assert result.error is None
    assert result.metrics["epoch"] == EPOCHS
    assert result.metrics["resumed_from_epoch"] == 1, "the restart began from scratch"
    assert result.metrics["rows"] == TRAIN_ROWS, "the shard must hold the training period only"
    assert load_result_state(result)["epoch"] == EPOCHS


def test_trained_ranker_learns_and_exports_with_parity(resumed_run: tuple) -> None:
    result, arrays, labels, root = resumed_run
    model = build_model("multi_task", CONFIG)
    model.load_state_dict(load_result_state(result)["model"])
    held_out = arrays.take(slice(TRAIN_ROWS, ROWS))
    logits = predict_logits(model, held_out)
    for t in range(len(ENGAGEMENTS)):
        assert roc_auc_score(labels[TRAIN_ROWS:, t], logits[:, t]) > 0.7
    export_ranker(model, root / "export", negative_sample_rate=0.1)
    session = inference_session(root / "export" / RANKER_FILE)
    for batch in (1, 64, 512):
        assert max_parity_gap(model, session, held_out.take(slice(0, batch))) <= 1e-4


def test_a_streamed_shard_trains_on_the_same_rows(ray_local: None, tmp_path: Path) -> None:
    """The path for shards too big to hold (Ray Data every epoch) covers the training period."""
    path = tmp_path / "ranking.parquet"
    arrays, _ = write_ranking_set(path, np.random.default_rng(1))
    dataset = ranking_dataset(path, EMBEDDING_DIM, end=T0 + timedelta(minutes=TRAIN_ROWS))
    train = RankingTrainConfig(model=CONFIG, batch_size=256, epochs=2)
    loop = RankingLoopConfig(
        kind="multi_task",
        train=train,
        importance=HeadWeights(closeup=1.0, save=2.0, click=2.0, long_click=4.0),
        in_memory=False,
    )
    result = fit(
        train_loop_per_worker,
        {
            "loop": loop.model_dump(mode="json"),
            "initial_state": initial_state("multi_task", CONFIG, arrays.dense[:TRAIN_ROWS], 0),
        },
        {"train": dataset},
        RayTrainSettings(name="streamed", storage_path=tmp_path / "ray", max_failures=0),
    )
    assert result.error is None
    assert result.metrics_dataframe.sort_values("epoch")["rows"].tolist() == [TRAIN_ROWS] * 2
