"""Retrieval on Ray Train, for real: every row trains once per epoch on both shard paths, and
a one-worker job exports towers whose ONNX matches torch and indexes every pin. `ray job
submit` on a two-node cluster, and a run that loses a worker (with its node) resuming from the
last checkpoint, are in test_multi_node.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.data
import torch
import yaml

from pinfeed.artifacts.index import load_pin_index
from pinfeed.artifacts.layout import QUERY_TOWER_FILE
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.retrieval import QUERY_TOWER_INPUTS
from pinfeed.artifacts.retrieval import read_retrieval_manifest as read_manifest
from pinfeed.home import ProjectHome
from tests.support.homes import build_tiny_home
from training.ray_options import RayOptions, RayTrainSettings
from training.ray_train import fit
from training.retrieval.corpus import read_pin_corpus
from training.retrieval.dataset import VariantRows, pin_sampling, sized_towers, weighted_rows
from training.retrieval.export import example_query_inputs, manifest_model_config
from training.retrieval.features import batch_from_table
from training.retrieval.job import embed_corpus_onnx, train_retrieval
from training.retrieval.job_config import RetrievalJobConfig, RetrievalSettings
from training.retrieval.model import RetrievalModel
from training.retrieval.ray_loop import RetrievalLoopConfig, retrieval_loop

REPO = Path(__file__).resolve().parents[2]
BATCH = 128


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return build_tiny_home(tmp_path_factory.mktemp("retrieval") / "home")


def _tiny_settings(epochs: int) -> RetrievalSettings:
    return RetrievalSettings(epochs=epochs, batch_size=BATCH, towers={"hidden_dims": (32,)})


@pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "streamed"])
def test_every_row_trains_once_per_epoch(
    ray_local: None, tiny_home: ProjectHome, tmp_path: Path, in_memory: bool
) -> None:
    """Both shard paths (cached tensors, or Ray Data every epoch) cover the variant's rows."""
    set_path = tiny_home.training_sets / "retrieval.parquet"
    table = pq.read_table(set_path)
    corpus = read_pin_corpus(tiny_home.features)
    towers = sized_towers(corpus, table.column("user_id").to_numpy(), hidden_dims=(32,))
    config = _tiny_settings(2).sized(towers)
    rows = weighted_rows(table, config).num_rows
    sampling = pin_sampling(weighted_rows(table, config), config)
    loop = RetrievalLoopConfig(config, sampling.log_q_table.numpy(), in_memory=in_memory)
    dataset = ray.data.read_parquet(str(set_path)).map_batches(
        VariantRows(config), batch_format="pyarrow"
    )
    settings = RayTrainSettings(name="rows", storage_path=tmp_path / "ray", num_workers=1)
    result = fit(retrieval_loop, loop.as_loop_config(), {"train": dataset}, settings)
    per_epoch = result.metrics_dataframe.sort_values("epoch")
    assert per_epoch["rows"].tolist() == [rows, rows]
    assert per_epoch["step"].tolist() == [-(-rows // BATCH), 2 * -(-rows // BATCH)]


def _latest_state(out_dir: Path) -> dict:
    checkpoints = sorted((out_dir.parent / "checkpoints").glob("*/checkpoint_*/state.pt"))
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=False)


def test_one_worker_job_exports_parity_and_index(ray_local: None, tiny_home: ProjectHome) -> None:
    job = RetrievalJobConfig(run_id="one-worker", model=_tiny_settings(2))
    out_dir = train_retrieval(job, tiny_home)

    manifest = read_manifest(out_dir, verify=True)
    assert {"pins.faiss", "pin_ids.npy", "training_set.json", "training.json"} <= set(
        manifest.files
    )
    model = RetrievalModel(manifest_model_config(manifest))
    state = _latest_state(out_dir)
    model.load_state_dict(state["model"])
    model.eval()
    assert state["epoch"] == 1
    rows = batch_from_table(pq.read_table(tiny_home.training_sets / "retrieval.parquet"))
    real = (rows.user_id, rows.user_dense, rows.query_pin_id, rows.query_content)
    session = inference_session(out_dir / QUERY_TOWER_FILE, prefer_gpu=False)
    for inputs in (real, example_query_inputs(manifest_model_config(manifest), 64)):
        feeds = {n: t.numpy() for n, t in zip(QUERY_TOWER_INPUTS, inputs, strict=True)}
        with torch.no_grad():
            expected = model.query_tower(*inputs).numpy()
        np.testing.assert_allclose(session.run(None, feeds)[0], expected, rtol=0, atol=1e-4)

    corpus = read_pin_corpus(tiny_home.features)
    with torch.no_grad():
        torch_pins = model.pin_tower(*corpus.tower_inputs()).numpy()
    np.testing.assert_allclose(
        embed_corpus_onnx(out_dir / "pin_tower.onnx", corpus), torch_pins, atol=1e-4
    )
    index = load_pin_index(out_dir)
    assert index.exact and len(index) == len(corpus)
    ids, _ = index.search(torch_pins[:5], k=1)
    assert ids[:, 0].tolist() == corpus.pin_id[:5].tolist(), "a pin's nearest pin is itself"


def test_cluster_yaml_is_a_valid_launcher_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "ray_cluster.yaml").read_text()))
    validate_config(config)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] == 0 < gpu["max_workers"]
    assert any("make .venv/.installed" in c for c in config["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        # `ray job submit -- python ...` runs with the raylet's PATH: the venv's python first
        exported = start.index("export PATH=$HOME/pinfeed/.venv/bin:$PATH")
        assert exported < start.index("ray start"), key


def test_default_config_file_is_the_built_in_default() -> None:
    from training.retrieval.job_config import load_job_config

    assert load_job_config(REPO / "configs" / "retrieval.yaml") == RetrievalJobConfig()
    assert RayOptions().num_workers == 1
