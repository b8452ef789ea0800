"""A small retrieval run on a test home's training set, for tests that drive Ray Train's
`fit` themselves (fault injection through the loop's epoch hook): the loop config, the
dataset and the number of rows one epoch trains on."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq
import ray.data

from pinfeed.home import ProjectHome
from training.retrieval.corpus import read_pin_corpus
from training.retrieval.dataset import VariantRows, pin_sampling, sized_towers, weighted_rows
from training.retrieval.job_config import RetrievalSettings
from training.retrieval.ray_loop import EpochHook, RetrievalLoopConfig


@dataclass(frozen=True)
class RetrievalRun:
    loop: RetrievalLoopConfig
    dataset: ray.data.Dataset
    rows: int  # rows per epoch


def tiny_retrieval_run(
    home: ProjectHome, epochs: int, batch_size: int, hook: EpochHook | None
) -> RetrievalRun:
    set_path = home.training_sets / "retrieval.parquet"
    table = pq.read_table(set_path)
    corpus = read_pin_corpus(home.features)
    towers = sized_towers(corpus, table.column("user_id").to_numpy(), hidden_dims=(32,))
    settings = RetrievalSettings(
        epochs=epochs, batch_size=batch_size, towers={"hidden_dims": (32,)}
    ).sized(towers)
    rows = weighted_rows(table, settings)
    sampling = pin_sampling(rows, settings)
    loop = RetrievalLoopConfig(settings, sampling.log_q_table.numpy(), on_epoch_end=hook)
    dataset = ray.data.read_parquet(str(set_path)).map_batches(
        VariantRows(settings), batch_format="pyarrow"
    )
    return RetrievalRun(loop=loop, dataset=dataset, rows=rows.num_rows)
