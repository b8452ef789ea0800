"""ONNX export of the multi-task ranker: parity with torch eager, dynamic batch, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pinfeed.artifacts.layout import RANKER_FILE as MODEL_FILE
from pinfeed.artifacts.layout import RANKER_MANIFEST as MANIFEST_FILE
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import RANKER_INPUTS as INPUT_NAMES
from pinfeed.artifacts.ranker import read_ranker_manifest as load_ranker_manifest
from pinfeed.calibration import calibrate_logits
from pinfeed.errors import ConfigError, SchemaError
from pinfeed.schema import ENGAGEMENTS
from tests.support.ranking_data import EMBEDDING_DIM, NUM_TOPICS, synthetic_arrays
from training.ranking.config import RankerConfig
from training.ranking.export import export_ranker, manifest_model_config, max_parity_gap
from training.ranking.features import DENSE_FEATURES, SOURCE_COLUMNS
from training.ranking.model import MultiTaskRanker


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultiTaskRanker, Path]:
    torch.manual_seed(0)
    model = MultiTaskRanker(RankerConfig(embedding_dim=EMBEDDING_DIM, num_topics=NUM_TOPICS))
    fit_rows = synthetic_arrays(1_000, np.random.default_rng(0))
    model.fit_normalizer(torch.from_numpy(fit_rows.dense))
    out_dir = tmp_path_factory.mktemp("ranker")
    rates = dict(zip(ENGAGEMENTS, (0.3, 0.2, 0.25, 0.15), strict=True))
    export_ranker(model, out_dir, negative_sample_rate=0.1, calibration_sample_rates=rates)
    return model, out_dir


@pytest.mark.parametrize("batch", [1, 64, 512])
def test_onnx_matches_torch(exported: tuple[MultiTaskRanker, Path], batch: int) -> None:
    model, out_dir = exported
    session = inference_session(out_dir / MODEL_FILE)
    # The synthetic rows include NaN features and out-of-range topics: both paths must agree.
    arrays = synthetic_arrays(batch, np.random.default_rng(batch))
    assert max_parity_gap(model, session, arrays) <= 1e-4
    (logits,) = session.run(None, arrays.feed())
    assert logits.shape == (batch, len(ENGAGEMENTS))
    assert np.all(np.isfinite(logits))


def test_graph_has_a_dynamic_batch(exported: tuple[MultiTaskRanker, Path]) -> None:
    session = inference_session(exported[1] / MODEL_FILE)
    inputs = session.get_inputs()
    assert [i.name for i in inputs] == list(INPUT_NAMES)
    assert all(isinstance(i.shape[0], str) for i in inputs)
    assert inputs[0].shape[1] == len(DENSE_FEATURES)
    assert session.get_outputs()[0].name == "logits"


def test_manifest_records_heads_features_and_rates(exported: tuple[MultiTaskRanker, Path]) -> None:
    out_dir = exported[1]
    raw = json.loads((out_dir / MANIFEST_FILE).read_text())
    assert raw["heads"] == list(ENGAGEMENTS)
    assert raw["dense_features"] == list(DENSE_FEATURES)
    assert raw["negative_sample_rate"] == 0.1
    assert raw["source_columns"] == SOURCE_COLUMNS
    assert raw["log1p_features"] == sorted(set(raw["log1p_features"]))
    manifest = load_ranker_manifest(out_dir)
    assert manifest_model_config(manifest) == exported[0].config
    np.testing.assert_allclose(manifest.calibration_rate_vector(), [0.3, 0.2, 0.25, 0.15])
    # Serving's path: logits -> calibrated probabilities with the manifest's rates.
    logits = np.zeros((2, 4))
    p = calibrate_logits(logits, manifest.calibration_rate_vector())
    np.testing.assert_allclose(p[0], [0.3 / 1.3, 0.2 / 1.2, 0.25 / 1.25, 0.15 / 1.15])


def test_a_changed_model_file_is_refused(
    exported: tuple[MultiTaskRanker, Path], tmp_path: Path
) -> None:
    for name in (MODEL_FILE, MANIFEST_FILE):
        (tmp_path / name).write_bytes((exported[1] / name).read_bytes())
    (tmp_path / MODEL_FILE).write_bytes((tmp_path / MODEL_FILE).read_bytes() + b"\0")
    with pytest.raises(SchemaError, match="SHA-256"):
        load_ranker_manifest(tmp_path)


def test_rates_for_every_head_are_required(
    exported: tuple[MultiTaskRanker, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="calibration_sample_rates"):
        export_ranker(
            exported[0], tmp_path, negative_sample_rate=0.1, calibration_sample_rates={"save": 0.1}
        )
    assert not (tmp_path / MODEL_FILE).exists()
