"""`train_retrieval`: the retrieval job end to end, on Ray Train.

    training set --ray.data.read_parquet--> variant's positive rows --> Ray Train (retrieval_loop)
    --> latest checkpoint --> ONNX towers + manifest --> pin tower over every pin --> faiss index

Everything lands in the run's `retrieval/` folder (`pinfeed.artifacts.layout`): both towers,
the pin index, `training_set.json` (which data, which feature service), `training.json` (the
run's last metrics) and `manifest.json`, which hashes every other file. Without a run id the
job starts a new run (`pinfeed.artifacts.runs.run_for_retrieval`); `train ranking` then joins
it. Checkpoints go to the run's `checkpoints/` unless the job config names shared storage
(needed on a multi-node cluster, as is a data path every node can read).

The index is built from the exported ONNX pin tower, the very file serving loads, so what the
index holds and what serving would compute for a pin cannot drift apart.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.data

from pinfeed.artifacts.index import build_pin_index
from pinfeed.artifacts.layout import PIN_TOWER_FILE, RETRIEVAL_SUMMARY, TRAINING_SET_FILE
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.retrieval import (
    PIN_TOWER_INPUTS,
    RetrievalManifest,
    with_files,
    write_retrieval_manifest,
)
from pinfeed.artifacts.runs import run_for_retrieval
from pinfeed.home import ProjectHome
from training.ray_train import ensure_ray, fit, load_result_state
from training.retrieval.config import RetrievalConfig
from training.retrieval.corpus import PinCorpus, read_pin_corpus
from training.retrieval.dataset import (
    WEIGHT_COLUMNS,
    VariantRows,
    known_user_ids,
    pin_sampling,
    read_training_set,
    sized_towers,
    weighted_rows,
)
from training.retrieval.export import export_retrieval
from training.retrieval.job_config import RetrievalJobConfig, load_job_config
from training.retrieval.model import RetrievalModel
from training.retrieval.ray_loop import RetrievalLoopConfig, retrieval_loop
from training.shard_cache import shard_in_memory
from training.training_sets import RETRIEVAL_NAME


def embed_corpus_onnx(
    pin_tower_path: Path, corpus: PinCorpus, batch_size: int = 8192
) -> np.ndarray:
    """[N, E] embeddings of every pin through the exported pin tower (ONNX Runtime, CPU)."""
    session = inference_session(pin_tower_path, prefer_gpu=False)
    parts = []
    for start in range(0, len(corpus), batch_size):
        inputs = corpus.tower_inputs(slice(start, start + batch_size))
        feeds = {
            name: tensor.numpy() for name, tensor in zip(PIN_TOWER_INPUTS, inputs, strict=True)
        }
        parts.append(session.run(None, feeds)[0])
    return np.concatenate(parts).astype(np.float32)


def export_and_index(
    model: RetrievalModel,
    config: RetrievalConfig,
    corpus: PinCorpus,
    out_dir: Path,
    extra_files: list[str],
) -> RetrievalManifest:
    """Export both towers, index every pin of `corpus`, and write the manifest hashing it all
    (plus `extra_files`, already written in `out_dir`), last: until then the run holds no
    retrieval model."""
    manifest = export_retrieval(model.cpu().eval(), config, out_dir, write=False)
    embeddings = embed_corpus_onnx(out_dir / PIN_TOWER_FILE, corpus)
    index = build_pin_index(corpus.pin_id.numpy(), embeddings, config.index)
    manifest = with_files(manifest, out_dir, [*index.save(out_dir), *extra_files])
    write_retrieval_manifest(manifest, out_dir)
    return manifest


def _job_config(config: RetrievalJobConfig | Path) -> RetrievalJobConfig:
    return config if isinstance(config, RetrievalJobConfig) else load_job_config(Path(config))


@dataclass(frozen=True)
class RetrievalInputs:
    """What the training loop is built from: the set, the sized model config, the corpus the
    towers were sized on (indexed after training) and the sampled-softmax logQ table."""

    set_path: Path
    model_config: RetrievalConfig
    corpus: PinCorpus
    log_q: np.ndarray
    rows: int
    """Rows the variant trains on (what each worker may hold in memory)."""

    def dataset(self) -> ray.data.Dataset:
        """The training set as Ray Data, each row expanded to its variant's positives (needs
        Ray started)."""
        return ray.data.read_parquet(str(self.set_path)).map_batches(
            VariantRows(self.model_config), batch_format="pyarrow"
        )


def retrieval_inputs(job: RetrievalJobConfig, home: ProjectHome) -> RetrievalInputs:
    """Read the training set and pin corpus of `home` and size the towers and sampling on them
    (the part of `train_retrieval` before Ray; benchmarks reuse it)."""
    set_path = home.training_sets / f"{RETRIEVAL_NAME}.parquet"
    columns = read_training_set(set_path, WEIGHT_COLUMNS)
    corpus = read_pin_corpus(home.features)
    towers = sized_towers(
        corpus,
        known_user_ids(home.events / "users.parquet", columns),
        **job.model.towers.model_dump(),
    )
    model_config = job.model.sized(towers)
    rows = weighted_rows(columns, model_config)
    sampling = pin_sampling(rows, model_config)
    return RetrievalInputs(
        set_path, model_config, corpus, sampling.log_q_table.numpy(), rows.num_rows
    )


def train_retrieval(config: RetrievalJobConfig | Path, home: ProjectHome | Path) -> Path:
    """Train on `<home>/data/training_sets/retrieval.parquet` with Ray Train, export and index.

    Connects to the cluster in RAY_ADDRESS (as under `ray job submit`) or starts a local Ray.
    Returns the run's retrieval folder `<home>/artifacts/<run_id>/retrieval`.
    """
    job = _job_config(config)
    home = home if isinstance(home, ProjectHome) else ProjectHome(Path(home).resolve())
    inputs = retrieval_inputs(job, home)
    set_path, model_config, corpus = inputs.set_path, inputs.model_config, inputs.corpus
    run = run_for_retrieval(home.artifacts, job.run_id)
    settings = job.ray.settings(f"retrieval-{run.run_id}", run.checkpoints)
    ensure_ray()
    in_memory = shard_in_memory(inputs.rows, settings.num_workers)
    loop = RetrievalLoopConfig(model_config, inputs.log_q, in_memory=in_memory)
    result = fit(retrieval_loop, loop.as_loop_config(), {"train": inputs.dataset()}, settings)
    state = load_result_state(result)
    model = RetrievalModel(model_config)
    model.load_state_dict(state["model"])
    out_dir = run.retrieval
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(set_path.with_suffix(".json"), out_dir / TRAINING_SET_FILE)
    summary = {
        "run_id": run.run_id,
        "metrics": result.metrics,
        "ray": settings.model_dump(mode="json"),
        "training_set": str(set_path),
    }
    (out_dir / RETRIEVAL_SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    export_and_index(model, model_config, corpus, out_dir, [TRAINING_SET_FILE, RETRIEVAL_SUMMARY])
    return out_dir
