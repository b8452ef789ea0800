"""The ranking training job: fit the multi-task ranker and its single-head baseline on Ray
Train, export the ranker for serving, and record what evaluation needs.

`train_ranking(config, home)` writes the `ranking/` folder of a run (`pinfeed.artifacts`):

- `ranker.onnx` + `ranker.manifest.json`: four uncalibrated logits, head order, feature order
  and sources, w and the per-head effective sample rates of the exact calibration;
- `single_head.pt`: the baseline's config and weights (evaluation only; serving never loads it);
- `utility.json`: the default, hand-picked utility weights (the optimiser replaces them);
- `training_run.json`: the time split, the rates and the last epoch's metrics per model
  (`training.ranking.record`).

Which run: the one named by `run_id`, else the run `train retrieval` just made
(`pinfeed.artifacts.runs.run_for_ranking`), so the two jobs fill one folder that serving pairs.

Entry points: `pinfeed train ranking --config FILE` and `python -m training.job ranking
--config FILE` (for `ray job submit`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pinfeed.artifacts.layout import RunLayout
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import RANKER_INPUTS, RankerInputs, write_ranker_manifest
from pinfeed.artifacts.runs import run_for_ranking
from pinfeed.calibration import fit_effective_sample_rates, fit_other_engaged_share
from pinfeed.errors import ConfigError, DataNotFoundError
from pinfeed.events import read_event_meta
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import default_utility_weights, save_utility_weights
from training.ranking.baseline import save_baseline
from training.ranking.config import RankerConfig, RankingJobConfig, RankingTrainConfig
from training.ranking.export import export_ranker, max_parity_gap
from training.ranking.features import SOURCE_COLUMNS, TOPIC
from training.ranking.ray_loop import (
    TRAIN_DATASET,
    ModelKind,
    RankingLoopConfig,
    build_model,
    prepare_batch,
    ranking_dataset,
    train_loop_per_worker,
)
from training.ranking.record import ModelRun, RankingRun, time_split, write_ranking_run
from training.ray_train import fit, load_result_state
from training.shard_cache import shard_in_memory
from training.training_sets import RANKING_NAME, read_training_set_meta

MAX_PARITY_GAP = 1e-4


def initial_state(kind: ModelKind, config: RankerConfig, dense: np.ndarray, seed: int) -> dict:
    """Seeded weights with the normaliser fitted on the training rows [N, F]."""
    torch.manual_seed(seed)
    model = build_model(kind, config)
    model.fit_normalizer(torch.from_numpy(dense))
    return model.state_dict()


def _train_one(
    kind: ModelKind,
    train: RankingTrainConfig,
    job: RankingJobConfig,
    dense: np.ndarray,
    dataset: object,
    run: RunLayout,
) -> tuple[torch.nn.Module, ModelRun]:
    settings = job.ray.settings(f"ranking-{run.run_id}-{kind}", run.checkpoints)
    loop = RankingLoopConfig(
        kind=kind,
        train=train,
        importance=job.baseline.importance,
        in_memory=shard_in_memory(len(dense), settings.num_workers),
    )
    loop_config = {
        "loop": loop.model_dump(mode="json"),
        "initial_state": initial_state(kind, train.model, dense, train.seed),
    }
    result = fit(train_loop_per_worker, loop_config, {TRAIN_DATASET: dataset}, settings)
    model = build_model(kind, train.model)
    model.load_state_dict(load_result_state(result)["model"])
    metrics = result.metrics or {}
    return model.eval(), ModelRun(
        epochs=int(metrics.get("epoch", 0)),
        loss=float(metrics.get("loss", float("nan"))),
        examples_per_s=float(metrics.get("examples_per_s", float("nan"))),
        checkpoint=str(result.checkpoint.path) if result.checkpoint else "",
    )


def _training_rows(
    path: Path, embedding_dim: int, train_end: datetime
) -> tuple[dict[str, np.ndarray], int]:
    """The training period's rows as batch columns (for the normaliser and the sample rates)
    and the topic count (largest candidate topic id + 1)."""
    frame = pd.read_parquet(path)
    if not (frame["event_timestamp"] < train_end).any():
        raise DataNotFoundError(
            f"{path}: no rows before {train_end.isoformat()}; generate more days or shorten "
            "training.split"
        )
    num_topics = max(int(frame[SOURCE_COLUMNS[TOPIC]].max()) + 1, 1)
    return prepare_batch(frame, embedding_dim, None, train_end), num_topics


def train_ranking(config: RankingJobConfig, home: ProjectHome) -> Path:
    """Train both rankers on `home`'s ranking training set, export; return the run's
    `ranking/` folder. The manifest is written last, so a run never holds half a ranker."""
    events = read_event_meta(home.events)
    if not events.has_impressions:
        raise DataNotFoundError(
            f"{home.events}: an implicit-feedback event set (engagements only, no impression "
            "rows) has no unengaged impressions, so a ranker has no negatives to learn from; "
            "import a log with `impression` events to train one (retrieval needs none)"
        )
    path = home.training_sets / f"{RANKING_NAME}.parquet"
    if not path.is_file():
        raise DataNotFoundError(
            f"{path}: no ranking training set; build it with `pinfeed features training-sets`"
        )
    meta = read_training_set_meta(path)
    split = time_split(events.end.astimezone(UTC), config.split)
    rows, num_topics = _training_rows(path, events.embedding_dim, split.train_end)
    w = float(meta.negative_sample_rate or 1.0)
    ranker = RankerConfig(
        embedding_dim=events.embedding_dim,
        num_topics=num_topics,
        **config.model.model_dump(),
    )
    train = RankingTrainConfig(
        model=ranker,
        loss=config.loss,
        negative_sample_rate=w,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        epochs=config.epochs,
        seed=config.seed,
    )
    run = run_for_ranking(home.artifacts, config.run_id)
    dataset = ranking_dataset(path, events.embedding_dim, end=split.train_end)
    trained = {
        kind: _train_one(kind, train, config, rows["dense"], dataset, run)
        for kind in ("multi_task", "single_head")
    }
    rates = fit_effective_sample_rates(rows["labels"], w)
    out = run.ranking
    manifest = export_ranker(
        trained["multi_task"][0],
        out,
        negative_sample_rate=w,
        calibration_sample_rates=dict(zip(ENGAGEMENTS, rates.tolist(), strict=True)),
        write_manifest=False,
    )
    gap = _parity_gap(trained["multi_task"][0], run, rows)
    save_baseline(trained["single_head"][0], run.baseline)
    save_utility_weights(default_utility_weights(), run.utility)
    record = RankingRun(
        run_id=run.run_id,
        training_set=str(path),
        train_rows=int(rows["labels"].shape[0]),
        negative_sample_rate=w,
        other_engaged_share=dict(
            zip(ENGAGEMENTS, fit_other_engaged_share(rows["labels"], w).tolist(), strict=True)
        ),
        effective_sample_rates=dict(zip(ENGAGEMENTS, rates.tolist(), strict=True)),
        split=split,
        ranker=ranker,
        onnx_parity_gap=gap,
        models={kind: run_info for kind, (_, run_info) in trained.items()},
    )
    write_ranking_run(record, out)
    write_ranker_manifest(manifest, out)  # last: from now on the run holds a ranker
    return out


def _parity_gap(model: torch.nn.Module, run: RunLayout, rows: dict[str, np.ndarray]) -> float:
    """max |torch - ONNX| on up to 512 training rows; refuse an export that drifts."""
    inputs = RankerInputs(*(rows[name][:512] for name in RANKER_INPUTS))
    session = inference_session(run.ranker_model, prefer_gpu=False)
    gap = max_parity_gap(model, session, inputs)
    if not gap <= MAX_PARITY_GAP:
        raise ConfigError(
            f"{run.ranker_model}: ONNX logits differ from torch by {gap:.2e} "
            f"(> {MAX_PARITY_GAP}); check the opset and torch/onnx versions"
        )
    return gap
