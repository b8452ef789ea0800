"""A tiny but real project for the serving tests: `pinfeed run` steps on a tiny world (events,
features, Feast registry + online store, training sets), then both models trained briefly with
the plain-torch code paths and exported exactly as the training jobs export them, under
`artifacts/<run_id>/{retrieval,ranking}/`. Tests may import torch; serving never does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pinfeed.calibration import fit_effective_sample_rates
from pinfeed.home import ProjectHome
from pinfeed.run import run_pipeline
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import default_utility_weights, save_utility_weights
from tests.homes import make_home
from training.ranking.config import LossConfig, RankerConfig
from training.ranking.export import export_ranker
from training.ranking.features import TOPIC, label_array, ranker_arrays
from training.ranking.loss import build_loss
from training.ranking.model import MultiTaskRanker
from training.ranking.steps import RankerBatch, train_step
from training.retrieval.config import RetrievalConfig
from training.retrieval.corpus import read_pin_corpus
from training.retrieval.dataset import known_user_ids, read_training_set, sized_towers
from training.retrieval.job import export_and_index
from training.retrieval.model import RetrievalModel
from training.retrieval.train_step import train_on_parquet
from training.training_sets import RANKING_NAME, read_training_set_meta

TINY_WORLD = {"users": 200, "pins": 1500, "topics": 20, "days": 5}
RUN_ID = "tiny-run"


def build_retrieval(home: ProjectHome, out_dir: Path) -> RetrievalModel:
    """One epoch of two-tower training, exported and indexed over every pin."""
    path = home.training_sets / "retrieval.parquet"
    corpus = read_pin_corpus(home.features)
    users = known_user_ids(home.events / "users.parquet", read_training_set(path, ("user_id",)))
    towers = sized_towers(corpus, users, id_dim=8, hidden_dims=(32,), output_dim=16)
    config = RetrievalConfig(towers=towers, batch_size=256, epochs=1)
    result = train_on_parquet(path, config)
    export_and_index(result.model, config, corpus, out_dir, [])
    return result.model


def build_ranking(home: ProjectHome, out_dir: Path, steps: int = 30) -> MultiTaskRanker:
    """A few hundred rows' worth of gradient steps, exported with calibration rates."""
    frame = pd.read_parquet(home.training_sets / f"{RANKING_NAME}.parquet")
    meta = read_training_set_meta(home.training_sets / f"{RANKING_NAME}.parquet")
    rate = float(meta.negative_sample_rate or 1.0)
    dim = len(frame["pin_content__content_embedding"].iloc[0])
    arrays = ranker_arrays(frame, dim)
    labels = label_array(frame)
    topics = int(np.nanmax(frame[f"pin_content__{TOPIC}"])) + 1
    torch.manual_seed(0)
    model = MultiTaskRanker(RankerConfig(embedding_dim=dim, num_topics=topics, hidden_dims=(32,)))
    loss = build_loss(LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        rows = rng.integers(0, len(arrays), size=256)
        train_step(model, loss, optimizer, RankerBatch.from_arrays(arrays.take(rows), labels[rows]))
    rates = fit_effective_sample_rates(labels, rate)
    export_ranker(
        model,
        out_dir,
        negative_sample_rate=rate,
        calibration_sample_rates=dict(zip(ENGAGEMENTS, rates.tolist(), strict=True)),
    )
    save_utility_weights(default_utility_weights(), out_dir / "utility.json")
    return model


def build_serving_home(
    root: Path, seed: int = 5, world: dict[str, int] | None = None, keep_torch: bool = False
) -> ProjectHome:
    """A project home with data, online features and artifacts/<RUN_ID>/ ready to serve.

    `keep_torch` also pickles both torch models under artifacts/<RUN_ID>/torch/ (the load
    benchmark's torch-eager baseline)."""
    home = make_home(root)
    run_pipeline(
        home, seed=seed, generator_overrides=world or TINY_WORLD, stop_after="training sets"
    )
    run_dir = home.artifacts / RUN_ID
    retrieval = build_retrieval(home, run_dir / "retrieval")
    ranker = build_ranking(home, run_dir / "ranking")
    if keep_torch:
        (run_dir / "torch").mkdir()
        torch.save(retrieval.query_tower, run_dir / "torch" / "query_tower.pt")
        torch.save(ranker, run_dir / "torch" / "ranker.pt")
    return home


def shared_serving_home(base: Path) -> ProjectHome:
    """One serving home per test session, built at `base`/serving-home on first use (the serving
    test modules each give their app its own state_dir, so they do not disturb one another)."""
    root = base / "serving-home"
    if (root / "artifacts" / RUN_ID / "ranking" / "ranker.manifest.json").is_file():
        return ProjectHome(root)
    root.mkdir(parents=True, exist_ok=True)
    return build_serving_home(root)


def users_with_clusters(home: ProjectHome, minimum: int = 2) -> list[int]:
    """Users whose latest clustering has at least `minimum` clusters."""
    clusters = pd.read_parquet(home.features / "user_clusters.parquet")
    latest = clusters.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
    sizes = latest["cluster_ids"].map(len)
    return sorted(latest.loc[sizes >= minimum, "user_id"].astype(int).tolist())


def manifest_json(path: Path) -> dict:
    return json.loads(path.read_text())
