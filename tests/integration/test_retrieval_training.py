"""Retrieval on Ray Train, for real: a worker killed mid-run resumes from the last checkpoint,
and a one-worker job exports towers whose ONNX matches torch and indexes every pin.
`ray job submit` on a two-node cluster is in test_multi_node.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
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
from tests.support.retrieval_run import tiny_retrieval_run
from training.ray_options import RayOptions, RayTrainSettings
from training.ray_train import fit, load_result_state
from training.retrieval.corpus import read_pin_corpus
from training.retrieval.dataset import VariantRows, pin_sampling, sized_towers, weighted_rows
from training.retrieval.export import example_query_inputs, manifest_model_config
from training.retrieval.features import batch_from_table
from training.retrieval.job import embed_corpus_onnx, train_retrieval
from training.retrieval.job_config import RetrievalJobConfig, RetrievalSettings
from training.retrieval.model import RetrievalModel
from training.retrieval.ray_loop import RetrievalLoopConfig, retrieval_loop

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3
BATCH = 128


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return build_tiny_home(tmp_path_factory.mktemp("retrieval") / "home")


def _tiny_settings(epochs: int) -> RetrievalSettings:
    return RetrievalSettings(epochs=epochs, batch_size=BATCH, towers={"hidden_dims": (32,)})


class KillOnce:
    """Epoch hook: logs `epoch step` lines; kills rank `rank`'s process at `epoch` the first
    time only (a marker file remembers it across the restart)."""

    def __init__(self, log: Path, marker: Path, epoch: int, rank: int) -> None:
        self.log, self.marker, self.epoch, self.rank = log, marker, epoch, rank

    def __call__(self, epoch: int, step: int) -> None:
        rank = ray.train.get_context().get_world_rank()
        if rank == 0:
            with self.log.open("a") as handle:
                handle.write(f"{epoch} {step}\n")
        if rank == self.rank and epoch == self.epoch and not self.marker.exists():
            self.marker.write_text("killed")
            os._exit(1)


def test_killed_worker_resumes_from_last_checkpoint(
    ray_local: None, tiny_home: ProjectHome, tmp_path: Path
) -> None:
    log, marker = tmp_path / "epochs.log", tmp_path / "killed"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    hook = KillOnce(log, marker, epoch=1, rank=1)
    run = tiny_retrieval_run(tiny_home, EPOCHS, BATCH, hook)
    settings = RayTrainSettings(
        name="killed", storage_path=tmp_path / "ray", num_workers=2, cpus_per_worker=0.5
    )
    result = fit(retrieval_loop, run.loop.as_loop_config(), {"train": run.dataset}, settings)

    assert marker.exists(), "the worker was never killed"
    logged = _pairs(log)
    steps_per_epoch = logged[0][1]
    assert logged[0][0] == 0 and 1 <= steps_per_epoch <= run.rows // BATCH + 1
    kill_at = next(i for i, (epoch, _) in enumerate(logged) if epoch == 1)
    after = logged[kill_at + 1 :]
    assert after, f"nothing reported after the restart: {logged}"
    assert all(epoch >= 1 for epoch, _ in after), f"restarted from scratch: {logged}"
    for epoch, step in logged:
        assert step == (epoch + 1) * steps_per_epoch, logged
    assert logged[-1][0] == EPOCHS - 1
    state = load_result_state(result)
    assert state["epoch"] == EPOCHS - 1
    assert state["step"] == EPOCHS * steps_per_epoch == int(result.metrics["step"])
    # docs/operations.md: one checkpoint per epoch, the default two kept (the newest two)
    kept = sorted((tmp_path / "ray" / "killed").glob("checkpoint_*/state.pt"))
    epochs = sorted(torch.load(p, map_location="cpu", weights_only=False)["epoch"] for p in kept)
    assert settings.checkpoints_to_keep == 2 and epochs == [EPOCHS - 2, EPOCHS - 1], kept


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


def _pairs(log: Path) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (line.split() for line in log.read_text().splitlines())]


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
