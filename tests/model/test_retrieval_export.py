"""ONNX export of both towers: parity with torch, dynamic batch, manifest contents and hashes.
The model carries the auxiliary engagement head (`dual_positive_aux`), which is not exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pinfeed.artifacts.layout import PIN_TOWER_FILE, QUERY_TOWER_FILE, sha256_file
from pinfeed.artifacts.onnx import CPU, CUDA, gpu_available, inference_session, session_providers
from pinfeed.artifacts.retrieval import PIN_TOWER_INPUTS, QUERY_TOWER_INPUTS
from pinfeed.artifacts.retrieval import read_retrieval_manifest as read_manifest
from pinfeed.errors import DataNotFoundError, SchemaError
from training.retrieval.config import RetrievalConfig, TowerConfig
from training.retrieval.export import (
    example_pin_inputs,
    example_query_inputs,
    export_retrieval,
    manifest_model_config,
)
from training.retrieval.features import PIN_DENSE_FEATURES, USER_DENSE_FEATURES
from training.retrieval.model import RetrievalModel

TOLERANCE = 1e-4
CONFIG = RetrievalConfig(
    towers=TowerConfig(
        n_user_buckets=300, n_pin_buckets=2000, n_topics=12, content_dim=32, output_dim=48
    ),
    variant="dual_positive_aux",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[RetrievalModel, Path]:
    torch.manual_seed(0)
    model = RetrievalModel(CONFIG).eval()
    out_dir = tmp_path_factory.mktemp("retrieval_artifacts")
    export_retrieval(model, CONFIG, out_dir)
    return model, out_dir


def _feeds(names: tuple[str, ...], inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}


def _with_edge_cases(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Row 0 gets a missing dense value, an id past the table (hashed) and a missing id (-1)
    in the tower's second id input (query pin or topic)."""
    ids, dense, *rest = (t.clone() for t in inputs)
    dense[0, 0] = float("nan")
    ids[0] = 10**9 + 7
    second_ids = next(t for t in rest if t.dtype == torch.int64)
    second_ids[0] = -1
    return (ids, dense, *rest)


@pytest.mark.parametrize("batch_size", [1, 64, 512])
def test_query_tower_parity(exported: tuple[RetrievalModel, Path], batch_size: int) -> None:
    model, out_dir = exported
    session = inference_session(out_dir / QUERY_TOWER_FILE, prefer_gpu=False)
    inputs = _with_edge_cases(example_query_inputs(CONFIG, batch_size))
    (got,) = session.run(None, _feeds(QUERY_TOWER_INPUTS, inputs))
    with torch.no_grad():
        expected = model.query_tower(*inputs).numpy()
    assert got.shape == (batch_size, 48)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("batch_size", [1, 64, 512])
def test_pin_tower_parity(exported: tuple[RetrievalModel, Path], batch_size: int) -> None:
    model, out_dir = exported
    session = inference_session(out_dir / PIN_TOWER_FILE, prefer_gpu=False)
    inputs = _with_edge_cases(example_pin_inputs(CONFIG, batch_size))
    (got,) = session.run(None, _feeds(PIN_TOWER_INPUTS, inputs))
    with torch.no_grad():
        expected = model.pin_tower(*inputs).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_engagement_head_stays_out_of_both_graphs(exported: tuple[RetrievalModel, Path]) -> None:
    """Serving runs the towers only: no initializer of either graph holds the head's weights."""
    model, out_dir = exported
    head = np.sort(model.engagement_head.mlp[0].weight.detach().numpy().ravel())
    for name in (QUERY_TOWER_FILE, PIN_TOWER_FILE):
        for initializer in onnx.load(str(out_dir / name)).graph.initializer:
            values = numpy_helper.to_array(initializer).ravel()
            assert values.size != head.size or not np.allclose(np.sort(values), head), name


def test_graph_has_dynamic_batch_and_opset(exported: tuple[RetrievalModel, Path]) -> None:
    _, out_dir = exported
    graph = onnx.load(str(out_dir / QUERY_TOWER_FILE))
    assert [i.name for i in graph.graph.input] == list(QUERY_TOWER_INPUTS)
    for tensor in [*graph.graph.input, *graph.graph.output]:
        assert tensor.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17


def test_manifest_records_the_contract(exported: tuple[RetrievalModel, Path]) -> None:
    _, out_dir = exported
    manifest = read_manifest(out_dir)
    assert [s.name for s in manifest.query_tower.inputs] == list(QUERY_TOWER_INPUTS)
    assert [s.name for s in manifest.pin_tower.inputs] == list(PIN_TOWER_INPUTS)
    assert manifest.query_tower.dense_features == USER_DENSE_FEATURES
    assert manifest.pin_tower.dense_features == PIN_DENSE_FEATURES
    assert manifest.query_tower.inputs[1].shape == ("batch", len(USER_DENSE_FEATURES))
    assert manifest.query_tower.inputs[0].dtype == "int64"
    assert manifest.query_tower.outputs[0].shape == ("batch", 48)
    assert manifest.content_dim == 32 and manifest.embedding_dim == 48
    assert set(manifest.versions) == {"torch", "onnx", "onnxruntime"}
    assert manifest.query_tower.sha256 == sha256_file(out_dir / QUERY_TOWER_FILE)
    assert manifest_model_config(manifest) == CONFIG
    assert (
        manifest.query_tower.source_columns["user_dwell_mean_s"] == "user_dwell__user_dwell_mean_s"
    )
    assert manifest.pin_tower.source_columns["shoppable"] == "pin_content__shoppable"


def test_tampered_file_is_refused(exported: tuple[RetrievalModel, Path], tmp_path: Path) -> None:
    _, out_dir = exported
    for name in ("manifest.json", QUERY_TOWER_FILE, PIN_TOWER_FILE):
        (tmp_path / name).write_bytes((out_dir / name).read_bytes())
    with (tmp_path / PIN_TOWER_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(SchemaError, match="SHA-256"):
        read_manifest(tmp_path)
    with pytest.raises(DataNotFoundError, match="pinfeed train retrieval"):
        read_manifest(tmp_path / "nowhere")


def test_cuda_is_asked_for_only_with_a_device_node_and_the_provider(tmp_path: Path) -> None:
    node = tmp_path / "nvidiactl"
    assert not gpu_available(node, [CUDA, CPU])  # ORT with CUDA, no NVIDIA device
    node.touch()
    assert not gpu_available(node, [CPU])  # a device, ORT without the CUDA provider
    assert gpu_available(node, [CUDA, CPU])
    assert session_providers(gpu=True) == [CUDA, CPU]
    assert session_providers(prefer_gpu=False, gpu=True) == [CPU]
    assert session_providers(gpu=False) == [CPU]


def test_session_runs_on_the_machine_gpu_where_there_is_one(
    exported: tuple[RetrievalModel, Path],
) -> None:
    """On a GPU machine the session must really run on CUDA (ORT silently falls back to the CPU
    when the CUDA provider cannot start); on this CPU box, on the CPU."""
    _, out_dir = exported
    session = inference_session(out_dir / QUERY_TOWER_FILE)
    assert session.get_providers()[0] == (CUDA if gpu_available() else CPU)
    assert session.get_providers()[-1] == CPU
    if gpu_available():  # full float32 on CUDA: TF32 moved ranker logits by 1e-3 on an H200
        assert session.get_provider_options()[CUDA]["use_tf32"] == "0"
    cpu_only = inference_session(out_dir / QUERY_TOWER_FILE, prefer_gpu=False)
    assert cpu_only.get_providers() == [CPU]
