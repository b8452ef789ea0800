"""Both models trained in-process for a few steps (no Ray) and exported exactly as the jobs
export them, into one run: a working pair of artifacts in seconds, for tests, benchmarks and
demos where a servable model matters and its quality does not. The jobs (`training.job`) are
what trains models worth serving.

`keep_torch` also saves both torch models under `<run>/torch/` (the load benchmark's torch
eager baseline).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pinfeed.artifacts.layout import RunLayout
from pinfeed.calibration import fit_effective_sample_rates
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import default_utility_weights, save_utility_weights
from training.ranking.config import LossConfig, RankerConfig
from training.ranking.export import export_ranker
from training.ranking.features import SOURCE_COLUMNS, TOPIC, label_array, ranker_arrays
from training.ranking.loss import build_loss
from training.ranking.model import MultiTaskRanker
from training.ranking.steps import RankerBatch, train_step
from training.retrieval.config import RetrievalConfig
from training.retrieval.corpus import read_pin_corpus
from training.retrieval.dataset import known_user_ids, read_training_set, sized_towers
from training.retrieval.job import export_and_index
from training.retrieval.model import RetrievalModel
from training.retrieval.train_step import train_on_parquet
from training.training_sets import RANKING_NAME, RETRIEVAL_NAME, read_training_set_meta

TORCH_DIR = "torch"


def quick_retrieval(home: ProjectHome, run: RunLayout, epochs: int = 1) -> RetrievalModel:
    """Small towers trained for `epochs` on the retrieval set, exported and indexed."""
    path = home.training_sets / f"{RETRIEVAL_NAME}.parquet"
    corpus = read_pin_corpus(home.features)
    users = known_user_ids(home.events / "users.parquet", read_training_set(path, ("user_id",)))
    towers = sized_towers(corpus, users, id_dim=8, hidden_dims=(32,), output_dim=16)
    config = RetrievalConfig(towers=towers, batch_size=256, epochs=epochs)
    model = train_on_parquet(path, config).model
    export_and_index(model, config, corpus, run.retrieval, [])
    return model


def quick_ranking(
    home: ProjectHome, run: RunLayout, steps: int = 30, seed: int = 0
) -> MultiTaskRanker:
    """A small ranker after `steps` Adam steps of 256 rows, exported with calibration rates
    and the hand-picked utility weights."""
    path = home.training_sets / f"{RANKING_NAME}.parquet"
    frame = pd.read_parquet(path)
    rate = float(read_training_set_meta(path).negative_sample_rate or 1.0)
    dim = len(frame[SOURCE_COLUMNS["content_embedding"]].iloc[0])
    inputs, labels = ranker_arrays(frame, dim), label_array(frame)
    topics = max(int(np.nanmax(frame[SOURCE_COLUMNS[TOPIC]])) + 1, 1)
    torch.manual_seed(seed)
    model = MultiTaskRanker(RankerConfig(embedding_dim=dim, num_topics=topics, hidden_dims=(32,)))
    model.fit_normalizer(torch.from_numpy(inputs.dense))
    loss = build_loss(LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.integers(0, len(inputs), size=256)
        train_step(model, loss, optimizer, RankerBatch.from_arrays(inputs.take(rows), labels[rows]))
    rates = fit_effective_sample_rates(labels, rate)
    save_utility_weights(default_utility_weights(), run.utility)
    export_ranker(  # its manifest last: the run holds a ranker once it is complete
        model,
        run.ranking,
        negative_sample_rate=rate,
        calibration_sample_rates=dict(zip(ENGAGEMENTS, rates.tolist(), strict=True)),
    )
    return model


def quick_run(
    home: ProjectHome,
    run_id: str,
    *,
    ranking_steps: int = 30,
    seed: int = 0,
    keep_torch: bool = False,
) -> RunLayout:
    """Run `run_id` with both models (see the module docstring); its layout."""
    run = RunLayout.of(home.artifacts, run_id).create()
    retrieval = quick_retrieval(home, run)
    ranker = quick_ranking(home, run, steps=ranking_steps, seed=seed)
    if keep_torch:
        (run.root / TORCH_DIR).mkdir(exist_ok=True)
        torch.save(retrieval.query_tower, run.root / TORCH_DIR / "query_tower.pt")
        torch.save(ranker, run.root / TORCH_DIR / "ranker.pt")
    return run
